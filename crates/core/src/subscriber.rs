//! A subscriber's state as the fan-out sees it: its topics, its share of the
//! batch being written, and — only while its socket cannot take everything —
//! a backlog of references to shared frames.
//!
//! An idle subscriber keeps no buffer: a mask, its list positions and a
//! `None`. The server embeds a [`Subscriber`] in its connection slot, so this
//! struct is most of what an idle connection costs (see `PERFORMANCE.md`).

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

use ssehub_protocol::pattern::Pattern;
use ssehub_protocol::sse::{Framing, StaticFrame};

use crate::event::Event;
use crate::topics::TopicId;

/// Most frames handed to one `writev`.
pub const MAX_IOV: usize = 64;

/// One event stream.
#[derive(Debug)]
pub struct Subscriber {
    /// Bit i: event i of the fan-out batch in progress goes here.
    pub batch: u64,
    /// It skips events up to its entry in the worker's filters (see `fanout`).
    pub filtered: bool,
    /// How its body is delimited.
    pub framing: Framing,
    /// Its topics and its position in each topic's list.
    pub subs: Subscriptions,
    /// Only while the socket cannot take everything.
    pub backlog: Option<Box<Backlog>>,
}

impl Subscriber {
    /// A subscriber listed in `subs`, with nothing queued.
    pub fn new(subs: Subscriptions, framing: Framing) -> Self {
        Subscriber { batch: 0, filtered: false, framing, subs, backlog: None }
    }
}

/// The topics of one subscriber and its position in each topic's list.
#[derive(Debug)]
pub enum Subscriptions {
    /// The common case: one topic, no allocation.
    One(TopicId, u32),
    /// Several topics.
    Many(Box<[(TopicId, u32)]>),
    /// Patterns, and any topics besides (rare enough to box together).
    Patterns(Box<WithPatterns>),
}

/// A subscription list that holds patterns.
#[derive(Debug)]
pub struct WithPatterns {
    /// The plain topics and the positions in their lists.
    pub topics: Box<[(TopicId, u32)]>,
    /// The patterns, as listed in the worker's pattern index.
    pub patterns: Box<[Pattern]>,
}

impl Subscriptions {
    /// Every (topic, position) pair.
    pub fn iter(&self) -> impl Iterator<Item = (TopicId, u32)> + '_ {
        let slice: &[(TopicId, u32)] = match self {
            Subscriptions::One(topic, pos) => return SubsIter::One(Some((*topic, *pos))),
            Subscriptions::Many(list) => list,
            Subscriptions::Patterns(with) => &with.topics,
        };
        SubsIter::Many(slice.iter())
    }

    /// The pattern subscriptions (usually none).
    pub fn patterns(&self) -> &[Pattern] {
        match self {
            Subscriptions::Patterns(with) => &with.patterns,
            _ => &[],
        }
    }

    /// Records that this subscriber now sits at `pos` in `topic`'s list.
    pub fn set_position(&mut self, topic: TopicId, pos: u32) {
        match self {
            Subscriptions::One(t, p) if *t == topic => *p = pos,
            Subscriptions::One(..) => {}
            Subscriptions::Many(list) => {
                if let Some(entry) = list.iter_mut().find(|(t, _)| *t == topic) {
                    entry.1 = pos;
                }
            }
            Subscriptions::Patterns(with) => {
                if let Some(entry) = with.topics.iter_mut().find(|(t, _)| *t == topic) {
                    entry.1 = pos;
                }
            }
        }
    }
}

/// Iterates [`Subscriptions`] without boxing.
enum SubsIter<'a> {
    /// The single pair, until taken.
    One(Option<(TopicId, u32)>),
    /// The pairs of a list.
    Many(std::slice::Iter<'a, (TopicId, u32)>),
}

impl Iterator for SubsIter<'_> {
    type Item = (TopicId, u32);
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            SubsIter::One(item) => item.take(),
            SubsIter::Many(iter) => iter.next().copied(),
        }
    }
}

/// Something queued for a subscriber.
#[derive(Debug)]
pub enum Chunk {
    /// A shared event frame.
    Event(Arc<Event>),
    /// A fixed frame (heartbeat, gap notice).
    Static(StaticFrame),
    /// Bytes of this connection alone (its response head), already framed.
    Owned(Box<[u8]>),
}

impl Chunk {
    /// The bytes to write in `framing`.
    pub fn bytes(&self, framing: Framing) -> &[u8] {
        match self {
            Chunk::Event(event) => event.frame().bytes(framing),
            Chunk::Static(frame) => frame.bytes(framing),
            Chunk::Owned(bytes) => bytes,
        }
    }
}

/// What a flush achieved.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything was written.
    Drained,
    /// The socket is full (or a replay is still to come).
    Blocked,
}

/// Writes to subscribers counted locally (per loop turn, or per flush) and
/// added to the shared statistics in one go.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Event frames completed.
    pub frames: u64,
    /// Bytes written.
    pub bytes: u64,
    /// System calls (or submitted writes).
    pub writes: u64,
}

/// Frames a slow subscriber has yet to take, oldest first.
#[derive(Debug)]
pub struct Backlog {
    /// Queued chunks.
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    offset: usize,
    /// More queued than this: drop the subscriber.
    limit: usize,
    /// Only this many front chunks may be written (a replay is pending).
    hold: Option<usize>,
}

impl Backlog {
    /// An empty backlog of at most `limit` chunks.
    pub fn new(limit: usize) -> Self {
        Backlog { chunks: VecDeque::new(), offset: 0, limit, hold: None }
    }

    /// Queues one chunk.
    pub fn push(&mut self, chunk: Chunk) {
        self.chunks.push_back(chunk);
    }

    /// Queues chunks in order.
    pub fn extend(&mut self, chunks: impl IntoIterator<Item = Chunk>) {
        self.chunks.extend(chunks);
    }

    /// Queues the rest of a partly written run of frames.
    pub fn push_rest<'a>(
        &mut self,
        frames: impl Iterator<Item = &'a Arc<Event>>,
        framing: Framing,
        mut written: usize,
    ) {
        for event in frames {
            let len = event.frame().bytes(framing).len();
            if written >= len {
                written -= len;
                continue;
            }
            if self.chunks.is_empty() {
                self.offset = written;
            }
            written = 0;
            self.chunks.push_back(Chunk::Event(Arc::clone(event)));
        }
    }

    /// True once more is queued than the limit allows.
    pub fn over_limit(&self) -> bool {
        self.chunks.len() > self.limit
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Chunks queued.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Writes only what is queued so far; later chunks wait for [`Backlog::release`].
    /// Used while a replay is fetched: live events queue behind the place it goes.
    pub fn hold(&mut self) {
        self.hold = Some(self.chunks.len());
    }

    /// Puts `replay` where the hold was and lets everything be written.
    pub fn release(&mut self, replay: impl IntoIterator<Item = Chunk>) {
        let at = self.hold.take().unwrap_or(0);
        let mut live = self.chunks.split_off(at.min(self.chunks.len()));
        self.chunks.extend(replay);
        self.limit += self.chunks.len();
        self.chunks.append(&mut live);
    }

    /// True while a replay is awaited.
    pub fn is_held(&self) -> bool {
        self.hold.is_some()
    }

    /// What must still be written before the stream can end cleanly: the
    /// rest of a chunk already begun (a chunk cannot be cut short), or of
    /// owned bytes (the response head, a heartbeat's rest), which are always
    /// continuations of bytes sent. Everything queued behind it may be dropped.
    pub fn committed_rest(&self, framing: Framing) -> &[u8] {
        match self.chunks.front() {
            Some(chunk @ Chunk::Owned(_)) => &chunk.bytes(framing)[self.offset..],
            Some(chunk) if self.offset > 0 => &chunk.bytes(framing)[self.offset..],
            _ => &[],
        }
    }

    /// Writes queued chunks until done or the socket is full.
    pub fn flush(&mut self, sock: &mut impl Write, framing: Framing, written: &mut Tally) -> io::Result<Flushed> {
        loop {
            let writable = self.hold.unwrap_or(usize::MAX).min(self.chunks.len());
            if writable == 0 {
                break;
            }
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for chunk in self.chunks.iter().take(MAX_IOV.min(writable)) {
                let bytes = chunk.bytes(framing);
                iov[n] = IoSlice::new(if n == 0 { &bytes[self.offset..] } else { bytes });
                n += 1;
            }
            let mut wrote = match sock.write_vectored(&iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(wrote) => wrote,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            written.writes += 1;
            written.bytes += wrote as u64;
            while let Some(front) = self.chunks.front() {
                let left = front.bytes(framing).len() - self.offset;
                if wrote < left {
                    self.offset += wrote;
                    break;
                }
                wrote -= left;
                self.offset = 0;
                if let Some(Chunk::Event(_)) = self.chunks.pop_front() {
                    written.frames += 1;
                }
                if let Some(hold) = &mut self.hold {
                    *hold -= 1;
                }
            }
        }
        // A held backlog is not done even when empty: the replay is still to come.
        Ok(if self.chunks.is_empty() && self.hold.is_none() { Flushed::Drained } else { Flushed::Blocked })
    }
}

/// Writes byte runs with one `writev`. Returns the bytes written (0 when the socket is full).
pub fn write_frames<'a>(sock: &mut impl Write, frames: impl Iterator<Item = &'a [u8]>) -> io::Result<usize> {
    let mut iov = [IoSlice::new(&[]); MAX_IOV];
    let mut n = 0;
    for frame in frames.take(MAX_IOV) {
        iov[n] = IoSlice::new(frame);
        n += 1;
    }
    loop {
        return match sock.write_vectored(&iov[..n]) {
            Ok(0) if n > 0 => Err(io::ErrorKind::WriteZero.into()),
            Ok(wrote) => Ok(wrote),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

#[doc(hidden)]
/// Test doubles shared by this crate's tests and the benches.
pub mod testing {
    use std::io::{self, IoSlice, Write};
    use std::sync::Arc;

    use ssehub_protocol::EventId;

    use crate::event::Event;

    /// A socket that takes at most `room` bytes, then would block.
    #[derive(Debug, Default)]
    pub struct Tight {
        /// Bytes it still takes before blocking.
        pub room: usize,
        /// Everything written.
        pub got: Vec<u8>,
        /// Write calls made.
        pub calls: usize,
    }

    impl Write for Tight {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut wrote = 0;
            for buf in bufs {
                let take = buf.len().min(self.room);
                self.got.extend_from_slice(&buf[..take]);
                self.room -= take;
                wrote += take;
            }
            Ok(wrote)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// An event on `topics` with data `data` and id `<ms>-0`.
    pub fn event(ms: u64, topics: &[&str], data: &str) -> Arc<Event> {
        let publication = ssehub_protocol::publish::Publication {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            data: data.into(),
            event: None,
            retry: None,
        };
        let mut event = Event::from_publication(&publication);
        event.set_id(EventId { ms, seq: 0 });
        Arc::new(event)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{Tight, event};
    use super::*;

    #[test]
    fn a_backlog_resumes_exactly_where_the_socket_stopped() {
        for framing in [Framing::Plain, Framing::Chunked] {
            let events: Vec<_> = (1..=5).map(|n| event(n, &["t"], &n.to_string())).collect();
            let all: Vec<u8> = events.iter().flat_map(|e| e.frame().bytes(framing).to_vec()).collect();
            for first in 0..all.len() {
                let mut sock = Tight { room: first, ..Tight::default() };
                let wrote = write_frames(&mut sock, events.iter().map(|e| e.frame().bytes(framing))).unwrap();
                let mut backlog = Backlog::new(10);
                backlog.push_rest(events.iter(), framing, wrote);
                let mut written = Tally::default();
                for step in [3, 0, 7, usize::MAX] {
                    sock.room = step;
                    if backlog.flush(&mut sock, framing, &mut written).unwrap() == Flushed::Drained {
                        break;
                    }
                }
                assert!(backlog.is_empty());
                assert_eq!(sock.got, all, "first write of {first} bytes");
                assert_eq!(written.bytes as usize, all.len() - wrote);
            }
        }
    }

    #[test]
    fn a_held_backlog_writes_its_head_then_the_replay_before_live_frames() {
        let mut backlog = Backlog::new(4);
        backlog.push(Chunk::Owned(b"HEAD;".to_vec().into_boxed_slice()));
        backlog.hold();
        backlog.push(Chunk::Event(event(3, &["t"], "3")));
        let mut sock = Tight { room: usize::MAX, ..Tight::default() };
        let mut written = Tally::default();
        assert_eq!(backlog.flush(&mut sock, Framing::Plain, &mut written).unwrap(), Flushed::Blocked);
        assert_eq!(sock.got, b"HEAD;");
        backlog.release([Chunk::Event(event(1, &["t"], "1")), Chunk::Event(event(2, &["t"], "2"))]);
        assert!(!backlog.is_held());
        assert_eq!(backlog.flush(&mut sock, Framing::Plain, &mut written).unwrap(), Flushed::Drained);
        let want: Vec<u8> = b"HEAD;"
            .iter()
            .copied()
            .chain((1..=3).flat_map(|n| event(n, &["t"], &n.to_string()).frame().plain().to_vec()))
            .collect();
        assert_eq!(sock.got, want);
        assert_eq!(written.frames, 3);
    }

    #[test]
    fn the_committed_rest_is_a_begun_chunk_or_owned_bytes() {
        let one = event(1, &["t"], "1");
        let mut backlog = Backlog::new(4);
        backlog.push(Chunk::Event(Arc::clone(&one)));
        backlog.push(Chunk::Event(event(2, &["t"], "2")));
        assert!(backlog.committed_rest(Framing::Chunked).is_empty(), "nothing begun: all may go");
        let mut sock = Tight { room: 3, ..Tight::default() };
        let mut written = Tally::default();
        backlog.flush(&mut sock, Framing::Chunked, &mut written).unwrap();
        let mut whole = sock.got.clone();
        whole.extend_from_slice(backlog.committed_rest(Framing::Chunked));
        assert_eq!(whole, one.frame().chunked(), "begun: exactly its rest");

        let mut head = Backlog::new(4);
        head.push(Chunk::Owned(b"HEAD".as_slice().into()));
        head.push(Chunk::Event(one));
        assert_eq!(head.committed_rest(Framing::Plain), b"HEAD");
    }

    #[test]
    fn subscriptions_track_positions() {
        let mut subs = Subscriptions::Many(vec![(1, 5), (2, 6)].into_boxed_slice());
        subs.set_position(2, 0);
        assert_eq!(subs.iter().collect::<Vec<_>>(), [(1, 5), (2, 0)]);
        let mut one = Subscriptions::One(3, 9);
        one.set_position(3, 1);
        assert_eq!(one.iter().collect::<Vec<_>>(), [(3, 1)]);
    }
}
