//! History's bounds on the real binary: `--history-ttl` expires events and
//! resumes then get `ssehub-gap` (`expired`); `--history-memory` bounds what
//! history holds (and the process's RSS) however many topics a publisher
//! uses, evicting the oldest first while other topics keep exact gaps; a
//! topic with no subscriber and nothing retained leaves nothing behind.
//! Waits are on `/metrics` figures, polled against a deadline (`Server::wait_metric`).

mod common;

use common::Server;

/// The server's resident set, from /proc.
fn rss_bytes(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// Publishes one JSON batch: one event per topic, `data` of `size` bytes.
fn publish_batch(server: &Server, topics: impl Iterator<Item = String>, size: usize) -> Vec<String> {
    let data = "x".repeat(size);
    let items: Vec<String> = topics.map(|t| format!(r#"{{"topic":"{t}","data":"{data}"}}"#)).collect();
    let (status, body) = server.post("application/json", &format!("[{}]", items.join(",")));
    assert_eq!(status, 200, "{body}");
    body.lines().map(str::to_owned).collect()
}

fn resume(server: &Server, topic: &str, after: &str) -> common::Subscriber {
    let sub = server.subscribe_with(&format!("topic={topic}"), &format!("Last-Event-ID: {after}\r\n"));
    assert_eq!(sub.status(), 200);
    sub
}

#[test]
fn expired_events_are_not_replayed_and_resumes_that_needed_them_get_an_expired_gap() {
    let server = Server::start(&["--history-ttl", "1"]);
    let before = server.publish("topic=other&data=first");
    let old = server.publish("topic=t&data=old");
    assert_eq!(server.metric("ssehub_history_events"), 2);
    // Nothing is published meanwhile: the sweep alone gives it back.
    server.wait_metric("ssehub_history_events", |n| n == 0);
    assert_eq!(server.metric("ssehub_history_topics"), 0);
    assert_eq!(server.metric("ssehub_history_dropped_total{reason=\"expired\"}"), 2);

    let mut missed = resume(&server, "t", &before[0]);
    let mut saw_it = resume(&server, "t", &old[0]);
    server.publish("topic=t&data=new");
    let events = missed.next_events(2);
    assert_eq!((events[0].event_type.as_str(), events[0].data.as_str()), ("ssehub-gap", r#"{"reason":"expired"}"#));
    assert_eq!(events[1].data, "new");
    assert_eq!(saw_it.next_event().data, "new", "it had everything: no gap");
}

#[test]
fn history_memory_bounds_what_a_publisher_of_many_topics_can_make_the_server_hold() {
    const BUDGET: u64 = 4 << 20;
    let server = Server::start(&["--history-memory", "4MiB", "--max-body", "1048576", "--history-ttl", "0"]);
    let first = server.publish("topic=first&data=x");
    let quiet = server.publish("topic=quiet&data=q");
    let baseline = rss_bytes(&server);
    // Distinct topics of 200-byte events until more than 4 MiB would be
    // held, so the oldest (`first`, `quiet`, then the first users) are evicted.
    let mut last = Vec::new();
    let mut batches = 0;
    while server.metric("ssehub_history_dropped_total{reason=\"evicted\"}") < 2_000 {
        last = publish_batch(&server, (0..500).map(|i| format!("user/{}", batches * 500 + i)), 200);
        batches += 1;
        assert!(server.metric("ssehub_history_bytes") <= BUDGET);
        assert!(batches < 100, "nothing evicted after {batches} batches");
    }
    let retained = server.metric("ssehub_history_events");
    assert!(retained > 1_000, "the budget is used, not wasted: {retained} retained");

    // Gaps stay exact: `quiet` saw its one event evicted by other topics'
    // events; a client that had it needs nothing, one from before it does.
    let mut had_it = resume(&server, "quiet", &quiet[0]);
    let mut before_it = resume(&server, "quiet", &first[0]);
    // The newest topic still has its event.
    let newest = format!("user/{}", batches * 500 - 1);
    let mut newest_sub = resume(&server, &newest, &quiet[0]);
    server.publish("topic=quiet&data=live");
    server.publish(&format!("topic={newest}&data=live"));
    assert_eq!(had_it.next_event().data, "live");
    let events = before_it.next_events(2);
    assert_eq!((events[0].event_type.as_str(), events[0].data.as_str()), ("ssehub-gap", r#"{"reason":"evicted"}"#));
    assert_eq!(events[1].data, "live");
    let events = newest_sub.next_events(2);
    assert_eq!(events[0].last_event_id, last[last.len() - 1]);
    assert_eq!(events[1].data, "live");

    // A hundred thousand topics more: memory stays bounded.
    for batch in batches..batches + 200 {
        publish_batch(&server, (0..500).map(|i| format!("user/{}", batch * 500 + i)), 200);
        assert!(server.metric("ssehub_history_bytes") <= BUDGET);
    }
    let rss = rss_bytes(&server);
    assert!(rss <= baseline + BUDGET + (10 << 20), "RSS {rss} B from a baseline of {baseline} B");
}

#[test]
fn a_topic_without_subscribers_or_history_leaves_nothing_behind() {
    let server = Server::start(&["--history", "0", "--workers", "2"]);
    let subs: Vec<_> = (0..20)
        .map(|c| {
            let query: Vec<String> = (0..50).map(|t| format!("topic=room/{c}/{t}")).collect();
            let sub = server.subscribe(&query.join("&"));
            assert_eq!(sub.status(), 200);
            sub
        })
        .collect();
    assert_eq!(server.metric("ssehub_topics_subscribed"), 1000);
    server.publish("topic=room/0/0&data=x");
    assert_eq!(server.metric("ssehub_history_events"), 0, "--history 0 retains nothing");
    drop(subs);
    server.wait_metric("ssehub_topics_subscribed", |n| n == 0);
    assert_eq!(server.metric("ssehub_history_topics"), 0);
}
