//! The hot path: take events from this worker's inbox and write each to every
//! subscriber of its topics.
//!
//! Three steps, each bounded so the event loop keeps serving other sockets:
//!
//! 1. **Drain** ([`Worker::drain_inbox`]): events leave the lock-free inbox,
//!    get a local sequence number and enter their topics' history at once, so
//!    a resuming client always finds every event it could have seen.
//! 2. **Route** a batch of up to 64 pending events: each subscriber of an
//!    event's topics gets its bit set in a 64-bit mask. A subscriber of several
//!    of those topics sets the same bit twice, so it gets the event once. A
//!    subscriber that joined while events were pending, or resumed from an id
//!    this worker has not reached yet, has a filter: it skips events up to an
//!    id its replay already covered. Filters are rare and short-lived; the
//!    first newer event removes them.
//! 3. **Write** up to [`WRITE_SLICE`] subscribers per loop turn: all of a
//!    subscriber's frames of the batch in one `writev` of the shared frames.
//!
//! Because a big fan-out is written in slices, the worker keeps reading
//! publishes meanwhile; events published during one batch coalesce into the
//! next, and every subscriber then takes several events per system call.
//!
//! Per subscriber and event nothing is allocated: the mask lives in the
//! connection, the iovec array on the stack, the frames are shared. Only a
//! subscriber whose socket is full gets a backlog of frame references; past
//! `--max-backlog` it is dropped.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::conn::{Backlog, Chunk, Conn, Flushed, MAX_IOV, State, Stream, write_frames};
use crate::event::{Event, EventId};
use crate::metrics::Tally;
use crate::reactor::{Closing, Worker};

/// Events per batch: one bit each in a subscriber's mask, one iovec each.
pub const MAX_BATCH: usize = 64;
const _: () = assert!(MAX_BATCH <= 64 && MAX_BATCH <= MAX_IOV);
/// Subscribers written per loop turn before the worker polls its sockets again.
pub const WRITE_SLICE: usize = 512;

/// One worker's fan-out state.
#[derive(Debug, Default)]
pub struct Fanout {
    pending: VecDeque<Arc<Event>>,  // drained and in history, not yet routed
    last_drained: EventId,          // id of the newest drained event
    batch: Vec<Arc<Event>>,         // being written
    touched: Vec<u32>,              // subscribers with bits in this batch
    next: usize,                    // touched[next..] are still to be written
    closing: Vec<(u32, Closing)>,   // subscribers to close after this slice
    filters: HashMap<u32, EventId>, // subscriber → skip events up to this id
}

impl Fanout {
    /// The newest event in history: live delivery to a new subscriber starts after it.
    pub fn last_drained(&self) -> EventId {
        self.last_drained
    }

    /// True while routed or drained events remain to be written.
    pub fn busy(&self) -> bool {
        self.next < self.touched.len() || !self.pending.is_empty()
    }

    /// Makes `key` skip events up to `upto` (already replayed or drained before it joined).
    pub fn filter(&mut self, key: u32, upto: EventId) {
        self.filters.insert(key, upto);
    }

    pub fn forget(&mut self, key: u32) {
        self.filters.remove(&key);
    }
}

/// Gives `stream` the event of `bit`, listing it on its first event of the batch.
fn mark(touched: &mut Vec<u32>, key: u32, stream: &mut Stream, bit: u64) {
    if stream.batch == 0 {
        touched.push(key);
    }
    stream.batch |= bit;
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

impl Worker {
    /// Moves every queued event into history and the pending list.
    pub(crate) fn drain_inbox(&mut self) {
        let inbox = self.shared.bus.inbox(self.index);
        while let Some(event) = inbox.pop() {
            if event.to_all() {
                // The stream was reset: what history holds is gone from it,
                // and ids start over.
                self.topics.clear_history();
                self.fanout.last_drained = EventId::ZERO;
            } else {
                for name in event.topics() {
                    let topic = self.topics.get_or_insert(name);
                    self.topics.record(topic, &event);
                }
                self.fanout.last_drained = event.id();
            }
            self.fanout.pending.push_back(event);
        }
    }

    /// Writes one slice of the fan-out, routing the next batch when the
    /// current one is done. Returns true if work remains.
    pub(crate) fn fan_out(&mut self) -> bool {
        if self.fanout.next == self.fanout.touched.len() {
            self.route_batch();
        }
        self.write_slice();
        self.fanout.busy()
    }

    /// Finishes all fan-out work now (used when shutting down).
    pub(crate) fn fan_out_all(&mut self) {
        self.drain_inbox();
        while self.fan_out() {}
    }

    fn route_batch(&mut self) {
        let Worker { fanout, topics, conns, .. } = self;
        fanout.touched.clear();
        fanout.next = 0;
        fanout.batch.clear();
        while fanout.batch.len() < MAX_BATCH {
            let Some(event) = fanout.pending.pop_front() else { break };
            let to_all = event.to_all();
            fanout.batch.push(event);
            if to_all {
                break; // ids start over after it: filters must not apply to what follows
            }
        }
        for (i, event) in fanout.batch.iter().enumerate() {
            let bit = 1u64 << i;
            if event.to_all() {
                fanout.filters.clear();
                for (key, conn) in conns.iter_mut() {
                    if let State::Stream(stream) = &mut conn.state {
                        stream.filtered = false;
                        mark(&mut fanout.touched, key as u32, stream, bit);
                    }
                }
                continue;
            }
            for name in event.topics() {
                let Some(topic) = topics.find(name) else { continue };
                for &key in &topics.get(topic).subscribers {
                    let Some(Conn { state: State::Stream(stream), .. }) = conns.get_mut(key as usize) else { continue };
                    if stream.filtered {
                        if fanout.filters.get(&key).is_some_and(|&upto| event.id() <= upto) {
                            continue; // its replay covered this one
                        }
                        fanout.filters.remove(&key);
                        stream.filtered = false;
                    }
                    mark(&mut fanout.touched, key, stream, bit);
                }
            }
        }
    }

    fn write_slice(&mut self) {
        let max_backlog = self.shared.config.max_backlog as usize;
        let Worker { fanout, conns, tally, .. } = self;
        let end = (fanout.next + WRITE_SLICE).min(fanout.touched.len());
        for &key in &fanout.touched[fanout.next..end] {
            if let Some(Conn { sock, state: State::Stream(stream), .. }) = conns.get_mut(key as usize) {
                if let Err(why) = deliver(sock, stream, &fanout.batch, max_backlog, tally) {
                    fanout.closing.push((key, why));
                }
            }
        }
        fanout.next = end;
        while let Some((key, why)) = self.fanout.closing.pop() {
            if why == Closing::SlowConsumer {
                self.stats().slow_consumers.fetch_add(1, Relaxed);
                log::debug!("dropping slow subscriber (over --max-backlog {max_backlog})");
            }
            self.close(key as usize);
        }
    }
}

/// Writes a subscriber's share of the batch (the events whose bits are set in
/// `stream.batch`), or queues it behind its backlog. Public for the
/// micro-benchmarks, which pass an in-memory sink for `sock`.
pub fn deliver(
    sock: &mut impl Write,
    stream: &mut Stream,
    batch: &[Arc<Event>],
    max_backlog: usize,
    tally: &mut Tally,
) -> Result<(), Closing> {
    let mask = std::mem::take(&mut stream.batch);
    if mask == 0 {
        return Ok(()); // the slot was closed and reused since routing
    }
    let events = bits(mask).map(|i| &batch[i]);
    if let Some(backlog) = &mut stream.backlog {
        for event in events {
            backlog.push(Chunk::Event(Arc::clone(event)));
        }
        return if backlog.over_limit() { Err(Closing::SlowConsumer) } else { Ok(()) };
    }
    let count = mask.count_ones() as u64;
    let total: usize = events.clone().map(|e| e.frame().len()).sum();
    let wrote = write_frames(sock, events.clone().map(|e| e.frame())).map_err(|_| Closing::WriteError)?;
    tally.writes += 1;
    tally.bytes += wrote as u64;
    if wrote == total {
        tally.frames += count;
        return Ok(());
    }
    // The socket is full: keep references to the rest and wait for writability.
    let mut backlog = Backlog::new(max_backlog);
    backlog.push_rest(events, wrote);
    tally.frames += count - backlog.len() as u64;
    let flushed = backlog.flush(sock, tally).map_err(|_| Closing::WriteError)?;
    if flushed == Flushed::Blocked {
        stream.backlog = Some(Box::new(backlog));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::bits;

    #[test]
    fn bits_lists_set_bits_in_order() {
        assert_eq!(bits(0).collect::<Vec<_>>(), Vec::<usize>::new());
        assert_eq!(bits(0b1011).collect::<Vec<_>>(), [0, 1, 3]);
        assert_eq!(bits(1 << 63).collect::<Vec<_>>(), [63]);
        assert_eq!(bits(u64::MAX).count(), 64);
    }
}
