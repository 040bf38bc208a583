//! The `text/event-stream` wire format: the encoder every event goes through,
//! the fixed frames the server sends on its own, and a WHATWG-conformant parser
//! that tests and fuzz targets use to check what the encoder produced.
//!
//! The encoder is the single guard against field injection: `data` is split on
//! every line break (CR, LF, CRLF) into its own `data:` lines, and an `event`
//! type holding CR, LF or NUL is refused, so no publisher input can end a line
//! or an event early.

use std::fmt;

/// A comment line: keeps proxies from timing the stream out, ignored by clients.
pub const HEARTBEAT: &[u8] = b":\n";

/// Why a resuming client may have missed events; sent as an `ssehub-gap` event.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Gap {
    /// `Last-Event-ID` is not an id this server could have issued.
    Unparseable,
    /// The id is older than this process: events in between were never retained.
    BeforeStart,
    /// History already dropped events newer than the id.
    Evicted,
    /// Cluster mode: the Redis stream was reset (or lost), events may be missing.
    Reset,
    /// Cluster mode: Redis could not be read to replay what the client missed.
    Unavailable,
}

impl Gap {
    /// The complete frame. It carries a `data:` line because EventSource
    /// ignores events without data, and no `id:` so the client's
    /// `lastEventId` stays whatever it received last.
    pub fn frame(self) -> &'static [u8] {
        match self {
            Gap::Unparseable => b"event: ssehub-gap\ndata: {\"reason\":\"unparseable-id\"}\n\n",
            Gap::BeforeStart => b"event: ssehub-gap\ndata: {\"reason\":\"before-start\"}\n\n",
            Gap::Evicted => b"event: ssehub-gap\ndata: {\"reason\":\"evicted\"}\n\n",
            Gap::Reset => b"event: ssehub-gap\ndata: {\"reason\":\"stream-reset\"}\n\n",
            Gap::Unavailable => b"event: ssehub-gap\ndata: {\"reason\":\"backplane-unavailable\"}\n\n",
        }
    }
}

/// The block a stream opens with: sets the client's reconnection delay.
pub fn retry_frame(retry_ms: u64) -> Vec<u8> {
    format!("retry: {retry_ms}\n\n").into_bytes()
}

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
        out.extend_from_slice(format!("retry: {retry}\n").as_bytes());
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

/// An event as a browser's EventSource would dispatch it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedEvent {
    pub event_type: String, // "message" when the stream named none
    pub data: String,
    pub last_event_id: String,
}

/// The WHATWG HTML "event stream interpretation" algorithm, fed in arbitrary chunks.
///
/// Not used by the server itself: it is the reference the encoder is tested against.
#[derive(Debug, Default)]
pub struct EventStreamParser {
    line: Vec<u8>,
    after_cr: bool,     // the previous chunk ended in CR: a leading LF belongs to it
    started: bool,      // past the optional leading BOM
    data: String,       // the data buffer
    event_type: String, // the event type buffer
    last_event_id: String,
    /// The last valid `retry:` value seen, in milliseconds.
    pub reconnection_time: Option<u64>,
    /// Comment lines seen (heartbeats), counted for tests.
    pub comments: usize,
}

impl EventStreamParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes, returning the events they complete.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<ParsedEvent> {
        let events = Vec::new();
        if bytes.is_empty() {
            return events;
        }
        if !self.started {
            self.line.extend_from_slice(bytes);
            if self.line.len() < 3 && b"\xEF\xBB\xBF".starts_with(&self.line) {
                return events;
            }
            self.started = true;
            let pending = std::mem::take(&mut self.line);
            let pending = pending.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&pending);
            return self.feed_lines(pending, events);
        }
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        self.feed_lines(bytes, events)
    }

    fn feed_lines(&mut self, mut bytes: &[u8], mut events: Vec<ParsedEvent>) -> Vec<ParsedEvent> {
        while let Some(i) = bytes.iter().position(|&b| b == b'\r' || b == b'\n') {
            self.line.extend_from_slice(&bytes[..i]);
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.process_line(&String::from_utf8_lossy(&line)) {
                events.push(event);
            }
            let mut skip = 1;
            if bytes[i] == b'\r' {
                match bytes.get(i + 1) {
                    Some(b'\n') => skip = 2,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            bytes = &bytes[i + skip..];
        }
        self.line.extend_from_slice(bytes);
        events
    }

    fn process_line(&mut self, line: &str) -> Option<ParsedEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            self.comments += 1;
            return None;
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (line, ""),
        };
        match field {
            "event" => self.event_type = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.last_event_id = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.reconnection_time = value.parse().ok();
            }
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<ParsedEvent> {
        let event_type = std::mem::take(&mut self.event_type);
        if self.data.is_empty() {
            return None;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        Some(ParsedEvent {
            event_type: if event_type.is_empty() { "message".to_owned() } else { event_type },
            data,
            last_event_id: self.last_event_id.clone(),
        })
    }
}

/// `data` as a parser hands it back: every line break becomes LF.
pub fn normalize_newlines(data: &str) -> String {
    lines(data).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn parser_splits_on_every_line_ending_and_any_chunking() {
        let stream = b"retry: 100\r\n\r\n: hb\nid: 1\revent: e\r\ndata: a\ndata:b\r\r:x\nid: 2\ndata: \n\n";
        let want = vec![
            ParsedEvent { event_type: "e".into(), data: "a\nb".into(), last_event_id: "1".into() },
            ParsedEvent { event_type: "message".into(), data: "".into(), last_event_id: "2".into() },
        ];
        for split in 0..=stream.len() {
            for split2 in split..=stream.len() {
                let mut parser = EventStreamParser::new();
                let mut got = parser.feed(&stream[..split]);
                got.extend(parser.feed(&stream[split..split2]));
                got.extend(parser.feed(&stream[split2..]));
                assert_eq!(got, want, "split at {split}/{split2}");
                assert_eq!(parser.reconnection_time, Some(100));
                assert_eq!(parser.comments, 2);
            }
        }
    }

    #[test]
    fn parser_ignores_blocks_without_data_and_strips_bom() {
        let mut parser = EventStreamParser::new();
        let got = parser.feed(b"\xEF\xBB\xBFevent: x\n\nid: 9\n\ndata: y\n\n");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event_type, "message");
        assert_eq!(got[0].last_event_id, "9");
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
            assert_eq!(parser.reconnection_time, retry);
        }
    }
}
