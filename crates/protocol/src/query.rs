//! The subscribe query, `GET /events?topic=T[&topic=T2...][&lastEventId=ID][&token=JWT]`,
//! decoded as browsers encode it. A topic may be a pattern (`orders/*`,
//! `team/7/**`; see `pattern`); patterns count toward the 64.

use std::fmt;

use crate::form::{self, FormError};
use crate::pattern::{Pattern, PatternError, is_pattern};
use crate::topic::{TopicError, add_topic};

/// Why a subscribe query is refused (400).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum QueryError {
    /// A component could not be decoded.
    Form(FormError),
    /// The topics are missing, invalid or too many.
    Topic(TopicError),
    /// A pattern that cannot be one (`**` not last).
    Pattern(PatternError),
}

impl QueryError {
    /// One line for a response body and the log.
    pub fn detail(self) -> &'static str {
        match self {
            QueryError::Form(error) => error.detail(),
            QueryError::Topic(error) => error.detail(),
            QueryError::Pattern(error) => error.detail(),
        }
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.detail())
    }
}

impl std::error::Error for QueryError {}

impl From<FormError> for QueryError {
    fn from(error: FormError) -> Self {
        QueryError::Form(error)
    }
}

impl From<TopicError> for QueryError {
    fn from(error: TopicError) -> Self {
        QueryError::Topic(error)
    }
}

/// What a subscribe query asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Subscribe {
    /// Distinct topics (or patterns), in the order given.
    pub topics: Vec<String>,
    /// The decoded `lastEventId`, for clients that cannot set headers.
    pub last_event_id: Option<Vec<u8>>,
    /// The decoded `token` (a credential for clients that cannot set headers):
    /// never a topic, never printed.
    pub token: Option<Secret>,
}

/// A credential: its `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Parses a subscribe query. Unknown parameters (cache busters) are ignored.
pub fn parse_subscribe(query: &[u8]) -> Result<Subscribe, QueryError> {
    let mut subscribe = Subscribe::default();
    for (name, value) in form::pairs(query) {
        match &form::decode_bytes(name)?[..] {
            b"topic" => {
                let topic = form::decode_text(value)?;
                if is_pattern(&topic) {
                    Pattern::parse(&topic).map_err(QueryError::Pattern)?;
                }
                add_topic(&mut subscribe.topics, topic)?;
            }
            b"lastEventId" if subscribe.last_event_id.is_none() => {
                subscribe.last_event_id = Some(form::decode_bytes(value)?);
            }
            b"token" if subscribe.token.is_none() => subscribe.token = Some(Secret(form::decode_bytes(value)?)),
            _ => {}
        }
    }
    if subscribe.topics.is_empty() {
        return Err(TopicError::Missing.into());
    }
    Ok(subscribe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::{MAX_TOPIC_LEN, MAX_TOPICS};

    #[test]
    fn parses_topics_and_resume_id() {
        let got =
            parse_subscribe(b"topic=news&_=123&topic=a+b&topic=news&lastEventId=1-2&&x&token=a%2Eb&token=c").unwrap();
        assert_eq!(got.topics, ["news", "a b"]);
        assert_eq!(got.last_event_id.as_deref(), Some(&b"1-2"[..]));
        assert_eq!(got.token, Some(Secret(b"a.b".to_vec())), "the first token; never a topic");
        assert!(!format!("{got:?}").contains("a.b"), "a token is never printed");
    }

    #[test]
    fn refuses_missing_invalid_and_too_many_topics() {
        let long = format!("topic={}", "x".repeat(MAX_TOPIC_LEN + 1));
        let max = format!("topic={}", "y".repeat(MAX_TOPIC_LEN));
        let many: Vec<String> = (0..=MAX_TOPICS).map(|i| format!("topic=t{i}")).collect();
        let missing = Err(QueryError::Topic(TopicError::Missing));
        let invalid = Err(QueryError::Topic(TopicError::Invalid));
        let cases: &[(&str, Result<usize, QueryError>)] = &[
            ("", missing),
            ("lastEventId=1-1", missing),
            ("topic=", invalid),
            ("topic=a%0Ab", invalid),
            ("topic=a%00", invalid),
            ("topic=a%C2%85", invalid),
            ("topic=%zz", Err(QueryError::Form(FormError::BadEscape))),
            ("topic=orders/*&topic=team/7/**&topic=a*b", Ok(3)),
            ("topic=a/**/b", Err(QueryError::Pattern(PatternError::DoubleStarNotLast))),
            (&long, invalid),
            (&max, Ok(1)),
            (&many[..MAX_TOPICS].join("&"), Ok(MAX_TOPICS)),
            (&many.join("&"), Err(QueryError::Topic(TopicError::TooMany))),
        ];
        for (query, want) in cases {
            let got = parse_subscribe(query.as_bytes()).map(|s| s.topics.len());
            assert_eq!(got, *want, "{query}");
        }
    }
}
