//! The shared, immutable event every subscriber receives.
//!
//! An [`Event`] is encoded once, when it is published, into the exact bytes
//! that go on the wire (see [`Frame`]). Once sequenced it is shared as an
//! `Arc<Event>`: fan-out copies pointers, never bytes.

use ssehub_protocol::EventId;
use ssehub_protocol::publish::Publication;
use ssehub_protocol::sse::Frame;

/// One published event: its id, its topics and its complete wire frame.
#[derive(Debug)]
pub struct Event {
    /// Assigned by the sequencer (or the backplane) before the event is shared.
    id: EventId,
    /// Distinct, validated topic names.
    topics: Box<[Box<str>]>,
    /// The wire bytes, in both framings.
    frame: Frame,
    /// A notice for every subscriber, whatever its topics (no id, no history).
    to_all: bool,
}

impl Event {
    /// An event for `topics` with an encoded frame; the sequencer stamps the id.
    pub fn new(topics: Box<[Box<str>]>, frame: Frame) -> Event {
        Event { id: EventId::ZERO, topics, frame, to_all: false }
    }

    /// Encodes a validated publication.
    pub fn from_publication(publication: &Publication) -> Event {
        let topics = publication.topics.iter().map(|t| t.as_str().into()).collect();
        Event::new(topics, publication.encode())
    }

    /// A frame for every subscriber (e.g. an `ssehub-gap` after the backplane's
    /// stream was reset). It has no id and is not kept in any history.
    pub fn notice(fields: &[u8]) -> Event {
        Event { id: EventId::ZERO, topics: Box::new([]), frame: Frame::notice(fields), to_all: true }
    }

    /// True for a notice to every subscriber.
    pub fn to_all(&self) -> bool {
        self.to_all
    }

    /// Stamps the id into the frame, before the event is shared.
    pub fn set_id(&mut self, id: EventId) {
        self.frame.set_id(id);
        self.id = id;
    }

    /// The id (zero for notices).
    pub fn id(&self) -> EventId {
        self.id
    }

    /// The topics it was published to.
    pub fn topics(&self) -> &[Box<str>] {
        &self.topics
    }

    /// The wire bytes.
    pub fn frame(&self) -> &Frame {
        &self.frame
    }
}
