//! Opening a data directory: take its lock, read every segment back in
//! order, cut a damaged tail, and leave the log ready to append.
//!
//! Damage is expected after a crash (a record cut short, a segment created
//! but never written) and possible otherwise (garbage, a flipped byte).
//! Whatever it is, recovery never fails because of it and never yields
//! half an event: the first record that is truncated, fails its checksum,
//! is malformed or out of id order ends the log. It is logged (`warn`, with
//! the file and offset), the segment is truncated there and later segments
//! are removed, so the next records are appended right after the last good
//! one. An empty (zero-length) segment holds nothing and is removed.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use ssehub_core::backplane::IdempotencyKey;
use ssehub_core::{Event, EventId};
use ssehub_protocol::journal::{self as record, Record, SEGMENT_MAGIC};
use ssehub_protocol::sse::Frame;

use ssehub_core::bus::Floor;

use super::{
    Active, Closed, JournalSettings, Log, Stats, ToSync, create_segment, floor_of, segment_number, segment_path,
};

/// An idempotency key read back from the log.
#[derive(Debug)]
pub struct RestoredKey {
    /// The key and its request's fingerprint.
    pub key: IdempotencyKey,
    /// The ids its publish was given.
    pub ids: Vec<EventId>,
    /// When it was remembered (unix ms).
    pub at_ms: u64,
}

/// What opening a data directory read back besides the events.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The idempotency keys, oldest first.
    pub keys: Vec<RestoredKey>,
    /// Records were lost to damage (anything but a record cut short at the
    /// very end of the log, which no publish was answered for): clients may
    /// hold ids the log no longer has.
    pub lost: bool,
    /// The newest floor record: what history had dropped when segments
    /// were last deleted (for [`ssehub_core::bus::Bus::restore_floor`]).
    pub floor: Option<Floor>,
}

/// What a segment read back held.
struct Scan {
    /// Bytes of good records (from the start of the file).
    good: u64,
    /// Its newest event.
    last_id: EventId,
    /// When its newest key's window ends.
    keys_until: u64,
    /// Why reading stopped before the end, and where.
    damage: Option<(u64, String)>,
    /// The damage is a record cut short at the end of the file (a torn write).
    torn: bool,
}

impl Log {
    /// Opens (or creates) `settings.dir`: locks it, reads the log back and
    /// hands its events to `restore`, a segment's worth at a time in id
    /// order, and returns the log, ready to append, with the keys it held.
    /// Fails only when the directory cannot be used (another process holds
    /// it, permissions, I/O), never because of what the segments contain.
    pub fn open(settings: JournalSettings, mut restore: impl FnMut(Vec<Arc<Event>>)) -> io::Result<(Log, Recovered)> {
        let dir_path = settings.dir.clone();
        fs::create_dir_all(&dir_path)
            .map_err(|e| io::Error::new(e.kind(), format!("data dir {}: cannot create: {e}", dir_path.display())))?;
        let lock = take_lock(&dir_path)?;
        let dir = File::open(&dir_path)?;
        let mut numbers: Vec<u64> = Vec::new();
        for entry in fs::read_dir(&dir_path)? {
            let entry = entry?;
            if let Some(number) = entry.file_name().to_str().and_then(segment_number) {
                numbers.push(number);
            }
        }
        numbers.sort_unstable();
        let stats = Arc::new(Stats::default());
        let mut closed: VecDeque<Closed> = VecDeque::new();
        let mut keys = Vec::new();
        let mut last = EventId::ZERO;
        let mut cut = false;
        let mut lost = false;
        let mut floor = None;
        let mut events = 0usize;
        for &number in &numbers {
            let path = segment_path(&dir_path, number);
            if cut {
                log::warn!("{}: removed, it follows the cut", path.display());
                fs::remove_file(&path)?;
                continue;
            }
            let bytes = read_file(&path)?;
            if bytes.is_empty() {
                log::warn!("{}: zero-length segment (a crash right after it was created?): removed", path.display());
                fs::remove_file(&path)?;
                continue;
            }
            let mut batch = Vec::new();
            let scan = scan(&bytes, &mut last, settings.key_window_ms, &mut batch, &mut keys, &mut floor);
            events += batch.len();
            restore(batch);
            if let Some((offset, why)) = &scan.damage {
                let newest = number == *numbers.last().unwrap_or(&number);
                lost |= !(scan.torn && newest);
                log::warn!(
                    "{}: {why} at offset {offset}: the log is cut there ({} bytes dropped{})",
                    path.display(),
                    bytes.len() as u64 - offset,
                    if newest { "" } else { ", later segments removed" }
                );
                cut = true;
                if scan.good < SEGMENT_MAGIC.len() as u64 {
                    fs::remove_file(&path)?;
                    continue;
                }
                OpenOptions::new().write(true).open(&path)?.set_len(scan.good)?;
            }
            closed.push_back(Closed { path, bytes: scan.good, last_id: scan.last_id, keys_until: scan.keys_until });
        }
        let next_number = numbers.last().map_or(1, |n| n + 1);
        // The newest segment left is appended to, unless it is full.
        let reopen = closed.back().is_some_and(|seg| seg.bytes < settings.segment_bytes);
        let (active, next_number) = match closed.pop_back() {
            Some(seg) if reopen => {
                let file = OpenOptions::new().append(true).open(&seg.path)?;
                let active = Active {
                    file: Arc::new(file),
                    path: seg.path,
                    len: seg.bytes,
                    last_id: seg.last_id,
                    keys_until: seg.keys_until,
                };
                (active, next_number)
            }
            full => {
                closed.extend(full);
                let path = segment_path(&dir_path, next_number);
                let file = create_segment(&path)?;
                let len = SEGMENT_MAGIC.len() as u64;
                (Active { file: Arc::new(file), path, len, last_id: EventId::ZERO, keys_until: 0 }, next_number + 1)
            }
        };
        dir.sync_all()?;
        let total: u64 = closed.iter().map(|c| c.bytes).sum::<u64>() + active.len;
        stats.bytes.store(total, Relaxed);
        stats.segments.store(closed.len() as u64 + 1, Relaxed);
        if lost {
            log::warn!(
                "data dir {}: records were lost to damage; resumes from before this start get ssehub-gap (before-start)",
                dir_path.display()
            );
        }
        log::info!(
            "data dir {}: {events} events and {} idempotency keys read back from {} segments ({} KiB), last id {last}",
            dir_path.display(),
            keys.len(),
            closed.len() + 1,
            total >> 10
        );
        let to_sync = Arc::new(Mutex::new(ToSync { current: Some(Arc::clone(&active.file)), closed: Vec::new() }));
        let log = Log {
            settings,
            dir,
            closed,
            active,
            next_number,
            buf: Vec::with_capacity(64 << 10),
            stats,
            to_sync,
            _lock: lock,
        };
        Ok((log, Recovered { keys, lost, floor: floor.map(floor_of) }))
    }
}

/// Reads one segment's records: events go to `batch` (ids above `last`,
/// which follows them), keys to `keys`, and a floor record replaces `floor`
/// (each is newer than the one before).
fn scan(
    bytes: &[u8],
    last: &mut EventId,
    key_window_ms: u64,
    batch: &mut Vec<Arc<Event>>,
    keys: &mut Vec<RestoredKey>,
    floor: &mut Option<record::FloorRecord>,
) -> Scan {
    let mut scan = Scan { good: 0, last_id: EventId::ZERO, keys_until: 0, damage: None, torn: false };
    if !bytes.starts_with(SEGMENT_MAGIC) {
        scan.damage = Some((0, "not a segment (bad magic)".into()));
        return scan;
    }
    let mut at = SEGMENT_MAGIC.len();
    while at < bytes.len() {
        match record::decode(&bytes[at..]) {
            Ok((Record::Event(event), used)) => {
                if event.id <= *last {
                    scan.damage = Some((at as u64, format!("event {} out of order (after {})", event.id, *last)));
                    break;
                }
                let topics: Box<[Box<str>]> = event.topics.iter().map(|&t| t.into()).collect();
                let mut restored = Event::new(topics, Frame::notice(event.fields));
                restored.set_id(event.id);
                batch.push(Arc::new(restored));
                *last = event.id;
                scan.last_id = event.id;
                at += used;
            }
            Ok((Record::Key(key), used)) => {
                scan.keys_until = scan.keys_until.max(key.at_ms.saturating_add(key_window_ms));
                keys.push(RestoredKey {
                    key: IdempotencyKey { key: key.key.into(), fingerprint: key.fingerprint },
                    ids: key.ids,
                    at_ms: key.at_ms,
                });
                at += used;
            }
            Ok((Record::Floor(record), used)) => {
                *floor = Some(record);
                at += used;
            }
            Err(error) => {
                scan.torn = error == record::RecordError::Truncated;
                scan.damage = Some((at as u64, error.to_string()));
                break;
            }
        }
    }
    scan.good = at as u64;
    scan
}

fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Takes `DIR/LOCK` for this process, writing its pid there; refuses if
/// another process holds it.
fn take_lock(dir: &Path) -> io::Result<File> {
    let path = dir.join("LOCK");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("data dir {}: cannot open its LOCK: {e}", dir.display())))?;
    if !crate::sys::try_lock_exclusive(&file)? {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        let who = if holder.is_empty() { String::new() } else { format!(" (pid {holder})") };
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "data dir {} is in use by another ssehub process{who}: it holds {}; one process per --data-dir",
                dir.display(),
                path.display()
            ),
        ));
    }
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssehub_core::bus::Journal;
    use ssehub_core::history::{Gap, Knowledge};

    use crate::journal::Fsync;

    fn no_floor(_: EventId, _: usize) -> Floor {
        Floor { origin: EventId::ZERO, last: EventId::ZERO, knowledge: Knowledge::default() }
    }

    fn settings(dir: &Path, segment_bytes: u64) -> JournalSettings {
        JournalSettings { dir: dir.to_path_buf(), fsync: Fsync::No, segment_bytes, key_window_ms: 60_000 }
    }

    fn event(ms: u64, topic: &str, data: &str) -> Arc<Event> {
        let mut fields = Frame::buffer(0);
        ssehub_protocol::sse::encode_fields(&mut fields, None, None, data).unwrap();
        let mut event = Event::new(Box::new([topic.into()]), Frame::new(fields));
        event.set_id(EventId { ms, seq: 0 });
        Arc::new(event)
    }

    fn tempdir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ssehub-journal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn reopen(dir: &Path, segment_bytes: u64) -> (Log, Vec<Arc<Event>>, Vec<RestoredKey>) {
        let (log, all, recovered) = reopen_lost(dir, segment_bytes);
        (log, all, recovered.keys)
    }

    fn reopen_lost(dir: &Path, segment_bytes: u64) -> (Log, Vec<Arc<Event>>, Recovered) {
        let mut all = Vec::new();
        let (log, recovered) = Log::open(settings(dir, segment_bytes), |batch| all.extend(batch)).unwrap();
        (log, all, recovered)
    }

    #[test]
    fn events_and_keys_come_back_in_order_across_segments_and_frames_are_identical() {
        let dir = tempdir("roundtrip");
        let (mut log, none, _) = reopen(&dir, 200);
        assert!(none.is_empty());
        let written: Vec<Arc<Event>> = (1..=20).map(|i| event(i, "t", &format!("event {i}"))).collect();
        for pair in written.chunks(2) {
            log.append(pair, None, 5).unwrap();
        }
        let key = IdempotencyKey { key: "k".into(), fingerprint: [3; 16] };
        log.append(&[event(21, "u", "keyed")], Some(&key), 7).unwrap();
        assert!(log.closed.len() > 2, "small segments rotate");
        drop(log);
        let (_log, read, keys) = reopen(&dir, 200);
        assert_eq!(read.len(), 21);
        for (a, b) in written.iter().zip(&read) {
            assert_eq!((a.id(), a.topics(), a.frame().chunked()), (b.id(), b.topics(), b.frame().chunked()));
        }
        assert_eq!(keys.len(), 1);
        assert_eq!(
            (&*keys[0].key.key, keys[0].ids.as_slice(), keys[0].at_ms),
            ("k", &[EventId { ms: 21, seq: 0 }][..], 7)
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_tail_is_cut_and_appends_continue_after_the_last_good_record() {
        let dir = tempdir("damage");
        let (mut log, _, _) = reopen(&dir, 1 << 20);
        for i in 1..=5 {
            log.append(&[event(i, "t", "x")], None, 0).unwrap();
        }
        let path = log.active.path.clone();
        drop(log);
        let good = fs::metadata(&path).unwrap().len();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"\x30\x00\x00\x00garbage").unwrap();
        drop(file);
        let (mut log, read, recovered) = reopen_lost(&dir, 1 << 20);
        assert!(!recovered.lost, "a record cut short at the end was never answered");
        assert_eq!(read.len(), 5);
        assert_eq!(fs::metadata(&path).unwrap().len(), good, "cut at the last good record");
        log.append(&[event(6, "t", "y")], None, 0).unwrap();
        drop(log);
        // A flipped byte inside the third record: the log ends after the second.
        let mut bytes = fs::read(&path).unwrap();
        let third = SEGMENT_MAGIC.len() + 2 * (bytes.len() - SEGMENT_MAGIC.len()) / 6 + 12;
        bytes[third] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let (_log, read, recovered) = reopen_lost(&dir, 1 << 20);
        assert!(recovered.lost, "a checksum failure is damage to answered records");
        assert_eq!(read.iter().map(|e| e.id().ms).collect::<Vec<_>>(), [1, 2]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_open_of_the_same_dir_is_refused() {
        let dir = tempdir("lock");
        let (_log, _, _) = reopen(&dir, 1 << 20);
        let error = Log::open(settings(&dir, 1 << 20), |_| {}).err().expect("refused");
        assert!(error.to_string().contains("in use by another ssehub process"), "{error}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn closed_segments_go_once_history_retains_none_of_them() {
        let dir = tempdir("release");
        let (mut log, _, _) = reopen(&dir, 100);
        for i in 1..=10 {
            log.append(&[event(i, "t", "some data")], None, 0).unwrap();
        }
        let segments = log.closed.len();
        assert!(segments >= 3);
        let second_last = log.closed[1].last_id;
        log.release(Some(second_last), EventId { ms: 10, seq: 0 }, 0, &mut no_floor);
        assert_eq!(log.closed.len(), segments - 1, "only the first lies wholly below the oldest retained");
        log.release(None, EventId { ms: 10, seq: 0 }, 0, &mut no_floor);
        assert!(log.closed.is_empty(), "nothing retained: every closed segment goes");
        let files = fs::read_dir(&dir).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some()).count();
        assert_eq!(files, 1, "the open segment stays");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn what_history_knew_is_recorded_before_segments_go_and_read_back() {
        let dir = tempdir("floor");
        let (mut log, _, _) = reopen(&dir, 100);
        for i in 1..=10 {
            log.append(&[event(i, "t", "some data")], None, 0).unwrap();
        }
        let last = EventId { ms: 10, seq: 0 };
        let first_two: Vec<EventId> = log.closed.iter().map(|c| c.last_id).take(2).collect();
        let origin = EventId { ms: 1, seq: 0 };
        let floor = |upto: EventId| Floor {
            origin,
            last,
            knowledge: Knowledge { dropped: None, topics: vec![(42, upto, Gap::Expired)] },
        };
        // Nothing to delete: nothing asked, nothing written.
        let before = log.active.len;
        log.release(Some(EventId { ms: 1, seq: 0 }), last, 0, &mut |_, _| panic!("not asked"));
        assert_eq!(log.active.len, before);
        let mut asked = Vec::new();
        log.release(Some(first_two[1]), last, 0, &mut |upto, max| {
            asked.push((upto, max));
            floor(upto)
        });
        assert_eq!(asked, [(first_two[0], 1024)], "asked up to the end of what is deleted");
        log.release(None, last, 0, &mut |upto, _| floor(upto));
        assert!(log.closed.is_empty());
        drop(log);
        let (_log, events, recovered) = reopen_lost(&dir, 100);
        let newest = recovered.floor.expect("a floor");
        assert!(!recovered.lost);
        assert_eq!((newest.origin, newest.last), (origin, last));
        assert!(newest.knowledge.topics[0].1 > first_two[1], "the newest floor wins: {newest:?}");
        assert!(events.iter().all(|e| e.id() > first_two[1]), "the deleted segments' events are gone");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_segment_holding_a_key_stays_until_the_key_window_ends() {
        let dir = tempdir("release-keys");
        let (mut log, _, _) = reopen(&dir, 100);
        let key = IdempotencyKey { key: "k".into(), fingerprint: [1; 16] };
        log.append(&[event(1, "t", "keyed")], Some(&key), 1_000).unwrap();
        for i in 2..=6 {
            log.append(&[event(i, "t", "some data")], None, 1_000).unwrap();
        }
        let last = EventId { ms: 6, seq: 0 };
        log.release(None, last, 1_000 + 59_999, &mut no_floor);
        assert_eq!(log.closed.front().map(|c| c.last_id.ms), Some(1), "the key's window (60 s) is not over");
        log.release(None, last, 1_000 + 60_000, &mut no_floor);
        assert!(log.closed.is_empty());
        let _ = fs::remove_dir_all(&dir);
    }
}
