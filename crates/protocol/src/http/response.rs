//! Responses, both sides: the pieces of a response head the server writes,
//! and the client's reader of response heads and bodies (the load generator
//! and the tests read every server's answers with it).

use std::fmt;

use super::chunked::{ChunkError, ChunkedDecoder, Line};
use crate::id::parse_u64;

/// Largest response head a client accepts before failing the connection.
pub const MAX_HEAD: usize = 16 * 1024;

/// `100 Continue`, for a client that asked with `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The reason phrase of each status the hub answers with.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Appends `HTTP/1.1 <status> <reason>\r\n`.
pub fn write_status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `name: value\r\n`.
pub fn write_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends a number in decimal.
pub fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Why a client refuses a response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Over [`MAX_HEAD`].
    TooLarge,
    /// Not `HTTP/1.x NNN`.
    BadStatusLine,
    /// A header line without a valid name and colon.
    BadHeader,
    /// A `Content-Length` that is not digits, or two that differ.
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

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// Until the server closes (HTTP/1.0 style).
    Close,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// What a response head says about the response.
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// How its body is delimited.
    pub framing: BodyFraming,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
    /// `Content-Type: text/event-stream`.
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
            let v = parse_u64(value).ok_or(HeadError::BadContentLength)?;
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
        BodyFraming::Length(0)
    } else if transfer_encoding {
        if chunked { BodyFraming::Chunked } else { BodyFraming::Close }
    } else if let Some(n) = content_length {
        BodyFraming::Length(n)
    } else {
        BodyFraming::Close
    };
    let keep_alive = framing != BodyFraming::Close && !conn_close && (minor >= 1 || conn_keep_alive);
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

/// Why a client refuses a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Its chunked framing is malformed.
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
    /// Everything until EOF.
    Close,
    /// This many bytes still to come.
    Length(u64),
    /// Chunked, lenient as clients are.
    Chunked(ChunkedDecoder),
}

impl BodyDecoder {
    /// The decoder for a body framed as `framing`.
    pub fn new(framing: BodyFraming) -> BodyDecoder {
        match framing {
            BodyFraming::Close => BodyDecoder::Close,
            BodyFraming::Length(n) => BodyDecoder::Length(n),
            BodyFraming::Chunked => BodyDecoder::Chunked(ChunkedDecoder::new(u64::MAX, Line::Lenient)),
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
            BodyDecoder::Chunked(d) => d.decode(input, &mut out).map(|d| d.consumed).map_err(BodyError::Chunked),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\r\n").unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, BodyFraming::Close);
        assert!(h.event_stream && !h.keep_alive);
        let h =
            parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!(h.framing, BodyFraming::Chunked);
        assert!(h.keep_alive);
        let h = parse_head(b"HTTP/1.1 201 Created\nContent-Length: 0\nConnection: close\n\n").unwrap();
        assert_eq!((h.status, h.framing, h.keep_alive), (201, BodyFraming::Length(0), false));
        let h = parse_head(b"HTTP/1.0 204\r\n\r\n").unwrap();
        assert_eq!((h.status, h.framing, h.keep_alive), (204, BodyFraming::Length(0), false));
        let h = parse_head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n").unwrap();
        assert!(h.keep_alive);
        assert_eq!(parse_head(b"HTTP/2 200\r\n\r\n"), Err(HeadError::BadStatusLine));
        for length in ["+5", "-1", "0x5", "", "5, 5", "1e3"] {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n");
            assert_eq!(parse_head(head.as_bytes()), Err(HeadError::BadContentLength), "{length:?}");
        }
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
        let mut b = BodyDecoder::new(BodyFraming::Length(3));
        let mut got = Vec::new();
        assert_eq!(b.feed(b"abcdef", |s| got.extend_from_slice(s)).unwrap(), 3);
        assert!(b.is_done());
        assert_eq!(got, b"abc");
        let mut b = BodyDecoder::new(BodyFraming::Close);
        assert_eq!(b.feed(b"xyz", |_| {}).unwrap(), 3);
        assert!(!b.is_done());
        let mut b = BodyDecoder::new(BodyFraming::Chunked);
        assert!(b.feed(b"zz\r\n", |_| {}).is_err());
    }
}
