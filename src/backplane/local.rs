//! Standalone: this process orders its own events. A publish is sequenced
//! and handed to every worker before it is answered, so there is nothing to
//! wait for; history lives only in memory, so a resume from before this
//! process started is a gap.

use std::sync::Arc;

use ssehub_core::backplane::{Backplane, Catchup, Origin, PublishFailure, ReplayRequest, Submitted};
use ssehub_core::bus::{Bus, Full};
use ssehub_core::history::Gap;
use ssehub_core::{Event, EventId};
use ssehub_protocol::publish::Publication;

/// The in-process sequencer as a backplane.
pub struct Local {
    /// Sequences and hands out events.
    bus: Arc<Bus>,
}

impl Local {
    /// Orders events with `bus`'s sequencer.
    pub fn new(bus: Arc<Bus>) -> Self {
        Local { bus }
    }
}

impl Backplane for Local {
    fn publish(&self, _origin: Origin, publications: Vec<Publication>) -> Submitted {
        let events: Vec<Event> = publications.iter().map(Event::from_publication).collect();
        match self.bus.publish(events) {
            Ok(ids) => Submitted::Published(ids),
            Err(Full) => Submitted::Failed(PublishFailure::Unavailable("event queues are full; retry")),
        }
    }

    fn catchup(&self, after: Option<EventId>, missed: Option<Gap>) -> Catchup {
        Catchup::Memory(match after {
            None => Some(Gap::Unparseable),
            Some(id) if id < self.bus.boot_id() => Some(Gap::BeforeStart),
            Some(_) => missed,
        })
    }

    fn replay(&self, _origin: Origin, _request: ReplayRequest) -> bool {
        false // never asked: catchup is always from memory
    }
}
