//! Cluster mode: several nodes on one Redis stream behave as one hub. Each
//! test starts its own `redis-server` on a free port and stops it by pid.

mod common;

use std::thread;

use common::{Redis, Server, Subscriber, header, status_of};

fn data(events: &[ssehub_protocol::sse::ParsedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.data.as_str()).collect()
}

#[test]
fn an_event_published_on_one_node_reaches_every_node_with_the_same_id() {
    let redis = Redis::start();
    let nodes: Vec<Server> = (0..3).map(|_| Server::node(&redis, &[])).collect();
    let mut subs: Vec<Subscriber> = nodes.iter().map(|n| n.subscribe("topic=t")).collect();
    let ids = nodes[0].publish("topic=t&data=hello");
    for sub in &mut subs {
        let event = sub.next_event();
        assert_eq!((event.data.as_str(), event.last_event_id.as_str()), ("hello", ids[0].as_str()));
    }

    // Concurrent publishers on every node: every connection sees one order.
    let publishers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, node)| {
            let remote = common::Remote { addr: node.addr };
            thread::spawn(move || {
                for i in 0..30 {
                    remote.publish(&format!("topic=t&data=n{n}-{i}"));
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.join().unwrap();
    }
    let orders: Vec<Vec<String>> =
        subs.iter_mut().map(|s| s.next_events(90).into_iter().map(|e| e.last_event_id).collect()).collect();
    assert_eq!(orders[0], orders[1]);
    assert_eq!(orders[0], orders[2]);
    let mut sorted = orders[0].clone();
    sorted.sort_by_key(|id| ssehub_protocol::EventId::parse(id.as_bytes()));
    assert_eq!(sorted, orders[0], "stream order is id order");
}

#[test]
fn a_client_resumes_on_another_node_including_one_started_after_its_id() {
    let redis = Redis::start();
    let a = Server::node(&redis, &[]);
    let b = Server::node(&redis, &[]);
    let mut sub = a.subscribe("topic=r");
    for i in 0..5 {
        a.publish(&format!("topic=r&data={i}"));
    }
    let seen = sub.next_events(5);
    let last = seen[4].last_event_id.clone();
    drop(sub);
    for i in 5..10 {
        b.publish(&format!("topic=r&data={i}"));
    }
    // C did not exist when those events were published: it reads them from the stream.
    let c = Server::node(&redis, &[]);
    let mut back = c.subscribe_with("topic=r", &format!("Last-Event-ID: {last}\r\n"));
    a.publish("topic=r&data=live");
    assert_eq!(data(&back.next_events(6)), ["5", "6", "7", "8", "9", "live"], "exactly the missed events, no gap");
    // And B, which followed them live, serves the same from memory.
    let mut back = b.subscribe_with("topic=r", &format!("Last-Event-ID: {last}\r\n"));
    assert_eq!(data(&back.next_events(6)), ["5", "6", "7", "8", "9", "live"]);
    assert_eq!(c.metric("ssehub_gaps_total"), 0);
}

#[test]
fn a_resume_older_than_the_stream_gets_a_gap_then_what_remains() {
    let redis = Redis::start();
    let a = Server::node(&redis, &["--history", "3"]);
    let first = a.publish("topic=g&data=0");
    for i in 1..6 {
        a.publish(&format!("topic=g&data={i}"));
    }
    let mut conn = redis.client().get_connection().unwrap();
    let _: i64 = redis::cmd("XTRIM").arg("ssehub").arg("MAXLEN").arg(3).query(&mut conn).unwrap();
    let late = Server::node(&redis, &["--history", "3"]);
    let mut sub = late.subscribe_with("topic=g", &format!("Last-Event-ID: {}\r\n", first[0]));
    let events = sub.next_events(4);
    assert_eq!(events[0].event_type, "ssehub-gap");
    assert_eq!(data(&events[1..]), ["3", "4", "5"]);
}

#[test]
fn when_redis_dies_streams_stay_up_publishes_fail_fast_and_nothing_is_lost_after() {
    let redis = Redis::start_in(common::temp_dir("durable"), None, true);
    let a = Server::node(&redis, &["--heartbeat", "0.2"]);
    let b = Server::node(&redis, &["--heartbeat", "0.2"]);
    let mut sub = b.subscribe("topic=o");
    a.publish("topic=o&data=before");
    assert_eq!(sub.next_event().data, "before");

    let (dir, port) = redis.kill();
    // Readiness drops quickly; the stream stays open and keeps its heartbeats.
    let started = std::time::Instant::now();
    while status_of(&a.raw(b"GET /readyz HTTP/1.0\r\n\r\n")) != 503 {
        assert!(started.elapsed() < std::time::Duration::from_secs(3), "readyz still 200");
        thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(common::body_of(&a.raw(b"GET /healthz HTTP/1.0\r\n\r\n")).contains("degraded"));
    let comments = sub.comments();
    sub.wait_comments(comments + 2);
    let response = a.raw(b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 14\r\n\r\ntopic=o&data=x");
    assert_eq!(status_of(&response), 503);
    assert!(header(&response, "retry-after").is_some());

    // Back with the same data: publishing resumes, and an entry added while
    // the nodes were still reconnecting arrives too. No gap.
    let redis = Redis::start_in(dir, Some(port), true);
    redis.xadd("ssehub", &[("topic", b"o"), ("data", b"while-reconnecting")]);
    a.wait_ready();
    b.wait_ready();
    a.publish("topic=o&data=after");
    let events = sub.next_events(2);
    assert_eq!(data(&events), ["while-reconnecting", "after"]);
    assert!(a.metric("ssehub_backplane_reconnects_total") >= 1);

    // Back empty (Redis lost its data): every subscriber is told, then events flow.
    let (dir, port) = redis.kill();
    let _ = std::fs::remove_dir_all(dir);
    let fresh = Redis::start_in(common::temp_dir("fresh"), Some(port), false);
    a.wait_ready();
    b.wait_ready();
    a.publish("topic=o&data=fresh");
    let events = sub.next_events(2);
    assert_eq!(events[0].event_type, "ssehub-gap", "{events:?}");
    assert_eq!(events[1].data, "fresh");
    drop(fresh);
}

#[test]
fn when_a_node_dies_its_subscribers_resume_on_another_without_loss() {
    let redis = Redis::start();
    let mut a = Server::node(&redis, &[]);
    let b = Server::node(&redis, &[]);
    let mut sub = a.subscribe("topic=k");
    for i in 0..3 {
        b.publish(&format!("topic=k&data={i}"));
    }
    let last = sub.next_events(3)[2].last_event_id.clone();
    a.signal_and_wait(libc::SIGKILL);
    for i in 3..6 {
        b.publish(&format!("topic=k&data={i}"));
    }
    let mut back = b.subscribe_with("topic=k", &format!("Last-Event-ID: {last}\r\n"));
    assert_eq!(data(&back.next_events(3)), ["3", "4", "5"]);
}

#[test]
fn applications_can_xadd_directly_and_hostile_entries_are_skipped() {
    let redis = Redis::start();
    let node = Server::node(&redis, &[]);
    let mut sub = node.subscribe("topic=x&topic=y");
    let good = redis.xadd("ssehub", &[("topic", b"x"), ("data", b"plain"), ("id", b"999-9")]);
    redis.xadd("ssehub", &[("json", br#"{"topic":["x","y"],"data":"both","event":"e"}"#)]);
    redis.xadd(
        "ssehub",
        &[("topic", b"x"), ("topic", b"y"), ("data", b"a\n\nid: 1\ndata: injected"), ("retry", b"100")],
    );
    let hostile: [&[(&str, &[u8])]; 7] = [
        &[("data", b"no topic")],
        &[("topic", b"x")],
        &[("topic", b"x"), ("data", b"d"), ("event", b"a\nid: 5")],
        &[("topic", b"x"), ("data", b"d"), ("retry", b"soon")],
        &[("topic", b"x\x00"), ("data", b"d")],
        &[("topic", b"\xff\xfe"), ("data", b"d")],
        &[("json", b"[{\"topic\":\"x\",\"data\":\"batch\"}]")],
    ];
    for fields in hostile {
        redis.xadd("ssehub", fields);
    }
    redis.xadd("ssehub", &[("topic", b"y"), ("data", b"marker")]);
    let events = sub.next_events(4);
    assert_eq!(data(&events), ["plain", "both", "a\n\nid: 1\ndata: injected", "marker"]);
    assert_eq!(events[0].last_event_id, good, "the entry id, not the id field");
    assert_eq!(events[1].event_type, "e");
    assert_eq!(sub.reconnection_time(), Some(100));
    assert_eq!(node.metric("ssehub_backplane_invalid_entries_total"), 7);
}

/// nginx running `tests/nginx/ssehub-cluster.conf` in front of two nodes.
struct Nginx {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Nginx {
    fn start(a: &Server, b: &Server) -> Nginx {
        let port = common::free_port();
        let dir = common::temp_dir("nginx");
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let site = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/nginx/ssehub-cluster.conf"))
            .unwrap()
            .replace("127.0.0.1:8080", &a.addr.to_string())
            .replace("127.0.0.1:8081", &b.addr.to_string())
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
        std::fs::write(dir.join("site.conf"), site).unwrap();
        let main = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\n\
             events {{ worker_connections 1024; }}\nhttp {{ access_log off; client_body_temp_path {d}; \
             proxy_temp_path {d}; include {d}/site.conf; }}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), main).unwrap();
        let nginx =
            ["/usr/sbin/nginx", "nginx"].into_iter().find(|p| std::process::Command::new(p).arg("-v").output().is_ok());
        let nginx = nginx.expect("nginx not found: apt-get install nginx-light");
        let child = std::process::Command::new(nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nginx");
        let deadline = std::time::Instant::now() + common::TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "nginx did not come up");
            thread::sleep(std::time::Duration::from_millis(10));
        }
        Nginx { child, port, dir }
    }

    fn front(&self) -> common::Remote {
        common::Remote { addr: ([127, 0, 0, 1], self.port).into() }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master must take its worker down with it.
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn behind_nginx_any_node_serves_and_a_dead_node_costs_nothing() {
    let redis = Redis::start();
    let mut a = Server::node(&redis, &[]);
    let b = Server::node(&redis, &[]);
    let nginx = Nginx::start(&a, &b);
    let front = nginx.front();
    // Subscribers land on both nodes (round robin); all get what is published through nginx.
    let mut subs: Vec<Subscriber> = (0..4).map(|_| front.subscribe_http10("topic=n", "")).collect();
    assert!(subs.iter().all(|s| s.status() == 200));
    let id = front.publish("topic=n&data=through-nginx");
    for sub in &mut subs {
        assert_eq!(sub.next_event().last_event_id, id[0]);
    }
    // A node dies: its subscribers' streams end; reconnecting through nginx
    // with their last id, they land on the live node and lose nothing.
    a.signal_and_wait(libc::SIGKILL);
    for i in 0..3 {
        front.publish(&format!("topic=n&data={i}"));
    }
    front.publish("topic=n&data=end");
    let mut resumed = 0;
    for sub in &mut subs {
        let mut last = id[0].clone();
        let mut got = Vec::new();
        while got.last().is_none_or(|d| d != "end") {
            match sub.try_next_event() {
                Some(event) => {
                    last = event.last_event_id.clone();
                    got.push(event.data);
                }
                None => {
                    resumed += 1;
                    *sub = front.subscribe_http10("topic=n", &format!("Last-Event-ID: {last}\r\n"));
                }
            }
        }
        assert_eq!(got, ["0", "1", "2", "end"], "no loss, no duplicate");
    }
    assert!(resumed >= 1, "some subscribers were on the dead node");
    drop(b);
}

#[test]
fn private_pattern_subscriptions_work_across_nodes_and_resume_from_the_stream() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 60;
    let claims = serde_json::json!({"sub": "42", "exp": exp, "ssehub": {"subscribe": ["user/42/**"]}});
    let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(b"cluster-secret").unwrap()).unwrap();
    let auth = ["--jwt-secret", "cluster-secret", "--publish-token", "pub"];
    let publish = |node: &Server, form: &str| -> String {
        let request = format!(
            "POST /publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer pub\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        );
        let response = node.raw(request.as_bytes());
        assert_eq!(status_of(&response), 200, "{response}");
        common::body_of(&response).trim().to_owned()
    };
    let redis = Redis::start();
    let a = Server::node(&redis, &auth);
    let b = Server::node(&redis, &auth);
    // Grants are checked on the node the client connects to.
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let refused = b.raw(b"GET /events?topic=user/43/* HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(status_of(&refused), 401);
    let mut sub = b.subscribe_with("topic=user/42/*", &bearer);
    assert_eq!(sub.status(), 200);
    let first = publish(&a, "topic=user/42/inbox&data=one");
    publish(&a, "topic=user/43/inbox&data=not-yours");
    publish(&a, "topic=user/42/alerts&data=two");
    assert_eq!(data(&sub.next_events(2)), ["one", "two"]);

    // A node started afterwards has none of it in memory: the resume through
    // the pattern is read from the Redis stream.
    let c = Server::node(&redis, &auth);
    let mut resumed = c.subscribe_with("topic=user/42/*", &format!("{bearer}Last-Event-ID: {first}\r\n"));
    publish(&a, "topic=user/42/inbox&data=live");
    assert_eq!(data(&resumed.next_events(2)), ["two", "live"]);
}

#[test]
fn disconnect_on_one_node_ends_that_subjects_streams_on_every_node() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 60;
    let token = |sub: &str| {
        let claims = serde_json::json!({"sub": sub, "exp": exp, "ssehub": {"subscribe": ["user/**"]}});
        encode(&Header::default(), &claims, &EncodingKey::from_secret(b"cluster-secret").unwrap()).unwrap()
    };
    let auth = ["--jwt-secret", "cluster-secret", "--publish-token", "pub"];
    let redis = Redis::start();
    let a = Server::node(&redis, &auth);
    let b = Server::node(&redis, &auth);
    let bearer = |sub: &str| format!("Authorization: Bearer {}\r\n", token(sub));
    let mut alice_a = a.subscribe_with("topic=user/a", &bearer("alice"));
    let mut alice_b = b.subscribe_with("topic=user/a", &bearer("alice"));
    let mut bob_b = b.subscribe_with("topic=user/a", &bearer("bob"));
    for sub in [&alice_a, &alice_b, &bob_b] {
        assert_eq!(sub.status(), 200);
    }
    let publish = "POST /publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer pub\r\nContent-Length: 21\r\nConnection: close\r\n\r\ntopic=user/a&data=bob";
    let first = a.raw(publish.as_bytes());
    assert_eq!(status_of(&first), 200);
    let first = common::body_of(&first).trim().to_owned();
    assert_eq!(bob_b.next_event().data, "bob");
    let body = "sub=alice";
    let request = format!(
        "POST /disconnect HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer pub\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let response = a.raw(request.as_bytes());
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(common::body_of(&response), "1\n", "the answer counts the streams of the node asked");
    for sub in [&mut alice_a, &mut alice_b] {
        assert_eq!(sub.next_event().data, "bob");
        let last = sub.next_event();
        assert_eq!((last.event_type.as_str(), last.data.as_str()), ("ssehub-expired", r#"{"reason":"revoked"}"#));
        assert!(sub.read_until_closed().is_empty());
        assert!(sub.ended_cleanly);
    }
    // The control entry is no event: bob, on the other node, sees only what is published.
    assert_eq!(status_of(&a.raw(publish.as_bytes())), 200);
    assert_eq!(bob_b.next_event().data, "bob");
    // A node resuming through the stream skips the control entry too.
    let c = Server::node(&redis, &auth);
    let mut resumed = c.subscribe_with("topic=user/a", &format!("{}Last-Event-ID: {first}\r\n", bearer("carol")));
    assert_eq!(data(&resumed.next_events(1)), ["bob"]);
}
