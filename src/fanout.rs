//! The hot path: drain this worker's inbox and write each event to every
//! subscriber of its topics.
//!
//! Events are taken in batches of up to 64. Routing marks, per subscriber, a
//! 64-bit mask of the batch's events it should get; a subscriber of several
//! of an event's topics sets the same bit twice, so it receives the event
//! exactly once. Then every touched subscriber gets all its frames in one
//! `writev` of the shared frames, in publish order.
//!
//! Per subscriber and event this allocates nothing: the mask lives in the
//! connection, the iovec array on the stack, the frames are shared. Only a
//! subscriber whose socket is full gets a backlog of frame references, and
//! is dropped once it falls more than `--max-backlog` frames behind.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::conn::{Backlog, Chunk, Conn, Flushed, MAX_IOV, State, Written, write_frames};
use crate::event::Event;
use crate::metrics::Tally;
use crate::reactor::{Closing, Worker};

/// Events per batch: one bit each in a subscriber's mask, one iovec each.
pub const MAX_BATCH: usize = 64;
const _: () = assert!(MAX_BATCH <= 64 && MAX_BATCH <= MAX_IOV);

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
    /// Delivers everything waiting in this worker's inbox.
    pub(crate) fn fan_out(&mut self) {
        loop {
            self.batch.clear();
            let inbox = self.shared.bus.inbox(self.index);
            while self.batch.len() < MAX_BATCH {
                match inbox.pop() {
                    Some(event) => self.batch.push(event),
                    None => break,
                }
            }
            if self.batch.is_empty() {
                return;
            }
            self.route_batch();
            self.write_batch();
        }
    }

    /// Records each event in its topics' history and marks its subscribers.
    fn route_batch(&mut self) {
        let Worker { batch, topics, conns, touched, .. } = self;
        for (i, event) in batch.iter().enumerate() {
            let bit = 1u64 << i;
            for name in event.topics() {
                let topic = topics.get_or_insert(name);
                topics.record(topic, event);
                for &key in &topics.get(topic).subscribers {
                    if let Some(Conn { state: State::Stream(stream), .. }) = conns.get_mut(key as usize) {
                        if stream.batch == 0 {
                            touched.push(key);
                        }
                        stream.batch |= bit;
                    }
                }
            }
        }
    }

    fn write_batch(&mut self) {
        let max_backlog = self.shared.config.max_backlog as usize;
        let Worker { batch, conns, touched, closing, tally, .. } = self;
        for key in touched.drain(..) {
            if let Some(conn) = conns.get_mut(key as usize) {
                if let Err(why) = deliver(conn, batch, max_backlog, tally) {
                    closing.push((key, why));
                }
            }
        }
        while let Some((key, why)) = self.closing.pop() {
            if why == Closing::SlowConsumer {
                self.stats().slow_consumers.fetch_add(1, Relaxed);
                log::debug!("dropping slow subscriber (over --max-backlog {max_backlog})");
            }
            self.close(key as usize);
        }
    }
}

/// Writes a subscriber's share of the batch, or queues it behind its backlog.
fn deliver(conn: &mut Conn, batch: &[Arc<Event>], max_backlog: usize, tally: &mut Tally) -> Result<(), Closing> {
    let State::Stream(stream) = &mut conn.state else { return Ok(()) };
    let mask = std::mem::take(&mut stream.batch);
    let events = bits(mask).map(|i| &batch[i]);
    if let Some(backlog) = &mut stream.backlog {
        for event in events {
            backlog.push(Chunk::Event(Arc::clone(event)));
        }
        return if backlog.over_limit() { Err(Closing::SlowConsumer) } else { Ok(()) };
    }
    let count = mask.count_ones() as u64;
    let total: usize = events.clone().map(|e| e.frame().len()).sum();
    let wrote = write_frames(&mut conn.sock, events.clone().map(|e| e.frame())).map_err(|_| Closing::WriteError)?;
    tally.bytes += wrote as u64;
    if wrote == total {
        tally.frames += count;
        return Ok(());
    }
    // The socket is full: keep references to the rest and wait for writability.
    let mut backlog = Backlog::new(max_backlog);
    backlog.push_rest(events, wrote);
    tally.frames += count - backlog.len() as u64;
    let mut written = Written::default();
    let flushed = backlog.flush(&mut conn.sock, &mut written).map_err(|_| Closing::WriteError)?;
    tally.frames += written.frames;
    tally.bytes += written.bytes;
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
