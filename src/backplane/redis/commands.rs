//! The command thread: reads what resuming clients missed from the stream
//! (publishes have their own pipeline, `publisher`) and answers through
//! their workers' inboxes.
//!
//! One connection, commands in arrival order. When Redis is unreachable it
//! fails fast (answers within the command timeout, then refuses at once until
//! the follower sees Redis again or half a second has passed), so a resuming
//! client gets a gap notice instead of waiting.

use std::process;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redis::{Connection, RedisResult, Value};
use ssehub_core::backplane::{PublishFailure, ReplayRequest, Reply};
use ssehub_core::bus::Bus;
use ssehub_core::history::Gap;
use ssehub_core::{Event, EventId};
use ssehub_protocol::pattern::{Pattern, is_pattern};

use super::entry::{self, Control, Entry};
use super::{COMMAND_TIMEOUT, Command, Status, connect};
use crate::settings::ClusterSettings;

/// Entries one range read may look at, newest first, before it stops.
const SCAN_LIMIT: usize = 200_000;
const PAGE: usize = 256;
/// After a failure, how long to refuse before trying Redis again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(500);

/// The command thread's connection to Redis.
struct Link {
    /// Where Redis is.
    url: String,
    /// The connection, while it works.
    conn: Option<Connection>,
    /// When the last command failed.
    failed_at: Option<Instant>,
    /// The follower's reconnect count when `conn` was made.
    generation: u64,
}

impl Link {
    /// Runs `work` on a live connection; on any error drops the connection.
    fn with<T>(&mut self, backplane: &Status, work: impl FnOnce(&mut Connection) -> RedisResult<T>) -> Option<T> {
        let up = backplane.is_up();
        let generation = backplane.reconnects.load(Relaxed);
        if generation != self.generation {
            // Redis came back since this connection was made: it is dead, and a
            // command on it would fail (or worse, leave its fate unknown).
            self.conn = None;
            self.generation = generation;
        }
        if self.conn.is_none() {
            if !up && self.failed_at.is_some_and(|at| at.elapsed() < RETRY_AFTER_FAILURE) {
                return None;
            }
            match connect(&self.url, COMMAND_TIMEOUT) {
                Ok(conn) => self.conn = Some(conn),
                Err(error) => {
                    log::debug!("redis command connection: {error}");
                    self.failed_at = Some(Instant::now());
                    return None;
                }
            }
        }
        let conn = self.conn.as_mut()?;
        match work(conn) {
            Ok(value) => Some(value),
            Err(error) => {
                log::debug!("redis command failed: {error}");
                self.conn = None;
                self.failed_at = Some(Instant::now());
                None
            }
        }
    }
}

/// Runs until every worker is gone.
pub fn run(settings: &ClusterSettings, status: &Status, bus: &Bus, commands: Receiver<Command>) {
    let stream = settings.stream.as_str();
    let mut announced = 0u64; // revocations announced, for their nonces
    let mut link = Link { url: settings.url.clone(), conn: None, failed_at: None, generation: 0 };
    for command in commands {
        match command {
            Command::Revoke(revocation) => {
                // The follower answers when it reads the entry back; the
                // nonce must be registered before the entry can be read.
                announced += 1;
                let nonce = format!("{}-{announced}", process::id());
                let control = Control::Disconnect { subject: revocation.subject.to_string(), nonce: nonce.clone() };
                lock(&status.revocations).insert(nonce.clone(), Arc::clone(&revocation));
                let added = link.with(status, |conn| announce(conn, stream, settings.maxlen, &control));
                if added.is_none()
                    && lock(&status.revocations).remove(&nonce).is_some()
                    && let Some(origin) = revocation.origin
                {
                    let outcome = Err(PublishFailure::Unavailable("the cluster backplane (Redis) failed"));
                    bus.reply(origin.worker, Reply::Published { key: origin.key, stamp: origin.stamp, outcome });
                }
            }
            Command::Replay { origin, request } => {
                let (gap, events) = link
                    .with(status, |conn| replay(conn, stream, status, &request))
                    .unwrap_or((Some(Gap::Unavailable), Vec::new()));
                bus.reply(origin.worker, Reply::Replayed { key: origin.key, stamp: origin.stamp, gap, events });
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `XADD` of a control entry.
fn announce(conn: &mut Connection, stream: &str, maxlen: u64, control: &Control) -> RedisResult<()> {
    let mut command = redis::cmd("XADD");
    command.arg(stream).arg("MAXLEN").arg("~").arg(maxlen).arg("*");
    for (name, value) in control.fields() {
        command.arg(name).arg(value);
    }
    command.query::<String>(conn).map(drop)
}

/// One subscription of a resuming client: a topic, or a pattern.
enum Subscription<'a> {
    /// Exactly this topic.
    Topic(&'a str),
    /// Every topic the pattern matches.
    Pattern(Pattern),
}

impl<'a> Subscription<'a> {
    fn new(name: &'a str) -> Self {
        match Pattern::parse(name) {
            Ok(pattern) if is_pattern(name) => Subscription::Pattern(pattern),
            _ => Subscription::Topic(name),
        }
    }

    fn matches(&self, topic: &str) -> bool {
        match self {
            Subscription::Topic(name) => *name == topic,
            Subscription::Pattern(pattern) => pattern.matches(topic),
        }
    }
}

/// What a client resuming from `after` missed, read newest first from `upto`
/// down, at most `history` events per subscription (topic or pattern), then
/// put back in order.
fn replay(
    conn: &mut Connection,
    stream: &str,
    status: &Status,
    request: &ReplayRequest,
) -> RedisResult<(Option<Gap>, Vec<Arc<Event>>)> {
    let ReplayRequest { topics, after, upto, history } = request;
    let (after, upto, history) = (*after, *upto, *history);
    let first: Value = redis::cmd("XRANGE").arg(stream).arg("-").arg("+").arg("COUNT").arg(1).query(conn)?;
    let first = entry::range_entries(&first).first().and_then(Entry::event_id);
    // Where a reset stream ended, as this node saw it or another recorded it.
    let recorded: Option<String> = redis::cmd("GET").arg(super::reset_boundary_key(stream)).query(conn)?;
    if let Some(id) = recorded.as_deref().and_then(|id| EventId::parse(id.as_bytes())) {
        status.raise_reset_boundary(id);
    }
    let boundary = status.reset_boundary();
    let gap = match (after, first) {
        (None, _) => Some(Gap::Unparseable),
        (Some(after), _) if boundary != EventId::ZERO && after <= boundary => Some(Gap::Reset),
        (Some(after), Some(first)) if after < first => Some(Gap::Evicted),
        (Some(_), None) => Some(Gap::Evicted), // the stream is empty or gone: what it held is lost
        _ => None,
    };
    // Room left per subscription (a topic, or a pattern matching many).
    let mut room: Vec<(Subscription, usize)> = topics.iter().map(|t| (Subscription::new(t), history)).collect();
    let lower = after.map_or_else(|| "-".to_string(), |after| format!("({after}"));
    let mut upper = upto.to_string();
    let mut kept = Vec::new();
    let mut scanned = 0;
    while history > 0 && scanned < SCAN_LIMIT && room.iter().any(|&(_, n)| n > 0) {
        let page: Value =
            redis::cmd("XREVRANGE").arg(stream).arg(&upper).arg(&lower).arg("COUNT").arg(PAGE).query(conn)?;
        let entries = entry::range_entries(&page);
        scanned += entries.len();
        for entry in &entries {
            if entry.control().is_some() {
                continue;
            }
            let (Some(id), Ok(publication)) = (entry.event_id(), entry.publication()) else { continue };
            let mut wanted = false;
            for (subscription, left) in room.iter_mut() {
                if *left > 0 && publication.topics.iter().any(|topic| subscription.matches(topic)) {
                    *left -= 1;
                    wanted = true;
                }
            }
            if wanted {
                let mut event = Event::from_publication(&publication);
                event.set_id(id);
                kept.push(Arc::new(event));
            }
        }
        match entries.last() {
            Some(last) if entries.len() == PAGE => upper = format!("({}", last.id),
            _ => break,
        }
    }
    kept.reverse();
    Ok((gap, kept))
}
