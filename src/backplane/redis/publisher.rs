//! The publish pipeline: every publish of every worker goes to Redis as soon
//! as it arrives, on one connection, without waiting for the answers to
//! earlier ones. A writer thread packs whatever publishes are queued into
//! one write; a reader thread per connection takes the replies, which Redis
//! sends in command order, and answers each publish through its worker's
//! inbox. Throughput is then bounded by Redis, not by round trips: with
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
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use ssehub_core::EventId;
use ssehub_core::backplane::{IdempotencyKey, Origin, PublishFailure, Published, Reply};
use ssehub_core::bus::Bus;
use ssehub_protocol::publish::Publication;

use super::resp::{self, Resp};
use super::{COMMAND_TIMEOUT, CONNECT_TIMEOUT, Status, entry};
use crate::settings::ClusterSettings;

/// Publishes packed into one write at most.
const MAX_BATCH: usize = 1024;
/// How often an idle reader looks for the connection's end.
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

/// The publishes in flight on one connection, in the order sent.
#[derive(Debug, Default)]
struct Line {
    /// The list and whether the connection is done for.
    state: Mutex<LineState>,
}

#[derive(Debug, Default)]
struct LineState {
    /// Sent, not yet answered, oldest first.
    sent: VecDeque<Sent>,
    /// The reader gave up on the connection: nothing more may be sent on it.
    broken: bool,
    /// When it gave up, and the follower's reconnect count then.
    broke_at: Option<(Instant, u64)>,
}

impl Line {
    fn lock(&self) -> MutexGuard<'_, LineState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer's connection.
struct Link {
    /// The socket (the reader thread has a clone).
    sock: TcpStream,
    /// What is in flight on it.
    line: Arc<Line>,
    /// The follower's reconnect count when it was made: Redis came back since if it changed.
    generation: u64,
}

impl Drop for Link {
    fn drop(&mut self) {
        // Wakes the reader, which answers what is left (504) and exits.
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

/// The writer: runs until every worker (every sender) is gone.
pub fn run(settings: &ClusterSettings, status: &Arc<Status>, bus: &Arc<Bus>, jobs: Receiver<Job>) {
    let mut link: Option<Link> = None;
    // The last failure and the follower's reconnect count then.
    let mut failed: Option<(Instant, u64)> = None;
    let mut buf = Vec::new();
    let window_ms = settings.idempotency_window.as_millis().max(1) as u64;
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let generation = status.reconnects.load(Relaxed);
        if let Some(l) = &link {
            let line = l.line.lock();
            if line.broken {
                failed = line.broke_at;
            }
            // Broken, or idle and older than Redis's return (it may be dead
            // without a word yet): a new one.
            let stale = line.broken || (l.generation != generation && line.sent.is_empty());
            drop(line);
            if stale {
                link = None;
            }
        }
        if !status.is_up() {
            refuse(bus, batch, "the cluster backplane (Redis) is unreachable");
            continue;
        }
        if link.is_none() {
            if failed.is_some_and(|(at, then)| at.elapsed() < RETRY_AFTER_FAILURE && then == generation) {
                refuse(bus, batch, "the cluster backplane (Redis) is not answering");
                continue;
            }
            match connect(settings, status, bus, generation) {
                Ok(l) => {
                    failed = None;
                    link = Some(l);
                }
                Err(error) => {
                    log::debug!("redis publish connection: {error}");
                    failed = Some((Instant::now(), generation));
                    refuse(bus, batch, "the cluster backplane (Redis) is unreachable");
                    continue;
                }
            }
        }
        let Some(l) = &link else { continue };
        buf.clear();
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let mut sent = Vec::with_capacity(batch.len());
        for job in &batch {
            let expect = pack(&mut buf, settings, window_ms, job);
            sent.push(Sent { origin: job.origin, expect, deadline });
        }
        {
            let mut line = l.line.lock();
            if line.broken {
                failed = line.broke_at;
                drop(line);
                refuse(bus, batch, "the cluster backplane (Redis) is not answering");
                link = None;
                continue;
            }
            status.in_flight.fetch_add(sent.len() as u64, Relaxed);
            line.sent.extend(sent);
        }
        if let Err(error) = (&l.sock).write_all(&buf) {
            // Some of it may have gone out: the reader answers them all 504.
            log::warn!("redis publish connection: write failed: {error}");
            let _ = l.sock.shutdown(Shutdown::Both);
        }
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

/// Replies read so far and not yet taken, from the publish connection.
struct Replies {
    /// The socket's read side.
    sock: TcpStream,
    /// Bytes read, the first unparsed reply at the start.
    buf: Vec<u8>,
}

impl Replies {
    /// The next complete reply if one is buffered, without reading.
    fn take(&mut self) -> io::Result<Option<Resp>> {
        match resp::parse(&self.buf) {
            Ok(Some((reply, used))) => {
                self.buf.drain(..used);
                Ok(Some(reply))
            }
            Ok(None) => Ok(None),
            Err(resp::Malformed) => Err(io::Error::new(io::ErrorKind::InvalidData, "malformed reply from Redis")),
        }
    }

    /// Reads once (bounded by the socket's read timeout); false at the end of the stream.
    fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        let n = io::Read::read(&mut self.sock, &mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The next reply, waiting as long as the read timeout allows.
    fn next(&mut self) -> io::Result<Resp> {
        loop {
            if let Some(reply) = self.take()? {
                return Ok(reply);
            }
            if !self.fill()? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// Opens a connection (with `AUTH` and `SELECT` from the URL) and starts its reader.
fn connect(settings: &ClusterSettings, status: &Arc<Status>, bus: &Arc<Bus>, generation: u64) -> io::Result<Link> {
    let client = redis::Client::open(settings.url.as_str()).map_err(io::Error::other)?;
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
    sock.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    let mut replies = Replies { sock: sock.try_clone()?, buf: Vec::new() };
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
    for command in handshake {
        (&sock).write_all(&command)?;
        if let Resp::Error(error) = replies.next()? {
            // The text of an AUTH refusal names no secret ("WRONGPASS invalid username-password pair").
            return Err(io::Error::other(format!("redis refused the connection setup: {error}")));
        }
    }
    let line = Arc::new(Line::default());
    {
        let (line, status, bus) = (Arc::clone(&line), Arc::clone(status), Arc::clone(bus));
        thread::Builder::new()
            .name("ssehub-redis-replies".into())
            .spawn(move || read_replies(replies, &line, &status, &bus))?;
    }
    Ok(Link { sock, line, generation })
}

/// The reader: takes replies in order and answers their publishes; when the
/// connection ends or a reply is late, answers everything still in flight
/// with `504` and lets the connection go.
fn read_replies(mut replies: Replies, line: &Line, status: &Status, bus: &Bus) {
    let why = loop {
        match replies.take() {
            Ok(Some(reply)) => {
                let Some(sent) = line.lock().sent.pop_front() else {
                    log::warn!("redis publish connection: a reply nobody asked for");
                    break "outcome unknown: the Redis connection is out of step; retry with the same Idempotency-Key";
                };
                status.in_flight.fetch_sub(1, Relaxed);
                answer(bus, sent.origin, outcome(&sent.expect, &reply, status));
                continue;
            }
            Ok(None) => {}
            Err(_) => break "outcome unknown: Redis sent a malformed reply; retry with the same Idempotency-Key",
        }
        let deadline = line.lock().sent.front().map(|s| s.deadline);
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break "outcome unknown: Redis did not answer in time; retry with the same Idempotency-Key";
        }
        // Idle, the read wakes now and then to notice the connection's end.
        let wait = deadline.map_or(IDLE_POLL, |d| (d - now).min(IDLE_POLL)).max(Duration::from_millis(1));
        if replies.sock.set_read_timeout(Some(wait)).is_err() {
            break "outcome unknown: the Redis connection failed; retry with the same Idempotency-Key";
        }
        match replies.fill() {
            Ok(true) => {}
            Ok(false) => break "outcome unknown: Redis closed the connection; retry with the same Idempotency-Key",
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break "outcome unknown: the Redis connection failed; retry with the same Idempotency-Key",
        }
    };
    let left: Vec<Sent> = {
        let mut line = line.lock();
        line.broken = true;
        line.broke_at = Some((Instant::now(), status.reconnects.load(Relaxed)));
        line.sent.drain(..).collect()
    };
    if !left.is_empty() {
        log::warn!("redis publish connection: {} publishes left in doubt ({why})", left.len());
    }
    status.in_flight.fetch_sub(left.len() as u64, Relaxed);
    for sent in left {
        answer(bus, sent.origin, Err(PublishFailure::Unknown(why)));
    }
    let _ = replies.sock.shutdown(Shutdown::Both);
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
