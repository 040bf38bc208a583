//! Connection state: what one socket is doing, and the writes it needs.
//!
//! A connection starts reading requests ([`State::Http`]). A subscribe turns
//! it into an event stream ([`State::Stream`]): its request buffers are freed
//! and it keeps only its socket, its subscriptions and a 64-bit batch mask, so
//! an idle subscriber costs well under 100 bytes here (see `PERFORMANCE.md`).
//! Only a subscriber that cannot keep up gets a [`Backlog`]: references to
//! shared frames, bounded by `--max-backlog`, freed once drained.
//!
//! After an error or a `Connection: close`, a connection lingers
//! ([`State::Linger`]): its write side is shut so the client sees the response
//! and the end of the stream, and input is discarded until the client closes
//! or a short deadline passes. Closing at once could turn unread input into a
//! reset that destroys the response before the client reads it.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

use mio::net::TcpStream;

use crate::event::Event;
use crate::http::{Limits, RequestReader};
use crate::metrics::Tally;
use crate::topics::TopicId;

/// Most frames handed to one `writev`.
pub const MAX_IOV: usize = 64;

#[derive(Debug)]
pub struct Conn {
    pub sock: TcpStream,
    pub stamp: u32,       // identifies this connection's current deadline entries
    pub loopback: bool,   // peer address is loopback (publishing without a token)
    pub over_limit: bool, // accepted past --max-connections: answer 503 or retry-and-close
    pub received: u16,    // subscribers: bytes read after the request (they should send none)
    pub state: State,
}

#[derive(Debug)]
pub enum State {
    Http(Box<Http>),
    Stream(Stream),
    Linger { discarded: usize },
}

/// A connection reading requests and writing responses.
#[derive(Debug)]
pub struct Http {
    pub reader: RequestReader,
    pub out: Vec<u8>,               // response bytes not yet written
    pub close_after: bool,          // close once `out` is written
    pub failed: bool,               // closing after an error: linger, input may be unread
    pub peer_closed: bool,          // the client shut its write side
    pub read_paused: bool,          // stopped reading until `out` drains (pipelining back-pressure)
    pub deadline: u64,              // Clock ms: 408 (mid-request) or close (idle) after this
    pub awaiting: Option<Awaiting>, // a publish waiting for Redis (cluster mode)
}

/// What the response to a publish sent to Redis needs once the ids come back.
#[derive(Debug)]
pub struct Awaiting {
    pub keep_alive: bool,
    pub cors: Option<String>,
}

impl Http {
    pub fn new(limits: Limits) -> Self {
        Http {
            reader: RequestReader::new(limits),
            out: Vec::new(),
            close_after: false,
            failed: false,
            peer_closed: false,
            read_paused: false,
            deadline: 0,
            awaiting: None,
        }
    }
}

/// A subscriber.
#[derive(Debug)]
pub struct Stream {
    pub batch: u64,     // bit i: event i of the fan-out batch in progress goes here
    pub filtered: bool, // skips events up to its entry in the worker's filters (see fanout)
    pub subs: Subscriptions,
    pub backlog: Option<Box<Backlog>>, // only while the socket cannot take everything
}

/// The topics of one subscriber and its position in each topic's list.
#[derive(Debug)]
pub enum Subscriptions {
    One(TopicId, u32),
    Many(Box<[(TopicId, u32)]>),
}

impl Subscriptions {
    pub fn iter(&self) -> impl Iterator<Item = (TopicId, u32)> + '_ {
        let slice: &[(TopicId, u32)] = match self {
            Subscriptions::One(topic, pos) => return SubsIter::One(Some((*topic, *pos))),
            Subscriptions::Many(list) => list,
        };
        SubsIter::Many(slice.iter())
    }

    pub fn set_position(&mut self, topic: TopicId, pos: u32) {
        match self {
            Subscriptions::One(t, p) if *t == topic => *p = pos,
            Subscriptions::One(..) => {}
            Subscriptions::Many(list) => {
                if let Some(entry) = list.iter_mut().find(|(t, _)| *t == topic) {
                    entry.1 = pos;
                }
            }
        }
    }
}

enum SubsIter<'a> {
    One(Option<(TopicId, u32)>),
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
    Event(Arc<Event>),     // a shared event frame
    Static(&'static [u8]), // heartbeat, gap notice
    Owned(Box<[u8]>),      // this connection's response head
}

impl Chunk {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Event(event) => event.frame(),
            Chunk::Static(bytes) => bytes,
            Chunk::Owned(bytes) => bytes,
        }
    }
}

/// What a flush achieved.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Flushed {
    Drained,
    Blocked,
}

/// Frames a slow subscriber has yet to take, oldest first.
#[derive(Debug)]
pub struct Backlog {
    chunks: VecDeque<Chunk>,
    offset: usize,       // bytes of the front chunk already written
    limit: usize,        // more queued than this: drop the subscriber
    hold: Option<usize>, // only this many front chunks may be written (replay pending)
}

impl Backlog {
    pub fn new(limit: usize) -> Self {
        Backlog { chunks: VecDeque::new(), offset: 0, limit, hold: None }
    }

    pub fn push(&mut self, chunk: Chunk) {
        self.chunks.push_back(chunk);
    }

    pub fn extend(&mut self, chunks: impl IntoIterator<Item = Chunk>) {
        self.chunks.extend(chunks);
    }

    /// Queues the rest of a partly written run of frames.
    pub fn push_rest<'a>(&mut self, frames: impl Iterator<Item = &'a Arc<Event>>, mut written: usize) {
        for event in frames {
            let len = event.frame().len();
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

    pub fn over_limit(&self) -> bool {
        self.chunks.len() > self.limit
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

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

    pub fn is_held(&self) -> bool {
        self.hold.is_some()
    }

    /// Writes queued chunks until done or the socket is full.
    pub fn flush(&mut self, sock: &mut impl Write, written: &mut Tally) -> io::Result<Flushed> {
        loop {
            let writable = self.hold.unwrap_or(usize::MAX).min(self.chunks.len());
            if writable == 0 {
                break;
            }
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for chunk in self.chunks.iter().take(MAX_IOV.min(writable)) {
                let bytes = chunk.bytes();
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
                let left = front.bytes().len() - self.offset;
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

/// Writes frames with one `writev`. Returns the bytes written (0 when the socket is full).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventId;

    /// A socket that takes at most `room` bytes, then would block.
    struct Tight {
        room: usize,
        got: Vec<u8>,
    }

    impl Write for Tight {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
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

    fn event(n: u64) -> Arc<Event> {
        let mut buf = vec![0; Event::reserve()];
        buf.extend_from_slice(format!("data: {n}\n\n").as_bytes());
        let mut event = Event::new(Box::new([]), buf);
        event.set_id(EventId { ms: n, seq: 0 });
        Arc::new(event)
    }

    #[test]
    fn a_backlog_resumes_exactly_where_the_socket_stopped() {
        let events: Vec<_> = (1..=5).map(event).collect();
        let all: Vec<u8> = events.iter().flat_map(|e| e.frame().to_vec()).collect();
        for first in 0..all.len() {
            let mut sock = Tight { room: first, got: Vec::new() };
            let wrote = write_frames(&mut sock, events.iter().map(|e| e.frame())).unwrap();
            let mut backlog = Backlog::new(10);
            backlog.push_rest(events.iter(), wrote);
            let mut written = Tally::default();
            for step in [3, 0, 7, usize::MAX] {
                sock.room = step;
                if backlog.flush(&mut sock, &mut written).unwrap() == Flushed::Drained {
                    break;
                }
            }
            assert!(backlog.is_empty());
            assert_eq!(sock.got, all, "first write of {first} bytes");
            assert_eq!(written.bytes as usize, all.len() - wrote);
        }
    }

    #[test]
    fn a_held_backlog_writes_its_head_then_the_replay_before_live_frames() {
        let mut backlog = Backlog::new(4);
        backlog.push(Chunk::Static(b"HEAD;"));
        backlog.hold();
        backlog.push(Chunk::Event(event(3)));
        let mut sock = Tight { room: usize::MAX, got: Vec::new() };
        let mut written = Tally::default();
        assert_eq!(backlog.flush(&mut sock, &mut written).unwrap(), Flushed::Blocked);
        assert_eq!(sock.got, b"HEAD;");
        backlog.release([Chunk::Event(event(1)), Chunk::Event(event(2))]);
        assert!(!backlog.is_held());
        assert_eq!(backlog.flush(&mut sock, &mut written).unwrap(), Flushed::Drained);
        let want: Vec<u8> = b"HEAD;".iter().copied().chain((1..=3).flat_map(|n| event(n).frame().to_vec())).collect();
        assert_eq!(sock.got, want);
        assert_eq!(written.frames, 3);
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

#[cfg(test)]
mod size_tests {
    /// The per-subscriber footprint `PERFORMANCE.md` states: a slab slot holds
    /// a `Conn`; add 4 bytes per topic-list entry and 16 per heartbeat deadline.
    /// (Debug builds of mio add a selector id to every socket.)
    #[test]
    fn a_connection_fits_in_one_cache_line() {
        let socket_extra = std::mem::size_of::<mio::net::TcpStream>() - 4;
        assert!(std::mem::size_of::<super::Conn>() <= 64 + socket_extra, "{}", std::mem::size_of::<super::Conn>());
    }
}
