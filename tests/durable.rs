//! Durable history (`--data-dir`) on the real binary: restarts after
//! SIGTERM and SIGKILL resume without a gap and ids keep increasing; a
//! SIGKILL while publishers and a subscriber are busy leaves no delivered or
//! answered id out of the log; a
//! damaged log (torn or garbage tail, a flipped byte, an empty segment)
//! starts, is cut, and resumes get the gap rule; the lock; segments deleted
//! as history expires them; resumes into deleted segments keep their gap
//! reason across a restart; every `--fsync` mode; idempotency keys across a
//! restart; `--data-dir` with `--redis` refused.

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, TIMEOUT, status_of};

fn start(dir: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--data-dir", dir.to_str().expect("utf-8 temp dir"), "--workers", "2"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn publish(server: &Server, topic: &str, data: &str) -> String {
    let ids = server.publish(&format!("topic={topic}&data={data}"));
    assert_eq!(ids.len(), 1);
    ids[0].clone()
}

fn id_of(text: &str) -> (u64, u64) {
    let (ms, seq) = text.split_once('-').expect("an id");
    (ms.parse().expect("ms"), seq.parse().expect("seq"))
}

/// Resumes `topic` from `after` and reads up to a marker published once the
/// stream is open: returns (event type, data, id) of everything before it,
/// leaving out earlier resumes' markers.
fn resume(server: &Server, topic: &str, after: &str) -> Vec<(String, String, String)> {
    let mut sub = server.subscribe_with(&format!("topic={topic}"), &format!("Last-Event-ID: {after}\r\n"));
    assert_eq!(sub.status(), 200);
    let marker = publish(server, topic, "marker");
    let mut seen = Vec::new();
    loop {
        let event = sub.next_event();
        if event.last_event_id == marker {
            return seen;
        }
        if event.data != "marker" {
            seen.push((event.event_type, event.data, event.last_event_id));
        }
    }
}

/// What `resume` should give: the events after `from` (index into `ids`), no gap.
fn after(ids: &[String], datas: &[String], from: usize) -> Vec<(String, String, String)> {
    (from + 1..ids.len()).map(|i| ("message".to_string(), datas[i].clone(), ids[i].clone())).collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .expect("data dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    paths.sort();
    paths
}

/// Runs the binary expecting it to refuse to start: its exit code and stderr.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssehub"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ssehub");
    let deadline = Instant::now() + TIMEOUT;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ssehub did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("stderr");
    (code, stderr)
}

#[test]
fn restarts_after_sigterm_and_sigkill_resume_exactly_without_a_gap() {
    let dir = common::temp_dir("durable-restart");
    let mut server = start(&dir, &[]);
    let mut ids = Vec::new();
    let mut datas = Vec::new();
    for i in 0..12 {
        datas.push(format!("before-{i}"));
        ids.push(publish(&server, "news", &datas[i]));
        publish(&server, "other", "noise");
    }
    assert_eq!(server.signal_and_wait(libc::SIGTERM), Some(0));

    let mut server = start(&dir, &[]);
    for from in [0, 5, 10] {
        assert_eq!(resume(&server, "news", &ids[from]), after(&ids, &datas, from), "after SIGTERM, from {from}");
    }
    // The markers are events too: publish more, then kill without warning.
    for i in 0..5 {
        datas.push(format!("after-term-{i}"));
        ids.push(publish(&server, "news2", &datas[datas.len() - 1]));
    }
    let news2: Vec<String> = ids[12..].to_vec();
    let news2_data: Vec<String> = datas[12..].to_vec();
    assert!(id_of(&news2[0]) > id_of(&ids[11]), "ids keep increasing across the restart");
    assert_eq!(server.signal_and_wait(libc::SIGKILL), None);

    let server = start(&dir, &[]);
    for from in [0, 3] {
        assert_eq!(resume(&server, "news2", &news2[from]), after(&news2, &news2_data, from), "after SIGKILL");
    }
    assert_eq!(resume(&server, "news", &ids[2]), after(&ids[..12], &datas[..12], 2), "the first run's events too");
    let next = publish(&server, "news", "later");
    assert!(id_of(&next) > id_of(&news2[4]), "ids still increase after a SIGKILL");
    // Resuming from before anything this log ever held: the gap.
    let old = resume(&server, "news", "1-0");
    assert_eq!(old[0].0, "ssehub-gap");
    assert!(old[0].1.contains("before-start"), "{old:?}");
    let _ = fs::remove_dir_all(&dir);
}

/// Publishes `n` events to `t`, SIGKILLs the server, returns their ids and the single segment.
fn fill_and_kill(dir: &Path, n: usize) -> (Vec<String>, PathBuf) {
    let mut server = start(dir, &[]);
    let ids: Vec<String> = (0..n).map(|i| publish(&server, "t", &format!("e{i}"))).collect();
    assert_eq!(server.signal_and_wait(libc::SIGKILL), None);
    let segs = segments(dir);
    assert_eq!(segs.len(), 1);
    (ids, segs[0].clone())
}

#[test]
fn a_torn_tail_is_cut_silently_and_the_rest_resumes_without_a_gap() {
    let dir = common::temp_dir("durable-torn");
    let (ids, seg) = fill_and_kill(&dir, 6);
    let full = fs::metadata(&seg).expect("segment").len();
    // A record cut short: its publish was never answered, so nothing is missing.
    let record = (full - 8) / 6;
    fs::OpenOptions::new().write(true).open(&seg).expect("open").set_len(full - record / 2).expect("truncate");
    let server = start(&dir, &[]);
    assert_eq!(fs::metadata(&seg).expect("segment").len(), full - record, "cut at the last good record");
    let datas: Vec<String> = (0..6).map(|i| format!("e{i}")).collect();
    assert_eq!(resume(&server, "t", &ids[1]), after(&ids[..5], &datas[..5], 1), "the torn event is gone, no gap");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn garbage_a_flipped_byte_or_an_empty_segment_start_cleanly_with_the_gap_rule() {
    let datas: Vec<String> = (0..6).map(|i| format!("e{i}")).collect();
    for damage in ["garbage tail", "flipped byte"] {
        let dir = common::temp_dir("durable-damage");
        let (ids, seg) = fill_and_kill(&dir, 6);
        let mut bytes = fs::read(&seg).expect("segment");
        let record = (bytes.len() - 8) / 6;
        let keep = match damage {
            "garbage tail" => {
                bytes.extend_from_slice(&[0xff; 64]);
                6
            }
            _ => {
                bytes[8 + 3 * record + record / 2] ^= 0x01; // inside the fourth record
                3
            }
        };
        fs::write(&seg, &bytes).expect("write");
        let server = start(&dir, &[]);
        assert_eq!(fs::metadata(&seg).expect("segment").len(), (8 + keep * record) as u64, "{damage}: cut");
        // A stream opened before the first new event names a position past
        // the loss: resuming from it is no gap.
        let fresh = server.subscribe("topic=p");
        let position = common::header(&fresh.head, "ssehub-position").expect("a position").to_owned();
        drop(fresh);
        assert_eq!(resume(&server, "p", &position), [], "{damage}: from the position");
        // The log is cut after `keep` records; resumes from before the
        // start are told events may be missing, then get what is retained.
        let replay = resume(&server, "t", &ids[0]);
        assert_eq!(replay[0].0, "ssehub-gap", "{damage}: {replay:?}");
        assert!(replay[0].1.contains("before-start"), "{damage}: {replay:?}");
        assert_eq!(replay[1..], after(&ids[..keep], &datas[..keep], 0)[..], "{damage}");
        let later = publish(&server, "t", "x");
        assert!(id_of(&later) > id_of(&ids[5]), "{damage}: ids never go back");
        drop(server);
        let _ = fs::remove_dir_all(&dir);
    }
    // An empty segment (created, never written) holds nothing: removed, no gap.
    let dir = common::temp_dir("durable-empty");
    let (ids, seg) = fill_and_kill(&dir, 3);
    let empty = dir.join("00000000000000000099.log");
    fs::write(&empty, b"").expect("empty segment");
    let server = start(&dir, &[]);
    assert_eq!(resume(&server, "t", &ids[0]), after(&ids, &datas[..3], 0));
    assert!(!empty.exists() && seg.exists());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_second_process_on_the_same_dir_refuses_to_start() {
    let dir = common::temp_dir("durable-lock");
    let server = start(&dir, &[]);
    let (code, stderr) = refused(&["--data-dir", dir.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("in use by another ssehub process"), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", server.pid())), "{stderr}");
    drop(server);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn data_dir_with_redis_is_refused() {
    let dir = common::temp_dir("durable-redis");
    let (code, stderr) = refused(&["--data-dir", dir.to_str().expect("utf-8"), "--redis", "redis://127.0.0.1:1"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--data-dir is for standalone mode"), "{stderr}");
    assert!(!dir.exists(), "nothing was created");
}

#[test]
fn segments_are_deleted_as_history_expires_them_so_disk_use_stays_bounded() {
    let dir = common::temp_dir("durable-expire");
    let server = start(&dir, &["--history-ttl", "1", "--data-segment-bytes", "4096", "--idempotency-window", "0"]);
    let data = "y".repeat(200);
    for round in 0..3 {
        for _ in 0..60 {
            publish(&server, "t", &data);
        }
        assert!(server.metric("ssehub_journal_segments") > 2, "round {round}: small segments rotate");
        // Within two sweeps past the TTL, only the open segment is left.
        server.wait_metric("ssehub_journal_segments", |n| n == 1);
        assert_eq!(segments(&dir).len(), 1);
        assert!(server.metric("ssehub_journal_bytes") <= 4096 + 512);
    }
    assert!(server.metric("ssehub_journal_segments_deleted_total") >= 6);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn every_fsync_mode_starts_and_persists() {
    for mode in ["always", "everysec", "no"] {
        let dir = common::temp_dir("durable-fsync");
        let mut server = start(&dir, &["--fsync", mode]);
        let ids: Vec<String> = (0..3).map(|i| publish(&server, "t", &format!("m{i}"))).collect();
        if mode == "everysec" {
            server.wait_metric("ssehub_journal_fsync_lag_ms", |lag| lag == 0);
        }
        assert_eq!(server.metric("ssehub_journal_fsync_failures_total"), 0);
        assert_eq!(server.signal_and_wait(libc::SIGKILL), None);
        let server = start(&dir, &["--fsync", mode]);
        let datas: Vec<String> = (0..3).map(|i| format!("m{i}")).collect();
        assert_eq!(resume(&server, "t", &ids[0]), after(&ids, &datas, 0), "--fsync {mode}");
        drop(server);
        let _ = fs::remove_dir_all(&dir);
    }
}

#[test]
fn an_idempotency_key_survives_a_restart() {
    let dir = common::temp_dir("durable-keys");
    let request = |server: &Server, body: &str| {
        let request = format!(
            "POST /publish HTTP/1.1\r\nHost: t\r\nIdempotency-Key: order-42\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        server.raw(request.as_bytes())
    };
    let mut server = start(&dir, &[]);
    let first = request(&server, "topic=t&data=once&topic=u");
    assert_eq!(status_of(&first), 200, "{first}");
    assert_eq!(server.signal_and_wait(libc::SIGKILL), None);
    let server = start(&dir, &[]);
    let again = request(&server, "topic=t&data=once&topic=u");
    assert_eq!(status_of(&again), 200, "{again}");
    assert_eq!(common::body_of(&again), common::body_of(&first), "the same ids");
    assert_eq!(common::header(&again, "idempotent-replayed"), Some("true"));
    assert_eq!(status_of(&request(&server, "topic=t&data=other")), 409, "another body is still a conflict");
    assert_eq!(server.metric("ssehub_events_published_total"), 0, "nothing was published again");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn after_a_sigkill_mid_flight_every_id_a_client_holds_is_in_the_log() {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = common::temp_dir("durable-inflight");
    let mut server = start(&dir, &["--history", "100000"]);
    let mut sub = server.subscribe("topic=k");
    assert_eq!(sub.status(), 200);
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..2)
        .map(|p| {
            let (addr, stop) = (server.addr, Arc::clone(&stop));
            std::thread::spawn(move || {
                use std::io::Write;
                let request = common::publish_request(&format!("topic=k&data=p{p}"), "Connection: close\r\n");
                let mut acked = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    // Any failure means the server is gone: what was answered is what counts.
                    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { break };
                    let mut response = Vec::new();
                    if stream.write_all(request.as_bytes()).is_err() || stream.read_to_end(&mut response).is_err() {
                        break;
                    }
                    let response = String::from_utf8_lossy(&response);
                    // Only a whole answer counts: a status and every byte of its body.
                    let length = common::header(&response, "content-length").and_then(|v| v.parse::<usize>().ok());
                    if !response.starts_with("HTTP/1.1 200 ") || length != Some(common::body_of(&response).len()) {
                        break;
                    }
                    acked.extend(common::body_of(&response).lines().map(str::to_owned));
                }
                acked
            })
        })
        .collect();
    let mut seen = BTreeSet::new();
    while seen.len() < 300 {
        seen.insert(sub.next_event().last_event_id);
    }
    common::signal(server.pid(), libc::SIGKILL);
    assert_eq!(server.wait_exit(), None);
    stop.store(true, Ordering::Relaxed);
    seen.extend(sub.read_until_closed().into_iter().map(|e| e.last_event_id));
    let acked: BTreeSet<String> = publishers.into_iter().flat_map(|p| p.join().expect("publisher")).collect();

    let server = start(&dir, &["--history", "100000"]);
    let logged: BTreeSet<String> = resume(&server, "k", "1-0").into_iter().skip(1).map(|(_, _, id)| id).collect();
    assert!(seen.is_subset(&logged), "delivered but not logged: {:?}", seen.difference(&logged).collect::<Vec<_>>());
    assert!(acked.is_subset(&logged), "answered but not logged: {:?}", acked.difference(&logged).collect::<Vec<_>>());
    assert!(acked.len() >= 300 && seen.len() >= 300);
    let _ = fs::remove_dir_all(&dir);
}

/// Resumes `topic` from `after`: the gap reason it got first (if any), and
/// the data of the events it was given.
fn resume_gap(server: &Server, topic: &str, after: &str) -> (Option<String>, Vec<String>) {
    let mut events = resume(server, topic, after);
    let gap = match events.first() {
        Some((kind, data, _)) if kind == "ssehub-gap" => Some(data.clone()),
        _ => None,
    };
    if gap.is_some() {
        events.remove(0);
    }
    let reason = gap.map(|data| {
        let reason = data.split("\"reason\":\"").nth(1).and_then(|r| r.split('"').next()).expect("a reason");
        reason.to_string()
    });
    (reason, events.into_iter().map(|(_, data, _)| data).collect())
}

/// Segments are deleted once history retains none of their events; a
/// resume from an id in them must still get the reason it got before the
/// restart (`expired`, `evicted`), not `before-start`, which is kept for ids
/// from before the data dir's history began, and no gap where none was due
/// (the log keeps what history knew of each topic whose events it deleted).
#[test]
fn a_resume_into_deleted_segments_keeps_its_gap_reason_across_a_restart() {
    let small = ["--data-segment-bytes", "4096", "--idempotency-window", "0"];
    let cases: [(&str, &[&str], usize, &str); 3] = [
        ("ttl", &["--history-ttl", "1"], 60, "expired"),
        ("count", &["--history", "5"], 60, "evicted"),
        ("memory", &["--history", "100000", "--history-memory", "65536", "--history-ttl", "0"], 400, "evicted"),
    ];
    let data = "z".repeat(200);
    for (bound, extra, n, reason) in cases {
        let dir = common::temp_dir("durable-floor");
        let args: Vec<&str> = small.iter().chain(extra).copied().collect();
        let mut server = start(&dir, &args);
        // A topic with one early event, evicted with the first segments.
        // (With --history 5 it would be kept, and every segment with it;
        // with a 1 s TTL its tombstone goes after 2 s, and a resume from
        // it gets the gap before a restart too.)
        // Another such topic in between: what a log that only kept "the
        // newest dropped id" would take for every topic's.
        let quiet = (bound == "memory").then(|| publish(&server, "quiet", "q"));
        let ids: Vec<String> = (0..n)
            .map(|i| {
                if quiet.is_some() && i == n / 2 {
                    publish(&server, "quiet2", "q2");
                }
                publish(&server, "t", &format!("{i}{data}"))
            })
            .collect();
        if bound == "ttl" {
            server.wait_metric("ssehub_journal_segments", |n| n == 1);
        } else {
            server.wait_metric("ssehub_journal_segments_deleted_total", |n| n >= 1);
        }
        let before = resume_gap(&server, "t", &ids[5]);
        assert_eq!(before.0.as_deref(), Some(reason), "{bound}: before the restart");

        // SIGKILL: the floor must already be on disk when the segments go.
        assert_eq!(server.signal_and_wait(libc::SIGKILL), None);

        let server = start(&dir, &args);
        let after_restart = resume_gap(&server, "t", &ids[5]);
        assert_eq!(after_restart.0.as_deref(), Some(reason), "{bound}: the same reason after the restart");
        assert!(before.1.ends_with(&after_restart.1), "{bound}: what is retained is what was: {after_restart:?}");
        match bound {
            "ttl" => assert!(after_restart.1.is_empty(), "everything expired"),
            "count" => {
                // Exact: the ring holds the last 3 events and the two resumes'
                // markers, so a client that saw the newest dropped event missed nothing.
                let last3: Vec<String> = (n - 3..n).map(|i| format!("{i}{data}")).collect();
                assert_eq!(resume_gap(&server, "t", &ids[n - 4]), (None, last3));
            }
            _ => assert!(!after_restart.1.is_empty(), "the budget still holds the newest"),
        }
        if let Some(quiet) = &quiet {
            // Exact, not merely the right reason: the log kept what history
            // knew of each topic whose events it deleted. (Only now: each
            // resume publishes a marker to its topic, which later expires.)
            assert_eq!(resume_gap(&server, "quiet", quiet), (None, vec![]), "{bound}: saw its only event: no gap");
            let (gap, _) = resume_gap(&server, "quiet", &format!("{}-0", id_of(quiet).0 - 1));
            assert_eq!(gap.as_deref(), Some(reason), "{bound}: but from before its event");
        }
        let (gap, _) = resume_gap(&server, "t", "1-0");
        assert_eq!(gap.as_deref(), Some("before-start"), "{bound}: before the data dir's first id");
        drop(server);
        let _ = fs::remove_dir_all(&dir);
    }
}
