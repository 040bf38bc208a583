//! History: the recent events of every topic, held once per process, for
//! clients resuming with `Last-Event-ID`; and the gap notice sent when a
//! resume cannot be complete.
//!
//! One [`History`] serves every worker (it lives beside the sequencer, under
//! its lock, see [`crate::bus`]); the fan-out path never reads it, only
//! publishes (which record) and resumes (which replay) do. It holds the same
//! shared frames the fan-out writes, so a replay copies pointers, not bytes.
//!
//! Three bounds, each evicting oldest first:
//! - `--history N`: per topic, the newest N events;
//! - `--history-ttl`: nothing older than this (an event's id carries its
//!   publish time);
//! - `--history-memory`: everything this module holds, frames counted once
//!   however many topics share them, bookkeeping included. Past the budget the
//!   globally oldest events go first.
//!
//! The last two drop in id order (one FIFO over all events, [`History::order`]),
//! so "every event up to id E was dropped" is one number per cause. That is
//! what keeps gaps exact without remembering every topic forever: a topic
//! whose last retained event is dropped is forgotten, leaving a small
//! tombstone (a hash of its name and the id of its newest dropped event);
//! tombstones are themselves bounded (they outlive their event by one TTL,
//! and may use a quarter of the budget, ~40 bytes each), oldest first, and only when one is
//! dropped does a resume become conservative: a client older than every
//! tombstone dropped, resuming a topic nothing is known of, gets the gap
//! (see [`History::missed`]). That takes a client away for longer than twice
//! the TTL, or a flood of topics past the budget.

use std::collections::{HashMap, VecDeque};
use std::mem::size_of;
use std::sync::Arc;

use ssehub_protocol::EventId;
use ssehub_protocol::pattern::Pattern;
use ssehub_protocol::sse::StaticFrame;
use ssehub_protocol::static_frame;

use crate::event::Event;

/// Why a resuming client may have missed events; sent as an `ssehub-gap` event.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Gap {
    /// `Last-Event-ID` is not an id this server could have issued.
    Unparseable,
    /// The id is older than this process: events in between were never retained.
    BeforeStart,
    /// History dropped events newer than the id (`--history` count or
    /// `--history-memory` budget).
    Evicted,
    /// Events newer than the id outlived `--history-ttl`.
    Expired,
    /// The backplane's stream was reset (or lost): events may be missing.
    Reset,
    /// The backplane could not be read to replay what the client missed.
    Unavailable,
}

impl Gap {
    /// The complete frame. It carries a `data:` line because EventSource
    /// ignores events without data, and no `id:` so the client's
    /// `lastEventId` stays whatever it received last.
    pub fn frame(self) -> StaticFrame {
        const UNPARSEABLE: StaticFrame = static_frame!(b"event: ssehub-gap\ndata: {\"reason\":\"unparseable-id\"}\n\n");
        const BEFORE_START: StaticFrame = static_frame!(b"event: ssehub-gap\ndata: {\"reason\":\"before-start\"}\n\n");
        const EVICTED: StaticFrame = static_frame!(b"event: ssehub-gap\ndata: {\"reason\":\"evicted\"}\n\n");
        const EXPIRED: StaticFrame = static_frame!(b"event: ssehub-gap\ndata: {\"reason\":\"expired\"}\n\n");
        const RESET: StaticFrame = static_frame!(b"event: ssehub-gap\ndata: {\"reason\":\"stream-reset\"}\n\n");
        const UNAVAILABLE: StaticFrame =
            static_frame!(b"event: ssehub-gap\ndata: {\"reason\":\"backplane-unavailable\"}\n\n");
        match self {
            Gap::Unparseable => UNPARSEABLE,
            Gap::BeforeStart => BEFORE_START,
            Gap::Evicted => EVICTED,
            Gap::Expired => EXPIRED,
            Gap::Reset => RESET,
            Gap::Unavailable => UNAVAILABLE,
        }
    }
}

/// The bounds of a [`History`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `--history`: events retained per topic.
    pub per_topic: usize,
    /// `--history-ttl` in ms; 0: no expiry.
    pub ttl_ms: u64,
    /// `--history-memory` in bytes.
    pub budget: usize,
}

/// Why events left history, counted for `/metrics`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// Pushed out of their topic by `--history`.
    pub count: u64,
    /// Outlived `--history-ttl`.
    pub expired: u64,
    /// Evicted by `--history-memory`.
    pub evicted: u64,
}

/// What history knows of the events it dropped below some id, as a durable
/// log records it before deleting the segments that held them
/// ([`History::knowledge`], [`History::restore_knowledge`]): what tombstones
/// and topic records would have told a resume, kept across a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Knowledge {
    /// Any topic not in `topics` may have dropped events up to this id
    /// (the knowledge history had let go, as [`History::missed`] assumes
    /// for a topic it knows nothing of, and what did not fit).
    pub dropped: Option<(EventId, Gap)>,
    /// By topic hash: its newest dropped event, and why; oldest first.
    pub topics: Vec<(u64, EventId, Gap)>,
}

/// Figures for `/metrics`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Events retained (each once, whatever its topics).
    pub events: usize,
    /// Bytes held, against [`Limits::budget`].
    pub bytes: usize,
    /// Topics with retained events.
    pub topics: usize,
    /// Tombstones of forgotten topics.
    pub tombstones: usize,
    /// Events dropped, by cause.
    pub drops: Drops,
}

/// One event in the global order.
#[derive(Debug)]
struct Slot {
    /// The event's id (kept when the event itself is released).
    id: EventId,
    /// The event, while some topic retains it.
    event: Option<Arc<Event>>,
    /// Topic rings holding it.
    holders: u32,
}

/// What one topic retains.
#[derive(Debug, Default)]
struct TopicHistory {
    /// Oldest first, ids increasing.
    ring: VecDeque<Arc<Event>>,
    /// The newest event of this topic no longer retained, and why.
    dropped: Option<(EventId, Gap)>,
}

/// A forgotten topic's newest dropped event, packed in a word: its id's
/// ms (47 bits), its seq (16 bits, saturated: a larger one reads as 65535,
/// which only ever makes a gap more likely, never less) and whether it expired.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Tombstone(u64);

impl Tombstone {
    fn new(id: EventId, why: Gap) -> Self {
        let seq = id.seq.min(0xFFFF);
        Tombstone(((id.ms & ((1 << 47) - 1)) << 17) | (seq << 1) | u64::from(why == Gap::Expired))
    }

    fn id(self) -> EventId {
        EventId { ms: self.0 >> 17, seq: (self.0 >> 1) & 0xFFFF }
    }

    fn why(self) -> Gap {
        if self.0 & 1 == 1 { Gap::Expired } else { Gap::Evicted }
    }

    fn dropped(self) -> (EventId, Gap) {
        (self.id(), self.why())
    }
}

// What history charges against the budget: every heap block it holds, as
// glibc sizes them ([`block`]), and every container entry three times over,
// since a container grows by doubling and is shrunk only once it is two
// thirds empty ([`History::shrink`]); hash tables also at their load factor.

/// Per slot in the global order (live or released).
const SLOT_BYTES: usize = 3 * size_of::<Slot>();
/// Per ring entry (a pointer) in a topic.
const RING_ENTRY_BYTES: usize = 3 * size_of::<Arc<Event>>();
/// Per topic beyond its name: its map entry, and its ring's smallest block.
const TOPIC_OVERHEAD: usize = 3 * (size_of::<(Box<str>, TopicHistory)>() + 1) * 8 / 7 + block(4 * 8);
/// Per tombstone: its map entry and its place in the FIFO.
const TOMBSTONE_BYTES: usize = 3 * ((size_of::<(u64, Tombstone)>() + 1) * 8 / 7 + size_of::<(Tombstone, u64)>());
/// The share of the budget tombstones may use before the oldest go.
const TOMBSTONE_SHARE: usize = 4;

/// The retained events of every topic: see the module documentation.
#[derive(Debug)]
pub struct History {
    /// The bounds.
    limits: Limits,
    /// By topic name; a topic is here only while it retains an event.
    topics: HashMap<Box<str>, TopicHistory>,
    /// Every retained event once, ids increasing (released slots wait for
    /// their turn at the front).
    order: VecDeque<Slot>,
    /// Forgotten topics' newest dropped ids, by name hash.
    tombstones: HashMap<u64, Tombstone>,
    /// Tombstone hashes oldest first (a hash may appear again after it
    /// was replaced; the entry then no longer matches and is skipped).
    tomb_order: VecDeque<(Tombstone, u64)>,
    /// Every tombstone ever dropped was at or below this: a resume older
    /// than it may have missed events of a forgotten topic.
    tombs_dropped: Option<(EventId, Gap)>,
    /// Bytes held (see the constants above).
    bytes: usize,
    /// Bytes held elsewhere but charged to the same budget (a standalone
    /// hub's idempotency keys): history keeps within `budget - external`.
    external: usize,
    /// Retained events.
    live: usize,
    /// Drop counts.
    drops: Drops,
}

impl History {
    /// An empty history with these bounds.
    pub fn new(limits: Limits) -> Self {
        History {
            limits,
            topics: HashMap::new(),
            order: VecDeque::new(),
            tombstones: HashMap::new(),
            tomb_order: VecDeque::new(),
            tombs_dropped: None,
            bytes: 0,
            external: 0,
            live: 0,
            drops: Drops::default(),
        }
    }

    /// The bounds.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Retains a sequenced event under each of its topics (ids must
    /// increase from call to call), then enforces every bound at `now_ms`.
    pub fn record(&mut self, event: &Arc<Event>, now_ms: u64) {
        if self.limits.per_topic == 0 {
            for name in event.topics() {
                self.drop_from_topic(name, event.id(), Gap::Evicted);
            }
            self.drops.count += 1;
            self.enforce(now_ms);
            return;
        }
        let mut holders = 0;
        for name in event.topics() {
            let topic = match self.topics.get_mut(&**name) {
                Some(topic) => topic,
                None => {
                    self.bytes += TOPIC_OVERHEAD + block(name.len());
                    // A topic coming back takes over its tombstone's knowledge;
                    // without one it may be a topic whose tombstone was
                    // dropped, so it knows what every unknown topic knows.
                    let tomb = self.tombstones.remove(&hash(name)).map(Tombstone::dropped);
                    if tomb.is_some() {
                        self.bytes -= TOMBSTONE_BYTES;
                    }
                    let dropped = tomb.or(self.tombs_dropped);
                    self.topics.entry(name.clone()).or_insert(TopicHistory { ring: VecDeque::new(), dropped })
                }
            };
            topic.ring.push_back(Arc::clone(event));
            self.bytes += RING_ENTRY_BYTES;
            holders += 1;
            if topic.ring.len() > self.limits.per_topic
                && let Some(old) = topic.ring.pop_front()
            {
                topic.dropped = Some((old.id(), Gap::Evicted));
                self.bytes -= RING_ENTRY_BYTES;
                self.drops.count += 1;
                self.release(old.id());
            }
        }
        self.live += 1;
        self.bytes += SLOT_BYTES + event_bytes(event);
        self.order.push_back(Slot { id: event.id(), event: Some(Arc::clone(event)), holders });
        self.enforce(now_ms);
    }

    /// Drops what has outlived the TTL; call it now and then, so memory is
    /// given back when nothing is published.
    pub fn expire(&mut self, now_ms: u64) {
        self.enforce(now_ms);
    }

    /// Everything `names` (topics and patterns) retains after `after`, up to
    /// and including `upto`, in id order, each event once; at most
    /// `--history` per subscription (the newest); and whether the client
    /// may have missed events (why, for the gap notice).
    ///
    /// A topic replays its ring. A pattern scans the retained topics (off
    /// the hot path: resumes only) and merges what they match; since a
    /// tombstone keeps only a hash, a pattern resume older than any
    /// tombstone counts as missed. An unparseable id (`None`) replays all
    /// that is retained, after [`Gap::Unparseable`].
    pub fn replay(
        &self,
        names: &[(String, Option<Pattern>)],
        after: Option<EventId>,
        upto: EventId,
    ) -> (Option<Gap>, Vec<Arc<Event>>) {
        let (unparseable, after) = match after {
            None => (Some(Gap::Unparseable), EventId::ZERO),
            Some(after) => (None, after),
        };
        fn window(ring: &VecDeque<Arc<Event>>, after: EventId, upto: EventId) -> impl Iterator<Item = &Arc<Event>> {
            let start = ring.partition_point(|e| e.id() <= after);
            let end = ring.partition_point(|e| e.id() <= upto);
            ring.range(start..end.max(start))
        }
        let cap = self.limits.per_topic;
        let mut missed: Option<Gap> = unparseable;
        let mut note = |gap: Option<Gap>| {
            if missed.is_none() {
                missed = gap;
            }
        };
        let mut events: Vec<Arc<Event>> = Vec::new();
        for (name, pattern) in names {
            match pattern {
                None => {
                    note(self.missed(name, after));
                    if let Some(topic) = self.topics.get(name.as_str()) {
                        events.extend(window(&topic.ring, after, upto).cloned());
                    }
                }
                Some(pattern) => {
                    let mut matched: Vec<Arc<Event>> = Vec::new();
                    for (topic_name, topic) in &self.topics {
                        if pattern.matches(topic_name) {
                            note(topic.dropped.filter(|&(id, _)| after < id).map(|(_, why)| why));
                            matched.extend(window(&topic.ring, after, upto).cloned());
                        }
                    }
                    note(self.newest_tombstone().filter(|&(id, _)| after < id).map(|(_, why)| why));
                    note(self.tombs_dropped.filter(|&(id, _)| after < id).map(|(_, why)| why));
                    matched.sort_by_key(|e| e.id());
                    matched.dedup_by_key(|e| e.id());
                    if matched.len() > cap {
                        matched.drain(..matched.len() - cap);
                        note(Some(Gap::Evicted));
                    }
                    events.append(&mut matched);
                }
            }
        }
        if names.len() > 1 {
            events.sort_by_key(|e| e.id());
            events.dedup_by_key(|e| e.id());
        }
        (missed, events)
    }

    /// Why a client that saw everything of `topic` up to `after` missed
    /// some of it, if it did.
    pub fn missed(&self, topic: &str, after: EventId) -> Option<Gap> {
        let newer = |dropped: Option<(EventId, Gap)>| dropped.filter(|&(id, _)| after < id).map(|(_, why)| why);
        if let Some(topic) = self.topics.get(topic) {
            return newer(topic.dropped);
        }
        if let Some(tomb) = self.tombstones.get(&hash(topic)) {
            return newer(Some(tomb.dropped()));
        }
        // Never seen, or forgotten and its tombstone dropped: only the
        // latter can hide events, and only newer than `after` if `after`
        // is below what tombstones were dropped up to.
        newer(self.tombs_dropped)
    }

    /// What history knows of the events it dropped at or below `upto`,
    /// for a durable log about to delete the segments that held them (see
    /// [`Knowledge`]): each topic's and tombstone's newest dropped event
    /// there, the newest `max` of them, and for every other topic the
    /// knowledge history already let go or that did not fit.
    pub fn knowledge(&self, upto: EventId, max: usize) -> Knowledge {
        let mut topics: Vec<(u64, EventId, Gap)> = self
            .topics
            .iter()
            .filter_map(|(name, topic)| topic.dropped.map(|(id, why)| (hash(name), id, why)))
            .chain(self.tombstones.iter().map(|(&h, tomb)| (h, tomb.id(), tomb.why())))
            .filter(|&(_, id, _)| id <= upto)
            .collect();
        topics.sort_unstable_by_key(|&(h, id, _)| (id, h));
        let mut dropped = self.tombs_dropped;
        if topics.len() > max {
            let omitted = topics.len() - max;
            let (_, id, why) = topics[omitted - 1];
            dropped = newest(dropped, Some((id, why)));
            topics.drain(..omitted);
        }
        Knowledge { dropped, topics }
    }

    /// Takes back what a durable log recorded with [`History::knowledge`]
    /// before this process started, after the events it still held were
    /// restored: a listed topic knows its newest dropped event again (its
    /// tombstone, if it has no events), and every other topic, known or
    /// not, may have dropped up to `knowledge.dropped`.
    pub fn restore_knowledge(&mut self, knowledge: Knowledge, now_ms: u64) {
        let Knowledge { dropped, topics } = knowledge;
        let mut listed: HashMap<u64, (EventId, Gap)> = HashMap::with_capacity(topics.len());
        for (h, id, why) in topics {
            let entry = listed.entry(h).or_insert((id, why));
            *entry = newest(Some(*entry), Some((id, why))).unwrap_or((id, why));
        }
        for (name, topic) in self.topics.iter_mut() {
            let known = match listed.remove(&hash(name)) {
                Some(known) => Some(known),
                None => dropped,
            };
            topic.dropped = newest(topic.dropped, known);
        }
        let mut buried: Vec<(u64, (EventId, Gap))> = listed.into_iter().collect();
        buried.sort_unstable_by_key(|&(h, (id, _))| (id, h));
        for (h, (id, why)) in buried {
            self.bury_hash(h, id, why);
        }
        self.tombs_dropped = newest(self.tombs_dropped, dropped);
        self.enforce(now_ms);
    }

    /// Forgets everything (the stream the events came from was reset).
    pub fn clear(&mut self) {
        let external = self.external;
        *self = History::new(self.limits);
        self.external = external;
    }

    /// Charges `bytes` held outside history to its budget (replacing the
    /// previous charge), evicting the oldest events now if that puts it over.
    pub fn charge_external(&mut self, bytes: usize, now_ms: u64) {
        self.external = bytes;
        self.enforce(now_ms);
    }

    /// The oldest event still retained: every earlier one has left history
    /// (what a durable log may delete up to).
    pub fn oldest(&self) -> Option<EventId> {
        self.order.iter().find(|slot| slot.event.is_some()).map(|slot| slot.id)
    }

    /// Figures for `/metrics`.
    pub fn stats(&self) -> HistoryStats {
        HistoryStats {
            events: self.live,
            bytes: self.bytes,
            topics: self.topics.len(),
            tombstones: self.tombstones.len(),
            drops: self.drops,
        }
    }

    /// The newest tombstone's id, if any (the FIFO's back, if still current).
    fn newest_tombstone(&self) -> Option<(EventId, Gap)> {
        self.tomb_order
            .iter()
            .rev()
            .find_map(|&(tomb, h)| (self.tombstones.get(&h) == Some(&tomb)).then(|| tomb.dropped()))
    }

    /// Applies the TTL, then the budget, oldest first.
    fn enforce(&mut self, now_ms: u64) {
        if self.limits.ttl_ms > 0 {
            let horizon = now_ms.saturating_sub(self.limits.ttl_ms);
            while self.order.front().is_some_and(|slot| slot.id.ms < horizon) {
                self.drop_oldest(Gap::Expired);
            }
            // A tombstone is made when its event expires; it lives one TTL more.
            let tomb_horizon = horizon.saturating_sub(self.limits.ttl_ms);
            while self.tomb_order.front().is_some_and(|&(tomb, _)| tomb.id().ms < tomb_horizon) {
                self.drop_oldest_tombstone();
            }
        }
        while self.bytes + self.external > self.limits.budget {
            // Tombstones may use a quarter of the budget; past that, or with
            // no event left, the oldest goes. Otherwise the oldest event.
            let tombs_over = self.tombstones.len() * TOMBSTONE_BYTES > self.limits.budget / TOMBSTONE_SHARE;
            if (tombs_over || self.order.is_empty()) && !self.tomb_order.is_empty() {
                self.drop_oldest_tombstone();
            } else if !self.order.is_empty() {
                self.drop_oldest(Gap::Evicted);
            } else {
                break;
            }
        }
        // Released slots at the front hold nothing: let them go too.
        while self.order.front().is_some_and(|slot| slot.event.is_none()) {
            self.order.pop_front();
            self.bytes -= SLOT_BYTES;
        }
        self.shrink();
    }

    /// Gives back container room once two thirds of it is unused, so the
    /// charge per entry (three entries' worth) covers what is allocated, and
    /// memory returns when history empties.
    fn shrink(&mut self) {
        fn sparse(len: usize, capacity: usize) -> bool {
            capacity > 64 && len * 3 < capacity
        }
        if sparse(self.order.len(), self.order.capacity()) {
            self.order.shrink_to(self.order.len() * 3 / 2);
        }
        if sparse(self.topics.len(), self.topics.capacity()) {
            self.topics.shrink_to(self.topics.len() * 3 / 2);
        }
        if sparse(self.tombstones.len(), self.tombstones.capacity()) {
            self.tombstones.shrink_to(self.tombstones.len() * 3 / 2);
        }
        if sparse(self.tomb_order.len(), self.tomb_order.capacity()) {
            self.tomb_order.shrink_to(self.tomb_order.len() * 3 / 2);
        }
    }

    /// Drops the globally oldest event from every topic still holding it.
    fn drop_oldest(&mut self, why: Gap) {
        let Some(slot) = self.order.pop_front() else { return };
        self.bytes -= SLOT_BYTES;
        let Some(event) = slot.event else { return }; // already released
        self.live -= 1;
        self.bytes -= event_bytes(&event);
        match why {
            Gap::Expired => self.drops.expired += 1,
            _ => self.drops.evicted += 1,
        }
        for name in event.topics() {
            let Some(topic) = self.topics.get_mut(&**name) else { continue };
            // Oldest globally, so oldest in its topic, unless `--history`
            // already pushed it out there.
            if topic.ring.front().is_some_and(|e| e.id() == event.id()) {
                topic.ring.pop_front();
                self.bytes -= RING_ENTRY_BYTES;
                topic.dropped = Some((event.id(), why));
            }
            if topic.ring.is_empty() {
                self.forget(name);
            }
        }
    }

    /// A topic ring let go of event `id` (pushed out by `--history`).
    fn release(&mut self, id: EventId) {
        let Ok(at) = self.order.binary_search_by_key(&id, |slot| slot.id) else { return };
        let slot = &mut self.order[at];
        slot.holders = slot.holders.saturating_sub(1);
        if slot.holders == 0
            && let Some(event) = slot.event.take()
        {
            self.live -= 1;
            self.bytes -= event_bytes(&event);
        }
    }

    /// With `--history 0`: the event is never held, but the topic must
    /// remember that it had one.
    fn drop_from_topic(&mut self, name: &str, id: EventId, why: Gap) {
        if let Some(topic) = self.topics.get_mut(name) {
            topic.dropped = Some((id, why));
            return;
        }
        self.bury(name, id, why);
    }

    /// Forgets a topic whose ring is empty, leaving a tombstone if it ever dropped an event.
    fn forget(&mut self, name: &str) {
        let Some((name, topic)) = self.topics.remove_entry(name) else { return };
        self.bytes -= TOPIC_OVERHEAD + block(name.len());
        if let Some((id, why)) = topic.dropped {
            self.bury(&name, id, why);
        }
    }

    fn bury(&mut self, name: &str, id: EventId, why: Gap) {
        self.bury_hash(hash(name), id, why);
    }

    fn bury_hash(&mut self, h: u64, id: EventId, why: Gap) {
        let tomb = Tombstone::new(id, why);
        match self.tombstones.insert(h, tomb) {
            Some(old) => {
                // Same hash (a collision, or the topic again): keep the newer.
                if old.id() > tomb.id() {
                    self.tombstones.insert(h, old);
                    return;
                }
            }
            None => self.bytes += TOMBSTONE_BYTES,
        }
        self.tomb_order.push_back((tomb, h));
    }

    fn drop_oldest_tombstone(&mut self) {
        let Some((tomb, h)) = self.tomb_order.pop_front() else { return };
        if self.tombstones.get(&h) == Some(&tomb) {
            self.tombstones.remove(&h);
            self.bytes -= TOMBSTONE_BYTES;
            let (id, reason) = tomb.dropped();
            if self.tombs_dropped.is_none_or(|(upto, _)| upto < id) {
                self.tombs_dropped = Some((id, reason));
            }
        }
    }
}

/// The heap blocks of one event: the `Arc`, its frame, its topic list and names.
fn event_bytes(event: &Event) -> usize {
    block(2 * size_of::<usize>() + size_of::<Event>())
        + block(event.frame().allocated())
        + block(std::mem::size_of_val(event.topics()))
        + event.topics().iter().map(|t| block(t.len())).sum::<usize>()
}

/// What the allocator takes for `size` bytes: glibc adds an 8-byte header
/// and rounds to 16, at least 32.
const fn block(size: usize) -> usize {
    let chunk = (size + 8 + 15) & !15;
    if chunk < 32 { 32 } else { chunk }
}

/// Of two pieces of "dropped up to" knowledge, the one with the newer id.
fn newest(a: Option<(EventId, Gap)>, b: Option<(EventId, Gap)>) -> Option<(EventId, Gap)> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.0 > x.0 { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// A topic's tombstone key: the durable log's topic hash, so what a log
/// records of tombstones names the same topics in the next process.
fn hash(name: &str) -> u64 {
    ssehub_protocol::journal::topic_hash(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssehub_protocol::sse::Frame;

    const BIG: usize = usize::MAX / 2;

    fn event(ms: u64, topics: &[&str]) -> Arc<Event> {
        let mut event = Event::new(topics.iter().map(|t| (*t).into()).collect(), Frame::notice(b"data: x\n\n"));
        event.set_id(id(ms));
        Arc::new(event)
    }

    fn id(ms: u64) -> EventId {
        EventId { ms, seq: 0 }
    }

    fn topic(name: &str) -> (String, Option<Pattern>) {
        (name.to_string(), None)
    }

    fn pattern(name: &str) -> (String, Option<Pattern>) {
        (name.to_string(), Some(Pattern::parse(name).expect("pattern")))
    }

    fn replayed(history: &History, names: &[(String, Option<Pattern>)], after: u64) -> (Option<Gap>, Vec<u64>) {
        let (gap, events) = history.replay(names, Some(id(after)), id(u64::MAX));
        (gap, events.iter().map(|e| e.id().ms).collect())
    }

    fn limits(per_topic: usize, ttl_ms: u64, budget: usize) -> Limits {
        Limits { per_topic, ttl_ms, budget }
    }

    #[test]
    fn per_topic_count_keeps_the_newest_and_knows_what_it_dropped() {
        let mut history = History::new(limits(3, 0, BIG));
        for ms in 1..=5 {
            history.record(&event(ms, &["t"]), ms);
        }
        assert_eq!(replayed(&history, &[topic("t")], 0), (Some(Gap::Evicted), vec![3, 4, 5]));
        assert_eq!(replayed(&history, &[topic("t")], 2), (None, vec![3, 4, 5]), "saw the newest dropped");
        assert_eq!(replayed(&history, &[topic("t")], 4), (None, vec![5]));
        assert_eq!(history.stats().events, 3, "released events are not counted");
    }

    #[test]
    fn an_event_of_several_topics_is_held_once_and_replayed_once() {
        let mut history = History::new(limits(10, 0, BIG));
        history.record(&event(1, &["a", "b"]), 1);
        history.record(&event(2, &["b"]), 2);
        assert_eq!(history.stats().events, 2);
        assert_eq!(replayed(&history, &[topic("a"), topic("b")], 0), (None, vec![1, 2]));
        // `upto` bounds the window: newer ones arrive live.
        let (_, events) = history.replay(&[topic("b")], Some(id(0)), id(1));
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn ttl_expires_oldest_first_and_forgets_empty_topics() {
        let mut history = History::new(limits(10, 100, BIG));
        history.record(&event(1000, &["a"]), 1000);
        history.record(&event(1050, &["b"]), 1050);
        history.expire(1120);
        assert_eq!(replayed(&history, &[topic("a")], 0), (Some(Gap::Expired), vec![]));
        assert_eq!(replayed(&history, &[topic("a")], 1000), (None, vec![]), "saw it before it expired");
        assert_eq!(replayed(&history, &[topic("b")], 0), (None, vec![1050]));
        assert_eq!(history.stats().topics, 1, "a is forgotten, its tombstone remains");
        assert_eq!(history.stats().tombstones, 1);
        history.expire(1180);
        assert_eq!(history.stats().tombstones, 2, "tombstones outlive their events by one TTL");
        assert_eq!(replayed(&history, &[topic("a")], 1000), (None, vec![]), "still exact");
        history.expire(1400);
        let stats = history.stats();
        assert_eq!((stats.events, stats.topics, stats.tombstones, stats.bytes), (0, 0, 0, 0), "back to nothing");
        // Tombstones dropped: only resumes older than the newest of them are
        // in doubt (conservatively, for any topic nothing is known of).
        assert_eq!(replayed(&history, &[topic("a")], 999), (Some(Gap::Expired), vec![]));
        assert_eq!(replayed(&history, &[topic("never")], 1050), (None, vec![]));
        assert_eq!(replayed(&history, &[topic("never")], 1000), (Some(Gap::Expired), vec![]));
        assert_eq!(stats.drops.expired, 2);
    }

    #[test]
    fn the_budget_evicts_globally_oldest_and_other_topics_keep_exact_gaps() {
        let (one, two) = {
            let mut probe = History::new(limits(10, 0, BIG));
            probe.record(&event(1, &["a"]), 1);
            let one = probe.stats().bytes;
            probe.record(&event(2, &["a"]), 2);
            (one, probe.stats().bytes)
        };
        let (per_event, per_topic) = (two - one, one - (two - one));
        // Room for two topics and three and a half events.
        let mut history = History::new(limits(10, 0, 2 * per_topic + 3 * per_event + per_event / 2));
        history.record(&event(1, &["a"]), 1);
        history.record(&event(2, &["b"]), 2);
        history.record(&event(3, &["a"]), 3);
        history.record(&event(4, &["b"]), 4);
        assert!(history.stats().bytes <= history.limits().budget);
        assert_eq!(history.stats().drops.evicted, 1);
        // Event 1 (topic a) went: a client of `a` from before it has a gap,
        // a client of `b` from before it has none.
        assert_eq!(replayed(&history, &[topic("a")], 0), (Some(Gap::Evicted), vec![3]));
        assert_eq!(replayed(&history, &[topic("b")], 0), (None, vec![2, 4]));
        assert_eq!(replayed(&history, &[topic("a")], 1), (None, vec![3]));
    }

    #[test]
    fn a_returning_topic_inherits_its_tombstone() {
        let mut history = History::new(limits(10, 100, BIG));
        history.record(&event(1000, &["a"]), 1000);
        history.expire(1150);
        assert_eq!(history.stats().tombstones, 1);
        history.record(&event(1160, &["a"]), 1160);
        assert_eq!(history.stats().tombstones, 0);
        assert_eq!(replayed(&history, &[topic("a")], 999), (Some(Gap::Expired), vec![1160]));
        assert_eq!(replayed(&history, &[topic("a")], 1000), (None, vec![1160]));
    }

    #[test]
    fn a_topic_back_after_its_tombstone_went_still_gets_the_gap() {
        let mut history = History::new(limits(10, 100, BIG));
        history.record(&event(1000, &["a"]), 1000);
        history.expire(1400);
        assert_eq!(history.stats().tombstones, 0, "the tombstone outlived its event by one TTL");
        history.record(&event(1500, &["a"]), 1500);
        assert_eq!(replayed(&history, &[topic("a")], 999), (Some(Gap::Expired), vec![1500]), "1000 was missed");
        assert_eq!(replayed(&history, &[topic("a")], 1000), (None, vec![1500]));
    }

    #[test]
    fn zero_history_retains_nothing_but_remembers_the_gap() {
        let mut history = History::new(limits(0, 0, BIG));
        history.record(&event(7, &["t"]), 7);
        assert_eq!(replayed(&history, &[topic("t")], 6), (Some(Gap::Evicted), vec![]));
        assert_eq!(replayed(&history, &[topic("t")], 7), (None, vec![]));
    }

    #[test]
    fn patterns_merge_matching_topics_in_order_with_the_count_rule() {
        let mut history = History::new(limits(2, 0, BIG));
        history.record(&event(1, &["room/1"]), 1);
        history.record(&event(2, &["room/2"]), 2);
        history.record(&event(3, &["other"]), 3);
        history.record(&event(4, &["room/1", "room/2"]), 4);
        assert_eq!(replayed(&history, &[pattern("room/*")], 0), (None, vec![1, 2, 4]).pipe_cap(2));
        assert_eq!(replayed(&history, &[pattern("room/*")], 2), (None, vec![4]));
        assert_eq!(replayed(&history, &[pattern("room/*"), topic("other")], 2), (None, vec![3, 4]));
    }

    /// The newest `cap` with a gap when more matched.
    trait PipeCap {
        fn pipe_cap(self, cap: usize) -> Self;
    }

    impl PipeCap for (Option<Gap>, Vec<u64>) {
        fn pipe_cap(mut self, cap: usize) -> Self {
            if self.1.len() > cap {
                self.1.drain(..self.1.len() - cap);
                self.0 = Some(Gap::Evicted);
            }
            self
        }
    }

    #[test]
    fn memory_stays_within_the_budget_over_many_topics() {
        let budget = 64 * 1024;
        let mut history = History::new(limits(100, 0, budget));
        for ms in 1..=20_000 {
            history.record(&event(ms, &[&format!("user/{ms}")]), ms);
            assert!(history.stats().bytes <= budget);
        }
        let stats = history.stats();
        assert!(stats.events > 50, "the budget holds a fair number: {stats:?}");
        assert_eq!(stats.drops.evicted as usize + stats.events, 20_000);
        assert!(stats.tombstones * TOMBSTONE_BYTES <= budget / TOMBSTONE_SHARE + TOMBSTONE_BYTES);
        // The newest are retained, the oldest gave way.
        assert_eq!(replayed(&history, &[topic("user/20000")], 19_999), (None, vec![20_000]));
        assert!(replayed(&history, &[topic("user/1")], 0).0.is_some());
        // The newest forgotten topic still has its tombstone: exact.
        let forgotten = 20_000 - stats.events as u64;
        assert_eq!(replayed(&history, &[topic(&format!("user/{forgotten}"))], forgotten).0, None, "saw it: no gap");
        assert!(replayed(&history, &[topic(&format!("user/{forgotten}"))], forgotten - 1).0.is_some());
    }

    #[test]
    fn knowledge_of_dropped_events_survives_into_a_new_history_exactly() {
        let mut history = History::new(limits(1, 100, BIG));
        history.record(&event(1000, &["a"]), 1000);
        history.record(&event(1010, &["a"]), 1010); // 1000 pushed out by --history
        history.record(&event(1020, &["quiet"]), 1020);
        history.record(&event(1030, &["b"]), 1030);
        history.expire(1125); // 1010 and 1020 expired: a and quiet are tombstones
        let knowledge = history.knowledge(id(1020), 100);
        assert_eq!(knowledge.dropped, None, "nothing was let go of");
        let mut listed: Vec<(u64, Gap)> = knowledge.topics.iter().map(|&(_, id, why)| (id.ms, why)).collect();
        listed.sort_unstable_by_key(|&(ms, _)| ms);
        assert_eq!(listed, [(1010, Gap::Expired), (1020, Gap::Expired)], "the newest drop of each, up to 1020");
        // A new process: the kept segments' events, then the knowledge.
        let mut restored = History::new(limits(1, 100, BIG));
        restored.record(&event(1030, &["b"]), 1125);
        restored.restore_knowledge(knowledge, 1125);
        let both = |h: &History, name: &str, after: u64| {
            (replayed(h, &[topic(name)], after), replayed(&history, &[topic(name)], after))
        };
        for (name, after) in
            [("a", 999), ("a", 1005), ("a", 1010), ("quiet", 1019), ("quiet", 1020), ("b", 999), ("never", 999)]
        {
            let (now, before) = both(&restored, name, after);
            assert_eq!(now, before, "{name} from {after}: the same answer as before the restart");
        }
        assert_eq!(replayed(&restored, &[topic("quiet")], 1020), (None, vec![]), "saw it: no gap");
        // Only so many fit: the older ones become what every other topic may have dropped.
        let capped = history.knowledge(id(1020), 1);
        assert_eq!((capped.dropped, capped.topics.len()), (Some((id(1010), Gap::Expired)), 1));
        let mut restored = History::new(limits(1, 100, BIG));
        restored.record(&event(1030, &["b"]), 1125);
        restored.restore_knowledge(capped, 1125);
        assert_eq!(replayed(&restored, &[topic("b")], 999), (Some(Gap::Expired), vec![1030]), "conservative");
        assert_eq!(replayed(&restored, &[topic("b")], 1010), (None, vec![1030]));
        assert_eq!(replayed(&restored, &[topic("quiet")], 1020), (None, vec![]), "still exact");
    }

    #[test]
    fn gap_frames_are_events_without_ids() {
        for gap in [Gap::Unparseable, Gap::BeforeStart, Gap::Evicted, Gap::Expired, Gap::Reset, Gap::Unavailable] {
            let mut parser = ssehub_protocol::sse::EventStreamParser::new();
            let events = parser.feed(gap.frame().plain);
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].event_type, "ssehub-gap");
            assert_eq!(events[0].last_event_id, "");
        }
    }
}
