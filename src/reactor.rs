//! One worker: an event loop over its own `mio::Poll`, listener and connections.
//!
//! Read it top to bottom like Redis's `ae.c`:
//!
//! ```text
//! loop {
//!     poll (timeout = earliest deadline; 0 if work is left over)
//!     for each ready socket: accept | write what is pending | read and handle requests
//!     fan out the events other workers (and this one) published   (fanout.rs)
//!     fire due deadlines: heartbeats, request timeouts, lingering closes
//! }
//! ```
//!
//! Writes go before reads for a ready connection: flushing first frees the
//! output a pipelining client is waiting on. Handlers may close or transform
//! a connection, so every step looks the connection up again by key.
//!
//! Nothing here blocks, and no connection gets more than a bounded slice of a
//! turn (read and accept budgets): one busy client cannot stall the rest.

use std::io::{self, Read};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::bus::Bus;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::conn::{Backlog, Chunk, Conn, Flushed, Http, State};
use crate::fanout::Fanout;
use crate::http::{HttpError, Limits};
use crate::metrics::{Tally, WorkerStats};
use crate::sse;
use crate::timer::{Clock, DeadlineQueue};
use crate::topics::Topics;

pub const LISTENER: Token = Token(usize::MAX - 1);
pub const WAKER: Token = Token(usize::MAX - 2);

/// Reads per connection per readiness event before others get a turn.
const READ_BUDGET: usize = 16;
/// Accepts per loop turn before connections already open get a turn.
const ACCEPT_BUDGET: usize = 256;
/// How long to stop accepting after running out of descriptors.
const ACCEPT_BACKOFF_MS: u64 = 100;
/// How long a connection past `--max-connections` may take to send its request.
const OVER_LIMIT_TIMEOUT_MS: u64 = 1000;
/// How long a connection closing after an error waits for the client to close.
const LINGER: Duration = Duration::from_secs(2);
/// Input discarded while lingering before closing anyway.
const LINGER_MAX_DISCARD: usize = 1 << 20;
/// Response bytes queued before a pipelining client is read no further.
pub(crate) const OUT_HIGH_WATER: usize = 64 * 1024;
/// Bytes a subscriber may send after its request before it is closed.
const MAX_STREAM_INPUT: u16 = 4096;
const SCRATCH: usize = 64 * 1024;

/// Everything workers share: configuration, the bus and the statistics.
pub struct Shared {
    pub config: Config,
    pub bus: Bus,
    pub stats: Box<[WorkerStats]>,
    pub open: AtomicUsize, // connections open across all workers
    pub max_connections: usize,
    pub shutdown: AtomicBool,
    pub cluster: Option<Cluster>, // cluster mode (--redis)
}

pub struct Worker {
    pub(crate) index: usize, // which inbox and stats are ours
    poll: Poll,
    listener: Option<TcpListener>, // None once shutting down
    pub(crate) conns: Slab<Conn>,
    pub(crate) topics: Topics,
    pub(crate) shared: Arc<Shared>,
    pub(crate) clock: Clock,
    requests: DeadlineQueue,   // header timeout, keep-alive idle
    heartbeats: DeadlineQueue, // --heartbeat
    lingers: DeadlineQueue,    // LINGER
    next_stamp: u32,
    scratch: Box<[u8]>,                  // read buffer shared by all connections
    pub(crate) fanout: Fanout,           // drained events on their way to subscribers
    deferred: Vec<u32>,                  // connections whose read budget ran out
    accept_pending: bool,                // accept budget ran out: accept again next turn
    accept_paused_until: Option<u64>,    // out of descriptors: retry then
    accept_starved: bool,                // accept failed for lack of descriptors (logged once)
    pub(crate) shutdown_at: Option<u64>, // shutting down: give up on flushing then
    pub(crate) tally: Tally,
    pub(crate) limits: Limits,
    rng: u64, // jitter for retry-and-close
}

/// Why the fan-out gives up on a subscriber.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Closing {
    SlowConsumer,
    WriteError,
}

pub(crate) fn would_block(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::WouldBlock
}

fn interrupted(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::Interrupted
}

/// Accept errors that mean "out of resources": back off instead of spinning.
fn out_of_resources(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

impl Worker {
    pub fn new(index: usize, poll: Poll, mut listener: TcpListener, shared: Arc<Shared>) -> io::Result<Worker> {
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let config = &shared.config;
        Ok(Worker {
            index,
            requests: DeadlineQueue::new(config.header_timeout),
            heartbeats: DeadlineQueue::new(config.heartbeat),
            lingers: DeadlineQueue::new(LINGER),
            topics: Topics::new(config.history),
            limits: Limits { max_body: config.max_body },
            poll,
            listener: Some(listener),
            conns: Slab::new(),
            clock: Clock::new(),
            next_stamp: 0,
            scratch: vec![0; SCRATCH].into_boxed_slice(),
            fanout: Fanout::default(),
            deferred: Vec::new(),
            accept_pending: false,
            accept_paused_until: None,
            accept_starved: false,
            shutdown_at: None,
            tally: Tally::default(),
            rng: 0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(crate::bus::unix_ms()),
            shared,
        })
    }

    pub(crate) fn stats(&self) -> &WorkerStats {
        &self.shared.stats[self.index]
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let mut timeout = self.poll_timeout();
            if !self.shared.bus.inbox(self.index).prepare_sleep() {
                timeout = Some(Duration::ZERO);
            }
            let polled = self.poll.poll(&mut events, timeout);
            self.shared.bus.inbox(self.index).awake();
            if let Err(error) = polled {
                if !interrupted(&error) {
                    log::error!("worker {}: poll failed: {error}", self.index);
                }
                continue;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {} // the inbox is drained below, shutdown checked below
                    Token(key) => {
                        let failed = event.is_error();
                        let writable = event.is_writable() || failed;
                        let readable = event.is_readable() || event.is_read_closed() || failed;
                        self.ready(key, readable, writable);
                    }
                }
            }
            for key in std::mem::take(&mut self.deferred) {
                self.ready(key as usize, true, false);
            }
            if self.accept_pending {
                self.accept();
            }
            self.handle_replies();
            self.drain_inbox();
            self.fan_out();
            self.fire_deadlines();
            let stats = &self.shared.stats[self.index];
            stats.add(&mut self.tally);
            if self.shared.shutdown.load(Relaxed) && self.shutdown_at.is_none() {
                self.begin_shutdown();
            }
            if let Some(at) = self.shutdown_at {
                if self.conns.is_empty() || self.clock.now() >= at {
                    log::debug!("worker {} stopped with {} connections open", self.index, self.conns.len());
                    return;
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.deferred.is_empty() || self.accept_pending || self.fanout.busy() {
            return Some(Duration::ZERO);
        }
        let next = [
            self.requests.next(),
            self.heartbeats.next(),
            self.lingers.next(),
            self.accept_paused_until,
            self.shutdown_at,
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(Duration::from_millis(next.saturating_sub(self.clock.now())))
    }

    pub(crate) fn new_stamp(&mut self) -> u32 {
        self.next_stamp = self.next_stamp.wrapping_add(1);
        self.next_stamp
    }

    fn accept(&mut self) {
        self.accept_pending = false;
        if self.accept_paused_until.is_some() {
            return;
        }
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = &self.listener else { return };
            match listener.accept() {
                Ok((sock, addr)) => {
                    if std::mem::take(&mut self.accept_starved) {
                        log::warn!("worker {}: accepting again", self.index);
                    }
                    self.admit_connection(sock, addr.ip().is_loopback());
                }
                Err(e) if would_block(&e) => return,
                Err(e) if out_of_resources(&e) => {
                    self.stats().accept_errors.fetch_add(1, Relaxed);
                    if !self.accept_starved {
                        log::warn!("worker {}: accept: {e}; retrying every {ACCEPT_BACKOFF_MS} ms", self.index);
                        self.accept_starved = true;
                    }
                    self.accept_paused_until = Some(self.clock.now() + ACCEPT_BACKOFF_MS);
                    return;
                }
                Err(e) if interrupted(&e) => {}
                // ECONNABORTED and the like concern one connection only.
                Err(e) => log::debug!("worker {}: accept: {e}", self.index),
            }
        }
        self.accept_pending = true;
    }

    /// Registers an accepted socket (`TCP_NODELAY` is inherited from the listener).
    fn admit_connection(&mut self, mut sock: mio::net::TcpStream, loopback: bool) {
        let open = self.shared.open.fetch_add(1, Relaxed) + 1;
        let stamp = self.new_stamp();
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(&mut sock, Token(key), Interest::READABLE | Interest::WRITABLE) {
            log::warn!("worker {}: register: {e}", self.index);
            self.shared.open.fetch_sub(1, Relaxed);
            return;
        }
        let over_limit = open > self.shared.max_connections;
        if over_limit {
            self.shared.stats[self.index].over_limit.fetch_add(1, Relaxed);
        }
        let mut http = Box::new(Http::new(self.limits));
        http.deadline = if over_limit {
            // Turned-away clients hold descriptors the server is short of: a
            // second to send their request, then they go.
            let at = self.clock.now() + self.requests.period().min(OVER_LIMIT_TIMEOUT_MS);
            self.requests.arm_at(at, key as u32, stamp);
            at
        } else {
            self.requests.arm(self.clock.now(), key as u32, stamp)
        };
        entry.insert(Conn { sock, stamp, loopback, over_limit, received: 0, state: State::Http(http) });
        self.shared.stats[self.index].http.fetch_add(1, Relaxed);
    }

    fn ready(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(conn) = self.conns.get(key) else { return }; // closed earlier this turn
        match conn.state {
            State::Http(_) => {
                if writable {
                    self.flush_http(key);
                }
                if readable {
                    self.read_http(key);
                }
            }
            State::Stream(_) => {
                if writable {
                    self.flush_stream(key);
                }
                if readable {
                    self.read_stream(key);
                }
            }
            State::Linger { .. } => {
                if readable {
                    self.read_linger(key);
                }
            }
        }
    }

    fn read_http(&mut self, key: usize) {
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conns.get_mut(key) else { return };
            let State::Http(http) = &mut conn.state else { return };
            if http.out.len() >= OUT_HIGH_WATER || http.close_after {
                http.read_paused = !http.close_after;
                return;
            }
            match conn.sock.read(&mut self.scratch) {
                Ok(0) => {
                    http.peer_closed = true;
                    self.process(key);
                    return;
                }
                Ok(n) => {
                    let first_byte = http.reader.is_idle();
                    http.reader.push(&self.scratch[..n]);
                    if first_byte {
                        // The header timeout runs from a request's first byte.
                        http.deadline = self.clock.now() + self.requests.period();
                    }
                    self.process(key);
                }
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    log::debug!("read: {e}");
                    self.close(key);
                    return;
                }
            }
        }
        self.deferred.push(key as u32);
    }

    /// Writes queued response bytes; then lingers, closes or resumes reading.
    pub(crate) fn flush_http(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let State::Http(http) = &mut conn.state else { return };
        while !http.out.is_empty() {
            match io::Write::write(&mut conn.sock, &http.out) {
                Ok(n) => {
                    http.out.drain(..n);
                }
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    log::debug!("write: {e}");
                    self.close(key);
                    return;
                }
            }
        }
        if http.awaiting.is_some() {
            return; // the answer comes from Redis; nothing else happens before it
        }
        if http.close_after {
            // A clean close needs no lingering unless input is left unread,
            // which closing would turn into a reset.
            if http.peer_closed || (!http.failed && http.reader.is_idle()) {
                self.close(key);
            } else {
                self.linger(key);
            }
        } else if http.peer_closed {
            self.close(key); // nothing left to answer
        } else if std::mem::take(&mut http.read_paused) {
            self.read_http(key);
        }
    }

    /// Shuts the write side and waits (bounded) for the client to close.
    fn linger(&mut self, key: usize) {
        let stamp = self.new_stamp();
        let Some(conn) = self.conns.get_mut(key) else { return };
        let _ = conn.sock.shutdown(Shutdown::Write);
        conn.stamp = stamp;
        conn.state = State::Linger { discarded: 0 };
        self.lingers.arm(self.clock.now(), key as u32, stamp);
        self.read_linger(key);
    }

    fn read_linger(&mut self, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else { return };
            let State::Linger { discarded } = &mut conn.state else { return };
            match conn.sock.read(&mut self.scratch) {
                Ok(0) => return self.close(key),
                Ok(n) => {
                    *discarded += n;
                    if *discarded > LINGER_MAX_DISCARD {
                        return self.close(key);
                    }
                }
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(_) => return self.close(key),
            }
        }
    }

    /// Subscribers should send nothing: notice their close, bound the rest.
    fn read_stream(&mut self, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else { return };
            if !matches!(conn.state, State::Stream(_)) {
                return;
            }
            match conn.sock.read(&mut self.scratch) {
                Ok(0) => return self.close(key),
                Ok(n) => {
                    conn.received = conn.received.saturating_add(n.min(usize::from(u16::MAX)) as u16);
                    if conn.received > MAX_STREAM_INPUT {
                        log::debug!("subscriber sent {} bytes after subscribing; closing", conn.received);
                        return self.close(key);
                    }
                }
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(_) => return self.close(key),
            }
        }
    }

    /// Writes a subscriber's backlog; drops it once empty.
    pub(crate) fn flush_stream(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let State::Stream(stream) = &mut conn.state else { return };
        let Some(backlog) = &mut stream.backlog else { return };
        let result = backlog.flush(&mut conn.sock, &mut self.tally);
        match result {
            Ok(Flushed::Blocked) => {}
            Ok(Flushed::Drained) => {
                stream.backlog = None;
                if self.shutdown_at.is_some() {
                    self.close(key);
                }
            }
            Err(e) => {
                log::debug!("write: {e}");
                self.close(key);
            }
        }
    }

    fn heartbeat(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let State::Stream(stream) = &mut conn.state else { return };
        if stream.backlog.is_some() {
            return; // frames are already queued; they keep the stream alive
        }
        match crate::conn::write_frames(&mut conn.sock, std::iter::once(sse::HEARTBEAT)) {
            Ok(n) => {
                self.tally.writes += 1;
                self.tally.bytes += n as u64;
                self.shared.stats[self.index].heartbeats.fetch_add(1, Relaxed);
                if n < sse::HEARTBEAT.len() {
                    let mut backlog = Backlog::new(self.shared.config.max_backlog as usize);
                    backlog.push(Chunk::Static(&sse::HEARTBEAT[n..]));
                    stream.backlog = Some(Box::new(backlog));
                }
            }
            Err(_) => self.close(key),
        }
    }

    /// Arms the heartbeat of a connection that just became a stream.
    pub(crate) fn arm_heartbeat(&mut self, key: usize, stamp: u32) {
        self.heartbeats.arm(self.clock.now(), key as u32, stamp);
    }

    /// Restarts the request deadline: a keep-alive connection may now idle,
    /// or send its next request, for one more `--header-timeout`.
    pub(crate) fn extend_request_deadline(&mut self, key: usize) {
        if let Some(Conn { state: State::Http(http), .. }) = self.conns.get_mut(key) {
            http.deadline = self.clock.now() + self.requests.period();
        }
    }

    fn fire_deadlines(&mut self) {
        let now = self.clock.now();
        let current =
            |conns: &Slab<Conn>, key: u32, stamp: u32| conns.get(key as usize).is_some_and(|c| c.stamp == stamp);
        while let Some(due) = self.requests.pop_due(now) {
            if !current(&self.conns, due.key, due.stamp) {
                continue;
            }
            let key = due.key as usize;
            let State::Http(http) = &self.conns[key].state else { continue };
            if http.awaiting.is_some() {
                // Redis answers within its own timeout; the client is not at fault.
                self.requests.arm_at(now + self.requests.period(), due.key, due.stamp);
            } else if http.deadline > now {
                // Moved later since this entry was armed: one entry per connection.
                self.requests.arm_at(http.deadline, due.key, due.stamp);
            } else if http.reader.is_idle() {
                self.close(key); // idle keep-alive, or a client that never sent a byte
            } else {
                self.fail(key, HttpError::Timeout);
            }
        }
        while let Some(due) = self.heartbeats.pop_due(now) {
            if current(&self.conns, due.key, due.stamp) {
                self.heartbeat(due.key as usize);
                if current(&self.conns, due.key, due.stamp) {
                    self.heartbeats.arm(now, due.key, due.stamp);
                }
            }
        }
        while let Some(due) = self.lingers.pop_due(now) {
            if current(&self.conns, due.key, due.stamp) {
                self.close(due.key as usize);
            }
        }
        if self.accept_paused_until.is_some_and(|at| now >= at) {
            self.accept_paused_until = None;
            self.accept();
        }
    }

    /// Closes a connection and forgets its subscriptions. The count of open
    /// connections drops before the socket closes, so a client that sees the
    /// close and reconnects at once is not turned away by its old connection.
    pub(crate) fn close(&mut self, key: usize) {
        let Some(conn) = self.conns.try_remove(key) else { return };
        let stats = &self.shared.stats[self.index];
        match conn.state {
            State::Stream(stream) => {
                let live = stats.subscribers.fetch_sub(1, Relaxed) as usize - 1;
                if stream.filtered {
                    self.fanout.forget(key as u32);
                }
                let conns = &self.conns;
                self.heartbeats.compact(live, |d| conns.get(d.key as usize).is_some_and(|c| c.stamp == d.stamp));
                for (topic, pos) in stream.subs.iter() {
                    if let Some(moved) = self.topics.unsubscribe(topic, pos) {
                        if let Some(Conn { state: State::Stream(other), .. }) = self.conns.get_mut(moved as usize) {
                            other.subs.set_position(topic, pos);
                        }
                    }
                }
            }
            State::Http(_) | State::Linger { .. } => {
                stats.http.fetch_sub(1, Relaxed);
            }
        }
        self.shared.open.fetch_sub(1, Relaxed);
    }

    /// Stops accepting; closes idle connections now and the rest once they
    /// have finished, or at `--shutdown-grace`.
    fn begin_shutdown(&mut self) {
        self.fan_out_all();
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.accept_pending = false;
        self.shutdown_at = Some(self.clock.now() + self.shared.config.shutdown_grace.as_millis() as u64);
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            match &mut self.conns[key].state {
                State::Stream(stream) if stream.backlog.is_none() => self.close(key),
                State::Stream(_) => {} // closed once its backlog drains
                State::Http(http) if http.reader.is_idle() && http.out.is_empty() => self.close(key),
                State::Http(_) | State::Linger { .. } => {}
            }
        }
    }

    /// A reconnection delay spread over [retry, 2 × retry) so turned-away
    /// clients do not all return at once.
    pub(crate) fn jittered_retry(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let base = self.shared.config.retry.max(1000);
        base + self.rng % base
    }
}
