//! The form and JSON publish decoders: no panic, and whatever they accept
//! encodes into exactly one event carrying the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssehub::publish;
use ssehub::sse::{EventStreamParser, normalize_newlines};

fuzz_target!(|input: (bool, &[u8])| {
    let (json, body) = input;
    let content_type: &[u8] = if json { b"application/json" } else { b"application/x-www-form-urlencoded" };
    let Ok(publications) = publish::decode(Some(content_type), body) else { return };
    for publication in publications {
        assert!((1..=64).contains(&publication.topics.len()));
        assert!(publication.topics.iter().all(|t| ssehub::query::valid_topic(t)));
        let event = publication.encode();
        let mut parser = EventStreamParser::new();
        let events = parser.feed(event.frame());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, normalize_newlines(&publication.data));
        assert_eq!(parser.reconnection_time, publication.retry);
    }
});
