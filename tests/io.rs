//! `--io`: each backend says which it is, a bogus value is refused at start,
//! and the io_uring backend carries a fan-out wider than one write slice
//! (512 subscribers) with partial writes, exactly as epoll does. The other
//! suites run on both backends through `SSEHUB_TEST_IO` (./test.sh).
//!
//! Needs a kernel that lets this process set up io_uring (Linux ≥ 6.1,
//! `kernel.io_uring_disabled` = 0, no seccomp filter against it).

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::{Server, Subscriber};

/// The `ssehub_io_backend` sample for `backend`.
fn backend_metric(backend: &str) -> String {
    format!("ssehub_io_backend{{backend=\"{backend}\"}}")
}

#[test]
fn each_backend_reports_itself() {
    for backend in ["epoll", "uring"] {
        let server = Server::start(&["--io", backend]);
        assert_eq!(server.metric(&backend_metric(backend)), 1, "--io {backend}");
        let text = server.raw(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert_eq!(text.matches("ssehub_io_backend{").count(), 1, "one backend: {text}");
    }
    // `auto` is one of the two, whichever the benchmark chose.
    let server = Server::start(&["--io", "auto"]);
    let text = server.raw(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert!(
        text.contains(&format!("{} 1\n", backend_metric("epoll")))
            || text.contains(&format!("{} 1\n", backend_metric("uring"))),
        "{text}"
    );
}

#[test]
fn a_bogus_io_is_refused_at_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ssehub"))
        .args(["--listen", "127.0.0.1:0", "--io", "bogus"])
        .env_remove("SSEHUB_IO")
        .output()
        .expect("run ssehub");
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "it never listens");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--io") && stderr.contains("bogus"), "{stderr}");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ssehub"))
        .args(["--listen", "127.0.0.1:0"])
        .env("SSEHUB_IO", "kqueue")
        .output()
        .expect("run ssehub");
    assert!(!output.status.success(), "SSEHUB_IO is checked too");
    assert!(output.stdout.is_empty(), "it never listens");
}

#[test]
fn uring_fans_out_past_one_slice_and_drops_a_slow_consumer() {
    // One worker: all 600 subscribers in one fan-out, two slices of writes.
    let server = Server::start(&["--io", "uring", "--workers", "1", "--max-backlog", "8"]);
    assert_eq!(server.metric(&backend_metric("uring")), 1);
    const SUBSCRIBERS: usize = 600;
    const EVENTS: usize = 40;
    const BIG: usize = 300;
    // Subscribed to the 600's topic and to one of big frames, which fill its
    // socket at once: partial writes, then a backlog, then the drop.
    let stalled = common::stalled_subscriber(&server, "t&topic=big");
    let mut subs: Vec<Subscriber> = (0..SUBSCRIBERS).map(|_| server.subscribe("topic=t")).collect();
    server.wait_metric("ssehub_connections{kind=\"subscriber\"}", |n| n == SUBSCRIBERS as u64 + 1);
    let payload = "p".repeat(1024);
    let readers: Vec<_> = subs
        .drain(..)
        .map(|mut sub| {
            std::thread::spawn(move || sub.next_events(EVENTS).into_iter().map(|e| e.data).collect::<Vec<_>>())
        })
        .collect();
    for i in 0..EVENTS {
        server.publish(&format!("topic=t&data={i}:{payload}"));
    }
    let want: Vec<String> = (0..EVENTS).map(|i| format!("{i}:{payload}")).collect();
    for reader in readers {
        let got = reader.join().expect("reader");
        assert!(got == want, "every subscriber got every event, in order");
    }
    let stalled_reader = common::read_once_dropped(&server, stalled);
    let big = "b".repeat(32 * 1024);
    for i in EVENTS..EVENTS + BIG {
        server.publish(&format!("topic=big&data={i}:{big}"));
    }
    let (seen, ended_cleanly) = stalled_reader.join().expect("stalled reader");
    assert!(ended_cleanly, "a drop on purpose ends the chunked body with its last chunk");
    assert!(seen.len() < EVENTS + BIG, "the stalled subscriber was cut off ({} events)", seen.len());
    assert!(seen.iter().enumerate().all(|(i, e)| e.data.starts_with(&format!("{i}:"))), "what it got was in order");
    assert_eq!(server.metric("ssehub_slow_consumers_dropped_total"), 1, "and no one else");
}

/// `ssehub ARGS` under strace, its `io_uring_setup` calls failing with EPERM
/// (what `kernel.io_uring_disabled` or a seccomp filter gives); `None`
/// without strace.
fn without_io_uring(args: &[&str]) -> Option<std::process::Child> {
    let strace = ["/usr/bin/strace", "/bin/strace"].into_iter().find(|p| std::path::Path::new(p).exists())?;
    let child = std::process::Command::new(strace)
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=io_uring_setup", "-e", "inject=io_uring_setup:error=EPERM"])
        .arg(env!("CARGO_BIN_EXE_ssehub"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("SSEHUB_IO")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run strace");
    Some(child)
}

/// The pid strace started (signalling strace itself would only detach it).
fn tracee(strace: &std::process::Child) -> u32 {
    let path = format!("/proc/{0}/task/{0}/children", strace.id());
    let text = std::fs::read_to_string(&path).expect("children of strace");
    text.split_whitespace().next().and_then(|pid| pid.parse().ok()).expect("ssehub under strace")
}

#[test]
fn without_io_uring_auto_runs_epoll_and_uring_refuses_to_start() {
    use std::io::{BufRead, BufReader, Read};
    let Some(child) = without_io_uring(&["--io", "uring"]) else {
        eprintln!("no strace: io_uring failure not simulated");
        return;
    };
    let output = child.wait_with_output().expect("wait");
    assert_eq!(output.status.code(), Some(1), "an explicit --io uring that cannot start fails");
    assert!(output.stdout.is_empty(), "it never listens");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--io uring: cannot set up io_uring"), "{stderr}");

    let mut child = without_io_uring(&["--io", "auto", "--log", "info"]).expect("strace");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("address line");
    assert!(line.starts_with("listening on "), "auto starts anyway: {line:?}");
    let pid = tracee(&child);
    // Ends it should an assertion below fail (the test's own SIGTERM comes first otherwise).
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let ours = std::fs::read(format!("/proc/{}/cmdline", self.0))
                .is_ok_and(|cmd| cmd.starts_with(env!("CARGO_BIN_EXE_ssehub").as_bytes()));
            if std::thread::panicking() && ours {
                common::signal(self.0, 9);
            }
        }
    }
    let _guard = Kill(pid);
    let addr: std::net::SocketAddr = line.trim()["listening on ".len()..].parse().expect("address");
    let mut metrics = TcpStream::connect(addr).expect("connect");
    metrics.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").expect("request");
    let mut text = String::new();
    metrics.read_to_string(&mut text).expect("metrics");
    assert!(text.contains(&format!("{} 1\n", backend_metric("epoll"))), "{text}");
    common::signal(pid, 15);
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success(), "SIGTERM ends it cleanly");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let fallbacks = stderr.lines().filter(|l| l.contains("io_uring unavailable") && l.contains("using epoll")).count();
    // auto tries io_uring only when the benchmark made it the default.
    let tried = ssehub::driver::AUTO == ssehub::settings::Io::Uring;
    assert_eq!(fallbacks, usize::from(tried), "one info line says why, if it tried: {stderr}");
}
