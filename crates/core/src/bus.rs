//! The hand-off between threads: one sequencer orders every event, one
//! bounded queue per worker carries it.
//!
//! Publishing takes one short critical section: stamp ids in order and push
//! the shared frames onto every worker's queue. Because id assignment and the
//! pushes happen under the same lock, every worker sees events in id order.
//! No per-subscriber work happens here, and the lock is never taken on the
//! fan-out path: workers only pop their own lock-free queue.
//!
//! A worker about to sleep sets its `sleeping` flag and re-checks its queue; a
//! publisher wakes (one [`Wake::wake`], an `eventfd` write) only workers that
//! set the flag, so a busy worker costs publishers nothing.
//!
//! A backplane that orders events itself (a shared log) hands them over
//! already in order ([`Bus::push_sequenced`]); answers to a worker's requests
//! come back through the same inbox ([`Bus::reply`]).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_queue::{ArrayQueue, SegQueue};
use ssehub_protocol::EventId;

use crate::backplane::Reply;
use crate::event::Event;

/// Events a worker may have queued before publishes are refused with 503.
pub const INBOX_CAPACITY: usize = 16 * 1024;

/// Wakes a worker blocked in its event loop (the driver provides it).
pub trait Wake: Send + Sync {
    /// Makes the worker's next (or current) poll return.
    fn wake(&self) -> io::Result<()>;
}

/// Hands out `<unix-ms>-<seq>` ids that only ever increase, even if the clock steps back.
#[derive(Debug)]
pub struct Sequencer {
    /// The smallest id the next event may take.
    next: EventId,
}

impl Sequencer {
    /// A sequencer whose first id is at least `boot`.
    pub fn new(boot: EventId) -> Self {
        Sequencer { next: boot }
    }

    /// The next id, given the clock.
    pub fn next(&mut self, now_ms: u64) -> EventId {
        let id = if now_ms > self.next.ms { EventId { ms: now_ms, seq: 0 } } else { self.next };
        self.next = id.successor();
        id
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One worker's incoming events and replies.
pub struct Inbox {
    /// Sequenced events, in id order.
    queue: ArrayQueue<Arc<Event>>,
    /// Answers from the backplane (bounded by the requests in flight).
    replies: SegQueue<Reply>,
    /// Wakes the worker.
    waker: Arc<dyn Wake>,
    /// Set by the worker just before it blocks in poll.
    sleeping: AtomicBool,
}

impl Inbox {
    /// The next event, oldest first.
    pub fn pop(&self) -> Option<Arc<Event>> {
        self.queue.pop()
    }

    /// The next reply.
    pub fn pop_reply(&self) -> Option<Reply> {
        self.replies.pop()
    }

    /// Called by the worker before blocking. Returns false if events are
    /// already waiting, in which case it must not block.
    pub fn prepare_sleep(&self) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        // Pairs with the fence in `Bus::publish`: either the publisher sees
        // `sleeping` and wakes us, or we see its event here.
        fence(Ordering::SeqCst);
        self.queue.is_empty() && self.replies.is_empty()
    }

    /// Called by the worker once its poll returned.
    pub fn awake(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    fn wake_if_sleeping(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst)
            && let Err(error) = self.waker.wake()
        {
            log::error!("cannot wake worker: {error}");
        }
    }
}

/// The queues are full: workers are not keeping up. Publishers get 503.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Full;

/// The sequencer and every worker's inbox.
pub struct Bus {
    /// Orders events; held while they are pushed.
    sequencer: Mutex<Sequencer>,
    /// One per worker, by index.
    inboxes: Box<[Inbox]>,
    /// The first id this process could issue.
    boot: EventId,
    /// Events sequenced so far.
    published: AtomicU64,
}

impl Bus {
    /// A bus with one inbox per waker (one per worker).
    pub fn new(wakers: Vec<Arc<dyn Wake>>) -> Bus {
        let boot = EventId { ms: unix_ms(), seq: 0 };
        let inboxes = wakers
            .into_iter()
            .map(|waker| Inbox {
                queue: ArrayQueue::new(INBOX_CAPACITY),
                replies: SegQueue::new(),
                waker,
                sleeping: AtomicBool::new(false),
            })
            .collect();
        Bus { sequencer: Mutex::new(Sequencer::new(boot)), inboxes, boot, published: AtomicU64::new(0) }
    }

    /// Worker `worker`'s inbox.
    pub fn inbox(&self, worker: usize) -> &Inbox {
        &self.inboxes[worker]
    }

    /// Workers served.
    pub fn workers(&self) -> usize {
        self.inboxes.len()
    }

    /// Ids below this were issued before this process started.
    pub fn boot_id(&self) -> EventId {
        self.boot
    }

    /// Events sequenced so far.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Orders `events`, hands them to every worker and returns their ids.
    /// All or nothing: if any worker's queue lacks room, nothing is published.
    pub fn publish(&self, events: Vec<Event>) -> Result<Vec<EventId>, Full> {
        let mut ids = Vec::with_capacity(events.len());
        {
            let mut sequencer = self.lock();
            if self.inboxes.iter().any(|inbox| inbox.queue.capacity() - inbox.queue.len() < events.len()) {
                return Err(Full);
            }
            let now = unix_ms();
            for mut event in events {
                let id = sequencer.next(now);
                event.set_id(id);
                ids.push(id);
                let event = Arc::new(event);
                for inbox in self.inboxes.iter() {
                    // Room was checked above and only publishers push, under this lock.
                    if inbox.queue.push(Arc::clone(&event)).is_err() {
                        log::error!("inbox full after capacity check; event {id} lost for a worker");
                    }
                }
            }
            self.published.fetch_add(ids.len() as u64, Ordering::Relaxed);
        }
        self.wake_sleepers();
        Ok(ids)
    }

    /// Hands over an event that already has its place in the order (a shared
    /// log's id). Only the backplane's reader thread calls this.
    pub fn push_sequenced(&self, event: Arc<Event>) -> Result<(), Full> {
        {
            // Held only to keep a stray second caller from interleaving.
            let _order = self.lock();
            if self.inboxes.iter().any(|inbox| inbox.queue.is_full()) {
                return Err(Full);
            }
            for inbox in self.inboxes.iter() {
                if inbox.queue.push(Arc::clone(&event)).is_err() {
                    log::error!("inbox full after capacity check; event {} lost for a worker", event.id());
                }
            }
            if !event.to_all() {
                self.published.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.wake_sleepers();
        Ok(())
    }

    /// Delivers an answer to the worker that asked.
    pub fn reply(&self, worker: usize, reply: Reply) {
        let inbox = &self.inboxes[worker];
        inbox.replies.push(reply);
        fence(Ordering::SeqCst);
        inbox.wake_if_sleeping();
    }

    /// Wakes every worker, e.g. to notice shutdown.
    pub fn wake_all(&self) {
        for inbox in self.inboxes.iter() {
            if let Err(error) = inbox.waker.wake() {
                log::error!("cannot wake worker: {error}");
            }
        }
    }

    fn wake_sleepers(&self) {
        fence(Ordering::SeqCst);
        for inbox in self.inboxes.iter() {
            inbox.wake_if_sleeping();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Sequencer> {
        // A panic while holding the lock leaves the sequencer consistent
        // (`next` is written in one step), so poisoning is ignored.
        self.sequencer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn ids_strictly_increase_even_when_the_clock_steps_back() {
        let mut sequencer = Sequencer::new(EventId { ms: 100, seq: 0 });
        let ids: Vec<EventId> = [100, 100, 101, 99, 101, 150].iter().map(|&now| sequencer.next(now)).collect();
        let want = [(100, 0), (100, 1), (101, 0), (101, 1), (101, 2), (150, 0)];
        assert_eq!(ids.iter().map(|id| (id.ms, id.seq)).collect::<Vec<_>>(), want);
    }

    #[test]
    fn the_first_id_is_not_below_boot() {
        let boot = EventId { ms: 100, seq: 0 };
        let mut sequencer = Sequencer::new(boot);
        assert_eq!(sequencer.next(50), boot);
    }

    struct Counting(Arc<AtomicUsize>);
    impl Wake for Counting {
        fn wake(&self) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn publishing_wakes_only_sleeping_workers_and_is_all_or_nothing() {
        let wakes: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::default()).collect();
        let bus = Bus::new(wakes.iter().map(|w| Arc::new(Counting(Arc::clone(w))) as Arc<dyn Wake>).collect());
        let event = || Event::notice(b"data: x\n\n");
        assert!(bus.inbox(1).prepare_sleep(), "nothing queued yet");
        let ids = bus.publish(vec![event(), event()]).unwrap();
        assert!(ids[0] < ids[1]);
        assert_eq!((wakes[0].load(Ordering::SeqCst), wakes[1].load(Ordering::SeqCst)), (0, 1));
        assert!(!bus.inbox(1).prepare_sleep(), "events are waiting: do not block");
        assert_eq!(bus.inbox(0).pop().map(|e| e.id()), Some(ids[0]));
        let too_many: Vec<Event> = (0..INBOX_CAPACITY).map(|_| event()).collect();
        assert_eq!(bus.publish(too_many), Err(Full));
        assert_eq!(bus.published(), 2);
    }
}
