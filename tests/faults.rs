//! Resource faults: stalled subscribers must not grow memory or slow the
//! rest; running out of descriptors must not make the server spin.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::thread;
use std::time::Duration;

use common::{Server, Subscriber};
use socket2::{Domain, Socket, Type};

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn open_sockets(pid: u32) -> usize {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    entries
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.to_string_lossy().starts_with("socket:"))
        .count()
}

fn stalled(server: &Server) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.write_all(b"GET /events?topic=burst HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    stream
}

#[test]
fn stalled_subscribers_are_dropped_and_memory_stays_bounded() {
    const STALLED: usize = 1000;
    const FAST: usize = 100;
    const EVENTS: usize = 1500;
    const PAYLOAD: usize = 2048;
    const HISTORY: usize = 64;
    const MAX_BACKLOG: usize = 32;
    let server = Server::start(&["--history", &HISTORY.to_string(), "--max-backlog", &MAX_BACKLOG.to_string()]);
    let pid = server.pid();
    let stalled: Vec<TcpStream> = (0..STALLED).map(|_| stalled(&server)).collect();
    let fast: Vec<Subscriber> = (0..FAST).map(|_| server.subscribe("topic=burst")).collect();
    server.wait_metric("ssehub_connections{kind=\"subscriber\"}", |n| n == (STALLED + FAST) as u64);
    let baseline_kib = proc_status_kib(pid, "VmRSS:");

    let readers: Vec<_> = fast
        .into_iter()
        .map(|mut sub| thread::spawn(move || sub.next_events(EVENTS).into_iter().map(|e| e.data).collect::<Vec<_>>()))
        .collect();
    let payload = "x".repeat(PAYLOAD);
    let mut peak_kib = baseline_kib;
    for i in 0..EVENTS {
        server.publish(&format!("topic=burst&data={i}:{payload}"));
        if i % 100 == 0 {
            peak_kib = peak_kib.max(proc_status_kib(pid, "VmRSS:"));
        }
    }
    for reader in readers {
        let got = reader.join().unwrap();
        assert_eq!(got.len(), EVENTS);
        assert!(got.iter().enumerate().all(|(i, d)| d.starts_with(&format!("{i}:"))), "every event, in order");
    }
    server.wait_metric("ssehub_slow_consumers_dropped_total", |n| n == STALLED as u64);
    peak_kib = peak_kib.max(proc_status_kib(pid, "VmRSS:"));
    // What the configuration allows a worker to hold: each stalled subscriber
    // up to max_backlog + one batch of frame references, and the frames those
    // and the history keep alive. Twice that, plus allocator slack, is the
    // ceiling; an unbounded backlog would need STALLED × EVENTS references.
    let reference = 32; // bytes per queued frame reference
    let frames_alive = HISTORY + MAX_BACKLOG + 64;
    let allowed = STALLED * (MAX_BACKLOG + 64) * reference + frames_alive * (PAYLOAD + 256);
    let ceiling_kib = baseline_kib + (2 * allowed / 1024) as u64 + 12 * 1024;
    eprintln!("RSS baseline {baseline_kib} KiB, peak {peak_kib} KiB, ceiling {ceiling_kib} KiB");
    assert!(
        peak_kib <= ceiling_kib,
        "RSS peaked at {peak_kib} KiB, ceiling {ceiling_kib} KiB (baseline {baseline_kib})"
    );
    drop(stalled);
}

#[test]
fn out_of_descriptors_the_server_sheds_load_without_spinning_and_recovers() {
    const LIMIT: u64 = 128;
    let server = Server::start_with(&[], |command| {
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit { rlim_cur: LIMIT, rlim_max: LIMIT };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let pid = server.pid();
    let mut healthy = server.subscribe("topic=ok");

    // Flood: far more connections than the server has descriptors.
    let flood: Vec<TcpStream> = (0..400).filter_map(|_| TcpStream::connect(server.addr).ok()).collect();
    assert!(flood.len() > LIMIT as usize, "the flood connected ({})", flood.len());
    server.wait_metric("ssehub_accept_errors_total", |n| n > 0);
    let before = cpu_ticks(pid);
    // Hold the flood for a second: a server spinning on EMFILE would burn it all.
    thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(pid) - before;
    eprintln!("{spent} CPU ticks in 1 s while flooded, {} sockets open", open_sockets(pid));
    assert!(spent <= 30, "{spent} ticks of CPU in 1 s while out of descriptors");
    // Sockets only: a test harness may pass its own descriptors (cargo's
    // jobserver pipe) down to the child, above the limit.
    let sockets = open_sockets(pid);
    assert!(sockets <= LIMIT as usize, "{sockets} sockets open under a limit of {LIMIT}");

    drop(flood);
    // Once the flood is gone (the server has seen every flood connection
    // close; only the scrape itself is open), everything works again.
    server.wait_metric("ssehub_connections{kind=\"http\"}", |n| n == 1);
    // Each worker has its own accept queue: flood connections queued at the
    // other may still be coming in and out. Retry as EventSource would.
    let deadline = std::time::Instant::now() + common::TIMEOUT;
    let mut new = loop {
        let sub = server.subscribe("topic=ok");
        if sub.reconnection_time() == Some(3000) {
            break sub;
        }
        assert!(std::time::Instant::now() < deadline, "never admitted again");
    };
    // Likewise a publisher honours 503 + Retry-After while the last flood connections drain.
    while server.post("application/x-www-form-urlencoded", "topic=ok&data=after").0 == 503 {
        assert!(std::time::Instant::now() < deadline, "publishes never admitted again");
    }
    assert_eq!(new.next_event().data, "after");
    assert_eq!(healthy.next_event().data, "after", "the subscriber from before the flood was kept");
}
