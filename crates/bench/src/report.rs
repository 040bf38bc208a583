//! The run report: one struct holding every number a run produced (plus the
//! full configuration), printed either as a human table or as one JSON
//! object (`--json`) for scripts. Nothing here measures anything.

use std::io::{self, Write};

use serde::Serialize;

use crate::cause::CauseCounts;
use crate::config::Config;
use crate::proc::CpuDelta;
use crate::publisher::PubReport;
use crate::stats::{LossStats, Percentiles};

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub config: Config,
    /// Every check passed.
    pub ok: bool,
    pub checks: Vec<Check>,
    pub connect: ConnectReport,
    pub publish: Option<PubReport>,
    pub delivery: Option<DeliveryReport>,
    /// Publish→receive latency; None when not meaningful (see `latency_note`).
    pub latency: Option<Percentiles>,
    pub latency_note: Option<String>,
    pub churn: Option<ChurnReport>,
    pub server: Option<ServerReport>,
    pub generator: GeneratorReport,
    pub samples: Vec<SoakSample>,
    pub soak: Option<SoakSummary>,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct ConnectReport {
    pub attempted: u64,
    pub established: u64,
    pub failed: u64,
    pub failures: CauseCounts,
    /// First connect started → last response head received.
    pub seconds: f64,
    pub rate_per_s: f64,
    pub open_at_end: u64,
    /// Established streams that ended without the generator closing them.
    pub dropped: u64,
    pub drops: CauseCounts,
}

#[derive(Debug, Serialize)]
pub struct DeliveryReport {
    /// Generator events received (all subscribers, duplicates included).
    pub deliveries: u64,
    /// Events the stayers open at the end should have received.
    pub expected: u64,
    /// Distinct events received by stayers.
    pub unique_stayers: u64,
    pub complete: bool,
    /// First publish → last delivery.
    pub window_s: f64,
    pub deliveries_per_s: f64,
    /// SSE events whose data was not a generator payload.
    pub foreign_events: u64,
    /// Events of a topic the subscriber did not subscribe to.
    pub wrong_topic: u64,
    pub sse_comments: u64,
    pub stayers: LossStats,
    pub churners: Option<LossStats>,
}

#[derive(Debug, Serialize)]
pub struct ChurnReport {
    pub pool: u64,
    pub target_rate: f64,
    /// Churner connections established per second during publishing.
    pub achieved_rate: f64,
    pub opened: u64,
    pub established: u64,
    pub closed: u64,
    pub failures: CauseCounts,
}

#[derive(Debug, Serialize)]
pub struct ServerReport {
    pub pids: Vec<u32>,
    pub rss_before_bytes: u64,
    pub rss_after_connect_bytes: u64,
    pub rss_end_bytes: u64,
    pub rss_per_connection_bytes: Option<f64>,
    pub fds_before: u64,
    pub fds_after_connect: u64,
    pub fds_end: u64,
    pub cpu_connect: CpuDelta,
    pub cpu_us_per_connection: Option<f64>,
    /// Over the measurement window (publishing + delivery, or the idle hold).
    pub cpu_window: CpuDelta,
    pub cpu_ns_per_delivery: Option<f64>,
    /// Cores busy on average over the window.
    pub cpu_cores_window: f64,
}

#[derive(Debug, Serialize)]
pub struct GeneratorReport {
    pub threads: usize,
    pub cpu_connect: CpuDelta,
    pub cpu_window: CpuDelta,
    pub window_s: f64,
    pub cpu_cores_window: f64,
    pub cpu_ns_per_delivery: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SoakSample {
    pub t_s: f64,
    pub rss_bytes: Option<u64>,
    pub fds: Option<u64>,
    pub open: u64,
    pub deliveries_per_s: f64,
    pub published: u64,
    pub missing_so_far: u64,
    pub duplicates_so_far: u64,
    pub dropped: u64,
}

#[derive(Debug, Serialize)]
pub struct SoakSummary {
    pub rss_start: u64,
    pub rss_end: u64,
    pub rss_max: u64,
    pub rss_slope_kib_per_min: f64,
    pub fds_start: u64,
    pub fds_end: u64,
    pub fds_max: u64,
    pub fds_slope_per_min: f64,
}

pub fn print_json(r: &Report) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, r).map_err(io::Error::other)?;
    writeln!(out)
}

pub fn print_table(r: &Report) {
    let c = &r.config;
    println!(
        "ssehub-bench {} · scenario {:?} · preset {} · {} subscribers · {} thread(s)",
        r.version, c.scenario, c.preset, c.subscribers, c.threads
    );
    println!("  sub {}", c.sub_url);
    println!("  pub {} {}  body {}", c.pub_method, c.pub_url, c.pub_body);

    section("connections");
    let k = &r.connect;
    row("established", format!("{} / {} attempted", num(k.established), num(k.attempted)));
    row("failed", format!("{} ({})", num(k.failed), k.failures.summary()));
    row("connect rate", format!("{}/s over {:.2} s", num(k.rate_per_s as u64), k.seconds));
    row("open at end", num(k.open_at_end));
    row("dropped by server", format!("{} ({})", num(k.dropped), k.drops.summary()));

    if let Some(p) = &r.publish {
        section("publishing");
        row(
            "published",
            format!("{} ok / {} attempted over {} connection(s)", num(p.ok), num(p.attempted), p.connections_used),
        );
        row("errors", format!("{} ({})", num(p.error_count), p.errors.summary()));
        row("rate achieved", format!("{:.1}/s over {:.2} s", p.rate_achieved, p.seconds));
        row(
            "ack latency",
            format!("p50 {:.0} us, p99 {:.0} us, max {:.0} us", p.ack.p50_us, p.ack.p99_us, p.ack.max_us),
        );
        if let crate::publisher::Pace::Rate(rate) = p.pace {
            row(
                "schedule",
                format!(
                    "target {rate}/s, max lag {:.0} us, {} late{}",
                    p.max_lag_us,
                    p.late_events,
                    if p.overloaded { " -> PUBLISHER OVERLOADED" } else { "" }
                ),
            );
        }
    }

    if let Some(d) = &r.delivery {
        section("delivery");
        row(
            "deliveries",
            format!(
                "{} ({} distinct to stayers, expected {}{})",
                num(d.deliveries),
                num(d.unique_stayers),
                num(d.expected),
                if d.complete { "" } else { ", INCOMPLETE" }
            ),
        );
        row("deliveries/s", format!("{} (window {:.3} s)", num(d.deliveries_per_s as u64), d.window_s));
        loss_rows("stayers", &d.stayers);
        if let Some(ch) = &d.churners {
            loss_rows("churners", ch);
        }
        if d.wrong_topic > 0 {
            row("wrong-topic events", num(d.wrong_topic));
        }
        if d.foreign_events > 0 || d.sse_comments > 0 {
            row(
                "other SSE traffic",
                format!("{} foreign events, {} comments", num(d.foreign_events), num(d.sse_comments)),
            );
        }
    }

    if r.latency.is_some() || r.latency_note.is_some() {
        section("publish -> receive latency");
        if let Some(l) = &r.latency {
            row(
                "us",
                format!(
                    "p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}  (n={})",
                    l.p50_us,
                    l.p90_us,
                    l.p99_us,
                    l.p999_us,
                    l.max_us,
                    num(l.count)
                ),
            );
        }
        if let Some(n) = &r.latency_note {
            row("note", n.clone());
        }
    }

    if let Some(ch) = &r.churn {
        section("churn");
        row("rate", format!("{:.1}/s achieved (target {}/s, pool {})", ch.achieved_rate, ch.target_rate, ch.pool));
        row(
            "connections",
            format!(
                "{} opened, {} established, {} closed, failures: {}",
                num(ch.opened),
                num(ch.established),
                num(ch.closed),
                ch.failures.summary()
            ),
        );
    }

    if let Some(s) = &r.server {
        section("server");
        row("pids", format!("{:?}", s.pids));
        row(
            "RSS",
            format!(
                "{} before, {} connected, {} end",
                bytes(s.rss_before_bytes),
                bytes(s.rss_after_connect_bytes),
                bytes(s.rss_end_bytes)
            ),
        );
        if let Some(per) = s.rss_per_connection_bytes {
            row("RSS per connection", format!("{per:.0} B"));
        }
        row("open fds", format!("{} before, {} connected, {} end", s.fds_before, s.fds_after_connect, s.fds_end));
        row(
            "CPU connecting",
            format!(
                "{}{}",
                cpu(&s.cpu_connect),
                s.cpu_us_per_connection.map(|v| format!(", {v:.1} us/connection")).unwrap_or_default()
            ),
        );
        row("CPU window", format!("{}, {:.2} cores busy", cpu(&s.cpu_window), s.cpu_cores_window));
        if let Some(v) = s.cpu_ns_per_delivery {
            row("CPU per delivery", format!("{v:.0} ns"));
        }
    }

    section("generator");
    let g = &r.generator;
    row(
        "CPU",
        format!(
            "{} connecting; {} over {:.2} s window = {:.2} of {} cores{}",
            cpu(&g.cpu_connect),
            cpu(&g.cpu_window),
            g.window_s,
            g.cpu_cores_window,
            g.threads,
            g.cpu_ns_per_delivery.map(|v| format!(", {v:.0} ns/delivery")).unwrap_or_default()
        ),
    );

    if let Some(s) = &r.soak {
        section("soak");
        row(
            "RSS",
            format!(
                "start {}, end {}, max {}, slope {:.1} KiB/min",
                bytes(s.rss_start),
                bytes(s.rss_end),
                bytes(s.rss_max),
                s.rss_slope_kib_per_min
            ),
        );
        row(
            "fds",
            format!(
                "start {}, end {}, max {}, slope {:.2}/min",
                s.fds_start, s.fds_end, s.fds_max, s.fds_slope_per_min
            ),
        );
    }

    section("checks");
    for ch in &r.checks {
        println!("  [{}] {:<28} {}", if ch.ok { "ok" } else { "FAIL" }, ch.name, ch.detail);
    }
    println!("{}", if r.ok { "PASS" } else { "FAIL" });
}

/// Header line for the soak samples table.
pub fn sample_header() -> String {
    format!(
        "{:>7} {:>10} {:>7} {:>7} {:>12} {:>9} {:>8} {:>6} {:>7}",
        "t_s", "rss", "fds", "open", "deliv/s", "published", "missing", "dups", "dropped"
    )
}

pub fn sample_row(s: &SoakSample) -> String {
    format!(
        "{:>7.1} {:>10} {:>7} {:>7} {:>12} {:>9} {:>8} {:>6} {:>7}",
        s.t_s,
        s.rss_bytes.map_or("-".into(), bytes),
        s.fds.map_or("-".into(), |f| f.to_string()),
        s.open,
        num(s.deliveries_per_s as u64),
        s.published,
        s.missing_so_far,
        s.duplicates_so_far,
        s.dropped
    )
}

fn loss_rows(who: &str, l: &LossStats) {
    row(
        &format!("{who} missing"),
        format!(
            "{} over {} subscribers ({} with loss, worst {})",
            num(l.missing),
            num(l.subscribers),
            num(l.subscribers_with_missing),
            num(l.max_missing_one_subscriber)
        ),
    );
    row(
        &format!("{who} duplicates"),
        format!(
            "{} ({} subscribers, worst {}); reordered {}",
            num(l.duplicates),
            num(l.subscribers_with_duplicates),
            num(l.max_duplicates_one_subscriber),
            num(l.reordered)
        ),
    );
}

fn section(name: &str) {
    println!("{name}");
}

fn row(label: &str, value: impl AsRef<str>) {
    println!("  {label:<24} {}", value.as_ref());
}

fn cpu(c: &CpuDelta) -> String {
    match c.seconds_precise {
        Some(p) => format!("{p:.3} s CPU"),
        None => format!("{:.2} s CPU (tick resolution)", c.seconds_ticks),
    }
}

/// 1234567 → "1,234,567".
pub fn num(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

pub fn bytes(b: u64) -> String {
    const K: f64 = 1024.0;
    let f = b as f64;
    if f >= K * K * K {
        format!("{:.2} GiB", f / (K * K * K))
    } else if f >= K * K {
        format!("{:.1} MiB", f / (K * K))
    } else if f >= K {
        format!("{:.1} KiB", f / K)
    } else {
        format!("{b} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_and_bytes() {
        assert_eq!(num(0), "0");
        assert_eq!(num(999), "999");
        assert_eq!(num(1000), "1,000");
        assert_eq!(num(1234567), "1,234,567");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
