//! Counters and gauges, exported at `GET /metrics` in Prometheus text format.
//!
//! Each worker owns one [`WorkerStats`] on its own cache lines and is its only
//! writer; the fan-out loop counts into plain integers ([`Tally`]) and adds
//! them here once per loop turn, so the hot path touches no shared line.
//! A scrape sums over workers.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Statuses counted as rejections, in label order.
pub const REJECT_STATUSES: [u16; 13] = [400, 401, 403, 404, 405, 408, 413, 414, 415, 431, 501, 503, 0];

fn reject_index(status: u16) -> usize {
    REJECT_STATUSES.iter().position(|&s| s == status).unwrap_or(REJECT_STATUSES.len() - 1)
}

#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerStats {
    pub subscribers: AtomicU64,    // gauge: open event streams
    pub http: AtomicU64,           // gauge: connections reading requests or answering them
    pub frames_written: AtomicU64, // event frames fully handed to the kernel
    pub bytes_written: AtomicU64,  // every byte written to subscribers
    pub write_calls: AtomicU64,    // write/writev system calls to subscribers: frames per call is the batching
    pub replays: AtomicU64,        // subscriptions that replayed history
    pub gaps: AtomicU64,           // ssehub-gap events sent
    pub slow_consumers: AtomicU64, // subscribers dropped for falling behind
    pub heartbeats: AtomicU64,     // heartbeat comments written
    pub rejected: [AtomicU64; REJECT_STATUSES.len()],
    pub over_limit: AtomicU64,    // connections turned away by --max-connections
    pub accept_errors: AtomicU64, // EMFILE and friends
}

/// Writes to subscribers counted locally (per loop turn, or per flush) and
/// added to [`WorkerStats`] in one go.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub frames: u64, // event frames completed
    pub bytes: u64,
    pub writes: u64, // system calls
}

impl WorkerStats {
    pub fn reject(&self, status: u16) {
        self.rejected[reject_index(status)].fetch_add(1, Relaxed);
    }

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
pub struct Globals<'a> {
    pub events_published: u64,
    pub backplane: Option<&'a crate::cluster::Backplane>, // cluster mode
    pub max_connections: usize,
}

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
    metric("gaps_total", "counter", "ssehub-gap events sent to resuming subscribers.", &[("", sum(|w| &w.gaps))]);
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
    if let Some(backplane) = globals.backplane {
        let load = |counter: &AtomicU64| counter.load(Relaxed);
        metric(
            "backplane_up",
            "gauge",
            "1 while the Redis stream is being followed.",
            &[("", u64::from(backplane.is_up()))],
        );
        metric(
            "backplane_reconnects_total",
            "counter",
            "Reconnections to Redis after a failure.",
            &[("", load(&backplane.reconnects))],
        );
        metric(
            "backplane_lag_entries",
            "gauge",
            "Stream entries not yet read, as last measured.",
            &[("", load(&backplane.lag))],
        );
        metric(
            "backplane_entries_read_total",
            "counter",
            "Stream entries read.",
            &[("", load(&backplane.entries_read))],
        );
        metric(
            "backplane_invalid_entries_total",
            "counter",
            "Stream entries skipped because an HTTP publish would have been refused.",
            &[("", load(&backplane.invalid_entries))],
        );
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
        let text = render(&workers, &Globals { events_published: 9, max_connections: 100, backplane: None });
        assert!(text.contains("ssehub_connections{kind=\"subscriber\"} 7\n"), "{text}");
        assert!(text.contains("ssehub_events_published_total 9\n"));
        assert!(text.contains("ssehub_frames_written_total 5\n"));
        assert!(text.contains("ssehub_requests_rejected_total{status=\"413\"} 1\n"));
        assert!(text.contains("# TYPE ssehub_bytes_written_total counter\n"));
    }
}
