//! The subscriber side: one worker thread per `--threads`, each with its own
//! `mio::Poll` and its share of the subscriber connections.
//!
//! A connection goes connect → send GET → read the response head → stream.
//! Connects are paced (`--connect-rate`, split across workers) and bounded
//! in flight (`--max-inflight`); each gets a deadline (`--connect-timeout`).
//! Failures and later drops are counted by cause, never unwrapped.
//!
//! The hot path is allocation-free: every read lands in one reused per-worker
//! buffer and flows through the connection's incremental body decoder
//! (close-delimited, Content-Length or chunked), its incremental SSE parser,
//! then payload decoding, the latency histogram and the per-subscriber
//! sequence tracker. The receive time is taken once per read, right after it
//! returns: every event in that read arrived by then.
//!
//! The coordinator drives workers with [`Cmd`]s (open N, close N churners,
//! finish) through a channel plus a `mio::Waker`, and watches them through
//! relaxed atomics in [`Counters`]; at `Finish` a worker settles every
//! subscriber's accounting and returns a [`WorkerReport`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use crate::cause::{Cause, CauseCounts};
use crate::http::{self, BodyDecoder, HeadBuffer};
use crate::payload;
use crate::stats::{self, LossStats, Outcome, Seen, SubscriberTrack};
use crate::sys;
use crate::template::{Template, Vars};
use ssehub_protocol::sse::parse::{Event as SseEvent, SseParser};

const WAKER: Token = Token(usize::MAX);
const READ_BUF: usize = 64 * 1024;
/// How often a worker recounts caught-up subscribers and publishes counters.
const HOUSEKEEPING_NS: u64 = 20_000_000;

/// What every worker needs to know, shared read-only.
pub struct SubSetup {
    pub addr: SocketAddr,
    /// More servers to spread subscribers over (subscriber `id` uses
    /// `[addr, spread...][id % (1 + len)]`): the nodes of a cluster.
    pub spread: Vec<SocketAddr>,
    pub host: String,
    /// Extra request headers (`Name: value`), e.g. a token.
    pub headers: Vec<String>,
    /// Subscriber `id` sends `Authorization: Bearer tokens[id % len]`
    /// (empty: none). The length is a multiple of `topics`, so the token's
    /// grant is for the subscriber's own topics.
    pub tokens: Vec<String>,
    pub path: Template,
    /// Topic index → name; the broadcast topic, if any, is the last one.
    pub topic_names: Arc<Vec<String>>,
    /// Subscriber `id` subscribes to topic `id % topics` ...
    pub topics: u32,
    /// ... plus this one, if set.
    pub broadcast: Option<u32>,
    /// K in `seq = n * K + topic`.
    pub modulus: u64,
    /// Source addresses to bind (subscriber `id` uses `id % len`); empty:
    /// let the kernel choose.
    pub source_ips: Vec<IpAddr>,
    /// Connects per second for this worker (`f64::INFINITY`: unpaced).
    pub connect_rate: f64,
    pub max_inflight: usize,
    pub connect_timeout_ns: u64,
    pub max_line: usize,
    /// Successful publishes per topic so far (written by the publisher).
    pub published: Arc<[AtomicU64]>,
    /// Bumped by the coordinator (Release); see [`Counters::snapshot_epoch`].
    pub epoch: AtomicU64,
}

impl SubSetup {
    pub fn topics_of(&self, id: u64) -> ([u32; 2], usize) {
        let own = (id % u64::from(self.topics)) as u32;
        match self.broadcast {
            Some(b) => ([own, b], 2),
            None => ([own, 0], 1),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Connected before publishing starts and kept to the end.
    Stayer = 0,
    /// Opened and closed during the run (churn, soak).
    Churner = 1,
}

pub enum Cmd {
    Open { count: u64, class: Class },
    CloseChurners { count: u64 },
    Finish,
}

/// Live numbers for the coordinator (progress line, phase changes, samples).
/// Written by one worker with relaxed stores; aligned so two workers'
/// counters never share a cache line.
#[repr(align(128))]
#[derive(Default)]
pub struct Counters {
    pub attempted: [AtomicU64; 2],
    pub established: [AtomicU64; 2],
    pub failed: [AtomicU64; 2],
    pub open: [AtomicU64; 2],
    pub dropped: AtomicU64,
    pub churn_closed: AtomicU64,
    pub inflight: AtomicU64,
    pub deliveries: AtomicU64,
    pub foreign: AtomicU64,
    pub wrong_topic: AtomicU64,
    pub duplicates: AtomicU64,
    /// Missing events detected so far (the reorder window slid past them).
    pub missing_live: AtomicU64,
    /// Open stayers that have every event published so far.
    pub stayers_caught_up: AtomicU64,
    pub last_delivery_ns: AtomicU64,
    pub last_established_ns: AtomicU64,
    /// The [`SubSetup::epoch`] seen (Acquire) before this snapshot read the
    /// publish counts: once it reaches an epoch the coordinator bumped after
    /// the publisher finished, `stayers_caught_up` is against final counts.
    pub snapshot_epoch: AtomicU64,
}

/// Plain (non-atomic) twin of [`Counters`], owned by the worker.
#[derive(Debug, Default, Clone, Copy)]
struct Local {
    attempted: [u64; 2],
    established: [u64; 2],
    failed: [u64; 2],
    open: [u64; 2],
    dropped: u64,
    churn_closed: u64,
    deliveries: u64,
    foreign: u64,
    wrong_topic: u64,
    duplicates: u64,
    missing_live: u64,
    comments: u64,
    last_delivery_ns: u64,
    last_established_ns: u64,
}

/// Everything a worker measured, returned at `Finish`.
pub struct WorkerReport {
    pub hist: Histogram<u64>,
    pub attempted: [u64; 2],
    pub established: [u64; 2],
    pub connect_failures: [CauseCounts; 2],
    /// Established streams that ended without us closing them.
    pub drops: CauseCounts,
    pub open_at_end: [u64; 2],
    pub deliveries: u64,
    pub foreign: u64,
    pub wrong_topic: u64,
    pub comments: u64,
    pub loss: [LossStats; 2],
    /// Events the stayers still open at the end should have received.
    pub expected_stayers: u64,
    pub unique_stayers: u64,
    pub last_delivery_ns: u64,
}

pub struct WorkerHandle {
    tx: mpsc::Sender<Cmd>,
    waker: Arc<Waker>,
    pub counters: Arc<Counters>,
    join: JoinHandle<io::Result<WorkerReport>>,
}

impl WorkerHandle {
    pub fn send(&self, cmd: Cmd) {
        // A worker that already exited has reported its error via join.
        if self.tx.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }

    pub fn finish(self) -> io::Result<WorkerReport> {
        self.send(Cmd::Finish);
        self.join.join().map_err(|_| io::Error::other("subscriber worker panicked"))?
    }
}

pub fn spawn(index: usize, nthreads: usize, setup: Arc<SubSetup>) -> io::Result<WorkerHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = mpsc::channel();
    let counters = Arc::new(Counters::default());
    let c = Arc::clone(&counters);
    let join = thread::Builder::new()
        .name(format!("sub-{index}"))
        .spawn(move || Worker::new(index, nthreads, setup, poll, rx, c).run())?;
    Ok(WorkerHandle { tx, waker, counters, join })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Requesting,
    Head,
    Streaming,
}

struct Conn {
    stream: TcpStream,
    id: u64,
    class: Class,
    phase: Phase,
    req_written: usize,
    head: HeadBuffer,
    body: BodyDecoder,
    sse: SseParser,
    track: SubscriberTrack,
}

/// Per-worker measurement state, separate from the connection table so the
/// hot path can borrow both.
struct Ctx {
    setup: Arc<SubSetup>,
    hist: Histogram<u64>,
    local: Local,
    unique_stayers: u64,
}

struct Worker {
    index: u64,
    nthreads: u64,
    poll: Poll,
    rx: mpsc::Receiver<Cmd>,
    counters: Arc<Counters>,
    conns: Vec<Option<Conn>>,
    /// Generation per slot, bumped on every close: stale deadline and churn
    /// queue entries are recognised by a generation mismatch.
    gens: Vec<u32>,
    free: Vec<usize>,
    deadlines: VecDeque<(u64, usize, u32)>,
    churners: VecDeque<(usize, u32)>,
    pending: [u64; 2],
    next_local: u64,
    inflight: usize,
    allowance: f64,
    last_refill_ns: u64,
    rbuf: Vec<u8>,
    /// Scratch for rendering a request and its path.
    wbuf: Vec<u8>,
    pbuf: Vec<u8>,
    ctx: Ctx,
    connect_failures: [CauseCounts; 2],
    drops: CauseCounts,
    loss: [LossStats; 2],
}

impl Worker {
    fn new(
        index: usize,
        nthreads: usize,
        setup: Arc<SubSetup>,
        poll: Poll,
        rx: mpsc::Receiver<Cmd>,
        counters: Arc<Counters>,
    ) -> Worker {
        Worker {
            index: index as u64,
            nthreads: nthreads as u64,
            poll,
            rx,
            counters,
            conns: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            deadlines: VecDeque::new(),
            churners: VecDeque::new(),
            pending: [0; 2],
            next_local: 0,
            inflight: 0,
            allowance: 1.0,
            last_refill_ns: sys::now_ns(),
            rbuf: vec![0; READ_BUF],
            wbuf: Vec::with_capacity(512),
            pbuf: Vec::with_capacity(256),
            ctx: Ctx { setup, hist: stats::new_histogram(), local: Local::default(), unique_stayers: 0 },
            connect_failures: Default::default(),
            drops: CauseCounts::default(),
            loss: Default::default(),
        }
    }

    fn run(mut self) -> io::Result<WorkerReport> {
        let mut events = Events::with_capacity(1024);
        let mut next_housekeeping = 0u64;
        loop {
            if self.drain_commands() {
                break;
            }
            let now = sys::now_ns();
            self.start_pending(now);
            let timeout = self.poll_timeout(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                self.on_event(
                    ev.token().0,
                    ev.is_writable(),
                    ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                    ev.is_read_closed() || ev.is_error(),
                );
            }
            let now = sys::now_ns();
            self.expire(now);
            if now >= next_housekeeping {
                next_housekeeping = now + HOUSEKEEPING_NS;
                self.housekeeping();
            }
        }
        Ok(self.finish())
    }

    /// Applies queued commands; true once `Finish` arrived.
    fn drain_commands(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(Cmd::Open { count, class }) => self.pending[class as usize] += count,
                Ok(Cmd::CloseChurners { count }) => self.close_churners(count),
                Ok(Cmd::Finish) | Err(mpsc::TryRecvError::Disconnected) => return true,
                Err(mpsc::TryRecvError::Empty) => return false,
            }
        }
    }

    fn poll_timeout(&self, now: u64) -> Duration {
        let mut t = Duration::from_millis(20);
        if self.pending.iter().any(|&p| p > 0) && self.inflight < self.ctx.setup.max_inflight {
            let rate = self.ctx.setup.connect_rate;
            if !rate.is_finite() || self.allowance >= 1.0 {
                t = Duration::ZERO;
            } else {
                let wait_ns = (1.0 - self.allowance) / rate * 1e9;
                t = t.min(Duration::from_nanos(wait_ns.max(200_000.0) as u64));
            }
        }
        if let Some(&(dl, _, _)) = self.deadlines.front() {
            t = t.min(Duration::from_nanos(dl.saturating_sub(now)));
        }
        t
    }

    /// Starts as many queued connects as the pacing and in-flight bound allow.
    fn start_pending(&mut self, now: u64) {
        let rate = self.ctx.setup.connect_rate;
        if rate.is_finite() {
            let dt = now.saturating_sub(self.last_refill_ns) as f64 / 1e9;
            // Allow bursts of at most 10 ms worth of connects.
            self.allowance = (self.allowance + dt * rate).min((rate * 0.01).max(1.0));
        }
        self.last_refill_ns = now;
        for class in [Class::Stayer, Class::Churner] {
            while self.pending[class as usize] > 0 && self.inflight < self.ctx.setup.max_inflight {
                if rate.is_finite() {
                    if self.allowance < 1.0 {
                        return;
                    }
                    self.allowance -= 1.0;
                }
                self.pending[class as usize] -= 1;
                self.start_connect(class, now);
            }
        }
    }

    fn start_connect(&mut self, class: Class, now: u64) {
        let id = self.next_local * self.nthreads + self.index;
        self.next_local += 1;
        self.ctx.local.attempted[class as usize] += 1;
        let mut stream = match open_socket(&self.ctx.setup, id) {
            Ok(s) => s,
            Err(e) => {
                self.ctx.local.failed[class as usize] += 1;
                self.connect_failures[class as usize].add(Cause::of(&e));
                return;
            }
        };
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.conns.push(None);
                self.gens.push(0);
                self.conns.len() - 1
            }
        };
        if let Err(e) = self.poll.registry().register(&mut stream, Token(slot), Interest::READABLE | Interest::WRITABLE)
        {
            self.free.push(slot);
            self.ctx.local.failed[class as usize] += 1;
            self.connect_failures[class as usize].add(Cause::of(&e));
            return;
        }
        let setup = &self.ctx.setup;
        let (topics, ntopics) = setup.topics_of(id);
        self.conns[slot] = Some(Conn {
            stream,
            id,
            class,
            phase: Phase::Connecting,
            req_written: 0,
            head: HeadBuffer::default(),
            body: BodyDecoder::Close,
            sse: SseParser::new(setup.max_line),
            track: SubscriberTrack::new(&topics[..ntopics], class == Class::Stayer),
        });
        self.inflight += 1;
        let gen_ = self.gens[slot];
        self.deadlines.push_back((now + setup.connect_timeout_ns, slot, gen_));
        if class == Class::Churner {
            self.churners.push_back((slot, gen_));
        }
    }

    fn on_event(&mut self, slot: usize, writable: bool, readable: bool, closed: bool) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if conn.phase == Phase::Connecting {
            match connect_result(&conn.stream) {
                Ok(true) => conn.phase = Phase::Requesting,
                Ok(false) if closed => return self.close(slot, Some(Cause::Refused)),
                Ok(false) => return,
                Err(e) => return self.close(slot, Some(Cause::of(&e))),
            }
        }
        if conn.phase == Phase::Requesting && (writable || readable) {
            match send_request(conn, &self.ctx.setup, &mut self.wbuf, &mut self.pbuf) {
                Ok(()) => {}
                Err(e) => return self.close(slot, Some(Cause::of(&e))),
            }
        }
        if readable && matches!(conn.phase, Phase::Head | Phase::Streaming) {
            self.on_readable(slot, closed);
        }
    }

    fn on_readable(&mut self, slot: usize, closed: bool) {
        loop {
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            let n = match conn.stream.read(&mut self.rbuf) {
                Ok(0) => return self.close(slot, Some(Cause::Closed)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.close(slot, Some(Cause::of(&e))),
            };
            let now = sys::now_ns();
            match process(conn, &self.rbuf[..n], &mut self.ctx, now) {
                Ok(Step::Streaming) => {}
                Ok(Step::Established) => {
                    self.inflight -= 1;
                    let l = &mut self.ctx.local;
                    l.established[conn.class as usize] += 1;
                    l.open[conn.class as usize] += 1;
                    l.last_established_ns = now;
                }
                Ok(Step::BodyEnded) => return self.close(slot, Some(Cause::Closed)),
                Err(cause) => return self.close(slot, Some(cause)),
            }
            // A short read drained the socket: new data will raise a new
            // edge. Only when the peer has closed must we read on to EOF.
            if n < self.rbuf.len() && !closed {
                return;
            }
        }
    }

    /// Closes `slot`: `cause` is why (None: we closed it on purpose).
    fn close(&mut self, slot: usize, cause: Option<Cause>) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        // Closing the fd removes it from the epoll set anyway; a failure
        // here changes nothing.
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.gens[slot] = self.gens[slot].wrapping_add(1);
        self.free.push(slot);
        let class = conn.class as usize;
        let l = &mut self.ctx.local;
        if conn.phase != Phase::Streaming {
            self.inflight -= 1;
            if let Some(c) = cause {
                l.failed[class] += 1;
                self.connect_failures[class].add(c);
            }
            return;
        }
        l.open[class] -= 1;
        match cause {
            Some(c) => {
                l.dropped += 1;
                self.drops.add(c);
            }
            None => l.churn_closed += 1,
        }
        l.comments += conn.sse.comments();
        self.loss[class].add_subscriber(conn.track.finish(None));
    }

    fn close_churners(&mut self, mut count: u64) {
        while count > 0 {
            let Some((slot, gen_)) = self.churners.pop_front() else {
                // Not yet started: cancel queued ones instead.
                let p = &mut self.pending[Class::Churner as usize];
                *p = p.saturating_sub(count);
                return;
            };
            if self.gens[slot] == gen_ && self.conns[slot].is_some() {
                self.close(slot, None);
                count -= 1;
            }
        }
    }

    /// Fails connections whose connect deadline passed before streaming.
    fn expire(&mut self, now: u64) {
        while let Some(&(dl, slot, gen_)) = self.deadlines.front() {
            if dl > now {
                break;
            }
            self.deadlines.pop_front();
            let pending =
                self.gens[slot] == gen_ && self.conns[slot].as_ref().is_some_and(|c| c.phase != Phase::Streaming);
            if pending {
                self.close(slot, Some(Cause::Timeout));
            }
        }
    }

    fn housekeeping(&mut self) {
        let epoch = self.ctx.setup.epoch.load(Acquire);
        let published = &self.ctx.setup.published;
        let caught_up = self
            .conns
            .iter()
            .flatten()
            .filter(|c| c.class == Class::Stayer && c.phase == Phase::Streaming)
            .filter(|c| c.track.caught_up(|t| published[t as usize].load(Relaxed)))
            .count() as u64;
        let l = &self.ctx.local;
        let c = &*self.counters;
        for i in 0..2 {
            c.attempted[i].store(l.attempted[i], Relaxed);
            c.established[i].store(l.established[i], Relaxed);
            c.failed[i].store(l.failed[i], Relaxed);
            c.open[i].store(l.open[i], Relaxed);
        }
        c.dropped.store(l.dropped, Relaxed);
        c.churn_closed.store(l.churn_closed, Relaxed);
        c.inflight.store(self.inflight as u64, Relaxed);
        c.deliveries.store(l.deliveries, Relaxed);
        c.foreign.store(l.foreign, Relaxed);
        c.wrong_topic.store(l.wrong_topic, Relaxed);
        c.duplicates.store(l.duplicates, Relaxed);
        c.missing_live.store(l.missing_live, Relaxed);
        c.stayers_caught_up.store(caught_up, Relaxed);
        c.last_delivery_ns.store(l.last_delivery_ns, Relaxed);
        c.last_established_ns.store(l.last_established_ns, Relaxed);
        // Release: a reader that sees this epoch sees the counts above.
        c.snapshot_epoch.store(epoch, Release);
    }

    fn finish(mut self) -> WorkerReport {
        self.housekeeping();
        let published: Vec<u64> = self.ctx.setup.published.iter().map(|p| p.load(Relaxed)).collect();
        let mut open_at_end = [0u64; 2];
        let mut expected = 0u64;
        for conn in self.conns.iter().flatten() {
            if conn.phase != Phase::Streaming {
                continue;
            }
            let class = conn.class as usize;
            open_at_end[class] += 1;
            self.ctx.local.comments += conn.sse.comments();
            let p = |t: u32| published[t as usize];
            self.loss[class].add_subscriber(conn.track.finish(Some(&p)));
            if conn.class == Class::Stayer {
                expected += conn.track.topics().iter().map(|&t| p(t)).sum::<u64>();
            }
        }
        let l = self.ctx.local;
        WorkerReport {
            hist: self.ctx.hist,
            attempted: l.attempted,
            established: l.established,
            connect_failures: self.connect_failures,
            drops: self.drops,
            open_at_end,
            deliveries: l.deliveries,
            foreign: l.foreign,
            wrong_topic: l.wrong_topic,
            comments: l.comments,
            loss: self.loss,
            expected_stayers: expected,
            unique_stayers: self.ctx.unique_stayers,
            last_delivery_ns: l.last_delivery_ns,
        }
    }
}

/// Creates a non-blocking socket, binds the subscriber's source address if
/// configured, and starts connecting.
fn open_socket(setup: &SubSetup, id: u64) -> io::Result<TcpStream> {
    let server = match (id % (1 + setup.spread.len() as u64)) as usize {
        0 => setup.addr,
        k => setup.spread[k - 1],
    };
    let sock = Socket::new(Domain::for_address(server), Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))?;
    if !setup.source_ips.is_empty() {
        let ip = setup.source_ips[(id % setup.source_ips.len() as u64) as usize];
        sys::set_bind_address_no_port(&sock)?;
        sock.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match sock.connect(&server.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(sock.into()))
}

/// Outcome of a non-blocking connect after a readiness event:
/// Ok(true) connected, Ok(false) still in progress.
fn connect_result(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes (the rest of) the GET request. The request is re-rendered into
/// the worker's scratch buffer each time instead of being stored per
/// connection; it is deterministic in the subscriber id.
fn send_request(conn: &mut Conn, setup: &SubSetup, buf: &mut Vec<u8>, path: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    path.clear();
    let (topics, n) = setup.topics_of(conn.id);
    let names = &setup.topic_names;
    let vars = Vars {
        topic: &names[topics[0] as usize],
        broadcast: if n > 1 { &names[topics[1] as usize] } else { "" },
        data: b"",
    };
    setup.path.render_into(path, &vars);
    let token =
        (!setup.tokens.is_empty()).then(|| setup.tokens[(conn.id % setup.tokens.len() as u64) as usize].as_str());
    http::write_get(buf, &setup.host, path, &setup.headers, token);
    while conn.req_written < buf.len() {
        match conn.stream.write(&buf[conn.req_written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => conn.req_written += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    conn.phase = Phase::Head;
    Ok(())
}

enum Step {
    Streaming,
    /// The 200 head just completed.
    Established,
    /// A length-delimited or chunked body ended: the stream is over.
    BodyEnded,
}

/// Pushes one read's bytes through head parsing, body decoding, SSE parsing
/// and accounting.
fn process(conn: &mut Conn, mut data: &[u8], ctx: &mut Ctx, now: u64) -> Result<Step, Cause> {
    let mut step = Step::Streaming;
    if conn.phase == Phase::Head {
        match conn.head.push(data) {
            Err(_) => return Err(Cause::Protocol),
            Ok(None) => return Ok(Step::Streaming),
            Ok(Some((head, used))) => {
                conn.head.release();
                if head.status != 200 {
                    return Err(Cause::Http(head.status));
                }
                conn.body = BodyDecoder::new(head.framing);
                conn.phase = Phase::Streaming;
                step = Step::Established;
                data = &data[used..];
            }
        }
    }
    let Conn { body, sse, track, class, .. } = conn;
    let class = *class;
    let mut sse_err = false;
    body.feed(data, |chunk| {
        if !sse_err {
            let mut on_event = |ev: SseEvent<'_>| ctx.on_event(track, class, ev.data, now);
            sse_err = sse.feed(chunk, &mut on_event).is_err();
        }
    })
    .map_err(|_| Cause::Protocol)?;
    if sse_err {
        return Err(Cause::Protocol);
    }
    if body.is_done() {
        return Ok(Step::BodyEnded);
    }
    Ok(step)
}

impl Ctx {
    fn on_event(&mut self, track: &mut SubscriberTrack, class: Class, data: &[u8], now: u64) {
        let l = &mut self.local;
        let Some((seq, send_ns)) = payload::decode(data) else {
            l.foreign += 1;
            return;
        };
        l.deliveries += 1;
        l.last_delivery_ns = now;
        self.hist.saturating_record(now.saturating_sub(send_ns).max(1));
        let m = self.setup.modulus;
        let (outcome, slid) = track.observe((seq % m) as u32, seq / m);
        l.missing_live += slid;
        match outcome {
            Outcome::Seen(Seen::New | Seen::Late) => {
                if class == Class::Stayer {
                    self.unique_stayers += 1;
                }
            }
            Outcome::Seen(Seen::Duplicate) => l.duplicates += 1,
            Outcome::WrongTopic => l.wrong_topic += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Instant;

    /// Serves every connection with `head`, then `seqs` as SSE events
    /// (chunked if `chunked`), written a few bytes at a time, then holds
    /// the connection until the client closes it.
    fn serve(head: &'static str, seqs: &'static [u64], chunked: bool) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                thread::spawn(move || {
                    let mut req = Vec::new();
                    let mut b = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&b[..n]),
                        }
                    }
                    assert!(req.starts_with(b"GET /events?topic=t0 HTTP/1.1\r\n"));
                    let mut body = Vec::new();
                    for &seq in seqs {
                        let mut data = Vec::new();
                        payload::encode(&mut data, seq, sys::now_ns(), 40);
                        body.extend_from_slice(b": ping\r\ndata: ");
                        body.extend_from_slice(&data);
                        body.extend_from_slice(b"\r\n\r\n");
                    }
                    if s.write_all(head.as_bytes()).is_err() {
                        return;
                    }
                    for piece in body.chunks(7) {
                        let framed = if chunked {
                            let mut f = format!("{:x}\r\n", piece.len()).into_bytes();
                            f.extend_from_slice(piece);
                            f.extend_from_slice(b"\r\n");
                            f
                        } else {
                            piece.to_vec()
                        };
                        if s.write_all(&framed).is_err() {
                            return;
                        }
                        thread::sleep(Duration::from_micros(200));
                    }
                    while matches!(s.read(&mut b), Ok(n) if n > 0) {}
                });
            }
        });
        addr
    }

    fn setup(addr: SocketAddr, published: u64) -> Arc<SubSetup> {
        Arc::new(SubSetup {
            addr,
            spread: Vec::new(),
            host: addr.to_string(),
            headers: Vec::new(),
            tokens: Vec::new(),
            path: Template::parse("/events?topic={topic}"),
            topic_names: Arc::new(vec!["t0".into()]),
            topics: 1,
            broadcast: None,
            modulus: 1,
            source_ips: Vec::new(),
            connect_rate: f64::INFINITY,
            max_inflight: 100,
            connect_timeout_ns: 5_000_000_000,
            max_line: 4096,
            published: vec![AtomicU64::new(published)].into(),
            epoch: AtomicU64::new(0),
        })
    }

    /// Opens `n` stayers and finishes once `done(counters)` or 5 s.
    fn run(setup: Arc<SubSetup>, n: u64, done: impl Fn(&Counters) -> bool) -> WorkerReport {
        let w = spawn(0, 1, setup).unwrap();
        w.send(Cmd::Open { count: n, class: Class::Stayer });
        let t0 = Instant::now();
        while !done(&w.counters) && t0.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(5));
        }
        w.finish().unwrap()
    }

    #[test]
    fn chunked_stream_end_to_end() {
        const SEQS: &[u64] = &[0, 1, 2, 3, 4, 5, 6, 7];
        let addr = serve(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            SEQS,
            true,
        );
        let r = run(setup(addr, 8), 5, |c| c.stayers_caught_up.load(Relaxed) == 5);
        assert_eq!(r.established[0], 5);
        assert_eq!(r.deliveries, 40);
        assert_eq!(r.unique_stayers, 40);
        assert_eq!(r.expected_stayers, 40);
        assert_eq!(r.comments, 40);
        assert_eq!(r.hist.len(), 40);
        assert_eq!((r.loss[0].missing, r.loss[0].duplicates), (0, 0));
        assert_eq!(r.open_at_end[0], 5);
    }

    #[test]
    fn close_delimited_stream_with_loss_and_duplicates() {
        const SEQS: &[u64] = &[0, 1, 3, 3, 4];
        let addr = serve("HTTP/1.1 200 OK\r\n\r\n", SEQS, false);
        let r = run(setup(addr, 5), 3, |c| c.deliveries.load(Relaxed) == 15);
        assert_eq!(r.deliveries, 15);
        assert_eq!(r.loss[0].missing, 3);
        assert_eq!(r.loss[0].duplicates, 3);
        assert_eq!(r.loss[0].subscribers_with_missing, 3);
        assert_eq!(r.loss[0].max_missing_one_subscriber, 1);
    }

    #[test]
    fn http_error_and_refused_are_failures_by_cause() {
        let addr = serve("HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", &[], false);
        let r = run(setup(addr, 0), 4, |c| c.failed[0].load(Relaxed) == 4);
        assert_eq!(r.established[0], 0);
        assert_eq!(r.connect_failures[0].summary(), "http_503=4");

        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let r = run(setup(closed, 0), 2, |c| c.failed[0].load(Relaxed) == 2);
        assert_eq!(r.connect_failures[0].summary(), "refused=2");
    }
}
