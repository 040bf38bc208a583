//! The seam between a node and what orders its events.
//!
//! Standalone, the in-process sequencer orders events and answers at once;
//! in cluster mode a shared log (a Redis stream) orders them and answers
//! later. Both sit behind [`Backplane`]; what a worker asks and what comes
//! back are the neutral [`Origin`], [`Submitted`] and [`Reply`] types, so a
//! third implementation (an on-disk log) needs no change to the workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ssehub_protocol::EventId;
use ssehub_protocol::publish::Publication;

use crate::event::Event;
use crate::history::Gap;

/// The connection a request came from, so its answer finds it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The worker that owns the connection (and whose inbox gets the reply).
    pub worker: usize,
    /// The connection's slot in that worker.
    pub key: u32,
    /// The connection's stamp: a reply for a closed and reused slot is dropped.
    pub stamp: u32,
}

/// Why a publish was not applied, or may not have been.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PublishFailure {
    /// Nothing of the request was or will be published (503, retry later).
    Unavailable(&'static str),
    /// The event queues have no room right now; nothing was published. The
    /// worker keeps the request and tries again shortly (backpressure).
    Full,
    /// The request may or may not be published and nobody can tell: a
    /// command timed out after it was sent (504; retry with the same
    /// idempotency key).
    Unknown(&'static str),
    /// The idempotency key was already used by a request with another body;
    /// nothing was published (409).
    Conflict,
}

/// A publish's `Idempotency-Key`, and a fingerprint of what it publishes, so
/// that a reuse with another body is told from a retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The key as the client sent it (1-128 visible ASCII characters).
    pub key: Box<str>,
    /// A hash of the request's media type and body.
    pub fingerprint: [u8; 16],
}

/// An applied publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The ids, in request order.
    pub ids: Vec<EventId>,
    /// True when the idempotency key had already published them: this
    /// request published nothing, the ids are the first request's.
    pub replayed: bool,
}

impl Published {
    /// Freshly published `ids`.
    pub fn new(ids: Vec<EventId>) -> Self {
        Published { ids, replayed: false }
    }
}

/// What [`Backplane::publish`] did with a request.
#[derive(Debug)]
pub enum Submitted {
    /// Ordered now (or earlier, under the same idempotency key).
    Published(Published),
    /// The answer will come as a [`Reply::Published`] to the origin's worker.
    Pending,
    /// Refused now.
    Failed(PublishFailure),
}

/// How a resuming subscriber catches up.
#[derive(Debug)]
pub enum Catchup {
    /// From this node's memory, after an optional gap notice.
    Memory(Option<Gap>),
    /// From the backplane's log: ask [`Backplane::replay`], live events wait behind it.
    Log,
}

/// A resume the backplane's log must serve.
#[derive(Debug)]
pub struct ReplayRequest {
    /// The subscriber's topics.
    pub topics: Vec<String>,
    /// Replay events after this id (`None`: the id was unparseable).
    pub after: Option<EventId>,
    /// ... up to and including this one (newer ones arrive live).
    pub upto: EventId,
    /// At most this many events per topic, the newest.
    pub history: usize,
}

/// An answer from the backplane to the worker that asked.
#[derive(Debug)]
pub enum Reply {
    /// The outcome of a [`Submitted::Pending`] publish (or, as a failure, of
    /// a [`Revoking::Pending`] revocation).
    Published {
        /// The connection that published.
        key: u32,
        /// Its stamp when it asked.
        stamp: u32,
        /// The ids, or why nothing (or maybe something) was published.
        outcome: Result<Published, PublishFailure>,
    },
    /// The events a [`Catchup::Log`] resume missed.
    Replayed {
        /// The subscriber.
        key: u32,
        /// Its stamp when it asked.
        stamp: u32,
        /// A gap notice to send first, if events may be missing.
        gap: Option<Gap>,
        /// The events, in id order.
        events: Vec<Arc<Event>>,
    },
    /// End every stream opened with a token of this subject (a logout).
    Revoke(Arc<Revocation>),
    /// Every worker has ended its streams of a [`Revocation`].
    Revoked {
        /// The connection that asked.
        key: u32,
        /// Its stamp when it asked.
        stamp: u32,
        /// Streams ended, over all workers.
        closed: usize,
    },
}

/// A `POST /disconnect` on its way through every worker: each ends its own
/// streams of `subject` and reports; the last one to report answers the
/// connection that asked.
#[derive(Debug)]
pub struct Revocation {
    /// The token subject (`sub`) whose streams end.
    pub subject: Box<str>,
    /// Who asked; `None` for a revocation from another node (through the
    /// cluster stream), which nobody here waits for.
    pub origin: Option<Origin>,
    /// Streams ended so far.
    closed: AtomicUsize,
    /// Workers yet to report.
    remaining: AtomicUsize,
}

impl Revocation {
    /// A revocation to be handled by `workers` workers.
    pub fn new(subject: Box<str>, origin: Option<Origin>, workers: usize) -> Self {
        Revocation { subject, origin, closed: AtomicUsize::new(0), remaining: AtomicUsize::new(workers) }
    }

    /// One worker ended `closed` streams; the total once every worker has reported.
    pub fn report(&self, closed: usize) -> Option<usize> {
        let total = self.closed.fetch_add(closed, Ordering::AcqRel) + closed;
        (self.remaining.fetch_sub(1, Ordering::AcqRel) == 1).then(|| self.closed.load(Ordering::Acquire).max(total))
    }
}

/// What [`Backplane::revoke`] did with a revocation.
#[derive(Debug)]
pub enum Revoking {
    /// Nothing to carry: hand it to every worker now.
    Local,
    /// Announced once the log has it; every worker then gets a
    /// [`Reply::Revoke`], or the origin a failed [`Reply::Published`].
    Pending,
    /// Refused now (503): no node was told.
    Failed(PublishFailure),
}

/// What orders a node's events: see the module documentation.
pub trait Backplane: Send + Sync {
    /// Publishes every publication, in order, all or nothing. With an
    /// idempotency key, publishes nothing if the key already published
    /// within its window (answering with those ids), and claims the key
    /// together with the publish, atomically. Called from the origin's
    /// worker loop, which then calls [`crate::bus::Bus::pay_wakes`].
    fn publish(&self, origin: Origin, publications: Vec<Publication>, key: Option<IdempotencyKey>) -> Submitted;

    /// Where a subscriber resuming after `after` catches up from. `missed`
    /// says why, if this node's history dropped events newer than `after`.
    fn catchup(&self, after: Option<EventId>, missed: Option<Gap>) -> Catchup;

    /// Serves a [`Catchup::Log`] resume; the answer comes as a [`Reply::Replayed`].
    /// Returns false if the request could not even be queued.
    fn replay(&self, origin: Origin, request: ReplayRequest) -> bool;

    /// The newest id a [`Catchup::Log`] replay must reach: everything after
    /// it arrives live.
    fn replay_upto(&self, last_accepted: EventId) -> EventId {
        last_accepted
    }

    /// Where a stream opening now with nothing to replay stands, given the
    /// bus's routing point: every event after this id reaches it live, so a
    /// client may resume from it before its first event. `None` when no id
    /// says so yet (nothing followed).
    fn position(&self, live_after: EventId) -> Option<EventId> {
        Some(self.replay_upto(live_after)).filter(|&id| id != EventId::ZERO)
    }

    /// Why the backplane cannot order events right now (publishes then get
    /// 503, `/readyz` says not ready); `None` while it can.
    fn down_reason(&self) -> Option<&'static str> {
        None
    }

    /// Carries a revocation (`POST /disconnect`) to every node. Standalone
    /// there is no other node: the workers handle it at once
    /// ([`Revoking::Local`]). In cluster mode it is announced on the shared
    /// log first, and the workers get it once that has succeeded.
    fn revoke(&self, revocation: Arc<Revocation>) -> Revoking {
        let _ = revocation;
        Revoking::Local
    }

    /// Its own figures for `/metrics`.
    fn metrics(&self) -> Vec<Metric> {
        Vec::new()
    }
}

/// One sample for `/metrics`, named without the `ssehub_` prefix.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Metric {
    /// The name after `ssehub_`.
    pub name: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// The value.
    pub value: u64,
}
