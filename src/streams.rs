//! Event streams: turning a connection into a subscriber (with its replay),
//! heartbeats, flushing a slow subscriber's backlog, backplane replies, and
//! the bridge between the fan-out core and this worker's connections and
//! driver ([`WorkerStreams`]).

use std::io::{Read, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use slab::Slab;
use ssehub_core::backplane::{Catchup, Origin, PublishFailure, Published, ReplayRequest, Reply, Revocation};
use ssehub_core::bus::unix_ms;
use ssehub_core::fanout::{Closing, Streams, Write as FrameWrite};
use ssehub_core::history::Gap;
use ssehub_core::subscriber::{Backlog, Chunk, Flushed, Subscriber, write_frames};
use ssehub_core::topics;
use ssehub_core::{Event, EventId};
use ssehub_protocol::sse::{self, Framing, HEARTBEAT, StaticFrame};

use crate::app::{self, StreamStart};
use crate::conn::{Conn, State};
use crate::driver::Driver;
use crate::reactor::{Worker, interrupted, would_block};
use crate::response::write_cors;

/// The head of every event stream, before its framing, CORS and the blank line.
const EVENT_STREAM_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
                                 X-Accel-Buffering: no\r\nConnection: close\r\n";
/// The last event of a stream whose token expired: the page fetches a fresh
/// token and reconnects with `Last-Event-ID`. No `id:` line, so the client's
/// last id stays the last event it really got.
const EXPIRED: StaticFrame =
    ssehub_protocol::static_frame!(b"event: ssehub-expired\ndata: {\"reason\":\"expired\"}\n\n");
/// The last event of a stream whose subject was revoked (`POST /disconnect`).
const REVOKED: StaticFrame =
    ssehub_protocol::static_frame!(b"event: ssehub-expired\ndata: {\"reason\":\"revoked\"}\n\n");
/// Bytes a subscriber may send after its request before it is closed.
const MAX_STREAM_INPUT: u16 = 4096;

/// This worker's connections and driver, as the fan-out core sees them.
pub(crate) struct WorkerStreams<'a, D: Driver> {
    /// The connection table.
    pub(crate) conns: &'a mut Slab<Conn>,
    /// The driver that performs the writes.
    pub(crate) driver: &'a mut D,
}

impl<D: Driver> Streams for WorkerStreams<'_, D> {
    fn subscriber(&mut self, key: u32) -> Option<&mut Subscriber> {
        match self.conns.get_mut(key as usize) {
            Some(Conn { state: State::Subscriber(subscriber), .. }) => Some(subscriber),
            _ => None,
        }
    }

    fn for_each_subscriber(&mut self, each: &mut dyn FnMut(u32, &mut Subscriber)) {
        for (key, conn) in self.conns.iter_mut() {
            if let State::Subscriber(subscriber) = &mut conn.state {
                each(key as u32, subscriber);
            }
        }
    }

    fn write(&mut self, batch: &[Arc<Event>], writes: &mut [FrameWrite]) {
        let conns: &Slab<Conn> = self.conns;
        let sock_of = |key: u32| -> Option<&TcpStream> { conns.get(key as usize).map(|c| &c.sock) };
        self.driver.write_batch(batch, writes, sock_of);
    }
}

/// What a resuming subscriber gets before live events.
enum Replay {
    /// From this worker's history: an optional gap notice, then the events.
    Memory(Option<Gap>, Vec<Arc<Event>>),
    /// From the backplane's log, after this id.
    Log(Option<EventId>),
}

impl<D: Driver> Worker<D> {
    /// Moves queued events into the fan-out's pending list, as many as it
    /// takes; the rest wait in the inbox, where publishers see them.
    pub(crate) fn drain_inbox(&mut self) {
        let inbox = self.shared.bus.inbox(self.index);
        let stats = &self.shared.stats[self.index];
        while self.fanout.wants_more()
            && let Some(event) = inbox.pop()
        {
            if event.to_all() {
                // A notice to every stream (today only the stream-reset gap):
                // one gap sent per subscriber it reaches.
                stats.gaps.fetch_add(stats.subscribers.load(Relaxed), Relaxed);
            }
            self.fanout.accept(event);
        }
    }

    /// Writes one slice of the fan-out; closes whom it gave up on.
    pub(crate) fn fan_out(&mut self) -> bool {
        let mut streams = WorkerStreams { conns: &mut self.conns, driver: &mut self.driver };
        let busy = self.fanout.run(&self.topics, &mut streams, &mut self.tally);
        let closing: Vec<(u32, Closing)> = self.fanout.take_closing().collect();
        for (key, why) in closing {
            match why {
                Closing::SlowConsumer => {
                    self.stats().slow_consumers.fetch_add(1, Relaxed);
                    log::debug!("dropping slow subscriber (over --max-backlog {})", self.fanout.max_backlog());
                    self.end_stream(key as usize, None);
                }
                Closing::WriteError => self.close(key as usize),
            }
        }
        busy
    }

    /// Finishes all fan-out work now (used when shutting down).
    pub(crate) fn fan_out_all(&mut self) {
        loop {
            self.drain_inbox();
            if !self.fan_out() && self.shared.bus.inbox(self.index).is_empty() {
                return;
            }
        }
    }

    /// Turns the connection into an event stream: subscribe, replay, then
    /// live events. Returns true if the connection is still exchanging
    /// requests (turned away past `--max-connections`: a retry-and-close answer is queued).
    pub(crate) fn start_stream(&mut self, key: usize, start: StreamStart) -> bool {
        let StreamStart { subscribe, resume, cors, framing, grant } = start;
        let mut head = EVENT_STREAM_HEAD.as_bytes().to_vec();
        if framing == Framing::Chunked {
            head.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        write_cors(&mut head, cors.as_deref());
        if cors.as_deref().is_some_and(|origin| origin != "*") {
            // `new EventSource(url, {withCredentials: true})` sends the token
            // cookie; the browser hands over the stream only with this. Never with `*`.
            head.extend_from_slice(b"Access-Control-Allow-Credentials: true\r\n");
        }
        if cors.is_some() {
            // So a page of another origin can read the stream's position.
            head.extend_from_slice(b"Access-Control-Expose-Headers: SSEHub-Position\r\n");
        }
        // The head ends once the replay is known (it may name the position).
        // The opening then sets the reconnection time and dispatches nothing:
        // a lone `retry:` line, no blank line, so a fetch-based client that
        // dispatches every blank line sees no empty message.

        if self.conns[key].over_limit {
            // EventSource gives up on a non-200 answer but retries after a closed stream.
            head.extend_from_slice(b"\r\n");
            let retry = self.jittered_retry();
            framing.push(&mut head, &sse::retry_line(retry));
            head.extend_from_slice(framing.end());
            if let State::Exchange(exchange) = &mut self.conns[key].state {
                exchange.reader.finish();
                exchange.out.extend_from_slice(&head);
                exchange.close_after = true;
            }
            return true;
        }
        // A client that already sent its FIN is closed once the stream is set up.
        let peer_closed = matches!(&self.conns[key].state, State::Exchange(exchange) if exchange.peer_closed);

        // Listed here, then routed here from the point the bus names: every
        // event after it arrives live, every one before it is in history.
        self.drain_inbox();
        let names = topics::names(&subscribe.topics);
        let mut gained = Vec::new();
        let subs = self.topics.subscribe(key as u32, &names, &mut gained);
        let after = resume.as_deref().map(EventId::parse);
        let attached = self.shared.bus.attach(self.index, &gained, after.map(|after| (&names[..], after)));
        let plan = self.plan_replay(attached.replay, after.flatten());
        let stamp = self.timers.new_stamp();
        let stats = &self.shared.stats[self.index];
        stats.http.fetch_sub(1, Relaxed);
        stats.subscribers.fetch_add(1, Relaxed);
        if resume.is_some() {
            stats.replays.fetch_add(1, Relaxed);
        }
        if matches!(plan, Replay::Memory(Some(_), _)) {
            stats.gaps.fetch_add(1, Relaxed);
        }
        let max_backlog = self.fanout.max_backlog();
        // Live delivery starts after the routing point, or after the
        // client's own id if it is ahead (it came from another node).
        let resumed_at = after.flatten().unwrap_or(EventId::ZERO);
        let live_after = attached.live_after.max(resumed_at);
        let filtered = self.fanout.busy() || live_after > self.fanout.last_accepted();
        if matches!(&plan, Replay::Memory(None, replay) if replay.is_empty())
            && let Some(position) = self.shared.backplane.position(live_after)
        {
            // Every event after this id reaches the stream live, so a client
            // that must reconnect before any arrives resumes from it and
            // misses nothing (ssehub.js does, when a tab takes over a shared
            // stream). Not with a gap or replay still to come: the position
            // would claim more than the client has.
            head.extend_from_slice(format!("SSEHub-Position: {position}\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        framing.push(&mut head, &sse::retry_line(self.shared.settings.streams.retry_ms));
        if filtered {
            self.fanout.filter(key as u32, live_after);
        }
        let conn = &mut self.conns[key];
        conn.stamp = stamp; // retires the request deadline
        let mut subscriber = Subscriber::new(subs, framing);
        subscriber.filtered = filtered;
        match plan {
            Replay::Memory(None, replay) if replay.is_empty() => {
                // The common case: no backlog at all, just the head.
                match write_frames(&mut &conn.sock, std::iter::once(&head[..])) {
                    Ok(n) if n == head.len() => {}
                    Ok(n) => {
                        let mut backlog = Backlog::new(max_backlog);
                        backlog.push(Chunk::Owned(head[n..].into()));
                        subscriber.backlog = Some(Box::new(backlog));
                    }
                    Err(_) => {
                        conn.state = State::Subscriber(subscriber);
                        self.close(key);
                        return false;
                    }
                }
                conn.state = State::Subscriber(subscriber);
            }
            Replay::Memory(gap, replay) => {
                let mut backlog = Backlog::new(max_backlog + replay.len() + 2);
                backlog.push(Chunk::Owned(head.into_boxed_slice()));
                backlog.extend(
                    gap.map(|gap| Chunk::Static(gap.frame())).into_iter().chain(replay.into_iter().map(Chunk::Event)),
                );
                subscriber.backlog = Some(Box::new(backlog));
                conn.state = State::Subscriber(subscriber);
                self.flush_subscriber(key);
            }
            Replay::Log(after) => {
                // Older than this node's memory: the backplane reads its log;
                // live events queue behind the place the replay goes.
                let mut backlog = Backlog::new(max_backlog + 2);
                backlog.push(Chunk::Owned(head.into_boxed_slice()));
                backlog.hold();
                subscriber.backlog = Some(Box::new(backlog));
                conn.state = State::Subscriber(subscriber);
                let request = ReplayRequest {
                    topics: subscribe.topics,
                    after,
                    upto: self.shared.backplane.replay_upto(attached.live_after),
                    history: self.shared.settings.streams.history,
                };
                let origin = Origin { worker: self.index, key: key as u32, stamp };
                if !self.shared.backplane.replay(origin, request) {
                    self.release_replay(key, stamp, Some(Gap::Unavailable), Vec::new());
                }
                self.flush_subscriber(key);
            }
        }
        let now = self.timers.clock.now();
        self.timers.heartbeats.arm(now, key as u32, stamp);
        if let Some(grant) = grant {
            if let Some(subject) = grant.subject {
                self.subjects.insert(key as u32, subject.into_boxed_str());
            }
            let left_ms = (grant.expires_at.saturating_mul(1000)).saturating_sub(unix_ms());
            self.timers.expiries.arm_at(now.saturating_add(left_ms), key as u32, stamp);
        }
        if peer_closed {
            self.close(key);
        } else if self.shutdown_at.is_some() {
            self.end_stream(key, None);
        } else {
            // Edge-triggered: a FIN that came with the request raises no new
            // event. Read to WouldBlock now, so it is seen.
            self.read_subscriber(key);
        }
        false
    }

    /// What a resuming client gets before live events: what history
    /// retains (maybe after a gap notice), or, when the backplane says so,
    /// a read of its log. Topics and patterns replay as [`History::replay`]
    /// says (each at most `--history`, the newest, merged in id order).
    ///
    /// [`History::replay`]: ssehub_core::history::History::replay
    fn plan_replay(&self, replay: Option<(Option<Gap>, Vec<Arc<Event>>)>, after: Option<EventId>) -> Replay {
        let Some((missed, events)) = replay else { return Replay::Memory(None, Vec::new()) };
        match self.shared.backplane.catchup(after, missed) {
            Catchup::Log => Replay::Log(after),
            Catchup::Memory(gap) => Replay::Memory(gap, events),
        }
    }

    /// Answers from the backplane.
    pub(crate) fn handle_replies(&mut self) {
        while let Some(reply) = self.shared.bus.inbox(self.index).pop_reply() {
            match reply {
                Reply::Published { key, stamp, outcome } => self.answer_publish(key as usize, stamp, outcome),
                Reply::Replayed { key, stamp, gap, events } => self.release_replay(key as usize, stamp, gap, events),
                Reply::Revoke(revocation) => self.revoke(&revocation),
                Reply::Revoked { key, stamp, closed } => self.answer_revoked(key as usize, stamp, closed),
            }
        }
    }

    fn answer_publish(&mut self, key: usize, stamp: u32, outcome: Result<Published, PublishFailure>) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.stamp == stamp) else { return };
        let State::Exchange(exchange) = &mut conn.state else { return };
        let Some(awaiting) = exchange.awaiting.take() else { return };
        match outcome {
            Ok(published) => {
                let keep_alive = awaiting.keep_alive && !exchange.close_after;
                app::write_published(&mut exchange.out, &published, keep_alive, awaiting.cors.as_deref());
                self.pump(key); // answers what was pipelined behind it, then writes
            }
            Err(failure) => self.fail_with_cors(key, app::publish_failure(failure), awaiting.cors),
        }
    }

    /// Ends this worker's streams of a revoked subject; the last worker to
    /// report answers the connection that asked.
    fn revoke(&mut self, revocation: &Revocation) {
        let keys: Vec<u32> =
            self.subjects.iter().filter(|(_, subject)| **subject == revocation.subject).map(|(&key, _)| key).collect();
        for &key in &keys {
            log::debug!("stream {key}: revoked");
            self.end_stream(key as usize, Some(REVOKED));
        }
        if let Some(closed) = revocation.report(keys.len())
            && let Some(Origin { worker, key, stamp }) = revocation.origin
        {
            self.shared.bus.reply(worker, Reply::Revoked { key, stamp, closed });
        }
    }

    fn answer_revoked(&mut self, key: usize, stamp: u32, closed: usize) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.stamp == stamp) else { return };
        let State::Exchange(exchange) = &mut conn.state else { return };
        let Some(awaiting) = exchange.awaiting.take() else { return };
        let keep_alive = awaiting.keep_alive && !exchange.close_after;
        app::write_revoked(&mut exchange.out, closed, keep_alive, awaiting.cors.as_deref());
        self.pump(key);
    }

    /// Puts a replay read from the log in front of the live events queued meanwhile.
    fn release_replay(&mut self, key: usize, stamp: u32, gap: Option<Gap>, events: Vec<Arc<Event>>) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.stamp == stamp) else { return };
        let State::Subscriber(subscriber) = &mut conn.state else { return };
        let Some(backlog) = subscriber.backlog.as_mut().filter(|b| b.is_held()) else { return };
        if gap.is_some() {
            self.shared.stats[self.index].gaps.fetch_add(1, Relaxed);
        }
        backlog
            .release(gap.map(|gap| Chunk::Static(gap.frame())).into_iter().chain(events.into_iter().map(Chunk::Event)));
        self.flush_subscriber(key);
    }

    /// Subscribers should send nothing: notice their close, bound the rest.
    pub(crate) fn read_subscriber(&mut self, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else { return };
            if !matches!(conn.state, State::Subscriber(_)) {
                return;
            }
            match (&conn.sock).read(&mut self.scratch) {
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
    pub(crate) fn flush_subscriber(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let State::Subscriber(subscriber) = &mut conn.state else { return };
        let Some(backlog) = &mut subscriber.backlog else { return };
        match backlog.flush(&mut &conn.sock, subscriber.framing, &mut self.tally) {
            Ok(Flushed::Blocked) => {}
            Ok(Flushed::Drained) => {
                subscriber.backlog = None;
                if self.shutdown_at.is_some() {
                    self.end_stream(key, None);
                }
            }
            Err(e) => {
                log::debug!("write: {e}");
                self.close(key);
            }
        }
    }

    /// Ends a stream on purpose and cleanly: what was begun is finished, what
    /// was queued behind it is dropped, the terminating chunk follows (for a
    /// close-delimited body, the close itself), then the connection closes.
    /// An abort (a write error, a crash) never sends the terminator, so a
    /// client can tell the two apart. `last` is a final event (why it ended)
    /// before the end. Bounded by the linger deadline.
    pub(crate) fn end_stream(&mut self, key: usize, last: Option<StaticFrame>) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let State::Subscriber(subscriber) = &conn.state else { return };
        let framing = subscriber.framing;
        let mut rest = subscriber.backlog.as_ref().map_or(&[][..], |b| b.committed_rest(framing)).to_vec();
        if let Some(last) = last {
            rest.extend_from_slice(last.bytes(framing));
        }
        rest.extend_from_slice(framing.end());
        let State::Subscriber(subscriber) = std::mem::replace(&mut conn.state, State::Ending { rest }) else {
            return;
        };
        let stamp = self.timers.new_stamp();
        self.conns[key].stamp = stamp;
        self.retire_subscriber(key, &subscriber);
        self.shared.stats[self.index].http.fetch_add(1, Relaxed);
        let now = self.timers.clock.now();
        self.timers.lingers.arm(now, key as u32, stamp);
        self.flush_ending(key);
    }

    /// Ends a stream whose token expired, after an `ssehub-expired` event.
    pub(crate) fn expire_stream(&mut self, key: usize) {
        if matches!(self.conns.get(key), Some(Conn { state: State::Subscriber(_), .. })) {
            self.shared.stats[self.index].streams_expired.fetch_add(1, Relaxed);
            log::debug!("stream {key}: token expired");
            self.end_stream(key, Some(EXPIRED));
        }
    }

    /// Writes an ending stream's last bytes; closes once they are out.
    pub(crate) fn flush_ending(&mut self, key: usize) {
        let Some(Conn { sock, state: State::Ending { rest }, .. }) = self.conns.get_mut(key) else { return };
        while !rest.is_empty() {
            match (&*sock).write(rest) {
                Ok(0) => break,
                Ok(n) => {
                    rest.drain(..n);
                }
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(_) => break,
            }
        }
        self.close(key);
    }

    /// Writes a heartbeat comment, unless frames are already queued.
    pub(crate) fn heartbeat(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let State::Subscriber(subscriber) = &mut conn.state else { return };
        if subscriber.backlog.is_some() {
            return; // frames are already queued; they keep the stream alive
        }
        let frame = HEARTBEAT.bytes(subscriber.framing);
        match write_frames(&mut &conn.sock, std::iter::once(frame)) {
            Ok(n) => {
                self.tally.writes += 1;
                self.tally.bytes += n as u64;
                self.shared.stats[self.index].heartbeats.fetch_add(1, Relaxed);
                if n < frame.len() {
                    let mut backlog = Backlog::new(self.fanout.max_backlog());
                    backlog.push(Chunk::Owned(frame[n..].into()));
                    subscriber.backlog = Some(Box::new(backlog));
                }
            }
            Err(_) => self.close(key),
        }
    }
}
