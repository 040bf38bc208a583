//! The subscribe query decoder: no panic, and what it accepts is 1-64
//! distinct valid topics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssehub_protocol::query::parse_subscribe;
use ssehub_protocol::topic::{MAX_TOPICS, valid_topic};

fuzz_target!(|query: &[u8]| {
    if let Ok(subscribe) = parse_subscribe(query) {
        assert!((1..=MAX_TOPICS).contains(&subscribe.topics.len()));
        assert!(subscribe.topics.iter().all(|t| valid_topic(t)));
        let mut sorted = subscribe.topics.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), subscribe.topics.len(), "distinct");
    }
});
