//! Publishing: form and JSON bodies, batches, ids, keep-alive and pipelining,
//! `Expect: 100-continue`, chunked bodies and who may publish.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream, UdpSocket};

use common::{Server, body_of, header, read_response, status_of};

fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("ms-seq");
    (ms.parse().expect("ms"), seq.parse().expect("seq"))
}

#[test]
fn ids_are_unix_ms_dash_seq_and_strictly_increase() {
    let server = Server::start(&[]);
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let ids: Vec<(u64, u64)> =
        (0..200).flat_map(|i| server.publish(&format!("topic=t&data={i}"))).map(|id| parse_id(&id)).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
    assert!(ids[0].0 >= before && ids[0].0 < before + 60_000, "unix milliseconds");
}

#[test]
fn a_json_batch_is_published_in_order_and_answers_every_id() {
    let server = Server::start(&[]);
    let mut sub = server.subscribe("topic=a&topic=b");
    let (status, body) = server.post(
        "application/json; charset=utf-8",
        r#"[{"topic":"a","data":"1"},{"topic":["a","b"],"data":"2","event":"e","retry":500},{"topic":"b","data":{"x":1}}]"#,
    );
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body.lines().collect();
    assert_eq!(ids.len(), 3);
    let events = sub.next_events(3);
    assert_eq!(events.iter().map(|e| e.last_event_id.as_str()).collect::<Vec<_>>(), ids);
    assert_eq!(events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(), ["1", "2", r#"{"x":1}"#]);
    assert_eq!(events[1].event_type, "e");
    assert_eq!(sub.reconnection_time(), Some(500));
}

#[test]
fn an_invalid_item_rejects_the_whole_batch() {
    let server = Server::start(&[]);
    let mut sub = server.subscribe("topic=a");
    let bad = [
        r#"[{"topic":"a","data":"1"},{"topic":"a"}]"#,
        r#"[{"topic":"a","data":"1"},{"topic":"a","data":"2","retry":"soon"}]"#,
        r#"[{"topic":"a","data":"1"},{"topic":"a","data":"2","event":"x\ny"}]"#,
        r#"[{"topic":"a","data":"1"},{"topic":"","data":"2"}]"#,
        r#"[{"topic":"a","data":"1"},"nope"]"#,
        r#"{"topic":"a","data":"1""#,
    ];
    for body in bad {
        assert_eq!(server.post("application/json", body).0, 400, "{body}");
    }
    assert_eq!(server.post("text/plain", "hello").0, 415);
    assert_eq!(server.post("application/x-www-form-urlencoded", "topic=a&data=1&retry=x").0, 400);
    server.publish("topic=a&data=marker");
    assert_eq!(sub.next_event().data, "marker", "nothing from the rejected batches");
    assert_eq!(server.metric("ssehub_events_published_total"), 1);
}

#[test]
fn keep_alive_and_pipelined_publishes_are_answered_in_order() {
    let server = Server::start(&[]);
    let mut sub = server.subscribe("topic=p");
    let mut conn = server.connect();
    let mut pending = Vec::new();
    // Sequential requests on one connection.
    for i in 0..3 {
        let body = format!("topic=p&data=seq{i}");
        write!(conn, "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let response = read_response(&mut conn, &mut pending);
        assert_eq!(status_of(&response), 200);
        assert_eq!(header(&response, "connection"), None, "kept alive");
    }
    // Fifty pipelined in one write, mixing Content-Length and chunked bodies.
    let mut burst = String::new();
    for i in 0..50 {
        let body = format!("topic=p&data=pipe{i}");
        if i % 2 == 0 {
            burst += &format!("POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        } else {
            burst += &format!(
                "POST /publish HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            );
        }
    }
    conn.write_all(burst.as_bytes()).unwrap();
    let mut ids = Vec::new();
    for _ in 0..50 {
        let response = read_response(&mut conn, &mut pending);
        assert_eq!(status_of(&response), 200, "{response}");
        ids.push(body_of(&response).trim().to_string());
    }
    let events = sub.next_events(53);
    let data: Vec<String> = events.iter().map(|e| e.data.clone()).collect();
    let want: Vec<String> = (0..3).map(|i| format!("seq{i}")).chain((0..50).map(|i| format!("pipe{i}"))).collect();
    assert_eq!(data, want);
    assert_eq!(events[3..].iter().map(|e| e.last_event_id.clone()).collect::<Vec<_>>(), ids);
}

#[test]
fn http10_and_connection_close_publishes_end_the_connection() {
    let server = Server::start(&[]);
    let response = server.raw(b"POST /publish HTTP/1.0\r\nContent-Length: 7\r\n\r\ntopic=a");
    assert_eq!(status_of(&response), 400, "{response}");
    let response = server.raw(b"POST /publish HTTP/1.0\r\nContent-Length: 14\r\n\r\ntopic=a&data=x");
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(header(&response, "connection"), Some("close"));
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let server = Server::start(&[]);
    let mut sub = server.subscribe("topic=big");
    let data = "x".repeat(2000);
    let body = format!("topic=big&data={data}");
    let mut conn = server.connect();
    write!(conn, "POST /publish HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len())
        .unwrap();
    let mut interim = [0u8; 25];
    conn.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    conn.write_all(body.as_bytes()).unwrap();
    let response = read_response(&mut conn, &mut Vec::new());
    assert_eq!(status_of(&response), 200);
    assert_eq!(sub.next_event().data, data);
    // A request that will be refused gets its final answer instead of 100 Continue.
    let response =
        server.raw(b"POST /publish HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 99999999\r\n\r\n");
    assert_eq!(status_of(&response), 413);
}

#[test]
fn a_token_is_required_when_configured() {
    let server = Server::start(&["--publish-token", "s3cret"]);
    let mut sub = server.subscribe("topic=t");
    let send = |auth: &str| {
        let request = format!(
            "POST /publish HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: 14\r\nConnection: close\r\n\r\ntopic=t&data=x"
        );
        server.raw(request.as_bytes())
    };
    for auth in
        ["", "Authorization: Bearer wrong\r\n", "Authorization: Bearer s3cre\r\n", "Authorization: Basic s3cret\r\n"]
    {
        let response = send(auth);
        assert_eq!(status_of(&response), 401, "{auth:?}");
        assert_eq!(header(&response, "www-authenticate"), Some("Bearer"));
    }
    assert_eq!(status_of(&send("Authorization: Bearer s3cret\r\n")), 200);
    assert_eq!(sub.next_event().data, "x");
    // The environment variable works too; the preflight needs no token.
    let server = Server::start_with(&["--cors-origin", "*"], |c| {
        c.env("SSEHUB_PUBLISH_TOKEN", "from-env");
    });
    let response = server.raw(b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 14\r\n\r\ntopic=t&data=x");
    assert_eq!(status_of(&response), 401);
    let response = server.raw(
        b"POST /publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer from-env\r\nContent-Length: 14\r\nConnection: close\r\n\r\ntopic=t&data=x",
    );
    assert_eq!(status_of(&response), 200);
    let response =
        server.raw(b"OPTIONS /publish HTTP/1.1\r\nHost: t\r\nOrigin: https://a\r\nConnection: close\r\n\r\n");
    assert_eq!(status_of(&response), 204);
}

/// A local address that is not loopback, if this machine has one.
fn non_loopback_ip() -> Option<IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.123:9").ok()?; // no packet is sent; this only picks a route
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn without_a_token_only_loopback_peers_may_publish() {
    let Some(ip) = non_loopback_ip() else {
        eprintln!("no non-loopback address on this machine; the rule is covered by auth's unit tests");
        return;
    };
    let server = Server::start(&["--listen", "0.0.0.0:0"]);
    let mut conn = TcpStream::connect((ip, server.addr.port())).unwrap();
    conn.write_all(
        b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 14\r\nConnection: close\r\n\r\ntopic=t&data=x",
    )
    .unwrap();
    let response = common::read_to_close(&mut conn);
    assert_eq!(status_of(&response), 403, "{response}");
    let local = Server::start(&[]);
    assert_eq!(local.post("application/x-www-form-urlencoded", "topic=t&data=x").0, 200);
}
