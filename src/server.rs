//! Starting and stopping: bind one `SO_REUSEPORT` listener per worker, start
//! the workers and the backplane, turn SIGTERM/SIGINT into a graceful
//! shutdown, wait for them.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use socket2::{Domain, Protocol, Socket, Type};
use ssehub_core::backplane::Backplane;
use ssehub_core::bus::{Bus, Wake};

use crate::auth::Authorizer;
use crate::auth::jwt::JwtAuthorizer;
use crate::auth::token::TokenAuthorizer;
use crate::backplane::local::Local;
use crate::driver::{Driver, Drivers};
use crate::journal::Log;
use crate::metrics::WorkerStats;
use crate::reactor::{Shared, Worker};
use crate::settings::Settings;

/// Connections the kernel queues per listener before we accept them.
const LISTEN_BACKLOG: i32 = 4096;

/// What the backplane needs started once the workers exist.
enum BackplaneThreads {
    /// Standalone: nothing to start.
    None,
    /// Cluster mode's follower and command thread.
    #[cfg(feature = "redis")]
    Redis(crate::backplane::redis::Threads),
}

/// A bound, not yet running server.
pub struct Server {
    /// Shared with every worker.
    shared: Arc<Shared>,
    /// One driver per worker, each with its listener.
    drivers: Drivers,
    /// The address bound.
    local_addr: SocketAddr,
    /// Started by [`Server::run`].
    threads: BackplaneThreads,
    /// SIGTERM/SIGINT, caught from [`Server::bind`] on: once the address is
    /// printed, a signal is a graceful shutdown, never the default kill.
    signals: signal_hook::iterator::Signals,
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
    Ok(socket.into())
}

/// Fails if another socket already listens on `addr`. `SO_REUSEPORT` would
/// let a second ssehub bind the same port without error, and the kernel
/// would then split connections between the two processes, each subscriber
/// silently getting a share of the events. A socket without the option
/// cannot be bound next to a listener, so binding one (and dropping it)
/// tells; `SO_REUSEADDR` keeps old connections in TIME_WAIT from counting.
fn ensure_unused(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(()); // the kernel picks a free port
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("address in use: something already listens on {addr} (another ssehub?)"),
        )),
        Err(e) => Err(e),
    }
}

impl Server {
    /// Binds every worker's listener and prepares the workers; nothing runs yet.
    /// Refuses an address another process already listens on.
    pub fn bind(settings: Settings) -> io::Result<Server> {
        let count = settings.workers;
        if settings.journal.is_some() && settings.cluster.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--data-dir is for standalone mode: with --redis the Redis stream is already the durable log \
                 (drop --data-dir, or --redis)",
            ));
        }
        ensure_unused(settings.listen)?;
        let first = reuseport_listener(settings.listen)?;
        let local_addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..count {
            listeners.push(reuseport_listener(local_addr)?);
        }
        let drivers = Drivers::open(settings.io, listeners)?;
        let wakers: Vec<Arc<dyn Wake>> = drivers.wakers();
        log::info!(
            "{count} workers ({}), max {} connections, history {} per topic, {} s, {} MiB",
            drivers.name(),
            settings.reactor.max_connections,
            settings.streams.history,
            settings.streams.history_ttl.as_secs(),
            settings.streams.history_memory >> 20
        );
        let authorizer: Box<dyn Authorizer> = if settings.auth.jwt() {
            Box::new(JwtAuthorizer::new(&settings.auth)?)
        } else {
            Box::new(TokenAuthorizer::new(&settings.auth))
        };
        let mut bus = Bus::new(wakers, settings.streams.history_limits());
        let (restored_keys, journal_stats) = match &settings.journal {
            None => (Vec::new(), None),
            Some(journal) => {
                let started = std::time::Instant::now();
                let mut events = 0;
                let (log, recovered) = Log::open(journal.clone(), |batch| events += bus.restore(batch))?;
                if let Some(floor) = recovered.floor {
                    bus.restore_floor(floor);
                }
                if recovered.lost {
                    bus.restored_with_loss();
                }
                log::info!(
                    "durable history: {events} events restored in {} ms (--fsync {:?})",
                    started.elapsed().as_millis(),
                    journal.fsync
                );
                log.start_sync_thread()?;
                let stats = log.stats();
                bus.set_journal(Box::new(log));
                (recovered.keys, Some(stats))
            }
        };
        let bus = Arc::new(bus);
        let (backplane, threads): (Box<dyn Backplane>, BackplaneThreads) = match &settings.cluster {
            None => (
                Box::new(Local::new(Arc::clone(&bus), &settings.publish, restored_keys, journal_stats)),
                BackplaneThreads::None,
            ),
            #[cfg(feature = "redis")]
            Some(cluster) => {
                let (cluster, threads) = crate::backplane::redis::Cluster::new(cluster.clone())?;
                (Box::new(cluster), BackplaneThreads::Redis(threads))
            }
            #[cfg(not(feature = "redis"))]
            Some(_) => return Err(io::Error::other("--redis: this build has no Redis support (feature `redis`)")),
        };
        let signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])?;
        let shared = Arc::new(Shared {
            authorizer,
            backplane,
            bus,
            stats: (0..count).map(|_| WorkerStats::default()).collect(),
            open: AtomicUsize::new(0),
            shutdown: Arc::new(AtomicBool::new(false)),
            started: std::time::Instant::now(),
            io_backend: drivers.name(),
            settings,
        });
        Ok(Server { shared, drivers, local_addr, threads, signals })
    }

    /// The address bound (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops the server gracefully, as SIGTERM does.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::clone(&self.shared))
    }

    /// Runs until SIGTERM/SIGINT (or a [`ShutdownHandle`]) and every worker has stopped.
    pub fn run(self) -> io::Result<()> {
        let workers = match self.drivers {
            Drivers::Epoll(drivers) => spawn_workers(drivers, &self.shared)?,
            Drivers::Uring(drivers) => spawn_workers(drivers, &self.shared)?,
        };
        match self.threads {
            BackplaneThreads::None => {}
            #[cfg(feature = "redis")]
            BackplaneThreads::Redis(threads) => crate::backplane::redis::Cluster::start(
                threads,
                Arc::clone(&self.shared.bus),
                Arc::clone(&self.shared.shutdown),
            )?,
        }
        let mut signals = self.signals;
        let signal_handle = signals.handle();
        let shared = Arc::clone(&self.shared);
        let signal_thread = thread::Builder::new().name("ssehub-signals".into()).spawn(move || {
            for signal in signals.forever() {
                if shared.shutdown.swap(true, Ordering::SeqCst) {
                    log::warn!("second signal {signal}: exiting now");
                    std::process::exit(1);
                }
                log::info!("signal {signal}: shutting down (grace {:?})", shared.settings.reactor.shutdown_grace);
                shared.bus.wake_all();
            }
        })?;
        let mut result = Ok(());
        for worker in workers {
            if worker.join().is_err() {
                result = Err(io::Error::other("a worker panicked"));
            }
        }
        signal_handle.close();
        let _ = signal_thread.join();
        log::info!("stopped");
        result
    }
}

/// One worker thread per driver (a worker is generic over its driver).
fn spawn_workers<D: Driver + Send + 'static>(
    drivers: Vec<D>,
    shared: &Arc<Shared>,
) -> io::Result<Vec<thread::JoinHandle<()>>> {
    let mut workers = Vec::with_capacity(drivers.len());
    for (index, driver) in drivers.into_iter().enumerate() {
        let worker = Worker::new(index, driver, Arc::clone(shared));
        workers.push(thread::Builder::new().name(format!("ssehub-worker-{index}")).spawn(move || worker.run())?);
    }
    Ok(workers)
}

/// Stops a running server gracefully from another thread.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Shared>);

impl ShutdownHandle {
    /// Starts the graceful shutdown.
    pub fn shutdown(&self) {
        self.0.shutdown.store(true, Ordering::SeqCst);
        self.0.bus.wake_all();
    }
}
