//! The field encoder: the single guard against field injection.
//!
//! `data` is split on every line break (CR, LF, CRLF) into its own `data:`
//! lines, and an `event` type holding CR, LF or NUL is refused, so no
//! publisher input can end a line or an event early.

use std::fmt;

/// A publisher field that cannot be encoded without changing the stream's meaning.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FieldError {
    /// `event` holds CR, LF or NUL.
    EventType,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldError::EventType => f.write_str("event type must not contain CR, LF or NUL"),
        }
    }
}

impl std::error::Error for FieldError {}

/// True when `event` can be sent as an `event:` line unchanged.
pub fn valid_event_type(event: &str) -> bool {
    !event.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

/// Appends the `event:`, `retry:` and `data:` lines and the closing blank line.
///
/// An empty `event` is left out: clients treat it as the default `message`.
pub fn encode_fields(out: &mut Vec<u8>, event: Option<&str>, retry: Option<u64>, data: &str) -> Result<(), FieldError> {
    if let Some(event) = event.filter(|e| !e.is_empty()) {
        if !valid_event_type(event) {
            return Err(FieldError::EventType);
        }
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    if let Some(retry) = retry {
        out.extend_from_slice(&retry_line(retry));
    }
    for line in lines(data) {
        // Always "data: " with the space: the parser strips exactly one, so a
        // line that itself starts with a space survives.
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    Ok(())
}

/// `retry: <ms>\n`: sets the client's reconnection delay. On its own, with
/// no blank line after it, it dispatches nothing, so even clients that
/// dispatch empty blocks (fetch-based ones) see no event.
pub fn retry_line(retry_ms: u64) -> Vec<u8> {
    format!("retry: {retry_ms}\n").into_bytes()
}

/// Splits on CRLF, LF and CR, as an event-stream parser does. `""` is one empty line.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(text)
            }
            Some(i) => {
                let skip = if text[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&text[i + skip..]);
                Some(&text[..i])
            }
        }
    })
}

/// `data` as a parser hands it back: every line break becomes LF.
pub fn normalize_newlines(data: &str) -> String {
    lines(data).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::EventStreamParser;

    fn encode(event: Option<&str>, retry: Option<u64>, data: &str) -> String {
        let mut out = Vec::new();
        encode_fields(&mut out, event, retry, data).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn encodes_each_line_break_as_its_own_data_line() {
        let cases = [
            ("hello", "data: hello\n\n"),
            ("", "data: \n\n"),
            ("a\nb", "data: a\ndata: b\n\n"),
            ("a\r\nb", "data: a\ndata: b\n\n"),
            ("a\rb", "data: a\ndata: b\n\n"),
            ("a\n\nb", "data: a\ndata: \ndata: b\n\n"),
            ("a\r\n", "data: a\ndata: \n\n"),
            ("\r\r\n\n", "data: \ndata: \ndata: \ndata: \n\n"),
            (" lead", "data:  lead\n\n"),
            ("id: 5\n\nevent: x", "data: id: 5\ndata: \ndata: event: x\n\n"),
        ];
        for (data, want) in cases {
            assert_eq!(encode(None, None, data), want, "{data:?}");
        }
    }

    #[test]
    fn encodes_event_type_and_retry_before_data() {
        assert_eq!(encode(Some("tick"), Some(3000), "x"), "event: tick\nretry: 3000\ndata: x\n\n");
        assert_eq!(encode(Some(""), None, "x"), "data: x\n\n");
    }

    #[test]
    fn refuses_event_types_that_would_break_the_line() {
        for bad in ["a\nb", "a\rb", "a\0b", "\n", "x\r\ndata: y"] {
            let mut out = Vec::new();
            assert_eq!(encode_fields(&mut out, Some(bad), None, "d"), Err(FieldError::EventType));
        }
    }

    #[test]
    fn encoded_events_round_trip_through_the_parser() {
        let cases = [
            (Some("update"), Some(5u64), "line1\nline2\r\nline3\rline4"),
            (None, None, ""),
            (None, None, "\n"),
            (Some("x"), None, "data: injected\n\nevent: evil\nid: 666"),
            (None, None, ":not a comment"),
            (None, None, "\u{feff}bom and ünïcödé"),
        ];
        for (event, retry, data) in cases {
            let mut frame = Vec::new();
            encode_fields(&mut frame, event, retry, data).unwrap();
            let mut parser = EventStreamParser::new();
            let got = parser.feed(&frame);
            assert_eq!(got.len(), 1, "{data:?}");
            assert_eq!(got[0].data, normalize_newlines(data));
            assert_eq!(got[0].event_type, event.filter(|e| !e.is_empty()).unwrap_or("message"));
            assert_eq!(parser.reconnection_time(), retry);
        }
    }

    #[test]
    fn a_retry_line_alone_dispatches_nothing() {
        let mut parser = EventStreamParser::new();
        let mut stream = retry_line(3000);
        stream.extend_from_slice(b":\n:\nid: 1-0\ndata: x\n\n");
        let got = parser.feed(&stream);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, "x");
        assert_eq!(parser.reconnection_time(), Some(3000));
    }
}
