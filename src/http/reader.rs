//! The request reader: bytes in, complete requests out, whatever the chunking.
//!
//! [`RequestReader`] is a pure state machine with no socket in it, so the
//! fuzzer drives exactly the code a connection runs. It owns one buffer per
//! connection that is reading a request (none once a connection has become an
//! event stream). Heads are parsed by `httparse` without copying; the [`Head`]
//! it keeps refers to the buffer by offsets.
//!
//! Framing is decided from the head alone and strictly: `Content-Length` or
//! `Transfer-Encoding: chunked`, never both, never duplicated, never with a
//! sign, base prefix or list. After an error the reader stays failed: the
//! bytes that follow are never parsed.

use super::HttpError;
use super::chunked::{ChunkedDecoder, is_token};
use crate::event::parse_u64;

/// Longest request target (path and query) accepted; longer is 414.
pub const MAX_TARGET: usize = 8 * 1024;
/// Most header bytes after the request line; more is 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header fields; more is 431.
pub const MAX_HEADERS: usize = 64;
/// Method, version, spaces, line end and stray empty lines around a target.
const REQUEST_LINE_SLACK: usize = 64;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_body: u64, // bytes of body, after chunked decoding
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Options,
    Other,
}

/// The paths the hub serves; everything else is [`Route::Unknown`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Events,
    Publish,
    Healthz,
    Readyz,
    Metrics,
    Unknown,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
}

/// A byte range of the current message inside the reader's buffer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Span {
    start: u32,
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

/// What the request line and headers say, checked and reduced to what the hub uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub method: Method,
    pub http11: bool, // HTTP/1.1 (else HTTP/1.0)
    pub route: Route,
    pub body: BodyKind,
    pub keep_alive: bool,
    pub expect_continue: bool,
    query: Option<Span>,
    last_event_id: Option<Span>,
    authorization: Option<Span>,
    origin: Option<Span>,
    content_type: Option<Span>,
    len: usize, // bytes of the head, blank line included
}

/// The current request: its head, and its body once complete.
#[derive(Copy, Clone, Debug)]
pub struct Request<'a> {
    pub head: &'a Head,
    buf: &'a [u8],
    body: &'a [u8],
}

impl<'a> Request<'a> {
    /// The raw query string, without the `?`.
    pub fn query(&self) -> Option<&'a [u8]> {
        self.head.query.map(|s| s.get(self.buf))
    }
    pub fn last_event_id(&self) -> Option<&'a [u8]> {
        self.head.last_event_id.map(|s| s.get(self.buf))
    }
    pub fn authorization(&self) -> Option<&'a [u8]> {
        self.head.authorization.map(|s| s.get(self.buf))
    }
    pub fn origin(&self) -> Option<&'a [u8]> {
        self.head.origin.map(|s| s.get(self.buf))
    }
    pub fn content_type(&self) -> Option<&'a [u8]> {
        self.head.content_type.map(|s| s.get(self.buf))
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

#[derive(Debug)]
enum State {
    Head,
    Length { head: Head, end: usize },
    Chunked { head: Head, decoder: ChunkedDecoder, pos: usize },
    Complete { head: Head, end: usize, chunked: bool },
    Failed(HttpError),
}

#[derive(Debug)]
pub struct RequestReader {
    buf: Vec<u8>,          // unconsumed input; the current head sits at its start
    scan: usize,           // where to resume looking for the end of the head
    chunked_body: Vec<u8>, // decoded chunked body of the current request
    state: State,
    limits: Limits,
}

impl RequestReader {
    pub fn new(limits: Limits) -> Self {
        RequestReader { buf: Vec::new(), scan: 0, chunked_body: Vec::new(), state: State::Head, limits }
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
    pub fn advance(&mut self) -> Result<Progress, HttpError> {
        let result = self.step();
        if let Err(error) = result {
            self.state = State::Failed(error);
            self.buf = Vec::new();
            self.chunked_body = Vec::new();
        }
        result
    }

    fn step(&mut self) -> Result<Progress, HttpError> {
        loop {
            match &mut self.state {
                State::Failed(error) => return Err(*error),
                State::Complete { .. } => return Ok(Progress::Complete),
                State::Head => {
                    let Some(head) = parse_head(&self.buf, &mut self.scan, self.limits)? else {
                        return Ok(Progress::Pending);
                    };
                    let len = head.len;
                    self.state = match head.body {
                        BodyKind::None => State::Complete { head, end: len, chunked: false },
                        BodyKind::Length(n) => State::Length { head, end: len + n as usize },
                        BodyKind::Chunked => {
                            State::Chunked { head, decoder: ChunkedDecoder::new(self.limits.max_body), pos: len }
                        }
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
                    let decoded = decoder.decode(&self.buf[*pos..], &mut self.chunked_body)?;
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
            self.buf.drain(..end);
            self.chunked_body.clear();
            self.scan = 0;
            self.state = State::Head;
        }
    }
}

/// What reading a stream of bytes produced, for tests and the fuzzer.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Request {
        head: Head,
        body: Vec<u8>,
    },
    Error(HttpError),
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
                        out.push(Outcome::Request { head: request.head.clone(), body: request.body().to_vec() });
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

fn bad(why: &'static str) -> HttpError {
    HttpError::BadRequest(why)
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

fn parse_head(buf: &[u8], scan: &mut usize, limits: Limits) -> Result<Option<Head>, HttpError> {
    // Bound the work before parsing: the request line first (414), then the
    // header block (431), so a client cannot make us buffer more than that.
    let lead = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    if lead > REQUEST_LINE_SLACK {
        return Err(bad("too many empty lines before the request"));
    }
    let line = &buf[lead..];
    let Some(line_len) = line.iter().position(|&b| b == b'\n') else {
        if line.len() > MAX_TARGET + REQUEST_LINE_SLACK {
            return Err(HttpError::UriTooLong);
        }
        return Ok(None);
    };
    // The same bounds whether or not the line end has arrived yet, so the
    // answer does not depend on how the bytes were split.
    if line_len > MAX_TARGET + REQUEST_LINE_SLACK || target_len(&line[..line_len]) > MAX_TARGET {
        return Err(HttpError::UriTooLong);
    }
    let headers_start = lead + line_len + 1;
    let head_len = match find_head_end(buf, (*scan).max(lead)) {
        Ok(len) => len,
        Err(resume) => {
            *scan = resume;
            if buf.len() - headers_start > MAX_HEADER_BYTES + 2 {
                return Err(HttpError::HeadersTooLarge("header section too large"));
            }
            return Ok(None);
        }
    };
    if head_len.saturating_sub(headers_start) > MAX_HEADER_BYTES + 2 {
        return Err(HttpError::HeadersTooLarge("header section too large"));
    }

    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(n)) if n == head_len => {}
        Ok(_) => return Err(bad("malformed request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::HeadersTooLarge("more than 64 header fields"));
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
    let target = request.path.unwrap_or("");
    let (route, query) = route(target)?;
    let query = query.map(|q| Span::of(buf, q.as_bytes()));

    let mut host = 0;
    let mut content_length: Option<&[u8]> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    let mut keep_alive = http11;
    let mut expect_continue = false;
    let (mut last_event_id, mut authorization, mut origin, mut content_type) = (None, None, None, None);
    for header in request.headers.iter() {
        let name = header.name;
        let value = trim_ows(header.value);
        let once = |slot: &mut Option<Span>, what: &'static str| {
            if slot.replace(Span::of(buf, value)).is_some() {
                return Err(bad(what));
            }
            Ok(())
        };
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
        } else if name.eq_ignore_ascii_case("last-event-id") {
            once(&mut last_event_id, "duplicate Last-Event-ID")?;
        } else if name.eq_ignore_ascii_case("authorization") {
            once(&mut authorization, "duplicate Authorization")?;
        } else if name.eq_ignore_ascii_case("origin") {
            once(&mut origin, "duplicate Origin")?;
        } else if name.eq_ignore_ascii_case("content-type") {
            once(&mut content_type, "duplicate Content-Type")?;
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
            Some(_) => return Err(HttpError::PayloadTooLarge),
            None if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                return Err(HttpError::PayloadTooLarge);
            }
            None => return Err(bad("invalid Content-Length")),
        },
        (None, Some(_)) if !http11 => return Err(bad("Transfer-Encoding in an HTTP/1.0 request")),
        (None, Some(value)) => transfer_coding(value)?,
    };
    Ok(Some(Head {
        method,
        http11,
        route,
        body,
        keep_alive,
        expect_continue,
        query,
        last_event_id,
        authorization,
        origin,
        content_type,
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
fn transfer_coding(value: &[u8]) -> Result<BodyKind, HttpError> {
    let mut chunked = 0;
    for coding in value.split(|&b| b == b',').map(trim_ows) {
        if coding.is_empty() || !coding.iter().all(|&b| is_token(b)) {
            return Err(bad("malformed Transfer-Encoding"));
        }
        if !coding.eq_ignore_ascii_case(b"chunked") {
            return Err(HttpError::NotImplemented("only the chunked transfer coding is supported"));
        }
        chunked += 1;
    }
    if chunked != 1 {
        return Err(bad("chunked applied more than once"));
    }
    Ok(BodyKind::Chunked)
}

/// Splits a target into the route and the query (origin- or absolute-form).
fn route(target: &str) -> Result<(Route, Option<&str>), HttpError> {
    let path_and_query = if target.starts_with('/') {
        target
    } else if let Some(rest) =
        strip_prefix_ignore_case(target, "http://").or_else(|| strip_prefix_ignore_case(target, "https://"))
    {
        let at = rest.find(['/', '?']).unwrap_or(rest.len());
        &rest[at..]
    } else if target == "*" {
        return Ok((Route::Unknown, None));
    } else {
        return Err(bad("malformed request target"));
    };
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    let route = match path {
        "/events" => Route::Events,
        "/publish" => Route::Publish,
        "/healthz" => Route::Healthz,
        "/readyz" => Route::Readyz,
        "/metrics" => Route::Metrics,
        _ => Route::Unknown,
    };
    Ok((route, query))
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
    fn run(input: &[u8], step: usize) -> Vec<Result<(Route, Vec<u8>), HttpError>> {
        read_stream(LIMITS, input.chunks(step.max(1)))
            .into_iter()
            .filter_map(|outcome| match outcome {
                Outcome::Request { head, body } => Some(Ok((head.route, body))),
                Outcome::Error(error) => Some(Err(error)),
                Outcome::Pending(_) => None,
            })
            .collect()
    }

    fn one(input: &str) -> Result<(Route, Vec<u8>), HttpError> {
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
        assert_eq!(one("GET /events?topic=a HTTP/1.1\r\nHost: x\r\n\r\n"), Ok((Route::Events, vec![])));
        assert_eq!(one("GET /healthz HTTP/1.0\r\n\r\n"), Ok((Route::Healthz, vec![])));
        assert_eq!(one("GET http://h:1/metrics HTTP/1.1\r\nHost: h\r\n\r\n"), Ok((Route::Metrics, vec![])));
        assert_eq!(one("GET /nope HTTP/1.1\nHost: x\n\n"), Ok((Route::Unknown, vec![])));
        assert_eq!(
            one("POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"),
            Ok((Route::Publish, b"hello".to_vec()))
        );
        assert_eq!(
            one("POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            Ok((Route::Publish, b"hello".to_vec()))
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
        assert_eq!(request.query(), Some(&b"topic=a&topic=b"[..]));
        assert_eq!(request.last_event_id(), Some(&b"1-2"[..]));
        assert_eq!(request.origin(), Some(&b"https://app"[..]));
        assert_eq!(request.authorization(), Some(&b"Bearer t"[..]));
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
        assert_eq!(run(long_line.as_bytes(), usize::MAX), vec![Err(HttpError::UriTooLong)]);
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
            Ok((Route::Publish, b"a".to_vec())),
            Ok((Route::Publish, b"b".to_vec())),
            Ok((Route::Healthz, vec![])),
            Err(HttpError::BadRequest("duplicate Content-Length")),
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
