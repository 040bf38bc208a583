//! Publish bodies: form-encoded or JSON, decoded and validated into
//! [`Publication`]s, then encoded once into shared [`Event`] frames.
//!
//! A body is all-or-nothing: if any item is invalid, nothing is published.

use std::fmt;

use serde_json::{Map, Value};

use crate::event::{Event, parse_u64};
use crate::query::{self, QueryError, add_topic};
use crate::sse;

/// One event as a publisher described it, already validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    pub topics: Vec<String>,   // 1-64 distinct valid topics
    pub data: String,          // any text; line breaks become separate `data:` lines
    pub event: Option<String>, // no CR, LF or NUL
    pub retry: Option<u64>,    // milliseconds
}

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

impl From<QueryError> for PublishError {
    fn from(error: QueryError) -> Self {
        PublishError::Invalid(error.detail())
    }
}

pub(crate) const RETRY_INVALID: &str = "retry must be a non-negative integer (milliseconds)";
const EVENT_INVALID: &str = "event must be a string without CR, LF or NUL";

impl Publication {
    /// Encodes the frame once; the sequencer stamps the id later.
    pub fn encode(&self) -> Event {
        let mut buf = vec![0; Event::reserve()];
        buf.reserve(self.data.len() + 32);
        // Validated on the way in, so encoding cannot fail here.
        let encoded = sse::encode_fields(&mut buf, self.event.as_deref(), self.retry, &self.data);
        debug_assert!(encoded.is_ok());
        let topics = self.topics.iter().map(|t| t.as_str().into()).collect();
        Event::new(topics, buf)
    }

    pub(crate) fn check(
        topics: Vec<String>,
        data: Option<String>,
        event: Option<String>,
        retry: Option<u64>,
    ) -> Result<Self, PublishError> {
        if topics.is_empty() {
            return Err(QueryError::MissingTopic.into());
        }
        let data = data.ok_or(PublishError::Invalid("data is required"))?;
        if let Some(event) = &event {
            if !sse::valid_event_type(event) {
                return Err(PublishError::Invalid(EVENT_INVALID));
            }
        }
        Ok(Publication { topics, data, event, retry })
    }
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
    let (mut topics, mut data, mut event, mut retry) = (Vec::new(), None, None, None);
    for (name, value) in query::pairs(body) {
        match &query::decode_bytes(name)?[..] {
            b"topic" => add_topic(&mut topics, query::decode_text(value)?)?,
            b"data" => {
                once(&data, "data given more than once")?;
                data = Some(query::decode_text(value)?);
            }
            b"event" => {
                once(&event, "event given more than once")?;
                event = Some(query::decode_text(value)?);
            }
            b"retry" => {
                once(&retry, "retry given more than once")?;
                retry = Some(parse_u64(&query::decode_bytes(value)?).ok_or(PublishError::Invalid(RETRY_INVALID))?);
            }
            _ => {}
        }
    }
    Publication::check(topics, data, event, retry)
}

/// Refuses a second value for a single-valued field.
pub(crate) fn once<T>(slot: &Option<T>, what: &'static str) -> Result<(), PublishError> {
    if slot.is_some() { Err(PublishError::Invalid(what)) } else { Ok(()) }
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

/// Validates one JSON publish object; also used for stream entries holding one.
pub fn from_object(object: &Map<String, Value>) -> Result<Publication, PublishError> {
    let mut topics = Vec::new();
    match object.get("topic") {
        Some(Value::String(topic)) => add_topic(&mut topics, topic.clone())?,
        Some(Value::Array(list)) => {
            for topic in list {
                let Value::String(topic) = topic else {
                    return Err(PublishError::Invalid("topics must be strings"));
                };
                add_topic(&mut topics, topic.clone())?;
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
    Publication::check(topics, data, event, retry)
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
    }

    #[test]
    fn refuses_invalid_bodies() {
        let form = Some(&b"application/x-www-form-urlencoded"[..]);
        let json = Some(&b"application/json"[..]);
        let cases: &[(Option<&[u8]>, &str, PublishError)] = &[
            (form, "data=x", QueryError::MissingTopic.into()),
            (form, "topic=a", PublishError::Invalid("data is required")),
            (form, "topic=a&data=x&data=y", PublishError::Invalid("data given more than once")),
            (form, "topic=a&data=x&retry=soon", PublishError::Invalid(RETRY_INVALID)),
            (form, "topic=a&data=x&retry=-1", PublishError::Invalid(RETRY_INVALID)),
            (form, "topic=a&data=x&event=a%0Ab", PublishError::Invalid(EVENT_INVALID)),
            (form, "topic=a&data=x&event=a%00", PublishError::Invalid(EVENT_INVALID)),
            (form, "topic=&data=x", QueryError::InvalidTopic.into()),
            (form, "topic=a&data=%zz", QueryError::BadEscape.into()),
            (json, "{", PublishError::Invalid("malformed JSON")),
            (json, "[]", PublishError::Invalid("empty batch")),
            (json, "3", PublishError::Invalid("expected a JSON object or an array of objects")),
            (json, r#"[{"topic":"a","data":"x"},{"topic":"a"}]"#, PublishError::Invalid("data is required")),
            (json, r#"{"topic":"a","data":"x","retry":"soon"}"#, PublishError::Invalid(RETRY_INVALID)),
            (json, r#"{"topic":"a","data":"x","retry":1.5}"#, PublishError::Invalid(RETRY_INVALID)),
            (json, r#"{"topic":"a","data":"x","retry":-3}"#, PublishError::Invalid(RETRY_INVALID)),
            (json, r#"{"topic":"a","data":"x","event":"a\r"}"#, PublishError::Invalid(EVENT_INVALID)),
            (json, r#"{"topic":[1],"data":"x"}"#, PublishError::Invalid("topics must be strings")),
            (json, r#"{"topic":[],"data":"x"}"#, QueryError::MissingTopic.into()),
            (Some(b"text/plain"), "x", PublishError::MediaType),
        ];
        for (content_type, body, want) in cases {
            assert_eq!(decode(*content_type, body.as_bytes()), Err(*want), "{body}");
        }
    }

    #[test]
    fn encoded_frames_hold_every_field() {
        let mut event = publication(&["a"], "x\ny", Some("e"), Some(7)).encode();
        event.set_id(crate::event::EventId { ms: 1, seq: 2 });
        assert_eq!(event.frame(), b"id: 1-2\nevent: e\nretry: 7\ndata: x\ndata: y\n\n");
        assert_eq!(event.topics().len(), 1);
    }
}
