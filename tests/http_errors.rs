//! Every error status the contract names, and the framing rules, over raw TCP.
//! Each error answer is followed by the server closing the connection.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Server, body_of, header, status_of};

fn post(headers: &str, body: &str) -> String {
    format!("POST /publish HTTP/1.1\r\nHost: t\r\n{headers}\r\n{body}")
}

#[test]
fn each_error_has_its_status_a_body_and_closes() {
    let server = Server::start(&["--max-body", "1024"]);
    let long_target = format!("GET /events?topic={} HTTP/1.1\r\nHost: t\r\n\r\n", "x".repeat(8 * 1024));
    let big_headers = format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "y".repeat(16 * 1024));
    let many_headers = format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{}\r\n", "X-H: v\r\n".repeat(64));
    let cases: Vec<(String, u16)> = vec![
        ("GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n".into(), 404),
        ("GET /events/ HTTP/1.1\r\nHost: t\r\n\r\n".into(), 404),
        ("DELETE /events HTTP/1.1\r\nHost: t\r\n\r\n".into(), 405),
        ("GET /publish HTTP/1.1\r\nHost: t\r\n\r\n".into(), 405),
        ("POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n".into(), 405),
        ("GET /events?topic=a HTTP/1.1\r\n\r\n".into(), 400),
        ("GET /events?topic=a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(), 400),
        ("NOT A REQUEST\r\n\r\n".into(), 400),
        (long_target, 414),
        (big_headers, 431),
        (many_headers, 431),
        (post("Content-Length: 2000\r\n", ""), 413),
        (post("Transfer-Encoding: gzip\r\n", ""), 501),
        (post("Transfer-Encoding: gzip, chunked\r\n", ""), 501),
        (post("Content-Type: text/plain\r\nContent-Length: 1\r\n", "x"), 415),
    ];
    for (request, want) in cases {
        let response = server.raw(request.as_bytes());
        assert_eq!(status_of(&response), want, "{:?}", &request[..request.len().min(80)]);
        assert_eq!(header(&response, "connection"), Some("close"));
        assert!(body_of(&response).starts_with(&want.to_string()), "a short body naming the error: {response}");
        if want == 405 {
            assert!(header(&response, "allow").is_some(), "405 names what is allowed");
        }
    }
    let response = server.raw(b"DELETE /events HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(header(&response, "allow"), Some("GET, OPTIONS"));
    let response = server.raw(b"GET /publish HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(header(&response, "allow"), Some("POST, OPTIONS"));
    assert!(server.metric("ssehub_requests_rejected_total{status=\"404\"}") >= 2);
}

#[test]
fn smuggling_shapes_are_refused_and_what_follows_is_never_executed() {
    let server = Server::start(&[]);
    let mut sub = server.subscribe("topic=t");
    let smuggled = "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 15\r\n\r\ntopic=t&data=S";
    let cases = [
        ("Content-Length: 14\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n", 400),
        ("Transfer-Encoding: chunked\r\nContent-Length: 14\r\n", "0\r\n\r\n", 400),
        ("Content-Length: 14\r\nContent-Length: 14\r\n", "", 400),
        ("Content-Length: 14, 14\r\n", "", 400),
        ("Content-Length: +14\r\n", "", 400),
        ("Content-Length: -1\r\n", "", 400),
        ("Content-Length: 0x5\r\n", "", 400),
        ("Content-Length: \r\n", "", 400),
        ("Content-Length: 1 4\r\n", "", 400),
        ("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n", 400),
        ("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n", 400),
        ("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n", 501),
        ("Transfer-Encoding : chunked\r\n", "0\r\n\r\n", 400),
        ("Transfer-Encoding: chunked\r\n", "-1\r\n\r\n", 400),
        ("Transfer-Encoding: chunked\r\n", "0x0\r\n\r\n", 400),
        ("Transfer-Encoding: chunked\r\n", "+0\r\n\r\n", 400),
        ("Transfer-Encoding: chunked\r\n", "0 \r\n\r\n", 400),
        ("Transfer-Encoding: chunked\r\n", "e\r\ntopic=t&data=xEXTRA\r\n0\r\n\r\n", 400),
        ("Transfer-Encoding: chunked\r\n", "e;ext=\x01\r\ntopic=t&data=x\r\n0\r\n\r\n", 400),
        ("Transfer-Encoding: chunked\r\n", "e\ntopic=t&data=x\r\n0\r\n\r\n", 400),
        ("Transfer-Encoding: chunked\r\n", "fffffffffffffffff\r\n", 400),
        ("X-Folded: a\r\n b\r\nContent-Length: 14\r\n", "topic=t&data=x", 400),
        ("Content-Length : 14\r\n", "topic=t&data=x", 400),
        ("X-Nul: a\0b\r\nContent-Length: 14\r\n", "topic=t&data=x", 400),
        ("X-Cr: a\rb\r\nContent-Length: 14\r\n", "topic=t&data=x", 400),
    ];
    for (headers, body, want) in cases {
        let request = format!("{}{smuggled}", post(headers, body));
        let response = server.raw(request.as_bytes());
        assert_eq!(status_of(&response), want, "{headers:?} {body:?}: {response}");
        assert_eq!(response.matches("HTTP/1.1 ").count(), 1, "one answer, nothing after it: {response}");
    }
    let response = server.raw(b"POST /publish HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_eq!(status_of(&response), 400, "chunked is not HTTP/1.0");
    server.publish("topic=t&data=marker");
    assert_eq!(sub.next_event().data, "marker", "no smuggled publish ran");
    assert_eq!(server.metric("ssehub_events_published_total"), 1);
}

#[test]
fn chunked_bodies_with_extensions_and_trailers_are_accepted() {
    let server = Server::start(&[]);
    let mut sub = server.subscribe("topic=t");
    let request = post(
        "Transfer-Encoding: chunked\r\nConnection: close\r\n",
        "7;a=b;c=\"d;e\"\r\ntopic=t\r\n7\r\n&data=x\r\n0\r\nX-Trailer: ok\r\n\r\n",
    );
    let response = server.raw(request.as_bytes());
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(sub.next_event().data, "x");
}

#[test]
fn an_oversized_body_is_refused_from_its_length_before_it_is_sent() {
    let server = Server::start(&["--max-body", "100"]);
    let mut conn = server.connect();
    conn.write_all(post("Content-Length: 101\r\n", "").as_bytes()).unwrap();
    // No body sent: the answer must not wait for it.
    let response = common::read_to_close(&mut conn);
    assert_eq!(status_of(&response), 413);
    let body = format!("topic=t&data={}", "x".repeat(200));
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let response = server.raw(post("Transfer-Encoding: chunked\r\n", &chunked).as_bytes());
    assert_eq!(status_of(&response), 413, "chunked bodies are bounded too");
}

#[test]
fn requests_dribbled_a_byte_at_a_time_still_succeed() {
    let server = Server::start(&[]);
    let mut sub = server.subscribe("topic=t");
    let mut conn = server.connect();
    let request = post("Transfer-Encoding: chunked\r\nConnection: close\r\n", "e\r\ntopic=t&data=x\r\n0\r\n\r\n");
    for byte in request.as_bytes() {
        conn.write_all(&[*byte]).unwrap();
    }
    assert_eq!(status_of(&common::read_to_close(&mut conn)), 200);
    assert_eq!(sub.next_event().data, "x");
}

#[test]
fn slow_headers_get_408_and_silent_connections_are_closed() {
    let server = Server::start(&["--header-timeout", "0.3"]);
    let started = Instant::now();
    let mut conn = server.connect();
    conn.write_all(b"GET /events?topic=t HTTP/1.1\r\nHost: t\r\n").unwrap();
    let response = common::read_to_close(&mut conn);
    assert_eq!(status_of(&response), 408);
    assert!(started.elapsed() >= Duration::from_millis(250), "not before the deadline");

    let mut silent = server.connect();
    let mut buf = [0u8; 16];
    assert_eq!(silent.read(&mut buf).unwrap(), 0, "closed without an answer");

    // An idle keep-alive connection is closed too, after answering its request.
    let mut conn = server.connect();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let response = common::read_to_close(&mut conn);
    assert_eq!(status_of(&response), 200);
    assert_eq!(body_of(&response), "ok\n");
}

#[test]
fn health_readiness_and_metrics() {
    let server = Server::start(&[]);
    let response = server.raw(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!((status_of(&response), body_of(&response)), (200, "ok\n"));
    let response = server.raw(b"GET /readyz HTTP/1.0\r\n\r\n");
    assert_eq!(status_of(&response), 200);
    let _sub = server.subscribe("topic=m");
    server.publish("topic=m&data=x");
    let response = server.raw(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert!(header(&response, "content-type").unwrap().starts_with("text/plain"));
    let text = body_of(&response);
    for name in [
        "ssehub_connections{kind=\"subscriber\"} 1",
        "ssehub_events_published_total 1",
        "ssehub_frames_written_total",
        "ssehub_bytes_written_total",
        "ssehub_replays_total",
        "ssehub_slow_consumers_dropped_total",
        "ssehub_requests_rejected_total{status=\"400\"}",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
}

#[test]
fn a_keep_alive_connection_lives_while_each_request_comes_in_time() {
    let server = Server::start(&["--header-timeout", "0.5"]);
    let mut conn = server.connect();
    let mut pending = Vec::new();
    let started = Instant::now();
    for _ in 0..4 {
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        assert_eq!(status_of(&common::read_response(&mut conn, &mut pending)), 200);
        // The scenario itself is about time: idle less than the timeout between requests.
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(started.elapsed() > Duration::from_millis(1000), "outlived one timeout");
    let mut buf = [0u8; 1];
    assert_eq!(conn.read(&mut buf).unwrap(), 0, "then closed once idle for the timeout");
}
