//! Stream entries: what a node reads back from Redis, checked exactly as an
//! HTTP publish is, and what `POST /publish` writes.
//!
//! Schema: fields `topic` (repeatable), `data`, optional `event` and `retry`;
//! or one field `json` holding the HTTP JSON publish object. Other fields are
//! ignored; `id` in particular never becomes the SSE id: the entry id is.
//!
//! An entry with a field `ssehub-control` is a control entry, never an event
//! (whatever else it holds): `ssehub-control disconnect sub S nonce N` is a
//! `POST /disconnect` made on some node, which every node carries out (the
//! nonce lets the node that asked recognise its own).

use redis::Value;
use ssehub_core::EventId;
use ssehub_protocol::id::parse_u64;
use ssehub_protocol::publish::{self, Fields, Publication, PublishError};
use ssehub_protocol::resp::ReplyRef;

/// One entry as Redis returned it: its id and its fields in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry id, `<ms>-<seq>`.
    pub id: String,
    /// Its fields, in order.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The field that makes an entry a control entry.
pub const CONTROL: &str = "ssehub-control";

/// What a control entry asks every node to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// End every stream opened with a token of this subject.
    Disconnect {
        /// The token subject.
        subject: String,
        /// Unique to the announcement (empty if the writer gave none).
        nonce: String,
    },
}

impl Control {
    /// The `XADD` field list that [`Entry::control`] reads back.
    pub fn fields(&self) -> Vec<(&'static str, &str)> {
        match self {
            Control::Disconnect { subject, nonce } => {
                vec![(CONTROL, "disconnect"), ("sub", subject), ("nonce", nonce)]
            }
        }
    }
}

impl Entry {
    /// The entry as a borrowed view, which reads it.
    pub fn view(&self) -> EntryRef<'_> {
        EntryRef { id: &self.id, fields: self.fields.iter().map(|(n, v)| (&n[..], &v[..])).collect() }
    }

    /// See [`EntryRef::control`].
    pub fn control(&self) -> Option<Result<Control, &'static str>> {
        self.view().control()
    }

    /// See [`EntryRef::event_id`].
    pub fn event_id(&self) -> Option<EventId> {
        EventId::parse(self.id.as_bytes())
    }

    /// See [`EntryRef::publication`].
    pub fn publication(&self) -> Result<Publication, PublishError> {
        self.view().publication()
    }
}

/// One entry borrowed from the reply it was read from (the follower's
/// path: no copy of a field before it is checked and encoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// The entry id, `<ms>-<seq>`.
    pub id: &'a str,
    /// Its fields, in order.
    pub fields: Vec<(&'a [u8], &'a [u8])>,
}

impl EntryRef<'_> {
    /// `None` for an event entry; for a control entry what it asks, or why
    /// it cannot be understood.
    pub fn control(&self) -> Option<Result<Control, &'static str>> {
        let field = |wanted: &str| self.fields.iter().find(|(name, _)| *name == wanted.as_bytes()).map(|(_, v)| *v);
        let kind = field(CONTROL)?;
        Some(match kind {
            b"disconnect" => match field("sub").map(std::str::from_utf8) {
                Some(Ok(subject)) if !subject.is_empty() => Ok(Control::Disconnect {
                    subject: subject.to_owned(),
                    nonce: field("nonce").map(|n| String::from_utf8_lossy(n).into_owned()).unwrap_or_default(),
                }),
                _ => Err("a disconnect control entry needs a non-empty UTF-8 sub"),
            },
            _ => Err("unknown ssehub-control"),
        })
    }

    /// The entry id as an event id.
    pub fn event_id(&self) -> Option<EventId> {
        EventId::parse(self.id.as_bytes())
    }

    /// The publication this entry describes, or why it is refused: the
    /// rules of an HTTP publish ([`Fields`]), or the JSON publish object.
    pub fn publication(&self) -> Result<Publication, PublishError> {
        if let Some((_, json)) = self.fields.iter().find(|(name, _)| *name == b"json") {
            return publish::decode_json_object(json);
        }
        let mut fields = Fields::default();
        for (name, value) in &self.fields {
            fields.set(name, value)?;
        }
        fields.finish()
    }
}

/// Entries of a RESP2 `XREAD` reply (`[[key, [[id, [field, value, ...]], ...]], ...]`;
/// nil, on timeout, is none), borrowed from it. Parts of another shape are skipped.
pub fn xread_entries<'a>(reply: &ReplyRef<'a>) -> Vec<EntryRef<'a>> {
    let mut out = Vec::new();
    for stream in reply.items().unwrap_or_default() {
        let Some([_key, entries]) = stream.items() else { continue };
        for entry in entries.items().unwrap_or_default() {
            let Some([id, fields]) = entry.items() else { continue };
            let Some(id) = id.bytes().and_then(|id| std::str::from_utf8(id).ok()) else { continue };
            let flat = fields.items().unwrap_or_default();
            let fields =
                flat.chunks(2).filter_map(|pair| Some((pair.first()?.bytes()?, pair.get(1)?.bytes()?))).collect();
            out.push(EntryRef { id, fields });
        }
    }
    out
}

/// The `XADD` field list for a publication: what [`Entry::publication`] reads back.
pub fn fields(publication: &Publication) -> Vec<(&str, String)> {
    let mut fields: Vec<(&str, String)> = publication.topics.iter().map(|t| ("topic", t.clone())).collect();
    fields.push(("data", publication.data.clone()));
    if let Some(event) = &publication.event {
        fields.push(("event", event.clone()));
    }
    if let Some(retry) = publication.retry {
        fields.push(("retry", retry.to_string()));
    }
    fields
}

fn bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn items(value: &Value) -> Option<Vec<&Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items.iter().collect()),
        Value::Map(pairs) => Some(pairs.iter().flat_map(|(k, v)| [k, v]).collect()),
        _ => None,
    }
}

/// `[id, [field, value, ...]]`, as `XRANGE` and `XREAD` return each entry.
fn entry(value: &Value) -> Option<Entry> {
    let parts = items(value)?;
    let id = String::from_utf8(bytes(parts.first()?)?).ok()?;
    let flat = parts.get(1).and_then(|f| items(f)).unwrap_or_default();
    let fields = flat.chunks(2).filter_map(|pair| Some((bytes(pair.first()?)?, bytes(pair.get(1)?)?))).collect();
    Some(Entry { id, fields })
}

/// Entries of an `XRANGE`/`XREVRANGE` reply.
pub fn range_entries(value: &Value) -> Vec<Entry> {
    items(value).unwrap_or_default().into_iter().filter_map(entry).collect()
}

/// Entries of an `XREAD` reply for one stream (nil, on timeout, is none).
pub fn read_entries(value: &Value) -> Vec<Entry> {
    let Some(streams) = items(value) else { return Vec::new() };
    // RESP2: [[key, entries], ...]; RESP3: {key: entries}, flattened to key, entries.
    let mut out = Vec::new();
    let mut i = 0;
    while i < streams.len() {
        match items(streams[i]) {
            Some(pair) if pair.len() == 2 && matches!(streams[i], Value::Array(_)) => {
                out.extend(range_entries(pair[1]));
                i += 1;
            }
            _ => {
                if let Some(entries) = streams.get(i + 1) {
                    out.extend(range_entries(entries));
                }
                i += 2;
            }
        }
    }
    out
}

/// What `XINFO STREAM` says about the stream's ends.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    /// The id the stream last issued (even if since trimmed or deleted).
    pub last_generated: EventId,
    /// The oldest entry still in the stream.
    pub first_entry: Option<EventId>,
    /// Entries ever added.
    pub entries_added: u64,
}

/// Reads an `XINFO STREAM` reply.
pub fn stream_info(value: &Value) -> StreamInfo {
    let mut info = StreamInfo::default();
    let flat = items(value).unwrap_or_default();
    for pair in flat.chunks(2) {
        let (Some(name), Some(value)) = (pair.first().and_then(|v| bytes(v)), pair.get(1)) else { continue };
        match &name[..] {
            b"last-generated-id" => {
                info.last_generated = bytes(value).and_then(|b| EventId::parse(&b)).unwrap_or_default();
            }
            b"first-entry" => info.first_entry = entry(value).and_then(|e| e.event_id()),
            b"entries-added" => info.entries_added = bytes(value).and_then(|b| parse_u64(&b)).unwrap_or(0),
            _ => {}
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_of(fields: &[(&str, &str)]) -> Entry {
        Entry {
            id: "1-0".into(),
            fields: fields.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect(),
        }
    }

    #[test]
    fn entries_are_checked_like_http_publishes() {
        let ok = entry_of(&[
            ("topic", "a"),
            ("topic", "b"),
            ("data", "x\ny"),
            ("id", "666"),
            ("event", "e"),
            ("retry", "5"),
        ]);
        let publication = ok.publication().unwrap();
        assert_eq!(publication.topics, ["a", "b"]);
        assert_eq!(
            (publication.data.as_str(), publication.event.as_deref(), publication.retry),
            ("x\ny", Some("e"), Some(5))
        );
        let json = entry_of(&[("json", r#"{"topic":["a","b"],"data":"d","id":"ignored"}"#), ("other", "x")]);
        assert_eq!(json.publication().unwrap().topics, ["a", "b"]);
        for bad in [
            entry_of(&[("data", "no topic")]),
            entry_of(&[("topic", "a")]),
            entry_of(&[("topic", "a"), ("data", "x"), ("event", "a\nb")]),
            entry_of(&[("topic", "a"), ("data", "x"), ("retry", "soon")]),
            entry_of(&[("topic", ""), ("data", "x")]),
            entry_of(&[("topic", "a"), ("data", "x"), ("data", "y")]),
            entry_of(&[("json", "[1]")]),
            entry_of(&[("json", "{")]),
        ] {
            assert!(bad.publication().is_err(), "{bad:?}");
        }
        let not_utf8 = Entry {
            id: "1-0".into(),
            fields: vec![(b"topic".to_vec(), vec![0xff]), (b"data".to_vec(), b"x".to_vec())],
        };
        assert!(not_utf8.publication().is_err());
    }

    #[test]
    fn fields_read_back_as_the_same_publication() {
        let publication = Publication {
            topics: vec!["a".into(), "b".into()],
            data: "x\r\ny".into(),
            event: Some("e".into()),
            retry: Some(9),
        };
        let entry = Entry {
            id: "1-0".into(),
            fields: fields(&publication).into_iter().map(|(n, v)| (n.as_bytes().to_vec(), v.into_bytes())).collect(),
        };
        assert_eq!(entry.publication().unwrap(), publication);
    }

    #[test]
    fn parses_xread_replies_in_resp2_and_resp3_shapes() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let one =
            Value::Array(vec![bulk("5-1"), Value::Array(vec![bulk("topic"), bulk("t"), bulk("data"), bulk("d")])]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("s"), Value::Array(vec![one.clone()])])]);
        let resp3 = Value::Map(vec![(bulk("s"), Value::Array(vec![one]))]);
        for reply in [resp2, resp3] {
            let entries = read_entries(&reply);
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].event_id(), Some(EventId { ms: 5, seq: 1 }));
            assert_eq!(entries[0].publication().unwrap().data, "d");
        }
        assert!(read_entries(&Value::Nil).is_empty());
    }

    #[test]
    fn borrows_entries_from_an_xread_reply() {
        let raw = b"*1\r\n*2\r\n$1\r\ns\r\n*3\r\n*2\r\n$3\r\n5-1\r\n*4\r\n$5\r\ntopic\r\n$1\r\nt\r\n$4\r\ndata\r\n$1\r\nd\r\n\
                    :7\r\n*2\r\n$3\r\n5-2\r\n*2\r\n$14\r\nssehub-control\r\n$1\r\nx\r\n";
        let (reply, used) = ssehub_protocol::resp::parse_ref(raw).unwrap().unwrap();
        assert_eq!(used, raw.len());
        let entries = xread_entries(&reply);
        assert_eq!(entries.len(), 2, "the stray integer is skipped: {entries:?}");
        assert_eq!(entries[0].event_id(), Some(EventId { ms: 5, seq: 1 }));
        assert_eq!(entries[0].publication().unwrap().data, "d");
        assert_eq!(entries[0].control(), None);
        assert_eq!(entries[1].control(), Some(Err("unknown ssehub-control")));
        let nil = ssehub_protocol::resp::parse_ref(b"*-1\r\n").unwrap().unwrap().0;
        assert!(xread_entries(&nil).is_empty());
    }
}
