//! `ssehub-bench floor`: the minimal SSE fan-out server, i.e. the physical
//! floor of this machine for "deliver one event to N sockets".
//!
//! It accepts connections, reads the request head and does nothing else with
//! it but look at the method. A `POST` is a publish: its body's `data=`
//! value (form-decoded; or the raw body if there is none) becomes the frame
//! `data: <value>\n\n` (a value with line breaks becomes several `data:`
//! lines), the frame is written to every subscriber with exactly one
//! `write` each, and the publisher gets `200` with `Content-Length: 0` on a
//! keep-alive connection. Anything else is a subscriber: it gets one
//! `200 OK` + `Content-Type: text/event-stream` head and then frames, until
//! it closes. There are no topics, buffers or bookkeeping.
//!
//! What keeps it honest, i.e. minimal but correct: a subscriber whose socket
//! cannot take a whole frame in one write (a short write or EAGAIN) is
//! disconnected, never sent a torn frame; closed subscribers are noticed
//! (EOF/RST) and their descriptors released at once; sockets have
//! TCP_NODELAY so frames are not held back by Nagle. With `--threads N`, N
//! reactors each accept on their own SO_REUSEPORT listener and a publish
//! received by one is handed (as a shared frame) to all others.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use crate::FloorArgs;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX);
const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";
const PUB_OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
/// Largest request (head + body) accepted.
const MAX_REQUEST: usize = 1 << 20;
const STATS_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
struct ShardStats {
    subscribers: AtomicU64,
    accepted: AtomicU64,
    publishes: AtomicU64,
    writes: AtomicU64,
    /// Subscribers cut off because a frame did not fit in one write.
    dropped_slow: AtomicU64,
    accept_errors: AtomicU64,
}

type Frame = Arc<[u8]>;

pub fn run(args: &FloorArgs) -> io::Result<()> {
    let n = args.threads.max(1);
    let deadline = args.exit_after.map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut polls = Vec::with_capacity(n);
    let mut peers = Vec::with_capacity(n);
    let mut rxs = Vec::with_capacity(n);
    for _ in 0..n {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel::<Frame>();
        polls.push(poll);
        peers.push((tx, waker));
        rxs.push(rx);
    }
    let stats: Arc<Vec<ShardStats>> = Arc::new((0..n).map(|_| ShardStats::default()).collect());
    let mut shards = Vec::with_capacity(n);
    for (id, (poll, rx)) in polls.into_iter().zip(rxs).enumerate() {
        let mut listener = listen(args.listen, n > 1)?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let others = peers.iter().enumerate().filter(|(j, _)| *j != id).map(|(_, p)| p.clone()).collect();
        shards.push(Shard {
            id,
            poll,
            listener,
            rx,
            peers: others,
            conns: Vec::new(),
            free: Vec::new(),
            subs: Vec::new(),
            scratch: vec![0; 16 * 1024],
            stats: Arc::clone(&stats),
            deadline,
            quiet: args.quiet,
        });
    }
    eprintln!("floor: listening on {} (pid {}, {} thread(s))", args.listen, std::process::id(), n);
    let mut handles = Vec::new();
    let mut first = None;
    for shard in shards {
        if shard.id == 0 {
            first = Some(shard);
        } else {
            handles.push(thread::Builder::new().name(format!("floor-{}", shard.id)).spawn(move || shard.run())?);
        }
    }
    let result = match first {
        Some(s) => s.run(),
        None => Ok(()),
    };
    for h in handles {
        h.join().map_err(|_| io::Error::other("floor thread panicked"))??;
    }
    result
}

fn listen(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(TcpListener::from_std(sock.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Request head not complete yet.
    Pending,
    /// Index in `Shard::subs`.
    Subscriber(usize),
    Publisher,
}

struct FConn {
    stream: TcpStream,
    kind: Kind,
    buf: Vec<u8>,
}

struct Shard {
    id: usize,
    poll: Poll,
    listener: TcpListener,
    rx: mpsc::Receiver<Frame>,
    peers: Vec<(mpsc::Sender<Frame>, Arc<Waker>)>,
    conns: Vec<Option<FConn>>,
    free: Vec<usize>,
    /// Slots of the subscribers, in no particular order.
    subs: Vec<usize>,
    scratch: Vec<u8>,
    stats: Arc<Vec<ShardStats>>,
    deadline: Option<Instant>,
    quiet: bool,
}

impl Shard {
    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_stats = Instant::now() + STATS_EVERY;
        let mut last_line = String::new();
        loop {
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) {
                return Ok(());
            }
            let timeout = self.deadline.map_or(Duration::from_secs(1), |d| (d - now).min(Duration::from_secs(1)));
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {
                        while let Ok(frame) = self.rx.try_recv() {
                            self.write_all_subscribers(&frame);
                        }
                    }
                    Token(slot) => self.readable(slot),
                }
            }
            if self.id == 0 && !self.quiet && Instant::now() >= next_stats {
                next_stats += STATS_EVERY;
                let line = self.stats_line();
                if line != last_line {
                    eprintln!("{line}");
                    last_line = line;
                }
            }
        }
    }

    fn stats_line(&self) -> String {
        let sum = |f: fn(&ShardStats) -> &AtomicU64| -> u64 { self.stats.iter().map(|s| f(s).load(Relaxed)).sum() };
        format!(
            "floor: {} subscribers, {} accepted, {} publishes, {} writes, {} dropped (slow), {} accept errors",
            sum(|s| &s.subscribers),
            sum(|s| &s.accepted),
            sum(|s| &s.publishes),
            sum(|s| &s.writes),
            sum(|s| &s.dropped_slow),
            sum(|s| &s.accept_errors),
        )
    }

    fn my_stats(&self) -> &ShardStats {
        &self.stats[self.id]
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let slot = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    let ok = stream.set_nodelay(true).is_ok()
                        && self.poll.registry().register(&mut stream, Token(slot), Interest::READABLE).is_ok();
                    if !ok {
                        self.free.push(slot);
                        self.my_stats().accept_errors.fetch_add(1, Relaxed);
                        continue;
                    }
                    self.conns[slot] = Some(FConn { stream, kind: Kind::Pending, buf: Vec::new() });
                    self.my_stats().accepted.fetch_add(1, Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // EMFILE and friends: the pending connection stays queued
                    // and is retried on the next listener event.
                    self.my_stats().accept_errors.fetch_add(1, Relaxed);
                    return;
                }
            }
        }
    }

    fn readable(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        // Read until EAGAIN: subscribers' bytes are discarded, request bytes
        // are kept until a request is complete.
        let keep = !matches!(conn.kind, Kind::Subscriber(_));
        loop {
            match conn.stream.read(&mut self.scratch) {
                Ok(0) => return self.close(slot),
                Ok(n) => {
                    if keep {
                        if conn.buf.len() + n > MAX_REQUEST {
                            return self.close(slot);
                        }
                        conn.buf.extend_from_slice(&self.scratch[..n]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(slot),
            }
        }
        if keep {
            self.requests(slot);
        }
    }

    /// Handles every complete request buffered on `slot`.
    fn requests(&mut self, slot: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            let Some(head_end) = find(&conn.buf, b"\r\n\r\n").map(|p| p + 4) else {
                return;
            };
            if conn.kind == Kind::Pending && !conn.buf.starts_with(b"POST ") {
                // A subscriber: one head, then frames.
                conn.buf = Vec::new();
                if !matches!(conn.stream.write(SSE_HEAD), Ok(n) if n == SSE_HEAD.len()) {
                    return self.close(slot);
                }
                conn.kind = Kind::Subscriber(self.subs.len());
                self.subs.push(slot);
                self.my_stats().subscribers.fetch_add(1, Relaxed);
                return;
            }
            conn.kind = Kind::Publisher;
            let Some(len) = content_length(&conn.buf[..head_end]) else {
                return self.close(slot);
            };
            if conn.buf.len() < head_end + len {
                return;
            }
            let frame: Frame = frame_from_body(&conn.buf[head_end..head_end + len]).into();
            conn.buf.drain(..head_end + len);
            let mut sent = 0;
            while sent < PUB_OK.len() {
                match conn.stream.write(&PUB_OK[sent..]) {
                    Ok(n) if n > 0 => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // A publisher that does not read its responses.
                    _ => return self.close(slot),
                }
            }
            self.my_stats().publishes.fetch_add(1, Relaxed);
            for (tx, waker) in &self.peers {
                if tx.send(Arc::clone(&frame)).is_ok() {
                    let _ = waker.wake();
                }
            }
            self.write_all_subscribers(&frame);
        }
    }

    /// The fan-out: one `write` per subscriber.
    fn write_all_subscribers(&mut self, frame: &[u8]) {
        let mut i = 0;
        let mut writes = 0;
        while i < self.subs.len() {
            let slot = self.subs[i];
            let ok = match self.conns[slot].as_mut() {
                Some(c) => matches!(c.stream.write(frame), Ok(n) if n == frame.len()),
                None => false,
            };
            writes += 1;
            if ok {
                i += 1;
            } else {
                // Short write, EAGAIN or error: never leave a torn frame.
                self.my_stats().dropped_slow.fetch_add(1, Relaxed);
                self.close(slot); // swap_removes subs[i]
            }
        }
        self.my_stats().writes.fetch_add(writes, Relaxed);
    }

    fn close(&mut self, slot: usize) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.free.push(slot);
        if let Kind::Subscriber(pos) = conn.kind {
            self.subs.swap_remove(pos);
            if let Some(&moved) = self.subs.get(pos) {
                if let Some(c) = self.conns[moved].as_mut() {
                    c.kind = Kind::Subscriber(pos);
                }
            }
            self.my_stats().subscribers.fetch_sub(1, Relaxed);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Content-Length of a request head: 0 if absent; None if invalid or if the
/// body is chunked (not supported: the connection is closed).
fn content_length(head: &[u8]) -> Option<usize> {
    let mut len = 0;
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return None;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            len = std::str::from_utf8(&line[colon + 1..]).ok()?.trim().parse().ok()?;
        }
    }
    Some(len)
}

/// `data: <value>\n\n` from a publish body: the form field `data`, decoded,
/// or the raw body if there is no such field.
fn frame_from_body(body: &[u8]) -> Vec<u8> {
    let field = body.split(|&b| b == b'&').find_map(|kv| kv.strip_prefix(b"data="));
    let value = match field {
        Some(v) => form_decode(v),
        None => body.to_vec(),
    };
    let mut f = Vec::with_capacity(value.len() + 8);
    f.extend_from_slice(b"data: ");
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'\r' => {
                if value.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                f.extend_from_slice(b"\ndata: ");
            }
            b'\n' => f.extend_from_slice(b"\ndata: "),
            b => f.push(b),
        }
        i += 1;
    }
    f.extend_from_slice(b"\n\n");
    f
}

fn form_decode(v: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < v.len() => match (hex(v[i + 1]), hex(v[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssehub_protocol::sse::SseParser;

    #[test]
    fn frames_from_form_and_raw_bodies() {
        assert_eq!(frame_from_body(b"topic=t0&data=1:2:abc"), b"data: 1:2:abc\n\n");
        assert_eq!(frame_from_body(b"data=a+b%3Ac&topic=x"), b"data: a b:c\n\n");
        assert_eq!(frame_from_body(b"raw text"), b"data: raw text\n\n");
        assert_eq!(frame_from_body(b"data=x%0Ay%0D%0Az"), b"data: x\ndata: y\ndata: z\n\n");
        assert_eq!(frame_from_body(b"data=100%"), b"data: 100%\n\n");
        assert_eq!(frame_from_body(b"data=%4"), b"data: %4\n\n");
        // Whatever goes in comes out of an SSE parser unchanged.
        let mut p = SseParser::new(1024);
        let mut got = Vec::new();
        p.feed(&frame_from_body(b"a\r\nb\rc\nd"), &mut |e| got.push(e.data.to_vec())).unwrap();
        assert_eq!(got, vec![b"a\nb\nc\nd".to_vec()]);
    }

    #[test]
    fn content_length_parsing() {
        assert_eq!(content_length(b"POST / HTTP/1.1\r\ncontent-LENGTH: 12\r\n\r\n"), Some(12));
        assert_eq!(content_length(b"POST / HTTP/1.1\r\n\r\n"), Some(0));
        assert_eq!(content_length(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), None);
        assert_eq!(content_length(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), None);
    }

    /// End to end over loopback: two subscribers, one publish, exact bytes.
    #[test]
    fn serves_subscribers_and_publishes() {
        use std::net::TcpStream as Std;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let args = FloorArgs { listen: addr, threads: 2, exit_after: Some(1.5), quiet: true };
        let server = thread::spawn(move || run(&args));
        let connect = || loop {
            if let Ok(s) = Std::connect(addr) {
                return s;
            }
            thread::sleep(Duration::from_millis(10));
        };
        let mut subs: Vec<Std> = (0..4).map(|_| connect()).collect();
        for s in &mut subs {
            s.write_all(b"GET /events?topic=x HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut head = vec![0; SSE_HEAD.len()];
            s.read_exact(&mut head).unwrap();
            assert_eq!(head, SSE_HEAD);
        }
        let mut p = connect();
        p.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        for body in ["topic=x&data=hello", "data=again"] {
            let req = format!("POST /publish HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            p.write_all(req.as_bytes()).unwrap();
            let mut resp = vec![0; PUB_OK.len()];
            p.read_exact(&mut resp).unwrap();
            assert_eq!(resp, PUB_OK);
        }
        for s in &mut subs {
            let want = b"data: hello\n\ndata: again\n\n";
            let mut got = vec![0; want.len()];
            s.read_exact(&mut got).unwrap();
            assert_eq!(&got, want);
        }
        drop(subs);
        drop(p);
        server.join().unwrap().unwrap();
    }
}
