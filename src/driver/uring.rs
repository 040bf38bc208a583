//! The io_uring driver: a hybrid. Readiness, accept and the waker are the
//! epoll driver's own (an [`Epoll`] inside); only the fan-out's writes go
//! through a ring, one slice of up to [`RING_ENTRIES`] vectored sends
//! submitted with one `io_uring_enter` that also waits for all of them.
//!
//! Why submit-and-wait rather than leaving writes in flight: every write of
//! a slice completes before [`Driver::write_batch`] returns, so
//!
//! - the iovecs and message headers live in one per-worker [`Pool`] sized at
//!   start (no allocation per client or per event), reused by the next slice;
//! - the frames they point at are the batch's `Arc<Event>`s, which the
//!   caller holds for the whole call;
//! - a connection can never be closed with a write in flight: the reactor
//!   closes connections only between calls, when the ring is empty;
//! - outcomes are those of a non-blocking `writev` (`MSG_DONTWAIT`: a full
//!   socket completes with `-EAGAIN` at once instead of waiting in the
//!   kernel), so partial writes, backlogs, slow consumers, heartbeats and
//!   shutdown are the fan-out core's, unchanged.
//!
//! The ring is created disabled and enabled by the worker thread on its
//! first write: `IORING_SETUP_SINGLE_ISSUER` binds it to that thread, and
//! `DEFER_TASKRUN` then runs completion work only inside our own
//! `io_uring_enter`, never as an interrupt of the worker (Linux ≥ 6.1). Of
//! the two setups measured (PERFORMANCE.md, issue 16) it used less CPU in
//! three of four cells at 10,000 subscribers and up, within the noise.

use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use io_uring::{IoUring, Probe, opcode, types};
use ssehub_core::Event;
use ssehub_core::bus::Wake;
use ssehub_core::fanout::{WRITE_SLICE, Write as FrameWrite, Wrote};
use ssehub_core::subscriber::MAX_IOV;

use super::epoll::Epoll;
use super::{Driver, Ready, write_now};

/// Submission-queue entries: one fan-out slice fits in one submission.
pub const RING_ENTRIES: usize = WRITE_SLICE;
/// `sendmsg` flags: never wait in the kernel, never raise SIGPIPE.
const SEND_FLAGS: u32 = (libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as u32;

/// The memory the kernel reads while a slice is in flight: one message
/// header per submission entry and up to [`MAX_IOV`] iovecs each, allocated
/// once. The iovecs of a slice are packed one write after the other, so a
/// slice of one-frame writes touches 8 KiB of it, not all 512 KiB: the pool
/// is zeroed memory that the kernel maps in only as it is first written.
struct Pool {
    /// `RING_ENTRIES × MAX_IOV` entries; a slice uses a prefix.
    iovecs: Box<[libc::iovec]>,
    /// One per entry, pointing into `iovecs`.
    msgs: Box<[libc::msghdr]>,
}

// SAFETY: the raw pointers in the pool point at frames and at the pool
// itself only during `Uring::write_batch`, on the thread that calls it; in
// between they are stale and never read. Moving the pool to the worker
// thread (once, before its first write) moves no borrowed data.
unsafe impl Send for Pool {}

impl Pool {
    fn new() -> Pool {
        // SAFETY: iovec and msghdr are plain C structs of pointers and
        // integers, for which all-zero bytes are valid (empty) values.
        unsafe { Pool { iovecs: zeroed_slice(RING_ENTRIES * MAX_IOV), msgs: zeroed_slice(RING_ENTRIES) } }
    }
}

/// `len` all-zero `T`s on the heap, from `alloc_zeroed`: pages the kernel
/// maps in only when first written.
///
/// # Safety
///
/// All-zero bytes must be a valid `T`; `T` is not zero-sized and `len > 0`.
unsafe fn zeroed_slice<T>(len: usize) -> Box<[T]> {
    let Ok(layout) = std::alloc::Layout::array::<T>(len) else { panic!("pool of {len} entries overflows") };
    // SAFETY: the layout has a non-zero size (the caller's promise).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of
    // `[T; len]`, and its `len` zeroed values are valid `T`s (the caller's promise).
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) }
}

/// One worker's hybrid driver: epoll for readiness, io_uring for the fan-out.
pub struct Uring {
    /// Readiness, accept and the waker: the epoll driver, unchanged.
    epoll: Epoll,
    /// Empty between [`Driver::write_batch`] calls.
    ring: IoUring,
    /// The ring was created disabled: enabled on the worker's first write
    /// (`Some(true)`), or that failed and this worker writes with `writev`.
    enabled: Option<bool>,
    /// Message headers and iovecs of the slice in flight.
    pool: Pool,
}

impl Uring {
    /// A driver accepting from `listener`, writing through `ring` (from [`ring`]).
    pub fn new(listener: std::net::TcpListener, ring: IoUring) -> io::Result<Uring> {
        Ok(Uring { ring, epoll: Epoll::new(listener)?, enabled: None, pool: Pool::new() })
    }

    /// Writes `writes` (at most [`RING_ENTRIES`]) with one submission, and
    /// returns once every one of them has completed.
    fn write_chunk<'a>(
        &mut self,
        batch: &[Arc<Event>],
        writes: &mut [FrameWrite],
        sock_of: &impl Fn(u32) -> Option<&'a TcpStream>,
    ) {
        debug_assert!(writes.len() <= RING_ENTRIES);
        let mut in_flight = 0;
        let mut used = 0; // iovecs taken by earlier writes of this chunk
        {
            let mut sq = self.ring.submission();
            for (i, write) in writes.iter_mut().enumerate() {
                let Some(sock) = sock_of(write.key) else {
                    write.wrote = Wrote::Failed;
                    continue;
                };
                let iov = &mut self.pool.iovecs[used..used + MAX_IOV];
                let mut n = 0;
                for frame in write.frames(batch) {
                    iov[n] = libc::iovec { iov_base: frame.as_ptr() as *mut libc::c_void, iov_len: frame.len() };
                    n += 1;
                }
                if n == 0 {
                    write.wrote = Wrote::Bytes(0); // what an empty writev returns
                    continue;
                }
                used += n;
                let msg = &mut self.pool.msgs[i];
                msg.msg_iov = iov.as_mut_ptr();
                msg.msg_iovlen = n as _;
                let entry = opcode::SendMsg::new(types::Fd(sock.as_raw_fd()), msg as *const libc::msghdr)
                    .flags(SEND_FLAGS)
                    .build()
                    .user_data(i as u64);
                // SAFETY: the entry points at `msg`, its iovecs and the
                // frames of `batch`. The loop below does not return before
                // every entry pushed here has completed, and until then the
                // pool is borrowed by nothing else, `batch` is borrowed by our
                // caller and the sockets are borrowed from the connection
                // table, which cannot close them during this call. The queue
                // has room: it holds RING_ENTRIES, this chunk at most that
                // many, and it is empty on entry (the previous call reaped all).
                let pushed = unsafe { sq.push(&entry) };
                debug_assert!(pushed.is_ok());
                in_flight += 1;
            }
        }
        while in_flight > 0 {
            match self.ring.submit_and_wait(in_flight) {
                Ok(_) => {}
                // EBUSY: completions to reap first; EAGAIN: the kernel is
                // short of memory for a moment; EINTR: a signal.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)) => {}
                Err(e) => {
                    // The kernel may still read entries it has not consumed:
                    // returning would let it read memory we reuse. Not a
                    // condition an input can cause (the ring and its entries are ours).
                    log::error!("io_uring_enter: {e}; aborting, sends may be in flight");
                    std::process::abort();
                }
            }
            for cqe in self.ring.completion() {
                let write = &mut writes[cqe.user_data() as usize];
                in_flight -= 1;
                write.wrote = match cqe.result() {
                    n if n > 0 => Wrote::Bytes(n as usize),
                    0 => Wrote::Failed, // like writev's WriteZero: nothing accepted from a non-empty write
                    n if -n == libc::EAGAIN => Wrote::Bytes(0),
                    n if -n == libc::EINTR => retry_now(batch, write, sock_of),
                    _ => Wrote::Failed,
                };
            }
        }
    }
}

/// A disabled ring of [`RING_ENTRIES`] that can send messages, or why this kernel
/// (or a seccomp filter, or `kernel.io_uring_disabled`) gives us none.
/// `SUBMIT_ALL`: one entry failing at submission (a closed descriptor) does
/// not leave the rest of the slice unsubmitted.
pub fn ring() -> io::Result<IoUring> {
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_submit_all()
        .setup_r_disabled()
        .build(RING_ENTRIES as u32)?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    if !probe.is_supported(opcode::SendMsg::CODE) {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "no IORING_OP_SENDMSG"));
    }
    Ok(ring)
}

/// A send interrupted in the kernel, written again the epoll way (a full
/// socket must be reported as 0 only when it is full: an edge follows then).
fn retry_now<'a>(batch: &[Arc<Event>], write: &FrameWrite, sock_of: &impl Fn(u32) -> Option<&'a TcpStream>) -> Wrote {
    let Some(sock) = sock_of(write.key) else { return Wrote::Failed };
    let mut iov = [IoSlice::new(&[]); MAX_IOV];
    let n = write.iovecs(batch, &mut iov);
    match write_now(sock, &iov[..n]) {
        Ok(n) => Wrote::Bytes(n),
        Err(_) => Wrote::Failed,
    }
}

impl Driver for Uring {
    fn poll(&mut self, ready: &mut Vec<Ready>, timeout: Option<Duration>) -> io::Result<()> {
        self.epoll.poll(ready, timeout)
    }

    fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        self.epoll.accept()
    }

    fn stop_accepting(&mut self) {
        self.epoll.stop_accepting();
    }

    fn watch(&mut self, sock: &TcpStream, key: usize) -> io::Result<()> {
        self.epoll.watch(sock, key)
    }

    fn forget(&mut self, sock: &TcpStream) {
        // Nothing of this socket is in flight: the ring is empty between writes.
        self.epoll.forget(sock);
    }

    fn write_batch<'a>(
        &mut self,
        batch: &[Arc<Event>],
        writes: &mut [FrameWrite],
        sock_of: impl Fn(u32) -> Option<&'a TcpStream>,
    ) {
        let enabled = *self.enabled.get_or_insert_with(|| match self.ring.submitter().register_enable_rings() {
            Ok(()) => true,
            Err(e) => {
                // A ring was built and probed at start; should enabling it
                // fail here, this worker writes the epoll way, not at all.
                log::error!("io_uring: enabling the ring: {e}; this worker writes with writev");
                false
            }
        });
        if !enabled {
            return super::write_each(batch, writes, sock_of);
        }
        for chunk in writes.chunks_mut(RING_ENTRIES) {
            self.write_chunk(batch, chunk, &sock_of);
        }
    }

    fn waker(&self) -> Arc<dyn Wake> {
        self.epoll.waker()
    }
}
