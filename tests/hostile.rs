//! Hostile clients: garbage, smuggling, injection, dribbling, resets. Each
//! case asserts the exact answer, and a healthy subscriber must keep
//! receiving events throughout.
//!
//! Cases were written for this suite after the shapes collected by HTTP
//! Garden, Http11Probe and h1spec.

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::{Server, Subscriber, status_of};
use socket2::Socket;

/// A server plus a subscriber that must see every marker published between cases.
struct Watched {
    server: Server,
    healthy: Subscriber,
    markers: usize,
}

impl Watched {
    fn start(args: &[&str]) -> Watched {
        let server = Server::start(args);
        let healthy = server.subscribe("topic=health");
        Watched { server, healthy, markers: 0 }
    }

    /// Publishes a marker and checks the healthy subscriber gets it next.
    fn still_healthy(&mut self, context: &str) {
        self.markers += 1;
        self.server.publish(&format!("topic=health&data=m{}", self.markers));
        assert_eq!(self.healthy.next_event().data, format!("m{}", self.markers), "after {context}");
    }
}

#[test]
fn garbage_and_malformed_heads_get_400() {
    let mut w = Watched::start(&[]);
    let cases: &[&[u8]] = &[
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", // a TLS ClientHello
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",                     // the HTTP/2 preface
        b"\x00\x01\x02\x03\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /events?topic=a\r\n\r\n", // HTTP/0.9
        b"GET /events?topic=a HTTP/1.1 extra\r\nHost: t\r\n\r\n",
        b"GET /events?topic=a HTTP/9.9\r\nHost: t\r\n\r\n",
        b"GET /events?topic=a HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n",
        b"GET /events?topic=a HTTP/1.1\r\nHost: t\r\n: empty-name\r\n\r\n",
        b"GET /events?topic=a HTTP/1.1\r\nHost: t\r\nX: y\r\n folded\r\n\r\n",
        b"GET /events?topic=a HTTP/1.1\r\nHost: t\r\nX : y\r\n\r\n",
        b"GET /events?topic=a HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n",
        b"GET /events?topic=a HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n",
        b"GET /events?topic=a HTTP/1.1\rHost: t\r\n\r\n",
        b"GET /events?topic=a HTTP/1.1\r\n\r\n", // no Host
        b"GET events?topic=a HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /events?topic=a\x7f HTTP/1.1\r\nHost: t\r\n\r\n",
    ];
    for case in cases {
        let response = w.server.raw(case);
        assert_eq!(status_of(&response), 400, "{:?}: {response}", String::from_utf8_lossy(case));
        w.still_healthy(&String::from_utf8_lossy(case));
    }
}

#[test]
fn oversized_requests_are_refused_before_they_are_read() {
    let mut w = Watched::start(&["--max-body", "1000"]);
    let target = format!("GET /events?topic={} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000));
    let headers = format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n", "b".repeat(17_000));
    let count = format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{}\r\n", "X: c\r\n".repeat(65));
    let body = "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n".to_string();
    for (request, want) in [(target, 414), (headers, 431), (count, 431), (body, 413)] {
        let response = w.server.raw(request.as_bytes());
        assert_eq!(status_of(&response), want);
        w.still_healthy(&format!("{want}"));
    }
    // A request line that never ends is cut off at the limit, without waiting for the rest.
    let mut conn = w.server.connect();
    conn.write_all(format!("GET /{}", "z".repeat(10_000)).as_bytes()).unwrap();
    assert_eq!(status_of(&common::read_to_close(&mut conn)), 414);
    w.still_healthy("endless request line");
}

#[test]
fn resume_ids_cannot_inject_fields() {
    let mut w = Watched::start(&[]);
    w.server.publish("topic=t&data=before");
    for query in ["topic=t&lastEventId=%0Adata:%20evil%0A%0A", "topic=t&lastEventId=1-0%0D%0Aevent:%20x"] {
        let mut sub = w.server.subscribe(query);
        w.server.publish("topic=t&data=live");
        let events = sub.next_events(3);
        assert_eq!(events[0].event_type, "ssehub-gap");
        assert!(!events[0].data.contains("evil") && !events[0].data.contains('\n'));
        assert_eq!(events[1].data, "before");
        assert_eq!(events[2].data, "live");
        w.still_healthy(query);
    }
    // A header cannot carry a line break at all: it ends the field, and what follows is a bad header.
    let response = w.server.raw(b"GET /events?topic=t HTTP/1.1\r\nHost: t\r\nLast-Event-ID: 1\rdata: x\r\n\r\n");
    assert_eq!(status_of(&response), 400);
    w.still_healthy("CR in Last-Event-ID");
}

#[test]
fn clients_that_reset_mid_stream_or_mid_request_do_not_disturb_others() {
    let mut w = Watched::start(&[]);
    for _ in 0..20 {
        // A subscriber that vanishes with a reset.
        let sub = w.server.subscribe("topic=health");
        let socket = Socket::from(sub.stream);
        socket.set_linger(Some(std::time::Duration::ZERO)).unwrap();
        drop(socket);
        // A publisher that resets halfway through its body.
        let stream = TcpStream::connect(w.server.addr).unwrap();
        (&stream).write_all(b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\ntopic=hea").unwrap();
        let socket = Socket::from(stream);
        socket.set_linger(Some(std::time::Duration::ZERO)).unwrap();
        drop(socket);
    }
    w.still_healthy("resets");
    w.server.wait_metric("ssehub_connections{kind=\"subscriber\"}", |n| n == 1);
}

#[test]
fn a_burst_of_abrupt_disconnects_during_a_broadcast_loses_nothing_for_the_rest() {
    let w = Watched::start(&[]);
    let mut leaving: Vec<Subscriber> = (0..150).map(|_| w.server.subscribe("topic=b")).collect();
    let mut staying: Vec<Subscriber> = (0..30).map(|_| w.server.subscribe("topic=b")).collect();
    let publisher = {
        let addr = w.server.addr;
        std::thread::spawn(move || {
            for i in 0..200 {
                let body = format!("topic=b&data={i}");
                let mut conn = TcpStream::connect(addr).unwrap();
                write!(
                    conn,
                    "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                assert_eq!(status_of(&common::read_to_close(&mut conn)), 200);
            }
        })
    };
    // Wait until the broadcast is under way, then drop everyone leaving, half with resets.
    assert_eq!(staying[0].next_event().data, "0");
    for (i, sub) in leaving.drain(..).enumerate() {
        let socket = Socket::from(sub.stream);
        if i % 2 == 0 {
            socket.set_linger(Some(std::time::Duration::ZERO)).unwrap();
        }
        drop(socket);
    }
    publisher.join().unwrap();
    for (n, sub) in staying.iter_mut().enumerate() {
        let skip = usize::from(n == 0);
        let got: Vec<String> = sub.next_events(200 - skip).into_iter().map(|e| e.data).collect();
        let want: Vec<String> = (skip..200).map(|i| i.to_string()).collect();
        assert_eq!(got, want, "subscriber {n}");
    }
    w.server.wait_metric("ssehub_connections{kind=\"subscriber\"}", |n| n == 31);
}

#[test]
fn a_resume_from_far_in_the_past_replays_only_the_history() {
    let mut w = Watched::start(&["--history", "50"]);
    let topics: Vec<String> = (0..64).map(|i| format!("topic=h{i}")).collect();
    for i in 0..64 {
        // A batch fills 60 events of each topic's history at once.
        let items: Vec<String> = (0..60).map(|k| format!(r#"{{"topic":"h{i}","data":"{k}"}}"#)).collect();
        assert_eq!(w.server.post("application/json", &format!("[{}]", items.join(","))).0, 200);
    }
    let mut sub = w.server.subscribe_with(&topics.join("&"), "Last-Event-ID: 0-0\r\n");
    let events = sub.next_events(1 + 64 * 50);
    assert_eq!(events[0].event_type, "ssehub-gap");
    assert!(events[1..].iter().all(|e| e.data.parse::<u32>().is_ok_and(|k| k >= 10)), "only what is retained");
    w.still_healthy("a long replay");
}
