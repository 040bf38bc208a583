//! Counters and gauges, exported at `GET /metrics` in Prometheus text format.
//!
//! Each worker owns one [`WorkerStats`] on its own cache lines and is its only
//! writer; the fan-out loop counts into plain integers ([`Tally`]) and adds
//! them here once per loop turn, so the hot path touches no shared line.
//! A scrape sums over workers.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ssehub_core::backplane::Metric;
use ssehub_core::history::HistoryStats;
use ssehub_core::subscriber::Tally;

/// Statuses counted as rejections, in label order.
pub const REJECT_STATUSES: [u16; 15] = [400, 401, 403, 404, 405, 408, 409, 413, 414, 415, 431, 501, 503, 504, 0];

/// Token refusal reasons, in label order.
pub const AUTH_FAILURE_REASONS: [&str; 4] = ["missing", "invalid", "expired", "forbidden"];

fn reject_index(status: u16) -> usize {
    REJECT_STATUSES.iter().position(|&s| s == status).unwrap_or(REJECT_STATUSES.len() - 1)
}

/// One worker's counters; the worker is their only writer.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerStats {
    /// Gauge: open event streams.
    pub subscribers: AtomicU64,
    /// Gauge: connections reading requests or answering them.
    pub http: AtomicU64,
    /// Event frames fully handed to the kernel.
    pub frames_written: AtomicU64,
    /// Every byte written to subscribers.
    pub bytes_written: AtomicU64,
    /// write/writev system calls to subscribers: frames per call is the batching.
    pub write_calls: AtomicU64,
    /// Subscriptions that replayed history.
    pub replays: AtomicU64,
    /// `ssehub-gap` events sent.
    pub gaps: AtomicU64,
    /// Subscribers dropped for falling behind.
    pub slow_consumers: AtomicU64,
    /// Heartbeat comments written.
    pub heartbeats: AtomicU64,
    /// Refusals, by status (see [`REJECT_STATUSES`]).
    pub rejected: [AtomicU64; REJECT_STATUSES.len()],
    /// Connections turned away by `--max-connections`.
    pub over_limit: AtomicU64,
    /// `accept` failures (EMFILE and friends).
    pub accept_errors: AtomicU64,
    /// Token refusals, by reason (see [`AUTH_FAILURE_REASONS`]).
    pub auth_failures: [AtomicU64; AUTH_FAILURE_REASONS.len()],
    /// Open streams ended because their token expired.
    pub streams_expired: AtomicU64,
    /// Publishes that found the event queues full and waited for room.
    pub publish_waits: AtomicU64,
}

impl WorkerStats {
    /// Counts a refusal.
    pub fn reject(&self, status: u16) {
        self.rejected[reject_index(status)].fetch_add(1, Relaxed);
    }

    /// Counts a token refusal (`reason` is one of [`AUTH_FAILURE_REASONS`]).
    pub fn auth_failure(&self, reason: &str) {
        if let Some(i) = AUTH_FAILURE_REASONS.iter().position(|&r| r == reason) {
            self.auth_failures[i].fetch_add(1, Relaxed);
        }
    }

    /// Adds a local tally and resets it.
    pub fn add(&self, tally: &mut Tally) {
        if tally.frames > 0 {
            self.frames_written.fetch_add(tally.frames, Relaxed);
        }
        if tally.bytes > 0 {
            self.bytes_written.fetch_add(tally.bytes, Relaxed);
        }
        if tally.writes > 0 {
            self.write_calls.fetch_add(tally.writes, Relaxed);
        }
        *tally = Tally::default();
    }
}

/// Process-wide values that are not per worker.
pub struct Globals {
    /// Events accepted and sequenced.
    pub events_published: u64,
    /// Since the server was bound.
    pub uptime: std::time::Duration,
    /// The backplane's own figures.
    pub backplane: Vec<Metric>,
    /// `--max-connections`.
    pub max_connections: usize,
    /// History's figures.
    pub history: HistoryStats,
    /// `--history-memory`.
    pub history_budget: usize,
    /// Topics with a subscriber on some worker.
    pub topics_subscribed: usize,
    /// The workers' driver (`--io`): `epoll` or `uring`.
    pub io_backend: &'static str,
}

/// The `/metrics` text: sums over workers, then the globals.
pub fn render(workers: &[WorkerStats], globals: &Globals) -> String {
    let sum = |field: fn(&WorkerStats) -> &AtomicU64| -> u64 { workers.iter().map(|w| field(w).load(Relaxed)).sum() };
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP ssehub_{name} {help}\n# TYPE ssehub_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "ssehub_{name}{labels} {value}");
        }
    };
    metric(
        "connections",
        "gauge",
        "Open connections by kind.",
        &[("{kind=\"subscriber\"}", sum(|w| &w.subscribers)), ("{kind=\"http\"}", sum(|w| &w.http))],
    );
    let build = format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
    metric("build_info", "gauge", "Always 1; the version is its label.", &[(&build, 1)]);
    metric("uptime_seconds", "gauge", "Seconds since the server started.", &[("", globals.uptime.as_secs())]);
    let backend = format!("{{backend=\"{}\"}}", globals.io_backend);
    metric("io_backend", "gauge", "Always 1; the I/O driver (--io) is its label.", &[(&backend, 1)]);
    metric("connections_max", "gauge", "The --max-connections limit.", &[("", globals.max_connections as u64)]);
    metric("events_published_total", "counter", "Events accepted and sequenced.", &[("", globals.events_published)]);
    metric(
        "frames_written_total",
        "counter",
        "Event frames written to subscribers.",
        &[("", sum(|w| &w.frames_written))],
    );
    metric("bytes_written_total", "counter", "Bytes written to subscribers.", &[("", sum(|w| &w.bytes_written))]);
    metric(
        "write_calls_total",
        "counter",
        "write/writev calls to subscribers (frames per call shows the batching).",
        &[("", sum(|w| &w.write_calls))],
    );
    metric("replays_total", "counter", "Subscriptions that resumed from Last-Event-ID.", &[("", sum(|w| &w.replays))]);
    metric("gaps_total", "counter", "ssehub-gap events sent, whatever their reason.", &[("", sum(|w| &w.gaps))]);
    metric("heartbeats_total", "counter", "Heartbeat comments written.", &[("", sum(|w| &w.heartbeats))]);
    metric(
        "slow_consumers_dropped_total",
        "counter",
        "Subscribers dropped for falling more than --max-backlog frames behind.",
        &[("", sum(|w| &w.slow_consumers))],
    );
    metric(
        "connections_over_limit_total",
        "counter",
        "Connections turned away by --max-connections.",
        &[("", sum(|w| &w.over_limit))],
    );
    metric("accept_errors_total", "counter", "accept() failures (e.g. EMFILE).", &[("", sum(|w| &w.accept_errors))]);
    let rejected: Vec<(String, u64)> = REJECT_STATUSES
        .iter()
        .enumerate()
        .map(|(i, status)| {
            let label = if *status == 0 { "other".to_string() } else { status.to_string() };
            (format!("{{status=\"{label}\"}}"), workers.iter().map(|w| w.rejected[i].load(Relaxed)).sum())
        })
        .collect();
    let rejected: Vec<(&str, u64)> = rejected.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric("requests_rejected_total", "counter", "Requests refused, by status.", &rejected);
    let auth: Vec<(String, u64)> = AUTH_FAILURE_REASONS
        .iter()
        .enumerate()
        .map(|(i, reason)| {
            (format!("{{reason=\"{reason}\"}}"), workers.iter().map(|w| w.auth_failures[i].load(Relaxed)).sum())
        })
        .collect();
    let auth: Vec<(&str, u64)> = auth.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric("auth_failures_total", "counter", "Token refusals, by reason.", &auth);
    metric(
        "streams_expired_total",
        "counter",
        "Open streams ended with ssehub-expired because their token expired.",
        &[("", sum(|w| &w.streams_expired))],
    );
    let history = &globals.history;
    metric("history_events", "gauge", "Events retained for resumes (each once).", &[("", history.events as u64)]);
    metric(
        "history_bytes",
        "gauge",
        "Bytes history holds, bookkeeping included (against --history-memory).",
        &[("", history.bytes as u64)],
    );
    metric("history_budget_bytes", "gauge", "The --history-memory budget.", &[("", globals.history_budget as u64)]);
    metric("history_topics", "gauge", "Topics with retained events.", &[("", history.topics as u64)]);
    metric(
        "history_tombstones",
        "gauge",
        "Forgotten topics still remembered for exact gaps.",
        &[("", history.tombstones as u64)],
    );
    metric(
        "history_dropped_total",
        "counter",
        "Events no longer retained, by cause (count: --history, expired: --history-ttl, evicted: --history-memory).",
        &[
            ("{reason=\"count\"}", history.drops.count),
            ("{reason=\"expired\"}", history.drops.expired),
            ("{reason=\"evicted\"}", history.drops.evicted),
        ],
    );
    metric(
        "topics_subscribed",
        "gauge",
        "Topics with a subscriber (events to others touch no worker).",
        &[("", globals.topics_subscribed as u64)],
    );
    metric(
        "publish_waits_total",
        "counter",
        "Publishes that found the event queues full and waited (unread) for room instead of a 503.",
        &[("", sum(|w| &w.publish_waits))],
    );
    for sample in &globals.backplane {
        metric(sample.name, sample.kind, sample.help, &[("", sample.value)]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sums_over_workers() {
        let workers = [WorkerStats::default(), WorkerStats::default()];
        workers[0].subscribers.store(3, Relaxed);
        workers[1].subscribers.store(4, Relaxed);
        workers[1].reject(413);
        let mut tally = Tally { frames: 5, bytes: 50, writes: 2 };
        workers[0].add(&mut tally);
        let globals = Globals {
            events_published: 9,
            uptime: std::time::Duration::from_millis(61_500),
            max_connections: 100,
            backplane: Vec::new(),
            history: HistoryStats { events: 2, ..HistoryStats::default() },
            history_budget: 1 << 20,
            topics_subscribed: 1,
            io_backend: "uring",
        };
        let text = render(&workers, &globals);
        assert!(text.contains("ssehub_uptime_seconds 61\n"), "{text}");
        assert!(text.contains("ssehub_io_backend{backend=\"uring\"} 1\n"), "{text}");
        assert!(text.contains(&format!("ssehub_build_info{{version=\"{}\"}} 1\n", env!("CARGO_PKG_VERSION"))));
        assert!(text.contains("ssehub_connections{kind=\"subscriber\"} 7\n"), "{text}");
        assert!(text.contains("ssehub_events_published_total 9\n"));
        assert!(text.contains("ssehub_frames_written_total 5\n"));
        assert!(text.contains("ssehub_requests_rejected_total{status=\"413\"} 1\n"));
        assert!(text.contains("# TYPE ssehub_bytes_written_total counter\n"));
        assert!(text.contains("ssehub_history_events 2\n"));
        assert!(text.contains("ssehub_history_dropped_total{reason=\"expired\"} 0\n"));
    }
}
