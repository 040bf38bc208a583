//! The HTTP/1.1 client side the generator needs, and nothing more: building
//! the subscribe (GET) and publish requests into reused buffers, collecting
//! and parsing a response head incrementally (status line and the headers
//! that decide framing), and decoding the body by its framing (close
//! delimited as ssehub streams, Content-Length, or chunked as nchan and axum
//! stream).

use std::fmt;

use crate::chunked::{ChunkError, ChunkedDecoder};

/// Largest response head accepted before the connection is failed.
pub const MAX_HEAD: usize = 16 * 1024;

/// Appends a subscribe request for `path` to `out`.
pub fn write_get(out: &mut Vec<u8>, host: &str, path: &[u8]) {
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n");
}

/// Appends a request with a body (publish) to `out`. `headers` are complete
/// `Name: value` lines without CRLF.
pub fn write_request(out: &mut Vec<u8>, method: &str, host: &str, path: &[u8], headers: &[String], body: &[u8]) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, body.len() as u64);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

fn push_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    TooLarge,
    BadStatusLine,
    BadHeader,
    BadContentLength,
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            HeadError::TooLarge => "response head too large",
            HeadError::BadStatusLine => "malformed status line",
            HeadError::BadHeader => "malformed header line",
            HeadError::BadContentLength => "invalid Content-Length",
        };
        f.write_str(s)
    }
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Until the server closes (HTTP/1.0 style; ssehub's SSE streams).
    Close,
    Length(u64),
    Chunked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub framing: Framing,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
    pub event_stream: bool,
}

/// Parses a complete head (status line + headers + empty line).
pub fn parse_head(head: &[u8]) -> Result<ResponseHead, HeadError> {
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().ok_or(HeadError::BadStatusLine)?;
    // "HTTP/1.1 200 OK": version, space, three digits, then space or end.
    let rest = status_line.strip_prefix(b"HTTP/1.").ok_or(HeadError::BadStatusLine)?;
    if rest.len() < 5 || !rest[0].is_ascii_digit() || rest[1] != b' ' {
        return Err(HeadError::BadStatusLine);
    }
    let minor = rest[0] - b'0';
    let code = &rest[2..5];
    if !code.iter().all(u8::is_ascii_digit) || (rest.len() > 5 && rest[5] != b' ') {
        return Err(HeadError::BadStatusLine);
    }
    let status = code.iter().fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));

    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut event_stream = false;
    for line in lines {
        if line.is_empty() {
            break;
        }
        let colon = line.iter().position(|&b| b == b':').ok_or(HeadError::BadHeader)?;
        let name = &line[..colon];
        if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
            return Err(HeadError::BadHeader);
        }
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(HeadError::BadContentLength)?;
            if content_length.is_some_and(|old| old != v) {
                return Err(HeadError::BadContentLength);
            }
            content_length = Some(v);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            // The last coding decides: "gzip, chunked" is chunked.
            chunked =
                value.rsplit(|&b| b == b',').next().is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for tok in value.split(|&b| b == b',') {
                let tok = tok.trim_ascii();
                conn_close |= tok.eq_ignore_ascii_case(b"close");
                conn_keep_alive |= tok.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"content-type") {
            event_stream = value
                .split(|&b| b == b';')
                .next()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"text/event-stream"));
        }
    }
    // RFC 9112 §6.3: no body for 1xx/204/304; Transfer-Encoding overrides
    // Content-Length; a non-chunked Transfer-Encoding reads to close.
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Length(0)
    } else if transfer_encoding {
        if chunked { Framing::Chunked } else { Framing::Close }
    } else if let Some(n) = content_length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    let keep_alive = framing != Framing::Close && !conn_close && (minor >= 1 || conn_keep_alive);
    Ok(ResponseHead { status, framing, keep_alive, event_stream })
}

/// Collects a response head across reads.
#[derive(Debug, Default)]
pub struct HeadBuffer {
    buf: Vec<u8>,
}

impl HeadBuffer {
    /// Appends `input`; once the head is complete, returns it parsed and how
    /// many bytes of `input` it used (the rest is body).
    pub fn push(&mut self, input: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
        let old = self.buf.len();
        // Rescan the last 3 old bytes: the terminator may straddle reads.
        let from = old.saturating_sub(3);
        let take = input.len().min(MAX_HEAD + 4 - old.min(MAX_HEAD + 4));
        self.buf.extend_from_slice(&input[..take]);
        match find_head_end(&self.buf[from..]) {
            Some(end) => {
                let end = from + end;
                let head = parse_head(&self.buf[..end])?;
                self.buf.clear();
                Ok(Some((head, end - old)))
            }
            None if self.buf.len() > MAX_HEAD => Err(HeadError::TooLarge),
            None => Ok(None),
        }
    }

    /// Drops the buffer's memory (a subscriber needs it only once).
    pub fn release(&mut self) {
        self.buf = Vec::new();
    }
}

/// Index just past the empty line ending the head (CRLFCRLF or LFLF).
fn find_head_end(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\n' {
            if b.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    Chunked(ChunkError),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Chunked(e) => e.fmt(f),
        }
    }
}

/// Body decoder for one response, chosen by its [`Framing`].
#[derive(Debug, Clone)]
pub enum BodyDecoder {
    Close,
    Length(u64),
    Chunked(ChunkedDecoder),
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> BodyDecoder {
        match framing {
            Framing::Close => BodyDecoder::Close,
            Framing::Length(n) => BodyDecoder::Length(n),
            Framing::Chunked => BodyDecoder::Chunked(ChunkedDecoder::new()),
        }
    }

    /// The body has ended (never for close-delimited bodies: EOF ends them).
    pub fn is_done(&self) -> bool {
        match self {
            BodyDecoder::Close => false,
            BodyDecoder::Length(n) => *n == 0,
            BodyDecoder::Chunked(d) => d.is_done(),
        }
    }

    /// Passes body bytes of `input` to `out`; returns bytes consumed.
    pub fn feed<'a, F>(&mut self, input: &'a [u8], mut out: F) -> Result<usize, BodyError>
    where
        F: FnMut(&'a [u8]),
    {
        match self {
            BodyDecoder::Close => {
                out(input);
                Ok(input.len())
            }
            BodyDecoder::Length(left) => {
                let take = usize::try_from(*left).map_or(input.len(), |l| l.min(input.len()));
                if take > 0 {
                    out(&input[..take]);
                }
                *left -= take as u64;
                Ok(take)
            }
            BodyDecoder::Chunked(d) => d.feed(input, out).map_err(BodyError::Chunked),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_requests() {
        let mut out = Vec::new();
        write_get(&mut out, "127.0.0.1:8080", b"/events?topic=t0");
        assert_eq!(
            out,
            b"GET /events?topic=t0 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        );
        out.clear();
        let headers = vec!["Content-Type: text/plain".to_string()];
        write_request(&mut out, "POST", "h:1", b"/pub", &headers, b"hello");
        assert_eq!(
            out,
            b"POST /pub HTTP/1.1\r\nHost: h:1\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
        );
    }

    #[test]
    fn parses_heads() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\r\n").unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, Framing::Close);
        assert!(h.event_stream && !h.keep_alive);
        let h =
            parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.keep_alive);
        let h = parse_head(b"HTTP/1.1 201 Created\nContent-Length: 0\nConnection: close\n\n").unwrap();
        assert_eq!((h.status, h.framing, h.keep_alive), (201, Framing::Length(0), false));
        let h = parse_head(b"HTTP/1.0 204\r\n\r\n").unwrap();
        assert_eq!((h.status, h.framing, h.keep_alive), (204, Framing::Length(0), false));
        let h = parse_head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n").unwrap();
        assert!(h.keep_alive);
        assert_eq!(parse_head(b"HTTP/2 200\r\n\r\n"), Err(HeadError::BadStatusLine));
        assert_eq!(parse_head(b"HTTP/1.1 20 OK\r\n\r\n"), Err(HeadError::BadStatusLine));
        assert_eq!(parse_head(b"HTTP/1.1 2000\r\n\r\n"), Err(HeadError::BadStatusLine));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n"), Err(HeadError::BadHeader));
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HeadError::BadContentLength)
        );
    }

    #[test]
    fn head_buffer_at_every_split() {
        let resp = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc";
        let head_len = resp.len() - 3;
        for i in 0..=resp.len() {
            let mut hb = HeadBuffer::default();
            let (head, body_at) = match hb.push(&resp[..i]).unwrap() {
                Some((h, used)) => (h, used),
                None => {
                    let (h, used) = hb.push(&resp[i..]).unwrap().expect("complete");
                    (h, i + used)
                }
            };
            assert_eq!(head.status, 404, "split {i}");
            assert_eq!(body_at, head_len, "split {i}");
        }
    }

    #[test]
    fn head_buffer_is_bounded() {
        let mut hb = HeadBuffer::default();
        let junk = vec![b'x'; MAX_HEAD + 10];
        assert_eq!(hb.push(&junk), Err(HeadError::TooLarge));
    }

    #[test]
    fn body_decoders() {
        let mut b = BodyDecoder::new(Framing::Length(3));
        let mut got = Vec::new();
        assert_eq!(b.feed(b"abcdef", |s| got.extend_from_slice(s)).unwrap(), 3);
        assert!(b.is_done());
        assert_eq!(got, b"abc");
        let mut b = BodyDecoder::new(Framing::Close);
        assert_eq!(b.feed(b"xyz", |_| {}).unwrap(), 3);
        assert!(!b.is_done());
        let mut b = BodyDecoder::new(Framing::Chunked);
        assert!(b.feed(b"zz\r\n", |_| {}).is_err());
    }
}
