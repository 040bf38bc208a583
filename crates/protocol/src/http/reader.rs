//! The request reader: bytes in, complete requests out, whatever the chunking.
//!
//! [`RequestReader`] is a pure state machine with no socket in it, so the
//! fuzzer drives exactly the code a connection runs. It owns one buffer per
//! connection that is reading a request (none once a connection has become an
//! event stream). Heads are parsed by `httparse` without copying; the [`Head`]
//! it keeps refers to the buffer by offsets.
//!
//! It decides only what HTTP itself decides: the request line, the header
//! syntax, `Host`, keep-alive, `Expect` and the body's framing, which is
//! decided from the head alone and strictly: `Content-Length` or
//! `Transfer-Encoding: chunked`, never both, never duplicated, never with a
//! sign, base prefix or list. Everything else is handed up: the path, the
//! query and every header field, for the application to route and authorize
//! on (as httparse and sozu do). After an error the reader stays failed: the
//! bytes that follow are never parsed.

use std::fmt;

use super::chunked::{ChunkError, ChunkedDecoder, Line, is_token};
use crate::id::parse_u64;

/// Longest request target (path and query) accepted; longer is 414.
pub const MAX_TARGET: usize = 8 * 1024;
/// Most header bytes after the request line; more is 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header fields; more is 431.
pub const MAX_HEADERS: usize = 64;
/// Method, version, spaces, line end and stray empty lines around a target.
const REQUEST_LINE_SLACK: usize = 64;

/// What the reader refuses a request for. Each maps to one status code.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// 400: a malformed request line, header or framing.
    BadRequest(&'static str),
    /// 413: a body over the limit, known from `Content-Length` or chunk sizes.
    PayloadTooLarge,
    /// 414: a request target over [`MAX_TARGET`].
    UriTooLong,
    /// 431: headers over [`MAX_HEADER_BYTES`] or more than [`MAX_HEADERS`].
    HeadersTooLarge(&'static str),
    /// 501: a transfer coding other than `chunked`.
    NotImplemented(&'static str),
}

impl RequestError {
    /// The status code to answer with.
    pub fn status(self) -> u16 {
        match self {
            RequestError::BadRequest(_) => 400,
            RequestError::PayloadTooLarge => 413,
            RequestError::UriTooLong => 414,
            RequestError::HeadersTooLarge(_) => 431,
            RequestError::NotImplemented(_) => 501,
        }
    }

    /// One line for the response body and the log.
    pub fn detail(self) -> &'static str {
        match self {
            RequestError::BadRequest(why) | RequestError::HeadersTooLarge(why) | RequestError::NotImplemented(why) => {
                why
            }
            RequestError::PayloadTooLarge => "body too large",
            RequestError::UriTooLong => "request target too long",
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.detail())
    }
}

impl std::error::Error for RequestError {}

impl From<ChunkError> for RequestError {
    fn from(error: ChunkError) -> Self {
        match error {
            ChunkError::TooLarge => RequestError::PayloadTooLarge,
            other => RequestError::BadRequest(other.detail()),
        }
    }
}

/// Limits the reader enforces beyond the fixed ones.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest body in bytes, after chunked decoding.
    pub max_body: u64,
}

/// The request methods the hub tells apart.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `OPTIONS`.
    Options,
    /// Any other method.
    Other,
}

/// How the request body is delimited.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A byte range of the current message inside the reader's buffer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Span {
    /// Offset of the first byte.
    start: u32,
    /// Length in bytes.
    len: u32,
}

impl Span {
    fn of(buf: &[u8], part: &[u8]) -> Span {
        // Both come from the same buffer: `part` is a sub-slice httparse handed back.
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        Span { start: start as u32, len: part.len() as u32 }
    }

    fn get(self, buf: &[u8]) -> &[u8] {
        &buf[self.start as usize..(self.start + self.len) as usize]
    }
}

/// What the request line and headers say, checked as HTTP requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// The request method.
    pub method: Method,
    /// HTTP/1.1 (else HTTP/1.0).
    pub http11: bool,
    /// How the body is delimited.
    pub body: BodyKind,
    /// The connection may carry another request after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// The path of the target (origin-form, or taken from absolute-form).
    path: Span,
    /// The query after `?`, if any.
    query: Option<Span>,
    /// Every header field as (name, value without surrounding whitespace).
    headers: Vec<(Span, Span)>,
    /// Bytes of the head, blank line included.
    len: usize,
}

/// Two values for a header field that may appear once.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Duplicate;

/// The current request: its head, and its body once complete.
#[derive(Copy, Clone, Debug)]
pub struct Request<'a> {
    /// The checked head.
    pub head: &'a Head,
    /// The reader's buffer the head's spans refer to.
    buf: &'a [u8],
    /// The decoded body; empty until complete.
    body: &'a [u8],
}

impl<'a> Request<'a> {
    /// The path, e.g. `/events` (`*` for an asterisk-form target).
    pub fn path(&self) -> &'a [u8] {
        self.head.path.get(self.buf)
    }

    /// The raw query string, without the `?`.
    pub fn query(&self) -> Option<&'a [u8]> {
        self.head.query.map(|s| s.get(self.buf))
    }

    /// Every header field, in order, as (name, value).
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let buf = self.buf;
        self.head.headers.iter().map(move |(name, value)| (name.get(buf), value.get(buf)))
    }

    /// The first value of a header field (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v)
    }

    /// The value of a field that may appear at most once.
    pub fn unique_header(&self, name: &str) -> Result<Option<&'a [u8]>, Duplicate> {
        let mut values = self.headers().filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v);
        let first = values.next();
        if values.next().is_some() { Err(Duplicate) } else { Ok(first) }
    }

    /// The decoded body; empty until [`Progress::Complete`].
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
}

/// What [`RequestReader::advance`] found.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed.
    Pending,
    /// A head was parsed: look at it (route, authorize, `100 Continue`) before
    /// calling `advance` again to read the body.
    Head,
    /// The request is complete: handle it, then call [`RequestReader::finish`].
    Complete,
}

/// Where the reader stands in the current request.
#[derive(Debug)]
enum State {
    /// Waiting for a complete head.
    Head,
    /// Reading a `Content-Length` body that ends at `end`.
    Length { head: Head, end: usize },
    /// Decoding a chunked body from `pos`.
    Chunked { head: Head, decoder: ChunkedDecoder, pos: usize },
    /// Complete: the request ends at `end` in the buffer.
    Complete { head: Head, end: usize, chunked: bool },
    /// Failed; stays failed.
    Failed(RequestError),
}

/// Reads the requests of one connection; see the module documentation.
#[derive(Debug)]
pub struct RequestReader {
    /// Unconsumed input; the current head sits at its start.
    buf: Vec<u8>,
    /// Where to resume looking for the end of the head.
    scan: usize,
    /// Decoded chunked body of the current request.
    chunked_body: Vec<u8>,
    /// Header spans of a finished request, kept for their capacity.
    spare_headers: Vec<(Span, Span)>,
    /// Where the current request stands.
    state: State,
    /// The limits checked.
    limits: Limits,
}

impl RequestReader {
    /// A reader at the start of a connection.
    pub fn new(limits: Limits) -> Self {
        RequestReader {
            buf: Vec::new(),
            scan: 0,
            chunked_body: Vec::new(),
            spare_headers: Vec::new(),
            state: State::Head,
            limits,
        }
    }

    /// Adds input. Cheap: parsing happens in [`RequestReader::advance`].
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// True between requests with nothing buffered: the connection is idle.
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty() && matches!(self.state, State::Head)
    }

    /// Bytes held, for the callers' own bounds.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.chunked_body.len()
    }

    /// Parses as far as the input allows. After an error, returns it forever.
    pub fn advance(&mut self) -> Result<Progress, RequestError> {
        let result = self.step();
        if let Err(error) = result {
            self.state = State::Failed(error);
            self.buf = Vec::new();
            self.chunked_body = Vec::new();
        }
        result
    }

    fn step(&mut self) -> Result<Progress, RequestError> {
        loop {
            match &mut self.state {
                State::Failed(error) => return Err(*error),
                State::Complete { .. } => return Ok(Progress::Complete),
                State::Head => {
                    let headers = std::mem::take(&mut self.spare_headers);
                    let Some(head) = parse_head(&self.buf, &mut self.scan, self.limits, headers)? else {
                        return Ok(Progress::Pending);
                    };
                    let len = head.len;
                    self.state = match head.body {
                        BodyKind::None => State::Complete { head, end: len, chunked: false },
                        BodyKind::Length(n) => State::Length { head, end: len + n as usize },
                        BodyKind::Chunked => State::Chunked {
                            head,
                            decoder: ChunkedDecoder::new(self.limits.max_body, Line::Strict),
                            pos: len,
                        },
                    };
                    return Ok(Progress::Head);
                }
                State::Length { end, .. } => {
                    if self.buf.len() < *end {
                        return Ok(Progress::Pending);
                    }
                    let State::Length { head, end } = std::mem::replace(&mut self.state, State::Head) else {
                        unreachable!("matched above")
                    };
                    self.state = State::Complete { head, end, chunked: false };
                }
                State::Chunked { head, decoder, pos } => {
                    let body = &mut self.chunked_body;
                    let decoded = decoder.decode(&self.buf[*pos..], &mut |data: &[u8]| body.extend_from_slice(data))?;
                    *pos += decoded.consumed;
                    if !decoded.done {
                        // Keep the head, drop the chunk bytes already decoded.
                        self.buf.drain(head.len..*pos);
                        *pos = head.len;
                        return Ok(Progress::Pending);
                    }
                    let State::Chunked { head, pos, .. } = std::mem::replace(&mut self.state, State::Head) else {
                        unreachable!("matched above")
                    };
                    self.state = State::Complete { head, end: pos, chunked: true };
                }
            }
        }
    }

    /// The request being read: available after [`Progress::Head`].
    pub fn request(&self) -> Option<Request<'_>> {
        let (head, body) = match &self.state {
            State::Length { head, .. } | State::Chunked { head, .. } => (head, &[][..]),
            State::Complete { head, end, chunked } => {
                let body = if *chunked { &self.chunked_body[..] } else { &self.buf[head.len..*end] };
                (head, body)
            }
            State::Head | State::Failed(_) => return None,
        };
        Some(Request { head, buf: &self.buf, body })
    }

    /// Drops the completed request; the bytes after it are the next one.
    pub fn finish(&mut self) {
        if let State::Complete { end, .. } = self.state {
            if let State::Complete { mut head, .. } = std::mem::replace(&mut self.state, State::Head) {
                head.headers.clear();
                self.spare_headers = head.headers;
            }
            self.buf.drain(..end);
            self.chunked_body.clear();
            self.scan = 0;
        }
    }
}

/// What reading a stream of bytes produced, for tests, benches and the fuzzer.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A complete request.
    Request {
        /// Its head.
        head: Head,
        /// Its path, copied out of the reader's buffer.
        path: Vec<u8>,
        /// Its decoded body.
        body: Vec<u8>,
    },
    /// The reader failed; nothing after this is read.
    Error(RequestError),
    /// Bytes of an incomplete request left at the end.
    Pending(usize),
}

/// Feeds `chunks` through a reader exactly as a connection does (push, then
/// advance until more input is needed) and lists what came out.
pub fn read_stream<'a>(limits: Limits, chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Outcome> {
    let mut reader = RequestReader::new(limits);
    let mut out = Vec::new();
    for chunk in chunks {
        reader.push(chunk);
        loop {
            match reader.advance() {
                Ok(Progress::Pending) => break,
                Ok(Progress::Head) => {}
                Ok(Progress::Complete) => {
                    if let Some(request) = reader.request() {
                        out.push(Outcome::Request {
                            head: request.head.clone(),
                            path: request.path().to_vec(),
                            body: request.body().to_vec(),
                        });
                    }
                    reader.finish();
                }
                Err(error) => {
                    out.push(Outcome::Error(error));
                    return out;
                }
            }
        }
    }
    if !reader.is_idle() {
        out.push(Outcome::Pending(reader.buffered()));
    }
    out
}

fn bad(why: &'static str) -> RequestError {
    RequestError::BadRequest(why)
}

/// Optional whitespace around a field value.
fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(value.len());
    let end = value.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |i| i + 1);
    &value[start..end]
}

/// Finds the blank line ending a head (`\n\n` or `\n\r\n`), scanning from `from`.
/// Returns the head length, or where to resume once more bytes arrive.
fn find_head_end(buf: &[u8], from: usize) -> Result<usize, usize> {
    let mut i = from;
    while let Some(offset) = buf[i..].iter().position(|&b| b == b'\n') {
        let lf = i + offset;
        match (buf.get(lf + 1), buf.get(lf + 2)) {
            (Some(b'\n'), _) => return Ok(lf + 2),
            (Some(b'\r'), Some(b'\n')) => return Ok(lf + 3),
            (None, _) | (Some(b'\r'), None) => return Err(lf),
            _ => i = lf + 1,
        }
    }
    Err(buf.len())
}

fn parse_head(
    buf: &[u8],
    scan: &mut usize,
    limits: Limits,
    mut header_spans: Vec<(Span, Span)>,
) -> Result<Option<Head>, RequestError> {
    // Bound the work before parsing: the request line first (414), then the
    // header block (431), so a client cannot make us buffer more than that.
    let lead = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    if lead > REQUEST_LINE_SLACK {
        return Err(bad("too many empty lines before the request"));
    }
    let line = &buf[lead..];
    let Some(line_len) = line.iter().position(|&b| b == b'\n') else {
        if line.len() > MAX_TARGET + REQUEST_LINE_SLACK {
            return Err(RequestError::UriTooLong);
        }
        return Ok(None);
    };
    // The same bounds whether or not the line end has arrived yet, so the
    // answer does not depend on how the bytes were split.
    if line_len > MAX_TARGET + REQUEST_LINE_SLACK || target_len(&line[..line_len]) > MAX_TARGET {
        return Err(RequestError::UriTooLong);
    }
    let headers_start = lead + line_len + 1;
    let head_len = match find_head_end(buf, (*scan).max(lead)) {
        Ok(len) => len,
        Err(resume) => {
            *scan = resume;
            if buf.len() - headers_start > MAX_HEADER_BYTES + 2 {
                return Err(RequestError::HeadersTooLarge("header section too large"));
            }
            return Ok(None);
        }
    };
    if head_len.saturating_sub(headers_start) > MAX_HEADER_BYTES + 2 {
        return Err(RequestError::HeadersTooLarge("header section too large"));
    }

    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(n)) if n == head_len => {}
        Ok(_) => return Err(bad("malformed request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(RequestError::HeadersTooLarge("more than 64 header fields"));
        }
        Err(httparse::Error::Version) => return Err(bad("unsupported HTTP version")),
        Err(httparse::Error::Token | httparse::Error::HeaderName) => {
            return Err(bad("malformed request line or header name"));
        }
        Err(_) => return Err(bad("malformed request head")),
    }
    let http11 = request.version == Some(1);
    let method = match request.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "OPTIONS" => Method::Options,
        _ => Method::Other,
    };
    let (path, query) = split_target(request.path.unwrap_or(""))?;
    let path = Span::of(buf, path.as_bytes());
    let query = query.map(|q| Span::of(buf, q.as_bytes()));

    let mut host = 0;
    let mut content_length: Option<&[u8]> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    let mut keep_alive = http11;
    let mut expect_continue = false;
    header_spans.clear();
    for header in request.headers.iter() {
        let name = header.name;
        let value = trim_ows(header.value);
        header_spans.push((Span::of(buf, name.as_bytes()), Span::of(buf, value)));
        if name.eq_ignore_ascii_case("host") {
            host += 1;
        } else if name.eq_ignore_ascii_case("content-length") {
            if content_length.replace(value).is_some() {
                return Err(bad("duplicate Content-Length"));
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if transfer_encoding.replace(value).is_some() {
                return Err(bad("duplicate Transfer-Encoding"));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(|&b| b == b',').map(trim_ows) {
                if option.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    if http11 && host == 0 {
        return Err(bad("missing Host"));
    }
    if host > 1 {
        return Err(bad("duplicate Host"));
    }
    let body = match (content_length, transfer_encoding) {
        (Some(_), Some(_)) => return Err(bad("both Content-Length and Transfer-Encoding")),
        (None, None) => BodyKind::None,
        (Some(value), None) => match parse_u64(value) {
            Some(0) => BodyKind::None,
            Some(n) if n <= limits.max_body => BodyKind::Length(n),
            Some(_) => return Err(RequestError::PayloadTooLarge),
            None if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                return Err(RequestError::PayloadTooLarge);
            }
            None => return Err(bad("invalid Content-Length")),
        },
        (None, Some(_)) if !http11 => return Err(bad("Transfer-Encoding in an HTTP/1.0 request")),
        (None, Some(value)) => transfer_coding(value)?,
    };
    Ok(Some(Head {
        method,
        http11,
        body,
        keep_alive,
        expect_continue,
        path,
        query,
        headers: header_spans,
        len: head_len,
    }))
}

/// Length of the target in a request line (`METHOD SP target SP version`).
fn target_len(line: &[u8]) -> usize {
    let mut parts = line.split(|&b| b == b' ');
    parts.next();
    parts.next().map_or(0, <[u8]>::len)
}

/// Only `chunked`, alone, is supported; other codings are 501.
fn transfer_coding(value: &[u8]) -> Result<BodyKind, RequestError> {
    let mut chunked = 0;
    for coding in value.split(|&b| b == b',').map(trim_ows) {
        if coding.is_empty() || !coding.iter().all(|&b| is_token(b)) {
            return Err(bad("malformed Transfer-Encoding"));
        }
        if !coding.eq_ignore_ascii_case(b"chunked") {
            return Err(RequestError::NotImplemented("only the chunked transfer coding is supported"));
        }
        chunked += 1;
    }
    if chunked != 1 {
        return Err(bad("chunked applied more than once"));
    }
    Ok(BodyKind::Chunked)
}

/// Splits a target into its path and query (origin-, absolute- or asterisk-form).
fn split_target(target: &str) -> Result<(&str, Option<&str>), RequestError> {
    let path_and_query = if target.starts_with('/') || target == "*" {
        target
    } else if let Some(rest) =
        strip_prefix_ignore_case(target, "http://").or_else(|| strip_prefix_ignore_case(target, "https://"))
    {
        let at = rest.find(['/', '?']).unwrap_or(rest.len());
        &rest[at..]
    } else {
        return Err(bad("malformed request target"));
    };
    Ok(match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    })
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_body: 1024 };

    /// Feeds `input` in pieces of `step` bytes; returns (route, body) or the error of each request.
    fn run(input: &[u8], step: usize) -> Vec<Result<(String, Vec<u8>), RequestError>> {
        read_stream(LIMITS, input.chunks(step.max(1)))
            .into_iter()
            .filter_map(|outcome| match outcome {
                Outcome::Request { path, body, .. } => Some(Ok((String::from_utf8(path).unwrap(), body))),
                Outcome::Error(error) => Some(Err(error)),
                Outcome::Pending(_) => None,
            })
            .collect()
    }

    fn one(input: &str) -> Result<(String, Vec<u8>), RequestError> {
        let got = run(input.as_bytes(), usize::MAX);
        assert_eq!(got.len(), 1, "{input:?} gave {got:?}");
        got[0].clone()
    }

    fn status(input: &str) -> u16 {
        match one(input) {
            Ok(_) => 200,
            Err(e) => e.status(),
        }
    }

    #[test]
    fn reads_simple_requests() {
        assert_eq!(one("GET /events?topic=a HTTP/1.1\r\nHost: x\r\n\r\n"), Ok(("/events".to_string(), vec![])));
        assert_eq!(one("GET /healthz HTTP/1.0\r\n\r\n"), Ok(("/healthz".to_string(), vec![])));
        assert_eq!(one("GET http://h:1/metrics HTTP/1.1\r\nHost: h\r\n\r\n"), Ok(("/metrics".to_string(), vec![])));
        assert_eq!(one("GET /nope HTTP/1.1\nHost: x\n\n"), Ok(("/nope".to_string(), vec![])));
        assert_eq!(
            one("POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"),
            Ok(("/publish".to_string(), b"hello".to_vec()))
        );
        assert_eq!(
            one("POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            Ok(("/publish".to_string(), b"hello".to_vec()))
        );
    }

    #[test]
    fn extracts_the_fields_the_hub_uses() {
        let mut reader = RequestReader::new(LIMITS);
        reader.push(
            b"GET /events?topic=a&topic=b HTTP/1.1\r\nHOST: x\r\nlast-event-id:  1-2 \r\n\
              Origin: https://app\r\nAuthorization: Bearer t\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(reader.advance(), Ok(Progress::Head));
        let request = reader.request().unwrap();
        assert_eq!(request.path(), b"/events");
        assert_eq!(request.query(), Some(&b"topic=a&topic=b"[..]));
        assert_eq!(request.header("Last-Event-ID"), Some(&b"1-2"[..]));
        assert_eq!(request.header("origin"), Some(&b"https://app"[..]));
        assert_eq!(request.unique_header("AUTHORIZATION"), Ok(Some(&b"Bearer t"[..])));
        assert_eq!(request.unique_header("cookie"), Ok(None));
        assert_eq!(request.headers().count(), 5);
        assert!(!request.head.keep_alive);
        assert_eq!(reader.advance(), Ok(Progress::Complete));
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        let cases = [
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", true),
            ("GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n", false),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        ];
        for (input, want) in cases {
            let mut reader = RequestReader::new(LIMITS);
            reader.push(input.as_bytes());
            assert_eq!(reader.advance(), Ok(Progress::Head));
            assert_eq!(reader.request().unwrap().head.keep_alive, want, "{input:?}");
        }
    }

    #[test]
    fn refuses_framing_that_could_smuggle() {
        let post = "POST /publish HTTP/1.1\r\nHost: x\r\n";
        let cases = [
            ("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400),
            ("Content-Length: 5\r\nContent-Length: 5\r\n", 400),
            ("Content-Length: 5, 5\r\n", 400),
            ("Content-Length: +5\r\n", 400),
            ("Content-Length: -1\r\n", 400),
            ("Content-Length: 0x5\r\n", 400),
            ("Content-Length: \r\n", 400),
            ("Content-Length: 5 5\r\n", 400),
            ("Content-Length: 1e3\r\n", 400),
            ("Content-Length: 99999999999999999999999\r\n", 413),
            ("Content-Length: 1025\r\n", 413),
            ("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 400),
            ("Transfer-Encoding: chunked, chunked\r\n", 400),
            ("Transfer-Encoding: gzip, chunked\r\n", 501),
            ("Transfer-Encoding: identity\r\n", 501),
            ("Transfer-Encoding: \r\n", 400),
            ("Transfer-Encoding: chunked,\r\n", 400),
            ("Transfer-Encoding: \"chunked\"\r\n", 400),
            ("Transfer-Encoding : chunked\r\n", 400),
            ("Transfer-Encoding: chunked\r\n foo\r\n", 400),
            ("X: a\0b\r\n", 400),
            ("X: a\rb\r\n", 400),
            ("Host: y\r\n", 400),
        ];
        for (headers, want) in cases {
            let input = format!("{post}{headers}\r\nhello");
            assert_eq!(status(&input), want, "{headers:?}");
        }
        assert_eq!(status("POST /publish HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn refuses_malformed_heads_with_precise_statuses() {
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(MAX_TARGET));
        let long_line = format!("GET /{}", "a".repeat(MAX_TARGET + 100));
        let big_header = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEADER_BYTES));
        let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", "X: y\r\n".repeat(MAX_HEADERS));
        let exactly_max =
            format!("GET / HTTP/1.1\r\n{}\r\n", "Host: x\r\n".to_string() + &"X: y\r\n".repeat(MAX_HEADERS - 1));
        assert_eq!(status(&long_target), 414);
        assert_eq!(run(long_line.as_bytes(), usize::MAX), vec![Err(RequestError::UriTooLong)]);
        assert_eq!(status(&big_header), 431);
        assert_eq!(status(&many), 431);
        assert_eq!(status(&exactly_max), 200);
        for garbage in [
            "\x16\x03\x01\x02\x00\x01\x00\x01\x03\x03\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
            "GET /\0 HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET / HTTP/1.1\rHost: x\r\n\r\n",
            "GET nothing HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(status(garbage), 400, "{garbage:?}");
        }
    }

    #[test]
    fn pipelined_requests_come_out_in_order_and_after_an_error_nothing_does() {
        let input = "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na\
                     POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\n\r\n\
                     GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
                     POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nc\
                     GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        let want = vec![
            Ok(("/publish".to_string(), b"a".to_vec())),
            Ok(("/publish".to_string(), b"b".to_vec())),
            Ok(("/healthz".to_string(), vec![])),
            Err(RequestError::BadRequest("duplicate Content-Length")),
        ];
        for step in 1..=input.len() {
            assert_eq!(run(input.as_bytes(), step), want, "step {step}");
        }
    }

    #[test]
    fn a_failed_reader_stays_failed() {
        let mut reader = RequestReader::new(LIMITS);
        reader.push(b"GET / HTTP/1.1\r\n\r\n");
        assert!(reader.advance().is_err());
        reader.push(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(reader.advance().is_err());
        assert!(reader.request().is_none());
    }
}
