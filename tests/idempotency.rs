//! `Idempotency-Key` on `POST /publish`, standalone: a retry within the
//! window publishes nothing and gets the first ids; the key with another
//! body is 409; malformed keys are 400; the store is bounded in bytes.
//! (Across cluster nodes: `tests/cluster_faults.rs`.)

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{Server, body_of, header, publish_request, status_of};

fn post(server: &Server, body: &str, headers: &str) -> String {
    server.raw(publish_request(body, &format!("Connection: close\r\n{headers}")).as_bytes())
}

fn json(server: &Server, body: &str, key: &str) -> String {
    post(server, body, &format!("Content-Type: application/json\r\nIdempotency-Key: {key}\r\n"))
}

#[test]
fn a_retry_with_the_same_key_publishes_nothing_and_gets_the_first_ids() {
    let server = Server::start(&[]);
    let mut sub = server.subscribe("topic=a");
    let batch = r#"[{"topic":"a","data":"1"},{"topic":"a","data":"2"}]"#;
    let first = json(&server, batch, "batch-7");
    assert_eq!(status_of(&first), 200, "{first}");
    assert_eq!(body_of(&first).lines().count(), 2);
    for _ in 0..3 {
        let again = json(&server, batch, "batch-7");
        assert_eq!((status_of(&again), body_of(&again)), (200, body_of(&first)));
        assert_eq!(header(&again, "idempotent-replayed"), Some("true"));
    }
    // Another key, another publish; the same key with another body is a conflict.
    let other = json(&server, batch, "batch-8");
    assert_ne!(body_of(&other), body_of(&first));
    let conflict = json(&server, r#"{"topic":"a","data":"changed"}"#, "batch-7");
    assert_eq!(status_of(&conflict), 409, "{conflict}");
    assert!(body_of(&conflict).contains("Idempotency-Key"), "{conflict}");
    server.publish("topic=a&data=marker");
    let events = sub.next_events(5);
    let got: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(got, ["1", "2", "1", "2", "marker"]);
    assert_eq!(server.metric("ssehub_events_published_total"), 5);
    assert_eq!(server.metric("ssehub_idempotent_replays_total"), 3);
    assert_eq!(server.metric("ssehub_requests_rejected_total{status=\"409\"}"), 1);
}

#[test]
fn a_key_is_free_again_after_the_window() {
    let server = Server::start(&["--idempotency-window", "0.5"]);
    let first = post(&server, "topic=w&data=x", "Idempotency-Key: w\r\n");
    assert_eq!(status_of(&first), 200);
    let deadline = Instant::now() + common::TIMEOUT;
    loop {
        let again = post(&server, "topic=w&data=x", "Idempotency-Key: w\r\n");
        assert_eq!(status_of(&again), 200, "{again}");
        if body_of(&again) != body_of(&first) {
            assert_eq!(header(&again, "idempotent-replayed"), None);
            break;
        }
        assert!(Instant::now() < deadline, "the key never expired");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn malformed_keys_are_refused_and_nothing_is_published() {
    let server = Server::start(&[]);
    let long = "k".repeat(129);
    let max = "k".repeat(128);
    for key in ["", " ", "with space", "tab\there", long.as_str(), "caf\u{e9}"] {
        let response = post(&server, "topic=m&data=x", &format!("Idempotency-Key: {key}\r\n"));
        assert_eq!(status_of(&response), 400, "{key:?}: {response}");
    }
    let twice = post(&server, "topic=m&data=x", "Idempotency-Key: a\r\nIdempotency-Key: b\r\n");
    assert_eq!(status_of(&twice), 400, "{twice}");
    assert_eq!(server.metric("ssehub_events_published_total"), 0);
    let response = post(&server, "topic=m&data=x", &format!("Idempotency-Key: {max}\r\n"));
    assert_eq!(status_of(&response), 200, "128 visible characters are a key");
    let response = post(&server, "topic=m&data=x", "Idempotency-Key: !~\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}\r\n");
    assert_eq!(status_of(&response), 200, "{response}");
}

#[test]
fn the_key_store_is_bounded_in_bytes_and_keeps_the_newest() {
    const BOUND: u64 = 16 * 1024;
    let server = Server::start(&["--idempotency-max-bytes", &BOUND.to_string()]);
    let mut stream = server.connect();
    let mut pending = Vec::new();
    let mut last = String::new();
    for i in 0..2000 {
        std::io::Write::write_all(
            &mut stream,
            publish_request(&format!("topic=q&data={i}"), &format!("Idempotency-Key: key-{i}\r\n")).as_bytes(),
        )
        .unwrap();
        last = common::read_response(&mut stream, &mut pending);
        assert_eq!(status_of(&last), 200, "{last}");
    }
    let bytes = server.metric("ssehub_idempotency_bytes");
    assert!(bytes > 0 && bytes <= BOUND, "{bytes} bytes held, bound {BOUND}");
    assert!(server.metric("ssehub_idempotency_evicted_total") > 0);
    let keys = server.metric("ssehub_idempotency_keys");
    assert!(keys > 10 && keys < 2000, "{keys} keys");
    let again = post(&server, "topic=q&data=1999", "Idempotency-Key: key-1999\r\n");
    assert_eq!((status_of(&again), body_of(&again)), (200, body_of(&last)), "the newest key is kept");
}
