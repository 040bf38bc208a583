//! Property tests where they are cheaper than fuzzing: the SSE encoder round
//! trip and the subscribe query decoder against a browser-style encoder.

use proptest::prelude::*;
use ssehub_protocol::query::parse_subscribe;
use ssehub_protocol::sse::{EventStreamParser, encode_fields, normalize_newlines, valid_event_type};
use ssehub_protocol::topic::{MAX_TOPICS, valid_topic};

/// `application/x-www-form-urlencoded` as browsers write it (URLSearchParams).
fn form_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'*' | b'-' | b'.' | b'_' | b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

proptest! {
    #[test]
    fn any_encodable_event_parses_back_to_itself(
        data in any::<String>(),
        event in proptest::option::of("[^\r\n\0]{0,20}|.{0,5}"),
        retry in proptest::option::of(any::<u64>()),
        cut in any::<usize>(),
    ) {
        let mut frame = b"id: 7-1\n".to_vec();
        match encode_fields(&mut frame, event.as_deref(), retry, &data) {
            Err(_) => prop_assert!(!valid_event_type(event.as_deref().unwrap_or_default())),
            Ok(()) => {
                let at = cut % (frame.len() + 1);
                let mut parser = EventStreamParser::new();
                let mut events = parser.feed(&frame[..at]);
                events.extend(parser.feed(&frame[at..]));
                prop_assert_eq!(events.len(), 1);
                prop_assert_eq!(&events[0].data, &normalize_newlines(&data));
                prop_assert_eq!(&events[0].last_event_id, "7-1");
                let want = event.filter(|e| !e.is_empty()).unwrap_or_else(|| "message".into());
                prop_assert_eq!(&events[0].event_type, &want);
                prop_assert_eq!(parser.reconnection_time(), retry);
            }
        }
    }

    #[test]
    fn topics_encoded_by_a_browser_decode_to_themselves(topics in proptest::collection::vec(any::<String>(), 1..80)) {
        let query: Vec<String> = topics.iter().map(|t| format!("topic={}", form_encode(t))).collect();
        let parsed = parse_subscribe(query.join("&").as_bytes());
        let mut distinct: Vec<&String> = Vec::new();
        for topic in &topics {
            if !distinct.contains(&topic) {
                distinct.push(topic);
            }
        }
        // A subscription name is a topic or a pattern: `**` anywhere but last is refused.
        let subscribable = |t: &String| valid_topic(t) && ssehub_protocol::pattern::Pattern::parse(t).is_ok();
        if topics.iter().all(subscribable) && distinct.len() <= MAX_TOPICS {
            let parsed = parsed.expect("valid topics are accepted");
            prop_assert_eq!(parsed.topics.iter().collect::<Vec<_>>(), distinct);
        } else {
            prop_assert!(parsed.is_err());
        }
    }
}
