//! Subscribing: the response, delivery and filtering, order, multi-line data,
//! exactly-once across topics, resume with Last-Event-ID, heartbeats, CORS.

mod common;

use common::{Server, header};

#[test]
fn the_stream_head_is_an_event_stream_with_a_retry_line() {
    let server = Server::start(&["--retry", "1234"]);
    let mut sub = server.subscribe("topic=news");
    assert_eq!(sub.status(), 200);
    assert_eq!(header(&sub.head, "content-type"), Some("text/event-stream"));
    assert_eq!(header(&sub.head, "cache-control"), Some("no-cache"));
    assert_eq!(header(&sub.head, "x-accel-buffering"), Some("no"));
    assert_eq!(header(&sub.head, "access-control-allow-origin"), None);
    server.publish("topic=news&data=first");
    assert_eq!(sub.next_event().data, "first");
    assert_eq!(sub.reconnection_time(), Some(1234));
}

#[test]
fn http11_streams_are_chunked_and_open_without_dispatching_anything() {
    let server = Server::start(&["--retry", "1234"]);
    let mut sub = server.subscribe("topic=news");
    assert_eq!(header(&sub.head, "transfer-encoding"), Some("chunked"));
    assert_eq!(header(&sub.head, "content-length"), None);
    server.publish("topic=news&data=first");
    assert_eq!(sub.next_event().data, "first");
    // The opening is a lone retry line: no blank line before the first
    // event, so a client that dispatches every blank line (fetch-event-source)
    // sees no empty message.
    let body = String::from_utf8_lossy(&sub.body_start).into_owned();
    let (opening, _) = body.split_once("id: ").expect("an id line");
    assert_eq!(opening, "retry: 1234\n");
}

/// A fresh stream names its position; resuming from it misses nothing that
/// was published meanwhile, whether or not anything was published before.
#[test]
fn a_fresh_stream_names_its_position_and_resuming_from_it_misses_nothing() {
    let server = Server::start(&[]);
    for round in ["before any event", "after events"] {
        let sub = server.subscribe("topic=p");
        let position = header(&sub.head, "ssehub-position").expect("a position header").to_owned();
        drop(sub);
        let ids = server.publish("topic=p&data=while+away");
        let mut back = server.subscribe_with("topic=p", &format!("Last-Event-ID: {position}\r\n"));
        let event = back.next_event();
        assert_eq!((event.event_type.as_str(), event.data.as_str()), ("message", "while away"), "{round}");
        assert_eq!(event.last_event_id, ids[0], "{round}");
        // A resume with nothing to replay names where it stands, too; one
        // with events or a gap still to come does not.
        assert!(header(&back.head, "ssehub-position").is_none(), "{round}: a replay follows");
    }
    let sub = server.subscribe_with("topic=p", "Last-Event-ID: 1-0\r\n");
    assert!(header(&sub.head, "ssehub-position").is_none(), "a gap follows");
}

#[test]
fn http10_streams_stay_close_delimited() {
    let server = Server::start(&[]);
    let mut sub = server.remote().subscribe_http10("topic=news", "");
    assert_eq!(sub.status(), 200);
    assert_eq!(header(&sub.head, "transfer-encoding"), None);
    server.publish("topic=news&data=plain");
    assert_eq!(sub.next_event().data, "plain");
    assert!(sub.body_start.starts_with(b"retry: "), "{:?}", String::from_utf8_lossy(&sub.body_start));
}

#[test]
fn a_second_server_on_a_port_in_use_refuses_to_start() {
    let server = Server::start(&[]);
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_ssehub"))
        .args(["--listen", &server.addr.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run a second ssehub");
    // It either says it listens or exits (closing stdout): no waiting on time.
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(second.stdout.take().unwrap()), &mut line).unwrap();
    if !line.is_empty() {
        let _ = second.kill();
    }
    let output = second.wait_with_output().expect("second ssehub");
    assert_eq!(line, "", "the second server must not start");
    assert!(!output.status.success(), "it exits non-zero");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("address in use"), "{stderr}");
    // The first one still gets every connection.
    let mut sub = server.subscribe("topic=t");
    server.publish("topic=t&data=still-here");
    assert_eq!(sub.next_event().data, "still-here");
}

#[test]
fn events_reach_only_subscribers_of_their_topics_in_publish_order() {
    let server = Server::start(&[]);
    let mut news = server.subscribe("topic=news");
    let mut both = server.subscribe("topic=news&topic=alerts");
    let mut alerts = server.subscribe("topic=alerts");
    let mut ids = Vec::new();
    for i in 0..50 {
        let topic = if i % 3 == 0 { "alerts" } else { "news" };
        ids.extend(server.publish(&format!("topic={topic}&data={topic}-{i}")));
    }
    let news_events = news.next_events(33);
    let alert_events = alerts.next_events(17);
    let both_events = both.next_events(50);
    assert!(news_events.iter().all(|e| e.data.starts_with("news-")));
    assert!(alert_events.iter().all(|e| e.data.starts_with("alerts-")));
    let both_ids: Vec<&str> = both_events.iter().map(|e| e.last_event_id.as_str()).collect();
    assert_eq!(both_ids, ids, "every event, once, in publish order");
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| {
        let (ms, seq) = id.split_once('-').unwrap();
        (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
    });
    assert_eq!(sorted, ids, "ids increase");
}

#[test]
fn an_event_for_several_topics_arrives_once_per_connection() {
    let server = Server::start(&[]);
    let mut sub = server.subscribe("topic=a&topic=b&topic=c");
    let (status, _) = server.post("application/json", r#"{"topic":["a","b","c"],"data":"once"}"#);
    assert_eq!(status, 200);
    server.publish("topic=c&data=marker");
    assert_eq!(sub.next_event().data, "once");
    assert_eq!(sub.next_event().data, "marker", "no duplicate of the multi-topic event");
}

#[test]
fn multi_line_data_and_event_types_survive_the_trip() {
    let server = Server::start(&[]);
    let mut sub = server.subscribe("topic=t");
    server.publish("topic=t&data=one%0Atwo%0D%0Athree%0Dfour&event=update");
    server.publish("topic=t&data=&event=");
    let event = sub.next_event();
    assert_eq!(event.data, "one\ntwo\nthree\nfour");
    assert_eq!(event.event_type, "update");
    let event = sub.next_event();
    assert_eq!((event.data.as_str(), event.event_type.as_str()), ("", "message"));
}

#[test]
fn publisher_input_cannot_inject_fields_or_events() {
    let server = Server::start(&[]);
    let mut sub = server.subscribe("topic=t");
    let evil = "x%0Aid: 999%0A%0Adata: injected%0Aevent: evil%0D%0D";
    let ids = server.publish(&format!("topic=t&data={evil}"));
    let (status, _) = server.post("application/x-www-form-urlencoded", "topic=t&data=x&event=a%0Adata:%20y");
    assert_eq!(status, 400);
    let (status, _) = server.post("application/json", r#"{"topic":"t","data":"x","event":"a\u0000b"}"#);
    assert_eq!(status, 400);
    server.publish("topic=t&data=marker");
    let event = sub.next_event();
    assert_eq!(event.data, "x\nid: 999\n\ndata: injected\nevent: evil\n\n");
    assert_eq!(event.last_event_id, ids[0]);
    assert_eq!(event.event_type, "message");
    assert_eq!(sub.next_event().data, "marker");
}

#[test]
fn topics_are_decoded_as_browsers_encode_them() {
    let server = Server::start(&[]);
    let mut sub = server.subscribe("topic=caf%C3%A9+au+lait&topic=a%2Bb");
    server.publish("topic=caf%C3%A9%20au%20lait&data=1");
    server.publish("topic=a%2Bb&data=2");
    server.publish("topic=a+b&data=other");
    server.publish("topic=a%2Bb&data=3");
    let got: Vec<String> = sub.next_events(3).into_iter().map(|e| e.data).collect();
    assert_eq!(got, ["1", "2", "3"]);
}

#[test]
fn resume_replays_newer_events_in_order_then_goes_live() {
    let server = Server::start(&[]);
    let mut ids = Vec::new();
    for i in 0..6 {
        let topic = ["a", "b", "c"][i % 3];
        ids.extend(server.publish(&format!("topic={topic}&data={i}")));
    }
    // Header form: a and b only, after the second event.
    let mut sub = server.subscribe_with("topic=a&topic=b", &format!("Last-Event-ID: {}\r\n", ids[1]));
    server.publish("topic=a&data=live");
    let got: Vec<String> = sub.next_events(3).into_iter().map(|e| e.data).collect();
    assert_eq!(got, ["3", "4", "live"], "events 3 (a) and 4 (b), not 5 (c)");
    // Query form, for clients that cannot set headers.
    let mut sub = server.subscribe(&format!("topic=c&lastEventId={}", ids[2]));
    server.publish("topic=c&data=live-c");
    let got: Vec<String> = sub.next_events(2).into_iter().map(|e| e.data).collect();
    assert_eq!(got, ["5", "live-c"]);
    // The header wins over the query parameter.
    let mut sub =
        server.subscribe_with(&format!("topic=c&lastEventId={}", ids[0]), &format!("Last-Event-ID: {}\r\n", ids[5]));
    server.publish("topic=c&data=only-this");
    assert_eq!(sub.next_event().data, "live-c");
    assert_eq!(sub.next_event().data, "only-this");
}

#[test]
fn resume_sends_a_gap_event_when_events_may_be_missing() {
    let server = Server::start(&["--history", "3"]);
    // (Last-Event-ID, gap expected, events replayed); "#k" stands for the id of event k.
    let cases: [(&str, bool, &[&str]); 5] = [
        ("#0", true, &["2", "3", "4"]),  // 1 was evicted and is newer than the id
        ("#1", false, &["2", "3", "4"]), // saw the newest evicted event: nothing missed
        ("#3", false, &["4"]),
        ("garbage", true, &["2", "3", "4"]),
        ("1-0", true, &["2", "3", "4"]), // before this process started
    ];
    for (case, (last_id, gap, want)) in cases.into_iter().enumerate() {
        let topic = format!("t{case}");
        let ids: Vec<String> = (0..5).flat_map(|i| server.publish(&format!("topic={topic}&data={i}"))).collect();
        let last_id = match last_id.strip_prefix('#') {
            Some(k) => ids[k.parse::<usize>().unwrap()].clone(),
            None => last_id.to_string(),
        };
        let mut sub = server.subscribe_with(&format!("topic={topic}"), &format!("Last-Event-ID: {last_id}\r\n"));
        server.publish(&format!("topic={topic}&data=live"));
        let mut got = Vec::new();
        loop {
            let event = sub.next_event();
            if event.data == "live" {
                break;
            }
            got.push(event);
        }
        let saw_gap = got.first().is_some_and(|e| e.event_type == "ssehub-gap");
        assert_eq!(saw_gap, gap, "case {case} ({last_id}): {got:?}");
        if saw_gap {
            assert!(!got[0].data.is_empty(), "the gap event carries data so EventSource dispatches it");
            assert_eq!(got[0].last_event_id, "", "the gap event carries no id");
        }
        let replayed: Vec<&str> = got.iter().skip(usize::from(saw_gap)).map(|e| e.data.as_str()).collect();
        assert_eq!(replayed, want, "case {case} ({last_id})");
        let replayed_ids: Vec<&str> = got.iter().skip(usize::from(saw_gap)).map(|e| e.last_event_id.as_str()).collect();
        let want_ids: Vec<&str> = want.iter().map(|d| ids[d.parse::<usize>().unwrap()].as_str()).collect();
        assert_eq!(replayed_ids, want_ids);
    }
}

#[test]
fn replay_is_bounded_by_history_whatever_the_id() {
    let server = Server::start(&["--history", "4"]);
    for i in 0..20 {
        server.publish(&format!("topic=a&data=a{i}"));
        server.publish(&format!("topic=b&data=b{i}"));
    }
    let mut sub = server.subscribe_with("topic=a&topic=b", "Last-Event-ID: 0-0\r\n");
    server.publish("topic=a&data=live");
    let got: Vec<String> = sub.next_events(10).into_iter().map(|e| e.data).collect();
    assert_eq!(got[0], "{\"reason\":\"before-start\"}");
    assert_eq!(&got[1..], ["a16", "b16", "a17", "b17", "a18", "b18", "a19", "b19", "live"]);
}

#[test]
fn heartbeats_arrive_every_interval() {
    let server = Server::start(&["--heartbeat", "0.2"]);
    let mut sub = server.subscribe("topic=t");
    let start = std::time::Instant::now();
    sub.wait_comments(3);
    let elapsed = start.elapsed();
    assert!(elapsed >= std::time::Duration::from_millis(550), "3 heartbeats came too fast: {elapsed:?}");
    // Events still flow between heartbeats.
    server.publish("topic=t&data=x");
    assert_eq!(sub.next_event().data, "x");
}

#[test]
fn cors_origins_are_answered_on_streams_and_publishes() {
    let server = Server::start(&["--cors-origin", "https://app.example", "--cors-origin", "https://other.example"]);
    let sub = server.subscribe_with("topic=t", "Origin: https://app.example\r\n");
    assert_eq!(header(&sub.head, "access-control-allow-origin"), Some("https://app.example"));
    let sub = server.subscribe_with("topic=t", "Origin: https://evil.example\r\n");
    assert_eq!(header(&sub.head, "access-control-allow-origin"), None);

    let preflight = server.raw(
        b"OPTIONS /publish HTTP/1.1\r\nHost: t\r\nOrigin: https://other.example\r\n\
          Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\n\
          Connection: close\r\n\r\n",
    );
    assert_eq!(common::status_of(&preflight), 204);
    assert_eq!(header(&preflight, "access-control-allow-origin"), Some("https://other.example"));
    let allowed = header(&preflight, "access-control-allow-headers").unwrap().to_ascii_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"), "{allowed}");
    assert!(header(&preflight, "access-control-allow-methods").unwrap().contains("POST"));

    let response = server.raw(
        b"POST /publish HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example\r\nContent-Length: 14\r\n\
          Connection: close\r\n\r\ntopic=t&data=x",
    );
    assert_eq!(common::status_of(&response), 200);
    assert_eq!(header(&response, "access-control-allow-origin"), Some("https://app.example"));

    let any = Server::start(&["--cors-origin", "*"]);
    let sub = any.subscribe_with("topic=t", "Origin: https://whoever.example\r\n");
    assert_eq!(header(&sub.head, "access-control-allow-origin"), Some("*"));
}

#[test]
fn subscribe_queries_are_validated() {
    let server = Server::start(&[]);
    let many: Vec<String> = (0..65).map(|i| format!("topic=t{i}")).collect();
    let long = format!("topic={}", "x".repeat(257));
    for query in ["", "x=1", "topic=", "topic=a%0Ab", "topic=%zz", "topic=%ff", &long, &many.join("&")] {
        let response = server.raw(format!("GET /events?{query} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        assert_eq!(common::status_of(&response), 400, "{query}: {response}");
    }
    let sub = server.subscribe(&many[..64].join("&"));
    assert_eq!(sub.status(), 200, "64 topics are allowed");
}

#[test]
fn resuming_during_a_large_fan_out_gets_every_event_exactly_once() {
    let server = Server::start(&[]);
    // Enough subscribers that one event takes several write slices to fan out.
    let mut crowd: Vec<common::Subscriber> = (0..3000).map(|_| server.subscribe("topic=crowd")).collect();
    let first = server.publish("topic=crowd&data=0");
    let publisher = {
        let addr = server.addr;
        std::thread::spawn(move || {
            let server = common::Remote { addr };
            for i in 1..100 {
                server.publish(&format!("topic=crowd&data={i}"));
            }
        })
    };
    // Resume from the first event while the burst is being fanned out.
    let mut late = server.subscribe_with("topic=crowd", &format!("Last-Event-ID: {}\r\n", first[0]));
    publisher.join().unwrap();
    server.publish("topic=crowd&data=end");
    let mut got = Vec::new();
    loop {
        let event = late.next_event();
        if event.data == "end" {
            break;
        }
        got.push(event.data);
    }
    let want: Vec<String> = (1..100).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "replay then live, no gap, no duplicate");
    for sub in crowd.iter_mut().step_by(500) {
        assert_eq!(sub.next_events(101).last().unwrap().data, "end");
    }
}
