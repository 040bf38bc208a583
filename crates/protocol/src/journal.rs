//! The durable log's records (`--data-dir`): bytes in, values out. The
//! server's `journal` module does the file handling; this is only the
//! format, so the fuzzer checks exactly what recovery runs.
//!
//! A segment file is [`SEGMENT_MAGIC`] followed by records. Each record:
//!
//! ```text
//! u32 LE  body length (1..=MAX_RECORD)
//! u32 LE  CRC-32 (IEEE) of the body
//! body:   u8 kind, then
//!   EVENT: u64 ms, u64 seq, u8 topic count (1..=64), per topic u16 length
//!          + UTF-8 bytes, then the event's encoded SSE fields to the end
//!          (`event:`/`retry:`/`data:` lines and the blank line: the frame
//!          without its `id:` line, rebuilt byte for byte)
//!   KEY:   u64 ms remembered at, [u8; 16] fingerprint, u8 key length
//!          (1..=128) + key bytes, u16 id count, per id u64 ms + u64 seq
//!   FLOOR: origin id, last id (each u64 ms + u64 seq), then a drop: u8
//!          reason (0: none, 1: evicted, 2: expired) + id (zero with
//!          reason 0); u32 topic count, per topic u64 name hash
//!          ([`topic_hash`]) + a drop with reason 1 or 2
//! ```
//!
//! A FLOOR record is written before segments are deleted: where the log's
//! history began, the newest id issued, and what history knew of the
//! events it had dropped: per topic, its newest dropped event and why, and
//! for every topic not listed, up to where it may have dropped (the
//! knowledge history itself had already let go, or that did not fit). So
//! after a restart a resume from an id in a deleted segment gets exactly the
//! gap it would have got before, not `before-start`.
//!
//! Integers are little-endian. Decoding never trusts a length: a record
//! that runs past the buffer is [`RecordError::Truncated`] (a torn tail), a
//! checksum mismatch is [`RecordError::Checksum`], and a body whose
//! checksum holds but whose shape is wrong is [`RecordError::Malformed`].
//! A decoded event's fields are one complete SSE event (they end with the
//! blank line and hold no other), so a record can never become half an
//! event or two.

use std::fmt;

use crate::id::EventId;

/// The first bytes of every segment file: the format and its version.
pub const SEGMENT_MAGIC: &[u8; 8] = b"SSEHLOG1";
/// Largest record body accepted (a larger length is garbage, not a record).
pub const MAX_RECORD: usize = 64 << 20;
/// Bytes in front of every body: its length and its checksum.
pub const HEADER: usize = 8;
/// Most topics an event record may name (as a publish may).
pub const MAX_TOPICS: usize = 64;
/// Longest idempotency key a record may hold (as the header may).
pub const MAX_KEY: usize = 128;

const KIND_EVENT: u8 = 1;
const KIND_KEY: u8 = 2;
const KIND_FLOOR: u8 = 3;

/// One decoded record, borrowing from the buffer it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A sequenced event.
    Event(EventRecord<'a>),
    /// An idempotency key remembered with the ids its publish was given.
    Key(KeyRecord<'a>),
    /// What history had dropped when segments were deleted.
    Floor(FloorRecord),
}

/// Why history let an event go, as the log remembers it (the `ssehub-gap`
/// reason a resume that needed it gets).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Pushed out by `--history` or `--history-memory`.
    Evicted,
    /// Outlived `--history-ttl`.
    Expired,
}

/// What history knew of the events it had let go when the log deleted
/// segments (the deleted segments held only such events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FloorRecord {
    /// Where the log's history began: a resume from below it is `before-start`.
    pub origin: EventId,
    /// The newest id issued by then: ids continue after it.
    pub last: EventId,
    /// A topic not in `topics` may have dropped events up to this id, for
    /// this reason (`None`: no such topic dropped any).
    pub dropped: Option<(EventId, DropReason)>,
    /// By [`topic_hash`] of the name: the topic's newest dropped event, and why.
    pub topics: Vec<(u64, EventId, DropReason)>,
}

/// Bytes per topic in a floor record.
pub const FLOOR_TOPIC: usize = 8 + 16 + 1;

/// The hash a floor record names a topic by: 64-bit FNV-1a of its name,
/// fixed by this format (not the process's hasher), so a log outlives the
/// build that wrote it. Two topics with one hash share one entry, the newer
/// drop, which can only add a gap, never hide one.
pub fn topic_hash(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.as_bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// An event as the log holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord<'a> {
    /// Its id (its `ms` is its publish time).
    pub id: EventId,
    /// Its topics, in publish order.
    pub topics: Vec<&'a str>,
    /// The encoded SSE fields, ending with the blank line; no `id:` line.
    pub fields: &'a [u8],
}

/// An idempotency key as the log holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord<'a> {
    /// When it was remembered (unix ms): its window runs from here.
    pub at_ms: u64,
    /// The request's fingerprint.
    pub fingerprint: [u8; 16],
    /// The key (visible ASCII).
    pub key: &'a str,
    /// The ids its publish was given.
    pub ids: Vec<EventId>,
}

/// Why bytes are not a record.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The buffer ends inside the record (a write cut short, or the end).
    Truncated,
    /// The body does not match its checksum (corruption).
    Checksum,
    /// The length is impossible, or the checksum holds over a body that is not a record.
    Malformed(&'static str),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Truncated => f.write_str("truncated record"),
            RecordError::Checksum => f.write_str("checksum mismatch"),
            RecordError::Malformed(why) => write!(f, "malformed record: {why}"),
        }
    }
}

impl std::error::Error for RecordError {}

/// Why a record cannot be encoded (the caller's values break the format's bounds).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TooLarge(pub &'static str);

/// Appends one event record to `out`. Fails, leaving `out` as it was, if
/// the event breaks a bound (topic count or length, record size) or its
/// fields are not one complete SSE event.
pub fn encode_event<'t>(
    out: &mut Vec<u8>,
    id: EventId,
    topics: impl IntoIterator<Item = &'t str>,
    fields: &[u8],
) -> Result<(), TooLarge> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.push(KIND_EVENT);
    put_id(out, id);
    let count_at = out.len();
    out.push(0);
    let mut count = 0usize;
    for topic in topics {
        count += 1;
        if count > MAX_TOPICS || topic.is_empty() || topic.len() > usize::from(u16::MAX) {
            out.truncate(start);
            return Err(TooLarge("1 to 64 topics of 1 to 65535 bytes"));
        }
        out.extend_from_slice(&(topic.len() as u16).to_le_bytes());
        out.extend_from_slice(topic.as_bytes());
    }
    if count == 0 {
        out.truncate(start);
        return Err(TooLarge("1 to 64 topics of 1 to 65535 bytes"));
    }
    if let Err(why) = check_fields(fields) {
        out.truncate(start);
        return Err(TooLarge(why));
    }
    out[count_at] = count as u8;
    out.extend_from_slice(fields);
    seal(out, start)
}

/// Appends one idempotency-key record to `out` (or fails, leaving it as it was).
pub fn encode_key(
    out: &mut Vec<u8>,
    at_ms: u64,
    fingerprint: [u8; 16],
    key: &str,
    ids: &[EventId],
) -> Result<(), TooLarge> {
    let visible = key.bytes().all(|b| (b'!'..=b'~').contains(&b));
    if key.is_empty() || key.len() > MAX_KEY || !visible || ids.len() > usize::from(u16::MAX) {
        return Err(TooLarge("a key of 1 to 128 visible ASCII bytes and at most 65535 ids"));
    }
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.push(KIND_KEY);
    out.extend_from_slice(&at_ms.to_le_bytes());
    out.extend_from_slice(&fingerprint);
    out.push(key.len() as u8);
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&(ids.len() as u16).to_le_bytes());
    for &id in ids {
        put_id(out, id);
    }
    seal(out, start)
}

/// Appends one floor record to `out` (or fails, leaving it as it was, if
/// its topics make it larger than [`MAX_RECORD`]).
pub fn encode_floor(out: &mut Vec<u8>, floor: &FloorRecord) -> Result<(), TooLarge> {
    fn put_drop(out: &mut Vec<u8>, dropped: Option<(EventId, DropReason)>) {
        let (reason, id) = match dropped {
            None => (0, EventId::ZERO),
            Some((id, DropReason::Evicted)) => (1, id),
            Some((id, DropReason::Expired)) => (2, id),
        };
        out.push(reason);
        put_id(out, id);
    }
    if floor.topics.len() > (MAX_RECORD - 64) / FLOOR_TOPIC {
        return Err(TooLarge("floor record over 64 MiB"));
    }
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.push(KIND_FLOOR);
    put_id(out, floor.origin);
    put_id(out, floor.last);
    put_drop(out, floor.dropped);
    out.extend_from_slice(&(floor.topics.len() as u32).to_le_bytes());
    for &(hash, id, why) in &floor.topics {
        out.extend_from_slice(&hash.to_le_bytes());
        put_drop(out, Some((id, why)));
    }
    seal(out, start)
}

/// Decodes the record at the start of `bytes`; returns it and the bytes it took.
pub fn decode(bytes: &[u8]) -> Result<(Record<'_>, usize), RecordError> {
    let Some(header) = bytes.get(..HEADER) else { return Err(RecordError::Truncated) };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > MAX_RECORD {
        return Err(RecordError::Malformed("impossible length"));
    }
    let Some(body) = bytes.get(HEADER..HEADER + len) else { return Err(RecordError::Truncated) };
    if crc32fast::hash(body) != crc {
        return Err(RecordError::Checksum);
    }
    let mut reader = Reader { rest: &body[1..] };
    let record = match body[0] {
        KIND_EVENT => {
            let id = reader.id()?;
            let count = usize::from(reader.u8()?);
            if count == 0 || count > MAX_TOPICS {
                return Err(RecordError::Malformed("topic count"));
            }
            let mut topics = Vec::with_capacity(count);
            for _ in 0..count {
                let len = usize::from(reader.u16()?);
                let topic = std::str::from_utf8(reader.take(len)?).map_err(|_| RecordError::Malformed("topic"))?;
                if topic.is_empty() {
                    return Err(RecordError::Malformed("topic"));
                }
                topics.push(topic);
            }
            let fields = reader.rest;
            check_fields(fields).map_err(RecordError::Malformed)?;
            Record::Event(EventRecord { id, topics, fields })
        }
        KIND_KEY => {
            let at_ms = reader.u64()?;
            let mut fingerprint = [0u8; 16];
            fingerprint.copy_from_slice(reader.take(16)?);
            let len = usize::from(reader.u8()?);
            let key = reader.take(len)?;
            if key.is_empty() || !key.iter().all(|b| (b'!'..=b'~').contains(b)) {
                return Err(RecordError::Malformed("key"));
            }
            // Visible ASCII only, so this cannot fail.
            let key = std::str::from_utf8(key).map_err(|_| RecordError::Malformed("key"))?;
            let count = usize::from(reader.u16()?);
            let mut ids = Vec::with_capacity(count.min(reader.rest.len() / 16));
            for _ in 0..count {
                ids.push(reader.id()?);
            }
            if !reader.rest.is_empty() {
                return Err(RecordError::Malformed("bytes after the key record"));
            }
            Record::Key(KeyRecord { at_ms, fingerprint, key, ids })
        }
        KIND_FLOOR => {
            let origin = reader.id()?;
            let last = reader.id()?;
            let dropped = reader.drop()?;
            let count = reader.u32()? as usize;
            // Checked before anything is allocated for them.
            if reader.rest.len() != count.saturating_mul(FLOOR_TOPIC) {
                return Err(RecordError::Malformed("floor topic count"));
            }
            let mut topics = Vec::with_capacity(count);
            for _ in 0..count {
                let hash = reader.u64()?;
                let Some((id, why)) = reader.drop()? else { return Err(RecordError::Malformed("floor reason")) };
                topics.push((hash, id, why));
            }
            Record::Floor(FloorRecord { origin, last, dropped, topics })
        }
        _ => return Err(RecordError::Malformed("unknown kind")),
    };
    Ok((record, HEADER + len))
}

/// Fields are one complete SSE event: non-empty lines without CR, then the
/// blank line that ends it, and no blank line before it.
fn check_fields(fields: &[u8]) -> Result<(), &'static str> {
    let Some(body) = fields.strip_suffix(b"\n\n") else { return Err("fields must end with a blank line") };
    // One pass: no CR, and no empty line (a LF at the start or after a LF).
    let mut line_start = true;
    for &b in body {
        match b {
            b'\r' => return Err("fields must be one event"),
            b'\n' if line_start => return Err("fields must be one event"),
            b'\n' => line_start = true,
            _ => line_start = false,
        }
    }
    if body.is_empty() {
        return Err("fields must be one event");
    }
    Ok(())
}

/// Writes the header of the record that starts at `start` (length, checksum).
fn seal(out: &mut Vec<u8>, start: usize) -> Result<(), TooLarge> {
    let len = out.len() - start - HEADER;
    if len > MAX_RECORD {
        out.truncate(start);
        return Err(TooLarge("record over 64 MiB"));
    }
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

fn put_id(out: &mut Vec<u8>, id: EventId) {
    out.extend_from_slice(&id.ms.to_le_bytes());
    out.extend_from_slice(&id.seq.to_le_bytes());
}

/// Reads fixed-size values off a checked body.
struct Reader<'a> {
    /// What is left to read.
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.rest.len() < n {
            return Err(RecordError::Malformed("body too short"));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn id(&mut self) -> Result<EventId, RecordError> {
        Ok(EventId { ms: self.u64()?, seq: self.u64()? })
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A floor record's drop: one encoding per value ("none" carries the zero id).
    fn drop(&mut self) -> Result<Option<(EventId, DropReason)>, RecordError> {
        let reason = self.u8()?;
        let id = self.id()?;
        match reason {
            0 if id == EventId::ZERO => Ok(None),
            1 => Ok(Some((id, DropReason::Evicted))),
            2 => Ok(Some((id, DropReason::Expired))),
            _ => Err(RecordError::Malformed("floor reason")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64, seq: u64) -> EventId {
        EventId { ms, seq }
    }

    #[test]
    fn records_round_trip_back_to_back() {
        let mut log = Vec::new();
        encode_event(&mut log, id(1, 2), ["a", "b/c"], b"event: x\ndata: 1\ndata: 2\n\n").unwrap();
        encode_key(&mut log, 7, [9; 16], "key-1", &[id(1, 2), id(3, 4)]).unwrap();
        let (first, used) = decode(&log).unwrap();
        assert_eq!(
            first,
            Record::Event(EventRecord {
                id: id(1, 2),
                topics: vec!["a", "b/c"],
                fields: b"event: x\ndata: 1\ndata: 2\n\n"
            })
        );
        let (second, rest) = decode(&log[used..]).unwrap();
        assert_eq!(
            second,
            Record::Key(KeyRecord { at_ms: 7, fingerprint: [9; 16], key: "key-1", ids: vec![id(1, 2), id(3, 4)] })
        );
        assert_eq!(used + rest, log.len());
    }

    #[test]
    fn floor_records_round_trip_and_have_one_encoding() {
        let floors = [
            FloorRecord { origin: id(5, 0), last: id(6, 0), dropped: None, topics: vec![] },
            FloorRecord {
                origin: id(5, 0),
                last: id(20, 1),
                dropped: Some((id(9, 3), DropReason::Evicted)),
                topics: vec![(topic_hash("a"), id(12, 0), DropReason::Expired), (7, id(13, 2), DropReason::Evicted)],
            },
            FloorRecord {
                origin: EventId::ZERO,
                last: id(u64::MAX, u64::MAX),
                dropped: Some((id(u64::MAX, u64::MAX), DropReason::Expired)),
                topics: vec![],
            },
        ];
        let mut log = Vec::new();
        for floor in &floors {
            encode_floor(&mut log, floor).unwrap();
        }
        let mut rest = &log[..];
        for floor in &floors {
            let (record, used) = decode(rest).unwrap();
            assert_eq!(record, Record::Floor(floor.clone()));
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        // "None" with an id, an unknown reason, a listed topic without a
        // drop, or a count the bytes do not hold: not a record.
        let sealed = |body: &[u8]| {
            let mut out = Vec::new();
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
            out.extend_from_slice(body);
            out
        };
        let body = |reason: u8, id_byte: u8, count: u32, topics: &[u8]| {
            let mut b = vec![KIND_FLOOR];
            b.extend_from_slice(&[0; 32]);
            b.push(reason);
            b.extend_from_slice(&[id_byte; 16]);
            b.extend_from_slice(&count.to_le_bytes());
            b.extend_from_slice(topics);
            b
        };
        let no_drop_topic = [[0u8; 8].as_slice(), &[0], &[0; 16]].concat();
        for (bad, why) in [
            (body(0, 1, 0, &[]), "floor reason"),
            (body(3, 0, 0, &[]), "floor reason"),
            (body(0, 0, 1, &no_drop_topic), "floor reason"),
            (body(0, 0, u32::MAX, &[]), "floor topic count"),
            (body(0, 0, 0, &[1]), "floor topic count"),
        ] {
            assert_eq!(decode(&sealed(&bad)), Err(RecordError::Malformed(why)), "{bad:?}");
        }
    }

    #[test]
    fn topic_hash_is_fnv1a() {
        // The published FNV-1a 64 test vectors: the log format depends on them.
        assert_eq!(topic_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(topic_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(topic_hash("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn damage_is_told_apart_and_never_decodes() {
        let mut log = Vec::new();
        encode_event(&mut log, id(1, 0), ["t"], b"data: hello\n\n").unwrap();
        for cut in 0..log.len() {
            assert_eq!(decode(&log[..cut]).map(|_| ()), Err(RecordError::Truncated), "cut at {cut}");
        }
        for at in HEADER..log.len() {
            let mut bad = log.clone();
            bad[at] ^= 0x20;
            assert_eq!(decode(&bad).map(|_| ()), Err(RecordError::Checksum), "flip at {at}");
        }
        assert!(matches!(decode(&[0; 16]), Err(RecordError::Malformed(_))), "zeroes are not a record");
        assert!(matches!(decode(&[0xff; 16]), Err(RecordError::Malformed(_))), "nor is a huge length");
    }

    #[test]
    fn the_encoder_refuses_what_the_decoder_would() {
        let cases: &[(&[&str], &[u8])] = &[
            (&[], b"data: x\n\n"),
            (&[""], b"data: x\n\n"),
            (&["t"], b"data: x\n"),
            (&["t"], b"data: x\n\ndata: y\n\n"),
            (&["t"], b"\n\n"),
            (&["t"], b"data: x\r\n\n"),
        ];
        for (topics, fields) in cases {
            let mut out = vec![1, 2, 3];
            assert!(encode_event(&mut out, id(1, 0), topics.iter().copied(), fields).is_err(), "{topics:?} {fields:?}");
            assert_eq!(out, [1, 2, 3], "nothing is left behind");
        }
        let many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
        assert!(encode_event(&mut Vec::new(), id(1, 0), many.iter().map(String::as_str), b"data: x\n\n").is_err());
        assert!(encode_key(&mut Vec::new(), 0, [0; 16], "", &[]).is_err());
        assert!(encode_key(&mut Vec::new(), 0, [0; 16], &"k".repeat(129), &[]).is_err());
    }
}
