//! The hot path: take a worker's events and write each to every subscriber
//! of its topics.
//!
//! Three steps, each bounded so the event loop keeps serving other sockets:
//!
//! 1. **Accept** ([`Fanout::accept`]): events leave the worker's inbox (the
//!    bus has already recorded them in history) and wait in `pending`, at
//!    most [`MAX_PENDING`] of them: the rest stay in the inbox, whose depth
//!    is what holds publishers back (see `bus`), so a worker that falls
//!    behind slows its publishers instead of queueing without bound.
//! 2. **Route** a batch of up to [`MAX_BATCH`] pending events: each subscriber
//!    of an event's topics gets its bit set in a 64-bit mask. A subscriber of
//!    several of those topics sets the same bit twice, so it gets the event
//!    once. A subscriber that joined while events were pending, or resumed
//!    from an id this worker has not reached yet, has a filter: it skips
//!    events up to an id its replay already covered. Filters are rare and
//!    short-lived; the first newer event removes them.
//! 3. **Write** up to [`WRITE_SLICE`] subscribers per loop turn: each gets all
//!    of its frames of the batch in one vectored write of the shared frames.
//!    The writes of a slice are handed to the driver together
//!    ([`Streams::write`]), so a driver that can submit many writes with one
//!    system call (io_uring) does; epoll writes them one by one.
//!
//! Because a big fan-out is written in slices, the worker keeps reading
//! publishes meanwhile; events published during one batch coalesce into the
//! next, and every subscriber then takes several events per system call.
//!
//! Per subscriber and event nothing is allocated: the mask lives in the
//! subscriber, the write list is reused, the frames are shared. Only a
//! subscriber whose socket is full gets a backlog of frame references; past
//! `--max-backlog` it is dropped. `benches/fanout.rs` keeps this loop honest.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::sync::Arc;

use ssehub_protocol::EventId;
use ssehub_protocol::sse::Framing;

use crate::event::Event;
use crate::subscriber::{Backlog, Chunk, MAX_IOV, Subscriber, Tally};
use crate::topics::Topics;

/// Events per batch: one bit each in a subscriber's mask, one iovec each.
pub const MAX_BATCH: usize = 64;
const _: () = assert!(MAX_BATCH <= 64 && MAX_BATCH <= MAX_IOV);
/// Subscribers written per loop turn before the worker polls its sockets again.
pub const WRITE_SLICE: usize = 512;
/// Events accepted but not yet routed, at most: one batch beyond the one
/// being written, so the next batch is always full under load.
pub const MAX_PENDING: usize = MAX_BATCH;

/// The worker's connections as the fan-out sees them. The server implements
/// it over its connection table and I/O driver; tests over plain memory.
pub trait Streams {
    /// The subscriber on connection `key`, if that connection is an event stream.
    fn subscriber(&mut self, key: u32) -> Option<&mut Subscriber>;

    /// Calls `each` with every subscriber (for notices to all).
    fn for_each_subscriber(&mut self, each: &mut dyn FnMut(u32, &mut Subscriber));

    /// Performs every write: one vectored write each of [`Write::frames`] to
    /// connection `key`, recording what happened in [`Write::wrote`]. The
    /// writes may be submitted together; each must be complete (or known to
    /// have failed) when this returns.
    fn write(&mut self, batch: &[Arc<Event>], writes: &mut [Write]);
}

/// One subscriber's share of a batch, for the driver to write.
#[derive(Debug)]
pub struct Write {
    /// The connection.
    pub key: u32,
    /// Bit i: event i of the batch.
    pub mask: u64,
    /// The subscriber's body framing.
    pub framing: Framing,
    /// Bytes the frames take together.
    pub len: usize,
    /// What the write did.
    pub wrote: Wrote,
}

/// The outcome of one [`Write`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Wrote {
    /// Not attempted yet.
    Pending,
    /// This many bytes went out (0: the socket was full).
    Bytes(usize),
    /// The connection failed; it will be closed.
    Failed,
}

impl Write {
    /// The frames to write, in order.
    pub fn frames<'a>(&self, batch: &'a [Arc<Event>]) -> impl Iterator<Item = &'a [u8]> + Clone + use<'a> {
        let framing = self.framing;
        bits(self.mask).map(move |i| batch[i].frame().bytes(framing))
    }

    /// The frames as an iovec array; returns how many entries it filled.
    pub fn iovecs<'a>(&self, batch: &'a [Arc<Event>], iov: &mut [IoSlice<'a>; MAX_IOV]) -> usize {
        let mut n = 0;
        for frame in self.frames(batch) {
            iov[n] = IoSlice::new(frame);
            n += 1;
        }
        n
    }
}

/// Why the fan-out gives up on a subscriber.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Closing {
    /// Its backlog went over `--max-backlog`.
    SlowConsumer,
    /// Its connection failed.
    WriteError,
}

/// One worker's fan-out state.
#[derive(Debug)]
pub struct Fanout {
    /// Accepted and in history, not yet routed.
    pending: VecDeque<Arc<Event>>,
    /// Id of the newest accepted event.
    last_accepted: EventId,
    /// The batch being written.
    batch: Vec<Arc<Event>>,
    /// Subscribers with bits in this batch.
    touched: Vec<u32>,
    /// `touched[next..]` are still to be written.
    next: usize,
    /// The current slice's writes (reused: no allocation per slice).
    writes: Vec<Write>,
    /// Subscribers to close, for the caller to take.
    closing: Vec<(u32, Closing)>,
    /// Subscriber → skip events up to this id.
    filters: HashMap<u32, EventId>,
    /// `--max-backlog`.
    max_backlog: usize,
}

/// Indexes of the set bits, lowest first.
fn bits(mut mask: u64) -> impl Iterator<Item = usize> + Clone {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let i = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        Some(i)
    })
}

/// Gives `subscriber` the event of `bit`, listing it on its first event of the batch.
fn mark(touched: &mut Vec<u32>, key: u32, subscriber: &mut Subscriber, bit: u64) {
    if subscriber.batch == 0 {
        touched.push(key);
    }
    subscriber.batch |= bit;
}

impl Fanout {
    /// Fan-out state for a worker whose subscribers may fall `max_backlog` frames behind.
    pub fn new(max_backlog: usize) -> Self {
        Fanout {
            pending: VecDeque::new(),
            last_accepted: EventId::ZERO,
            batch: Vec::new(),
            touched: Vec::new(),
            next: 0,
            writes: Vec::new(),
            closing: Vec::new(),
            filters: HashMap::new(),
            max_backlog,
        }
    }

    /// The newest event in history: live delivery to a new subscriber starts after it.
    pub fn last_accepted(&self) -> EventId {
        self.last_accepted
    }

    /// `--max-backlog`.
    pub fn max_backlog(&self) -> usize {
        self.max_backlog
    }

    /// True while fewer than [`MAX_PENDING`] events wait: it takes more.
    pub fn wants_more(&self) -> bool {
        self.pending.len() < MAX_PENDING
    }

    /// True while routed or accepted events remain to be written.
    pub fn busy(&self) -> bool {
        self.next < self.touched.len() || !self.pending.is_empty()
    }

    /// Makes `key` skip events up to `upto` (already replayed, or accepted before it joined).
    pub fn filter(&mut self, key: u32, upto: EventId) {
        self.filters.insert(key, upto);
    }

    /// Forgets a closed subscriber's filter.
    pub fn forget(&mut self, key: u32) {
        self.filters.remove(&key);
    }

    /// Takes an event from the inbox (history already has it).
    pub fn accept(&mut self, event: Arc<Event>) {
        // After a reset notice ids start over.
        self.last_accepted = if event.to_all() { EventId::ZERO } else { event.id() };
        self.pending.push_back(event);
    }

    /// Writes one slice, routing the next batch when the current one is done.
    /// Returns true if work remains. Subscribers to close are then in
    /// [`Fanout::take_closing`].
    pub fn run(&mut self, topics: &Topics, streams: &mut impl Streams, tally: &mut Tally) -> bool {
        if self.next == self.touched.len() {
            self.route_batch(topics, streams);
        }
        self.write_slice(streams, tally);
        self.busy()
    }

    /// Subscribers the fan-out gave up on; the caller closes them.
    pub fn take_closing(&mut self) -> impl Iterator<Item = (u32, Closing)> + '_ {
        self.closing.drain(..)
    }

    fn route_batch(&mut self, topics: &Topics, streams: &mut impl Streams) {
        self.touched.clear();
        self.next = 0;
        self.batch.clear();
        while self.batch.len() < MAX_BATCH {
            let Some(event) = self.pending.pop_front() else { break };
            let to_all = event.to_all();
            self.batch.push(event);
            if to_all {
                break; // ids start over after it: filters must not apply to what follows
            }
        }
        let Fanout { batch, touched, filters, .. } = self;
        for (i, event) in batch.iter().enumerate() {
            let bit = 1u64 << i;
            if event.to_all() {
                filters.clear();
                streams.for_each_subscriber(&mut |key, subscriber| {
                    subscriber.filtered = false;
                    mark(touched, key, subscriber, bit);
                });
                continue;
            }
            // A subscriber reached through several topics or patterns sets
            // the same bit again: it still gets the event once.
            let mut visit = |key: u32| {
                let Some(subscriber) = streams.subscriber(key) else { return };
                if subscriber.filtered {
                    if filters.get(&key).is_some_and(|&upto| event.id() <= upto) {
                        return; // its replay covered this one
                    }
                    filters.remove(&key);
                    subscriber.filtered = false;
                }
                mark(touched, key, subscriber, bit);
            };
            for name in event.topics() {
                if let Some(topic) = topics.find(name) {
                    topics.get(topic).subscribers.iter().for_each(|&key| visit(key));
                }
                topics.for_each_pattern_subscriber(name, &mut visit);
            }
        }
    }

    fn write_slice(&mut self, streams: &mut impl Streams, tally: &mut Tally) {
        let end = (self.next + WRITE_SLICE).min(self.touched.len());
        let Fanout { batch, touched, writes, closing, max_backlog, .. } = self;
        writes.clear();
        for &key in &touched[self.next..end] {
            let Some(subscriber) = streams.subscriber(key) else { continue };
            let mask = std::mem::take(&mut subscriber.batch);
            if mask == 0 {
                continue; // the slot was closed and reused since routing
            }
            if let Some(backlog) = &mut subscriber.backlog {
                backlog.extend(bits(mask).map(|i| Chunk::Event(Arc::clone(&batch[i]))));
                if backlog.over_limit() {
                    closing.push((key, Closing::SlowConsumer));
                }
                continue;
            }
            let framing = subscriber.framing;
            let len = bits(mask).map(|i| batch[i].frame().bytes(framing).len()).sum();
            writes.push(Write { key, mask, framing, len, wrote: Wrote::Pending });
        }
        self.next = end;
        if writes.is_empty() {
            return;
        }
        streams.write(batch, writes);
        for write in writes.iter() {
            let count = u64::from(write.mask.count_ones());
            let wrote = match write.wrote {
                Wrote::Bytes(n) => n,
                Wrote::Pending | Wrote::Failed => {
                    closing.push((write.key, Closing::WriteError));
                    continue;
                }
            };
            tally.writes += 1;
            tally.bytes += wrote as u64;
            if wrote == write.len {
                tally.frames += count;
                continue;
            }
            // The socket is full: keep references to the rest and wait for
            // writability (a short write means the send buffer filled up, so
            // writing again now would only return EAGAIN).
            let Some(subscriber) = streams.subscriber(write.key) else { continue };
            let mut backlog = Backlog::new(*max_backlog);
            backlog.push_rest(bits(write.mask).map(|i| &batch[i]), write.framing, wrote);
            tally.frames += count - backlog.len() as u64;
            subscriber.backlog = Some(Box::new(backlog));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write as _;

    use super::*;
    use crate::subscriber::testing::{Tight, event};
    use crate::subscriber::{Flushed, Subscriptions};
    use ssehub_protocol::sse::EventStreamParser;

    /// Subscribers over in-memory sockets.
    #[derive(Default)]
    struct Fake {
        conns: BTreeMap<u32, (Subscriber, Tight)>,
        write_calls: usize, // calls of Streams::write (slices handed over)
    }

    impl Streams for Fake {
        fn subscriber(&mut self, key: u32) -> Option<&mut Subscriber> {
            self.conns.get_mut(&key).map(|(s, _)| s)
        }
        fn for_each_subscriber(&mut self, each: &mut dyn FnMut(u32, &mut Subscriber)) {
            for (key, (subscriber, _)) in self.conns.iter_mut() {
                each(*key, subscriber);
            }
        }
        fn write(&mut self, batch: &[Arc<Event>], writes: &mut [Write]) {
            self.write_calls += 1;
            for write in writes {
                let Some((_, sock)) = self.conns.get_mut(&write.key) else { continue };
                let mut iov = [IoSlice::new(&[]); MAX_IOV];
                let n = write.iovecs(batch, &mut iov);
                write.wrote = match sock.write_vectored(&iov[..n]) {
                    Ok(n) => Wrote::Bytes(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Wrote::Bytes(0),
                    Err(_) => Wrote::Failed,
                };
            }
        }
    }

    struct Hub {
        topics: Topics,
        fanout: Fanout,
        streams: Fake,
        tally: Tally,
    }

    impl Hub {
        fn new(max_backlog: usize) -> Self {
            Hub {
                topics: Topics::new(),
                fanout: Fanout::new(max_backlog),
                streams: Fake::default(),
                tally: Tally::default(),
            }
        }

        fn join(&mut self, key: u32, topics: &[&str], framing: Framing, room: usize) {
            let names: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
            let subs = self.topics.subscribe(key, &crate::topics::names(&names), &mut Vec::new());
            self.streams.conns.insert(key, (Subscriber::new(subs, framing), Tight { room, ..Tight::default() }));
        }

        fn publish(&mut self, ms: u64, topics: &[&str]) {
            self.fanout.accept(event(ms, topics, &format!("{ms}")));
        }

        /// Runs the fan-out until idle; returns who was closed.
        fn run(&mut self) -> Vec<(u32, Closing)> {
            let mut closed = Vec::new();
            while self.fanout.run(&self.topics, &mut self.streams, &mut self.tally) {
                closed.extend(self.fanout.take_closing());
            }
            closed.extend(self.fanout.take_closing());
            closed
        }

        /// The ids a subscriber's socket received, parsed from its bytes.
        fn received(&self, key: u32) -> Vec<String> {
            let (subscriber, sock) = &self.streams.conns[&key];
            let mut bytes = sock.got.clone();
            if subscriber.framing == Framing::Chunked {
                let mut plain = Vec::new();
                let mut decoder =
                    ssehub_protocol::http::ChunkedDecoder::new(u64::MAX, ssehub_protocol::http::Line::Strict);
                decoder.decode(&bytes, &mut |d: &[u8]| plain.extend_from_slice(d)).unwrap();
                bytes = plain;
            }
            EventStreamParser::new().feed(&bytes).into_iter().map(|e| e.last_event_id).collect()
        }
    }

    fn ids(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
        range.map(|ms| format!("{ms}-0")).collect()
    }

    #[test]
    fn an_event_to_several_topics_reaches_a_multi_topic_subscriber_once() {
        let mut hub = Hub::new(16);
        hub.join(1, &["a", "b"], Framing::Plain, usize::MAX);
        hub.join(2, &["b"], Framing::Chunked, usize::MAX);
        hub.join(3, &["c"], Framing::Plain, usize::MAX);
        hub.publish(1, &["a", "b"]);
        hub.publish(2, &["b"]);
        hub.publish(3, &["a"]);
        assert!(hub.run().is_empty());
        assert_eq!(hub.received(1), ids(1..=3));
        assert_eq!(hub.received(2), ids(1..=2));
        assert!(hub.received(3).is_empty());
        let sock_calls = |key| hub.streams.conns[&key].1.calls;
        assert_eq!((sock_calls(1), sock_calls(2), sock_calls(3)), (1, 1, 0), "one writev per subscriber per batch");
        assert_eq!(hub.tally, Tally { frames: 5, bytes: hub.tally.bytes, writes: 2 });
    }

    #[test]
    fn patterns_route_each_matching_event_once_per_subscriber() {
        let mut hub = Hub::new(16);
        // Matched by two patterns and a topic at once: still once.
        hub.join(1, &["orders/*", "orders/**", "orders/1"], Framing::Chunked, usize::MAX);
        hub.join(2, &["team/7/**"], Framing::Plain, usize::MAX);
        hub.join(3, &["orders/1"], Framing::Plain, usize::MAX);
        hub.publish(1, &["orders/1"]);
        hub.publish(2, &["orders/1/items"]);
        hub.publish(3, &["orders"]);
        hub.publish(4, &["team/7/chat", "orders/2"]);
        hub.publish(5, &["team/7/a/b"]);
        hub.publish(6, &["team/7"]);
        assert!(hub.run().is_empty());
        assert_eq!(hub.received(1), ["1-0", "2-0", "4-0"]);
        assert_eq!(hub.received(2), ["4-0", "5-0"]);
        assert_eq!(hub.received(3), ["1-0"]);
        // Leaving unlists the patterns: nothing reaches a closed slot.
        let (subscriber, _) = hub.streams.conns.remove(&1).unwrap();
        hub.topics.unsubscribe(1, &subscriber.subs, |_, _, _| {}, &mut Vec::new());
        hub.publish(7, &["orders/9"]);
        assert!(hub.run().is_empty());
        assert_eq!(hub.tally.frames, 6, "3 + 2 + 1, and nothing after leaving");
    }

    #[test]
    fn a_late_joiner_skips_what_its_replay_covered() {
        let mut hub = Hub::new(16);
        hub.join(1, &["t"], Framing::Plain, usize::MAX);
        hub.publish(1, &["t"]);
        hub.publish(2, &["t"]);
        // Joins with events 1 and 2 still pending, having replayed up to 2.
        hub.join(2, &["t"], Framing::Plain, usize::MAX);
        hub.streams.conns.get_mut(&2).unwrap().0.filtered = true;
        hub.fanout.filter(2, EventId { ms: 2, seq: 0 });
        hub.publish(3, &["t"]);
        hub.run();
        assert_eq!(hub.received(1), ids(1..=3));
        assert_eq!(hub.received(2), ids(3..=3));
        assert!(!hub.streams.conns[&2].0.filtered, "the first newer event removes the filter");
    }

    #[test]
    fn a_big_fan_out_is_written_in_slices() {
        let mut hub = Hub::new(16);
        let n = WRITE_SLICE as u32 * 2 + 7;
        for key in 0..n {
            hub.join(key, &["t"], Framing::Chunked, usize::MAX);
        }
        hub.publish(1, &["t"]);
        let mut turns = 0;
        while hub.fanout.run(&hub.topics, &mut hub.streams, &mut hub.tally) {
            turns += 1;
            if turns <= 2 {
                hub.publish(1 + turns, &["t"]); // arrives while the first batch is written
            }
        }
        assert_eq!(hub.streams.write_calls, 3 + 3, "three slices per batch, two batches");
        assert_eq!(turns, 5);
        for key in [0, WRITE_SLICE as u32, n - 1] {
            assert_eq!(hub.received(key), ids(1..=3), "events published meanwhile coalesce into the next batch");
            assert_eq!(hub.streams.conns[&key].1.calls, 2, "two writes: one per batch");
        }
    }

    #[test]
    fn a_full_socket_gets_a_backlog_and_a_slow_one_is_dropped() {
        let mut hub = Hub::new(3);
        hub.join(1, &["t"], Framing::Chunked, 10); // takes 10 bytes, then blocks
        hub.join(2, &["t"], Framing::Plain, usize::MAX);
        hub.publish(1, &["t"]);
        hub.publish(2, &["t"]);
        assert!(hub.run().is_empty());
        assert_eq!(hub.streams.conns[&1].0.backlog.as_ref().map(|b| b.len()), Some(2));
        hub.publish(3, &["t"]);
        assert!(hub.run().is_empty(), "still within --max-backlog");
        hub.publish(4, &["t"]);
        assert_eq!(hub.run(), [(1, Closing::SlowConsumer)]);
        assert_eq!(hub.received(2), ids(1..=4), "others are unaffected");

        // Had it drained in time, it would have received everything in order.
        let (subscriber, sock) = hub.streams.conns.get_mut(&1).unwrap();
        sock.room = usize::MAX;
        let backlog = subscriber.backlog.as_mut().unwrap();
        assert_eq!(backlog.flush(sock, Framing::Chunked, &mut Tally::default()).unwrap(), Flushed::Drained);
        assert_eq!(hub.received(1), ids(1..=4));
    }

    #[test]
    fn a_failed_socket_is_closed() {
        struct Failing(Fake);
        impl Streams for Failing {
            fn subscriber(&mut self, key: u32) -> Option<&mut Subscriber> {
                self.0.subscriber(key)
            }
            fn for_each_subscriber(&mut self, each: &mut dyn FnMut(u32, &mut Subscriber)) {
                self.0.for_each_subscriber(each)
            }
            fn write(&mut self, _: &[Arc<Event>], writes: &mut [Write]) {
                writes.iter_mut().for_each(|w| w.wrote = Wrote::Failed);
            }
        }
        let mut topics = Topics::new();
        let mut fanout = Fanout::new(4);
        let mut streams = Failing(Fake::default());
        let subs = topics.subscribe(9, &crate::topics::names(&["t".into()]), &mut Vec::new());
        streams.0.conns.insert(9, (Subscriber::new(subs, Framing::Plain), Tight::default()));
        fanout.accept(event(1, &["t"], "x"));
        while fanout.run(&topics, &mut streams, &mut Tally::default()) {}
        assert_eq!(fanout.take_closing().collect::<Vec<_>>(), [(9, Closing::WriteError)]);
    }

    #[test]
    fn a_stream_reset_reaches_everyone_and_clears_filters() {
        let mut hub = Hub::new(16);
        hub.join(1, &["a"], Framing::Plain, usize::MAX);
        hub.join(2, &["b"], Framing::Chunked, usize::MAX);
        hub.streams.conns.get_mut(&2).unwrap().0.filtered = true;
        hub.fanout.filter(2, EventId { ms: 100, seq: 0 });
        hub.publish(5, &["a"]);
        hub.fanout.accept(Arc::new(Event::notice(b"event: reset\ndata: x\n\n")));
        hub.publish(1, &["b"]); // ids start over after a reset
        hub.run();
        assert_eq!(hub.fanout.last_accepted(), EventId { ms: 1, seq: 0 });
        let events = |key| {
            let (_, sock) = &hub.streams.conns[&key];
            String::from_utf8_lossy(&sock.got).into_owned()
        };
        assert!(events(1).contains("event: reset"));
        assert!(events(2).contains("event: reset") && events(2).contains("id: 1-0"), "{}", events(2));
        let _ = Subscriptions::One(0, 0);
    }

    #[test]
    fn bits_lists_set_bits_in_order() {
        assert_eq!(bits(0).collect::<Vec<_>>(), Vec::<usize>::new());
        assert_eq!(bits(0b1011).collect::<Vec<_>>(), [0, 1, 3]);
        assert_eq!(bits(1 << 63).collect::<Vec<_>>(), [63]);
        assert_eq!(bits(u64::MAX).count(), 64);
    }
}
