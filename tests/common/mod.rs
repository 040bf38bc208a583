//! Shared helpers for the integration tests: start the real `ssehub` binary on
//! port 0, talk to it over raw TCP, and read event streams with the
//! WHATWG parser from `ssehub_protocol::sse`.
//!
//! Every wait here is on an event (a line from the server, bytes on a socket,
//! a process exit) with a generous timeout that only matters when a test fails.
#![allow(dead_code)] // each test binary uses a different subset

pub mod relay;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ssehub_protocol::http::{ChunkedDecoder, Line};
use ssehub_protocol::sse::{EventStreamParser, ParsedEvent};

/// How long any single wait may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

/// `SSEHUB_TEST_IO`: the `--io` every server of the suites gets, if set.
pub fn test_io() -> Option<String> {
    std::env::var("SSEHUB_TEST_IO").ok().filter(|io| !io.is_empty())
}

impl Server {
    /// Starts `ssehub --listen 127.0.0.1:0 ARGS...` (unless ARGS name another
    /// `--listen`) and waits for its address line.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with(args, |_| {})
    }

    /// Like [`Server::start`], letting the caller adjust the command first.
    pub fn start_with(args: &[&str], adjust: impl FnOnce(&mut Command)) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ssehub"));
        if !args.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        command.args(args);
        // ./test.sh runs the suites a second time with SSEHUB_TEST_IO=uring.
        if let Some(io) = test_io()
            && !args.contains(&"--io")
        {
            command.args(["--io", &io]);
        }
        command.env_remove("RUST_LOG").stdin(Stdio::null()).stdout(Stdio::piped());
        if std::env::var_os("SSEHUB_TEST_LOG").is_none() {
            command.stderr(Stdio::null());
        }
        for (key, _) in std::env::vars() {
            if key.starts_with("SSEHUB_") && key != "SSEHUB_TEST_LOG" {
                command.env_remove(key);
            }
        }
        adjust(&mut command);
        let mut child = command.spawn().expect("start ssehub");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read address line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}; server exit: {:?}", child.wait()))
            .parse()
            .expect("address");
        Server { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The client side of this server.
    pub fn remote(&self) -> Remote {
        Remote { addr: self.addr }
    }

    pub fn connect(&self) -> TcpStream {
        self.remote().connect()
    }

    /// Sends raw bytes on a new connection and reads until the server closes.
    pub fn raw(&self, request: &[u8]) -> String {
        self.remote().raw(request)
    }

    /// `POST /publish` with a body; returns (status, body).
    pub fn post(&self, content_type: &str, body: &str) -> (u16, String) {
        let request = format!(
            "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let response = self.raw(request.as_bytes());
        (status_of(&response), body_of(&response).to_string())
    }

    /// Publishes a form body and returns the assigned ids.
    pub fn publish(&self, form: &str) -> Vec<String> {
        Remote { addr: self.addr }.publish(form)
    }

    pub fn subscribe(&self, query: &str) -> Subscriber {
        self.remote().subscribe_with(query, "")
    }

    /// Subscribes with extra request header lines (each ending in CRLF).
    pub fn subscribe_with(&self, query: &str, headers: &str) -> Subscriber {
        self.remote().subscribe_with(query, headers)
    }

    /// One metric's value from `/metrics` (the sample line starting with `name`).
    pub fn metric(&self, name: &str) -> u64 {
        self.remote().metric(name)
    }

    /// Polls a metric until `ready` holds: for state that has no event to await on the wire.
    pub fn wait_metric(&self, name: &str, ready: impl Fn(u64) -> bool) -> u64 {
        self.remote().wait_metric(name, ready)
    }

    /// Sends a signal and waits for the process to exit; returns its exit code.
    pub fn signal_and_wait(&mut self, signal: i32) -> Option<i32> {
        self::signal(self.child.id(), signal);
        self.wait_exit()
    }

    /// Waits for the process to exit (after a signal sent elsewhere); returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client of a server owned elsewhere (another thread, a proxy in front).
pub struct Remote {
    pub addr: SocketAddr,
}

impl Remote {
    /// One metric's value from `/metrics` (the sample line starting with `name`).
    pub fn metric(&self, name: &str) -> u64 {
        let text = self.raw(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        body_of(&text)
            .lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no metric {name}"))
            .parse()
            .expect("metric value")
    }

    /// Polls a metric until `ready` holds: for state that has no event to await on the wire.
    pub fn wait_metric(&self, name: &str, ready: impl Fn(u64) -> bool) -> u64 {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let value = self.metric(name);
            if ready(value) {
                return value;
            }
            assert!(Instant::now() < deadline, "metric {name} stuck at {value}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        stream
    }

    /// Sends raw bytes on a new connection and reads until the server closes.
    pub fn raw(&self, request: &[u8]) -> String {
        let mut stream = self.connect();
        stream.write_all(request).expect("send");
        read_to_close(&mut stream)
    }

    pub fn subscribe(&self, query: &str) -> Subscriber {
        self.subscribe_with(query, "")
    }

    /// Subscribes with extra request header lines (each ending in CRLF).
    pub fn subscribe_with(&self, query: &str, headers: &str) -> Subscriber {
        let mut stream = self.connect();
        write!(stream, "GET /events?{query} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").expect("send");
        Subscriber::read_head(stream)
    }

    /// Subscribes as an HTTP/1.0 client: through a proxy, the stream then
    /// stays close-delimited (no chunked framing) and ends with the connection.
    pub fn subscribe_http10(&self, query: &str, headers: &str) -> Subscriber {
        let mut stream = self.connect();
        write!(stream, "GET /events?{query} HTTP/1.0\r\n{headers}\r\n").expect("send");
        Subscriber::read_head(stream)
    }

    pub fn publish(&self, form: &str) -> Vec<String> {
        let request = format!(
            "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        );
        let response = self.raw(request.as_bytes());
        assert_eq!(status_of(&response), 200, "{response}");
        body_of(&response).lines().map(str::to_owned).collect()
    }
}

/// Reads until EOF (or a reset after the response), failing on timeout.
pub fn read_to_close(stream: &mut TcpStream) -> String {
    read_all(stream, true)
}

/// Reads until the server closes the connection cleanly; fails on a reset
/// (which would have destroyed answers not yet read) or a timeout.
pub fn read_to_eof(stream: &mut TcpStream) -> String {
    read_all(stream, false)
}

/// Reads to EOF; a reset ends the read when `reset_ends` is set, else fails.
fn read_all(stream: &mut TcpStream, reset_ends: bool) -> String {
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if reset_ends && e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&out)),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A keep-alive publish request of a form body, with extra header lines (each ending in CRLF).
pub fn publish_request(form: &str, headers: &str) -> String {
    format!("POST /publish HTTP/1.1\r\nHost: t\r\n{headers}Content-Length: {}\r\n\r\n{form}", form.len())
}

/// Sends a signal to a process of ours.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions; the pid is a child this test started.
    unsafe { libc::kill(pid as i32, signal) };
}

/// Reads one complete HTTP response (head and Content-Length body) from a keep-alive connection.
pub fn read_response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> String {
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = find(pending, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .map_or(0, |v| v.parse().expect("length"));
            if pending.len() >= end + 4 + length {
                let response: Vec<u8> = pending.drain(..end + 4 + length).collect();
                return String::from_utf8_lossy(&response).into_owned();
            }
        }
        let n = stream.read(&mut buf).expect("read response");
        assert!(n > 0, "closed mid-response: {:?}", String::from_utf8_lossy(pending));
        pending.extend_from_slice(&buf[..n]);
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub fn status_of(response: &str) -> u16 {
    response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {response:?}"))
}

pub fn body_of(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// A header's value in a response head (case-insensitive name).
pub fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A subscriber reading its stream through the reference parser, taking
/// the chunked framing off first when the head announces it (strictly: a
/// malformed chunk fails the test).
pub struct Subscriber {
    pub stream: TcpStream,
    pub head: String, // the response head
    parser: EventStreamParser,
    chunked: Option<ChunkedDecoder>,
    events: VecDeque<ParsedEvent>,
    pub closed: bool,
    /// The body ended with the terminating chunk (a clean end, not an abort).
    pub ended_cleanly: bool,
    /// The first bytes of the body, unframed (for checks on the opening).
    pub body_start: Vec<u8>,
}

/// How much of a body [`Subscriber::body_start`] keeps.
const BODY_START: usize = 4096;

impl Subscriber {
    pub fn read_head(mut stream: TcpStream) -> Subscriber {
        let mut pending = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            if let Some(end) = find(&pending, b"\r\n\r\n") {
                break end;
            }
            let n = stream.read(&mut buf).expect("read head");
            assert!(n > 0, "closed before the head: {:?}", String::from_utf8_lossy(&pending));
            pending.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&pending[..end + 4]).into_owned();
        let chunked = header(&head, "transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
            .then(|| ChunkedDecoder::new(u64::MAX, Line::Strict));
        let mut subscriber = Subscriber {
            stream,
            head,
            parser: EventStreamParser::new(),
            chunked,
            events: VecDeque::new(),
            closed: false,
            ended_cleanly: false,
            body_start: Vec::new(),
        };
        let rest = pending[end + 4..].to_vec();
        subscriber.feed(&rest);
        subscriber
    }

    /// Body bytes as they arrived: unframed, then parsed.
    fn feed(&mut self, bytes: &[u8]) {
        let Some(decoder) = &mut self.chunked else {
            let keep = BODY_START.saturating_sub(self.body_start.len()).min(bytes.len());
            self.body_start.extend_from_slice(&bytes[..keep]);
            self.events.extend(self.parser.feed(bytes));
            return;
        };
        assert!(!decoder.is_done(), "bytes after the terminating chunk: {:?}", String::from_utf8_lossy(bytes));
        let mut body = Vec::new();
        let decoded = decoder
            .decode(bytes, &mut |data: &[u8]| body.extend_from_slice(data))
            .unwrap_or_else(|e| panic!("malformed chunked stream ({e:?}): {:?}", String::from_utf8_lossy(bytes)));
        assert_eq!(decoded.consumed, bytes.len(), "bytes after the terminating chunk");
        self.ended_cleanly = decoded.done;
        let keep = BODY_START.saturating_sub(self.body_start.len()).min(body.len());
        self.body_start.extend_from_slice(&body[..keep]);
        self.events.extend(self.parser.feed(&body));
    }

    pub fn status(&self) -> u16 {
        status_of(&self.head)
    }

    /// Reads more of the stream; false once the server closed it.
    fn read_more(&mut self) -> bool {
        let mut buf = [0u8; 16384];
        match self.stream.read(&mut buf) {
            Ok(0) => {
                self.closed = true;
                false
            }
            Ok(n) => {
                self.feed(&buf[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                self.closed = true;
                false
            }
            Err(e) => panic!("read stream: {e}"),
        }
    }

    /// The next event; panics if the stream ends or times out first.
    pub fn next_event(&mut self) -> ParsedEvent {
        loop {
            if let Some(event) = self.events.pop_front() {
                return event;
            }
            assert!(self.read_more(), "stream closed while waiting for an event");
        }
    }

    /// The next event, or None once the stream has ended.
    pub fn try_next_event(&mut self) -> Option<ParsedEvent> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            if !self.read_more() {
                return None;
            }
        }
    }

    pub fn next_events(&mut self, n: usize) -> Vec<ParsedEvent> {
        (0..n).map(|_| self.next_event()).collect()
    }

    /// Reads until the server closes the stream; returns the events seen meanwhile.
    pub fn read_until_closed(&mut self) -> Vec<ParsedEvent> {
        while self.read_more() {}
        self.events.drain(..).collect()
    }

    /// Comment lines (heartbeats) seen so far.
    pub fn comments(&self) -> usize {
        self.parser.comments()
    }

    /// Reads until `n` comment lines have been seen.
    pub fn wait_comments(&mut self, n: usize) {
        while self.parser.comments() < n {
            assert!(self.read_more(), "stream closed while waiting for heartbeats");
        }
    }

    pub fn reconnection_time(&self) -> Option<u64> {
        self.parser.reconnection_time()
    }
}

/// A subscriber with a tiny receive buffer that never reads after the head
/// (until the test reads it): the hub's writes to it soon block.
pub fn stalled_subscriber(server: &Server, topic: &str) -> Subscriber {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&server.addr.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    write!(stream, "GET /events?topic={topic} HTTP/1.1\r\nHost: t\r\n\r\n").expect("request");
    Subscriber::read_head(stream)
}

/// Reads `stalled` to its end once the hub has dropped a slow consumer, on
/// a thread: the hub lingers only 2 s for the end of a dropped stream to be
/// read, however long the test still publishes. Gives the events and
/// whether the stream ended cleanly.
pub fn read_once_dropped(
    server: &Server,
    mut stalled: Subscriber,
) -> std::thread::JoinHandle<(Vec<ParsedEvent>, bool)> {
    let remote = server.remote();
    std::thread::spawn(move || {
        remote.wait_metric("ssehub_slow_consumers_dropped_total", |n| n >= 1);
        let seen = stalled.read_until_closed();
        (seen, stalled.ended_cleanly)
    })
}

/// A private `redis-server` on a free port, persistence off unless asked,
/// stopped by pid when dropped. Needs `redis-server` on the PATH (.ci/run installs it).
pub struct Redis {
    child: Child,
    pub port: u16,
    pub dir: std::path::PathBuf,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_in(temp_dir("redis"), None, false)
    }

    /// Starts in `dir` (reusing its data) on `port` (a free one if None);
    /// with `durable`, every write is fsynced to an append-only file first.
    pub fn start_in(dir: std::path::PathBuf, port: Option<u16>, durable: bool) -> Redis {
        let port = port.unwrap_or_else(free_port);
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut command = Command::new("redis-server");
        command.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""]);
        command.arg("--dir").arg(&dir);
        if durable {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        command.stdout(Stdio::null()).stderr(Stdio::null()).stdin(Stdio::null());
        let child = command.spawn().expect("start redis-server (is it installed?)");
        let redis = Redis { child, port, dir };
        let deadline = Instant::now() + TIMEOUT;
        while redis.client().get_connection().and_then(|mut c| redis::cmd("PING").query::<String>(&mut c)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not come up on {port}");
            std::thread::sleep(Duration::from_millis(10));
        }
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// SIGSTOP: Redis stays connected but answers nothing (a frozen server, a black hole).
    pub fn freeze(&self) {
        signal(self.child.id(), libc::SIGSTOP);
    }

    /// SIGCONT: Redis runs again and handles what was sent meanwhile.
    pub fn thaw(&self) {
        signal(self.child.id(), libc::SIGCONT);
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("client")
    }

    /// `XADD stream * field value ...` as an application would.
    pub fn xadd(&self, stream: &str, fields: &[(&str, &[u8])]) -> String {
        let mut conn = self.client().get_connection().expect("connect");
        let mut command = redis::cmd("XADD");
        command.arg(stream).arg("*");
        for (name, value) in fields {
            command.arg(*name).arg(*value);
        }
        command.query(&mut conn).expect("xadd")
    }

    /// Kills the server (SIGKILL) and waits for it; returns its data dir and port for a restart.
    pub fn kill(mut self) -> (std::path::PathBuf, u16) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (std::mem::take(&mut self.dir), self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A fresh directory name under the system temp dir.
pub fn temp_dir(what: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ssehub-{what}-{}-{}", std::process::id(), unique()))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl Server {
    /// Starts a cluster node on `redis`, waiting until it follows the stream.
    pub fn node(redis: &Redis, args: &[&str]) -> Server {
        Self::node_at(&redis.url(), args)
    }

    /// Starts a cluster node on the Redis at `url` (a relay, say), waiting until it follows the stream.
    pub fn node_at(url: &str, args: &[&str]) -> Server {
        let mut all = vec!["--redis", url];
        all.extend_from_slice(args);
        let server = Server::start(&all);
        server.wait_ready();
        server
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + TIMEOUT;
        while status_of(&self.raw(b"GET /readyz HTTP/1.0\r\n\r\n")) != 200 {
            assert!(Instant::now() < deadline, "node never became ready");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
