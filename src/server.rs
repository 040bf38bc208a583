//! Starting and stopping: bind one `SO_REUSEPORT` listener per worker, start
//! the workers, turn SIGTERM/SIGINT into a graceful shutdown, wait for them.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use mio::net::TcpListener;
use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use std::sync::mpsc::{self, Receiver};

use crate::bus::Bus;
use crate::cluster::{self, Cluster, Request};
use crate::config::Config;
use crate::metrics::WorkerStats;
use crate::reactor::{Shared, WAKER, Worker};

const LISTEN_BACKLOG: i32 = 4096;

/// A bound, not yet running server.
pub struct Server {
    shared: Arc<Shared>,
    workers: Vec<(Poll, TcpListener)>,
    local_addr: SocketAddr,
    cluster_requests: Option<Receiver<Request>>, // handed to the command thread at start
}

/// Binds `addr` with `SO_REUSEPORT`, so every worker can own a listener on one port.
fn reuseport_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Small frames must leave at once, not wait for the previous one's ACK.
    // Accepted sockets inherit this on Linux: one setsockopt here instead of
    // one per connection.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

impl Server {
    pub fn bind(config: Config) -> io::Result<Server> {
        let open_files = crate::sys::raise_open_file_limit().unwrap_or(1024);
        let max_connections = config.max_connections(open_files);
        let count = config.workers();
        let first = reuseport_listener(config.listen)?;
        let local_addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..count {
            listeners.push(reuseport_listener(local_addr)?);
        }
        let mut workers = Vec::with_capacity(count);
        let mut wakers = Vec::with_capacity(count);
        for listener in listeners {
            let poll = Poll::new()?;
            wakers.push(Waker::new(poll.registry(), WAKER)?);
            workers.push((poll, listener));
        }
        log::info!(
            "{count} workers, max {max_connections} connections (open-file limit {open_files}), history {} per topic",
            config.history
        );
        let (cluster, cluster_requests) = match &config.redis {
            Some(url) => {
                redis::Client::open(url.as_str()).map_err(|e| io::Error::other(format!("--redis {url:?}: {e}")))?;
                let (requests, receiver) = mpsc::channel();
                log::info!("cluster mode: following stream {:?}", config.redis_stream);
                (Some(Cluster { requests, backplane: Arc::default() }), Some(receiver))
            }
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            cluster,
            bus: Bus::new(wakers),
            stats: (0..count).map(|_| WorkerStats::default()).collect(),
            open: AtomicUsize::new(0),
            max_connections,
            shutdown: AtomicBool::new(false),
            config,
        });
        Ok(Server { shared, workers, local_addr, cluster_requests })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops the server gracefully, as SIGTERM does.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::clone(&self.shared))
    }

    /// Runs until SIGTERM/SIGINT (or a [`ShutdownHandle`]) and every worker has stopped.
    pub fn run(self) -> io::Result<()> {
        let mut threads = Vec::with_capacity(self.workers.len());
        for (index, (poll, listener)) in self.workers.into_iter().enumerate() {
            let worker = Worker::new(index, poll, listener, Arc::clone(&self.shared))?;
            threads.push(thread::Builder::new().name(format!("ssehub-worker-{index}")).spawn(move || worker.run())?);
        }
        if let Some(requests) = self.cluster_requests {
            let shared = Arc::clone(&self.shared);
            thread::Builder::new().name("ssehub-follower".into()).spawn(move || cluster::follower::run(shared))?;
            let shared = Arc::clone(&self.shared);
            thread::Builder::new()
                .name("ssehub-redis".into())
                .spawn(move || cluster::commands::run(shared, requests))?;
        }
        let mut signals =
            signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])?;
        let signal_handle = signals.handle();
        let handle = self.shared.clone();
        let signal_thread = thread::Builder::new().name("ssehub-signals".into()).spawn(move || {
            for signal in signals.forever() {
                if handle.shutdown.swap(true, Ordering::SeqCst) {
                    log::warn!("second signal {signal}: exiting now");
                    std::process::exit(1);
                }
                log::info!("signal {signal}: shutting down (grace {:?})", handle.config.shutdown_grace);
                handle.bus.wake_all();
            }
        })?;
        let mut result = Ok(());
        for thread in threads {
            if thread.join().is_err() {
                result = Err(io::Error::other("a worker panicked"));
            }
        }
        signal_handle.close();
        let _ = signal_thread.join();
        log::info!("stopped");
        result
    }
}

#[derive(Clone)]
pub struct ShutdownHandle(Arc<Shared>);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.0.shutdown.store(true, Ordering::SeqCst);
        self.0.bus.wake_all();
    }
}
