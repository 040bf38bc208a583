//! Incremental `text/event-stream` parser (WHATWG HTML "event stream
//! interpretation"), fed whatever bytes a read returned.
//!
//! It handles LF, CRLF and bare CR line endings (including a CRLF split
//! between two reads), a leading UTF-8 BOM, comment lines (`:`), `data`
//! fields joined with LF, `event`, `id` (ignored if it contains NUL) and
//! `retry`, and splits at any byte. Lines contained in one read are parsed in
//! place; only a line cut by a read boundary is copied to a carry buffer. The
//! buffers are reused, so steady-state parsing allocates nothing per event.

use std::fmt;

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// One dispatched event. `event` is empty for the default type ("message").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    pub data: &'a [u8],
    pub event: &'a [u8],
    pub id: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseError {
    /// A single line exceeded the configured maximum (a runaway server).
    LineTooLong,
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::LineTooLong => write!(f, "SSE line too long"),
        }
    }
}

#[derive(Debug)]
pub struct SseParser {
    /// Partial line carried over from the previous `feed`.
    line: Vec<u8>,
    /// Data buffer: each `data` field's value followed by LF.
    data: Vec<u8>,
    event: Vec<u8>,
    last_id: Vec<u8>,
    /// The previous feed ended with CR: a leading LF is its CRLF tail.
    skip_lf: bool,
    /// BOM bytes matched so far at stream start; 3 = past the start.
    bom: u8,
    max_line: usize,
    comments: u64,
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

    #[allow(dead_code)] // Parsed for completeness; no scenario reconnects by it.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
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
