//! ssehub's fan-out core: what happens to an event between its publish and
//! the `writev` to each subscriber, with no socket, no event loop and no
//! backplane client in it.
//!
//! - [`event`]: the shared, immutable frame of one event.
//! - [`bus`]: the sequencer and the per-worker inboxes (lock-free queues plus a waker).
//! - [`backplane`]: the seam to what orders events (in-process, or a shared log).
//! - [`topics`], [`history`]: one worker's subscriber lists and recent events.
//! - [`idempotency`]: the bounded store of a standalone hub's idempotency keys.
//! - [`pattern_index`]: pattern subscriptions (`*`, `**`), found by topic
//!   through a trie rather than a scan.
//! - [`subscriber`], [`fanout`]: a subscriber's state and the batch write to
//!   every subscriber, through the [`fanout::Streams`] trait the server
//!   implements over its connections and driver.
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

pub mod backplane;
pub mod bus;
pub mod event;
pub mod fanout;
pub mod history;
pub mod idempotency;
pub mod pattern_index;
pub mod subscriber;
pub mod topics;

pub use event::Event;
pub use ssehub_protocol::EventId;
