//! One worker: an event loop over its own driver, listener and connections.
//!
//! Read it top to bottom like Redis's `ae.c`:
//!
//! ```text
//! loop {
//!     poll (timeout = earliest deadline; 0 if work is left over)
//!     for each ready socket: accept | write what is pending | read and handle requests
//!     take backplane replies, then the events other workers (and this one) published
//!     fan out one slice                                  (ssehub_core::fanout)
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
//! Requests are handled in `exchange`, streams in `streams`; this file owns
//! the loop, accepting, deadlines and closing.

use std::collections::HashMap;
use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use slab::Slab;
use ssehub_core::backplane::Backplane;
use ssehub_core::bus::{Bus, unix_ms};
use ssehub_core::fanout::Fanout;
use ssehub_core::subscriber::{Subscriber, Tally};
use ssehub_core::topics::Topics;

use crate::auth::Authorizer;
use crate::conn::{Conn, Exchange, State};
use crate::driver::{Driver, Ready};
use crate::metrics::WorkerStats;
use crate::response::HttpError;
use crate::settings::Settings;
use crate::timer::{Clock, DeadlineQueue};

/// Accepts per loop turn before connections already open get a turn.
const ACCEPT_BUDGET: usize = 256;
/// How long to stop accepting after running out of descriptors.
const ACCEPT_BACKOFF_MS: u64 = 100;
/// How long a connection past `--max-connections` may take to send its request.
const OVER_LIMIT_TIMEOUT_MS: u64 = 1000;
/// How long a connection closing after an error waits for the client to close.
pub const LINGER: Duration = Duration::from_secs(2);
/// Shutting down: how long before the end of the grace period a publish
/// still waiting on the backplane is answered `504` (at most half the grace).
const ANSWER_RESERVE_MS: u64 = 500;
/// Connections a worker accepts from its queue when shutdown begins, so
/// that what clients already sent is answered rather than reset.
const SHUTDOWN_ACCEPTS: usize = 4096;
/// Size of the read buffer every connection of a worker shares.
const SCRATCH: usize = 64 * 1024;
/// How often worker 0 drops expired history, in ms.
const SWEEP_MS: u64 = 1000;

/// Everything workers share.
pub struct Shared {
    /// Every subsystem's settings.
    pub settings: Settings,
    /// The sequencer and the workers' inboxes.
    pub bus: Arc<Bus>,
    /// What orders events: in-process, or a shared log.
    pub backplane: Box<dyn Backplane>,
    /// Who may publish and subscribe.
    pub authorizer: Box<dyn Authorizer>,
    /// One per worker.
    pub stats: Box<[WorkerStats]>,
    /// Connections open across all workers.
    pub open: AtomicUsize,
    /// Set on SIGTERM/SIGINT.
    pub shutdown: Arc<AtomicBool>,
    /// When the server was bound (`ssehub_uptime_seconds`).
    pub started: Instant,
    /// The driver every worker runs (`ssehub_io_backend`): `epoll` or `uring`.
    pub io_backend: &'static str,
}

/// One worker's deadlines and the stamps that keep them honest.
pub(crate) struct Timers {
    /// Milliseconds since the worker started.
    pub(crate) clock: Clock,
    /// Header timeout, keep-alive idle.
    pub(crate) requests: DeadlineQueue,
    /// `--heartbeat`.
    pub(crate) heartbeats: DeadlineQueue,
    /// [`LINGER`].
    pub(crate) lingers: DeadlineQueue,
    /// Streams opened with a token: when the token expires (armed at a time, not a period).
    pub(crate) expiries: DeadlineQueue,
    /// The last stamp handed out.
    next_stamp: u32,
}

impl Timers {
    /// A new stamp: retires every deadline entry and reply armed with the old one.
    pub(crate) fn new_stamp(&mut self) -> u32 {
        self.next_stamp = self.next_stamp.wrapping_add(1);
        self.next_stamp
    }
}

/// Accepting new connections.
#[derive(Default)]
struct Accepting {
    /// The accept budget ran out: accept again next turn.
    pending: bool,
    /// Out of descriptors: retry at this Clock ms.
    paused_until: Option<u64>,
    /// Accept failed for lack of descriptors (logged once per episode).
    starved: bool,
}

/// One worker thread's state.
pub struct Worker<D: Driver> {
    /// Which inbox and stats are ours.
    pub(crate) index: usize,
    /// The I/O mechanism.
    pub(crate) driver: D,
    /// This worker's connections.
    pub(crate) conns: Slab<Conn>,
    /// Who on this worker subscribes to what.
    pub(crate) topics: Topics,
    /// Events on their way to subscribers.
    pub(crate) fanout: Fanout,
    /// Shared with the other workers.
    pub(crate) shared: Arc<Shared>,
    /// Deadlines.
    pub(crate) timers: Timers,
    /// Accept state.
    accepting: Accepting,
    /// Read buffer shared by all connections.
    pub(crate) scratch: Box<[u8]>,
    /// Connections whose read budget ran out.
    pub(crate) deferred: Vec<u32>,
    /// Connections whose publish waits for room in the event queues.
    pub(crate) busy: Vec<u32>,
    /// Shutting down: give up on flushing at this Clock ms.
    pub(crate) shutdown_at: Option<u64>,
    /// Shutting down: at this Clock ms, answer publishes still in flight with `504`.
    answer_at: Option<u64>,
    /// Writes to subscribers, added to the stats once per turn.
    pub(crate) tally: Tally,
    /// Jitter for retry-and-close.
    rng: u64,
    /// When worker 0 next drops expired history (None: other workers, or
    /// neither a TTL nor a durable log).
    sweep_at: Option<u64>,
    /// Token subjects of this worker's streams opened with one that has a
    /// `sub`, for `POST /disconnect`; empty without JWT auth.
    pub(crate) subjects: HashMap<u32, Box<str>>,
}

/// True for errors that mean "try again later".
pub(crate) fn would_block(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::WouldBlock
}

/// True for a system call interrupted by a signal.
pub(crate) fn interrupted(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::Interrupted
}

/// Accept errors that mean "out of resources": back off instead of spinning.
fn out_of_resources(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

impl<D: Driver> Worker<D> {
    /// Worker `index` over `driver`.
    pub fn new(index: usize, driver: D, shared: Arc<Shared>) -> Worker<D> {
        let streams = &shared.settings.streams;
        Worker {
            index,
            timers: Timers {
                clock: Clock::new(),
                requests: DeadlineQueue::new(shared.settings.reactor.header_timeout),
                heartbeats: DeadlineQueue::new(streams.heartbeat),
                lingers: DeadlineQueue::new(LINGER),
                expiries: DeadlineQueue::new(Duration::from_secs(1)),
                next_stamp: 0,
            },
            topics: Topics::new(),
            // One worker gives expired history back, so memory returns to
            // the idle baseline even when nothing is published; with a
            // durable log also without a TTL, since the sweep is where the
            // log deletes what the other bounds dropped.
            sweep_at: (index == 0 && (!streams.history_ttl.is_zero() || shared.settings.journal.is_some()))
                .then_some(SWEEP_MS),
            fanout: Fanout::new(streams.max_backlog),
            driver,
            conns: Slab::new(),
            accepting: Accepting::default(),
            scratch: vec![0; SCRATCH].into_boxed_slice(),
            deferred: Vec::new(),
            busy: Vec::new(),
            shutdown_at: None,
            answer_at: None,
            tally: Tally::default(),
            subjects: HashMap::new(),
            rng: 0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(unix_ms()),
            shared,
        }
    }

    /// This worker's statistics.
    pub(crate) fn stats(&self) -> &WorkerStats {
        &self.shared.stats[self.index]
    }

    /// Runs until shutdown has finished.
    pub fn run(mut self) {
        let mut ready = Vec::with_capacity(1024);
        loop {
            // Whatever this turn published is handed over: wake its workers.
            self.shared.bus.pay_wakes(self.index);
            let mut timeout = self.poll_timeout();
            if !self.shared.bus.inbox(self.index).prepare_sleep() {
                timeout = Some(Duration::ZERO);
            }
            ready.clear();
            let polled = self.driver.poll(&mut ready, timeout);
            self.shared.bus.inbox(self.index).awake();
            if let Err(error) = polled {
                // Logged and counted, never fatal (sozu does the same).
                log::error!("worker {}: poll failed: {error}", self.index);
                continue;
            }
            for &event in &ready {
                match event {
                    Ready::Accept => self.accept(),
                    Ready::Wake => {} // the inbox is drained below, shutdown checked below
                    Ready::Conn { key, readable, writable } => self.ready(key, readable, writable),
                }
            }
            for key in std::mem::take(&mut self.deferred) {
                self.ready(key as usize, true, false);
            }
            if self.accepting.pending {
                self.accept();
            }
            // Every request read: wake the workers they fed before writing our own.
            self.shared.bus.pay_wakes(self.index);
            self.handle_replies();
            self.drain_inbox();
            self.retry_busy();
            self.shared.bus.pay_wakes(self.index);
            self.fan_out();
            self.fire_deadlines();
            self.sweep_history();
            let stats = &self.shared.stats[self.index];
            stats.add(&mut self.tally);
            if self.shared.shutdown.load(Relaxed) && self.shutdown_at.is_none() {
                self.begin_shutdown();
            }
            if self.answer_at.is_some_and(|at| self.timers.clock.now() >= at) {
                self.answer_in_doubt();
            }
            if let Some(at) = self.shutdown_at
                && (self.conns.is_empty() || self.timers.clock.now() >= at)
            {
                log::debug!("worker {} stopped with {} connections open", self.index, self.conns.len());
                return;
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.deferred.is_empty() || self.accepting.pending || self.fanout.busy() {
            return Some(Duration::ZERO);
        }
        if !self.busy.is_empty() {
            // Other workers are draining their queues: try again very soon.
            return Some(Duration::from_millis(1));
        }
        let timers = &self.timers;
        let next = [
            timers.requests.next(),
            timers.heartbeats.next(),
            timers.lingers.next(),
            timers.expiries.next(),
            self.accepting.paused_until,
            self.shutdown_at,
            self.sweep_at,
            self.answer_at,
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(Duration::from_millis(next.saturating_sub(timers.clock.now())))
    }

    fn sweep_history(&mut self) {
        let now = self.timers.clock.now();
        if let Some(at) = self.sweep_at
            && now >= at
        {
            self.shared.bus.expire();
            self.sweep_at = Some(now + SWEEP_MS);
        }
    }

    fn accept(&mut self) {
        self.accepting.pending = false;
        if self.accepting.paused_until.is_some() || self.shutdown_at.is_some() {
            return;
        }
        for _ in 0..ACCEPT_BUDGET {
            match self.driver.accept() {
                Ok((sock, addr)) => {
                    if std::mem::take(&mut self.accepting.starved) {
                        log::warn!("worker {}: accepting again", self.index);
                    }
                    self.admit_connection(sock, addr.ip().is_loopback());
                }
                Err(e) if would_block(&e) => return,
                Err(e) if out_of_resources(&e) => {
                    self.stats().accept_errors.fetch_add(1, Relaxed);
                    if !self.accepting.starved {
                        log::warn!("worker {}: accept: {e}; retrying every {ACCEPT_BACKOFF_MS} ms", self.index);
                        self.accepting.starved = true;
                    }
                    self.accepting.paused_until = Some(self.timers.clock.now() + ACCEPT_BACKOFF_MS);
                    return;
                }
                Err(e) if interrupted(&e) => {}
                // ECONNABORTED and the like concern one connection only.
                Err(e) => log::debug!("worker {}: accept: {e}", self.index),
            }
        }
        self.accepting.pending = true;
    }

    /// Watches an accepted socket (`TCP_NODELAY` is inherited from the listener).
    fn admit_connection(&mut self, sock: TcpStream, loopback: bool) {
        let open = self.shared.open.fetch_add(1, Relaxed) + 1;
        let stamp = self.timers.new_stamp();
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.driver.watch(&sock, key) {
            log::warn!("worker {}: watch: {e}", self.index);
            self.shared.open.fetch_sub(1, Relaxed);
            return;
        }
        let over_limit = open > self.shared.settings.reactor.max_connections;
        if over_limit {
            self.shared.stats[self.index].over_limit.fetch_add(1, Relaxed);
        }
        let mut exchange = Box::new(Exchange::new(self.shared.settings.limits));
        let timers = &mut self.timers;
        exchange.deadline = if over_limit {
            // Turned-away clients hold descriptors the server is short of: a
            // second to send their request, then they go.
            let at = timers.clock.now() + timers.requests.period().min(OVER_LIMIT_TIMEOUT_MS);
            timers.requests.arm_at(at, key as u32, stamp);
            at
        } else {
            timers.requests.arm(timers.clock.now(), key as u32, stamp)
        };
        entry.insert(Conn { sock, stamp, loopback, over_limit, received: 0, state: State::Exchange(exchange) });
        self.shared.stats[self.index].http.fetch_add(1, Relaxed);
    }

    fn ready(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(conn) = self.conns.get(key) else { return }; // closed earlier this turn
        match conn.state {
            State::Exchange(_) => {
                if writable || readable {
                    self.pump(key);
                }
            }
            State::Subscriber(_) => {
                if writable {
                    self.flush_subscriber(key);
                }
                if readable {
                    self.read_subscriber(key);
                }
            }
            State::Ending { .. } => {
                if writable {
                    self.flush_ending(key);
                }
            }
            State::Linger { .. } => {
                if readable {
                    self.read_linger(key);
                }
            }
        }
    }

    fn fire_deadlines(&mut self) {
        let now = self.timers.clock.now();
        let current =
            |conns: &Slab<Conn>, key: u32, stamp: u32| conns.get(key as usize).is_some_and(|c| c.stamp == stamp);
        while let Some(due) = self.timers.requests.pop_due(now) {
            if !current(&self.conns, due.key, due.stamp) {
                continue;
            }
            let key = due.key as usize;
            let State::Exchange(exchange) = &self.conns[key].state else { continue };
            if exchange.awaiting.is_some() || exchange.busy_since.is_some() {
                // The backplane answers within its own timeout, queue room
                // comes within its own bound: the client is not at fault.
                let period = self.timers.requests.period();
                self.timers.requests.arm_at(now + period, due.key, due.stamp);
            } else if exchange.deadline > now {
                // Moved later since this entry was armed: one entry per connection.
                self.timers.requests.arm_at(exchange.deadline, due.key, due.stamp);
            } else if exchange.reader.is_idle() {
                self.close(key); // idle keep-alive, or a client that never sent a byte
            } else {
                self.fail(key, HttpError::Timeout);
            }
        }
        while let Some(due) = self.timers.heartbeats.pop_due(now) {
            if current(&self.conns, due.key, due.stamp) {
                self.heartbeat(due.key as usize);
                if current(&self.conns, due.key, due.stamp) {
                    self.timers.heartbeats.arm(now, due.key, due.stamp);
                }
            }
        }
        while let Some(due) = self.timers.expiries.pop_due(now) {
            if current(&self.conns, due.key, due.stamp) {
                self.expire_stream(due.key as usize);
            }
        }
        while let Some(due) = self.timers.lingers.pop_due(now) {
            if current(&self.conns, due.key, due.stamp) {
                self.close(due.key as usize);
            }
        }
        if self.accepting.paused_until.is_some_and(|at| now >= at) {
            self.accepting.paused_until = None;
            self.accept();
        }
    }

    /// Closes a connection and forgets its subscriptions. The count of open
    /// connections drops before the socket closes, so a client that sees the
    /// close and reconnects at once is not turned away by its old connection.
    pub(crate) fn close(&mut self, key: usize) {
        let Some(conn) = self.conns.try_remove(key) else { return };
        match &conn.state {
            State::Subscriber(subscriber) => self.retire_subscriber(key, subscriber),
            State::Exchange(_) | State::Ending { .. } | State::Linger { .. } => {
                self.shared.stats[self.index].http.fetch_sub(1, Relaxed);
            }
        }
        self.shared.open.fetch_sub(1, Relaxed);
        self.driver.forget(&conn.sock);
    }

    /// Forgets a subscriber that is leaving slot `key`: its topics, its
    /// filter, its count; moves the topic-list positions of whoever moved.
    pub(crate) fn retire_subscriber(&mut self, key: usize, subscriber: &Subscriber) {
        let live = self.shared.stats[self.index].subscribers.fetch_sub(1, Relaxed) as usize - 1;
        if subscriber.filtered {
            self.fanout.forget(key as u32);
        }
        if !self.subjects.is_empty() {
            self.subjects.remove(&(key as u32));
        }
        let conns = &mut self.conns;
        let current = |d: &crate::timer::Deadline| conns.get(d.key as usize).is_some_and(|c| c.stamp == d.stamp);
        self.timers.heartbeats.compact(live, current);
        // Token expiries may lie hours ahead: without this, streams that come
        // and go would leave one stale entry each until then.
        self.timers.expiries.compact(live, current);
        let mut lost = Vec::new();
        let moved = |moved: u32, topic, pos| {
            if let Some(Conn { state: State::Subscriber(other), .. }) = conns.get_mut(moved as usize) {
                other.subs.set_position(topic, pos);
            }
        };
        self.topics.unsubscribe(key as u32, &subscriber.subs, moved, &mut lost);
        // Events for topics no one here wants any more stop coming.
        self.shared.bus.detach(self.index, &lost);
    }

    /// Stops accepting; answers what clients already sent, closes idle
    /// connections, ends streams, and lets the rest finish until
    /// `--shutdown-grace`. Connections already queued on the listener are
    /// accepted first: closing the listener would reset them, requests and all.
    fn begin_shutdown(&mut self) {
        for _ in 0..SHUTDOWN_ACCEPTS {
            match self.driver.accept() {
                Ok((sock, addr)) => self.admit_connection(sock, addr.ip().is_loopback()),
                Err(e) if interrupted(&e) => {}
                Err(_) => break,
            }
        }
        self.driver.stop_accepting();
        self.accepting.pending = false;
        let now = self.timers.clock.now();
        let grace = self.shared.settings.reactor.shutdown_grace.as_millis() as u64;
        self.shutdown_at = Some(now + grace);
        self.answer_at = Some(now + grace - ANSWER_RESERVE_MS.min(grace / 2));
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for &key in &keys {
            if let Some(Conn { state: State::Exchange(exchange), .. }) = self.conns.get_mut(key) {
                exchange.closing = true;
                self.pump(key); // what is in the socket is read and answered
            }
        }
        // Events published just now reach this worker's streams before they end.
        self.fan_out_all();
        for key in keys {
            match self.conns.get(key).map(|c| &c.state) {
                Some(State::Subscriber(subscriber)) if subscriber.backlog.is_none() => self.end_stream(key, None),
                _ => {} // a stream ends once its backlog drains; the rest finish on their own
            }
        }
    }

    /// Shutdown is about to give up: publishes still waiting on the
    /// backplane get `504` (they may or may not be applied), publishes
    /// waiting for queue room get `503` (nothing was published), before
    /// their connections close.
    fn answer_in_doubt(&mut self) {
        self.answer_at = None;
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            let Some(Conn { state: State::Exchange(exchange), .. }) = self.conns.get_mut(key) else { continue };
            if let Some(awaiting) = exchange.awaiting.take() {
                let error = HttpError::Unknown(
                    "outcome unknown: shutting down before the backplane answered; retry with the same Idempotency-Key",
                );
                self.fail_with_cors(key, error, awaiting.cors);
            } else if exchange.busy_since.take().is_some() {
                self.fail(key, HttpError::Unavailable("shutting down; nothing was published"));
            }
        }
    }

    /// A reconnection delay spread over [retry, 2 × retry) so turned-away
    /// clients do not all return at once.
    pub(crate) fn jittered_retry(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let base = self.shared.settings.streams.retry_ms.max(1000);
        base + self.rng % base
    }
}
