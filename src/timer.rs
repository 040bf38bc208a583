//! Per-worker deadlines: heartbeats, request timeouts and lingering closes.
//!
//! Each kind is a binary min-heap of `(time, connection, stamp)`: arming and
//! expiry are O(log n), and nothing ever scans every connection. Entries are
//! never removed early; each carries the connection's stamp and is ignored
//! when it no longer matches (the connection closed, or changed state).
//! Callers keep at most one live entry per connection and move a deadline
//! later by re-arming when the old entry comes due, so the heap stays as
//! small as the number of connections however many requests a connection
//! sends.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Milliseconds since the worker started: cheap to store, monotonic.
#[derive(Copy, Clone, Debug)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// Starts the clock at zero now.
    pub fn new() -> Self {
        Clock { origin: Instant::now() }
    }

    /// Milliseconds since [`Clock::new`].
    pub fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// One armed deadline; ordered by time first.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline {
    /// When it is due, in [`Clock`] milliseconds.
    pub at: u64,
    /// The connection's slot.
    pub key: u32,
    /// Must equal the connection's stamp for the entry to still count.
    pub stamp: u32,
}

/// A min-heap of deadlines of one kind, all armed with the same period.
#[derive(Debug)]
pub struct DeadlineQueue {
    /// Milliseconds; 0 disables the queue.
    period: u64,
    entries: BinaryHeap<Reverse<Deadline>>,
}

impl DeadlineQueue {
    /// An empty queue; a zero `period` disables it.
    pub fn new(period: Duration) -> Self {
        DeadlineQueue { period: period.as_millis() as u64, entries: BinaryHeap::new() }
    }

    /// Whether the queue arms anything at all.
    pub fn enabled(&self) -> bool {
        self.period > 0
    }

    /// The period in milliseconds.
    pub fn period(&self) -> u64 {
        self.period
    }

    /// Schedules `key` one period after `now`; returns when.
    pub fn arm(&mut self, now: u64, key: u32, stamp: u32) -> u64 {
        self.arm_at(now + self.period, key, stamp);
        now + self.period
    }

    /// Schedules `key` at `at` (Clock milliseconds).
    pub fn arm_at(&mut self, at: u64, key: u32, stamp: u32) {
        if self.enabled() {
            self.entries.push(Reverse(Deadline { at, key, stamp }));
        }
    }

    /// The earliest deadline, for the poll timeout.
    pub fn next(&self) -> Option<u64> {
        self.entries.peek().map(|d| d.0.at)
    }

    /// Removes and returns the earliest entry if it is due.
    pub fn pop_due(&mut self, now: u64) -> Option<Deadline> {
        if self.next()? <= now { self.entries.pop().map(|d| d.0) } else { None }
    }

    /// Entries held, stale ones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drops entries that no longer count, once they outnumber the live ones:
    /// connections that come and go faster than the period would otherwise
    /// leave a period's worth of stale entries behind.
    pub fn compact(&mut self, live: usize, still_valid: impl FnMut(&Deadline) -> bool) {
        if self.entries.len() <= 2 * live + 1024 {
            return;
        }
        let mut still_valid = still_valid;
        self.entries.retain(|d| still_valid(&d.0));
        if self.entries.capacity() > 4 * self.entries.len() + 1024 {
            self.entries.shrink_to_fit();
        }
    }

    /// Whether no entries are held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let mut queue = DeadlineQueue::new(Duration::from_millis(100));
        queue.arm(10, 2, 0);
        queue.arm(0, 1, 0);
        queue.arm_at(500, 3, 0);
        assert_eq!(queue.next(), Some(100));
        assert_eq!(queue.pop_due(99), None);
        assert_eq!(queue.pop_due(105).map(|d| d.key), Some(1));
        assert_eq!(queue.pop_due(105), None);
        assert_eq!(queue.pop_due(110).map(|d| d.key), Some(2));
        assert_eq!(queue.pop_due(499), None);
        assert_eq!(queue.pop_due(500).map(|d| d.key), Some(3));
        assert!(queue.is_empty());
    }

    #[test]
    fn compaction_keeps_only_valid_entries_once_stale_ones_dominate() {
        let mut queue = DeadlineQueue::new(Duration::from_millis(100));
        for key in 0..3000 {
            queue.arm(0, key, 0);
        }
        queue.compact(2000, |d| d.key < 10);
        assert_eq!(queue.len(), 3000, "not worth it yet");
        queue.compact(10, |d| d.key < 10);
        assert_eq!(queue.len(), 10);
        assert_eq!(queue.pop_due(100).map(|d| d.key), Some(0));
    }

    #[test]
    fn a_zero_period_disables_the_queue() {
        let mut queue = DeadlineQueue::new(Duration::ZERO);
        queue.arm(0, 1, 0);
        assert_eq!(queue.next(), None);
    }
}
