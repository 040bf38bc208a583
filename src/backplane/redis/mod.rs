//! Cluster mode (`--redis`): many nodes behave as one hub by following one
//! Redis stream, the sequencer and shared history of every event.
//!
//! Three threads per node talk to Redis; a worker never does:
//!
//! - the **follower** ([`follower`]) reads the stream with a blocking `XREAD`
//!   from the last id it handed over, checks each entry as an HTTP publish
//!   would be checked, encodes it once with its stream id and gives it to
//!   every worker through the bus. Workers cannot tell a local publish from a
//!   remote one. After a Redis outage it continues from that id, so nothing
//!   published meanwhile is lost; if the stream was reset it sends every
//!   subscriber an `ssehub-gap` first, and records where the old stream
//!   ended (in Redis too), so a resume from an id of the old stream gets a
//!   `stream-reset` gap on every node.
//! - the **publish pipeline** ([`publisher`]), one thread, sends every
//!   worker's publishes as they come, on one connection, many in flight,
//!   and answers each when its reply arrives (`XADD`, or one script claiming an `Idempotency-Key`
//!   with the appends); `503` only for what was never sent, `504` for what
//!   was sent and not answered in time.
//! - the **command thread** ([`commands`]) runs range reads for clients
//!   resuming from ids older than this node's memory.
//!
//! Answers go back through the worker's inbox as neutral [`Reply`] values.
//!
//! Workers see all of it through [`Cluster`], an implementation of the core's
//! [`Backplane`] seam; nothing here knows a worker's types.

pub mod commands;
pub mod entry;
pub mod follower;
pub mod publisher;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use ssehub_core::EventId;
use ssehub_core::backplane::{
    Backplane, Catchup, IdempotencyKey, Metric, Origin, PublishFailure, ReplayRequest, Revocation, Revoking, Submitted,
};
use ssehub_core::bus::{Bus, unix_ms};
use ssehub_core::history::Gap;
use ssehub_protocol::publish::Publication;
use ssehub_protocol::resp;

use crate::backplane::{counter, gauge, idempotent_replays};
use crate::settings::ClusterSettings;

/// How long connecting to Redis may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one Redis command may take before the node calls Redis unreachable.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a worker asks the command thread.
#[derive(Debug)]
pub enum Command {
    /// Announce a `POST /disconnect` on the stream, then hand it to this
    /// node's workers (every node's follower carries it out as well).
    Revoke(Arc<Revocation>),
    /// Read what a resuming client missed from the stream.
    Replay {
        /// Who to answer.
        origin: Origin,
        /// What to read.
        request: ReplayRequest,
    },
}

/// What every part of a node can see of its link to Redis.
#[derive(Debug, Default)]
pub struct Status {
    /// The follower is connected and reading.
    up: AtomicBool,
    /// Successful reconnections after a failure.
    pub reconnects: AtomicU64,
    /// Stream entries read.
    pub entries_read: AtomicU64,
    /// Entries skipped because an HTTP publish would have been refused.
    pub invalid_entries: AtomicU64,
    /// Entries behind the stream head, as last measured.
    pub lag: AtomicU64,
    /// This node has every event after this id.
    floor: Mutex<EventId>,
    /// Revocations this node announced and its follower has yet to read
    /// back, by nonce: the follower hands each to the workers with its
    /// origin, so the asker is answered with this node's count exactly once.
    pub revocations: Mutex<HashMap<String, Arc<Revocation>>>,
    /// The newest id of a stream that was reset (this node's or another's,
    /// as recorded in Redis): resuming from it or older is a `stream-reset` gap.
    reset_boundary: Mutex<EventId>,
    /// Publishes sent to Redis and not yet answered.
    pub in_flight: AtomicU64,
    /// Keyed publishes answered with an earlier publish's ids.
    pub replays: AtomicU64,
}

impl Status {
    /// True while the follower is connected and reading.
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

    /// Ids up to this one belong to a stream that was reset (`ZERO`: none known).
    pub fn reset_boundary(&self) -> EventId {
        *self.reset_boundary.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Raises the reset boundary to `id` (it never goes down).
    pub fn raise_reset_boundary(&self, id: EventId) {
        let mut boundary = self.reset_boundary.lock().unwrap_or_else(|p| p.into_inner());
        *boundary = (*boundary).max(id);
    }
}

/// The Redis key holding the newest id of a reset stream (see [`Status::reset_boundary`]).
pub fn reset_boundary_key(stream: &str) -> String {
    format!("{stream}:reset-boundary")
}

/// Cluster mode as the workers' backplane.
pub struct Cluster {
    /// To the publish pipeline.
    publishes: Sender<publisher::Job>,
    /// Wakes the publish pipeline after a send, if it sleeps.
    doorbell: Arc<publisher::Doorbell>,
    /// To the command thread.
    commands: Sender<Command>,
    /// The link's state, shared with the threads.
    status: Arc<Status>,
}

/// What [`Cluster::new`] hands to [`Cluster::start`].
pub struct Threads {
    /// The publish pipeline's queue.
    publishes: Receiver<publisher::Job>,
    /// The publish pipeline's poll (and its doorbell).
    pipeline: (Arc<publisher::Doorbell>, mio::Poll),
    /// The command thread's queue.
    commands: Receiver<Command>,
    /// The link's state.
    status: Arc<Status>,
    /// Where to connect and what to follow.
    settings: ClusterSettings,
}

impl Cluster {
    /// Checks the URL; the threads start with [`Cluster::start`].
    pub fn new(settings: ClusterSettings) -> io::Result<(Cluster, Threads)> {
        redis::Client::open(settings.url.as_str())
            .map_err(|e| io::Error::other(format!("--redis {:?}: {e}", settings.url)))?;
        let (commands, receiver) = mpsc::channel();
        let (publishes, publish_queue) = mpsc::channel();
        let status = Arc::new(Status::default());
        log::info!("cluster mode: following stream {:?}", settings.stream);
        let (doorbell, poll) = publisher::doorbell()?;
        let pipeline = (Arc::clone(&doorbell), poll);
        let cluster = Cluster { publishes, doorbell, commands, status: Arc::clone(&status) };
        Ok((cluster, Threads { publishes: publish_queue, pipeline, commands: receiver, status, settings }))
    }

    /// Starts the follower, the publish pipeline and the command thread.
    pub fn start(threads: Threads, bus: Arc<Bus>, shutdown: Arc<AtomicBool>) -> io::Result<()> {
        let Threads { publishes, pipeline, commands, status, settings } = threads;
        {
            let (settings, status, bus) = (settings.clone(), Arc::clone(&status), Arc::clone(&bus));
            thread::Builder::new()
                .name("ssehub-follower".into())
                .spawn(move || follower::run(&settings, &status, &bus, &shutdown))?;
        }
        {
            let (settings, status, bus) = (settings.clone(), Arc::clone(&status), Arc::clone(&bus));
            thread::Builder::new()
                .name("ssehub-publish".into())
                .spawn(move || publisher::run(&settings, &status, &bus, publishes, pipeline))?;
        }
        thread::Builder::new()
            .name("ssehub-redis".into())
            .spawn(move || commands::run(&settings, &status, &bus, commands))?;
        Ok(())
    }
}

impl Backplane for Cluster {
    fn publish(&self, origin: Origin, publications: Vec<Publication>, key: Option<IdempotencyKey>) -> Submitted {
        // The stream assigns the ids; the answer comes once Redis has them.
        if !self.status.is_up() {
            return Submitted::Failed(PublishFailure::Unavailable("the cluster backplane (Redis) is unreachable"));
        }
        match self.publishes.send(publisher::Job { origin, publications, key }) {
            Ok(()) => {
                self.doorbell.ring();
                Submitted::Pending
            }
            Err(_) => Submitted::Failed(PublishFailure::Unavailable("the cluster backplane is stopping")),
        }
    }

    fn catchup(&self, after: Option<EventId>, missed: Option<Gap>) -> Catchup {
        // An id older than what this node has followed is read from the
        // stream, so a client resumes on any node without a false gap. An
        // id of a stream that was reset is a gap, whatever memory holds.
        let boundary = self.status.reset_boundary();
        match after {
            None => Catchup::Memory(Some(Gap::Unparseable)),
            Some(id) if id < self.status.floor() || missed.is_some() => Catchup::Log,
            Some(id) if boundary != EventId::ZERO && id <= boundary => Catchup::Memory(Some(Gap::Reset)),
            Some(_) => Catchup::Memory(None),
        }
    }

    fn revoke(&self, revocation: Arc<Revocation>) -> Revoking {
        if !self.status.is_up() {
            return Revoking::Failed(PublishFailure::Unavailable("the cluster backplane (Redis) is unreachable"));
        }
        match self.commands.send(Command::Revoke(revocation)) {
            Ok(()) => Revoking::Pending,
            Err(_) => Revoking::Failed(PublishFailure::Unavailable("the cluster backplane is stopping")),
        }
    }

    fn replay(&self, origin: Origin, request: ReplayRequest) -> bool {
        self.commands.send(Command::Replay { origin, request }).is_ok()
    }

    fn replay_upto(&self, last_accepted: EventId) -> EventId {
        last_accepted.max(self.status.floor())
    }

    fn down_reason(&self) -> Option<&'static str> {
        (!self.status.is_up()).then_some("redis unreachable")
    }

    fn metrics(&self) -> Vec<Metric> {
        let status = &self.status;
        let load = |counter: &AtomicU64| counter.load(Relaxed);
        vec![
            gauge(
                "backplane_publishes_in_flight",
                "Publishes sent to Redis and not yet answered.",
                load(&status.in_flight),
            ),
            idempotent_replays(load(&status.replays)),
            gauge("backplane_up", "1 while the Redis stream is being followed.", u64::from(status.is_up())),
            counter("backplane_reconnects_total", "Reconnections to Redis after a failure.", load(&status.reconnects)),
            gauge("backplane_lag_entries", "Stream entries not yet read, as last measured.", load(&status.lag)),
            counter("backplane_entries_read_total", "Stream entries read.", load(&status.entries_read)),
            counter(
                "backplane_invalid_entries_total",
                "Stream entries skipped because an HTTP publish would have been refused.",
                load(&status.invalid_entries),
            ),
        ]
    }
}

/// Exponential backoff with jitter, capped at [`MAX_BACKOFF`].
pub(crate) struct Backoff {
    /// The current step.
    next: Duration,
    /// Jitter state.
    seed: u64,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff { next: Duration::from_millis(100), seed: unix_ms() | 1 }
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

/// Opens a plain connection for this module's own RESP code: TCP with
/// `TCP_NODELAY`, the given read timeout and the command timeout for writes,
/// then `AUTH` and `SELECT` as the URL asks. Returns the socket (blocking)
/// and any bytes read past the handshake's replies.
pub(crate) fn open(url: &str, read_timeout: Duration) -> io::Result<(TcpStream, Vec<u8>)> {
    let client = redis::Client::open(url).map_err(io::Error::other)?;
    let info = client.get_connection_info();
    let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
        return Err(io::Error::other("only redis:// (TCP) URLs are supported"));
    };
    let addr = (host.as_str(), *port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("the Redis host does not resolve"))?;
    let sock = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    sock.set_nodelay(true)?;
    sock.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    sock.set_read_timeout(Some(read_timeout))?;
    let redis = info.redis_settings();
    let mut handshake = Vec::new();
    if let Some(password) = redis.password() {
        let command = &mut redis::cmd("AUTH");
        if let Some(user) = redis.username() {
            command.arg(user);
        }
        handshake.push(command.arg(password).get_packed_command());
    }
    if redis.db() != 0 {
        handshake.push(redis::cmd("SELECT").arg(redis.db()).get_packed_command());
    }
    let mut buf = Vec::new();
    for command in handshake {
        (&sock).write_all(&command)?;
        let used = read_reply(&sock, &mut buf)?;
        let reply = resp::parse(&buf[..used]).ok().flatten().map(|(reply, _)| reply);
        buf.drain(..used);
        if let Some(resp::Resp::Error(error)) = reply {
            // The text of an AUTH refusal names no secret ("WRONGPASS invalid username-password pair").
            return Err(io::Error::other(format!("redis refused the connection setup: {error}")));
        }
    }
    Ok((sock, buf))
}

/// Reads on a blocking socket (as long as its read timeout allows each
/// read) until `buf` starts with a whole reply; returns its length.
pub(crate) fn read_reply(mut sock: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        match resp::parse_ref(buf) {
            Ok(Some((_, used))) => return Ok(used),
            Ok(None) => {}
            Err(malformed) => return Err(io::Error::new(io::ErrorKind::InvalidData, malformed)),
        }
        let mut chunk = [0u8; 16 * 1024];
        match sock.read(&mut chunk)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
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
