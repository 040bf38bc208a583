//! The event-loop mechanism, behind a short contract.
//!
//! As in Redis's `ae.c` (the loop calls a handful of `aeApi*` functions) and
//! mio's `sys` (one file per mechanism), the reactor sees only [`Driver`]:
//!
//! - [`Driver::poll`]: wait (bounded) for readiness; fills [`Ready`] events,
//!   keyed by connection slot. Readiness is edge-triggered: a connection is
//!   reported again only after its reads or writes hit `WouldBlock`.
//!   Spurious events happen; handlers must tolerate them.
//! - [`Driver::accept`] / [`Driver::stop_accepting`]: this worker's listener.
//! - [`Driver::watch`] / [`Driver::forget`]: a connection's lifetime in the
//!   driver (watch once, read and write readiness both; forget before close).
//! - [`Driver::write_batch`]: the fan-out's writes of one slice, each a
//!   vectored write of shared frames; all complete when it returns. This is
//!   where a driver that can submit many operations at once (io_uring) wins.
//! - [`Driver::waker`]: wakes a blocked `poll` from another thread.
//!
//! Reads, and the small writes of request/response traffic, are plain
//! non-blocking system calls on the connection's socket, the same for every
//! driver. There are two drivers: [`epoll`] (through mio) and [`uring`]
//! (epoll's readiness, io_uring's batched writes), chosen once at start by
//! `--io` ([`Drivers::open`]); a worker is generic over its driver, so no
//! operation goes through a virtual call.

pub mod epoll;
pub mod uring;

use std::io::{self, IoSlice, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use ssehub_core::Event;
use ssehub_core::bus::Wake;
use ssehub_core::fanout::{Write as FrameWrite, Wrote};
use ssehub_core::subscriber::MAX_IOV;

use crate::settings::Io;

/// What `--io auto` picks (see PERFORMANCE.md, "io_uring against epoll
/// (issue 16)"): io_uring used 20–30% less CPU per delivery at a steady
/// rate, but not in bursts, where its faster slices coalesce fewer events
/// per write; it missed the target, so the default stays epoll. With
/// `Io::Uring` here, `auto` would take io_uring and fall back to epoll.
pub const AUTO: Io = Io::Epoll;

/// One driver per worker, all of one kind.
pub enum Drivers {
    /// `--io epoll`.
    Epoll(Vec<epoll::Epoll>),
    /// `--io uring`.
    Uring(Vec<uring::Uring>),
}

impl Drivers {
    /// A driver of the kind `io` asks for around each listener. `Auto`
    /// falls back to epoll with one info line when io_uring cannot be set up;
    /// an explicit `Uring` that cannot is an error.
    pub fn open(io: Io, listeners: Vec<std::net::TcpListener>) -> io::Result<Drivers> {
        let auto = io == Io::Auto;
        let io = if auto { AUTO } else { io };
        if io == Io::Epoll {
            return Ok(Drivers::Epoll(listeners.into_iter().map(epoll::Epoll::new).collect::<io::Result<_>>()?));
        }
        // Every worker's ring first: a failure leaves the listeners to epoll.
        match (0..listeners.len()).map(|_| uring::ring()).collect::<io::Result<Vec<_>>>() {
            Ok(rings) => Ok(Drivers::Uring(
                listeners
                    .into_iter()
                    .zip(rings)
                    .map(|(l, ring)| uring::Uring::new(l, ring))
                    .collect::<io::Result<_>>()?,
            )),
            Err(e) if auto => {
                log::info!("--io auto: io_uring unavailable ({e}); using epoll");
                Ok(Drivers::Epoll(listeners.into_iter().map(epoll::Epoll::new).collect::<io::Result<_>>()?))
            }
            Err(e) => Err(io::Error::new(e.kind(), format!("--io uring: cannot set up io_uring: {e}"))),
        }
    }

    /// `"epoll"` or `"uring"`, for the log and `ssehub_io_backend`.
    pub fn name(&self) -> &'static str {
        match self {
            Drivers::Epoll(_) => "epoll",
            Drivers::Uring(_) => "uring",
        }
    }

    /// Every driver's waker, in worker order.
    pub fn wakers(&self) -> Vec<Arc<dyn Wake>> {
        match self {
            Drivers::Epoll(drivers) => drivers.iter().map(Driver::waker).collect(),
            Drivers::Uring(drivers) => drivers.iter().map(Driver::waker).collect(),
        }
    }
}

/// What [`Driver::poll`] found.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Ready {
    /// The listener has connections to accept.
    Accept,
    /// Another thread woke this worker.
    Wake,
    /// A connection can be read or written (or failed: both are set).
    Conn {
        /// Its slot.
        key: usize,
        /// Reading will not block (data, EOF or an error).
        readable: bool,
        /// Writing will not block.
        writable: bool,
    },
}

/// One worker's I/O mechanism; see the module documentation.
pub trait Driver {
    /// Waits up to `timeout` (forever for `None`) and appends what is ready.
    /// An interrupted wait returns `Ok` with nothing added.
    fn poll(&mut self, ready: &mut Vec<Ready>, timeout: Option<Duration>) -> io::Result<()>;

    /// Accepts one connection, non-blocking; `WouldBlock` when none is waiting.
    fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)>;

    /// Closes the listener: no more [`Ready::Accept`].
    fn stop_accepting(&mut self);

    /// Starts reporting readiness of `sock` as slot `key`.
    fn watch(&mut self, sock: &TcpStream, key: usize) -> io::Result<()>;

    /// Stops reporting `sock`; called right before it is closed.
    fn forget(&mut self, sock: &TcpStream);

    /// Performs every write of a fan-out slice: one vectored write of the
    /// frames each [`FrameWrite`] selects from `batch`, to the socket
    /// `sock_of` gives for its key, recording the outcome in its `wrote`.
    fn write_batch<'a>(
        &mut self,
        batch: &[Arc<Event>],
        writes: &mut [FrameWrite],
        sock_of: impl Fn(u32) -> Option<&'a TcpStream>,
    );

    /// A handle that wakes this driver's `poll` from any thread.
    fn waker(&self) -> Arc<dyn Wake>;
}

/// One vectored write on a non-blocking socket: bytes written, 0 if it would block.
pub fn write_now(mut sock: &TcpStream, iov: &[IoSlice<'_>]) -> io::Result<usize> {
    loop {
        return match sock.write_vectored(iov) {
            Ok(0) if iov.iter().any(|b| !b.is_empty()) => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

/// [`Driver::write_batch`] as one system call per write, for drivers that
/// cannot batch.
pub fn write_each<'a>(batch: &[Arc<Event>], writes: &mut [FrameWrite], sock_of: impl Fn(u32) -> Option<&'a TcpStream>) {
    for write in writes {
        let Some(sock) = sock_of(write.key) else {
            write.wrote = Wrote::Failed;
            continue;
        };
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let n = write.iovecs(batch, &mut iov);
        write.wrote = match write_now(sock, &iov[..n]) {
            Ok(n) => Wrote::Bytes(n),
            Err(_) => Wrote::Failed,
        };
    }
}
