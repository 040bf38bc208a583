//! The publish path at its edges, standalone: a fast pipelining publisher
//! is slowed, not refused; every answer for an applied request reaches the
//! client before the close, which is never a reset; half-closed subscribers
//! go at once; SIGTERM answers what was already sent.

mod common;

use std::io::{ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{Server, publish_request, read_response, read_to_eof, signal, status_of};
use ssehub_protocol::EventId;

/// `n` keep-alive publishes to topic `topic`, data `0`..`n`.
fn pipeline(topic: &str, n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| publish_request(&format!("topic={topic}&data={i}"), "").into_bytes()).collect()
}

/// Reads `n` responses; each must be a 200 with one id, ids strictly increasing.
fn expect_published(stream: &mut TcpStream, pending: &mut Vec<u8>, n: usize) -> Vec<EventId> {
    let mut ids: Vec<EventId> = Vec::with_capacity(n);
    for i in 0..n {
        let response = read_response(stream, pending);
        assert_eq!(status_of(&response), 200, "answer {i} of {n}: {response}");
        let id = EventId::parse(common::body_of(&response).trim().as_bytes()).expect("an id");
        assert!(ids.last().is_none_or(|&last| last < id), "ids increase");
        ids.push(id);
    }
    ids
}

/// 40,000 publishes in one pipeline, no subscriber at all: one loop turn
/// reads more requests than the event queues hold. The hub must slow the
/// publisher down (stop reading) instead of refusing with 503.
fn forty_thousand_pipelined(read_while_writing: bool) {
    const N: usize = 40_000;
    let server = Server::start(&[]);
    let mut stream = server.connect();
    let requests = pipeline("p", N);
    let mut written = 0;
    if !read_while_writing {
        // Write without reading until the socket takes no more: answers pile
        // up unread and the hub has to stop reading this publisher.
        stream.set_nonblocking(true).unwrap();
        loop {
            match stream.write(&requests[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
            if written == requests.len() {
                break;
            }
        }
        stream.set_nonblocking(false).unwrap();
    }
    let mut writer = stream.try_clone().unwrap();
    let rest = requests[written..].to_vec();
    let writing = thread::spawn(move || writer.write_all(&rest).expect("write the pipeline"));
    let mut pending = Vec::new();
    let ids = expect_published(&mut stream, &mut pending, N);
    writing.join().unwrap();
    assert_eq!(ids.len(), N);
    assert_eq!(server.metric("ssehub_events_published_total"), N as u64);
    assert_eq!(server.metric("ssehub_requests_rejected_total{status=\"503\"}"), 0);
}

#[test]
fn a_pipelining_publisher_read_concurrently_is_slowed_not_refused() {
    forty_thousand_pipelined(true);
}

#[test]
fn a_pipelining_publisher_that_does_not_read_is_slowed_not_refused() {
    forty_thousand_pipelined(false);
}

/// 3,000 publishes, then a malformed request: every publish is answered,
/// then the 400, then a clean end of stream, never a reset. Whether the
/// client writes it all before reading, half-closes after it, or keeps
/// sending megabytes of junk after the bad request while reading.
#[test]
fn after_a_bad_request_in_a_long_pipeline_every_answer_arrives_then_the_400() {
    const N: usize = 3000;
    let server = Server::start(&[]);
    let bad = b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 5x\r\n\r\n";
    for tail in ["written-first", "half-close", "junk"] {
        let mut stream = server.connect();
        // A pipeline that does not fit in the socket buffers fails here instead of hanging.
        stream.set_write_timeout(Some(common::TIMEOUT)).unwrap();
        let mut requests = pipeline("b", N);
        requests.extend_from_slice(bad);
        let mut writer = stream.try_clone().unwrap();
        let writing = thread::spawn(move || {
            writer.write_all(&requests).expect("write the pipeline");
            match tail {
                "half-close" => writer.shutdown(Shutdown::Write).unwrap(),
                // What a client that does not wait for answers keeps sending:
                // never parsed, discarded while the hub lingers.
                "junk" => drop(writer.write_all(&vec![b'x'; 4 << 20])),
                _ => {}
            }
        });
        if tail != "junk" {
            writing.join().unwrap(); // everything is sent before the first answer is read
        }
        let mut pending = Vec::new();
        expect_published(&mut stream, &mut pending, N);
        let refusal = read_response(&mut stream, &mut pending);
        assert_eq!(status_of(&refusal), 400, "{tail}: {refusal}");
        assert!(refusal.contains("Connection: close"), "{refusal}");
        pending.extend_from_slice(read_to_eof(&mut stream).as_bytes());
        assert!(pending.is_empty(), "{tail}: nothing after the 400: {:?}", String::from_utf8_lossy(&pending));
    }
    assert_eq!(server.metric("ssehub_events_published_total"), 3 * N as u64);
}

/// Clients that send `GET /events` and shut their write side at once: the
/// FIN often arrives with the request. Each must be closed right away, with
/// heartbeats off (nothing would ever write to them) and on.
fn half_closed_subscribers_are_closed_at_once(heartbeat: &str) {
    const CLIENTS: usize = 1000;
    let server = Server::start(&["--heartbeat", heartbeat]);
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut stream = server.connect();
        stream.write_all(b"GET /events?topic=h HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        clients.push(stream);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    for (i, mut stream) in clients.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        stream.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match std::io::Read::read(&mut stream, &mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => panic!("client {i} of {CLIENTS} (heartbeat {heartbeat}) not closed within 2 s: {e}"),
            }
        }
    }
    server.wait_metric("ssehub_connections{kind=\"subscriber\"}", |n| n == 0);
}

#[test]
fn half_closed_subscribers_are_closed_at_once_without_heartbeats() {
    half_closed_subscribers_are_closed_at_once("0");
}

#[test]
fn half_closed_subscribers_are_closed_at_once_with_heartbeats() {
    half_closed_subscribers_are_closed_at_once("15");
}

/// Publishes that are already in the hub's sockets when SIGTERM arrives
/// (sent while it was stopped: some on connections not yet accepted, some
/// on idle keep-alive connections) are answered, and no connection is reset.
#[test]
fn sigterm_answers_publishes_already_sent_and_resets_nothing() {
    let mut server = Server::start(&["--workers", "2"]);
    let mut kept: Vec<TcpStream> = (0..20)
        .map(|i| {
            let mut stream = server.connect();
            stream.write_all(publish_request(&format!("topic=s&data=k{i}"), "").as_bytes()).unwrap();
            let mut pending = Vec::new();
            assert_eq!(status_of(&read_response(&mut stream, &mut pending)), 200);
            stream
        })
        .collect();
    signal(server.pid(), libc::SIGSTOP);
    for (i, stream) in kept.iter_mut().enumerate() {
        stream.write_all(publish_request(&format!("topic=s&data=again{i}"), "").as_bytes()).unwrap();
    }
    let fresh: Vec<TcpStream> = (0..50)
        .map(|i| {
            let mut stream = server.connect(); // the kernel accepts for the stopped hub
            stream.write_all(publish_request(&format!("topic=s&data=new{i}"), "").as_bytes()).unwrap();
            stream
        })
        .collect();
    signal(server.pid(), libc::SIGTERM);
    signal(server.pid(), libc::SIGCONT);
    let mut answered = 0;
    for mut stream in kept.into_iter().chain(fresh) {
        let text = read_to_eof(&mut stream);
        assert_eq!(status_of(&text), 200, "{text}");
        answered += 1;
    }
    assert_eq!(answered, 70);
    assert_eq!(server.wait_exit(), Some(0));
}

/// A request still arriving when SIGTERM comes is read to its end and
/// answered, and so is the one pipelined behind it in the same bytes; then
/// the connection closes cleanly.
#[test]
fn sigterm_finishes_a_request_in_progress_and_what_came_with_it() {
    let mut server = Server::start(&["--workers", "1"]);
    let mut stream = server.connect();
    let first = publish_request("topic=p&data=first", "");
    let (head, rest) = first.split_at(first.len() / 2);
    stream.write_all(head.as_bytes()).unwrap();
    server.wait_metric("ssehub_connections{kind=\"http\"}", |n| n == 2); // ours and the scrape
    signal(server.pid(), libc::SIGTERM);
    // The listener closes when shutdown begins.
    let deadline = Instant::now() + common::TIMEOUT;
    while TcpStream::connect(server.addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting");
        thread::sleep(Duration::from_millis(5));
    }
    let second = publish_request("topic=p&data=second", "");
    stream.write_all(format!("{rest}{second}").as_bytes()).unwrap();
    let text = read_to_eof(&mut stream);
    let answers: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 2, "both answered: {text}");
    assert!(answers.iter().all(|a| a.starts_with("200 ")), "{text}");
    assert_eq!(server.wait_exit(), Some(0));
}
