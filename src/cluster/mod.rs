//! Cluster mode (`--redis`): many nodes behave as one hub by following one
//! Redis stream, the sequencer and shared history of every event.
//!
//! Two threads per node talk to Redis; a worker never does:
//!
//! - the **follower** ([`follower`]) reads the stream with a blocking `XREAD`
//!   from the last id it handed over, checks each entry as an HTTP publish
//!   would be checked, encodes it once with its stream id and gives it to
//!   every worker through the bus. Workers cannot tell a local publish from a
//!   remote one. After a Redis outage it continues from that id, so nothing
//!   published meanwhile is lost; if the stream was reset it sends every
//!   subscriber an `ssehub-gap` first.
//! - the **command thread** ([`commands`]) runs what workers ask for:
//!   `XADD` for publishes (the answer waits for Redis's ids) and range reads
//!   for clients resuming from ids older than this node's memory. Answers go
//!   back through the worker's inbox.

pub mod commands;
pub mod entry;
pub mod follower;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::event::{Event, EventId};
use crate::publish::Publication;
use crate::sse::Gap;

/// How long connecting to Redis may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one Redis command may take before the node calls Redis unreachable.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a worker asks the command thread.
#[derive(Debug)]
pub enum Request {
    /// `XADD` each publication, in order, in one pipelined round trip.
    Publish { worker: usize, key: u32, stamp: u32, publications: Vec<Publication> },
    /// Events of `topics` after `after` up to and including `upto`, at most
    /// `history` per topic, for a client resuming from an id older than
    /// this node's memory (`after` is None when the id was unparseable).
    Replay {
        worker: usize,
        key: u32,
        stamp: u32,
        topics: Vec<String>,
        after: Option<EventId>,
        upto: EventId,
        history: usize,
    },
}

/// The command thread's answer, delivered to the asking worker's inbox.
#[derive(Debug)]
pub enum Reply {
    Published { key: u32, stamp: u32, ids: Option<Vec<EventId>> }, // None: Redis failed
    Replayed { key: u32, stamp: u32, gap: Option<Gap>, events: Vec<Arc<Event>> },
}

/// What every part of a node can see of the backplane.
#[derive(Debug, Default)]
pub struct Backplane {
    up: AtomicBool,            // the follower is connected and reading
    pub reconnects: AtomicU64, // successful reconnections after a failure
    pub entries_read: AtomicU64,
    pub invalid_entries: AtomicU64, // entries skipped as an HTTP publish would be refused
    pub lag: AtomicU64,             // entries behind the stream head, as last measured
    floor: Mutex<EventId>,          // this node has every event after this id
}

impl Backplane {
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Relaxed);
    }

    /// Ids after this are all in (or on their way into) this node's memory;
    /// a client resuming from an older id is served from the stream.
    pub fn floor(&self) -> EventId {
        *self.floor.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_floor(&self, id: EventId) {
        *self.floor.lock().unwrap_or_else(|p| p.into_inner()) = id;
    }
}

/// The node's handle on cluster mode, shared by its workers.
pub struct Cluster {
    pub requests: Sender<Request>,
    pub backplane: Arc<Backplane>,
}

/// Exponential backoff with jitter, capped at [`MAX_BACKOFF`].
pub(crate) struct Backoff {
    next: Duration,
    seed: u64,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff { next: Duration::from_millis(100), seed: crate::bus::unix_ms() | 1 }
    }

    pub(crate) fn reset(&mut self) {
        self.next = Duration::from_millis(100);
    }

    /// The next wait: between half and all of the current step, which then doubles.
    pub(crate) fn next_wait(&mut self) -> Duration {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let step = self.next.as_millis() as u64;
        let wait = Duration::from_millis(step / 2 + self.seed % (step / 2 + 1));
        self.next = (self.next * 2).min(MAX_BACKOFF);
        wait
    }
}

/// Connects with the node's timeouts.
pub(crate) fn connect(url: &str, read_timeout: Duration) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(url)?;
    let connection = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    connection.set_read_timeout(Some(read_timeout))?;
    connection.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    Ok(connection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut backoff = Backoff::new();
        let waits: Vec<Duration> = (0..10).map(|_| backoff.next_wait()).collect();
        assert!(waits[0] >= Duration::from_millis(50) && waits[0] <= Duration::from_millis(100));
        assert!(waits.iter().all(|w| *w <= MAX_BACKOFF));
        assert!(waits[9] >= MAX_BACKOFF / 2, "reaches the cap: {waits:?}");
        backoff.reset();
        assert!(backoff.next_wait() <= Duration::from_millis(100));
    }
}
