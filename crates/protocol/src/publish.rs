//! Publish bodies: form-encoded or JSON, decoded and validated into
//! [`Publication`]s, each then encoded once into its shared [`Frame`].
//!
//! A body is all-or-nothing: if any item is invalid, nothing is published.
//! The same rules check events that arrive by other ways (a Redis stream
//! entry): [`Fields`] collects named fields from any source.

use std::fmt;

use serde_json::{Map, Value};

use crate::form::{self, FormError};
use crate::id::parse_u64;
use crate::pattern::is_pattern;
use crate::sse::{self, Frame};
use crate::topic::{TopicError, add_topic};

/// One event as a publisher described it, already validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    /// 1-64 distinct valid topics.
    pub topics: Vec<String>,
    /// Any text; line breaks become separate `data:` lines.
    pub data: String,
    /// The event type; no CR, LF or NUL.
    pub event: Option<String>,
    /// The client's new reconnection delay, in milliseconds.
    pub retry: Option<u64>,
}

/// Why a publish body is refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PublishError {
    /// 415: neither form-encoded nor JSON.
    MediaType,
    /// 400, with what was wrong.
    Invalid(&'static str),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::MediaType => f.write_str("unsupported content type"),
            PublishError::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for PublishError {}

impl From<TopicError> for PublishError {
    fn from(error: TopicError) -> Self {
        PublishError::Invalid(error.detail())
    }
}

impl From<FormError> for PublishError {
    fn from(error: FormError) -> Self {
        PublishError::Invalid(error.detail())
    }
}

/// The message for a `retry` that is not a non-negative integer.
pub const RETRY_INVALID: &str = "retry must be a non-negative integer (milliseconds)";
const EVENT_INVALID: &str = "event must be a string without CR, LF or NUL";

impl Publication {
    /// Encodes the frame once; the sequencer stamps the id later.
    pub fn encode(&self) -> Frame {
        let mut buf = Frame::buffer(self.data.len() + 32);
        // Validated on the way in, so encoding cannot fail here.
        let encoded = sse::encode_fields(&mut buf, self.event.as_deref(), self.retry, &self.data);
        debug_assert!(encoded.is_ok());
        Frame::new(buf)
    }

    fn check(fields: Fields) -> Result<Self, PublishError> {
        let Fields { topics, data, event, retry } = fields;
        if topics.is_empty() {
            return Err(TopicError::Missing.into());
        }
        let data = data.ok_or(PublishError::Invalid("data is required"))?;
        if let Some(event) = &event
            && !sse::valid_event_type(event)
        {
            return Err(PublishError::Invalid(EVENT_INVALID));
        }
        Ok(Publication { topics, data, event, retry })
    }
}

/// An event's fields collected by name, from a form body or a stream entry.
#[derive(Debug, Default)]
pub struct Fields {
    /// `topic`, repeatable.
    topics: Vec<String>,
    /// `data`, once.
    data: Option<String>,
    /// `event`, once.
    event: Option<String>,
    /// `retry`, once.
    retry: Option<u64>,
}

impl Fields {
    /// Takes one field (its value already decoded); unknown names are ignored.
    pub fn set(&mut self, name: &[u8], value: &[u8]) -> Result<(), PublishError> {
        let text = |value: &[u8]| String::from_utf8(value.to_vec()).map_err(|_| FormError::NotUtf8);
        match name {
            b"topic" => add_published_topic(&mut self.topics, text(value)?)?,
            b"data" => once(&mut self.data, "data given more than once", text(value)?)?,
            b"event" => once(&mut self.event, "event given more than once", text(value)?)?,
            b"retry" => {
                let retry = parse_u64(value).ok_or(PublishError::Invalid(RETRY_INVALID))?;
                once(&mut self.retry, "retry given more than once", retry)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The publication, if the fields make a valid one.
    pub fn finish(self) -> Result<Publication, PublishError> {
        Publication::check(self)
    }
}

/// Fills a single-valued field, refusing a second value.
fn once<T>(slot: &mut Option<T>, what: &'static str, value: T) -> Result<(), PublishError> {
    if slot.is_some() {
        return Err(PublishError::Invalid(what));
    }
    *slot = Some(value);
    Ok(())
}

/// Decodes a publish body by its `Content-Type` (form when absent).
pub fn decode(content_type: Option<&[u8]>, body: &[u8]) -> Result<Vec<Publication>, PublishError> {
    let media = content_type
        .map(|value| value.split(|&b| b == b';').next().unwrap_or_default().trim_ascii())
        .unwrap_or(b"application/x-www-form-urlencoded");
    if media.eq_ignore_ascii_case(b"application/x-www-form-urlencoded") {
        decode_form(body).map(|p| vec![p])
    } else if media.eq_ignore_ascii_case(b"application/json") {
        decode_json(body)
    } else {
        Err(PublishError::MediaType)
    }
}

/// `topic=T[&topic=T2]&data=D[&event=E][&retry=N]`.
pub fn decode_form(body: &[u8]) -> Result<Publication, PublishError> {
    let mut fields = Fields::default();
    for (name, value) in form::pairs(body) {
        fields.set(&form::decode_bytes(name)?, &form::decode_bytes(value)?)?;
    }
    fields.finish()
}

/// One object `{"topic": "t" | ["t1", ...], "data": "...", "event": "...", "retry": N}`
/// or an array of them, applied in order.
pub fn decode_json(body: &[u8]) -> Result<Vec<Publication>, PublishError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| PublishError::Invalid("malformed JSON"))?;
    match value {
        Value::Object(object) => Ok(vec![from_object(&object)?]),
        Value::Array(items) if items.is_empty() => Err(PublishError::Invalid("empty batch")),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Object(object) => from_object(object),
                _ => Err(PublishError::Invalid("batch items must be objects")),
            })
            .collect(),
        _ => Err(PublishError::Invalid("expected a JSON object or an array of objects")),
    }
}

/// One JSON publish object given as text (a stream entry's `json` field).
pub fn decode_json_object(text: &[u8]) -> Result<Publication, PublishError> {
    match serde_json::from_slice(text) {
        Ok(Value::Object(object)) => from_object(&object),
        Ok(_) => Err(PublishError::Invalid("json must hold one publish object")),
        Err(_) => Err(PublishError::Invalid("malformed JSON")),
    }
}

/// Why a published topic that looks like a pattern is refused.
pub const PATTERN_TOPIC: &str = "a published topic may not have a segment that is exactly * or ** (that is a pattern)";

/// [`add_topic`] for events: a topic with a `*` or `**` segment is refused,
/// so a pattern can never be mistaken for a topic.
fn add_published_topic(topics: &mut Vec<String>, topic: String) -> Result<(), PublishError> {
    if is_pattern(&topic) {
        return Err(PublishError::Invalid(PATTERN_TOPIC));
    }
    Ok(add_topic(topics, topic)?)
}

/// Validates one JSON publish object.
fn from_object(object: &Map<String, Value>) -> Result<Publication, PublishError> {
    let mut topics = Vec::new();
    match object.get("topic") {
        Some(Value::String(topic)) => add_published_topic(&mut topics, topic.clone())?,
        Some(Value::Array(list)) => {
            for topic in list {
                let Value::String(topic) = topic else {
                    return Err(PublishError::Invalid("topics must be strings"));
                };
                add_published_topic(&mut topics, topic.clone())?;
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err(PublishError::Invalid("topic must be a string or an array of strings")),
    }
    // Structured data is sent as its JSON text: the common case of publishing an object.
    let data = match object.get("data") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(other) => Some(other.to_string()),
    };
    let event = match object.get("event") {
        None | Some(Value::Null) => None,
        Some(Value::String(event)) => Some(event.clone()),
        Some(_) => return Err(PublishError::Invalid(EVENT_INVALID)),
    };
    let retry = match object.get("retry") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_u64().ok_or(PublishError::Invalid(RETRY_INVALID))?),
        Some(Value::String(s)) => Some(parse_u64(s.as_bytes()).ok_or(PublishError::Invalid(RETRY_INVALID))?),
        Some(_) => return Err(PublishError::Invalid(RETRY_INVALID)),
    };
    Publication::check(Fields { topics, data, event, retry })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(topics: &[&str], data: &str, event: Option<&str>, retry: Option<u64>) -> Publication {
        Publication {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            data: data.into(),
            event: event.map(Into::into),
            retry,
        }
    }

    #[test]
    fn decodes_form_bodies() {
        let got = decode(None, b"topic=a&topic=b&data=line1%0Aline2&event=tick&retry=500").unwrap();
        assert_eq!(got, [publication(&["a", "b"], "line1\nline2", Some("tick"), Some(500))]);
        let got = decode(Some(b"application/x-www-form-urlencoded; charset=UTF-8"), b"topic=x&data=").unwrap();
        assert_eq!(got, [publication(&["x"], "", None, None)]);
    }

    #[test]
    fn decodes_json_objects_and_batches() {
        let got = decode(Some(b"application/json"), br#"{"topic":"t","data":"d","id":"ignored"}"#).unwrap();
        assert_eq!(got, [publication(&["t"], "d", None, None)]);
        let body = br#"[{"topic":["a","b","a"],"data":"1","event":"e","retry":3000},{"topic":"c","data":{"k":[1]}}]"#;
        let got = decode(Some(b"Application/JSON;charset=utf-8"), body).unwrap();
        assert_eq!(
            got,
            [publication(&["a", "b"], "1", Some("e"), Some(3000)), publication(&["c"], r#"{"k":[1]}"#, None, None)]
        );
        assert_eq!(decode_json_object(br#"{"topic":["a"],"data":"d"}"#), Ok(publication(&["a"], "d", None, None)));
        assert!(decode_json_object(b"[1]").is_err());
    }

    #[test]
    fn refuses_invalid_bodies() {
        let form = Some(&b"application/x-www-form-urlencoded"[..]);
        let json = Some(&b"application/json"[..]);
        let cases: &[(Option<&[u8]>, &str, PublishError)] = &[
            (form, "data=x", TopicError::Missing.into()),
            (form, "topic=a", PublishError::Invalid("data is required")),
            (form, "topic=a&data=x&data=y", PublishError::Invalid("data given more than once")),
            (form, "topic=a&data=x&retry=soon", PublishError::Invalid(RETRY_INVALID)),
            (form, "topic=a&data=x&retry=-1", PublishError::Invalid(RETRY_INVALID)),
            (form, "topic=a&data=x&event=a%0Ab", PublishError::Invalid(EVENT_INVALID)),
            (form, "topic=a&data=x&event=a%00", PublishError::Invalid(EVENT_INVALID)),
            (form, "topic=&data=x", TopicError::Invalid.into()),
            (form, "topic=orders/*&data=x", PublishError::Invalid(PATTERN_TOPIC)),
            (form, "topic=a&topic=team/7/**&data=x", PublishError::Invalid(PATTERN_TOPIC)),
            (json, r#"{"topic":["a","*"],"data":"x"}"#, PublishError::Invalid(PATTERN_TOPIC)),
            (form, "topic=a&data=%zz", FormError::BadEscape.into()),
            (form, "topic=a&data=%ff", FormError::NotUtf8.into()),
            (json, "{", PublishError::Invalid("malformed JSON")),
            (json, "[]", PublishError::Invalid("empty batch")),
            (json, "3", PublishError::Invalid("expected a JSON object or an array of objects")),
            (json, r#"[{"topic":"a","data":"x"},{"topic":"a"}]"#, PublishError::Invalid("data is required")),
            (json, r#"{"topic":"a","data":"x","retry":"soon"}"#, PublishError::Invalid(RETRY_INVALID)),
            (json, r#"{"topic":"a","data":"x","retry":1.5}"#, PublishError::Invalid(RETRY_INVALID)),
            (json, r#"{"topic":"a","data":"x","retry":-3}"#, PublishError::Invalid(RETRY_INVALID)),
            (json, r#"{"topic":"a","data":"x","event":"a\r"}"#, PublishError::Invalid(EVENT_INVALID)),
            (json, r#"{"topic":[1],"data":"x"}"#, PublishError::Invalid("topics must be strings")),
            (json, r#"{"topic":[],"data":"x"}"#, TopicError::Missing.into()),
            (Some(b"text/plain"), "x", PublishError::MediaType),
        ];
        for (content_type, body, want) in cases {
            assert_eq!(decode(*content_type, body.as_bytes()), Err(*want), "{body}");
        }
    }

    #[test]
    fn fields_from_any_source_follow_the_same_rules() {
        let mut fields = Fields::default();
        for (name, value) in
            [("topic", "a"), ("topic", "b"), ("data", "x\ny"), ("id", "666"), ("event", "e"), ("retry", "5")]
        {
            fields.set(name.as_bytes(), value.as_bytes()).unwrap();
        }
        assert_eq!(fields.finish(), Ok(publication(&["a", "b"], "x\ny", Some("e"), Some(5))));
        let mut fields = Fields::default();
        assert_eq!(fields.set(b"topic", &[0xff]), Err(FormError::NotUtf8.into()));
    }

    #[test]
    fn encoded_frames_hold_every_field() {
        let mut frame = publication(&["a"], "x\ny", Some("e"), Some(7)).encode();
        frame.set_id(crate::id::EventId { ms: 1, seq: 2 });
        assert_eq!(frame.plain(), b"id: 1-2\nevent: e\nretry: 7\ndata: x\ndata: y\n\n");
    }
}
