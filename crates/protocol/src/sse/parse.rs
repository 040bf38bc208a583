//! The WHATWG HTML "event stream interpretation" algorithm, incremental: fed
//! whatever bytes a read returned, it hands each dispatched event to a
//! callback as borrowed slices.
//!
//! It handles LF, CRLF and bare CR line endings (including a CRLF split
//! between two reads), a leading UTF-8 BOM, comment lines (`:`), `data`
//! fields joined with LF, `event`, `id` (ignored if it contains NUL) and
//! `retry`, and splits at any byte. Lines contained in one read are parsed in
//! place; only a line cut by a read boundary is copied to a carry buffer. The
//! buffers are reused, so steady-state parsing allocates nothing per event:
//! the load generator reads every event of every subscriber through it.
//! Tests and fuzz targets use [`EventStreamParser`], which collects owned
//! events as a browser would dispatch them.

use std::fmt;

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// One dispatched event, borrowed from the parser's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The data buffer without its final LF.
    pub data: &'a [u8],
    /// The event type; empty for the default type (`message`).
    pub event: &'a [u8],
    /// The last event id buffer (it persists across events).
    pub id: &'a [u8],
}

/// Why the parser gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseError {
    /// A single line cut by reads exceeded the configured maximum (a runaway server).
    LineTooLong,
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::LineTooLong => write!(f, "SSE line too long"),
        }
    }
}

impl std::error::Error for SseError {}

/// The incremental parser; see the module documentation.
#[derive(Debug)]
pub struct SseParser {
    /// Partial line carried over from the previous `feed`.
    line: Vec<u8>,
    /// Data buffer: each `data` field's value followed by LF.
    data: Vec<u8>,
    /// The event type buffer.
    event: Vec<u8>,
    /// The last event id buffer.
    last_id: Vec<u8>,
    /// The previous feed ended with CR: a leading LF is its CRLF tail.
    skip_lf: bool,
    /// BOM bytes matched so far at stream start; 3 = past the start.
    bom: u8,
    /// Longest carried line before [`SseError::LineTooLong`].
    max_line: usize,
    /// Comment lines seen.
    comments: u64,
    /// The last valid `retry:` value.
    retry_ms: Option<u64>,
}

impl SseParser {
    /// `max_line` bounds the carry buffer (and so memory per connection).
    pub fn new(max_line: usize) -> SseParser {
        SseParser {
            line: Vec::new(),
            data: Vec::new(),
            event: Vec::new(),
            last_id: Vec::new(),
            skip_lf: false,
            bom: 0,
            max_line,
            comments: 0,
            retry_ms: None,
        }
    }

    /// Comment lines seen (server keep-alives are usually comments).
    pub fn comments(&self) -> u64 {
        self.comments
    }

    /// The reconnection time the stream set with its last valid `retry:` line, in milliseconds.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    /// The last event id buffer: what a reconnecting client sends as `Last-Event-ID`.
    pub fn last_event_id(&self) -> &[u8] {
        &self.last_id
    }

    /// Parses `input`, calling `on_event` for every complete event.
    pub fn feed<F>(&mut self, mut input: &[u8], on_event: &mut F) -> Result<(), SseError>
    where
        F: FnMut(Event<'_>),
    {
        while self.bom < 3 {
            let Some((&b, rest)) = input.split_first() else {
                return Ok(());
            };
            if b == BOM[usize::from(self.bom)] {
                self.bom += 1;
                input = rest;
            } else {
                // Not a BOM after all: the matched prefix is line content.
                self.line.extend_from_slice(&BOM[..usize::from(self.bom)]);
                self.bom = 3;
            }
        }
        while !input.is_empty() {
            if self.skip_lf {
                self.skip_lf = false;
                if input[0] == b'\n' {
                    input = &input[1..];
                    continue;
                }
            }
            match input.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) => {
                    if self.line.is_empty() {
                        self.process_line(&input[..i], on_event);
                    } else {
                        if self.line.len() + i > self.max_line {
                            return Err(SseError::LineTooLong);
                        }
                        self.line.extend_from_slice(&input[..i]);
                        // Take the carry buffer out to borrow it beside
                        // `self`, then put it back to keep its capacity.
                        let mut line = std::mem::take(&mut self.line);
                        self.process_line(&line, on_event);
                        line.clear();
                        self.line = line;
                    }
                    self.skip_lf = input[i] == b'\r';
                    input = &input[i + 1..];
                }
                None => {
                    if self.line.len() + input.len() > self.max_line {
                        return Err(SseError::LineTooLong);
                    }
                    self.line.extend_from_slice(input);
                    break;
                }
            }
        }
        Ok(())
    }

    fn process_line<F>(&mut self, line: &[u8], on_event: &mut F)
    where
        F: FnMut(Event<'_>),
    {
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if line[0] == b':' {
            self.comments += 1;
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            // An id containing NUL is ignored (spec).
            b"id" if !value.contains(&0) => {
                self.last_id.clear();
                self.last_id.extend_from_slice(value);
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.retry_ms = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
            }
            // Unknown fields (and malformed id/retry) are ignored.
            _ => {}
        }
    }

    fn dispatch<F>(&mut self, on_event: &mut F)
    where
        F: FnMut(Event<'_>),
    {
        if self.data.is_empty() {
            self.event.clear();
            return;
        }
        let n = self.data.len() - 1; // drop the trailing LF
        on_event(Event { data: &self.data[..n], event: &self.event, id: &self.last_id });
        self.data.clear();
        self.event.clear();
    }
}

/// An event as a browser's `EventSource` would dispatch it, owned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedEvent {
    /// `message` when the stream named no type.
    pub event_type: String,
    /// The data, lines joined with LF.
    pub data: String,
    /// The last event id at dispatch time.
    pub last_event_id: String,
}

impl From<Event<'_>> for ParsedEvent {
    fn from(event: Event<'_>) -> Self {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        ParsedEvent {
            event_type: if event.event.is_empty() { "message".to_owned() } else { text(event.event) },
            data: text(event.data),
            last_event_id: text(event.id),
        }
    }
}

/// [`SseParser`] without a line bound, collecting owned events: the reference
/// reader for tests and fuzz targets.
#[derive(Debug)]
pub struct EventStreamParser {
    /// The parser it wraps.
    inner: SseParser,
}

impl Default for EventStreamParser {
    fn default() -> Self {
        Self::new()
    }
}

impl EventStreamParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        EventStreamParser { inner: SseParser::new(usize::MAX) }
    }

    /// Feeds bytes, returning the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<ParsedEvent> {
        let mut events = Vec::new();
        // Unbounded lines: the only error cannot happen.
        let _ = self.inner.feed(bytes, &mut |event: Event<'_>| events.push(event.into()));
        events
    }

    /// The last valid `retry:` value seen, in milliseconds.
    pub fn reconnection_time(&self) -> Option<u64> {
        self.inner.retry_ms()
    }

    /// Comment lines seen (heartbeats).
    pub fn comments(&self) -> usize {
        self.inner.comments() as usize
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    struct Owned {
        data: String,
        event: String,
        id: String,
    }

    fn collect_chunks(chunks: &[&[u8]]) -> Vec<Owned> {
        let mut p = SseParser::new(1 << 16);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut |e: Event<'_>| {
                out.push(Owned {
                    data: String::from_utf8_lossy(e.data).into_owned(),
                    event: String::from_utf8_lossy(e.event).into_owned(),
                    id: String::from_utf8_lossy(e.id).into_owned(),
                })
            })
            .unwrap();
        }
        out
    }

    fn ev(data: &str, event: &str, id: &str) -> Owned {
        Owned { data: data.into(), event: event.into(), id: id.into() }
    }

    /// Feeds `input` whole, byte by byte, and split at every pair of
    /// positions, and checks the result is always `expected`.
    fn check_all_splits(input: &[u8], expected: &[Owned]) {
        assert_eq!(collect_chunks(&[input]), expected, "whole");
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(collect_chunks(&bytes), expected, "byte by byte");
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let got = collect_chunks(&[&input[..i], &input[i..j], &input[j..]]);
                assert_eq!(got, expected, "split at {i},{j}");
            }
        }
    }

    const STREAM_LF: &str = ": hello\n\ndata: 1:2:abc\n\nevent: tick\nid: 7\ndata: a\ndata:b\n\n";

    fn stream_expected() -> Vec<Owned> {
        vec![ev("1:2:abc", "", ""), ev("a\nb", "tick", "7")]
    }

    #[test]
    fn lf_endings() {
        check_all_splits(STREAM_LF.as_bytes(), &stream_expected());
    }

    #[test]
    fn crlf_endings() {
        check_all_splits(STREAM_LF.replace('\n', "\r\n").as_bytes(), &stream_expected());
    }

    #[test]
    fn cr_endings() {
        check_all_splits(STREAM_LF.replace('\n', "\r").as_bytes(), &stream_expected());
    }

    #[test]
    fn mixed_endings() {
        check_all_splits(b"data: x\r\ndata: y\r\r\n:c\n\rdata:z\n\n", &[ev("x\ny", "", ""), ev("z", "", "")]);
    }

    #[test]
    fn cr_then_cr_is_two_line_ends() {
        // "\r\r" is an empty line after the data line: dispatch.
        check_all_splits(b"data: q\r\r", &[ev("q", "", "")]);
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored() {
        let mut p = SseParser::new(1024);
        let mut n = 0;
        p.feed(b":ka\n: ka\nfoo: bar\nnocolon\n\n", &mut |_| n += 1).unwrap();
        assert_eq!(n, 0);
        assert_eq!(p.comments(), 2);
    }

    #[test]
    fn empty_data_field_dispatches_empty_event() {
        check_all_splits(b"data\n\ndata:\n\n", &[ev("", "", ""), ev("", "", "")]);
    }

    #[test]
    fn event_without_data_is_not_dispatched_and_resets_type() {
        check_all_splits(b"event: x\n\ndata: y\n\n", &[ev("y", "", "")]);
    }

    #[test]
    fn only_one_leading_space_is_stripped() {
        check_all_splits(b"data:  two\n\n", &[ev(" two", "", "")]);
    }

    #[test]
    fn id_persists_and_nul_id_is_ignored() {
        check_all_splits(
            b"id: 1\ndata: a\n\ndata: b\n\nid: x\0y\ndata: c\n\nid\ndata: d\n\n",
            &[ev("a", "", "1"), ev("b", "", "1"), ev("c", "", "1"), ev("d", "", "")],
        );
    }

    #[test]
    fn retry_is_parsed() {
        let mut p = SseParser::new(1024);
        p.feed(b"retry: 1500\nretry: x\n", &mut |_| {}).unwrap();
        assert_eq!(p.retry_ms(), Some(1500));
    }

    #[test]
    fn leading_bom_is_stripped_once() {
        check_all_splits(b"\xEF\xBB\xBFdata: a\n\n", &[ev("a", "", "")]);
        // A partial BOM is line content: "\xEF\xBBdata" is an unknown field.
        check_all_splits(b"\xEF\xBBdata: a\n\ndata: b\n\n", &[ev("b", "", "")]);
    }

    #[test]
    fn incomplete_event_is_not_dispatched() {
        assert!(collect_chunks(&[b"data: a\n"]).is_empty());
        assert!(collect_chunks(&[b"data: a"]).is_empty());
    }

    #[test]
    fn line_length_is_bounded() {
        let mut p = SseParser::new(8);
        let r = p.feed(b"data: 0123", &mut |_| {});
        assert_eq!(r, Err(SseError::LineTooLong));
        let mut p = SseParser::new(8);
        p.feed(b"data", &mut |_| {}).unwrap();
        assert_eq!(p.feed(b": 0123\n", &mut |_| {}), Err(SseError::LineTooLong));
        // A long line contained in one read is parsed in place: fine.
        let mut p = SseParser::new(8);
        let mut n = 0;
        p.feed(b"data: 0123456789\n\n", &mut |_| n += 1).unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn buffers_are_reused() {
        let mut p = SseParser::new(1 << 16);
        let frame = b"data: 12:34:abcdefgh\r\n\r\n";
        // Warm up with splits so the carry buffer has grown.
        for i in 0..frame.len() {
            p.feed(&frame[..i], &mut |_| {}).unwrap();
            p.feed(&frame[i..], &mut |_| {}).unwrap();
        }
        let (cap_line, cap_data) = (p.line.capacity(), p.data.capacity());
        let ptr = p.data.as_ptr();
        for i in 0..frame.len() {
            p.feed(&frame[..i], &mut |_| {}).unwrap();
            p.feed(&frame[i..], &mut |_| {}).unwrap();
        }
        assert_eq!((p.line.capacity(), p.data.capacity()), (cap_line, cap_data));
        assert_eq!(p.data.as_ptr(), ptr);
    }
}

#[cfg(test)]
mod owned_tests {
    use super::*;

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
                assert_eq!(parser.reconnection_time(), Some(100));
                assert_eq!(parser.comments(), 2);
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
}
