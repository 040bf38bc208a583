//! The client matrix: the real binary against the SSE clients people use —
//! Python requests-sse, sseclient-py (over requests and over urllib3) and
//! httpx-sse, Node eventsource and @microsoft/fetch-event-source, and curl —
//! each through the same checks, in one test per client:
//!
//! 1. two topics on one connection; an event published to both arrives once;
//! 2. data with newlines (an empty line among them);
//! 3. a named event (`event=update`) reaches the client as type `update`;
//! 4. a JSON object as data, parsed by the client script;
//! 5. every live event within [`DELIVERY`] of its publish response (a stall
//!    check, generous on purpose);
//! 6. after SIGTERM and a new server on the same port, the client reconnects
//!    with `Last-Event-ID` (its own reconnect, or the README's idiom for
//!    clients without one), gets `ssehub-gap` `{"reason":"before-start"}`,
//!    then a new event;
//! 7. the opening `retry:` line and the heartbeats dispatch nothing: no empty
//!    `message` on connect or reconnect.
//!
//! The clients are `tests/clients/client.py` and `client.mjs`, which print
//! one JSON line per event; curl is run directly, reconnecting as a shell
//! loop would. The first test that needs the libraries installs the pinned
//! versions into `target/clients-env` (a venv, `npm ci`), once per process
//! and under a file lock; a failed install fails the tests with its output.
//! Every wait is on a line from the client (for the first heartbeat, on the
//! server's counter), with [`TIMEOUT`] mattering only when a check fails.

mod common;

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{Server, TIMEOUT};
use serde_json::{Value, json};
use ssehub_protocol::sse::EventStreamParser;

/// The bound of check 5, from the publish response to the client's line.
const DELIVERY: Duration = Duration::from_secs(1);
/// The server's `--retry`: every client reconnects this soon after the restart.
const RETRY_MS: &str = "200";
/// The server's `--heartbeat`: short, so heartbeats are on the wire during the checks.
const HEARTBEAT: &str = "0.2";

#[test]
fn requests_sse() {
    run_checks(Lib::RequestsSse);
}

#[test]
fn sseclient_py_over_requests() {
    run_checks(Lib::SseclientRequests);
}

#[test]
fn sseclient_py_over_urllib3() {
    run_checks(Lib::SseclientUrllib3);
}

#[test]
fn httpx_sse() {
    run_checks(Lib::HttpxSse);
}

#[test]
fn eventsource() {
    run_checks(Lib::Eventsource);
}

#[test]
fn fetch_event_source() {
    run_checks(Lib::FetchEventSource);
}

#[test]
fn curl() {
    run_checks(Lib::Curl);
}

/// Checks 1 to 7 against one client, in order, on one connection and its reconnect.
fn run_checks(lib: Lib) {
    let addr = quiet_addr();
    let listen = addr.to_string();
    let args = ["--listen", &listen, "--retry", RETRY_MS, "--heartbeat", HEARTBEAT];
    let mut server = Server::start(&args);
    let mut client = Client::start(lib, &format!("http://{addr}/events?topic=a&topic=b"));

    // 7: with the stream open and a heartbeat written, the first event the
    // client reports is the first one published (an empty message would come first).
    client.expect_open("the first connection");
    server.wait_metric("ssehub_heartbeats_total", |n| n >= 1);
    client.deliver(&server, "7 (nothing before the first event), 1 (topic a)", &[("topic", "a")], "to-a");

    // 1: both topics, and an event to both exactly once (the next one is not a copy).
    client.deliver(&server, "1 (topic b)", &[("topic", "b")], "to-b");
    client.deliver(&server, "1 (both topics)", &[("topic", "a"), ("topic", "b")], "to-both");
    client.deliver(&server, "1 (after the event to both)", &[("topic", "b")], "after-both");

    // 2
    client.deliver(&server, "2 (multi-line data)", &[("topic", "a")], "line one\nline two\n\nline four");

    // 3
    client.deliver(&server, "3 (named event)", &[("topic", "b"), ("event", "update")], "named");

    // 4
    let document = json!({"text": "héllo ✓", "n": 42, "nested": {"list": [1, 2, 3], "none": null}});
    let text = document.to_string();
    let parsed = client.deliver(&server, "4 (JSON data)", &[("topic", "a")], &text);
    client.check(parsed.json.as_ref() == Some(&document), &format!("4: the client parsed {:?}", parsed.json));
    let last_id = parsed.id;

    // 6: a clean stop, a new process on the same port, the client's reconnect.
    assert_eq!(server.signal_and_wait(libc::SIGTERM), Some(0), "ssehub exits 0 on SIGTERM");
    let server = Server::start(&args);
    let gap = client.expect_reconnect("6 (a reconnect answered with ssehub-gap: Last-Event-ID sent?)");
    client.check(
        gap.event == "ssehub-gap" && gap.json == Some(json!({"reason": "before-start"})),
        &format!("6 and 7: the first event after the reconnect is ssehub-gap before-start, got {gap:?}"),
    );
    // The gap has no id line: the client's last id stays (WHATWG reports the
    // unchanged buffer, some libraries an empty id).
    client.check(
        gap.id.is_empty() || gap.id == last_id,
        &format!("6: the gap event left the last id alone ({last_id}), got {gap:?}"),
    );
    if lib == Lib::Curl {
        client.check(
            client.notes.iter().any(|note| note == "curl exit 0"),
            "6: curl saw the terminating chunk (exit 0, not 18) when the server stopped",
        );
    }
    client.deliver(&server, "6 (after the restart)", &[("topic", "b")], "after-restart");
    eprintln!("{lib:?}: all checks passed; slowest delivery {:?}", client.slowest);
}

/// The clients under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lib {
    RequestsSse,
    SseclientRequests,
    SseclientUrllib3,
    HttpxSse,
    Eventsource,
    FetchEventSource,
    Curl,
}

impl Lib {
    /// The `--lib` argument of the client scripts.
    fn arg(self) -> &'static str {
        match self {
            Lib::RequestsSse => "requests-sse",
            Lib::SseclientRequests => "sseclient-requests",
            Lib::SseclientUrllib3 => "sseclient-urllib3",
            Lib::HttpxSse => "httpx-sse",
            Lib::Eventsource => "eventsource",
            Lib::FetchEventSource => "fetch-event-source",
            Lib::Curl => "curl",
        }
    }
}

/// One line of what a client saw.
#[derive(Debug)]
enum Report {
    /// A response head arrived (curl: the `retry:` line): the subscription is live.
    Open,
    Event(Seen),
    /// Anything else (errors, ends, curl's exit code): kept for failure messages.
    Note(String),
}

/// An event as the client dispatched it.
#[derive(Debug)]
struct Seen {
    id: String,
    event: String,
    data: String,
    json: Option<Value>, // the data parsed by the client, when it is a JSON object
}

impl Report {
    /// A line of a client script: `{"open": true}`, `{"id", "event", "data"[, "json"]}`, or a note.
    fn parse(line: &str) -> Report {
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            return Report::Note(line.to_owned());
        };
        if value.get("open") == Some(&Value::Bool(true)) {
            return Report::Open;
        }
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        match (text("id"), text("event"), text("data")) {
            (Some(id), Some(event), Some(data)) => {
                Report::Event(Seen { id, event, data, json: value.get("json").cloned() })
            }
            _ => Report::Note(line.to_owned()),
        }
    }
}

/// A running client, killed when dropped.
struct Client {
    lib: Lib,
    reports: Receiver<(Instant, Report)>, // with the time each line was read
    log: Vec<String>,                     // every report so far, for failure messages
    notes: Vec<String>,                   // the notes so far
    stderr: Arc<Mutex<Vec<u8>>>,
    process: Process,
    slowest: Duration, // the slowest delivery so far
}

enum Process {
    Script(Child),
    Curl { state: Arc<Mutex<CurlState>>, thread: Option<JoinHandle<()>> },
}

/// What the curl loop is running, shared with [`Client`]'s drop.
#[derive(Default)]
struct CurlState {
    stopping: bool,
    child: Option<Child>, // the curl running now
}

impl Client {
    fn start(lib: Lib, url: &str) -> Client {
        let (sender, reports) = mpsc::channel();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let process = match lib {
            Lib::Curl => {
                let state = Arc::new(Mutex::new(CurlState::default()));
                let (url, shared, stderr) = (url.to_owned(), state.clone(), stderr.clone());
                Process::Curl { state, thread: Some(thread::spawn(move || curl_loop(&url, &shared, &sender, &stderr))) }
            }
            _ => Process::Script(spawn_script(lib, url, sender, &stderr)),
        };
        Client { lib, reports, log: Vec::new(), notes: Vec::new(), stderr, process, slowest: Duration::ZERO }
    }

    /// The next open or event, keeping notes aside.
    fn next(&mut self, waiting_for: &str) -> (Instant, Report) {
        loop {
            let (at, report) = match self.reports.recv_timeout(TIMEOUT) {
                Ok(received) => received,
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("nothing within {TIMEOUT:?}, waiting for {waiting_for}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("the client exited, waiting for {waiting_for}"))
                }
            };
            self.log.push(format!("{report:?}"));
            match report {
                Report::Note(note) => self.notes.push(note),
                report => return (at, report),
            }
        }
    }

    fn expect_open(&mut self, check: &str) {
        if let (_, Report::Event(seen)) = self.next(check) {
            self.fail(&format!("{check}: an event before the stream opened: {seen:?}"));
        }
    }

    /// The first event after a reconnect: opens (failed tries may open and
    /// close on the old server) until an event, which must follow one.
    fn expect_reconnect(&mut self, check: &str) -> Seen {
        let mut opened = false;
        loop {
            match self.next(check) {
                (_, Report::Open) => opened = true,
                (_, Report::Event(seen)) if opened => return seen,
                (_, report) => self.fail(&format!("{check}: {report:?} before the client reconnected")),
            }
        }
    }

    /// Publishes `data` with `fields` and expects it to be the next thing the
    /// client reports, with its id, within [`DELIVERY`] (check 5).
    fn deliver(&mut self, server: &Server, check: &str, fields: &[(&str, &str)], data: &str) -> Seen {
        let mut form = form_encode(fields);
        form.push_str("&data=");
        form.push_str(&form_encode_value(data));
        let ids = server.publish(&form);
        let published = Instant::now();
        assert_eq!(ids.len(), 1, "one id for one event: {ids:?}");
        let event = fields.iter().find(|(name, _)| *name == "event").map_or("message", |(_, value)| value);
        let (at, report) = self.next(check);
        let Report::Event(seen) = report else {
            self.fail(&format!("{check}: expected the event, got {report:?}"));
        };
        if seen.data.is_empty() && seen.event == "message" {
            self.fail(&format!("{check}: an empty message event (7): {seen:?}"));
        }
        self.check(
            seen.id == ids[0] && seen.event == event && seen.data == data,
            &format!("{check}: expected id {} event {event} data {data:?}, got {seen:?}", ids[0]),
        );
        let latency = at.saturating_duration_since(published);
        self.check(latency <= DELIVERY, &format!("{check}: delivered {latency:?} after the publish (5)"));
        self.slowest = self.slowest.max(latency);
        seen
    }

    fn check(&self, ok: bool, what: &str) {
        if !ok {
            self.fail(what);
        }
    }

    fn fail(&self, what: &str) -> ! {
        let stderr = self.stderr.lock().unwrap_or_else(PoisonError::into_inner);
        let mut log = String::new();
        for line in &self.log {
            let _ = writeln!(log, "  {line}");
        }
        panic!(
            "{:?} client: {what}\nwhat it reported:\n{log}its stderr:\n{}",
            self.lib,
            String::from_utf8_lossy(&stderr)
        );
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        match &mut self.process {
            Process::Script(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Process::Curl { state, thread } => {
                {
                    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                    state.stopping = true;
                    if let Some(child) = &mut state.child {
                        let _ = child.kill();
                    }
                }
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }
}

/// Starts `client.py` or `client.mjs` with the installed libraries, its
/// stdout lines becoming reports.
fn spawn_script(lib: Lib, url: &str, reports: Sender<(Instant, Report)>, stderr: &Arc<Mutex<Vec<u8>>>) -> Child {
    let env = client_env();
    let mut command = match lib {
        Lib::Eventsource | Lib::FetchEventSource => {
            let mut command = Command::new("node");
            command.arg(env.node_dir.join("client.mjs"));
            command
        }
        _ => {
            let mut command = Command::new(&env.python);
            command.arg(scripts_dir().join("client.py")).env("PYTHONDONTWRITEBYTECODE", "1");
            command
        }
    };
    command.args(["--lib", lib.arg(), url]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|e| panic!("start the {lib:?} client ({command:?}): {e}"));
    collect(child.stderr.take().expect("stderr"), stderr.clone());
    let stdout = child.stdout.take().expect("stdout");
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if reports.send((Instant::now(), Report::parse(&line))).is_err() {
                break;
            }
        }
    });
    child
}

/// curl the way a shell script uses it: `curl -N` until it exits, then again
/// with `Last-Event-ID: <the last id>` after the stream's `retry:` delay. The
/// stream is read with the WHATWG parser of `ssehub-protocol`.
fn curl_loop(url: &str, state: &Mutex<CurlState>, reports: &Sender<(Instant, Report)>, stderr: &Arc<Mutex<Vec<u8>>>) {
    let mut last_id = String::new();
    let mut retry = Duration::from_secs(3);
    loop {
        let mut command = Command::new("curl");
        command.args(["-sS", "-N", "-H", "Accept: text/event-stream"]);
        if !last_id.is_empty() {
            command.arg("-H").arg(format!("Last-Event-ID: {last_id}"));
        }
        command.arg(url).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut stdout = {
            let mut state = state.lock().expect("curl state");
            if state.stopping {
                return;
            }
            let mut child = match command.spawn() {
                Ok(child) => child,
                Err(e) => {
                    let _ = reports.send((Instant::now(), Report::Note(format!("cannot run curl: {e}"))));
                    return;
                }
            };
            collect(child.stderr.take().expect("curl stderr"), stderr.clone());
            let stdout = child.stdout.take().expect("curl stdout");
            state.child = Some(child);
            stdout
        };
        let mut parser = EventStreamParser::new();
        let mut opened = false;
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            let now = Instant::now();
            let events = parser.feed(&buf[..n]);
            // The retry line comes first, so the open goes before any event read with it.
            if !opened && parser.reconnection_time().is_some() {
                opened = true;
                let _ = reports.send((now, Report::Open));
            }
            for event in events {
                if !event.last_event_id.is_empty() {
                    last_id.clone_from(&event.last_event_id);
                }
                let json = serde_json::from_str(&event.data).ok().filter(Value::is_object);
                let seen = Seen { id: event.last_event_id, event: event.event_type, data: event.data, json };
                let _ = reports.send((now, Report::Event(seen)));
            }
        }
        let child = state.lock().expect("curl state").child.take();
        if let Some(status) = child.and_then(|mut child| child.wait().ok()) {
            let code = status.code().map_or_else(|| format!("{status}"), |code| code.to_string());
            let _ = reports.send((Instant::now(), Report::Note(format!("curl exit {code}"))));
        }
        if state.lock().expect("curl state").stopping {
            return;
        }
        if let Some(ms) = parser.reconnection_time() {
            retry = Duration::from_millis(ms);
        }
        // The reconnection delay of the idiom, as EventSource waits: not a synchronisation.
        thread::sleep(retry);
    }
}

/// Appends everything `source` says to `into`, on a thread, until it closes.
fn collect(mut source: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = source.read(&mut buf) {
            into.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(&buf[..n]);
        }
    });
}

/// `name=value&...`, form-encoded.
fn form_encode(fields: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = fields
        .iter()
        .map(|(name, value)| format!("{}={}", form_encode_value(name), form_encode_value(value)))
        .collect();
    pairs.join("&")
}

fn form_encode_value(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A free loopback address below the kernel's ephemeral port range. While the
/// server is down, a client retrying takes its own port from that range and
/// could otherwise be given the server's port, connecting to itself (TCP
/// simultaneous open) and keeping the new server from binding it.
fn quiet_addr() -> SocketAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000, ephemeral_low.max(10_100));
    let span = high - low;
    let start = std::process::id() * 97;
    for _ in 0..span {
        let port = low + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let addr = SocketAddr::from(([127, 0, 0, 1], u16::try_from(port).expect("a port")));
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free port in {low}..{high}");
}

/// Where the client libraries are installed.
struct ClientEnv {
    python: PathBuf,   // the venv's interpreter
    node_dir: PathBuf, // node_modules and a copy of client.mjs, so its imports resolve
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// The installed libraries, installing them on first use in this process.
fn client_env() -> &'static ClientEnv {
    static ENV: OnceLock<Result<ClientEnv, String>> = OnceLock::new();
    match ENV.get_or_init(install) {
        Ok(env) => env,
        Err(report) => panic!("installing the client libraries failed:\n{report}"),
    }
}

/// Installs `requirements.txt` into a venv and `package-lock.json` with
/// `npm ci`, under `target/clients-env`, unless they are installed from these
/// very files already.
fn install() -> Result<ClientEnv, String> {
    let started = Instant::now();
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().ok_or("no target directory")?;
    let root = target.join("clients-env");
    fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
    let _lock = lock(&root.join("setup.lock"))?;
    let src = scripts_dir();
    let mut manifest = String::new();
    for name in ["requirements.txt", "package.json", "package-lock.json"] {
        manifest += &fs::read_to_string(src.join(name)).map_err(|e| format!("read tests/clients/{name}: {e}"))?;
    }
    let (venv, node_dir) = (root.join("venv"), root.join("node"));
    let python = venv.join("bin/python");
    let stamp = root.join("installed-from");
    let installed = fs::read_to_string(&stamp).is_ok_and(|was| was == manifest)
        && python.exists()
        && node_dir.join("node_modules").exists();
    if !installed {
        let io = |what: &str, e: io::Error| format!("{what}: {e}");
        let _ = fs::remove_file(&stamp);
        for dir in [&venv, &node_dir] {
            if dir.exists() {
                fs::remove_dir_all(dir).map_err(|e| io(&format!("remove {}", dir.display()), e))?;
            }
        }
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv (on Debian it needs python3-venv)",
        )?;
        run(
            Command::new(&python)
                .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--quiet", "-r"])
                .arg(src.join("requirements.txt")),
            "pip install -r tests/clients/requirements.txt",
        )?;
        fs::create_dir_all(&node_dir).map_err(|e| io("create the node directory", e))?;
        for name in ["package.json", "package-lock.json"] {
            fs::copy(src.join(name), node_dir.join(name)).map_err(|e| io(&format!("copy {name}"), e))?;
        }
        run(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&node_dir), "npm ci")?;
        fs::write(&stamp, &manifest).map_err(|e| io("write the stamp", e))?;
        eprintln!("client libraries installed into {} in {:?}", root.display(), started.elapsed());
    }
    // Every run: the script as it is now, beside its node_modules.
    fs::copy(src.join("client.mjs"), node_dir.join("client.mjs")).map_err(|e| format!("copy client.mjs: {e}"))?;
    Ok(ClientEnv { python, node_dir })
}

/// Runs a setup command; its output becomes the error if it fails.
fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run {command:?}: {e} (.ci/run installs what it needs)"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}): {command:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// An exclusive `flock` on `path`, held until the file is dropped: two test
/// processes at once (two `cargo test`) do not install into one directory together.
fn lock(path: &Path) -> Result<fs::File, String> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    // SAFETY: flock only takes a descriptor, which `file` owns and keeps open during the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!("lock {}: {}", path.display(), io::Error::last_os_error()));
    }
    Ok(file)
}
