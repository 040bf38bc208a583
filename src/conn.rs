//! Connection state: what one socket is doing.
//!
//! A connection starts exchanging requests and responses
//! ([`State::Exchange`]). A subscribe turns it into an event stream
//! ([`State::Subscriber`]): its request buffers are freed and it keeps only
//! its socket, its subscriptions and a 64-bit batch mask, so an idle
//! subscriber costs a 56-byte slot here (about 150 B of RSS measured with
//! list entries, deadlines and slack: see `PERFORMANCE.md`; the
//! size test below keeps it so).
//!
//! A stream the hub ends on purpose (shutdown, a slow consumer dropped)
//! ends cleanly ([`State::Ending`]): the rest of a begun frame, then the
//! terminating chunk, so a client can tell it from a crash.
//!
//! After an error or a `Connection: close`, a connection lingers
//! ([`State::Linger`]): its write side is shut so the client sees the response
//! and the end of the stream, and input is discarded until the client closes
//! or a short deadline passes. Closing at once could turn unread input into a
//! reset that destroys the response before the client reads it.

use std::net::TcpStream;

use crate::app::Admitted;
use ssehub_core::subscriber::Subscriber;
use ssehub_protocol::http::{Limits, RequestReader};

/// One accepted connection, in its worker's slab.
#[derive(Debug)]
pub struct Conn {
    /// The socket (non-blocking, watched by the worker's driver).
    pub sock: TcpStream,
    /// Identifies this connection's current deadline entries and replies.
    pub stamp: u32,
    /// The peer address is loopback (publishing without a token).
    pub loopback: bool,
    /// Accepted past `--max-connections`: answer 503 or retry-and-close.
    pub over_limit: bool,
    /// Subscribers: bytes read after the request (they should send none).
    pub received: u16,
    /// What the connection is doing.
    pub state: State,
}

/// What a connection is doing.
#[derive(Debug)]
pub enum State {
    /// Reading requests and writing responses.
    Exchange(Box<Exchange>),
    /// An event stream.
    Subscriber(Subscriber),
    /// An event stream ending cleanly: writing its last bytes (the rest of
    /// a begun frame, then the terminating chunk), then closing.
    Ending {
        /// Bytes still to write.
        rest: Vec<u8>,
    },
    /// Closing: write side shut, input discarded until the peer closes.
    Linger {
        /// Bytes discarded so far.
        discarded: usize,
    },
}

/// A connection reading requests and writing responses.
#[derive(Debug)]
pub struct Exchange {
    /// The request reader (its buffer is this connection's only input buffer).
    pub reader: RequestReader,
    /// Response bytes not yet written.
    pub out: Vec<u8>,
    /// Close once `out` is written.
    pub close_after: bool,
    /// Closing after an error: linger, input may be unread.
    pub failed: bool,
    /// The client shut its write side.
    pub peer_closed: bool,
    /// Shutting down: answer what was read, read on only to finish a request, then close.
    pub closing: bool,
    /// Shutting down, and a read found the socket empty.
    pub drained: bool,
    /// Clock ms when its publish first found the event queues full (it waits, unread, for room).
    pub busy_since: Option<u64>,
    /// Clock ms: 408 (mid-request) or close (idle) after this.
    pub deadline: u64,
    /// A publish waiting for the backplane's answer.
    pub awaiting: Option<Awaiting>,
    /// What the current request's head was admitted as.
    pub admitted: Option<Box<Admitted>>,
}

/// What the response to a publish sent to the backplane needs once the ids come back.
#[derive(Debug)]
pub struct Awaiting {
    /// Keep the connection open after answering.
    pub keep_alive: bool,
    /// The CORS origin to answer with.
    pub cors: Option<String>,
}

impl Exchange {
    /// A fresh connection's exchange state.
    pub fn new(limits: Limits) -> Self {
        Exchange {
            reader: RequestReader::new(limits),
            out: Vec::new(),
            close_after: false,
            failed: false,
            peer_closed: false,
            closing: false,
            drained: false,
            busy_since: None,
            deadline: 0,
            awaiting: None,
            admitted: None,
        }
    }
}

#[cfg(test)]
mod size_tests {
    /// The per-subscriber footprint `PERFORMANCE.md` states: a slab slot holds
    /// a `Conn`; add 4 bytes per topic-list entry and 16 per heartbeat deadline.
    #[test]
    fn a_connection_fits_in_one_cache_line() {
        assert!(std::mem::size_of::<super::Conn>() <= 64, "{}", std::mem::size_of::<super::Conn>());
    }
}
