//! `application/x-www-form-urlencoded` decoding, as browsers encode it, and
//! the subscribe query built on it.
//!
//! `+` is a space, then `%XX` is a byte. Stricter than the WHATWG parser in one
//! way: a `%` not followed by two hex digits is an error (400), not a literal,
//! because no browser produces it.

use std::fmt;

/// Most topics on one connection, or in one published event.
pub const MAX_TOPICS: usize = 64;
/// Longest topic name, in UTF-8 bytes.
pub const MAX_TOPIC_LEN: usize = 256;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum QueryError {
    BadEscape,
    NotUtf8,
    MissingTopic,
    InvalidTopic,
    TooManyTopics,
}

impl QueryError {
    pub fn detail(self) -> &'static str {
        match self {
            QueryError::BadEscape => "malformed percent-encoding",
            QueryError::NotUtf8 => "value is not UTF-8",
            QueryError::MissingTopic => "at least one topic is required",
            QueryError::InvalidTopic => "topics are 1-256 bytes of UTF-8 without control characters",
            QueryError::TooManyTopics => "at most 64 topics",
        }
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.detail())
    }
}

/// A topic name is 1-256 bytes of UTF-8 with no control character.
pub fn valid_topic(topic: &str) -> bool {
    (1..=MAX_TOPIC_LEN).contains(&topic.len()) && !topic.chars().any(char::is_control)
}

/// Splits `a=1&b=2` into raw (still encoded) name/value pairs; empty pieces are skipped.
pub fn pairs(input: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    input.split(|&b| b == b'&').filter(|piece| !piece.is_empty()).map(|piece| {
        match piece.iter().position(|&b| b == b'=') {
            Some(i) => (&piece[..i], &piece[i + 1..]),
            None => (piece, &piece[piece.len()..]),
        }
    })
}

/// Decodes one component into bytes.
pub fn decode_bytes(raw: &[u8]) -> Result<Vec<u8>, QueryError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(raw.get(i + 1)), hex(raw.get(i + 2))) else {
                    return Err(QueryError::BadEscape);
                };
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Ok(out)
}

/// Decodes one component into UTF-8 text.
pub fn decode_text(raw: &[u8]) -> Result<String, QueryError> {
    String::from_utf8(decode_bytes(raw)?).map_err(|_| QueryError::NotUtf8)
}

/// Adds a topic unless already present; checks the name and the count.
pub fn add_topic(topics: &mut Vec<String>, topic: String) -> Result<(), QueryError> {
    if !valid_topic(&topic) {
        return Err(QueryError::InvalidTopic);
    }
    if !topics.contains(&topic) {
        if topics.len() == MAX_TOPICS {
            return Err(QueryError::TooManyTopics);
        }
        topics.push(topic);
    }
    Ok(())
}

/// `GET /events?topic=T[&topic=T2...][&lastEventId=ID]`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Subscribe {
    pub topics: Vec<String>,            // distinct, in the order given
    pub last_event_id: Option<Vec<u8>>, // decoded `lastEventId`, for clients that cannot set headers
}

/// Parses a subscribe query. Unknown parameters (cache busters) are ignored.
pub fn parse_subscribe(query: &[u8]) -> Result<Subscribe, QueryError> {
    let mut subscribe = Subscribe::default();
    for (name, value) in pairs(query) {
        match &decode_bytes(name)?[..] {
            b"topic" => add_topic(&mut subscribe.topics, decode_text(value)?)?,
            b"lastEventId" if subscribe.last_event_id.is_none() => {
                subscribe.last_event_id = Some(decode_bytes(value)?);
            }
            _ => {}
        }
    }
    if subscribe.topics.is_empty() {
        return Err(QueryError::MissingTopic);
    }
    Ok(subscribe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_as_browsers_encode() {
        let cases: &[(&str, Result<&str, QueryError>)] = &[
            ("plain", Ok("plain")),
            ("a+b", Ok("a b")),
            ("a%20b", Ok("a b")),
            ("%2B", Ok("+")),
            ("%e2%9c%93", Ok("✓")),
            ("100%25", Ok("100%")),
            ("%", Err(QueryError::BadEscape)),
            ("%2", Err(QueryError::BadEscape)),
            ("%zz", Err(QueryError::BadEscape)),
            ("%ff", Err(QueryError::NotUtf8)),
        ];
        for (raw, want) in cases {
            assert_eq!(decode_text(raw.as_bytes()).as_deref(), want.as_deref(), "{raw}");
        }
    }

    #[test]
    fn parses_topics_and_resume_id() {
        let got = parse_subscribe(b"topic=news&_=123&topic=a+b&topic=news&lastEventId=1-2&&x").unwrap();
        assert_eq!(got.topics, ["news", "a b"]);
        assert_eq!(got.last_event_id.as_deref(), Some(&b"1-2"[..]));
    }

    #[test]
    fn refuses_missing_invalid_and_too_many_topics() {
        let long = format!("topic={}", "x".repeat(MAX_TOPIC_LEN + 1));
        let max = format!("topic={}", "y".repeat(MAX_TOPIC_LEN));
        let many: Vec<String> = (0..=MAX_TOPICS).map(|i| format!("topic=t{i}")).collect();
        let cases: &[(&str, Result<usize, QueryError>)] = &[
            ("", Err(QueryError::MissingTopic)),
            ("lastEventId=1-1", Err(QueryError::MissingTopic)),
            ("topic=", Err(QueryError::InvalidTopic)),
            ("topic=a%0Ab", Err(QueryError::InvalidTopic)),
            ("topic=a%00", Err(QueryError::InvalidTopic)),
            ("topic=a%C2%85", Err(QueryError::InvalidTopic)),
            (&long, Err(QueryError::InvalidTopic)),
            (&max, Ok(1)),
            (&many[..MAX_TOPICS].join("&"), Ok(MAX_TOPICS)),
            (&many.join("&"), Err(QueryError::TooManyTopics)),
        ];
        for (query, want) in cases {
            let got = parse_subscribe(query.as_bytes()).map(|s| s.topics.len());
            assert_eq!(got, *want, "{query}");
        }
    }
}
