//! Recent events of one topic, for clients resuming with `Last-Event-ID`,
//! and the gap notice sent when a resume cannot be complete.
//!
//! History is a bounded ring of the same shared frames the fan-out writes,
//! so replay copies pointers, not bytes.

use std::collections::VecDeque;
use std::sync::Arc;

use ssehub_protocol::EventId;
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
    /// History already dropped events newer than the id.
    Evicted,
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
        const RESET: StaticFrame = static_frame!(b"event: ssehub-gap\ndata: {\"reason\":\"stream-reset\"}\n\n");
        const UNAVAILABLE: StaticFrame =
            static_frame!(b"event: ssehub-gap\ndata: {\"reason\":\"backplane-unavailable\"}\n\n");
        match self {
            Gap::Unparseable => UNPARSEABLE,
            Gap::BeforeStart => BEFORE_START,
            Gap::Evicted => EVICTED,
            Gap::Reset => RESET,
            Gap::Unavailable => UNAVAILABLE,
        }
    }
}

/// The retained events of one topic.
#[derive(Debug)]
pub struct History {
    /// Oldest first, ids increasing.
    ring: VecDeque<Arc<Event>>,
    /// `--history`: most events retained.
    cap: usize,
    /// Newest event no longer retained.
    newest_evicted: Option<EventId>,
}

impl History {
    /// An empty history of at most `cap` events.
    pub fn new(cap: usize) -> Self {
        History { ring: VecDeque::new(), cap, newest_evicted: None }
    }

    /// Retains `event`, dropping the oldest when full.
    pub fn push(&mut self, event: &Arc<Event>) {
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

    /// True when nothing is retained and nothing was ever dropped.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty() && self.newest_evicted.is_none()
    }

    /// Forgets everything (the stream the events came from was reset).
    pub fn clear(&mut self) {
        *self = History::new(self.cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssehub_protocol::sse::Frame;

    fn event(ms: u64) -> Arc<Event> {
        let mut event = Event::new(Box::new(["t".into()]), Frame::notice(b"data: x\n\n"));
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
    fn gap_frames_are_events_without_ids() {
        for gap in [Gap::Unparseable, Gap::BeforeStart, Gap::Evicted, Gap::Reset, Gap::Unavailable] {
            let mut parser = ssehub_protocol::sse::EventStreamParser::new();
            let events = parser.feed(gap.frame().plain);
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].event_type, "ssehub-gap");
            assert_eq!(events[0].last_event_id, "");
        }
    }
}
