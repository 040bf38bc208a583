//! The form and JSON publish decoders: no panic, and whatever they accept
//! encodes into exactly one event carrying the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssehub_protocol::http::{ChunkedDecoder, Line};
use ssehub_protocol::publish;
use ssehub_protocol::sse::{EventStreamParser, normalize_newlines};

fuzz_target!(|input: (bool, &[u8])| {
    let (json, body) = input;
    let content_type: &[u8] = if json { b"application/json" } else { b"application/x-www-form-urlencoded" };
    let Ok(publications) = publish::decode(Some(content_type), body) else { return };
    for publication in publications {
        assert!((1..=64).contains(&publication.topics.len()));
        assert!(publication.topics.iter().all(|t| ssehub_protocol::topic::valid_topic(t)));
        assert!(
            !publication.topics.iter().any(|t| ssehub_protocol::pattern::is_pattern(t)),
            "a pattern is never a topic"
        );
        let event = publication.encode();
        let mut parser = EventStreamParser::new();
        let events = parser.feed(event.plain());
        // The chunked form must carry exactly the plain bytes.
        let mut unchunked = Vec::new();
        let mut decoder = ChunkedDecoder::new(u64::MAX, Line::Strict);
        decoder.decode(event.chunked(), &mut |d: &[u8]| unchunked.extend_from_slice(d)).unwrap();
        assert_eq!(unchunked, event.plain());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, normalize_newlines(&publication.data));
        assert_eq!(parser.reconnection_time(), publication.retry);
    }
});
