//! HTTP/1.1 as much as a fan-out hub needs: a strict request reader, the
//! error statuses it answers with, and the few response heads it writes.
//!
//! Every protocol error is an [`HttpError`]: a small `Copy` value mapped to its
//! status line, headers and body in one place ([`HttpError::status`]).

pub mod chunked;
pub mod reader;

pub use reader::{Head, Limits, Method, Progress, RequestReader, Route};

use std::fmt;

/// Why a request is refused. Each maps to one status code.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// 400: malformed request line, header, query, body or framing.
    BadRequest(&'static str),
    /// 401: a publish token is configured and the request lacks it.
    Unauthorized,
    /// 403: no token is configured and the publisher is not on loopback.
    Forbidden,
    /// 404: unknown path.
    NotFound,
    /// 405: known path, wrong method; carries the `Allow` value.
    MethodNotAllowed(&'static str),
    /// 408: the request did not arrive within the header timeout.
    Timeout,
    /// 413: body over `--max-body`.
    PayloadTooLarge,
    /// 414: request target over 8 KiB.
    UriTooLong,
    /// 415: a publish body that is neither form-encoded nor JSON.
    UnsupportedMediaType,
    /// 431: headers over 16 KiB or more than 64 of them.
    HeadersTooLarge(&'static str),
    /// 501: a transfer coding other than `chunked`.
    NotImplemented(&'static str),
    /// 503: over `--max-connections`, or the event queues are full.
    Unavailable(&'static str),
}

impl HttpError {
    pub fn status(self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::Unauthorized => 401,
            HttpError::Forbidden => 403,
            HttpError::NotFound => 404,
            HttpError::MethodNotAllowed(_) => 405,
            HttpError::Timeout => 408,
            HttpError::PayloadTooLarge => 413,
            HttpError::UriTooLong => 414,
            HttpError::UnsupportedMediaType => 415,
            HttpError::HeadersTooLarge(_) => 431,
            HttpError::NotImplemented(_) => 501,
            HttpError::Unavailable(_) => 503,
        }
    }

    /// One line for the response body and the log.
    pub fn detail(self) -> &'static str {
        match self {
            HttpError::BadRequest(why)
            | HttpError::HeadersTooLarge(why)
            | HttpError::NotImplemented(why)
            | HttpError::Unavailable(why) => why,
            HttpError::Unauthorized => "publishing needs Authorization: Bearer <token>",
            HttpError::Forbidden => "publishing without a token is allowed from loopback only",
            HttpError::NotFound => "no such path",
            HttpError::MethodNotAllowed(_) => "method not allowed",
            HttpError::Timeout => "request not received in time",
            HttpError::PayloadTooLarge => "body too large",
            HttpError::UriTooLong => "request target too long",
            HttpError::UnsupportedMediaType => {
                "publish bodies are application/x-www-form-urlencoded or application/json"
            }
        }
    }

    /// The complete response, always with `Connection: close`: after an error
    /// the bytes that follow on the connection are never interpreted.
    pub fn response(self, cors: Option<&str>) -> Vec<u8> {
        let mut extra = String::new();
        match self {
            HttpError::MethodNotAllowed(allow) => extra = format!("Allow: {allow}\r\n"),
            HttpError::Unauthorized => extra.push_str("WWW-Authenticate: Bearer\r\n"),
            HttpError::Unavailable(_) => extra.push_str("Retry-After: 1\r\n"),
            _ => {}
        }
        let body = format!("{} {}\n", self.status(), self.detail());
        let mut out = Vec::with_capacity(160 + body.len());
        write_head(&mut out, self.status(), "text/plain; charset=utf-8", body.len(), false, cors);
        out.truncate(out.len() - 2);
        out.extend_from_slice(extra.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body.as_bytes());
        out
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.detail())
    }
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Appends a response head with a `Content-Length` body, ending in the blank line.
pub fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    content_length: usize,
    keep_alive: bool,
    cors_origin: Option<&str>,
) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {content_length}\r\n",
        reason_phrase(status)
    );
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    write_cors(out, cors_origin);
    out.extend_from_slice(b"\r\n");
}

/// `Access-Control-Allow-Origin` for an allowed origin (`*` or the echoed origin).
pub fn write_cors(out: &mut Vec<u8>, cors_origin: Option<&str>) {
    if let Some(origin) = cors_origin {
        out.extend_from_slice(b"Access-Control-Allow-Origin: ");
        out.extend_from_slice(origin.as_bytes());
        out.extend_from_slice(b"\r\n");
        if origin != "*" {
            out.extend_from_slice(b"Vary: Origin\r\n");
        }
    }
}

pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_responses_carry_status_headers_and_close() {
        let text = String::from_utf8(HttpError::MethodNotAllowed("GET, OPTIONS").response(None)).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{text}");
        assert!(text.contains("\r\nAllow: GET, OPTIONS\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let text = String::from_utf8(HttpError::Unavailable("full").response(Some("*"))).unwrap();
        assert!(text.contains("\r\nRetry-After: 1\r\n"));
        assert!(text.contains("\r\nAccess-Control-Allow-Origin: *\r\n"));
    }
}
