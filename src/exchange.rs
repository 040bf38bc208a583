//! Connections exchanging requests and responses: read, hand each complete
//! request to the application (`app`), write its answer, linger or close.

use std::io::{self, Read};
use std::net::Shutdown;

use ssehub_protocol::http::Progress;

use crate::app::{self, Admission, Answer, Peer};
use crate::conn::{Conn, State};
use crate::driver::Driver;
use crate::reactor::{Worker, interrupted, would_block};
use crate::response::HttpError;
use ssehub_core::backplane::Origin;

/// Reads per connection per readiness event before others get a turn.
const READ_BUDGET: usize = 16;
/// Input discarded while lingering before closing anyway.
const LINGER_MAX_DISCARD: usize = 1 << 20;
/// Response bytes queued before a pipelining client is read no further.
pub(crate) const OUT_HIGH_WATER: usize = 64 * 1024;

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

    pub(crate) fn read_exchange(&mut self, key: usize) {
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conns.get_mut(key) else { return };
            let State::Exchange(exchange) = &mut conn.state else { return };
            if exchange.out.len() >= OUT_HIGH_WATER || exchange.close_after {
                exchange.read_paused = !exchange.close_after;
                return;
            }
            match (&conn.sock).read(&mut self.scratch) {
                Ok(0) => {
                    exchange.peer_closed = true;
                    self.process(key);
                    return;
                }
                Ok(n) => {
                    let first_byte = exchange.reader.is_idle();
                    exchange.reader.push(&self.scratch[..n]);
                    if first_byte {
                        // The header timeout runs from a request's first byte.
                        exchange.deadline = self.timers.clock.now() + self.timers.requests.period();
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

    /// Parses and answers every complete request buffered on a connection.
    pub(crate) fn process(&mut self, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else { return };
            let State::Exchange(exchange) = &mut conn.state else { return };
            if exchange.close_after || exchange.awaiting.is_some() || exchange.out.len() >= OUT_HIGH_WATER {
                break;
            }
            match exchange.reader.advance() {
                Ok(Progress::Pending) => break,
                Ok(Progress::Head) => {
                    let peer = self.peer(key);
                    let State::Exchange(exchange) = &mut self.conns[key].state else { return };
                    let Some(request) = exchange.reader.request() else { return };
                    match app::admit(&self.shared, &request, &peer, &mut exchange.out) {
                        Ok(Admission::Proceed) => {}
                        Ok(Admission::Admitted(admitted)) => exchange.admitted = Some(admitted),
                        Err(error) => return self.fail(key, error),
                    }
                }
                Ok(Progress::Complete) => {
                    if !self.respond(key) {
                        return;
                    }
                }
                Err(error) => return self.fail(key, error.into()),
            }
        }
        self.flush_exchange(key);
    }

    /// Answers a complete request. Returns false if the connection is no
    /// longer exchanging requests (closed, failed, or now a stream).
    fn respond(&mut self, key: usize) -> bool {
        let peer = self.peer(key);
        let State::Exchange(exchange) = &mut self.conns[key].state else { return false };
        let Some(request) = exchange.reader.request() else { return false };
        let keep_alive = request.head.keep_alive;
        let admitted = exchange.admitted.take();
        let answer = app::respond(&self.shared, &request, &peer, admitted, &mut exchange.out);
        match answer {
            Answer::Done | Answer::Close => {
                exchange.reader.finish();
                if !keep_alive || self.shutdown_at.is_some() || matches!(answer, Answer::Close) {
                    exchange.close_after = true;
                } else {
                    exchange.deadline = self.timers.clock.now() + self.timers.requests.period();
                }
                true
            }
            Answer::Pending(awaiting) => {
                exchange.reader.finish();
                exchange.awaiting = Some(awaiting);
                if !keep_alive || self.shutdown_at.is_some() {
                    exchange.close_after = true;
                }
                true
            }
            Answer::Fail(error) => {
                self.fail(key, error);
                false
            }
            Answer::Stream(start) => {
                self.start_stream(key, start);
                false
            }
        }
    }

    /// Answers with an error and closes: the bytes that follow are never read as requests.
    pub(crate) fn fail(&mut self, key: usize, error: HttpError) {
        let cors = match &self.conns.get(key).map(|c| &c.state) {
            Some(State::Exchange(exchange)) => exchange.reader.request().and_then(|r| app::cors(&self.shared, &r)),
            _ => None,
        };
        self.fail_with_cors(key, error, cors);
    }

    /// [`Worker::fail`] with the CORS origin already known.
    pub(crate) fn fail_with_cors(&mut self, key: usize, error: HttpError, cors: Option<String>) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let peer = conn.sock.peer_addr().map_or_else(|_| "?".to_string(), |a| a.to_string());
        log::debug!("{peer}: {error}");
        self.shared.stats[self.index].reject(error.status());
        if let State::Exchange(exchange) = &mut conn.state {
            exchange.out.extend_from_slice(&error.response(cors.as_deref()));
            exchange.close_after = true;
            exchange.failed = true;
        }
        self.flush_exchange(key);
    }

    /// Writes queued response bytes; then lingers, closes or resumes reading.
    pub(crate) fn flush_exchange(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let State::Exchange(exchange) = &mut conn.state else { return };
        while !exchange.out.is_empty() {
            match io::Write::write(&mut &conn.sock, &exchange.out) {
                Ok(n) => {
                    exchange.out.drain(..n);
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
        if exchange.awaiting.is_some() {
            return; // the answer comes from the backplane; nothing else happens before it
        }
        if exchange.close_after {
            // A clean close needs no lingering unless input is left unread,
            // which closing would turn into a reset.
            if exchange.peer_closed || (!exchange.failed && exchange.reader.is_idle()) {
                self.close(key);
            } else {
                self.linger(key);
            }
        } else if exchange.peer_closed {
            self.close(key); // nothing left to answer
        } else if std::mem::take(&mut exchange.read_paused) {
            self.read_exchange(key);
        }
    }

    /// Shuts the write side and waits (bounded) for the client to close.
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
}
