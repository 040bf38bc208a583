//! Topic names: what a subscriber asks for and a publisher sends to.

use std::fmt;

/// Most topics on one connection, or in one published event.
pub const MAX_TOPICS: usize = 64;
/// Longest topic name, in UTF-8 bytes.
pub const MAX_TOPIC_LEN: usize = 256;

/// Why a list of topics is refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TopicError {
    /// No topic at all.
    Missing,
    /// Empty, longer than 256 bytes, or holding a control character.
    Invalid,
    /// More than [`MAX_TOPICS`] distinct topics.
    TooMany,
}

impl TopicError {
    /// One line for a response body and the log.
    pub fn detail(self) -> &'static str {
        match self {
            TopicError::Missing => "at least one topic is required",
            TopicError::Invalid => "topics are 1-256 bytes of UTF-8 without control characters",
            TopicError::TooMany => "at most 64 topics",
        }
    }
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.detail())
    }
}

impl std::error::Error for TopicError {}

/// A topic name is 1-256 bytes of UTF-8 with no control character.
pub fn valid_topic(topic: &str) -> bool {
    (1..=MAX_TOPIC_LEN).contains(&topic.len()) && !topic.chars().any(char::is_control)
}

/// Adds a topic unless already present; checks the name and the count.
pub fn add_topic(topics: &mut Vec<String>, topic: String) -> Result<(), TopicError> {
    if !valid_topic(&topic) {
        return Err(TopicError::Invalid);
    }
    if !topics.contains(&topic) {
        if topics.len() == MAX_TOPICS {
            return Err(TopicError::TooMany);
        }
        topics.push(topic);
    }
    Ok(())
}
