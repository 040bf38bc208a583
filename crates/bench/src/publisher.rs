//! The publisher: plain blocking HTTP/1.1 keep-alive connections, one thread
//! each (`--pub-conns`), so publishing never shares a CPU queue with the
//! subscriber reactors and never waits on them.
//!
//! Ordering: every topic is owned by exactly one publish connection
//! (topic `t` → connection `t % pub_conns`), which numbers that topic's
//! events 0, 1, 2, ... and sends each only after the previous one's response.
//! A server therefore receives each topic's events in order, and a
//! subscriber's per-topic order check stays meaningful. The flip side: a
//! single-topic run uses one connection; several topics spread over several.
//!
//! A sequence number is consumed only by a 2xx answer: a rejected or failed
//! publish is counted by cause and the number is reused, so subscribers'
//! loss accounting does not charge the server for events it refused.
//!
//! Pacing (`steady`, `churn`, `soak`, `per-user-paced`): event `i` is due
//! at `start + i / rate`, and the payload carries that due time, not the
//! moment it was sent: latency is measured from the schedule, so a send
//! delayed by a slow answer on its connection (or by the generator) counts
//! against the latency instead of hiding it (coordinated omission, as
//! wrk2 corrects it). The lag behind the schedule is tracked too; a
//! publisher that achieves less than [`MIN_RATE_SHARE`] of the rate is
//! reported as overloaded, and latency is then not reported (it would
//! measure the generator's backlog).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde::Serialize;

use crate::cause::{Cause, CauseCounts};
use crate::http::{self, BodyDecoder, Framing, HeadBuffer};
use crate::payload;
use crate::stats::{Percentiles, new_histogram, percentiles};
use crate::sys;
use crate::template::{Template, Vars};

/// Share of the paced rate a publisher must achieve not to count as overloaded.
const MIN_RATE_SHARE: f64 = 0.95;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pace {
    /// Each connection publishes as fast as the server answers.
    BackToBack,
    /// Events per second, all connections together.
    Rate(f64),
}

/// Which topic event `i` goes to. Deterministic in `i`, so every publish
/// thread agrees on it without coordination.
#[derive(Debug, Clone, Copy)]
pub enum Chooser {
    RoundRobin {
        topics: u32,
    },
    /// Every `every`-th event to `broadcast`, the others to a pseudo-random
    /// topic in `0..topics`.
    Mixed {
        topics: u32,
        broadcast: u32,
        every: u64,
    },
}

impl Chooser {
    pub fn topic(&self, i: u64) -> u32 {
        match *self {
            Chooser::RoundRobin { topics } => (i % u64::from(topics)) as u32,
            Chooser::Mixed { topics, broadcast, every } => {
                if every > 0 && i % every == every - 1 {
                    broadcast
                } else {
                    (splitmix64(i) % u64::from(topics)) as u32
                }
            }
        }
    }

    /// All topic indices this chooser can produce.
    fn count(&self) -> u32 {
        match *self {
            Chooser::RoundRobin { topics } => topics,
            Chooser::Mixed { topics, .. } => topics + 1,
        }
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

pub struct PubSetup {
    pub addr: SocketAddr,
    pub host: String,
    pub path: Template,
    pub method: String,
    pub body: Template,
    pub headers: Vec<String>,
    pub topic_names: Arc<Vec<String>>,
    pub broadcast_name: String,
    pub modulus: u64,
    pub payload: usize,
    pub conns: usize,
    pub timeout: Duration,
    pub pace: Pace,
    pub max_events: Option<u64>,
    pub duration: Option<Duration>,
    pub chooser: Chooser,
    /// Successful publishes per topic (the next sequence number), read by
    /// the subscriber workers.
    pub published: Arc<[AtomicU64]>,
}

impl PubSetup {
    pub fn connections_used(&self) -> usize {
        self.conns.min(self.chooser.count() as usize).max(1)
    }
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    ok: AtomicU64,
    errors: AtomicU64,
    running: AtomicU64,
}

#[derive(Debug, Default)]
struct ThreadReport {
    attempted: u64,
    ok: u64,
    errors: CauseCounts,
    first_send_ns: u64,
    last_done_ns: u64,
    max_lag_ns: u64,
    late: u64,
    /// Send to answer of each successful publish, ns (made on first use).
    acks: Option<hdrhistogram::Histogram<u64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PubReport {
    pub connections_used: usize,
    pub attempted: u64,
    pub ok: u64,
    pub errors: CauseCounts,
    pub error_count: u64,
    pub seconds: f64,
    pub rate_achieved: f64,
    pub pace: Pace,
    /// Largest delay of a send behind its schedule (paced runs).
    pub max_lag_us: f64,
    /// Sends more than one interval behind schedule.
    pub late_events: u64,
    pub overloaded: bool,
    /// Publish acknowledgement latency: request written to answer read,
    /// successful publishes only.
    pub ack: Percentiles,
    #[serde(skip)]
    pub first_send_ns: u64,
}

pub struct Publisher {
    shared: Arc<Shared>,
    joins: Vec<JoinHandle<ThreadReport>>,
    connections_used: usize,
    pace: Pace,
}

impl Publisher {
    /// Starts the publish threads; the schedule starts at `start_ns`.
    pub fn start(setup: Arc<PubSetup>, start_ns: u64) -> io::Result<Publisher> {
        let shared = Arc::new(Shared::default());
        let used = setup.connections_used();
        let mut joins = Vec::with_capacity(used);
        for j in 0..used {
            let (my_setup, my_shared) = (Arc::clone(&setup), Arc::clone(&shared));
            shared.running.fetch_add(1, Relaxed);
            let join = thread::Builder::new().name(format!("pub-{j}")).spawn(move || {
                let r = run_thread(j, &my_setup, &my_shared, start_ns);
                // Release: whoever sees the count drop also sees this
                // thread's final `published` stores.
                my_shared.running.fetch_sub(1, Release);
                r
            });
            match join {
                Ok(h) => joins.push(h),
                Err(e) => {
                    shared.running.fetch_sub(1, Relaxed);
                    shared.stop.store(true, Relaxed);
                    return Err(e);
                }
            }
        }
        Ok(Publisher { shared, joins, connections_used: used, pace: setup.pace })
    }

    pub fn is_done(&self) -> bool {
        self.shared.running.load(Acquire) == 0
    }

    /// (successful, failed) publishes so far.
    pub fn live(&self) -> (u64, u64) {
        (self.shared.ok.load(Relaxed), self.shared.errors.load(Relaxed))
    }

    pub fn stop(&self) {
        self.shared.stop.store(true, Relaxed);
    }

    pub fn join(self) -> PubReport {
        let mut total = ThreadReport::default();
        for h in self.joins {
            let r = h.join().unwrap_or_else(|_| {
                let mut r = ThreadReport::default();
                r.errors.add(Cause::Other);
                r
            });
            total.attempted += r.attempted;
            total.ok += r.ok;
            total.errors.merge(&r.errors);
            if r.first_send_ns != 0 && (total.first_send_ns == 0 || r.first_send_ns < total.first_send_ns) {
                total.first_send_ns = r.first_send_ns;
            }
            total.last_done_ns = total.last_done_ns.max(r.last_done_ns);
            total.max_lag_ns = total.max_lag_ns.max(r.max_lag_ns);
            total.late += r.late;
            if let Some(acks) = r.acks {
                let _ = total.acks.get_or_insert_with(new_histogram).add(&acks);
            }
        }
        let seconds = if total.first_send_ns > 0 {
            total.last_done_ns.saturating_sub(total.first_send_ns) as f64 / 1e9
        } else {
            0.0
        };
        let rate_achieved = if seconds > 0.0 { total.ok as f64 / seconds } else { 0.0 };
        let overloaded = match self.pace {
            Pace::Rate(r) => rate_achieved < r * MIN_RATE_SHARE,
            Pace::BackToBack => false,
        };
        PubReport {
            connections_used: self.connections_used,
            attempted: total.attempted,
            ok: total.ok,
            error_count: total.errors.total(),
            errors: total.errors,
            seconds,
            rate_achieved,
            pace: self.pace,
            max_lag_us: total.max_lag_ns as f64 / 1e3,
            late_events: total.late,
            overloaded,
            ack: total.acks.as_ref().map(percentiles).unwrap_or_default(),
            first_send_ns: total.first_send_ns,
        }
    }
}

/// One keep-alive connection and its reused buffers.
struct PubConn {
    stream: TcpStream,
    head: HeadBuffer,
}

fn connect(setup: &PubSetup) -> io::Result<PubConn> {
    let stream = TcpStream::connect_timeout(&setup.addr, setup.timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(setup.timeout))?;
    stream.set_write_timeout(Some(setup.timeout))?;
    Ok(PubConn { stream, head: HeadBuffer::default() })
}

fn run_thread(j: usize, setup: &PubSetup, shared: &Shared, start_ns: u64) -> ThreadReport {
    let mut rep = ThreadReport::default();
    let conns = setup.connections_used();
    let owned = |t: u32| t as usize % conns == j;
    let mut next_n = vec![0u64; setup.published.len()];
    let interval_ns = match setup.pace {
        Pace::Rate(r) => 1e9 / r,
        Pace::BackToBack => 0.0,
    };
    let end_ns = setup.duration.map(|d| start_ns + d.as_nanos() as u64);
    let mut conn: Option<PubConn> = None;
    let mut bufs = Buffers::default();
    let mut i: u64 = 0;
    loop {
        if setup.max_events.is_some_and(|m| i >= m) || shared.stop.load(Relaxed) {
            break;
        }
        let due = match setup.pace {
            Pace::Rate(_) => Some(start_ns + (i as f64 * interval_ns) as u64),
            Pace::BackToBack => None,
        };
        let event = i;
        i += 1;
        if let Some(end) = end_ns {
            // Past the publishing time, stop, even when behind schedule: a
            // stalled server must not make the publisher work through every
            // event still scheduled, each up to a request timeout.
            if due.unwrap_or(0).max(sys::now_ns()) >= end {
                break;
            }
        }
        let topic = setup.chooser.topic(event);
        if !owned(topic) {
            continue;
        }
        if let Some(due) = due {
            if sleep_until(due, &shared.stop) {
                break;
            }
        }
        rep.attempted += 1;
        let seq = next_n[topic as usize] * setup.modulus + u64::from(topic);
        let mut sent_ns = 0;
        let result = publish_one(setup, &mut conn, &mut bufs, topic, seq, due, |send_ns| {
            sent_ns = send_ns;
            if rep.first_send_ns == 0 {
                rep.first_send_ns = send_ns;
            }
            if let Some(due) = due {
                let lag = send_ns.saturating_sub(due);
                rep.max_lag_ns = rep.max_lag_ns.max(lag);
                if lag as f64 > interval_ns {
                    rep.late += 1;
                }
            }
        });
        rep.last_done_ns = sys::now_ns();
        match result {
            Ok(()) => {
                let ack = rep.last_done_ns.saturating_sub(sent_ns).max(1);
                let _ = rep.acks.get_or_insert_with(new_histogram).record(ack);
                next_n[topic as usize] += 1;
                setup.published[topic as usize].store(next_n[topic as usize], Relaxed);
                rep.ok += 1;
                shared.ok.fetch_add(1, Relaxed);
            }
            Err(cause) => {
                rep.errors.add(cause);
                shared.errors.fetch_add(1, Relaxed);
                if matches!(cause, Cause::Http(_)) {
                    continue;
                }
                // Transport trouble: back off briefly so a dead server does
                // not turn into a connect storm.
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    rep
}

#[derive(Default)]
struct Buffers {
    data: Vec<u8>,
    body: Vec<u8>,
    path: Vec<u8>,
    req: Vec<u8>,
    read: Vec<u8>,
}

/// Sends one publish and reads its response. The payload carries `due`
/// (paced) or the send time; `stamped` gets the send time.
#[allow(clippy::too_many_arguments)]
fn publish_one(
    setup: &PubSetup,
    conn: &mut Option<PubConn>,
    bufs: &mut Buffers,
    topic: u32,
    seq: u64,
    due: Option<u64>,
    stamped: impl FnOnce(u64),
) -> Result<(), Cause> {
    if conn.is_none() {
        *conn = Some(connect(setup).map_err(|e| Cause::of(&e))?);
    }
    let Some(c) = conn.as_mut() else {
        return Err(Cause::Other);
    };
    let send_ns = sys::now_ns();
    payload::encode(&mut bufs.data, seq, due.unwrap_or(send_ns).min(send_ns), setup.payload);
    let vars = Vars { topic: &setup.topic_names[topic as usize], broadcast: &setup.broadcast_name, data: &bufs.data };
    bufs.body.clear();
    setup.body.render_into(&mut bufs.body, &vars);
    bufs.path.clear();
    setup.path.render_into(&mut bufs.path, &vars);
    bufs.req.clear();
    http::write_request(&mut bufs.req, &setup.method, &setup.host, &bufs.path, &setup.headers, &bufs.body);
    stamped(send_ns);
    match exchange(c, &bufs.req, &mut bufs.read) {
        Ok((status, keep_alive)) => {
            if !keep_alive {
                *conn = None;
            }
            if (200..300).contains(&status) { Ok(()) } else { Err(Cause::Http(status)) }
        }
        Err(e) => {
            *conn = None;
            Err(Cause::of(&e))
        }
    }
}

/// Writes `req` and reads one full response; returns (status, keep-alive).
fn exchange(c: &mut PubConn, req: &[u8], buf: &mut Vec<u8>) -> io::Result<(u16, bool)> {
    if buf.len() < 8192 {
        buf.resize(8192, 0);
    }
    c.stream.write_all(req)?;
    let invalid = |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let (head, mut start, mut end) = loop {
        let n = c.stream.read(buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if let Some((head, used)) = c.head.push(&buf[..n]).map_err(|e| invalid(&e))? {
            break (head, used, n);
        }
    };
    let mut body = BodyDecoder::new(head.framing);
    loop {
        let used = body.feed(&buf[start..end], |_| {}).map_err(|e| invalid(&e))?;
        if body.is_done() {
            if start + used != end {
                // No pipelining: nothing may follow the response.
                return Err(invalid(&"unexpected bytes after response"));
            }
            return Ok((head.status, head.keep_alive));
        }
        let n = c.stream.read(buf)?;
        if n == 0 {
            if head.framing == Framing::Close {
                return Ok((head.status, false));
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        (start, end) = (0, n);
    }
}

/// Sleeps until CLOCK_MONOTONIC reaches `t_ns`; true if stopped meanwhile.
fn sleep_until(t_ns: u64, stop: &AtomicBool) -> bool {
    loop {
        let now = sys::now_ns();
        if now >= t_ns {
            return false;
        }
        if stop.load(Relaxed) {
            return true;
        }
        thread::sleep(Duration::from_nanos((t_ns - now).min(50_000_000)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn choosers_are_deterministic_and_in_range() {
        let c = Chooser::RoundRobin { topics: 3 };
        assert_eq!((0..6).map(|i| c.topic(i)).collect::<Vec<_>>(), vec![0, 1, 2, 0, 1, 2]);
        let c = Chooser::Mixed { topics: 5, broadcast: 5, every: 10 };
        let ts: Vec<u32> = (0..1000).map(|i| c.topic(i)).collect();
        assert_eq!(ts.iter().filter(|&&t| t == 5).count(), 100);
        assert!(ts.iter().all(|&t| t <= 5));
        for t in 0..5 {
            assert!(ts.contains(&t));
        }
        assert_eq!(ts, (0..1000).map(|i| c.topic(i)).collect::<Vec<_>>());
    }

    /// A tiny keep-alive server answering each request head with `resp`.
    fn serve(resp: &'static [u8], requests: usize) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = Vec::new();
            let mut tmp = [0u8; 4096];
            let mut answered = 0;
            while answered < requests {
                let n = s.read(&mut tmp).unwrap();
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&tmp[..n]);
                // Requests here are a head plus a Content-Length body.
                while let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..p]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() < p + 4 + len {
                        break;
                    }
                    buf.drain(..p + 4 + len);
                    s.write_all(resp).unwrap();
                    answered += 1;
                }
            }
        });
        addr
    }

    fn setup(addr: SocketAddr, events: u64) -> PubSetup {
        PubSetup {
            addr,
            host: addr.to_string(),
            path: Template::parse("/publish"),
            method: "POST".into(),
            body: Template::parse("topic={topic}&data={data}"),
            headers: vec![],
            topic_names: Arc::new(vec!["t0".into()]),
            broadcast_name: String::new(),
            modulus: 1,
            payload: 32,
            conns: 4,
            timeout: Duration::from_secs(5),
            pace: Pace::BackToBack,
            max_events: Some(events),
            duration: None,
            chooser: Chooser::RoundRobin { topics: 1 },
            published: (0..1).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    #[test]
    fn publishes_over_keep_alive_with_chunked_and_length_responses() {
        for resp in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
            &b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"[..],
        ] {
            let s = Arc::new(setup(serve(resp, 5), 5));
            let p = Publisher::start(Arc::clone(&s), sys::now_ns()).unwrap();
            let r = p.join();
            assert_eq!(r.connections_used, 1);
            assert_eq!((r.ok, r.error_count), (5, 0), "{r:?}");
            assert_eq!(s.published[0].load(Relaxed), 5);
        }
    }

    #[test]
    fn rejected_publishes_do_not_consume_sequence_numbers() {
        let s = Arc::new(setup(serve(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", 3), 3));
        let r = Publisher::start(Arc::clone(&s), sys::now_ns()).unwrap().join();
        assert_eq!(r.ok, 0);
        assert_eq!(r.errors.summary(), "http_503=3");
        assert_eq!(s.published[0].load(Relaxed), 0);
    }

    #[test]
    fn paced_publisher_stops_at_the_end_of_its_time_when_the_server_stalls() {
        // Never accepted, never answered (the backlog takes the connection):
        // every publish times out.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut s = setup(l.local_addr().unwrap(), 0);
        s.max_events = None;
        s.pace = Pace::Rate(10.0);
        s.duration = Some(Duration::from_millis(300));
        s.timeout = Duration::from_millis(500);
        let t0 = std::time::Instant::now();
        let r = Publisher::start(Arc::new(s), sys::now_ns()).unwrap().join();
        // Event 0 times out at 0.5 s, after the 0.3 s of publishing: events
        // 1 and 2 (due at 0.1 s and 0.2 s) are not attempted.
        assert_eq!((r.attempted, r.ok), (1, 0), "{r:?}");
        assert!(t0.elapsed() < Duration::from_millis(1200), "{:?}", t0.elapsed());
    }

    #[test]
    fn refused_connection_is_counted() {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let r = Publisher::start(Arc::new(setup(addr, 2)), sys::now_ns()).unwrap().join();
        assert_eq!(r.errors.summary(), "refused=2");
    }
}
