//! The idempotency keys a standalone hub remembers: for each key, what its
//! request looked like and the ids it was given, for `--idempotency-window`.
//! (In cluster mode the keys live in Redis, claimed by the same script that
//! appends the events, so any node deduplicates.)
//!
//! Bounded in bytes: every entry is charged its key, its ids and a fixed
//! overhead ([`ENTRY_OVERHEAD`]); past the bound the oldest keys go first,
//! before their window is over, and are counted ([`KeyStore::evicted`]). The
//! byte count ([`KeyStore::bytes`]) is what a memory budget shared with
//! history would charge; [`KeyStore::set_max_bytes`] lets such a budget move
//! the bound. Keys expire in the order they were remembered (one window for
//! all), so expiry and eviction both pop the front of one queue: no scan.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ssehub_protocol::EventId;

use crate::backplane::IdempotencyKey;

/// Bytes charged per key besides its text and ids: the map slot, the queue
/// slot and the shared key's header, rounded up.
pub const ENTRY_OVERHEAD: usize = 96;

/// What a key says about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not remembered: publish, then [`KeyStore::remember`].
    Fresh,
    /// Remembered with the same fingerprint: publish nothing, answer these ids.
    Replay(Vec<EventId>),
    /// Remembered with another fingerprint: publish nothing, refuse (409).
    Conflict,
}

/// One remembered key.
#[derive(Debug)]
struct Entry {
    /// The request's fingerprint.
    fingerprint: [u8; 16],
    /// The ids it was given.
    ids: Box<[EventId]>,
    /// Forgotten at this time (ms; also tells a re-remembered key's queue slot from a stale one).
    expires_at: u64,
}

/// The keys, oldest first; see the module documentation.
#[derive(Debug)]
pub struct KeyStore {
    /// How long a key is remembered, in ms (0: never).
    window_ms: u64,
    /// The bound on [`KeyStore::bytes`].
    max_bytes: usize,
    /// Key to entry.
    entries: HashMap<Arc<str>, Entry>,
    /// Keys in the order remembered (= the order they expire), with their expiry.
    order: VecDeque<(Arc<str>, u64)>,
    /// Bytes charged for what is held.
    bytes: usize,
    /// Keys dropped before their window ended, to stay within the bound.
    evicted: u64,
}

impl KeyStore {
    /// A store remembering keys for `window`, holding at most `max_bytes`.
    pub fn new(window: Duration, max_bytes: usize) -> Self {
        KeyStore {
            window_ms: window.as_millis() as u64,
            max_bytes,
            entries: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            evicted: 0,
        }
    }

    /// False with a zero window: keys are then never remembered.
    pub fn enabled(&self) -> bool {
        self.window_ms > 0
    }

    /// What `key` says, at clock `now_ms` (expired keys are dropped first).
    pub fn lookup(&mut self, key: &IdempotencyKey, now_ms: u64) -> Lookup {
        self.expire(now_ms);
        match self.entries.get(&*key.key) {
            None => Lookup::Fresh,
            Some(entry) if entry.fingerprint == key.fingerprint => Lookup::Replay(entry.ids.to_vec()),
            Some(_) => Lookup::Conflict,
        }
    }

    /// Remembers that `key` published `ids` (after a [`Lookup::Fresh`]).
    pub fn remember(&mut self, key: &IdempotencyKey, ids: &[EventId], now_ms: u64) {
        if !self.enabled() {
            return;
        }
        let name: Arc<str> = Arc::from(&*key.key);
        let expires_at = now_ms.saturating_add(self.window_ms);
        let entry = Entry { fingerprint: key.fingerprint, ids: ids.into(), expires_at };
        if let Some(old) = self.entries.insert(Arc::clone(&name), entry) {
            self.bytes -= charge(&name, &old.ids); // its queue slot is now stale
        }
        self.bytes += charge(&name, ids);
        self.order.push_back((name, expires_at));
        self.shrink();
    }

    /// Bytes charged for the keys held (see [`ENTRY_OVERHEAD`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys dropped before their window ended, to stay within the byte bound.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Moves the byte bound (a shared memory budget); drops the oldest keys now if over it.
    pub fn set_max_bytes(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes;
        self.shrink();
    }

    /// Drops the oldest keys while over the bound, counting them.
    fn shrink(&mut self) {
        while self.bytes > self.max_bytes {
            match self.pop_oldest() {
                None => break,
                Some(dropped) => self.evicted += u64::from(dropped),
            }
        }
    }

    /// Drops keys whose window is over.
    pub fn expire(&mut self, now_ms: u64) {
        while self.order.front().is_some_and(|&(_, at)| at <= now_ms) {
            self.pop_oldest();
        }
    }

    /// Drops the oldest queue slot and its key, unless the key was
    /// remembered again since (its entry then has a later expiry). Whether
    /// a key was dropped; `None` when the queue is empty.
    fn pop_oldest(&mut self) -> Option<bool> {
        let (name, at) = self.order.pop_front()?;
        if self.entries.get(&name).is_some_and(|entry| entry.expires_at == at)
            && let Some(entry) = self.entries.remove(&name)
        {
            self.bytes -= charge(&name, &entry.ids);
            return Some(true);
        }
        Some(false)
    }
}

/// What one key costs.
fn charge(name: &str, ids: &[EventId]) -> usize {
    ENTRY_OVERHEAD + name.len() + std::mem::size_of_val(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, fingerprint: u8) -> IdempotencyKey {
        IdempotencyKey { key: name.into(), fingerprint: [fingerprint; 16] }
    }

    fn ids(ms: u64) -> Vec<EventId> {
        vec![EventId { ms, seq: 0 }, EventId { ms, seq: 1 }]
    }

    #[test]
    fn a_key_replays_its_ids_for_the_window_and_conflicts_with_another_body() {
        let mut store = KeyStore::new(Duration::from_millis(100), 1 << 20);
        assert_eq!(store.lookup(&key("a", 1), 0), Lookup::Fresh);
        store.remember(&key("a", 1), &ids(5), 0);
        assert_eq!(store.lookup(&key("a", 1), 99), Lookup::Replay(ids(5)));
        assert_eq!(store.lookup(&key("a", 2), 99), Lookup::Conflict);
        assert_eq!(store.lookup(&key("b", 1), 99), Lookup::Fresh);
        assert_eq!(store.lookup(&key("a", 1), 100), Lookup::Fresh, "the window is over");
        assert_eq!((store.len(), store.bytes(), store.evicted()), (0, 0, 0));
    }

    #[test]
    fn the_byte_bound_drops_the_oldest_first_and_counts_them() {
        let one = charge("k00", &ids(0));
        let mut store = KeyStore::new(Duration::from_secs(60), 3 * one);
        for i in 0..5 {
            store.remember(&key(&format!("k{i:02}"), 0), &ids(i), 0);
        }
        assert_eq!((store.len(), store.bytes(), store.evicted()), (3, 3 * one, 2));
        assert_eq!(store.lookup(&key("k01", 0), 1), Lookup::Fresh);
        assert_eq!(store.lookup(&key("k04", 0), 1), Lookup::Replay(ids(4)));
        store.set_max_bytes(one);
        assert_eq!((store.len(), store.evicted()), (1, 4));
        assert_eq!(store.lookup(&key("k04", 0), 1), Lookup::Replay(ids(4)), "the newest stays");
    }

    #[test]
    fn a_key_remembered_again_keeps_its_new_entry_when_the_old_slot_expires() {
        let mut store = KeyStore::new(Duration::from_millis(10), 1 << 20);
        store.remember(&key("a", 1), &ids(1), 0);
        store.remember(&key("a", 1), &ids(2), 5);
        assert_eq!(store.lookup(&key("a", 1), 12), Lookup::Replay(ids(2)));
        assert_eq!(store.bytes(), charge("a", &ids(2)));
        assert_eq!(store.lookup(&key("a", 1), 15), Lookup::Fresh);
        assert_eq!(store.bytes(), 0);
    }

    #[test]
    fn a_zero_window_remembers_nothing() {
        let mut store = KeyStore::new(Duration::ZERO, 1 << 20);
        store.remember(&key("a", 1), &ids(1), 0);
        assert!(!store.enabled() && store.is_empty());
        assert_eq!(store.lookup(&key("a", 1), 0), Lookup::Fresh);
    }
}
