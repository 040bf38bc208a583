//! One worker's topics: who is subscribed to what.
//!
//! Owned by a single worker thread, never shared. History is not here: it is
//! kept once for every worker, by the bus. A topic is known here only while
//! it has a subscriber on this worker; its first subscriber and its last
//! are reported (`gained`, `lost`) so the worker can tell the bus's routing. Subscriber lists hold
//! connection keys; a subscriber remembers its position in each list so
//! unsubscribing is O(1) (`swap_remove`, then the moved subscriber is told its
//! new position).

use std::collections::HashMap;

use ssehub_protocol::pattern::{Pattern, is_pattern};

use crate::pattern_index::PatternIndex;
use crate::subscriber::{Subscriptions, WithPatterns};

/// A topic's slot in one worker's table.
pub type TopicId = u32;

/// One topic of one worker.
#[derive(Debug)]
pub struct Topic {
    /// Its name, the key of the index.
    name: Box<str>,
    /// Connection keys of this worker's subscribers, unordered; never empty.
    pub subscribers: Vec<u32>,
}

/// A subscription name as routing sees it: a topic, or a pattern (parsed).
pub type Name = (String, Option<Pattern>);

/// One worker's topic table.
#[derive(Debug)]
pub struct Topics {
    /// Name to slot.
    index: HashMap<Box<str>, TopicId>,
    /// The topics; freed slots are reused.
    slots: Vec<Option<Topic>>,
    /// Free slots.
    free: Vec<TopicId>,
    /// Subscriptions held per pattern, to report the first and the last.
    pattern_counts: HashMap<Pattern, u32>,
    /// Pattern subscriptions: from a published topic to the subscribers of
    /// every matching pattern. Empty (and never walked) unless someone
    /// subscribed to a pattern.
    patterns: PatternIndex<u32>,
}

/// Subscription names parsed once: a name that is a valid pattern (a
/// segment exactly `*` or `**`) is a pattern, any other a topic.
pub fn names(raw: &[String]) -> Vec<Name> {
    raw.iter()
        .map(|name| {
            let pattern = if is_pattern(name) { Pattern::parse(name).ok() } else { None };
            (name.clone(), pattern)
        })
        .collect()
}

impl Default for Topics {
    fn default() -> Self {
        Self::new()
    }
}

impl Topics {
    /// An empty table.
    pub fn new() -> Self {
        Topics {
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            pattern_counts: HashMap::new(),
            patterns: PatternIndex::new(),
        }
    }

    /// The slot of a topic this worker knows.
    pub fn find(&self, name: &str) -> Option<TopicId> {
        self.index.get(name).copied()
    }

    /// The slot of a topic, created if new.
    fn get_or_insert(&mut self, name: &str) -> TopicId {
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        let topic = Topic { name: name.into(), subscribers: Vec::new() };
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

    /// Subscribes connection `key` to `names` (distinct topics or patterns,
    /// see [`names`]); returns where it is listed, and adds to `gained`
    /// the names this worker had no subscriber for.
    pub fn subscribe(&mut self, key: u32, names: &[Name], gained: &mut Vec<Name>) -> Subscriptions {
        let mut subs = Vec::with_capacity(names.len());
        let mut patterns = Vec::new();
        for (name, pattern) in names {
            if let Some(pattern) = pattern {
                self.patterns.insert(pattern, key);
                let count = self.pattern_counts.entry(pattern.clone()).or_insert(0);
                *count += 1;
                if *count == 1 {
                    gained.push((name.clone(), Some(pattern.clone())));
                }
                patterns.push(pattern.clone());
                continue;
            }
            let topic = self.get_or_insert(name);
            let list = &mut self.slot_mut(topic).subscribers;
            list.push(key);
            if list.len() == 1 {
                gained.push((name.clone(), None));
            }
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

    /// Removes a subscriber from every list it is in. `moved` is told each
    /// subscriber that took a vacated position, so it can update its own;
    /// `lost` gets the names this worker has no subscriber for any more.
    pub fn unsubscribe(
        &mut self,
        key: u32,
        subs: &Subscriptions,
        mut moved: impl FnMut(u32, TopicId, u32),
        lost: &mut Vec<Name>,
    ) {
        for pattern in subs.patterns() {
            self.patterns.remove(pattern, key);
            if let Some(count) = self.pattern_counts.get_mut(pattern) {
                *count -= 1;
                if *count == 0 {
                    self.pattern_counts.remove(pattern);
                    lost.push((pattern.to_string(), Some(pattern.clone())));
                }
            }
        }
        for (topic, pos) in subs.iter() {
            let (other, gone) = self.remove(topic, pos);
            if let Some(other) = other {
                moved(other, topic, pos);
            }
            if let Some(name) = gone {
                lost.push((name.into(), None));
            }
        }
    }

    /// Removes the subscriber at `pos`; returns the key moved into `pos`, and
    /// the topic's name if that was its last subscriber: the topic is then
    /// forgotten, so subscribing to random names cannot grow memory.
    fn remove(&mut self, id: TopicId, pos: u32) -> (Option<u32>, Option<Box<str>>) {
        let topic = self.slot_mut(id);
        topic.subscribers.swap_remove(pos as usize);
        let moved = topic.subscribers.get(pos as usize).copied();
        if topic.subscribers.is_empty()
            && let Some(topic) = self.slots[id as usize].take()
        {
            self.index.remove(&topic.name);
            self.free.push(id);
            return (moved, Some(topic.name));
        }
        (moved, None)
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

    fn subscribe(topics: &mut Topics, key: u32, raw: &[&str]) -> (Subscriptions, Vec<String>) {
        let raw: Vec<String> = raw.iter().map(|s| s.to_string()).collect();
        let mut gained = Vec::new();
        let subs = topics.subscribe(key, &names(&raw), &mut gained);
        (subs, gained.into_iter().map(|(n, _)| n).collect())
    }

    #[test]
    fn unsubscribe_reports_the_moved_subscriber_and_forgets_empty_topics() {
        let mut topics = Topics::new();
        let mut subs = Vec::new();
        for key in 10..13 {
            let (s, gained) = subscribe(&mut topics, key, &["a"]);
            assert_eq!(gained.len(), usize::from(key == 10), "only the first is news");
            subs.push(s);
        }
        let t = topics.find("a").unwrap();
        let mut moves = Vec::new();
        let mut lost = Vec::new();
        topics.unsubscribe(10, &subs[0], |key, topic, pos| moves.push((key, topic, pos)), &mut lost);
        assert_eq!(moves, [(12, t, 0)]);
        assert_eq!(topics.get(t).subscribers, [12, 11]);
        topics.unsubscribe(11, &Subscriptions::One(t, 1), |_, _, _| panic!("nothing moves"), &mut lost);
        assert!(lost.is_empty());
        topics.unsubscribe(12, &Subscriptions::One(t, 0), |_, _, _| panic!("nothing moves"), &mut lost);
        assert_eq!(lost, [("a".to_string(), None)]);
        assert_eq!(topics.find("a"), None);
        assert!(topics.is_empty());
    }

    #[test]
    fn patterns_are_reported_on_their_first_and_last_subscription() {
        let mut topics = Topics::new();
        let (first, gained) = subscribe(&mut topics, 1, &["room/*", "x"]);
        assert_eq!(gained, ["room/*", "x"]);
        let (second, gained) = subscribe(&mut topics, 2, &["room/*"]);
        assert!(gained.is_empty());
        let mut lost = Vec::new();
        topics.unsubscribe(1, &first, |_, _, _| {}, &mut lost);
        assert_eq!(lost, [("x".to_string(), None)]);
        topics.unsubscribe(2, &second, |_, _, _| {}, &mut lost);
        assert_eq!(lost[1].0, "room/*");
        assert!(lost[1].1.is_some());
    }

    #[test]
    fn a_subscriber_of_several_topics_is_listed_in_each() {
        let mut topics = Topics::new();
        let (subs, _) = subscribe(&mut topics, 7, &["a", "b"]);
        let listed: Vec<u32> = subs.iter().map(|(topic, pos)| topics.get(topic).subscribers[pos as usize]).collect();
        assert_eq!(listed, [7, 7]);
        assert_eq!(topics.len(), 2);
    }
}
