//! The cluster publish path under Redis faults: `200` means published, `503`
//! means never published, `504` means unknown and safe to retry with an
//! `Idempotency-Key`; a frozen Redis (SIGSTOP, not only a dead one) turns
//! `/readyz` within a second; publishes pipeline across round trips; a
//! resume across a stream reset gets its gap on every node. Each test runs
//! its own `redis-server` and stops it by pid.

mod common;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use common::relay::Relay;
use common::{Redis, Server, body_of, header, publish_request, read_response, read_to_eof, status_of};

fn data(events: &[ssehub_protocol::sse::ParsedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.data.as_str()).collect()
}

fn readyz(node: &Server) -> u16 {
    status_of(&node.raw(b"GET /readyz HTTP/1.0\r\n\r\n"))
}

/// Waits until `/readyz` says 503.
fn wait_unready(node: &Server) {
    let deadline = Instant::now() + common::TIMEOUT;
    while readyz(node) != 503 {
        assert!(Instant::now() < deadline, "readyz never turned 503");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A one-shot publish with extra header lines; the whole response.
fn post(node: &Server, form: &str, headers: &str) -> String {
    node.raw(publish_request(form, &format!("Connection: close\r\n{headers}")).as_bytes())
}

/// Reads events until one has `data`; returns them all.
fn until(sub: &mut common::Subscriber, last: &str) -> Vec<String> {
    let mut seen = Vec::new();
    while seen.last().is_none_or(|d| d != last) {
        seen.push(sub.next_event().data);
    }
    seen
}

#[test]
fn readyz_turns_503_within_a_second_of_redis_freezing() {
    let redis = Redis::start();
    let node = Server::node(&redis, &[]);
    redis.freeze();
    let frozen = Instant::now();
    wait_unready(&node);
    let took = frozen.elapsed();
    assert!(took < Duration::from_secs(1), "readyz took {took:?} to turn 503");
    assert!(body_of(&node.raw(b"GET /healthz HTTP/1.0\r\n\r\n")).contains("degraded"));
    redis.thaw();
    node.wait_ready();
}

/// Redis freezes. A publish already sent to it cannot be known: 504, never
/// 503. Once the hub knows Redis is unresponsive it refuses at once with 503,
/// and those are never published, not even when Redis runs again.
#[test]
fn a_publish_refused_with_503_is_never_published_later() {
    let redis = Redis::start();
    let node = Server::node(&redis, &[]);
    let mut sub = node.subscribe("topic=f");
    node.publish("topic=f&data=before");
    assert_eq!(sub.next_event().data, "before");
    redis.freeze();
    let started = Instant::now();
    let first = post(&node, "topic=f&data=first", "");
    let first_status = status_of(&first);
    assert!(matches!(first_status, 503 | 504), "{first}");
    assert!(started.elapsed() < Duration::from_secs(4), "answered within the command timeout");
    wait_unready(&node);
    let refused = post(&node, "topic=f&data=refused", "");
    assert_eq!(status_of(&refused), 503, "{refused}");
    assert!(header(&refused, "retry-after").is_some());
    redis.thaw();
    node.wait_ready();
    node.publish("topic=f&data=marker");
    let seen = until(&mut sub, "marker");
    assert!(!seen.iter().any(|d| d == "refused"), "a 503 was published: {seen:?}");
    if first_status == 503 {
        assert!(!seen.iter().any(|d| d == "first"), "a 503 was published: {seen:?}");
    }
}

/// A publish whose fate is unknown (504) retried with its `Idempotency-Key`,
/// on the same node and on another: delivered exactly once, every retry
/// answered with the first publish's ids.
#[test]
fn a_504_retried_with_its_idempotency_key_is_delivered_exactly_once() {
    let redis = Redis::start();
    let a = Server::node(&redis, &[]);
    let b = Server::node(&redis, &[]);
    let mut sub = b.subscribe("topic=x");
    let key = "Idempotency-Key: order-42-shipped\r\n";
    redis.freeze();
    let unknown = post(&a, "topic=x&data=once", key);
    assert_eq!(status_of(&unknown), 504, "{unknown}");
    assert!(body_of(&unknown).contains("unknown"), "{unknown}");
    redis.thaw();
    // Both nodes saw Redis freeze: each must see it back before it publishes.
    a.wait_ready();
    b.wait_ready();
    let retried = post(&a, "topic=x&data=once", key);
    assert_eq!(status_of(&retried), 200, "{retried}");
    let again = post(&b, "topic=x&data=once", key);
    assert_eq!(status_of(&again), 200, "{again}");
    assert_eq!(body_of(&again), body_of(&retried), "the ids of the one publish");
    assert_eq!(header(&again, "idempotent-replayed"), Some("true"));
    b.publish("topic=x&data=marker");
    let events = sub.next_events(2);
    assert_eq!(data(&events), ["once", "marker"]);
    assert_eq!(events[0].last_event_id, body_of(&retried).trim());
}

/// SIGTERM while a publish waits on a frozen Redis: the client gets an
/// answer (504: in doubt) before its connection closes, with a long grace
/// (the command times out) and with a grace shorter than that timeout.
#[test]
fn sigterm_answers_a_publish_waiting_on_redis() {
    let redis = Redis::start();
    for grace in ["5", "0.8"] {
        let mut node = Server::node(&redis, &["--shutdown-grace", grace]);
        redis.freeze();
        let mut stream = node.connect();
        stream.write_all(publish_request("topic=t&data=in-flight", "").as_bytes()).unwrap();
        node.wait_metric("ssehub_backplane_publishes_in_flight", |n| n == 1);
        common::signal(node.pid(), libc::SIGTERM);
        let answer = read_to_eof(&mut stream);
        assert_eq!(status_of(&answer), 504, "grace {grace}: {answer}");
        assert_eq!(node.wait_exit(), Some(0));
        redis.thaw();
    }
}

/// Publishes from many connections go to Redis without waiting for each
/// other's round trips: 16 publishers x 5 publishes through 50 ms of RTT
/// take about 5 round trips, not 80. Each publisher's order is kept, and a
/// batch stays one block of the stream.
#[test]
fn publishes_from_many_connections_pipeline_across_round_trips() {
    const PUBLISHERS: usize = 16;
    const EACH: usize = 5;
    let redis = Redis::start();
    let relay = Relay::start(redis.addr(), Duration::from_millis(25));
    let node = Server::node_at(&relay.redis_url(), &[]);
    let mut sub = node.subscribe("topic=rtt");
    let started = Instant::now();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let remote = node.remote();
            thread::spawn(move || {
                let mut stream = remote.connect();
                let mut pending = Vec::new();
                for i in 0..EACH {
                    let body = format!(r#"[{{"topic":"rtt","data":"{p}-{i}-a"}},{{"topic":"rtt","data":"{p}-{i}-b"}}]"#);
                    let request = format!(
                        "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    stream.write_all(request.as_bytes()).unwrap();
                    let response = read_response(&mut stream, &mut pending);
                    assert_eq!(status_of(&response), 200, "{response}");
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.join().unwrap();
    }
    let took = started.elapsed();
    let serial = Duration::from_millis(50) * (PUBLISHERS * EACH) as u32;
    assert!(
        took < serial / 2,
        "{took:?} for {} publishes over 50 ms RTT (one at a time: {serial:?})",
        PUBLISHERS * EACH
    );
    let events = sub.next_events(PUBLISHERS * EACH * 2);
    for pair in events.chunks(2) {
        let (a, b) = (pair[0].data.as_str(), pair[1].data.as_str());
        assert!(a.ends_with("-a") && b == format!("{}-b", &a[..a.len() - 2]), "a batch is one block: {a} {b}");
    }
    for p in 0..PUBLISHERS {
        let order: Vec<usize> = events
            .iter()
            .filter_map(|e| e.data.strip_suffix("-a")?.strip_prefix(&format!("{p}-"))?.parse().ok())
            .collect();
        assert_eq!(order, (0..EACH).collect::<Vec<_>>(), "publisher {p} in order");
    }
}

/// Redis comes back empty. A client resuming from an id of the old stream
/// gets `ssehub-gap` (`stream-reset`) on the node that lived through the
/// reset and on one started after it; every gap sent is counted.
#[test]
fn a_resume_across_a_stream_reset_gets_a_gap_on_every_node() {
    let redis = Redis::start();
    let a = Server::node(&redis, &[]);
    let mut live = a.subscribe("topic=z");
    for i in 0..3 {
        a.publish(&format!("topic=z&data=old{i}"));
    }
    let old = live.next_events(3);
    let last = old[2].last_event_id.clone();
    let (dir, port) = redis.kill();
    let _ = std::fs::remove_dir_all(dir);
    let fresh = Redis::start_in(common::temp_dir("reset"), Some(port), false);
    let notice = live.next_event();
    assert_eq!((notice.event_type.as_str(), notice.data.as_str()), ("ssehub-gap", r#"{"reason":"stream-reset"}"#));
    a.wait_ready();
    a.publish("topic=z&data=new");
    assert_eq!(live.next_event().data, "new");
    let resume = format!("Last-Event-ID: {last}\r\n");
    let mut back = a.subscribe_with("topic=z", &resume);
    let events = back.next_events(2);
    assert_eq!(events[0].event_type, "ssehub-gap", "{events:?}");
    assert_eq!(events[0].data, r#"{"reason":"stream-reset"}"#);
    assert_eq!(events[1].data, "new");
    assert_eq!(a.metric("ssehub_gaps_total"), 2, "the live notice and the resume's gap");
    let b = Server::node(&fresh, &[]);
    let mut there = b.subscribe_with("topic=z", &resume);
    let events = there.next_events(2);
    assert_eq!(
        (events[0].event_type.as_str(), events[0].data.as_str()),
        ("ssehub-gap", r#"{"reason":"stream-reset"}"#)
    );
    assert_eq!(events[1].data, "new");
    assert_eq!(b.metric("ssehub_gaps_total"), 1);
}

/// Idempotency keys live in Redis: a retry on another node publishes
/// nothing and gets the first ids; another body under the key is 409; after
/// `--idempotency-window` the key may be used again.
#[test]
fn idempotency_keys_hold_across_nodes_for_the_window() {
    let redis = Redis::start();
    let a = Server::node(&redis, &["--idempotency-window", "1"]);
    let b = Server::node(&redis, &["--idempotency-window", "1"]);
    let mut sub = a.subscribe("topic=i");
    let key = "Idempotency-Key: k-1\r\n";
    let first = post(&a, "topic=i&data=one", key);
    assert_eq!(status_of(&first), 200, "{first}");
    assert_eq!(header(&first, "idempotent-replayed"), None);
    let second = post(&b, "topic=i&data=one", key);
    assert_eq!((status_of(&second), body_of(&second)), (200, body_of(&first)));
    let conflict = post(&b, "topic=i&data=two", key);
    assert_eq!(status_of(&conflict), 409, "{conflict}");
    // Past the window the key is free again: poll (each try within the
    // window is answered from the key and publishes nothing).
    let deadline = Instant::now() + common::TIMEOUT;
    let later = loop {
        let again = post(&b, "topic=i&data=one", key);
        assert_eq!(status_of(&again), 200, "{again}");
        if body_of(&again) != body_of(&first) {
            break again;
        }
        assert!(Instant::now() < deadline, "the key never expired");
        thread::sleep(Duration::from_millis(50));
    };
    a.publish("topic=i&data=marker");
    let events = sub.next_events(3);
    assert_eq!(data(&events), ["one", "one", "marker"]);
    assert_eq!(events[1].last_event_id, body_of(&later).trim());
}
