//! Delivery accounting: per-subscriber, per-topic sequence tracking (missing,
//! duplicate and reordered events, allocation-free per event), loss totals
//! over many subscribers, and the latency histograms (one HDR histogram per
//! thread, merged at the end).

use hdrhistogram::Histogram;
use serde::Serialize;

/// Width of the reorder window: an event may arrive up to this many
/// sequence numbers late and still count as delivered (reordered) rather
/// than missing-then-duplicate.
pub const WINDOW: u64 = 64;

/// Tracks one (subscriber, topic) stream of per-topic sequence numbers
/// `n = 0, 1, 2, ...` with a sliding 64-bit window of seen numbers.
///
/// Invariant: every number below `base` has been accounted for (seen, or
/// counted missing when the window slid past it); bit `i` of `seen` means
/// `base + i` was seen. In-order delivery keeps `seen == 0` and just bumps
/// `base`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqWindow {
    base: u64,
    seen: u64,
    /// Highest number seen + 1 (0 = nothing seen yet).
    high: u64,
    started: bool,
    missing: u32,
    duplicates: u32,
    reordered: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First delivery of this number.
    New,
    /// First delivery, but after a higher number (reordered).
    Late,
    /// Seen before (or so late that it had already been counted missing).
    Duplicate,
}

impl SeqWindow {
    /// A subscriber that was connected before the first publish: it must
    /// receive every number from 0.
    pub fn from_start() -> SeqWindow {
        SeqWindow { started: true, ..SeqWindow::default() }
    }

    /// A subscriber that joined mid-stream: the first number it sees is its
    /// baseline (what was published before it subscribed is not expected).
    pub fn floating() -> SeqWindow {
        SeqWindow::default()
    }

    /// Next number expected in order (everything below is accounted for).
    pub fn base(&self) -> u64 {
        self.base
    }

    #[cfg(test)]
    pub fn missing(&self) -> u32 {
        self.missing
    }

    pub fn duplicates(&self) -> u32 {
        self.duplicates
    }

    pub fn reordered(&self) -> u32 {
        self.reordered
    }

    /// Records delivery of number `n`. Also returns how many numbers were
    /// newly counted missing because the window slid past them.
    pub fn observe(&mut self, n: u64) -> (Seen, u64) {
        if !self.started {
            self.started = true;
            self.base = n;
        }
        if n < self.base {
            self.duplicates = self.duplicates.saturating_add(1);
            return (Seen::Duplicate, 0);
        }
        let mut slid_missing = 0;
        let mut off = n - self.base;
        if off >= WINDOW {
            let shift = off - (WINDOW - 1);
            if shift >= WINDOW {
                slid_missing = (WINDOW - u64::from(self.seen.count_ones())) + (shift - WINDOW);
                self.seen = 0;
            } else {
                let out_mask = (1u64 << shift) - 1;
                slid_missing = shift - u64::from((self.seen & out_mask).count_ones());
                self.seen >>= shift;
            }
            self.base += shift;
            off = WINDOW - 1;
            self.missing = self.missing.saturating_add(u32::try_from(slid_missing).unwrap_or(u32::MAX));
        }
        let bit = 1u64 << off;
        if self.seen & bit != 0 {
            self.duplicates = self.duplicates.saturating_add(1);
            return (Seen::Duplicate, slid_missing);
        }
        self.seen |= bit;
        let kind = if n + 1 < self.high {
            self.reordered = self.reordered.saturating_add(1);
            Seen::Late
        } else {
            self.high = n + 1;
            Seen::New
        };
        let run = self.seen.trailing_ones();
        self.seen = if run >= 64 { 0 } else { self.seen >> run };
        self.base += u64::from(run);
        (kind, slid_missing)
    }

    /// Missing numbers after the stream ended, including those the window
    /// had not yet given up on. `end` is the number of events published on
    /// the topic if the subscriber stayed to the end; `None` if it left
    /// early, in which case only gaps below the highest number seen count.
    pub fn missing_at_end(&self, end: Option<u64>) -> u64 {
        let end = match end {
            Some(e) if self.started => e,
            Some(_) => return 0, // floating, never saw anything: nothing expected
            None => self.high,
        };
        let mut m = u64::from(self.missing);
        if end > self.base {
            let span = end - self.base;
            let mask = if span >= 64 { u64::MAX } else { (1u64 << span) - 1 };
            m += span - u64::from((self.seen & mask).count_ones());
        }
        m
    }
}

/// Per-subscriber tracking: the (at most two) topics it subscribed to.
#[derive(Debug, Clone, Copy)]
pub struct SubscriberTrack {
    topics: [u32; 2],
    windows: [SeqWindow; 2],
    len: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Seen(Seen),
    /// An event of a topic this subscriber did not subscribe to.
    WrongTopic,
}

impl SubscriberTrack {
    /// `topics` (1 or 2 entries); `from_start` as for [`SeqWindow`].
    pub fn new(topics: &[u32], from_start: bool) -> SubscriberTrack {
        let w = if from_start { SeqWindow::from_start() } else { SeqWindow::floating() };
        let mut t = SubscriberTrack { topics: [u32::MAX; 2], windows: [w; 2], len: 0 };
        for &topic in topics.iter().take(2) {
            t.topics[usize::from(t.len)] = topic;
            t.len += 1;
        }
        t
    }

    pub fn topics(&self) -> &[u32] {
        &self.topics[..usize::from(self.len)]
    }

    pub fn observe(&mut self, topic: u32, n: u64) -> (Outcome, u64) {
        match self.topics().iter().position(|&t| t == topic) {
            Some(i) => {
                let (s, slid) = self.windows[i].observe(n);
                (Outcome::Seen(s), slid)
            }
            None => (Outcome::WrongTopic, 0),
        }
    }

    /// Has received everything published so far (`published[topic]`).
    pub fn caught_up(&self, published: impl Fn(u32) -> u64) -> bool {
        (0..usize::from(self.len)).all(|i| {
            let w = &self.windows[i];
            !w.started || w.base() >= published(self.topics[i])
        })
    }

    /// Final (missing, duplicates, reordered) for this subscriber.
    pub fn finish(&self, published: Option<&dyn Fn(u32) -> u64>) -> (u64, u64, u64) {
        let mut r = (0, 0, 0);
        for i in 0..usize::from(self.len) {
            let w = &self.windows[i];
            r.0 += w.missing_at_end(published.map(|p| p(self.topics[i])));
            r.1 += u64::from(w.duplicates());
            r.2 += u64::from(w.reordered());
        }
        r
    }
}

/// Loss totals over a group of subscribers (stayers or churners).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LossStats {
    pub subscribers: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub subscribers_with_missing: u64,
    pub subscribers_with_duplicates: u64,
    pub max_missing_one_subscriber: u64,
    pub max_duplicates_one_subscriber: u64,
}

impl LossStats {
    pub fn add_subscriber(&mut self, (missing, dups, reordered): (u64, u64, u64)) {
        self.subscribers += 1;
        self.missing += missing;
        self.duplicates += dups;
        self.reordered += reordered;
        self.subscribers_with_missing += u64::from(missing > 0);
        self.subscribers_with_duplicates += u64::from(dups > 0);
        self.max_missing_one_subscriber = self.max_missing_one_subscriber.max(missing);
        self.max_duplicates_one_subscriber = self.max_duplicates_one_subscriber.max(dups);
    }

    pub fn merge(&mut self, o: &LossStats) {
        self.subscribers += o.subscribers;
        self.missing += o.missing;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.subscribers_with_missing += o.subscribers_with_missing;
        self.subscribers_with_duplicates += o.subscribers_with_duplicates;
        self.max_missing_one_subscriber = self.max_missing_one_subscriber.max(o.max_missing_one_subscriber);
        self.max_duplicates_one_subscriber = self.max_duplicates_one_subscriber.max(o.max_duplicates_one_subscriber);
    }
}

/// Latency histogram in nanoseconds, 1 ns .. 1 h, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants known to be valid.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let us = |ns: u64| ns as f64 / 1000.0;
    Percentiles {
        count: h.len(),
        p50_us: us(h.value_at_quantile(0.50)),
        p90_us: us(h.value_at_quantile(0.90)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
        mean_us: h.mean() / 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(w: &mut SeqWindow, ns: &[u64]) -> Vec<Seen> {
        ns.iter().map(|&n| w.observe(n).0).collect()
    }

    #[test]
    fn in_order_has_no_loss() {
        let mut w = SeqWindow::from_start();
        for n in 0..1000 {
            assert_eq!(w.observe(n), (Seen::New, 0));
        }
        assert_eq!(w.base(), 1000);
        assert_eq!(w.missing_at_end(Some(1000)), 0);
        assert_eq!(w.duplicates(), 0);
    }

    #[test]
    fn detects_gaps_inside_window() {
        let mut w = SeqWindow::from_start();
        feed(&mut w, &[0, 1, 3, 4, 7]);
        assert_eq!(w.missing_at_end(Some(8)), 3); // 2, 5, 6
        assert_eq!(w.missing_at_end(None), 3); // below the highest seen (7)
        assert_eq!(w.missing_at_end(Some(10)), 5); // and 8, 9 never came
    }

    #[test]
    fn detects_missing_first_event() {
        let mut w = SeqWindow::from_start();
        feed(&mut w, &[1, 2]);
        assert_eq!(w.missing_at_end(Some(3)), 1);
    }

    #[test]
    fn detects_duplicates() {
        let mut w = SeqWindow::from_start();
        let kinds = feed(&mut w, &[0, 1, 1, 0, 3, 3]);
        assert_eq!(kinds, vec![Seen::New, Seen::New, Seen::Duplicate, Seen::Duplicate, Seen::New, Seen::Duplicate]);
        assert_eq!(w.duplicates(), 3);
        assert_eq!(w.missing_at_end(Some(4)), 1); // 2
    }

    #[test]
    fn reordered_within_window_is_not_loss() {
        let mut w = SeqWindow::from_start();
        let kinds = feed(&mut w, &[0, 2, 1, 3]);
        assert_eq!(kinds, vec![Seen::New, Seen::New, Seen::Late, Seen::New]);
        assert_eq!(w.reordered(), 1);
        assert_eq!(w.missing_at_end(Some(4)), 0);
        assert_eq!(w.duplicates(), 0);
    }

    #[test]
    fn big_jump_slides_window_and_counts_missing() {
        let mut w = SeqWindow::from_start();
        w.observe(0);
        let (_, slid) = w.observe(200);
        // 1..=136 slid out unseen; 137..=199 still pending in the window.
        assert_eq!(slid, 136);
        assert_eq!(w.missing(), 136);
        assert_eq!(w.missing_at_end(Some(201)), 199);
        // A very late arrival of a number already given up on is counted as
        // a duplicate, never as new.
        assert_eq!(w.observe(5).0, Seen::Duplicate);
        // One still inside the window is a late delivery.
        assert_eq!(w.observe(150).0, Seen::Late);
        assert_eq!(w.missing_at_end(Some(201)), 198);
    }

    #[test]
    fn jump_with_partial_window() {
        let mut w = SeqWindow::from_start();
        feed(&mut w, &[0, 2, 4]); // base 1, seen {2, 4}
        let (_, slid) = w.observe(70); // window slides to [7, 71)
        assert_eq!(slid, 4); // 1, 3, 5, 6
        assert_eq!(w.missing_at_end(Some(71)), 4 + 63); // plus 7..=69
    }

    #[test]
    fn floating_window_starts_at_first_seen() {
        let mut w = SeqWindow::floating();
        feed(&mut w, &[50, 51, 53]);
        assert_eq!(w.missing_at_end(None), 1);
        assert_eq!(w.missing_at_end(Some(54)), 1);
        assert_eq!(SeqWindow::floating().missing_at_end(Some(10)), 0);
    }

    #[test]
    fn subscriber_tracks_two_topics_and_flags_foreign_events() {
        let mut s = SubscriberTrack::new(&[3, 7], true);
        assert_eq!(s.observe(3, 0).0, Outcome::Seen(Seen::New));
        assert_eq!(s.observe(7, 0).0, Outcome::Seen(Seen::New));
        assert_eq!(s.observe(7, 1).0, Outcome::Seen(Seen::New));
        assert_eq!(s.observe(5, 0).0, Outcome::WrongTopic);
        let published = |_t: u32| 2;
        assert!(!s.caught_up(published));
        s.observe(3, 1);
        s.observe(3, 1);
        assert!(s.caught_up(published));
        assert_eq!(s.finish(Some(&published)), (0, 1, 0));
        let more = |_t: u32| 3;
        assert_eq!(s.finish(Some(&more)), (2, 1, 0));
    }

    #[test]
    fn loss_stats_aggregate_per_subscriber() {
        let mut a = LossStats::default();
        a.add_subscriber((0, 0, 0));
        a.add_subscriber((3, 1, 0));
        let mut b = LossStats::default();
        b.add_subscriber((5, 0, 2));
        a.merge(&b);
        assert_eq!(a.subscribers, 3);
        assert_eq!(a.missing, 8);
        assert_eq!(a.subscribers_with_missing, 2);
        assert_eq!(a.subscribers_with_duplicates, 1);
        assert_eq!(a.max_missing_one_subscriber, 5);
        assert_eq!(a.reordered, 2);
    }

    #[test]
    fn histogram_percentiles() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let p = percentiles(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50_us - 500.0).abs() < 1.0);
        assert!((p.max_us - 1000.0).abs() < 1.0);
    }
}
