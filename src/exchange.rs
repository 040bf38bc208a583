//! Connections exchanging requests and responses: read, hand each complete
//! request to the application (`app`), write its answer, linger or close.
//!
//! One function moves a connection along, [`Worker::pump`], called on every
//! readiness event, reply and retry. It answers what is buffered, writes
//! what is queued, and reads more only when it can act on it:
//!
//! ```text
//! loop {
//!     answer complete requests      (stop at 64 KiB of unsent answers, a publish
//!                                    in flight, or a publish waiting for queue room)
//!     write the answers             (the socket is full: wait for writability)
//!     waiting on the backplane or on queue room?  stop: the answer or the retry pumps again
//!     closing?                      close, or shut the write side and linger
//!     read                          (EOF, or shutdown with nothing left: close)
//! }
//! ```
//!
//! So a pipelining publisher is read no faster than it is answered: while
//! its answers pile up unread, while its publish waits for Redis, or while
//! the event queues are full, its socket is not read and TCP slows it down
//! (backpressure, not refusal). Every complete request already read is
//! answered before the connection closes, also after the client half-closed.
//! After an error the write side is shut and input is discarded until the
//! client closes or [`LINGER`](crate::reactor) passes, so the answers
//! queued before the error reach the client instead of being reset.

use std::io::{self, Read};
use std::net::Shutdown;

use ssehub_protocol::http::Progress;

use crate::app::{self, Admission, Answer, Peer};
use crate::conn::{Conn, State};
use crate::driver::Driver;
use crate::reactor::{Worker, interrupted, would_block};
use crate::response::HttpError;
use ssehub_core::backplane::Origin;

/// Reads per connection per pump before others get a turn.
const READ_BUDGET: usize = 16;
/// Response bytes queued before a pipelining client's requests wait.
pub(crate) const OUT_HIGH_WATER: usize = 64 * 1024;
/// How long a publish waits for room in the event queues before `503`.
pub const QUEUE_WAIT_MS: u64 = 2000;

/// Why [`Worker::process`] stopped.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Stopped {
    /// The connection is closed, or now a stream.
    Gone,
    /// A publish waits on the backplane or for queue room, or the connection is to close.
    Waiting,
    /// 64 KiB of answers are queued: write them first.
    Full,
    /// Every complete request is answered: more input is needed.
    Input,
}

/// What writing the queued answers did.
enum Flushed {
    /// Everything is out.
    Done,
    /// The socket is full: wait for writability.
    Blocked,
    /// The connection failed and was closed.
    Gone,
}

impl<D: Driver> Worker<D> {
    /// What the application may know about connection `key`.
    fn peer(&self, key: usize) -> Peer {
        let conn = &self.conns[key];
        Peer {
            origin: Origin { worker: self.index, key: key as u32, stamp: conn.stamp },
            loopback: conn.loopback,
            over_limit: conn.over_limit,
        }
    }

    /// Moves an exchanging connection as far as it can go without blocking;
    /// see the module documentation.
    pub(crate) fn pump(&mut self, key: usize) {
        let mut reads = 0;
        loop {
            let stopped = self.process(key);
            if stopped == Stopped::Gone {
                return; // closed, or now a stream
            }
            match self.flush(key) {
                Flushed::Done => {}
                Flushed::Blocked | Flushed::Gone => return,
            }
            if stopped == Stopped::Full {
                continue; // written: answer the next requests before reading more
            }
            let Some(conn) = self.conns.get_mut(key) else { return };
            let State::Exchange(exchange) = &mut conn.state else { return };
            if exchange.awaiting.is_some() || exchange.busy_since.is_some() {
                return; // the backplane's answer, or the retry, pumps again
            }
            if exchange.close_after {
                // A clean close needs no lingering unless input is left
                // unread, which closing would turn into a reset.
                if exchange.peer_closed || (!exchange.failed && exchange.reader.is_idle()) {
                    self.close(key);
                } else {
                    self.linger(key);
                }
                return;
            }
            // Every complete request is answered: more input is needed.
            if exchange.peer_closed {
                return self.close(key); // what is left is a request the client abandoned
            }
            if exchange.closing && exchange.drained && exchange.reader.is_idle() {
                return self.close(key); // shutting down: everything read was answered
            }
            if reads == READ_BUDGET {
                self.deferred.push(key as u32);
                return;
            }
            match (&conn.sock).read(&mut self.scratch) {
                Ok(0) => exchange.peer_closed = true,
                Ok(n) => {
                    reads += 1;
                    if exchange.reader.is_idle() {
                        // The header timeout runs from a request's first byte.
                        exchange.deadline = self.timers.clock.now() + self.timers.requests.period();
                    }
                    exchange.reader.push(&self.scratch[..n]);
                }
                Err(e) if would_block(&e) => {
                    if !exchange.closing || exchange.drained {
                        return;
                    }
                    // Shutting down: what was in the socket is read; a
                    // request still arriving is read to its end, nothing after.
                    exchange.drained = true;
                }
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    log::debug!("read: {e}");
                    return self.close(key);
                }
            }
        }
    }

    /// Answers every complete request buffered on a connection, until one
    /// must wait; says why it stopped.
    fn process(&mut self, key: usize) -> Stopped {
        loop {
            let Some(conn) = self.conns.get_mut(key) else { return Stopped::Gone };
            let State::Exchange(exchange) = &mut conn.state else { return Stopped::Gone };
            if exchange.close_after || exchange.awaiting.is_some() || exchange.busy_since.is_some() {
                return Stopped::Waiting;
            }
            if exchange.out.len() >= OUT_HIGH_WATER {
                return Stopped::Full;
            }
            match exchange.reader.advance() {
                Ok(Progress::Pending) => return Stopped::Input,
                Ok(Progress::Head) => {
                    let peer = self.peer(key);
                    let State::Exchange(exchange) = &mut self.conns[key].state else { return Stopped::Gone };
                    let Some(request) = exchange.reader.request() else { return Stopped::Gone };
                    match app::admit(&self.shared, &request, &peer, &mut exchange.out) {
                        Ok(Admission::Proceed) => {}
                        Ok(Admission::Admitted(admitted)) => exchange.admitted = Some(admitted),
                        Err(error) => self.refuse(key, error),
                    }
                }
                Ok(Progress::Complete) => {
                    if !self.respond(key) {
                        return Stopped::Gone;
                    }
                }
                Err(error) => self.refuse(key, error.into()),
            }
        }
    }

    /// Answers a complete request. Returns false if the connection is no
    /// longer exchanging requests (now a stream).
    pub(crate) fn respond(&mut self, key: usize) -> bool {
        let peer = self.peer(key);
        let now = self.timers.clock.now();
        let State::Exchange(exchange) = &mut self.conns[key].state else { return false };
        let Some(request) = exchange.reader.request() else { return false };
        let keep_alive = request.head.keep_alive;
        let admitted = exchange.admitted.take();
        let answer = app::respond(&self.shared, &request, &peer, admitted, &mut exchange.out);
        if !matches!(answer, Answer::Busy(_)) {
            exchange.busy_since = None;
        }
        match answer {
            Answer::Done | Answer::Close => {
                exchange.reader.finish();
                if !keep_alive || matches!(answer, Answer::Close) {
                    exchange.close_after = true;
                } else {
                    exchange.deadline = now + self.timers.requests.period();
                }
                true
            }
            Answer::Pending(awaiting) => {
                exchange.reader.finish();
                exchange.awaiting = Some(awaiting);
                if !keep_alive {
                    exchange.close_after = true;
                }
                true
            }
            Answer::Busy(admitted) => {
                // Nothing was published; the request stays where it is and
                // the connection is not read until it goes through.
                exchange.admitted = Some(admitted);
                let since = match exchange.busy_since {
                    Some(since) => since,
                    None => {
                        exchange.busy_since = Some(now);
                        self.busy.push(key as u32);
                        self.stats().publish_waits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        now
                    }
                };
                if now.saturating_sub(since) >= QUEUE_WAIT_MS {
                    let State::Exchange(exchange) = &mut self.conns[key].state else { return false };
                    exchange.busy_since = None;
                    self.refuse(key, HttpError::Unavailable("event queues are full; retry"));
                }
                true
            }
            Answer::Fail(error) => {
                self.refuse(key, error);
                true
            }
            Answer::Stream(start) => self.start_stream(key, start),
        }
    }

    /// Tries the publishes that found the event queues full again (each
    /// loop turn, after this worker drained its own inbox).
    pub(crate) fn retry_busy(&mut self) {
        for key in std::mem::take(&mut self.busy) {
            let key = key as usize;
            let Some(Conn { state: State::Exchange(exchange), .. }) = self.conns.get(key) else { continue };
            if exchange.busy_since.is_none() {
                continue;
            }
            if self.respond(key) {
                if let Some(Conn { state: State::Exchange(exchange), .. }) = self.conns.get(key)
                    && exchange.busy_since.is_some()
                {
                    self.busy.push(key as u32);
                    continue;
                }
                self.pump(key);
            }
        }
    }

    /// Answers with an error and closes: the bytes that follow are never read as requests.
    pub(crate) fn fail(&mut self, key: usize, error: HttpError) {
        self.refuse(key, error);
        self.pump(key);
    }

    /// [`Worker::fail`] with the CORS origin already known.
    pub(crate) fn fail_with_cors(&mut self, key: usize, error: HttpError, cors: Option<String>) {
        self.refuse_with_cors(key, error, cors);
        self.pump(key);
    }

    /// Queues an error answer and marks the connection to close after it.
    fn refuse(&mut self, key: usize, error: HttpError) {
        let cors = match &self.conns.get(key).map(|c| &c.state) {
            Some(State::Exchange(exchange)) => exchange.reader.request().and_then(|r| app::cors(&self.shared, &r)),
            _ => None,
        };
        self.refuse_with_cors(key, error, cors);
    }

    fn refuse_with_cors(&mut self, key: usize, error: HttpError, cors: Option<String>) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let peer = conn.sock.peer_addr().map_or_else(|_| "?".to_string(), |a| a.to_string());
        log::debug!("{peer}: {error}");
        self.shared.stats[self.index].reject(error.status());
        if let State::Exchange(exchange) = &mut conn.state {
            exchange.out.extend_from_slice(&error.response(cors.as_deref()));
            exchange.close_after = true;
            exchange.failed = true;
        }
    }

    /// Writes queued response bytes.
    fn flush(&mut self, key: usize) -> Flushed {
        let Some(conn) = self.conns.get_mut(key) else { return Flushed::Gone };
        let State::Exchange(exchange) = &mut conn.state else { return Flushed::Gone };
        while !exchange.out.is_empty() {
            match io::Write::write(&mut &conn.sock, &exchange.out) {
                Ok(n) => {
                    exchange.out.drain(..n);
                }
                Err(e) if would_block(&e) => return Flushed::Blocked,
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    log::debug!("write: {e}");
                    self.close(key);
                    return Flushed::Gone;
                }
            }
        }
        Flushed::Done
    }

    /// Shuts the write side and discards input until the client closes or
    /// the linger deadline passes (bounded by time, not by bytes: a client
    /// still sending is no reason to reset the answers it has not read).
    fn linger(&mut self, key: usize) {
        let stamp = self.timers.new_stamp();
        let Some(conn) = self.conns.get_mut(key) else { return };
        let _ = conn.sock.shutdown(Shutdown::Write);
        conn.stamp = stamp;
        conn.state = State::Linger { discarded: 0 };
        let now = self.timers.clock.now();
        self.timers.lingers.arm(now, key as u32, stamp);
        self.read_linger(key);
    }

    pub(crate) fn read_linger(&mut self, key: usize) {
        loop {
            let Some(Conn { sock, state: State::Linger { discarded }, .. }) = self.conns.get_mut(key) else { return };
            match (&*sock).read(&mut self.scratch) {
                Ok(0) => return self.close(key),
                Ok(n) => *discarded = discarded.saturating_add(n),
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(_) => return self.close(key),
            }
        }
    }
}
