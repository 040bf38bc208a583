//! The publish pipeline: every publish of every worker goes to Redis as soon
//! as it arrives, on one connection, without waiting for the answers to
//! earlier ones. One thread does all of it: it packs whatever publishes are
//! queued into one write, takes the replies, which Redis sends in command
//! order, and answers each publish through its worker's inbox. It sleeps in
//! one `epoll` wait on the connection and a [`Doorbell`] that a worker rings
//! only when the thread sleeps, so a wake-up serves every reply and every
//! publish that came meanwhile (one thread instead of a writer and a reader:
//! fewer wake-ups per publish, which is what a publish costs on loopback).
//! Throughput is then bounded by Redis, not by round trips: with
//! 16 publishers 5 ms away, 16 publishes share each round trip.
//!
//! **All or nothing, per request.** A one-event publish without a key is one
//! `XADD`. Anything more (a batch, an `Idempotency-Key`) is one `EVAL` of
//! [`SCRIPT`], which Redis runs atomically: it looks the key up, appends
//! every event and records the key with its ids, or, if the key is already
//! recorded, appends nothing and returns the record. A retry on any node is
//! deduplicated by the same script. (Within a script a failed `XADD` would
//! not undo earlier ones, but the only way one fails, a key of another type
//! or no memory, fails the first one: then nothing is appended.)
//!
//! **Order.** A connection has one publish in flight at a time (the worker
//! reads its next request only after answering), and this pipeline keeps
//! arrival order, so each publisher's requests reach Redis in its order.
//!
//! **What an answer means.**
//! - A publish never written to the socket (Redis known to be down, no
//!   connection) is refused with `503`: it will never be applied.
//! - A publish written to the socket whose reply does not come within
//!   [`COMMAND_TIMEOUT`] (a frozen Redis, a black-holed path), or whose
//!   connection breaks first, may still be applied when the bytes get
//!   there: it is answered `504`, outcome unknown, and the connection is
//!   dropped. Right after such a failure new publishes are refused with
//!   `503` until the follower has seen Redis come back (or
//!   [`RETRY_AFTER_FAILURE`] passed with the follower still up).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, fence};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Registry, Token, Waker};

use ssehub_core::EventId;
use ssehub_core::backplane::{IdempotencyKey, Origin, PublishFailure, Published, Reply};
use ssehub_core::bus::Bus;
use ssehub_protocol::publish::Publication;
use ssehub_protocol::resp::{self, Resp};

use super::{COMMAND_TIMEOUT, Status, entry};
use crate::settings::ClusterSettings;

/// Publishes packed into one write at most.
const MAX_BATCH: usize = 1024;
/// How often an idle pipeline looks whether the workers are gone.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// After a publish timed out or its connection broke, how long to refuse
/// new ones (unless the follower saw Redis come back) before trying again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Claims an idempotency key and appends a request's events, atomically.
/// KEYS: the stream, then the idempotency key (optional). ARGV: MAXLEN, the
/// key's lifetime in ms, the record prefix (the request's fingerprint), the
/// number of events, then for each its number of fields and the fields.
/// Returns `{"new", id...}`, or `{"dup", "<fingerprint> <id> ..."}` when the
/// key already published.
pub const SCRIPT: &str = r"
if KEYS[2] then
  local record = redis.call('GET', KEYS[2])
  if record then return {'dup', record} end
end
local ids = {'new'}
local at = 5
for _ = 1, tonumber(ARGV[4]) do
  local n = tonumber(ARGV[at])
  local xadd = {'XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*'}
  for i = at + 1, at + 2 * n do xadd[#xadd + 1] = ARGV[i] end
  at = at + 2 * n + 1
  ids[#ids + 1] = redis.call(unpack(xadd))
end
if KEYS[2] then
  redis.call('SET', KEYS[2], ARGV[3] .. ' ' .. table.concat(ids, ' ', 2), 'PX', ARGV[2])
end
return ids
";

/// A publish on its way to Redis.
#[derive(Debug)]
pub struct Job {
    /// Who to answer.
    pub origin: Origin,
    /// What to append, in order.
    pub publications: Vec<Publication>,
    /// Deduplicate under this key.
    pub key: Option<IdempotencyKey>,
}

/// What the reply to a sent publish looks like.
#[derive(Debug)]
enum Expect {
    /// An `XADD`: the id.
    Id,
    /// The script: new ids, or the record of an earlier publish with this fingerprint.
    Script([u8; 16]),
}

/// A publish written to a connection, waiting for its reply.
#[derive(Debug)]
struct Sent {
    /// Who to answer.
    origin: Origin,
    /// How to read the reply.
    expect: Expect,
    /// When to give up on the reply (504).
    deadline: Instant,
}

/// Wakes the pipeline thread when a publish is queued while it sleeps.
pub struct Doorbell {
    /// The thread is (about to be) blocked in its poll.
    sleeping: AtomicBool,
    /// Wakes the poll.
    waker: Waker,
}

impl Doorbell {
    /// Called after queueing a publish: wakes the thread if it sleeps.
    pub fn ring(&self) {
        // Pairs with the fence in `run`: either the thread sees the job, or we see it asleep.
        fence(SeqCst);
        if self.sleeping.swap(false, SeqCst)
            && let Err(error) = self.waker.wake()
        {
            log::error!("cannot wake the publish pipeline: {error}");
        }
    }
}

/// The pipeline thread's poll and the doorbell that wakes it.
pub fn doorbell() -> io::Result<(Arc<Doorbell>, Poll)> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), DOORBELL)?;
    Ok((Arc::new(Doorbell { sleeping: AtomicBool::new(false), waker }), poll))
}

/// The doorbell's token in the pipeline's poll.
const DOORBELL: Token = Token(0);
/// The connection's token.
const REDIS: Token = Token(1);

/// The connection to Redis and what is in flight on it.
struct Conn {
    /// Non-blocking, registered for reading (and for writing while `out` is not empty).
    sock: mio::net::TcpStream,
    /// Sent (or packed into `out`), not yet answered, oldest first.
    sent: VecDeque<Sent>,
    /// Commands packed and not yet written, in the order of `sent`.
    out: Vec<u8>,
    /// Bytes read, the first unparsed reply at the start.
    replies: Vec<u8>,
    /// Registered for writable events (only while the socket was full).
    writing: bool,
    /// The follower's reconnect count when it was made: Redis came back since if it changed.
    generation: u64,
}

impl Conn {
    /// Writes what is packed, reads what has come, answers each publish
    /// whose reply is complete, and checks the oldest one's deadline. An
    /// error ends the connection: the caller answers the rest `504`.
    fn pump(&mut self, registry: &Registry, status: &Status, bus: &Bus) -> Result<(), &'static str> {
        const FAILED: &str = "outcome unknown: the Redis connection failed; retry with the same Idempotency-Key";
        while !self.out.is_empty() {
            match self.sock.write(&self.out) {
                Ok(0) => return Err(FAILED),
                Ok(n) if n == self.out.len() => self.out.clear(),
                Ok(n) => drop(self.out.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    log::warn!("redis publish connection: write failed: {error}");
                    return Err(FAILED);
                }
            }
        }
        // Writable events only while needed: on loopback every ACK would be one.
        let want_writable = !self.out.is_empty();
        if want_writable != self.writing {
            let interest = if want_writable { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            registry.reregister(&mut self.sock, REDIS, interest).map_err(|_| FAILED)?;
            self.writing = want_writable;
        }
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.sock.read(&mut chunk) {
                Ok(0) => {
                    return Err("outcome unknown: Redis closed the connection; retry with the same Idempotency-Key");
                }
                Ok(n) => self.replies.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(FAILED),
            }
        }
        let mut used = 0;
        let parsed = loop {
            match resp::parse(&self.replies[used..]) {
                Ok(Some((reply, len))) => {
                    used += len;
                    let Some(sent) = self.sent.pop_front() else {
                        log::warn!("redis publish connection: a reply nobody asked for");
                        break Err(
                            "outcome unknown: the Redis connection is out of step; retry with the same Idempotency-Key",
                        );
                    };
                    status.in_flight.fetch_sub(1, Relaxed);
                    answer(bus, sent.origin, outcome(&sent.expect, &reply, status));
                }
                Ok(None) => break Ok(()),
                Err(resp::Malformed) => {
                    break Err("outcome unknown: Redis sent a malformed reply; retry with the same Idempotency-Key");
                }
            }
        };
        self.replies.drain(..used);
        parsed?;
        if self.sent.front().is_some_and(|s| Instant::now() >= s.deadline) {
            return Err("outcome unknown: Redis did not answer in time; retry with the same Idempotency-Key");
        }
        Ok(())
    }

    /// Ends the connection: everything in flight is answered `504`.
    fn fail(self, why: &'static str, status: &Status, bus: &Bus) {
        if !self.sent.is_empty() {
            log::warn!("redis publish connection: {} publishes left in doubt ({why})", self.sent.len());
        }
        status.in_flight.fetch_sub(self.sent.len() as u64, Relaxed);
        for sent in self.sent {
            answer(bus, sent.origin, Err(PublishFailure::Unknown(why)));
        }
    }
}

/// The pipeline thread's state between wake-ups.
struct Pipeline<'a> {
    /// Where to send and what.
    settings: &'a ClusterSettings,
    /// The link's state.
    status: &'a Arc<Status>,
    /// Where answers go.
    bus: &'a Arc<Bus>,
    /// The connection, while it works.
    conn: Option<Conn>,
    /// The last failure and the follower's reconnect count then.
    failed: Option<(Instant, u64)>,
    /// The idempotency window in ms (for the script).
    window_ms: u64,
}

impl Pipeline<'_> {
    /// Packs a batch onto the connection (made if needed), or refuses it with `503`.
    fn send(&mut self, registry: &Registry, batch: Vec<Job>) {
        let generation = self.status.reconnects.load(Relaxed);
        // Idle and older than Redis's return (it may be dead without a word yet): a new one.
        if self.conn.as_ref().is_some_and(|c| c.generation != generation && c.sent.is_empty()) {
            self.conn = None;
        }
        if !self.status.is_up() {
            return refuse(self.bus, batch, "the cluster backplane (Redis) is unreachable");
        }
        if self.conn.is_none() {
            if self.failed.is_some_and(|(at, then)| at.elapsed() < RETRY_AFTER_FAILURE && then == generation) {
                return refuse(self.bus, batch, "the cluster backplane (Redis) is not answering");
            }
            match connect(self.settings, registry, generation) {
                Ok(conn) => {
                    self.failed = None;
                    self.conn = Some(conn);
                }
                Err(error) => {
                    log::debug!("redis publish connection: {error}");
                    self.failed = Some((Instant::now(), generation));
                    return refuse(self.bus, batch, "the cluster backplane (Redis) is unreachable");
                }
            }
        }
        let Some(conn) = self.conn.as_mut() else { return };
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        self.status.in_flight.fetch_add(batch.len() as u64, Relaxed);
        for job in &batch {
            let expect = pack(&mut conn.out, self.settings, self.window_ms, job);
            conn.sent.push_back(Sent { origin: job.origin, expect, deadline });
        }
    }

    /// Writes, reads and answers on the connection; on failure drops it.
    fn pump(&mut self, registry: &Registry) {
        let Some(conn) = self.conn.as_mut() else { return };
        if let Err(why) = conn.pump(registry, self.status, self.bus) {
            if let Some(conn) = self.conn.take() {
                conn.fail(why, self.status, self.bus);
            }
            self.failed = Some((Instant::now(), self.status.reconnects.load(Relaxed)));
        }
    }
}

/// The pipeline thread: runs until every worker (every sender) is gone.
pub fn run(
    settings: &ClusterSettings,
    status: &Arc<Status>,
    bus: &Arc<Bus>,
    jobs: Receiver<Job>,
    parts: (Arc<Doorbell>, Poll),
) {
    let (doorbell, mut poll) = parts;
    let window_ms = settings.idempotency_window.as_millis().max(1) as u64;
    let mut pipeline = Pipeline { settings, status, bus, conn: None, failed: None, window_ms };
    let mut events = Events::with_capacity(4);
    let mut batch = Vec::new();
    loop {
        let mut gone = false;
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    gone = true;
                    break;
                }
            }
        }
        let more = batch.len() == MAX_BATCH;
        if !batch.is_empty() {
            pipeline.send(poll.registry(), std::mem::take(&mut batch));
        }
        pipeline.pump(poll.registry());
        if gone {
            if let Some(conn) = pipeline.conn.take() {
                conn.fail("outcome unknown: the node is stopping; retry with the same Idempotency-Key", status, bus);
            }
            return;
        }
        if more {
            continue;
        }
        // Sleep until a reply, a publish, or the oldest one's deadline.
        doorbell.sleeping.store(true, SeqCst);
        fence(SeqCst);
        match jobs.try_recv() {
            Ok(job) => {
                doorbell.sleeping.store(false, Relaxed);
                batch.push(job);
                continue;
            }
            Err(TryRecvError::Disconnected) => {
                doorbell.sleeping.store(false, Relaxed);
                continue;
            }
            Err(TryRecvError::Empty) => {}
        }
        // Idle, it still wakes now and then to notice the workers are gone.
        let now = Instant::now();
        let deadline = pipeline.conn.as_ref().and_then(|c| c.sent.front()).map(|s| s.deadline);
        let wait = deadline.map_or(IDLE_POLL, |d| d.saturating_duration_since(now).min(IDLE_POLL));
        if let Err(error) = poll.poll(&mut events, Some(wait.max(Duration::from_millis(1))))
            && error.kind() != io::ErrorKind::Interrupted
        {
            log::warn!("publish pipeline poll: {error}");
        }
        doorbell.sleeping.store(false, Relaxed);
    }
}

/// Answers publishes that were never sent: `503`, they will never be applied.
fn refuse(bus: &Bus, jobs: Vec<Job>, why: &'static str) {
    for job in jobs {
        answer(bus, job.origin, Err(PublishFailure::Unavailable(why)));
    }
}

fn answer(bus: &Bus, origin: Origin, outcome: Result<Published, PublishFailure>) {
    bus.reply(origin.worker, Reply::Published { key: origin.key, stamp: origin.stamp, outcome });
}

/// Appends one publish's command to `buf`; returns how to read its reply.
fn pack(buf: &mut Vec<u8>, settings: &ClusterSettings, window_ms: u64, job: &Job) -> Expect {
    let stream = settings.stream.as_str();
    if job.key.is_none() && job.publications.len() == 1 {
        let command = &mut redis::cmd("XADD");
        command.arg(stream).arg("MAXLEN").arg("~").arg(settings.maxlen).arg("*");
        for (name, value) in entry::fields(&job.publications[0]) {
            command.arg(name).arg(value);
        }
        command.write_packed_command(buf);
        return Expect::Id;
    }
    let fingerprint = job.key.as_ref().map_or([0; 16], |k| k.fingerprint);
    let command = &mut redis::cmd("EVAL");
    command.arg(SCRIPT);
    match &job.key {
        Some(key) => command.arg(2).arg(stream).arg(idempotency_key(stream, &key.key)),
        None => command.arg(1).arg(stream),
    };
    command.arg(settings.maxlen).arg(window_ms).arg(hex(&fingerprint)).arg(job.publications.len());
    for publication in &job.publications {
        let fields = entry::fields(publication);
        command.arg(fields.len());
        for (name, value) in fields {
            command.arg(name).arg(value);
        }
    }
    command.write_packed_command(buf);
    Expect::Script(fingerprint)
}

/// The Redis key an idempotency key is recorded under.
pub fn idempotency_key(stream: &str, key: &str) -> String {
    format!("{stream}:idempotency:{key}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens a connection (with `AUTH` and `SELECT` from the URL, blocking with
/// the command timeout) and registers it with the pipeline's poll.
fn connect(settings: &ClusterSettings, registry: &Registry, generation: u64) -> io::Result<Conn> {
    let (sock, replies) = super::open(&settings.url, COMMAND_TIMEOUT)?;
    sock.set_nonblocking(true)?;
    let mut sock = mio::net::TcpStream::from_std(sock);
    registry.register(&mut sock, REDIS, Interest::READABLE)?;
    Ok(Conn { sock, sent: VecDeque::new(), out: Vec::new(), replies, writing: false, generation })
}

/// What a reply says about its publish.
fn outcome(expect: &Expect, reply: &Resp, status: &Status) -> Result<Published, PublishFailure> {
    let unknown = PublishFailure::Unknown("outcome unknown: Redis answered something unexpected");
    if let Resp::Error(error) = reply {
        // Refused before appending anything (see the module documentation).
        log::warn!("redis refused a publish: {error}");
        return Err(PublishFailure::Unavailable("the cluster backplane (Redis) refused the publish"));
    }
    let id = |reply: &Resp| resp::text(reply).and_then(|t| EventId::parse(t.as_bytes()));
    match expect {
        Expect::Id => id(reply).map(|id| Published::new(vec![id])).ok_or(unknown),
        Expect::Script(fingerprint) => {
            let Resp::Array(Some(items)) = reply else { return Err(unknown) };
            match items.split_first() {
                Some((tag, ids)) if resp::text(tag) == Some("new") => {
                    ids.iter().map(id).collect::<Option<Vec<_>>>().map(Published::new).ok_or(unknown)
                }
                Some((tag, [record])) if resp::text(tag) == Some("dup") => {
                    let mut words = resp::text(record).ok_or(unknown)?.split(' ');
                    if words.next() != Some(hex(fingerprint).as_str()) {
                        return Err(PublishFailure::Conflict);
                    }
                    let ids = words.map(|w| EventId::parse(w.as_bytes())).collect::<Option<Vec<_>>>().ok_or(unknown)?;
                    status.replays.fetch_add(1, Relaxed);
                    Ok(Published { ids, replayed: true })
                }
                _ => Err(unknown),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Resp {
        Resp::Bulk(Some(text.as_bytes().to_vec()))
    }

    #[test]
    fn replies_become_outcomes() {
        let status = Status::default();
        let fp = [7u8; 16];
        let new = Resp::Array(Some(vec![bulk("new"), bulk("5-0"), bulk("5-1")]));
        let ids = vec![EventId { ms: 5, seq: 0 }, EventId { ms: 5, seq: 1 }];
        assert_eq!(outcome(&Expect::Script(fp), &new, &status), Ok(Published::new(ids.clone())));
        let dup = Resp::Array(Some(vec![bulk("dup"), bulk(&format!("{} 5-0 5-1", hex(&fp)))]));
        assert_eq!(outcome(&Expect::Script(fp), &dup, &status), Ok(Published { ids, replayed: true }));
        assert_eq!(outcome(&Expect::Script([8; 16]), &dup, &status), Err(PublishFailure::Conflict));
        assert_eq!(status.replays.load(Relaxed), 1);
        assert_eq!(outcome(&Expect::Id, &bulk("9-3"), &status), Ok(Published::new(vec![EventId { ms: 9, seq: 3 }])));
        assert!(matches!(outcome(&Expect::Id, &Resp::Bulk(None), &status), Err(PublishFailure::Unknown(_))));
        let refused = Resp::Error("WRONGTYPE Operation against a key holding the wrong kind of value".into());
        assert!(matches!(outcome(&Expect::Id, &refused, &status), Err(PublishFailure::Unavailable(_))));
    }
}
