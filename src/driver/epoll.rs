//! The epoll driver, through mio: one `Poll` per worker, edge-triggered, with
//! its own `SO_REUSEPORT` listener and an `eventfd` waker.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use ssehub_core::Event;
use ssehub_core::bus::Wake;
use ssehub_core::fanout::Write as FrameWrite;

use super::{Driver, Ready, write_each};

/// The listener's token; connection tokens are their slab keys.
const LISTENER: Token = Token(usize::MAX - 1);
/// The waker's token.
const WAKER: Token = Token(usize::MAX - 2);
/// Readiness events taken per poll.
const EVENTS: usize = 1024;

/// One worker's epoll instance.
pub struct Epoll {
    /// The epoll instance.
    poll: Poll,
    /// Reused event buffer.
    events: Events,
    /// This worker's listener; `None` once shutting down.
    listener: Option<TcpListener>,
    /// Shared with other threads to wake `poll`.
    waker: Arc<MioWaker>,
}

/// mio's waker as the bus's [`Wake`].
struct MioWaker(Waker);

impl Wake for MioWaker {
    fn wake(&self) -> io::Result<()> {
        self.0.wake()
    }
}

impl Epoll {
    /// A driver accepting from `listener` (already bound and listening, non-blocking).
    pub fn new(listener: std::net::TcpListener) -> io::Result<Epoll> {
        let poll = Poll::new()?;
        let waker = Arc::new(MioWaker(Waker::new(poll.registry(), WAKER)?));
        let mut listener = TcpListener::from_std(listener);
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Epoll { poll, events: Events::with_capacity(EVENTS), listener: Some(listener), waker })
    }
}

impl Driver for Epoll {
    fn poll(&mut self, ready: &mut Vec<Ready>, timeout: Option<Duration>) -> io::Result<()> {
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        for event in self.events.iter() {
            ready.push(match event.token() {
                LISTENER => Ready::Accept,
                WAKER => Ready::Wake,
                Token(key) => {
                    let failed = event.is_error();
                    Ready::Conn {
                        key,
                        readable: event.is_readable() || event.is_read_closed() || failed,
                        writable: event.is_writable() || failed,
                    }
                }
            });
        }
        Ok(())
    }

    fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        let Some(listener) = &self.listener else { return Err(io::ErrorKind::WouldBlock.into()) };
        // accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC: no fcntl per connection.
        let (sock, addr) = listener.accept()?;
        Ok((TcpStream::from(sock), addr))
    }

    fn stop_accepting(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
    }

    fn watch(&mut self, sock: &TcpStream, key: usize) -> io::Result<()> {
        // Both interests once, edge-triggered: never re-registered.
        let fd = sock.as_raw_fd();
        self.poll.registry().register(&mut SourceFd(&fd), Token(key), Interest::READABLE | Interest::WRITABLE)
    }

    fn forget(&mut self, _sock: &TcpStream) {
        // Closing the descriptor removes it from the epoll set.
    }

    fn write_batch<'a>(
        &mut self,
        batch: &[Arc<Event>],
        writes: &mut [FrameWrite],
        sock_of: impl Fn(u32) -> Option<&'a TcpStream>,
    ) {
        write_each(batch, writes, sock_of);
    }

    fn waker(&self) -> Arc<dyn Wake> {
        Arc::clone(&self.waker) as Arc<dyn Wake>
    }
}
