//! The durable log of a standalone hub (`--data-dir DIR`): every accepted
//! event, and every remembered idempotency key, appended to segment files
//! before the publish is answered; read back at start ([`recover`]).
//!
//! Owns the files and nothing else: the record format is
//! `ssehub_protocol::journal` (pure, fuzzed), the order is the sequencer's.
//! [`Log`] is the sequencer's [`Journal`]: the bus calls it under its lock,
//! once per publish request, after stamping the ids and before recording or
//! pushing anything, so
//!
//! - **INVARIANT: an event reaches no subscriber before its record is
//!   written** (a `write(2)` into the page cache), and records are in id
//!   order. After a `SIGKILL` no client holds an id the log lacks; only the
//!   OS losing its page cache (power loss) can lose records, within the
//!   `--fsync` window.
//! - One `write` per publish request: its events and its key together (a
//!   batch of events costs one system call, not one per event).
//! - `--fsync always`: `fdatasync` before the publish is answered;
//!   `everysec` (default): a background thread syncs at most once a second
//!   what was written since; `no`: the OS decides.
//!
//! Files: `DIR/LOCK` (an exclusive `flock` held for the process's life: a
//! second process on `DIR` refuses to start) and `DIR/<20 digits>.log`
//! segments, numbered in write order, each [`SEGMENT_MAGIC`] then records.
//! A segment past `--data-segment-bytes` (16 MiB) is closed and a new one
//! begun; a closed segment is deleted, whole, once history retains none of
//! its events and its keys' windows are over ([`Journal::release`], from
//! the history sweep worker 0 runs every second), so disk use is bounded by
//! the same limits as memory, plus one open segment. Before deleting, the
//! log appends a floor record (what history knows of the dropped events
//! up to the segments' end: each topic's newest dropped id and why, and
//! where its ids began; synced unless `--fsync no`): read back at start
//! ([`ssehub_core::bus::Bus::restore_floor`]), it gives a resume into a
//! deleted segment the gap it would have got before the restart.

pub mod recover;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ssehub_core::backplane::{IdempotencyKey, Metric};
use ssehub_core::bus::{Floor, Journal, unix_ms};
use ssehub_core::history::{Gap, Knowledge};
use ssehub_core::{Event, EventId};
use ssehub_protocol::journal::{self as record, DropReason, FloorRecord, SEGMENT_MAGIC};

use crate::backplane::{counter, gauge};

/// When written records are forced to disk (`--fsync`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// `fdatasync` after every write, before the publish is answered.
    Always,
    /// A background `fdatasync` at most once a second.
    Everysec,
    /// Never asked for: the OS writes back when it likes.
    No,
}

/// What the log needs to know.
#[derive(Clone, Debug)]
pub struct JournalSettings {
    /// `--data-dir`.
    pub dir: PathBuf,
    /// `--fsync`.
    pub fsync: Fsync,
    /// A segment is closed once it holds this many bytes.
    pub segment_bytes: u64,
    /// `--idempotency-window` in ms: how long a key record must stay on disk.
    pub key_window_ms: u64,
}

/// Figures shared with `/metrics` and the sync thread.
#[derive(Debug, Default)]
pub struct Stats {
    /// Bytes in all segments.
    bytes: AtomicU64,
    /// Segment files, the open one included.
    segments: AtomicU64,
    /// Appends that failed (each answered 503).
    write_failures: AtomicU64,
    /// `fdatasync` calls that failed.
    fsync_failures: AtomicU64,
    /// Unix ms of the oldest write not yet synced (0: all synced).
    dirty_since: AtomicU64,
    /// Segments deleted because history retains none of them.
    deleted: AtomicU64,
}

impl Stats {
    /// The log's samples for `/metrics`.
    pub fn metrics(&self) -> Vec<Metric> {
        let since = self.dirty_since.load(Relaxed);
        let lag = if since == 0 { 0 } else { unix_ms().saturating_sub(since) };
        vec![
            gauge("journal_bytes", "Bytes in the durable log's segments (--data-dir).", self.bytes.load(Relaxed)),
            gauge("journal_segments", "Segment files of the durable log.", self.segments.load(Relaxed)),
            gauge("journal_fsync_lag_ms", "Age of the oldest write not yet synced to disk (0: all synced).", lag),
            counter(
                "journal_fsync_failures_total",
                "fdatasync calls on the durable log that failed.",
                self.fsync_failures.load(Relaxed),
            ),
            counter(
                "journal_write_failures_total",
                "Appends to the durable log that failed (the publish was answered 503).",
                self.write_failures.load(Relaxed),
            ),
            counter(
                "journal_segments_deleted_total",
                "Segments deleted once history retained none of their events.",
                self.deleted.load(Relaxed),
            ),
        ]
    }
}

/// A closed segment, as far as deleting it goes.
#[derive(Debug)]
struct Closed {
    /// Its file.
    path: PathBuf,
    /// Its size.
    bytes: u64,
    /// Its newest event (`ZERO`: none).
    last_id: EventId,
    /// When its newest key's window ends (unix ms; 0: no key).
    keys_until: u64,
}

/// The segment being appended to.
struct Active {
    /// Shared with the sync thread.
    file: Arc<File>,
    /// Its path.
    path: PathBuf,
    /// Bytes written to it (where the next record starts).
    len: u64,
    /// Its newest event (`ZERO`: none).
    last_id: EventId,
    /// When its newest key's window ends (unix ms; 0: no key).
    keys_until: u64,
}

/// What the sync thread syncs.
#[derive(Default)]
struct ToSync {
    /// The open segment.
    current: Option<Arc<File>>,
    /// Closed segments whose last writes are not yet synced.
    closed: Vec<Arc<File>>,
}

/// The open log; see the module documentation.
pub struct Log {
    /// How it was opened.
    settings: JournalSettings,
    /// The directory, for syncing its entries after a create or delete.
    dir: File,
    /// Closed segments, oldest first.
    closed: VecDeque<Closed>,
    /// The segment being written.
    active: Active,
    /// The number the next segment gets.
    next_number: u64,
    /// Reused for each append's records.
    buf: Vec<u8>,
    /// Figures for `/metrics`.
    stats: Arc<Stats>,
    /// With `everysec`: what the sync thread picks up.
    to_sync: Arc<Mutex<ToSync>>,
    /// The `flock`ed `DIR/LOCK`, held as long as the log is open.
    _lock: File,
}

impl Log {
    /// The log's figures, for `/metrics`.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Starts the sync thread of `--fsync everysec` (nothing for the others).
    pub fn start_sync_thread(&self) -> io::Result<()> {
        if self.settings.fsync != Fsync::Everysec {
            return Ok(());
        }
        let to_sync = Arc::clone(&self.to_sync);
        let stats = Arc::clone(&self.stats);
        let dir = self.dir.try_clone()?;
        std::thread::Builder::new().name("ssehub-fsync".into()).spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                sync_once(&to_sync, &stats, &dir);
            }
        })?;
        Ok(())
    }

    /// Closes the open segment and begins the next one.
    fn rotate(&mut self) -> io::Result<()> {
        let path = segment_path(&self.settings.dir, self.next_number);
        let file = create_segment(&path)?;
        self.next_number += 1;
        let file = Arc::new(file);
        let old = std::mem::replace(
            &mut self.active,
            Active {
                file: Arc::clone(&file),
                path,
                len: SEGMENT_MAGIC.len() as u64,
                last_id: EventId::ZERO,
                keys_until: 0,
            },
        );
        self.stats.bytes.fetch_add(SEGMENT_MAGIC.len() as u64, Relaxed);
        self.stats.segments.fetch_add(1, Relaxed);
        match self.settings.fsync {
            Fsync::Always => {
                self.sync(&old.file);
                self.sync(&self.dir);
            }
            Fsync::Everysec => {
                let mut to_sync = lock(&self.to_sync);
                to_sync.closed.push(Arc::clone(&old.file));
                to_sync.current = Some(file);
                self.mark_dirty();
            }
            Fsync::No => {}
        }
        self.closed.push_back(Closed {
            path: old.path,
            bytes: old.len,
            last_id: old.last_id,
            keys_until: old.keys_until,
        });
        Ok(())
    }

    fn sync(&self, file: &File) -> bool {
        match file.sync_data() {
            Ok(()) => true,
            Err(error) => {
                self.stats.fsync_failures.fetch_add(1, Relaxed);
                log::error!("data dir {}: fdatasync failed: {error}", self.settings.dir.display());
                false
            }
        }
    }

    fn mark_dirty(&self) {
        let _ = self.stats.dirty_since.compare_exchange(0, unix_ms().max(1), Relaxed, Relaxed);
    }

    /// Writes `self.buf` at the end of the open segment, or leaves the
    /// segment as it was (a failed write is cut off, so no torn record sits
    /// between good ones).
    fn write_buf(&mut self) -> io::Result<()> {
        let result = (&*self.active.file).write_all(&self.buf);
        if let Err(error) = result {
            if let Err(cut) = self.active.file.set_len(self.active.len) {
                log::error!("{}: cannot cut a failed write off: {cut}", self.active.path.display());
            }
            return Err(error);
        }
        if self.settings.fsync == Fsync::Always && !self.sync(&self.active.file) {
            // Not known to be on disk: not published. Cut it, so a retry
            // does not find its own earlier attempt in the log.
            let _ = self.active.file.set_len(self.active.len);
            return Err(io::Error::other("fdatasync failed"));
        }
        Ok(())
    }
}

impl Journal for Log {
    fn append(&mut self, events: &[Arc<Event>], key: Option<&IdempotencyKey>, now_ms: u64) -> io::Result<()> {
        self.buf.clear();
        for event in events {
            let topics = event.topics().iter().map(|t| &**t);
            if let Err(record::TooLarge(why)) =
                record::encode_event(&mut self.buf, event.id(), topics, event.frame().fields())
            {
                log::error!("event {} cannot be logged ({why}); refused", event.id());
                self.stats.write_failures.fetch_add(1, Relaxed);
                return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
            }
        }
        if let Some(key) = key.filter(|_| self.settings.key_window_ms > 0) {
            let ids: Vec<EventId> = events.iter().map(|e| e.id()).collect();
            if let Err(record::TooLarge(why)) =
                record::encode_key(&mut self.buf, now_ms, key.fingerprint, &key.key, &ids)
            {
                log::error!("idempotency key cannot be logged ({why}); refused");
                self.stats.write_failures.fetch_add(1, Relaxed);
                return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
            }
        }
        if let Err(error) = self.write_buf() {
            self.stats.write_failures.fetch_add(1, Relaxed);
            log::error!("{}: append failed, publish refused (503): {error}", self.active.path.display());
            return Err(error);
        }
        let written = self.buf.len() as u64;
        self.active.len += written;
        self.stats.bytes.fetch_add(written, Relaxed);
        if let Some(last) = events.last() {
            self.active.last_id = last.id();
        }
        if key.is_some() {
            self.active.keys_until = self.active.keys_until.max(now_ms.saturating_add(self.settings.key_window_ms));
        }
        if self.settings.fsync == Fsync::Everysec {
            self.mark_dirty();
        }
        if self.active.len >= self.settings.segment_bytes
            && let Err(error) = self.rotate()
        {
            // Keep appending to the open segment; the next append tries again.
            log::error!("data dir {}: cannot begin a new segment: {error}", self.settings.dir.display());
        }
        Ok(())
    }

    fn release(
        &mut self,
        oldest: Option<EventId>,
        last: EventId,
        now_ms: u64,
        floor: &mut dyn FnMut(EventId, usize) -> Floor,
    ) {
        let deletable: Vec<EventId> = self
            .closed
            .iter()
            .take_while(|front| {
                let events_gone = match oldest {
                    Some(oldest) => front.last_id < oldest,
                    None => front.last_id <= last,
                };
                events_gone && front.keys_until <= now_ms
            })
            .map(|front| front.last_id)
            .collect();
        let Some(&upto) = deletable.iter().max() else { return };
        // What history knows of the events about to go down goes down (and,
        // unless `--fsync no`, onto the disk) before they are deleted; if it
        // cannot, nothing is deleted and the next sweep tries again. At most
        // a quarter of a segment's worth of topics; history makes the rest
        // conservative.
        let max_topics = (self.settings.segment_bytes as usize / 4 / record::FLOOR_TOPIC).max(1024);
        if let Err(error) = self.append_floor(floor(upto, max_topics)) {
            log::error!("{}: cannot record what history dropped, segments kept: {error}", self.active.path.display());
            return;
        }
        let mut deleted = false;
        for _ in 0..deletable.len() {
            let Some(front) = self.closed.front() else { break };
            if let Err(error) = std::fs::remove_file(&front.path)
                && error.kind() != io::ErrorKind::NotFound
            {
                log::error!("{}: cannot delete an expired segment: {error}", front.path.display());
                break;
            }
            log::debug!("{}: deleted (history retains none of it)", front.path.display());
            self.stats.bytes.fetch_sub(front.bytes, Relaxed);
            self.stats.segments.fetch_sub(1, Relaxed);
            self.stats.deleted.fetch_add(1, Relaxed);
            self.closed.pop_front();
            deleted = true;
        }
        if deleted {
            match self.settings.fsync {
                Fsync::Always => {
                    self.sync(&self.dir);
                }
                Fsync::Everysec => self.mark_dirty(),
                Fsync::No => {}
            }
        }
    }
}

impl Log {
    /// Writes a floor record (see [`Floor`]) at the end of the open segment
    /// and, with `--fsync` other than `no`, syncs it: it must be on disk
    /// before the segments it stands for are gone.
    fn append_floor(&mut self, floor: Floor) -> io::Result<()> {
        fn reason(why: Gap) -> DropReason {
            if why == Gap::Expired { DropReason::Expired } else { DropReason::Evicted }
        }
        let record = FloorRecord {
            origin: floor.origin,
            last: floor.last,
            dropped: floor.knowledge.dropped.map(|(id, why)| (id, reason(why))),
            topics: floor.knowledge.topics.iter().map(|&(h, id, why)| (h, id, reason(why))).collect(),
        };
        self.buf.clear();
        if let Err(record::TooLarge(why)) = record::encode_floor(&mut self.buf, &record) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        }
        self.write_buf()?;
        if self.settings.fsync == Fsync::Everysec && !self.sync(&self.active.file) {
            let _ = self.active.file.set_len(self.active.len);
            return Err(io::Error::other("fdatasync failed"));
        }
        let written = self.buf.len() as u64;
        self.active.len += written;
        self.stats.bytes.fetch_add(written, Relaxed);
        Ok(())
    }
}

/// A floor record as the bus takes it back.
pub fn floor_of(record: FloorRecord) -> Floor {
    fn gap(why: DropReason) -> Gap {
        match why {
            DropReason::Expired => Gap::Expired,
            DropReason::Evicted => Gap::Evicted,
        }
    }
    let knowledge = Knowledge {
        dropped: record.dropped.map(|(id, why)| (id, gap(why))),
        topics: record.topics.into_iter().map(|(h, id, why)| (h, id, gap(why))).collect(),
    };
    Floor { origin: record.origin, last: record.last, knowledge }
}

impl Drop for Log {
    fn drop(&mut self) {
        // A clean stop leaves everything on disk, whatever --fsync says.
        if self.settings.fsync != Fsync::No {
            self.sync(&self.active.file);
            self.sync(&self.dir);
            self.stats.dirty_since.store(0, Relaxed);
        }
    }
}

/// One pass of the sync thread: syncs what was written since the last pass.
fn sync_once(to_sync: &Mutex<ToSync>, stats: &Stats, dir: &File) {
    let since = stats.dirty_since.swap(0, Relaxed);
    if since == 0 {
        return;
    }
    let (current, closed) = {
        let mut to_sync = lock(to_sync);
        (to_sync.current.clone(), std::mem::take(&mut to_sync.closed))
    };
    let mut failed = false;
    for file in closed.iter().chain(current.iter()).map(|f| &**f).chain([dir]) {
        if let Err(error) = file.sync_data() {
            stats.fsync_failures.fetch_add(1, Relaxed);
            log::error!("durable log: background fdatasync failed: {error}");
            failed = true;
        }
    }
    if failed {
        // Still not on disk: count from the first unsynced write, try again.
        let _ = stats.dirty_since.compare_exchange(0, since, Relaxed, Relaxed);
        lock(to_sync).closed.extend(closed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data: consistent between statements, so poisoning is ignored.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `DIR/<number, 20 digits>.log`.
fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.log"))
}

/// The number of a segment file's name, if it is one.
fn segment_number(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

/// A new, empty segment holding only its magic.
fn create_segment(path: &Path) -> io::Result<File> {
    let mut file = std::fs::OpenOptions::new().append(true).create_new(true).open(path)?;
    file.write_all(SEGMENT_MAGIC)?;
    Ok(file)
}
