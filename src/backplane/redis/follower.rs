//! The follower: one thread per node that reads the stream in order and hands
//! every valid entry, encoded once with its stream id, to every worker.

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::thread;
use std::time::{Duration, Instant};

use redis::{Connection, RedisResult, Value};
use ssehub_core::backplane::{Reply, Revocation};
use ssehub_core::bus::Bus;
use ssehub_core::history::Gap;
use ssehub_core::{Event, EventId};
use ssehub_protocol::resp::{self, ReplyRef};

use super::entry::{self, Control, EntryRef, StreamInfo};
use super::{Backoff, COMMAND_TIMEOUT, Status, connect};
use crate::settings::ClusterSettings;

/// How long one `XREAD` blocks: the follower checks for shutdown between reads.
const BLOCK_MS: u64 = 250;
/// How late past `BLOCK_MS` a reply may be before Redis counts as
/// unresponsive (frozen, or the path black-holed): `/readyz` turns 503 at
/// most `BLOCK_MS + STALL` after Redis stops answering.
const STALL: Duration = Duration::from_millis(550);
/// Records where a reset stream ended, unless a newer end is recorded.
/// KEYS: the boundary key. ARGV: the id.
const RAISE_BOUNDARY: &str = r"
local function parse(id)
  local ms, seq = string.match(id or '', '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local oms, oseq = parse(redis.call('GET', KEYS[1]))
local nms, nseq = parse(ARGV[1])
if oms and (oms > nms or (oms == nms and oseq >= nseq)) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
";
/// Entries per `XREAD`.
const PAGE: usize = 512;

/// The follower's reading connection: its own, with this crate's RESP
/// parser, so an `XREAD` reply is read in place (fields borrowed from `buf`,
/// no copy before an entry is checked and encoded). Its read timeout is
/// `BLOCK_MS + STALL`: a reply later than that means Redis is unresponsive.
/// (The `redis` crate's connection, beside it, runs the rare commands.)
struct Feed {
    /// Blocking, with the read timeout above.
    sock: TcpStream,
    /// Bytes read: the current reply at the start.
    buf: Vec<u8>,
    /// The `XREAD` command, packed anew each time (its id changes).
    command: Vec<u8>,
}

impl Feed {
    fn open(url: &str) -> io::Result<Feed> {
        let (sock, buf) = super::open(url, Duration::from_millis(BLOCK_MS) + STALL)?;
        Ok(Feed { sock, buf, command: Vec::new() })
    }

    /// Sends one `XREAD` after `from` and waits for its whole reply: the
    /// length it takes at the start of `buf`.
    fn xread(&mut self, stream: &str, from: EventId) -> io::Result<usize> {
        let (page, block, from) = (PAGE.to_string(), BLOCK_MS.to_string(), from.to_string());
        self.command.clear();
        let args: [&[u8]; 8] = [
            b"XREAD",
            b"COUNT",
            page.as_bytes(),
            b"BLOCK",
            block.as_bytes(),
            b"STREAMS",
            stream.as_bytes(),
            from.as_bytes(),
        ];
        resp::pack(&mut self.command, &args);
        (&self.sock).write_all(&self.command)?;
        super::read_reply(&self.sock, &mut self.buf)
    }
}

/// Where the follower stands after (re)connecting.
enum Position {
    /// Read on after this id.
    Continue(EventId),
    /// The stream is not the one we were reading: tell subscribers, start over.
    Reset,
}

/// Runs until shutdown. Never gives up on Redis.
pub fn run(settings: &ClusterSettings, backplane: &Status, bus: &Bus, shutdown: &AtomicBool) {
    let url = &settings.url;
    let stream = &settings.stream;
    let mut last: Option<EventId> = None; // the last entry handed to workers
    let mut backoff = Backoff::new();
    let mut failed = false;
    let mut invalid_logged = 0u64;
    while !shutdown.load(SeqCst) {
        let connected = (|| -> Result<_, Box<dyn std::error::Error>> {
            let mut conn = connect(url, Duration::from_millis(BLOCK_MS) + STALL)?;
            let position = position(&mut conn, stream, last, backplane)?;
            Ok((conn, Feed::open(url)?, position))
        })();
        let (mut conn, mut feed, position) = match connected {
            Ok(ok) => ok,
            Err(error) => {
                if backplane.is_up() || !failed {
                    log::warn!("redis backplane down: {error}");
                }
                backplane.set_up(false);
                failed = true;
                sleep_unless_shutdown(shutdown, backoff.next_wait());
                continue;
            }
        };
        match position {
            Position::Continue(id) => {
                if last.is_none() {
                    // First start: live from the head; older ids come from the stream.
                    backplane.set_floor(id);
                }
                last = Some(id);
            }
            Position::Reset => {
                log::warn!("redis stream {stream} was reset; subscribers get ssehub-gap");
                // Before the notice clears the workers' history: from now on a
                // resume from an id of the old stream is a gap, here and, once
                // recorded, on nodes started after the reset.
                let old_end = last.unwrap_or_default();
                backplane.raise_reset_boundary(old_end);
                let recorded: RedisResult<i64> = redis::cmd("EVAL")
                    .arg(RAISE_BOUNDARY)
                    .arg(1)
                    .arg(super::reset_boundary_key(stream))
                    .arg(old_end.to_string())
                    .query(&mut conn);
                if let Err(error) = recorded {
                    log::warn!("cannot record where the reset stream ended: {error}");
                }
                push(bus, shutdown, Arc::new(Event::notice(Gap::Reset.frame().plain)));
                backplane.set_floor(EventId::ZERO);
                last = Some(EventId::ZERO);
            }
        }
        if failed {
            backplane.reconnects.fetch_add(1, Relaxed);
            log::warn!("redis backplane reconnected; continuing after {}", last.unwrap_or_default());
        }
        failed = false;
        backoff.reset();
        backplane.set_up(true);
        let mut last_lag_check = Instant::now();
        while !shutdown.load(SeqCst) {
            let from = last.unwrap_or_default();
            let used = match feed.xread(stream, from) {
                Ok(used) => used,
                Err(error) => {
                    log::warn!("redis backplane down: {error}");
                    backplane.set_up(false);
                    failed = true;
                    break;
                }
            };
            // The reply is parsed in place: every field below borrows `feed.buf`.
            let full_page = match resp::parse_ref(&feed.buf[..used]) {
                Ok(Some((ReplyRef::Error(error), _))) => {
                    log::warn!("redis backplane down: XREAD refused: {error}");
                    None
                }
                Ok(Some((reply, _))) => {
                    let entries = entry::xread_entries(&reply);
                    let full_page = entries.len() == PAGE;
                    for entry in &entries {
                        let Some(id) = entry.event_id() else { continue };
                        backplane.entries_read.fetch_add(1, Relaxed);
                        last = Some(id);
                        if let Some(control) = entry.control() {
                            carry_out(backplane, bus, control, entry.id);
                            continue;
                        }
                        match encode(entry, id) {
                            Ok(event) => push(bus, shutdown, Arc::new(event)),
                            Err(why) => {
                                backplane.invalid_entries.fetch_add(1, Relaxed);
                                invalid_logged += 1;
                                if invalid_logged <= 10 || invalid_logged.is_multiple_of(1000) {
                                    log::warn!(
                                        "skipping invalid stream entry {} ({why}); {invalid_logged} so far",
                                        entry.id
                                    );
                                }
                            }
                        }
                    }
                    Some(full_page)
                }
                // `xread` returned only once this parsed.
                Ok(None) | Err(_) => None,
            };
            feed.buf.drain(..used);
            let Some(full_page) = full_page else {
                backplane.set_up(false);
                failed = true;
                break;
            };
            if !full_page {
                backplane.lag.store(0, Relaxed);
            } else if last_lag_check.elapsed() >= Duration::from_secs(1) {
                last_lag_check = Instant::now();
                if let Ok(behind) = count_after(&mut conn, stream, last.unwrap_or_default()) {
                    backplane.lag.store(behind, Relaxed);
                }
            }
        }
    }
}

/// Does what a control entry asks on this node's workers.
/// A disconnect this node announced is handed over with its origin, so the
/// asker gets this node's count.
fn carry_out(backplane: &Status, bus: &Bus, control: Result<Control, &'static str>, entry_id: &str) {
    match control {
        Ok(Control::Disconnect { subject, nonce }) => {
            log::info!("stream entry {entry_id}: disconnect of a token subject");
            let ours = backplane.revocations.lock().unwrap_or_else(|p| p.into_inner()).remove(&nonce);
            let revocation = ours.unwrap_or_else(|| Arc::new(Revocation::new(subject.into(), None, bus.workers())));
            for worker in 0..bus.workers() {
                bus.reply(worker, Reply::Revoke(Arc::clone(&revocation)));
            }
        }
        Err(why) => log::warn!("skipping control entry {entry_id}: {why}"),
    }
}

fn encode(entry: &EntryRef<'_>, id: EventId) -> Result<Event, ssehub_protocol::publish::PublishError> {
    let mut event = Event::from_publication(&entry.publication()?);
    event.set_id(id);
    Ok(event)
}

/// Hands an event to the workers, waiting while their queues are full.
fn push(bus: &Bus, shutdown: &AtomicBool, event: Arc<Event>) {
    while bus.push_sequenced(Arc::clone(&event)).is_err() {
        if shutdown.load(SeqCst) {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

fn sleep_unless_shutdown(shutdown: &AtomicBool, wait: Duration) {
    let until = Instant::now() + wait;
    while Instant::now() < until && !shutdown.load(SeqCst) {
        thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
    }
}

/// Decides where to read from after (re)connecting; learns where a reset
/// stream ended if another node recorded it.
fn position(conn: &mut Connection, stream: &str, last: Option<EventId>, backplane: &Status) -> RedisResult<Position> {
    let recorded: Option<String> = redis::cmd("GET").arg(super::reset_boundary_key(stream)).query(conn)?;
    if let Some(id) = recorded.as_deref().and_then(|id| EventId::parse(id.as_bytes())) {
        backplane.raise_reset_boundary(id);
    }
    // TYPE first: XINFO on a missing key is an error, told apart only by its text.
    let kind: String = redis::cmd("TYPE").arg(stream).query(conn)?;
    let info: Option<StreamInfo> = match kind.as_str() {
        "none" => None,
        _ => Some(entry::stream_info(&redis::cmd("XINFO").arg("STREAM").arg(stream).query::<Value>(conn)?)),
    };
    Ok(match (last, info) {
        // First start: from the head (or the beginning of a stream yet to be created).
        (None, Some(info)) => Position::Continue(info.last_generated),
        (None, None) => Position::Continue(EventId::ZERO),
        // Nothing read yet: everything in the stream is new.
        (Some(EventId::ZERO), _) => Position::Continue(EventId::ZERO),
        // The stream vanished (Redis lost its data): ids start over.
        (Some(_), None) => Position::Reset,
        (Some(last), Some(info)) => {
            if info.last_generated < last {
                Position::Reset // recreated: its head is behind what we read
            } else if info.first_entry.is_some_and(|first| first <= last)
                || (info.first_entry.is_none() && info.last_generated == last)
            {
                Position::Continue(last)
            } else {
                Position::Reset // what followed our last id may have been trimmed away
            }
        }
    })
}

/// Entries after `id`, counted up to a cap: the lag behind the head. A big
/// reply may take longer than a blocking read is allowed to stall.
fn count_after(conn: &mut Connection, stream: &str, id: EventId) -> RedisResult<u64> {
    conn.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    let reply: RedisResult<Value> =
        redis::cmd("XRANGE").arg(stream).arg(format!("({id}")).arg("+").arg("COUNT").arg(10_000).query(conn);
    conn.set_read_timeout(Some(Duration::from_millis(BLOCK_MS) + STALL))?;
    Ok(entry::range_entries(&reply?).len() as u64)
}
