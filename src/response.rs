//! What the hub answers: every refusal as one [`HttpError`], mapped to its
//! status line, headers and body in one place, and the few response heads it
//! writes.

use std::fmt;

use ssehub_protocol::http::RequestError;
use ssehub_protocol::http::response::{push_decimal, write_header, write_status_line};

use crate::auth::Denied;

/// Why a request is refused. Each maps to one status code.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// What the request reader refuses: 400, 413, 414, 431 or 501.
    Request(RequestError),
    /// 400: a malformed query or publish body.
    BadRequest(&'static str),
    /// 401 or 403: see [`Denied`].
    Denied(Denied),
    /// 404: unknown path.
    NotFound,
    /// 405: known path, wrong method; carries the `Allow` value.
    MethodNotAllowed(&'static str),
    /// 408: the request did not arrive within the header timeout.
    Timeout,
    /// 415: a publish body that is neither form-encoded nor JSON.
    UnsupportedMediaType,
    /// 409: an `Idempotency-Key` already used by a publish with another body.
    Conflict,
    /// 503: over `--max-connections`, the event queues stayed full, or the
    /// backplane is down. Nothing of the request was or will be published.
    Unavailable(&'static str),
    /// 504: the publish may or may not be applied (a command timed out after
    /// it was sent, or shutdown caught it in flight); retry with the same
    /// `Idempotency-Key`.
    Unknown(&'static str),
}

impl From<RequestError> for HttpError {
    fn from(error: RequestError) -> Self {
        HttpError::Request(error)
    }
}

impl From<Denied> for HttpError {
    fn from(denied: Denied) -> Self {
        HttpError::Denied(denied)
    }
}

impl HttpError {
    /// The status code.
    pub fn status(self) -> u16 {
        match self {
            HttpError::Request(error) => error.status(),
            HttpError::BadRequest(_) => 400,
            HttpError::Denied(denied) => denied.status(),
            HttpError::NotFound => 404,
            HttpError::MethodNotAllowed(_) => 405,
            HttpError::Timeout => 408,
            HttpError::UnsupportedMediaType => 415,
            HttpError::Conflict => 409,
            HttpError::Unavailable(_) => 503,
            HttpError::Unknown(_) => 504,
        }
    }

    /// One line for the response body and the log.
    pub fn detail(self) -> &'static str {
        match self {
            HttpError::Request(error) => error.detail(),
            HttpError::BadRequest(why) | HttpError::Unavailable(why) | HttpError::Unknown(why) => why,
            HttpError::Conflict => "this Idempotency-Key was already used by a publish with another body",
            HttpError::Denied(denied) => denied.detail(),
            HttpError::NotFound => "no such path",
            HttpError::MethodNotAllowed(_) => "method not allowed",
            HttpError::Timeout => "request not received in time",
            HttpError::UnsupportedMediaType => {
                "publish bodies are application/x-www-form-urlencoded or application/json"
            }
        }
    }

    /// The complete response, always with `Connection: close`: after an error
    /// the bytes that follow on the connection are never interpreted.
    pub fn response(self, cors: Option<&str>) -> Vec<u8> {
        let body = format!("{} {}\n", self.status(), self.detail());
        let mut out = Vec::with_capacity(160 + body.len());
        write_head(&mut out, self.status(), "text/plain; charset=utf-8", body.len(), false, cors);
        match self {
            HttpError::MethodNotAllowed(allow) => write_header(&mut out, "Allow", allow.as_bytes()),
            HttpError::Denied(denied) if denied.status() == 401 => {
                write_header(&mut out, "WWW-Authenticate", b"Bearer")
            }
            HttpError::Unavailable(_) | HttpError::Unknown(_) => write_header(&mut out, "Retry-After", b"1"),
            _ => {}
        }
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

impl std::error::Error for HttpError {}

/// Appends a response head with a `Content-Length` body, without the blank
/// line that ends it (callers may add fields first).
pub fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    content_length: usize,
    keep_alive: bool,
    cors_origin: Option<&str>,
) {
    write_status_line(out, status);
    write_header(out, "Content-Type", content_type.as_bytes());
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, content_length as u64);
    out.extend_from_slice(b"\r\n");
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    write_cors(out, cors_origin);
}

/// `Access-Control-Allow-Origin` for an allowed origin (`*` or the echoed origin).
pub fn write_cors(out: &mut Vec<u8>, cors_origin: Option<&str>) {
    if let Some(origin) = cors_origin {
        write_header(out, "Access-Control-Allow-Origin", origin.as_bytes());
        if origin != "*" {
            out.extend_from_slice(b"Vary: Origin\r\n");
        }
    }
}

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
        let text = String::from_utf8(HttpError::Denied(Denied::PublishCredentials).response(None)).unwrap();
        assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n") && text.contains("\r\nWWW-Authenticate: Bearer\r\n"));
        let text = String::from_utf8(HttpError::from(RequestError::UriTooLong).response(None)).unwrap();
        assert!(text.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{text}");
    }
}
