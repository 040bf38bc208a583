//! Per-worker deadlines: heartbeats, request timeouts and lingering closes.
//!
//! Every deadline of one kind has the same period, so a FIFO queue is already
//! sorted: arming is a push, expiry is popping the front. No scan of every
//! connection, no heap. Entries are never removed early; each carries the
//! connection's stamp and is ignored when it no longer matches (the
//! connection closed, or re-armed since).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Milliseconds since the worker started: cheap to store, monotonic.
#[derive(Copy, Clone, Debug)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock { origin: Instant::now() }
    }

    pub fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Deadline {
    pub at: u64,    // Clock milliseconds
    pub key: u32,   // connection slot
    pub stamp: u32, // must equal the connection's stamp to still count
}

#[derive(Debug)]
pub struct DeadlineQueue {
    period: u64, // milliseconds; 0 disables the queue
    entries: VecDeque<Deadline>,
}

impl DeadlineQueue {
    pub fn new(period: Duration) -> Self {
        DeadlineQueue { period: period.as_millis() as u64, entries: VecDeque::new() }
    }

    pub fn enabled(&self) -> bool {
        self.period > 0
    }

    /// Schedules `key` one period after `now`.
    pub fn arm(&mut self, now: u64, key: u32, stamp: u32) {
        if self.enabled() {
            self.entries.push_back(Deadline { at: now + self.period, key, stamp });
        }
    }

    /// The earliest deadline, for the poll timeout.
    pub fn next(&self) -> Option<u64> {
        self.entries.front().map(|d| d.at)
    }

    /// Removes and returns the front entry if it is due.
    pub fn pop_due(&mut self, now: u64) -> Option<Deadline> {
        if self.entries.front()?.at <= now { self.entries.pop_front() } else { None }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

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
        queue.arm(0, 1, 0);
        queue.arm(10, 2, 0);
        assert_eq!(queue.next(), Some(100));
        assert_eq!(queue.pop_due(99), None);
        assert_eq!(queue.pop_due(105).map(|d| d.key), Some(1));
        assert_eq!(queue.pop_due(105), None);
        assert_eq!(queue.pop_due(110).map(|d| d.key), Some(2));
        assert!(queue.is_empty());
    }

    #[test]
    fn a_zero_period_disables_the_queue() {
        let mut queue = DeadlineQueue::new(Duration::ZERO);
        queue.arm(0, 1, 0);
        assert_eq!(queue.next(), None);
    }
}
