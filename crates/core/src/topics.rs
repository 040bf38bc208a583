//! One worker's topics: who is subscribed, and the recent events of each.
//!
//! Owned by a single worker thread, never shared. Subscriber lists hold
//! connection keys; a subscriber remembers its position in each list so
//! unsubscribing is O(1) (`swap_remove`, then the moved subscriber is told its
//! new position).

use std::collections::HashMap;
use std::sync::Arc;

use ssehub_protocol::pattern::{Pattern, is_pattern};

use crate::event::Event;
use crate::history::History;
use crate::pattern_index::PatternIndex;
use crate::subscriber::{Subscriptions, WithPatterns};

/// A topic's slot in one worker's table.
pub type TopicId = u32;

/// One topic of one worker.
#[derive(Debug)]
pub struct Topic {
    /// Its name, the key of the index.
    name: Box<str>,
    /// Connection keys of this worker's subscribers, unordered.
    pub subscribers: Vec<u32>,
    /// Recent events, for resumes.
    pub history: History,
}

/// One worker's topic table.
#[derive(Debug)]
pub struct Topics {
    /// Name to slot.
    index: HashMap<Box<str>, TopicId>,
    /// The topics; freed slots are reused.
    slots: Vec<Option<Topic>>,
    /// Free slots.
    free: Vec<TopicId>,
    /// `--history` for new topics.
    history: usize,
    /// Pattern subscriptions: from a published topic to the subscribers of
    /// every matching pattern. Empty (and never walked) unless someone
    /// subscribed to a pattern.
    patterns: PatternIndex<u32>,
}

impl Topics {
    /// An empty table whose topics retain `history` events each.
    pub fn new(history: usize) -> Self {
        Topics { index: HashMap::new(), slots: Vec::new(), free: Vec::new(), history, patterns: PatternIndex::new() }
    }

    /// The slot of a topic this worker knows.
    pub fn find(&self, name: &str) -> Option<TopicId> {
        self.index.get(name).copied()
    }

    /// The slot of a topic, created if new.
    pub fn get_or_insert(&mut self, name: &str) -> TopicId {
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        let topic = Topic { name: name.into(), subscribers: Vec::new(), history: History::new(self.history) };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(topic);
                id
            }
            None => {
                self.slots.push(Some(topic));
                (self.slots.len() - 1) as TopicId
            }
        };
        self.index.insert(name.into(), id);
        id
    }

    /// The topic in a slot returned by [`Topics::find`] or [`Topics::get_or_insert`].
    pub fn get(&self, id: TopicId) -> &Topic {
        self.slot(id)
    }

    fn slot(&self, id: TopicId) -> &Topic {
        match self.slots.get(id as usize) {
            Some(Some(topic)) => topic,
            _ => panic!("topic slot {id} is empty"),
        }
    }

    fn slot_mut(&mut self, id: TopicId) -> &mut Topic {
        match self.slots.get_mut(id as usize) {
            Some(Some(topic)) => topic,
            _ => panic!("topic slot {id} is empty"),
        }
    }

    /// Records a published event in the history of each of its topics.
    pub fn record(&mut self, event: &Arc<Event>) {
        for name in event.topics() {
            let topic = self.get_or_insert(name);
            self.slot_mut(topic).history.push(event);
        }
    }

    /// Subscribes connection `key` to `names` (distinct topics or patterns;
    /// a name that does not parse as a pattern is taken as a topic);
    /// returns where it is listed.
    pub fn subscribe(&mut self, key: u32, names: &[String]) -> Subscriptions {
        let mut subs = Vec::with_capacity(names.len());
        let mut patterns = Vec::new();
        for name in names {
            if is_pattern(name)
                && let Ok(pattern) = Pattern::parse(name)
            {
                self.patterns.insert(&pattern, key);
                patterns.push(pattern);
                continue;
            }
            let topic = self.get_or_insert(name);
            let list = &mut self.slot_mut(topic).subscribers;
            list.push(key);
            subs.push((topic, (list.len() - 1) as u32));
        }
        if !patterns.is_empty() {
            let with = WithPatterns { topics: subs.into_boxed_slice(), patterns: patterns.into_boxed_slice() };
            return Subscriptions::Patterns(Box::new(with));
        }
        match subs[..] {
            [(topic, pos)] => Subscriptions::One(topic, pos),
            _ => Subscriptions::Many(subs.into_boxed_slice()),
        }
    }

    /// Calls `each` with every subscriber key listed under a pattern that
    /// matches `topic` (once per matching pattern). Nothing is walked when no
    /// one holds a pattern.
    pub fn for_each_pattern_subscriber(&self, topic: &str, each: impl FnMut(u32)) {
        if !self.patterns.is_empty() {
            self.patterns.for_each_match(topic, each);
        }
    }

    /// Every known topic `pattern` matches: a scan, for resumes only.
    pub fn matching<'a>(&'a self, pattern: &'a Pattern) -> impl Iterator<Item = TopicId> + 'a {
        self.index.iter().filter(|(name, _)| pattern.matches(name)).map(|(_, &id)| id)
    }

    /// Removes a subscriber from every list it is in. `moved` is told each
    /// subscriber that took a vacated position, so it can update its own.
    pub fn unsubscribe(&mut self, key: u32, subs: &Subscriptions, mut moved: impl FnMut(u32, TopicId, u32)) {
        for pattern in subs.patterns() {
            self.patterns.remove(pattern, key);
        }
        for (topic, pos) in subs.iter() {
            if let Some(other) = self.remove(topic, pos) {
                moved(other, topic, pos);
            }
        }
    }

    /// Removes the subscriber at `pos`; returns the key moved into `pos`. A
    /// topic with neither subscribers nor history is forgotten, so
    /// subscribing to random names cannot grow memory.
    fn remove(&mut self, id: TopicId, pos: u32) -> Option<u32> {
        let topic = self.slot_mut(id);
        topic.subscribers.swap_remove(pos as usize);
        let moved = topic.subscribers.get(pos as usize).copied();
        if topic.subscribers.is_empty()
            && topic.history.is_empty()
            && let Some(topic) = self.slots[id as usize].take()
        {
            self.index.remove(&topic.name);
            self.free.push(id);
        }
        moved
    }

    /// Forgets every retained event (the stream they came from was reset).
    pub fn clear_history(&mut self) {
        for topic in self.slots.iter_mut().flatten() {
            topic.history.clear();
        }
    }

    /// Topics known.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when no topic is known.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssehub_protocol::EventId;
    use ssehub_protocol::sse::Frame;

    fn event(ms: u64, topic: &str) -> Arc<Event> {
        let mut event = Event::new(Box::new([topic.into()]), Frame::notice(b"data: x\n\n"));
        event.set_id(EventId { ms, seq: 0 });
        Arc::new(event)
    }

    #[test]
    fn unsubscribe_reports_the_moved_subscriber_and_forgets_empty_topics() {
        let mut topics = Topics::new(4);
        let subs: Vec<Subscriptions> = (10..13).map(|key| topics.subscribe(key, &["a".into()])).collect();
        let t = topics.find("a").unwrap();
        let mut moves = Vec::new();
        topics.unsubscribe(10, &subs[0], |key, topic, pos| moves.push((key, topic, pos)));
        assert_eq!(moves, [(12, t, 0)]);
        assert_eq!(topics.get(t).subscribers, [12, 11]);
        topics.unsubscribe(11, &Subscriptions::One(t, 1), |_, _, _| panic!("nothing moves"));
        topics.unsubscribe(12, &Subscriptions::One(t, 0), |_, _, _| panic!("nothing moves"));
        assert_eq!(topics.find("a"), None, "no subscribers and no history");
        assert!(topics.is_empty());

        topics.record(&event(1, "b"));
        let subs = topics.subscribe(1, &["b".into()]);
        topics.unsubscribe(1, &subs, |_, _, _| {});
        assert!(topics.find("b").is_some(), "history keeps the topic");
    }

    #[test]
    fn a_subscriber_of_several_topics_is_listed_in_each() {
        let mut topics = Topics::new(4);
        let subs = topics.subscribe(7, &["a".into(), "b".into()]);
        let listed: Vec<u32> = subs.iter().map(|(topic, pos)| topics.get(topic).subscribers[pos as usize]).collect();
        assert_eq!(listed, [7, 7]);
        assert_eq!(topics.len(), 2);
    }
}
