//! Arbitrary `data`, `event` and `retry` are either refused or encoded into a
//! frame that a WHATWG event-stream parser, fed in arbitrary pieces, reads
//! back as exactly one event with the same fields: no publisher input can
//! inject a field or a second event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssehub_protocol::sse::{EventStreamParser, encode_fields, normalize_newlines, valid_event_type};

fuzz_target!(|input: (String, Option<String>, Option<u64>, Vec<u8>)| {
    let (data, event, retry, cuts) = input;
    let mut frame = b"id: 1-0\n".to_vec();
    if encode_fields(&mut frame, event.as_deref(), retry, &data).is_err() {
        assert!(!valid_event_type(event.as_deref().unwrap_or_default()));
        return;
    }
    let mut parser = EventStreamParser::new();
    let mut events = Vec::new();
    let mut rest = &frame[..];
    for cut in cuts {
        let at = usize::from(cut) % (rest.len() + 1);
        events.extend(parser.feed(&rest[..at]));
        rest = &rest[at..];
    }
    events.extend(parser.feed(rest));
    assert_eq!(events.len(), 1, "{frame:?}");
    assert_eq!(events[0].data, normalize_newlines(&data));
    assert_eq!(events[0].last_event_id, "1-0");
    let want_type = event.filter(|e| !e.is_empty()).unwrap_or_else(|| "message".into());
    assert_eq!(events[0].event_type, want_type);
    assert_eq!(parser.reconnection_time(), retry);
});
