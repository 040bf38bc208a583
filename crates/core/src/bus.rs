//! The hand-off between threads: one sequencer orders every event, records
//! it in the one shared history, and routes it to the workers that have a
//! subscriber for it; one bounded queue per worker carries it.
//!
//! Publishing takes one short critical section: stamp ids in order, record,
//! and push the shared frame onto the queues of the workers that want it (an
//! event nobody subscribes to touches no queue). Because id assignment and
//! the pushes happen under the same lock, every worker sees its events in id
//! order. No per-subscriber work happens here, and the lock is never taken on
//! the fan-out path: workers only pop their own lock-free queue (they take
//! it to change their interest, when a topic gains its first or loses its
//! last subscriber on that worker, and to read history for a resume).
//!
//! A worker about to sleep sets its `sleeping` flag and re-checks its queue; a
//! publisher wakes (one [`Wake::wake`], an `eventfd` write) only workers that
//! set the flag, so a busy worker costs publishers nothing. A worker that
//! publishes ([`Bus::publish_from`]) owes its wakes until it has read every
//! request of its loop turn ([`Bus::pay_wakes`]): a worker it hands several
//! events to wakes once for all of them, not once per request.
//!
//! With a durable log ([`Journal`], `--data-dir`) the sequencer also
//! appends each publish's records to it, under the same lock, after the ids
//! are stamped and before anything is recorded or pushed: an event reaches
//! no worker (so no subscriber, no publisher's answer) before its record is
//! written, and records are written in id order. If the write fails,
//! nothing of the publish happens (its ids are simply never used).
//!
//! A backplane that orders events itself (a shared log) hands them over
//! already in order ([`Bus::push_sequenced`]); answers to a worker's requests
//! come back through the same inbox ([`Bus::reply`]).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_queue::{ArrayQueue, SegQueue};
use ssehub_protocol::EventId;
use ssehub_protocol::pattern::Pattern;

use crate::backplane::{IdempotencyKey, Reply};
use crate::event::Event;
use crate::history::{Gap, History, HistoryStats, Knowledge, Limits};
use crate::pattern_index::PatternIndex;

/// Most events a worker's inbox holds: the largest publish it can take.
pub const INBOX_CAPACITY: usize = 16 * 1024;
/// Events a worker may have queued before publishes wait for it (the
/// publisher's socket is not read meanwhile: backpressure). A worker takes
/// only a batch beyond the one it writes out of its inbox
/// (`fanout::MAX_PENDING`), so this depth is what bounds the delay between
/// a publish's answer and its delivery when publishers outrun a worker: a
/// few milliseconds of work, not seconds of it. Below it a publish is taken
/// whole, however large (up to [`INBOX_CAPACITY`]), so a large publish
/// waits no longer than a small one.
pub const INBOX_SOFT_LIMIT: usize = 64;

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
    /// Workers this worker's publishes handed events to and has not woken
    /// yet ([`Bus::publish_from`]); only this worker touches it.
    owed: AtomicU64,
}

impl Inbox {
    /// The next event, oldest first.
    pub fn pop(&self) -> Option<Arc<Event>> {
        self.queue.pop()
    }

    /// True if no event is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// True if `wanted` more events may be queued now: the queue is below
    /// the soft limit and they fit.
    fn has_room(&self, wanted: usize) -> bool {
        let queued = self.queue.len();
        queued < INBOX_SOFT_LIMIT && queued + wanted <= INBOX_CAPACITY
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

/// Why a publish did not happen (nothing of it did).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// A worker's queue lacks room ([`Full`]).
    Full,
    /// The durable log could not be written (logged by the [`Journal`]).
    Journal,
}

impl From<Full> for Refused {
    fn from(Full: Full) -> Self {
        Refused::Full
    }
}

/// Where the sequencer writes every publish before any worker sees it: a
/// durable log (`--data-dir`). Called under the sequencer's lock, in id order.
pub trait Journal: Send {
    /// Appends `events` (stamped, in id order) and, for a keyed publish, the
    /// key remembered at `now_ms` with their ids, in one write. An error
    /// means nothing of it may be published; the journal logs it.
    fn append(&mut self, events: &[Arc<Event>], key: Option<&IdempotencyKey>, now_ms: u64) -> io::Result<()>;

    /// History retains nothing before `oldest` (`None`: nothing at all, up
    /// to and including `last`): the log may delete what lies entirely
    /// below it, once it has written down what `floor(upto, max)` says
    /// history knows of the dropped events up to the last one it deletes
    /// (at most `max` topics), so a restart still knows which topics lost
    /// events there, and why. Called about once a second.
    fn release(
        &mut self,
        oldest: Option<EventId>,
        last: EventId,
        now_ms: u64,
        floor: &mut dyn FnMut(EventId, usize) -> Floor,
    );
}

/// What a durable log records before deleting segments, and takes back at
/// start ([`Bus::restore_floor`]): without it a resume from an id in a
/// deleted segment could only be `before-start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Floor {
    /// Where the log's history began (the bus's boot id): a resume from
    /// below it is `before-start`.
    pub origin: EventId,
    /// The newest id issued: ids continue after it.
    pub last: EventId,
    /// What history knew of the dropped events ([`History::knowledge`]).
    pub knowledge: Knowledge,
}

/// Most workers a bus serves: interest is one bit per worker in a `u64`.
pub const MAX_WORKERS: usize = 64;

/// What the bus knows of one new subscription, taken under its lock.
#[derive(Debug)]
pub struct Attached {
    /// Every event after this id reaches the worker; none at or before it
    /// is owed to the subscriber beyond the replay (live delivery starts here).
    pub live_after: EventId,
    /// For a resume: whether history dropped events the client missed, and
    /// the retained ones it missed, up to `live_after`, in id order.
    pub replay: Option<(Option<Gap>, Vec<Arc<Event>>)>,
}

/// A subscription's names as the bus sees them: topics, and patterns.
pub type Names<'a> = &'a [(String, Option<Pattern>)];

/// What the sequencer's lock guards: the order, who wants what, and history.
struct Core {
    /// Hands out ids.
    sequencer: Sequencer,
    /// The newest event handed to workers (or issued); `ZERO` after a reset.
    last: EventId,
    /// Topic → the workers with a subscriber to it (bit i: worker i). A
    /// topic no worker subscribes to has no entry.
    interest: HashMap<Box<str>, u64>,
    /// Pattern subscriptions: one entry per (worker, pattern) held.
    patterns: PatternIndex<u8>,
    /// Every topic's recent events, held once.
    history: History,
    /// The durable log every publish is written to first (`--data-dir`).
    journal: Option<Box<dyn Journal>>,
}

impl Core {
    /// The workers an event must reach.
    fn route(&self, event: &Event, all: u64) -> u64 {
        if event.to_all() {
            return all;
        }
        let mut mask = 0;
        for name in event.topics() {
            if let Some(&workers) = self.interest.get(&**name) {
                mask |= workers;
            }
            if !self.patterns.is_empty() {
                self.patterns.for_each_match(name, |worker| mask |= 1 << worker);
            }
        }
        mask
    }
}

/// The sequencer and every worker's inbox.
///
/// Routing: an event goes only to the workers with a subscriber for one of
/// its topics (or a matching pattern), decided under the lock that orders
/// it. A worker changes its interest under the same lock ([`Bus::attach`],
/// [`Bus::detach`]), and learns there the last id routed without it: every
/// later event reaches it, every earlier one is in history. So a subscriber
/// that joins while events are in flight misses none and duplicates none.
pub struct Bus {
    /// Orders events, routes them, keeps history; held while they are pushed.
    core: Mutex<Core>,
    /// One per worker, by index.
    inboxes: Box<[Inbox]>,
    /// Every worker's bit.
    all: u64,
    /// Where this process began: every id it issues is above it (a restored
    /// log makes it the first restored id).
    boot: EventId,
    /// Events sequenced so far.
    published: AtomicU64,
}

impl Bus {
    /// A bus with one inbox per waker (one per worker, at most
    /// [`MAX_WORKERS`]), whose history keeps to `limits`.
    pub fn new(wakers: Vec<Arc<dyn Wake>>, limits: Limits) -> Bus {
        assert!(wakers.len() <= MAX_WORKERS, "at most {MAX_WORKERS} workers");
        let boot = EventId { ms: unix_ms(), seq: 0 };
        let inboxes: Box<[Inbox]> = wakers
            .into_iter()
            .map(|waker| Inbox {
                queue: ArrayQueue::new(INBOX_CAPACITY),
                replies: SegQueue::new(),
                waker,
                sleeping: AtomicBool::new(false),
                owed: AtomicU64::new(0),
            })
            .collect();
        let all = if inboxes.len() == 64 { u64::MAX } else { (1u64 << inboxes.len()) - 1 };
        let core = Core {
            // Strictly after boot: a stream opened before the first event
            // names boot as its position, and resuming after it misses nothing.
            sequencer: Sequencer::new(boot.successor()),
            last: EventId::ZERO,
            interest: HashMap::new(),
            patterns: PatternIndex::new(),
            history: History::new(limits),
            journal: None,
        };
        Bus { core: Mutex::new(core), inboxes, all, boot, published: AtomicU64::new(0) }
    }

    /// Before the workers start: takes back events from a durable log, in id
    /// order (in one call or several). Each goes through history as if just
    /// published, its age measured from its id's time, not from now (so the
    /// bounds drop now what they would have dropped, expired events leave
    /// exact `expired` gaps), ids continue after the last one, and the very
    /// first becomes the boot id: a resume from before it gets
    /// `before-start`. Returns how many were taken.
    pub fn restore(&mut self, events: impl IntoIterator<Item = Arc<Event>>) -> usize {
        let now = unix_ms();
        let core = self.core.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut restored = 0;
        for event in events {
            if event.to_all() || event.id() <= core.last {
                continue; // not in order: the log is checked before it gets here
            }
            if core.last == EventId::ZERO {
                self.boot = event.id();
            }
            // History's TTL compares an event's id time with `now`.
            core.history.record(&event, now);
            core.last = event.id();
            restored += 1;
        }
        if restored > 0 {
            core.sequencer = Sequencer::new(core.last.successor().max(EventId { ms: now, seq: 0 }));
        }
        restored
    }

    /// Before the workers start, after [`Bus::restore`]: what the durable
    /// log recorded history knew of the events it had dropped before it
    /// deleted their segments. The boot id goes back to where the log's
    /// history began, so a resume from an id in a deleted segment gets the
    /// gap it would have got before the restart (`expired`, `evicted`, or
    /// none), and only one from before the log began gets `before-start`.
    /// Ids continue after the newest ever issued.
    pub fn restore_floor(&mut self, floor: Floor) {
        let core = self.core.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        if floor.origin != EventId::ZERO && floor.origin < self.boot {
            self.boot = floor.origin;
        }
        if core.sequencer.next <= floor.last {
            core.sequencer = Sequencer::new(floor.last.successor());
        }
        core.history.restore_knowledge(floor.knowledge, unix_ms());
    }

    /// Before the workers start, after [`Bus::restore`]: the durable log was
    /// damaged, so events clients received may be missing from what was
    /// restored. Every resume from an id before the next one issued then
    /// gets `before-start` (and the retained events after it), never a
    /// silent hole.
    pub fn restored_with_loss(&mut self) {
        let core = self.core.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.boot = core.sequencer.next.max(EventId { ms: unix_ms(), seq: 0 });
        // Every id issued from here is above boot (see `Bus::boot`).
        core.sequencer = Sequencer::new(self.boot.successor());
    }

    /// Before the workers start (after [`Bus::restore`]): every publish is
    /// written to `journal` before any worker sees it.
    pub fn set_journal(&mut self, journal: Box<dyn Journal>) {
        self.core.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()).journal = Some(journal);
    }

    /// Charges `bytes` held for idempotency keys to history's budget (see
    /// [`History::charge_external`]).
    pub fn charge_keys(&self, bytes: usize) {
        self.lock().history.charge_external(bytes, unix_ms());
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

    /// Orders `events`, records them in history, hands each to the workers
    /// that want it and returns their ids. All or nothing: if a worker's
    /// queue lacks room for what it would get, or the journal cannot be
    /// written, nothing is published.
    pub fn publish(&self, events: Vec<Event>) -> Result<Vec<EventId>, Refused> {
        self.publish_keyed(events, None)
    }

    /// [`Bus::publish`], with the idempotency key it is remembered under
    /// written to the journal in the same write as its events.
    pub fn publish_keyed(&self, events: Vec<Event>, key: Option<&IdempotencyKey>) -> Result<Vec<EventId>, Refused> {
        let (ids, woken) = self.sequence(events, key)?;
        self.wake_sleepers(woken);
        Ok(ids)
    }

    /// [`Bus::publish_keyed`] from worker `worker`'s loop: the workers it
    /// hands events to are woken by its next [`Bus::pay_wakes`], which it
    /// must call before it blocks.
    pub fn publish_from(
        &self,
        worker: usize,
        events: Vec<Event>,
        key: Option<&IdempotencyKey>,
    ) -> Result<Vec<EventId>, Refused> {
        let (ids, woken) = self.sequence(events, key)?;
        let owed = &self.inboxes[worker].owed;
        owed.store(owed.load(Ordering::Relaxed) | woken, Ordering::Relaxed);
        Ok(ids)
    }

    /// Wakes the workers worker `worker`'s publishes handed events to since
    /// its last call (those that are asleep).
    pub fn pay_wakes(&self, worker: usize) {
        let owed = self.inboxes[worker].owed.swap(0, Ordering::Relaxed);
        if owed != 0 {
            self.wake_sleepers(owed & !(1 << worker));
        }
    }

    /// Stamps, logs, records and pushes `events`; returns their ids and the
    /// workers they were pushed to.
    fn sequence(&self, events: Vec<Event>, key: Option<&IdempotencyKey>) -> Result<(Vec<EventId>, u64), Refused> {
        let mut ids = Vec::with_capacity(events.len());
        let mut woken = 0u64;
        {
            let mut guard = self.lock();
            let core = &mut *guard;
            let routes: Vec<u64> = events.iter().map(|event| core.route(event, self.all)).collect();
            for worker in workers_in(routes.iter().fold(0, |any, mask| any | mask)) {
                let wanted = routes.iter().filter(|&&mask| mask & (1 << worker) != 0).count();
                if !self.inboxes[worker].has_room(wanted) {
                    return Err(Refused::Full);
                }
            }
            let now = unix_ms();
            let events: Vec<Arc<Event>> = events
                .into_iter()
                .map(|mut event| {
                    let id = core.sequencer.next(now);
                    event.set_id(id);
                    ids.push(id);
                    Arc::new(event)
                })
                .collect();
            // INVARIANT: written before any of it is recorded or pushed.
            if let Some(journal) = &mut core.journal
                && journal.append(&events, key, now).is_err()
            {
                return Err(Refused::Journal);
            }
            for (event, mask) in events.iter().zip(routes) {
                core.history.record(event, now);
                core.last = event.id();
                self.hand_over(event, mask);
                woken |= mask;
            }
            self.published.fetch_add(ids.len() as u64, Ordering::Relaxed);
        }
        Ok((ids, woken))
    }

    /// Hands over an event that already has its place in the order (a shared
    /// log's id). Only the backplane's reader thread calls this. A notice to
    /// every subscriber ([`Event::to_all`]) means the log was reset: history
    /// is forgotten and ids start over.
    pub fn push_sequenced(&self, event: Arc<Event>) -> Result<(), Full> {
        let mask;
        {
            let mut core = self.lock();
            mask = core.route(&event, self.all);
            if workers_in(mask).any(|worker| self.inboxes[worker].queue.is_full()) {
                return Err(Full);
            }
            if event.to_all() {
                core.history.clear();
                core.last = EventId::ZERO;
            } else {
                core.history.record(&event, unix_ms());
                core.last = event.id();
                self.published.fetch_add(1, Ordering::Relaxed);
            }
            self.hand_over(&event, mask);
        }
        self.wake_sleepers(mask);
        Ok(())
    }

    /// Worker `worker` now has subscribers for `gained` (names it had none
    /// for): events for them reach it from here on. For a resume from
    /// `after`, also reads what history retains of `names` up to that point.
    pub fn attach(&self, worker: usize, gained: Names<'_>, resume: Option<(Names<'_>, Option<EventId>)>) -> Attached {
        let mut core = self.lock();
        let bit = 1u64 << worker;
        for (name, pattern) in gained {
            match pattern {
                Some(pattern) => core.patterns.insert(pattern, worker as u8),
                None => *core.interest.entry(name.as_str().into()).or_insert(0) |= bit,
            }
        }
        let live_after = core.last;
        let replay = resume.map(|(names, after)| core.history.replay(names, after, live_after));
        Attached { live_after, replay }
    }

    /// Worker `worker` has no subscriber left for `lost`.
    pub fn detach(&self, worker: usize, lost: Names<'_>) {
        if lost.is_empty() {
            return;
        }
        let mut core = self.lock();
        let bit = 1u64 << worker;
        for (name, pattern) in lost {
            match pattern {
                Some(pattern) => {
                    core.patterns.remove(pattern, worker as u8);
                }
                None => {
                    if let Some(workers) = core.interest.get_mut(name.as_str()) {
                        *workers &= !bit;
                        if *workers == 0 {
                            core.interest.remove(name.as_str());
                        }
                    }
                }
            }
        }
    }

    /// Drops what history holds past `--history-ttl` (called about once a
    /// second, so memory is given back when nothing is published).
    /// With a journal, also lets it delete what history no longer retains.
    pub fn expire(&self) {
        let mut guard = self.lock();
        let core = &mut *guard;
        let now = unix_ms();
        core.history.expire(now);
        if let Some(journal) = &mut core.journal {
            let (history, last, origin) = (&core.history, core.last, self.boot);
            let mut floor = |upto: EventId, max: usize| Floor { origin, last, knowledge: history.knowledge(upto, max) };
            journal.release(history.oldest(), last, now, &mut floor);
        }
    }

    /// History's figures, and topics with a subscriber somewhere.
    pub fn history_stats(&self) -> (HistoryStats, usize) {
        let core = self.lock();
        (core.history.stats(), core.interest.len())
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

    /// Pushes `event` onto the inboxes in `mask`; room was checked under the
    /// lock, and only lock holders push.
    fn hand_over(&self, event: &Arc<Event>, mask: u64) {
        for worker in workers_in(mask) {
            if self.inboxes[worker].queue.push(Arc::clone(event)).is_err() {
                log::error!("inbox full after capacity check; event {} lost for worker {worker}", event.id());
            }
        }
    }

    fn wake_sleepers(&self, mask: u64) {
        fence(Ordering::SeqCst);
        for worker in workers_in(mask) {
            self.inboxes[worker].wake_if_sleeping();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock leaves the core consistent enough
        // (each step is complete), so poisoning is ignored.
        self.core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The workers whose bits `mask` sets, lowest first: an event costs its
/// interested workers, never a pass over all of them.
fn workers_in(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let worker = mask.trailing_zeros() as usize;
        (mask != 0).then(|| {
            mask &= mask - 1;
            worker
        })
    })
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

    fn limits() -> Limits {
        Limits { per_topic: 1 << 20, ttl_ms: 0, budget: usize::MAX / 2 }
    }

    fn topic(name: &str) -> (String, Option<Pattern>) {
        (name.to_string(), None)
    }

    fn event(topic: &str) -> Event {
        Event::new(Box::new([topic.into()]), ssehub_protocol::sse::Frame::notice(b"data: x\n\n"))
    }

    /// An event on `t` already stamped `<ms>-0`, as a durable log restores it.
    fn at(ms: u64) -> Arc<Event> {
        let mut e = event("t");
        e.set_id(EventId { ms, seq: 0 });
        Arc::new(e)
    }

    #[test]
    fn workers_in_lists_the_set_bits_lowest_first() {
        assert_eq!(workers_in(0).count(), 0);
        assert_eq!(workers_in(0b1010_0001).collect::<Vec<_>>(), [0, 5, 7]);
        assert_eq!(workers_in(u64::MAX).collect::<Vec<_>>(), (0..64).collect::<Vec<_>>());
        assert_eq!(workers_in(1 << 63).collect::<Vec<_>>(), [63]);
    }

    #[test]
    fn a_worker_publishing_wakes_the_workers_it_fed_once_when_it_pays() {
        let wakes: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::default()).collect();
        let bus =
            Bus::new(wakes.iter().map(|w| Arc::new(Counting(Arc::clone(w))) as Arc<dyn Wake>).collect(), limits());
        bus.attach(1, &[topic("t")], None);
        bus.attach(0, &[topic("own")], None);
        assert!(bus.inbox(1).prepare_sleep() && bus.inbox(2).prepare_sleep());
        for _ in 0..3 {
            bus.publish_from(0, vec![event("t"), event("own")], None).unwrap();
        }
        let woken = || wakes.iter().map(|w| w.load(Ordering::SeqCst)).collect::<Vec<_>>();
        assert_eq!(woken(), [0, 0, 0], "owed until worker 0 has read its turn");
        assert!(!bus.inbox(1).prepare_sleep(), "the events are queued all the same (and it still sleeps)");
        bus.pay_wakes(0);
        assert_eq!(woken(), [0, 1, 0], "one wake for three publishes; never itself, never a worker it did not feed");
        bus.pay_wakes(0);
        assert_eq!(woken(), [0, 1, 0], "paid once");
    }

    #[test]
    fn events_reach_only_interested_workers_which_are_woken_only_if_sleeping() {
        let wakes: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::default()).collect();
        let bus =
            Bus::new(wakes.iter().map(|w| Arc::new(Counting(Arc::clone(w))) as Arc<dyn Wake>).collect(), limits());
        assert!(bus.inbox(0).prepare_sleep() && bus.inbox(1).prepare_sleep(), "nothing queued yet");
        let attached = bus.attach(1, &[topic("t")], None);
        assert_eq!(attached.live_after, EventId::ZERO);
        let ids = bus.publish(vec![event("t"), event("t")]).unwrap();
        assert!(bus.boot_id() < ids[0] && ids[0] < ids[1], "a stream opened before them names boot as its position");
        assert_eq!((wakes[0].load(Ordering::SeqCst), wakes[1].load(Ordering::SeqCst)), (0, 1));
        assert!(!bus.inbox(1).prepare_sleep(), "events are waiting: do not block");
        assert!(bus.inbox(0).prepare_sleep(), "worker 0 wants none of it");
        assert_eq!(bus.inbox(1).pop().map(|e| e.id()), Some(ids[0]));
        // Nobody subscribes to `x`: no inbox is touched, history keeps it.
        let quiet = bus.publish(vec![event("x")]).unwrap();
        assert!(bus.inbox(0).pop().is_none());
        assert_eq!(bus.inbox(1).pop().map(|e| e.id()), Some(ids[1]));
        assert!(bus.inbox(1).pop().is_none());
        let late = bus.attach(0, &[topic("x")], Some((&[topic("x")], Some(EventId::ZERO))));
        assert_eq!(late.live_after, quiet[0]);
        let (gap, replay) = late.replay.unwrap();
        assert_eq!((gap, replay.iter().map(|e| e.id()).collect::<Vec<_>>()), (None, quiet.clone()));
        // All or nothing, counted only for the workers that would get them.
        let too_many: Vec<Event> = (0..INBOX_CAPACITY + 1).map(|_| event("t")).collect();
        assert_eq!(bus.publish(too_many), Err(Refused::Full));
        bus.detach(1, &[topic("t")]);
        let unwanted: Vec<Event> = (0..INBOX_CAPACITY + 1).map(|_| event("t")).collect();
        assert!(bus.publish(unwanted).is_ok(), "no one wants t any more: no queue can be full");
        assert_eq!(bus.published(), 3 + INBOX_CAPACITY as u64 + 1);
    }

    #[test]
    fn a_deep_inbox_holds_publishes_back_and_a_large_publish_waits_no_longer_than_a_small_one() {
        let bus = Bus::new(vec![Arc::new(Counting(Arc::default())) as Arc<dyn Wake>], limits());
        bus.attach(0, &[topic("t")], None);
        let batch = |n: usize| (0..n).map(|_| event("t")).collect::<Vec<_>>();
        assert!(bus.publish(batch(INBOX_SOFT_LIMIT - 1)).is_ok());
        assert!(bus.publish(batch(1)).is_ok(), "below the soft limit");
        assert_eq!(bus.publish(batch(1)), Err(Refused::Full), "at it: wait for the worker");
        assert!(bus.inbox(0).pop().is_some());
        assert!(bus.publish(batch(INBOX_SOFT_LIMIT * 4)).is_ok(), "room again, for a large publish too");
        assert_eq!(bus.publish(batch(1)), Err(Refused::Full));
        while bus.inbox(0).pop().is_some() {}
        assert_eq!(bus.publish(batch(INBOX_CAPACITY + 1)), Err(Refused::Full), "never more than the queue holds");
        assert_eq!(bus.published(), (INBOX_SOFT_LIMIT + INBOX_SOFT_LIMIT * 4) as u64);
    }

    #[test]
    fn restored_events_are_history_and_ids_continue_after_them() {
        let mut bus = Bus::new(vec![Arc::new(Counting(Arc::default())) as Arc<dyn Wake>], limits());
        // Far in the future: the next id must still be after them.
        let future = unix_ms() + 60_000;
        assert_eq!(bus.restore([at(future), at(future + 1)]), 2);
        assert_eq!(bus.boot_id(), EventId { ms: future, seq: 0 });
        let ids = bus.publish(vec![event("t")]).unwrap();
        assert!(ids[0] > EventId { ms: future + 1, seq: 0 });
        let attached = bus.attach(0, &[topic("t")], Some((&[topic("t")], Some(EventId { ms: future, seq: 0 }))));
        let (gap, replay) = attached.replay.unwrap();
        assert_eq!(gap, None);
        assert_eq!(replay.iter().map(|e| e.id()).collect::<Vec<_>>(), [EventId { ms: future + 1, seq: 0 }, ids[0]]);
    }

    #[test]
    fn restored_events_age_from_their_publish_time_and_a_lossy_restore_is_before_start() {
        let ttl_ms = 60_000;
        let mut bus = Bus::new(
            vec![Arc::new(Counting(Arc::default())) as Arc<dyn Wake>],
            Limits { per_topic: 100, ttl_ms, budget: usize::MAX / 2 },
        );
        let now = unix_ms();
        // Two batches (two segments): the first event is older than the TTL.
        assert_eq!(bus.restore([at(now - 2 * ttl_ms)]), 1);
        assert_eq!(bus.restore([at(now - 1000), at(now - 500)]), 2);
        let resume = |bus: &Bus, after: u64| {
            let names = [topic("t")];
            let attached = bus.attach(0, &names, Some((&names, Some(EventId { ms: after, seq: 0 }))));
            let (gap, events) = attached.replay.unwrap();
            (gap, events.iter().map(|e| e.id().ms).collect::<Vec<_>>())
        };
        // Expired by its original time, so the gap says so (the backplane
        // turns ids before the boot id into before-start).
        assert_eq!(resume(&bus, now - 2 * ttl_ms - 1), (Some(Gap::Expired), vec![now - 1000, now - 500]));
        assert_eq!(resume(&bus, now - 1000), (None, vec![now - 500]), "retained: exactly what was missed");
        assert_eq!(bus.boot_id(), EventId { ms: now - 2 * ttl_ms, seq: 0 });
        bus.restored_with_loss();
        assert!(bus.boot_id() > EventId { ms: now - 500, seq: 0 }, "every earlier id is before this start");
        let ids = bus.publish(vec![event("t")]).unwrap();
        assert!(ids[0] > bus.boot_id());
    }

    #[test]
    fn a_restored_floor_keeps_each_topics_gap_and_moves_boot_back_to_where_the_log_began() {
        let ttl_ms = 60_000;
        let mut bus = Bus::new(
            vec![Arc::new(Counting(Arc::default())) as Arc<dyn Wake>],
            Limits { per_topic: 100, ttl_ms, budget: usize::MAX / 2 },
        );
        let now = unix_ms();
        let kept = at(now - 1000);
        assert_eq!(bus.restore([kept]), 1);
        let origin = EventId { ms: now - 3 * ttl_ms, seq: 0 };
        let dropped = EventId { ms: now - 2 * ttl_ms, seq: 4 };
        let hash = ssehub_protocol::journal::topic_hash("u");
        let knowledge = Knowledge { dropped: None, topics: vec![(hash, dropped, Gap::Expired)] };
        bus.restore_floor(Floor { origin, last: EventId { ms: now - 1000, seq: 0 }, knowledge });
        assert_eq!(bus.boot_id(), origin, "ids from the deleted segments are this log's, not before its start");
        let resume = |bus: &Bus, name: &str, after: EventId| {
            let names = [topic(name)];
            bus.attach(0, &names, Some((&names, Some(after)))).replay.map(|(gap, events)| (gap, events.len()))
        };
        assert_eq!(resume(&bus, "u", EventId { ms: dropped.ms, seq: 0 }), Some((Some(Gap::Expired), 0)));
        assert_eq!(resume(&bus, "u", dropped), Some((None, 0)), "saw the newest dropped: nothing missed");
        assert_eq!(resume(&bus, "t", origin), Some((None, 1)), "t dropped nothing: exact, no gap");
        // A floor newer than the clock (it stepped back): ids still increase past it.
        let mut bus = Bus::new(vec![Arc::new(Counting(Arc::default())) as Arc<dyn Wake>], limits());
        let future = EventId { ms: now + 60_000, seq: 0 };
        bus.restore_floor(Floor { origin, last: future, knowledge: Knowledge::default() });
        assert!(bus.publish(vec![event("t")]).unwrap()[0] > future);
    }

    /// A journal whose writes fail from the second on.
    struct Failing(usize);
    impl Journal for Failing {
        fn append(&mut self, _: &[Arc<Event>], _: Option<&IdempotencyKey>, _: u64) -> io::Result<()> {
            self.0 += 1;
            if self.0 > 1 { Err(io::Error::other("disk full")) } else { Ok(()) }
        }
        fn release(&mut self, _: Option<EventId>, _: EventId, _: u64, _: &mut dyn FnMut(EventId, usize) -> Floor) {}
    }

    #[test]
    fn a_failed_journal_write_publishes_nothing() {
        let mut bus = Bus::new(vec![Arc::new(Counting(Arc::default())) as Arc<dyn Wake>], limits());
        bus.set_journal(Box::new(Failing(0)));
        bus.attach(0, &[topic("t")], None);
        let first = bus.publish(vec![event("t")]).unwrap();
        assert_eq!(bus.publish(vec![event("t"), event("t")]), Err(Refused::Journal));
        assert_eq!(bus.inbox(0).pop().map(|e| e.id()), Some(first[0]));
        assert!(bus.inbox(0).pop().is_none(), "nothing of the failed publish reached a worker");
        assert_eq!((bus.published(), bus.history_stats().0.events), (1, 1), "nor history");
    }

    #[test]
    fn patterns_route_to_the_workers_that_hold_them() {
        let bus = Bus::new((0..3).map(|_| Arc::new(Counting(Arc::default())) as Arc<dyn Wake>).collect(), limits());
        let room = ("room/*".to_string(), Some(Pattern::parse("room/*").unwrap()));
        bus.attach(2, std::slice::from_ref(&room), None);
        bus.attach(0, &[topic("room/1")], None);
        bus.publish(vec![event("room/1"), event("room/2"), event("lobby")]).unwrap();
        let count = |w: usize| std::iter::from_fn(|| bus.inbox(w).pop()).count();
        assert_eq!((count(0), count(1), count(2)), (1, 0, 2));
        bus.detach(2, &[room]);
        bus.publish(vec![event("room/3")]).unwrap();
        assert_eq!(count(2), 0);
    }

    /// Workers join topics at random moments while publishers run: each
    /// subscriber's replay (history up to its routing point) followed by
    /// what reaches its inbox is exactly every event of its topic, once, in
    /// order.
    #[test]
    fn subscribing_while_events_are_in_flight_misses_none_and_duplicates_none() {
        const WORKERS: usize = 4;
        const PUBLISHERS: usize = 4;
        const EVENTS: usize = 3000;
        const TOPICS: usize = 8;
        let bus = Arc::new(Bus::new(
            (0..WORKERS).map(|_| Arc::new(Counting(Arc::default())) as Arc<dyn Wake>).collect(),
            limits(),
        ));
        let published = Arc::new(Mutex::new(Vec::<(usize, EventId)>::new()));
        let running = Arc::new(AtomicUsize::new(PUBLISHERS));
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let (bus, published, running) = (Arc::clone(&bus), Arc::clone(&published), Arc::clone(&running));
                std::thread::spawn(move || {
                    for n in 0..EVENTS {
                        let t = (p + n) % TOPICS;
                        loop {
                            match bus.publish(vec![event(&format!("t{t}"))]) {
                                Ok(ids) => {
                                    published.lock().unwrap().push((t, ids[0]));
                                    break;
                                }
                                Err(_) => std::thread::yield_now(),
                            }
                        }
                    }
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (bus, running) = (Arc::clone(&bus), Arc::clone(&running));
                std::thread::spawn(move || {
                    // Topic → (routing point, events received: replay, then live).
                    let mut got: HashMap<usize, (EventId, Vec<EventId>)> = HashMap::new();
                    let mut next_join = 0;
                    let mut spins = 0u64;
                    loop {
                        let done = running.load(Ordering::SeqCst) == 0;
                        if next_join < 2 && spins > 2000 * (w as u64 + 1) * (next_join as u64 + 1) {
                            let t = (w + next_join * WORKERS) % TOPICS;
                            let name = [topic(&format!("t{t}"))];
                            let attached = bus.attach(w, &name, Some((&name, Some(EventId::ZERO))));
                            let (gap, replay) = attached.replay.unwrap();
                            assert_eq!(gap, None);
                            got.insert(t, (attached.live_after, replay.iter().map(|e| e.id()).collect()));
                            next_join += 1;
                        }
                        spins += 1;
                        match bus.inbox(w).pop() {
                            Some(e) => {
                                let t: usize = e.topics()[0][1..].parse().unwrap();
                                let (point, ids) = got.get_mut(&t).expect("only joined topics arrive");
                                assert!(e.id() > *point, "routed before the subscription point");
                                ids.push(e.id());
                            }
                            None if done && next_join == 2 => return got,
                            None => std::thread::yield_now(),
                        }
                    }
                })
            })
            .collect();
        publishers.into_iter().for_each(|p| p.join().unwrap());
        let published = published.lock().unwrap().clone();
        for worker in workers {
            for (t, (_, ids)) in worker.join().unwrap() {
                let mut want: Vec<EventId> = published.iter().filter(|(pt, _)| *pt == t).map(|&(_, id)| id).collect();
                want.sort();
                assert_eq!(ids.len(), want.len(), "topic t{t}: every event, once");
                assert_eq!(ids, want, "topic t{t}: in id order");
            }
        }
    }
}
