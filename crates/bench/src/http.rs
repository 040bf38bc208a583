//! The HTTP/1.1 client side the generator needs: building the subscribe
//! (GET) and publish requests into reused buffers. Reading responses (heads,
//! then bodies by their framing) is `ssehub_protocol::http::response`, shared
//! with the tests.

pub use ssehub_protocol::http::response::{BodyDecoder, BodyFraming as Framing, HeadBuffer, push_decimal};

/// Appends a subscribe request for `path` to `out`, with extra `headers`
/// (complete `Name: value` lines without CRLF).
pub fn write_get(out: &mut Vec<u8>, host: &str, path: &[u8], headers: &[String], bearer: Option<&str>) {
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n");
    for h in headers {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(token) = bearer {
        out.extend_from_slice(b"Authorization: Bearer ");
        out.extend_from_slice(token.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_requests() {
        let mut out = Vec::new();
        write_get(&mut out, "127.0.0.1:8080", b"/events?topic=t0", &[], None);
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
}
