//! One worker's topics: who is subscribed, and the recent events of each.
//!
//! Owned by a single worker thread, never shared. Subscriber lists hold
//! connection keys; a connection remembers its position in each list so
//! unsubscribing is O(1) (`swap_remove`, then the moved connection is told its
//! new position).
//!
//! History is a bounded ring of the same shared frames the fan-out writes, so
//! replay copies pointers, not bytes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use slab::Slab;

use crate::event::{Event, EventId};

pub type TopicId = u32;

#[derive(Debug)]
pub struct History {
    ring: VecDeque<Arc<Event>>,      // oldest first, ids increasing
    cap: usize,                      // --history
    newest_evicted: Option<EventId>, // newest event no longer retained
}

impl History {
    fn new(cap: usize) -> Self {
        History { ring: VecDeque::new(), cap, newest_evicted: None }
    }

    fn push(&mut self, event: &Arc<Event>) {
        if self.ring.len() == self.cap {
            let evicted = match self.ring.pop_front() {
                Some(old) => old.id(),
                None => event.id(), // --history 0: nothing is ever retained
            };
            self.newest_evicted = Some(evicted);
            if self.cap == 0 {
                return;
            }
        }
        self.ring.push_back(Arc::clone(event));
    }

    /// Retained events with an id above `after` (all of them for `None`), oldest first.
    pub fn since(&self, after: Option<EventId>) -> impl Iterator<Item = &Arc<Event>> {
        let start = after.map_or(0, |after| self.ring.partition_point(|e| e.id() <= after));
        self.ring.range(start..)
    }

    /// True if an event newer than `after` was dropped: the client missed it.
    pub fn missed(&self, after: EventId) -> bool {
        self.newest_evicted.is_some_and(|evicted| after < evicted)
    }

    fn is_empty(&self) -> bool {
        self.ring.is_empty() && self.newest_evicted.is_none()
    }
}

#[derive(Debug)]
pub struct Topic {
    name: Box<str>,
    pub subscribers: Vec<u32>, // connection keys, unordered
    pub history: History,
}

#[derive(Debug)]
pub struct Topics {
    index: HashMap<Box<str>, TopicId>,
    slots: Slab<Topic>,
    history: usize, // --history for new topics
}

impl Topics {
    pub fn new(history: usize) -> Self {
        Topics { index: HashMap::new(), slots: Slab::new(), history }
    }

    pub fn find(&self, name: &str) -> Option<TopicId> {
        self.index.get(name).copied()
    }

    pub fn get_or_insert(&mut self, name: &str) -> TopicId {
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        let topic = Topic { name: name.into(), subscribers: Vec::new(), history: History::new(self.history) };
        let id = self.slots.insert(topic) as TopicId;
        self.index.insert(name.into(), id);
        id
    }

    pub fn get(&self, id: TopicId) -> &Topic {
        &self.slots[id as usize]
    }

    /// Records a published event in the topic's history.
    pub fn record(&mut self, id: TopicId, event: &Arc<Event>) {
        self.slots[id as usize].history.push(event);
    }

    /// Adds a subscriber; returns its position in the topic's list.
    pub fn subscribe(&mut self, id: TopicId, key: u32) -> u32 {
        let list = &mut self.slots[id as usize].subscribers;
        list.push(key);
        (list.len() - 1) as u32
    }

    /// Removes the subscriber at `pos`. Returns the key of the subscriber moved
    /// into `pos`, whose stored position must be updated. A topic with neither
    /// subscribers nor history is forgotten, so subscribing to random names
    /// cannot grow memory.
    pub fn unsubscribe(&mut self, id: TopicId, pos: u32) -> Option<u32> {
        let topic = &mut self.slots[id as usize];
        topic.subscribers.swap_remove(pos as usize);
        let moved = topic.subscribers.get(pos as usize).copied();
        if topic.subscribers.is_empty() && topic.history.is_empty() {
            let topic = self.slots.remove(id as usize);
            self.index.remove(&topic.name);
        }
        moved
    }

    /// Forgets every retained event (the stream they came from was reset).
    pub fn clear_history(&mut self) {
        for (_, topic) in self.slots.iter_mut() {
            topic.history = History::new(topic.history.cap);
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ms: u64) -> Arc<Event> {
        let mut event = Event::new(Box::new(["t".into()]), vec![0; Event::reserve()]);
        event.set_id(EventId { ms, seq: 0 });
        Arc::new(event)
    }

    fn ids<'a>(events: impl Iterator<Item = &'a Arc<Event>>) -> Vec<u64> {
        events.map(|e| e.id().ms).collect()
    }

    #[test]
    fn history_keeps_the_newest_and_knows_what_it_dropped() {
        let mut history = History::new(3);
        for ms in 1..=5 {
            history.push(&event(ms));
        }
        assert_eq!(ids(history.since(None)), [3, 4, 5]);
        assert_eq!(ids(history.since(Some(EventId { ms: 3, seq: 0 }))), [4, 5]);
        assert_eq!(ids(history.since(Some(EventId { ms: 9, seq: 0 }))), Vec::<u64>::new());
        assert!(history.missed(EventId { ms: 1, seq: 0 }));
        assert!(!history.missed(EventId { ms: 2, seq: 0 }), "saw the newest dropped event");
        assert!(!history.missed(EventId { ms: 4, seq: 0 }));
    }

    #[test]
    fn zero_history_retains_nothing_but_remembers_the_gap() {
        let mut history = History::new(0);
        history.push(&event(7));
        assert_eq!(history.since(None).count(), 0);
        assert!(history.missed(EventId { ms: 6, seq: 0 }));
        assert!(!history.missed(EventId { ms: 7, seq: 0 }));
    }

    #[test]
    fn unsubscribe_reports_the_moved_subscriber_and_forgets_empty_topics() {
        let mut topics = Topics::new(4);
        let t = topics.get_or_insert("a");
        assert_eq!(topics.subscribe(t, 10), 0);
        assert_eq!(topics.subscribe(t, 11), 1);
        assert_eq!(topics.subscribe(t, 12), 2);
        assert_eq!(topics.unsubscribe(t, 0), Some(12));
        assert_eq!(topics.get(t).subscribers, [12, 11]);
        assert_eq!(topics.unsubscribe(t, 1), None);
        assert_eq!(topics.unsubscribe(t, 0), None);
        assert_eq!(topics.find("a"), None, "no subscribers and no history");

        let t = topics.get_or_insert("b");
        topics.record(t, &event(1));
        topics.subscribe(t, 1);
        topics.unsubscribe(t, 0);
        assert_eq!(topics.find("b"), Some(t), "history keeps the topic");
    }
}
