//! Resource rules: slow consumers are dropped without slowing others,
//! `--max-connections` turns clients away the way each kind can handle, and
//! SIGTERM shuts down cleanly.

mod common;

use std::io::Write;
use std::thread;

use common::{Server, Subscriber, header, status_of};

#[test]
fn a_slow_consumer_is_dropped_while_fast_ones_get_everything_in_order() {
    let server = Server::start(&["--max-backlog", "8"]);
    let stalled = common::stalled_subscriber(&server, "t");
    let fast = server.subscribe("topic=t");
    const EVENTS: usize = 300;
    let reader = thread::spawn(move || {
        let mut fast = fast;
        fast.next_events(EVENTS).into_iter().map(|e| e.data).collect::<Vec<_>>()
    });
    let stalled_reader = common::read_once_dropped(&server, stalled);
    let payload = "p".repeat(32 * 1024);
    for i in 0..EVENTS {
        server.publish(&format!("topic=t&data={i}:{payload}"));
    }
    let got = reader.join().unwrap();
    let want: Vec<String> = (0..EVENTS).map(|i| format!("{i}:{payload}")).collect();
    assert!(got == want, "the fast subscriber got every event, in order");
    // The stalled client finds its stream ended, short of the full set.
    let (seen, ended_cleanly) = stalled_reader.join().unwrap();
    assert_eq!(server.metric("ssehub_slow_consumers_dropped_total"), 1);
    assert!(seen.len() < EVENTS, "the stalled subscriber was cut off ({} events)", seen.len());
    assert!(seen.iter().enumerate().all(|(i, e)| e.data.starts_with(&format!("{i}:"))), "what it got was in order");
    assert!(ended_cleanly, "a drop on purpose ends the chunked body with its last chunk");
    assert_eq!(server.metric("ssehub_connections{kind=\"subscriber\"}"), 0);
}

#[test]
fn past_max_connections_publishers_get_503_and_subscribers_retry_and_close() {
    let server = Server::start(&["--max-connections", "3", "--retry", "2000"]);
    let mut held: Vec<Subscriber> = (0..3).map(|_| server.subscribe("topic=t")).collect();
    assert!(held.iter().all(|s| s.status() == 200));

    let response = server.raw(b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 14\r\n\r\ntopic=t&data=x");
    assert_eq!(status_of(&response), 503);
    assert!(header(&response, "retry-after").is_some());

    let mut turned_away = server.subscribe("topic=t");
    assert_eq!(turned_away.status(), 200, "EventSource retries only after a 200 that ends");
    assert_eq!(header(&turned_away.head, "content-type"), Some("text/event-stream"));
    assert!(turned_away.read_until_closed().is_empty(), "no events, only a retry line");
    let retry = turned_away.reconnection_time().expect("a retry line");
    assert!((2000..4000).contains(&retry), "jittered retry {retry}");
    assert!(server.metric("ssehub_connections_over_limit_total") >= 2);
    drop(turned_away);

    // Health checks still answer, and room frees up when a subscriber leaves.
    assert_eq!(status_of(&server.raw(b"GET /healthz HTTP/1.0\r\n\r\n")), 200);
    drop(held.pop());
    server.wait_metric("ssehub_connections{kind=\"subscriber\"}", |n| n == 2);
    // Earlier answered requests close asynchronously; wait until only this scrape is open.
    server.wait_metric("ssehub_connections{kind=\"http\"}", |n| n == 1);
    let mut sub = server.subscribe("topic=t");
    assert_eq!(sub.reconnection_time(), Some(2000), "a normal stream: the configured retry, no jitter");
    drop(held);
    server.wait_metric("ssehub_connections{kind=\"subscriber\"}", |n| n == 1);
    server.publish("topic=t&data=welcome");
    assert_eq!(sub.next_event().data, "welcome");
}

#[test]
fn a_killed_server_does_not_look_like_a_clean_end() {
    let mut server = Server::start(&[]);
    let mut sub = server.subscribe("topic=t");
    server.publish("topic=t&data=before");
    assert_eq!(sub.next_event().data, "before");
    assert_eq!(server.signal_and_wait(libc::SIGKILL), None);
    assert!(sub.read_until_closed().is_empty());
    assert!(!sub.ended_cleanly, "no terminating chunk after a crash: clients know to reconnect");
}

#[test]
fn sigterm_closes_streams_and_exits_zero() {
    let mut server = Server::start(&["--shutdown-grace", "3"]);
    let mut subs: Vec<Subscriber> = (0..5).map(|i| server.subscribe(&format!("topic=t{i}"))).collect();
    let mut idle_publisher = server.connect();
    idle_publisher.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut pending = Vec::new();
    assert_eq!(status_of(&common::read_response(&mut idle_publisher, &mut pending)), 200);
    assert_eq!(server.signal_and_wait(libc::SIGTERM), Some(0));
    for sub in &mut subs {
        sub.read_until_closed();
        assert!(sub.closed);
        assert!(sub.ended_cleanly, "a shutdown ends each stream with the last chunk");
    }
    assert!(common::read_to_close(&mut idle_publisher).is_empty());
}
