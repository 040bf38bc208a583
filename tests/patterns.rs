//! Topic patterns on the wire: `*` is one non-empty segment, a final `**`
//! one or more; an event reaches a connection once however many of its
//! subscriptions match; resume through a pattern merges every matching
//! topic's history in id order, bounded like one topic.

mod common;

use common::{Server, Subscriber, body_of, status_of};

/// Reads events until the one whose data is `marker`; returns those before it.
fn until(sub: &mut Subscriber, marker: &str) -> Vec<(String, String)> {
    let mut got = Vec::new();
    loop {
        let event = sub.next_event();
        if event.data == marker {
            return got;
        }
        got.push((event.event_type, event.data));
    }
}

fn data(events: &[(String, String)]) -> Vec<&str> {
    events.iter().map(|(_, data)| data.as_str()).collect()
}

#[test]
fn patterns_match_whole_segments_and_deliver_each_event_once() {
    let server = Server::start(&[]);
    let mut orders = server.subscribe("topic=orders/*&topic=orders/1&topic=orders/**");
    let mut team = server.subscribe("topic=team/7/**&topic=a*b");
    for (topic, data) in [
        ("orders/1", "o1"),
        ("orders/1/items", "o1-items"),
        ("orders", "bare"),
        ("orders/", "empty-segment"),
        ("team/7", "team-bare"),
        ("team/7/chat", "team-chat"),
        ("team/7/a/b", "team-deep"),
        ("team/70/x", "other-team"),
        ("axb", "not-literal-star"),
        ("a*b", "literal-star"),
    ] {
        server.publish(&format!("topic={}&data={data}", topic.replace('*', "%2A")));
    }
    server.publish("topic=orders/1&topic=team/7/x&data=both");
    server.publish("topic=orders/2&topic=team/7/y&data=end");
    // orders/* and orders/** and orders/1 all match "o1": once. `orders/` has
    // an empty last segment: `*` does not match it, `**` does.
    assert_eq!(data(&until(&mut orders, "end")), ["o1", "o1-items", "empty-segment", "both"]);
    assert_eq!(data(&until(&mut team, "end")), ["team-chat", "team-deep", "literal-star", "both"]);
}

#[test]
fn patterns_are_for_subscribing_not_publishing() {
    let server = Server::start(&[]);
    for form in ["topic=orders/*&data=x", "topic=a&topic=team/7/**&data=x"] {
        let (status, body) = server.post("application/x-www-form-urlencoded", form);
        assert_eq!(status, 400, "{form}");
        assert!(body.contains("pattern"), "{body}");
    }
    let response = server.raw(b"GET /events?topic=a/**/b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(status_of(&response), 400);
    assert!(body_of(&response).contains("**"), "{response}");
}

#[test]
fn resume_through_a_pattern_merges_matching_topics_in_order_with_the_gap_rule() {
    let server = Server::start(&["--history", "3"]);
    let first = server.publish("topic=room/1&data=r1")[0].clone();
    for (topic, data) in [("room/2", "r2"), ("lobby", "l"), ("room/1", "r3"), ("room/3/x", "deep")] {
        server.publish(&format!("topic={topic}&data={data}"));
    }
    let last = server.publish("topic=room/3&data=r4")[0].clone();

    // Newer than `first` under room/*: r2, r3, r4; exactly --history, nothing missed.
    let mut sub = server.subscribe_with("topic=room/*", &format!("Last-Event-ID: {first}\r\n"));
    server.publish("topic=room/9&data=live");
    assert_eq!(
        until(&mut sub, "live"),
        [("message".into(), "r2".into()), ("message".into(), "r3".into()), ("message".into(), "r4".into())]
    );

    // From before all of them: four match, the pattern replays the newest
    // three (r3, r4, live) and says the client may have missed some.
    let mut sub = server.subscribe_with("topic=room/*&topic=lobby", "Last-Event-ID: 1-0\r\n");
    server.publish("topic=lobby&data=live2");
    let got = until(&mut sub, "live2");
    assert_eq!(got[0].0, "ssehub-gap", "{got:?}");
    assert_eq!(data(&got[1..]), ["l", "r3", "r4", "live"], "merged with the topic, in id order");

    // Caught up: nothing replayed, no gap.
    let mut sub = server.subscribe_with("topic=room/*", &format!("Last-Event-ID: {last}\r\n"));
    server.publish("topic=room/1&data=live3");
    let got = until(&mut sub, "live3");
    assert_eq!(data(&got), ["live"], "only what came after {last}");
}

#[test]
fn pattern_subscribers_on_every_worker_get_every_event() {
    let server = Server::start(&["--workers", "2"]);
    let mut subs: Vec<Subscriber> = (0..16).map(|_| server.subscribe("topic=news/*")).collect();
    for i in 0..5 {
        server.publish(&format!("topic=news/{i}&data={i}"));
    }
    server.publish("topic=news/x&data=end");
    for sub in &mut subs {
        assert_eq!(data(&until(sub, "end")), ["0", "1", "2", "3", "4"]);
    }
}
