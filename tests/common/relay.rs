//! A TCP relay on loopback that delays every byte by the same time in each
//! direction: a round trip to the server behind it, for tests (and the
//! publish benchmark) of what waits on round trips. Order is kept per
//! direction; nothing is batched or dropped. Stopped, with every
//! connection it relays, when dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub struct Relay {
    /// Where clients connect.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Both ends of every relayed connection, shut down on drop.
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Relay {
    /// Relays connections to `target`, `one_way` late in each direction.
    pub fn start(target: SocketAddr, one_way: Duration) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay bind");
        let addr = listener.local_addr().expect("relay addr");
        let stop = Arc::new(AtomicBool::new(false));
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (stop, sockets) = (Arc::clone(&stop), Arc::clone(&sockets));
            thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(upstream) = TcpStream::connect(target) else { continue };
                    let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
                    let clones = (client.try_clone(), upstream.try_clone(), client.try_clone(), upstream.try_clone());
                    let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = clones else { continue };
                    sockets.lock().unwrap_or_else(|p| p.into_inner()).extend([c3, u3]);
                    thread::spawn(move || pipe(client, upstream, one_way));
                    thread::spawn(move || pipe(u2, c2, one_way));
                }
            })
        };
        Relay { addr, stop, sockets, acceptor: Some(acceptor) }
    }

    /// `redis://` URL of the relay, for a node that should reach Redis through it.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (chunks, due) = mpsc::channel::<(Instant, Vec<u8>)>();
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if chunks.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    for (at, bytes) in due {
        // The delay itself: this thread is the wire.
        thread::sleep(at.saturating_duration_since(Instant::now()));
        if to.write_all(&bytes).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = reader.join();
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the acceptor
        for socket in self.sockets.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}
