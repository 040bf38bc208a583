//! Scenario orchestration: the coordinator thread that starts the subscriber
//! workers and the publisher, moves a run through its phases (connect, then
//! hold or publish-and-deliver, with churn and sampling where the scenario
//! asks), samples the server and the generator at phase boundaries, and
//! turns the workers' and publisher's results into a [`Report`] with
//! pass/fail checks.
//!
//! Phases and windows:
//! - connect: stayers (and the churn pool) ramp up; gives connect rate,
//!   server CPU per connection, and RSS/fds before vs after (+200 ms settle).
//! - window: `idle` holds for `--duration`; the others publish (back to
//!   back, or paced for `--duration`) and then wait until every open stayer
//!   has every event published, or `--timeout` (from the first publish for
//!   back-to-back runs, from the last publish for paced ones). Server and
//!   generator CPU are measured over this window; deliveries/s is over
//!   first publish → last delivery.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::thread;
use std::time::{Duration, Instant};

use crate::Scenario;
use crate::cause::CauseCounts;
use crate::client::{self, Class, Cmd, SubSetup, WorkerHandle, WorkerReport};
use crate::config::Config;
use crate::proc::{self, CpuDelta, CpuSample, ServerSample};
use crate::progress::Progress;
use crate::publisher::{Chooser, Pace, PubReport, PubSetup, Publisher};
use crate::report::{
    self, Check, ChurnReport, ConnectReport, DeliveryReport, GeneratorReport, Report, ServerReport, SoakSample,
    SoakSummary, num,
};
use crate::stats::{self, LossStats};
use crate::sys;

const TICK: Duration = Duration::from_millis(5);
const SETTLE: Duration = Duration::from_millis(200);

/// Sum of the workers' live counters.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    attempted: [u64; 2],
    established: [u64; 2],
    failed: [u64; 2],
    open: [u64; 2],
    dropped: u64,
    churn_closed: u64,
    inflight: u64,
    deliveries: u64,
    duplicates: u64,
    wrong_topic: u64,
    missing_live: u64,
    caught_up: u64,
    last_established_ns: u64,
    /// Lowest snapshot epoch over the workers.
    epoch: u64,
}

struct Rig<'a> {
    cfg: &'a Config,
    setup: Arc<SubSetup>,
    workers: Vec<WorkerHandle>,
    rr: usize,
    progress: Progress,
    /// (when, deliveries) at the last rate computation, for the progress line.
    rate_mark: (Instant, u64),
    rate: f64,
}

impl Rig<'_> {
    fn totals(&self) -> Totals {
        let mut t = Totals { epoch: u64::MAX, ..Totals::default() };
        for w in &self.workers {
            let c = &w.counters;
            // Acquire first: the counts read below are at least as new as
            // the snapshot that published this epoch.
            t.epoch = t.epoch.min(c.snapshot_epoch.load(Acquire));
            for i in 0..2 {
                t.attempted[i] += c.attempted[i].load(Relaxed);
                t.established[i] += c.established[i].load(Relaxed);
                t.failed[i] += c.failed[i].load(Relaxed);
                t.open[i] += c.open[i].load(Relaxed);
            }
            t.dropped += c.dropped.load(Relaxed);
            t.churn_closed += c.churn_closed.load(Relaxed);
            t.inflight += c.inflight.load(Relaxed);
            t.deliveries += c.deliveries.load(Relaxed);
            t.duplicates += c.duplicates.load(Relaxed);
            t.wrong_topic += c.wrong_topic.load(Relaxed);
            t.missing_live += c.missing_live.load(Relaxed);
            t.caught_up += c.stayers_caught_up.load(Relaxed);
            t.last_established_ns = t.last_established_ns.max(c.last_established_ns.load(Relaxed));
        }
        t
    }

    /// Spreads `count` over the workers, rotating who gets the remainder;
    /// `cmds` gives the commands for one worker's share.
    fn distribute<const N: usize>(&mut self, count: u64, cmds: impl Fn(u64) -> [Cmd; N]) {
        let n = self.workers.len() as u64;
        for k in 0..n {
            let w = (self.rr + k as usize) % self.workers.len();
            let share = count / n + u64::from(k < count % n);
            if share > 0 {
                for cmd in cmds(share) {
                    self.workers[w].send(cmd);
                }
            }
        }
        self.rr = (self.rr + (count % n) as usize) % self.workers.len();
    }

    fn open(&mut self, count: u64, class: Class) {
        self.distribute(count, |count| [Cmd::Open { count, class }]);
    }

    /// Replaces `count` churners: each worker closes its oldest and opens
    /// as many new ones, so every worker's pool keeps its size.
    fn churn(&mut self, count: u64) {
        self.distribute(count, |count| [Cmd::CloseChurners { count }, Cmd::Open { count, class: Class::Churner }]);
    }

    fn delivery_rate(&mut self, deliveries: u64) -> f64 {
        let (at, d) = self.rate_mark;
        let dt = at.elapsed().as_secs_f64();
        if dt >= 1.0 {
            self.rate = deliveries.saturating_sub(d) as f64 / dt;
            self.rate_mark = (Instant::now(), deliveries);
        }
        self.rate
    }

    /// Waits until `target` connects resolved (established or failed).
    fn wait_connected(&mut self, target: u64) -> Totals {
        let cfg = self.cfg;
        let t0 = Instant::now();
        let ramp = cfg.connect_rate.map_or(0.0, |r| target as f64 / r);
        let limit = Duration::from_secs_f64(ramp * 2.0 + cfg.connect_timeout_s + cfg.timeout_s);
        loop {
            let t = self.totals();
            let resolved: u64 = (0..2).map(|i| t.established[i] + t.failed[i]).sum();
            if resolved >= target || t0.elapsed() > limit {
                self.progress.clear();
                return t;
            }
            self.progress.update(|| {
                format!(
                    "connect {}/{} established, {} failed, {} in flight  [{:.1} s]",
                    num(t.established[0] + t.established[1]),
                    num(target),
                    num(t.failed[0] + t.failed[1]),
                    num(t.inflight),
                    t0.elapsed().as_secs_f64()
                )
            });
            thread::sleep(TICK);
        }
    }

    /// Waits until every worker has taken a snapshot after this call
    /// (None if one does not within a second: a wedged or dead worker).
    fn fresh_snapshot(&self) -> Option<Totals> {
        let want = self.setup.epoch.fetch_add(1, Release) + 1;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(1) {
            let t = self.totals();
            if t.epoch >= want {
                return Some(t);
            }
            thread::sleep(Duration::from_millis(1));
        }
        None
    }

    fn finish(self) -> Result<Vec<WorkerReport>, String> {
        self.workers
            .into_iter()
            .map(|w| w.finish())
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| format!("subscriber worker failed: {e}"))
    }
}

/// What one measurement window produced.
struct Window {
    start_ns: u64,
    end_ns: u64,
    srv: (Option<ServerSample>, Option<ServerSample>),
    gen_cpu: (Option<CpuSample>, Option<CpuSample>),
    publish: Option<PubReport>,
    complete: bool,
    churn: Option<(u64, u64, u64)>,
    samples: Vec<SoakSample>,
}

fn sample(pids: &[u32]) -> Option<ServerSample> {
    if pids.is_empty() {
        return None;
    }
    proc::server_sample(pids).ok()
}

pub fn run(cfg: &Config) -> Result<Report, String> {
    proc::check_pids(&cfg.server_pids)?;
    let modulus = cfg.modulus();
    let names = Arc::new(cfg.topic_names());
    let published: Arc<[AtomicU64]> = (0..modulus).map(|_| AtomicU64::new(0)).collect();
    let threads = cfg.threads;
    let tokens = match &cfg.signer {
        Some(signer) => {
            // Enough for every connection, rounded up to whole rounds of topics.
            let topics = u64::from(cfg.topics.max(1));
            let count = (cfg.subscribers + cfg.churners).max(1).div_ceil(topics) * topics;
            let names = Arc::clone(&names);
            let topics_of = |id: u64| {
                let mut own = vec![names[(id % topics) as usize].clone()];
                if cfg.broadcast {
                    own.push(names[cfg.topics as usize].clone());
                }
                own
            };
            signer.mint_all(count, &cfg.sub_jwt_grants, topics_of)?
        }
        None => Vec::new(),
    };
    let setup = Arc::new(SubSetup {
        addr: cfg.sub.addr,
        spread: cfg.spread.clone(),
        host: cfg.sub.host.clone(),
        headers: cfg.sub_headers.clone(),
        tokens,
        path: cfg.sub.path.clone(),
        topic_names: Arc::clone(&names),
        topics: cfg.topics,
        broadcast: cfg.broadcast.then_some(cfg.topics),
        modulus: u64::from(modulus),
        source_ips: cfg.source_ips(),
        connect_rate: cfg.connect_rate.map_or(f64::INFINITY, |r| r / threads as f64),
        max_inflight: (cfg.max_inflight / threads).max(1),
        connect_timeout_ns: (cfg.connect_timeout_s * 1e9) as u64,
        max_line: (64 * 1024).max(cfg.payload * 2 + 1024),
        published: Arc::clone(&published),
        epoch: AtomicU64::new(0),
    });
    let workers = (0..threads)
        .map(|i| client::spawn(i, threads, Arc::clone(&setup)))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| format!("cannot start subscriber threads: {e}"))?;
    let mut rig = Rig {
        cfg,
        setup,
        workers,
        rr: 0,
        progress: Progress::new(cfg.quiet),
        rate_mark: (Instant::now(), 0),
        rate: 0.0,
    };
    let pids = &cfg.server_pids;

    // Connect phase.
    let srv_before = sample(pids);
    let gen_before = proc::self_cpu().ok();
    let connect_start_ns = sys::now_ns();
    rig.open(cfg.subscribers, Class::Stayer);
    rig.open(cfg.churners, Class::Churner);
    let connected = rig.wait_connected(cfg.subscribers + cfg.churners);
    let srv_connected = sample(pids);
    let gen_connected = proc::self_cpu().ok();
    thread::sleep(SETTLE);
    let srv_settled = sample(pids);

    // Measurement window.
    let window = match cfg.scenario {
        Scenario::Idle => hold(&mut rig)?,
        _ => publish(&mut rig, &names, &published)?,
    };
    let reports = rig.finish()?;
    Ok(build_report(
        cfg,
        &reports,
        &window,
        Connect {
            start_ns: connect_start_ns,
            totals: connected,
            srv: (srv_before, srv_connected, srv_settled),
            gen_cpu: (gen_before, gen_connected),
        },
    ))
}

fn hold(rig: &mut Rig<'_>) -> Result<Window, String> {
    let cfg = rig.cfg;
    let srv0 = sample(&cfg.server_pids);
    let gen0 = proc::self_cpu().ok();
    let start_ns = sys::now_ns();
    let t0 = Instant::now();
    let hold = Duration::from_secs_f64(cfg.duration_s);
    while t0.elapsed() < hold {
        let t = rig.totals();
        rig.progress.update(|| {
            format!(
                "hold {} open, {} dropped  [{:.1}/{:.0} s]",
                num(t.open[0]),
                num(t.dropped),
                t0.elapsed().as_secs_f64(),
                cfg.duration_s
            )
        });
        thread::sleep(Duration::from_millis(20));
    }
    rig.progress.clear();
    Ok(Window {
        start_ns,
        end_ns: sys::now_ns(),
        srv: (srv0, sample(&cfg.server_pids)),
        gen_cpu: (gen0, proc::self_cpu().ok()),
        publish: None,
        complete: true,
        churn: None,
        samples: Vec::new(),
    })
}

fn publish(rig: &mut Rig<'_>, names: &Arc<Vec<String>>, published: &Arc<[AtomicU64]>) -> Result<Window, String> {
    let cfg = rig.cfg;
    let chooser = if cfg.broadcast {
        Chooser::Mixed { topics: cfg.topics, broadcast: cfg.topics, every: cfg.broadcast_every }
    } else {
        Chooser::RoundRobin { topics: cfg.topics }
    };
    let pace = cfg.rate.map_or(Pace::BackToBack, Pace::Rate);
    let setup = Arc::new(PubSetup {
        addr: cfg.publish.addr,
        host: cfg.publish.host.clone(),
        path: cfg.publish.path.clone(),
        method: cfg.pub_method.clone(),
        body: cfg.body.clone(),
        headers: cfg.pub_headers.clone(),
        topic_names: Arc::clone(names),
        broadcast_name: if cfg.broadcast { "all".into() } else { String::new() },
        modulus: u64::from(cfg.modulus()),
        payload: cfg.payload,
        conns: cfg.pub_conns,
        timeout: Duration::from_secs_f64(cfg.timeout_s.min(10.0)),
        pace,
        max_events: cfg.events,
        duration: cfg.paced().then(|| Duration::from_secs_f64(cfg.duration_s)),
        chooser,
        published: Arc::clone(published),
    });
    let churn = matches!(cfg.scenario, Scenario::Churn | Scenario::Soak) && cfg.churn_rate > 0.0;
    let sampling = cfg.scenario == Scenario::Soak;
    let timeout = Duration::from_secs_f64(cfg.timeout_s);

    let srv0 = sample(&cfg.server_pids);
    let gen0 = proc::self_cpu().ok();
    let before = rig.totals();
    let t0 = Instant::now();
    let start_ns = sys::now_ns();
    let publisher = Publisher::start(setup, start_ns).map_err(|e| format!("cannot start publisher: {e}"))?;

    let mut pub_done: Option<Instant> = None;
    let mut churn_issued = 0u64;
    let mut samples = Vec::new();
    let mut next_sample = Duration::from_secs_f64(cfg.sample_every_s);
    let mut last_sample = (Duration::ZERO, before.deliveries);
    let mut complete = false;
    if sampling {
        print_sample_line(rig, &report::sample_header(), cfg);
    }
    loop {
        let el = t0.elapsed();
        if pub_done.is_none() && publisher.is_done() {
            pub_done = Some(Instant::now());
        }
        if churn && pub_done.is_none() {
            let target = (cfg.churn_rate * el.as_secs_f64()) as u64;
            if target > churn_issued {
                rig.churn(target - churn_issued);
                churn_issued = target;
            }
        }
        let t = rig.totals();
        if sampling && el >= next_sample {
            next_sample += Duration::from_secs_f64(cfg.sample_every_s);
            let s = soak_sample(cfg, &t, el, last_sample, publisher.live().0);
            last_sample = (el, t.deliveries);
            print_sample_line(rig, &report::sample_row(&s), cfg);
            samples.push(s);
        }
        if let Some(done) = pub_done {
            // Only a snapshot taken after the publisher finished compares
            // against the final publish counts.
            if let Some(t) = rig.fresh_snapshot() {
                if t.caught_up >= t.open[Class::Stayer as usize] {
                    complete = true;
                    break;
                }
            }
            if done.elapsed() > timeout {
                break;
            }
        } else if pace == Pace::BackToBack && el > timeout {
            publisher.stop();
            break;
        }
        let rate = rig.delivery_rate(t.deliveries);
        let (ok, errs) = publisher.live();
        rig.progress.update(|| {
            format!(
                "published {} ({} err) | delivered {} ({}/s) | caught up {}/{} | missing {} dup {} dropped {}  [{:.1} s]",
                num(ok),
                num(errs),
                num(t.deliveries),
                num(rate as u64),
                num(t.caught_up),
                num(t.open[0]),
                num(t.missing_live),
                num(t.duplicates),
                num(t.dropped),
                el.as_secs_f64()
            )
        });
        thread::sleep(TICK);
    }
    if sampling {
        // A last row at the end of the window (the schedule rarely ends on
        // a sample boundary).
        let t = rig.totals();
        let s = soak_sample(cfg, &t, t0.elapsed(), last_sample, publisher.live().0);
        print_sample_line(rig, &report::sample_row(&s), cfg);
        samples.push(s);
    }
    let end_ns = sys::now_ns();
    let srv1 = sample(&cfg.server_pids);
    let gen1 = proc::self_cpu().ok();
    rig.progress.clear();
    publisher.stop();
    let pub_report = publisher.join();
    let after = rig.totals();
    Ok(Window {
        start_ns,
        end_ns,
        srv: (srv0, srv1),
        gen_cpu: (gen0, gen1),
        publish: Some(pub_report),
        complete,
        churn: churn.then(|| {
            let c = Class::Churner as usize;
            (
                after.attempted[c] - before.attempted[c],
                after.established[c] - before.established[c],
                after.churn_closed - before.churn_closed,
            )
        }),
        samples,
    })
}

/// Soak rows are part of the table output; with `--json` they go to stderr
/// (unless `--quiet`) so stdout stays one JSON object.
fn print_sample_line(rig: &mut Rig<'_>, line: &str, cfg: &Config) {
    rig.progress.clear();
    if !cfg.json {
        println!("{line}");
    } else if !cfg.quiet {
        eprintln!("{line}");
    }
}

fn soak_sample(
    cfg: &Config,
    t: &Totals,
    el: Duration,
    (prev_t, prev_d): (Duration, u64),
    published: u64,
) -> SoakSample {
    let srv = sample(&cfg.server_pids);
    let dt = (el - prev_t).as_secs_f64().max(1e-9);
    SoakSample {
        t_s: el.as_secs_f64(),
        rss_bytes: srv.map(|s| s.rss),
        fds: srv.map(|s| s.fds),
        open: t.open[0] + t.open[1],
        deliveries_per_s: t.deliveries.saturating_sub(prev_d) as f64 / dt,
        published,
        missing_so_far: t.missing_live,
        duplicates_so_far: t.duplicates,
        dropped: t.dropped,
    }
}

/// Connect-phase measurements.
struct Connect {
    start_ns: u64,
    totals: Totals,
    /// Before, right after, and after the settle delay.
    srv: (Option<ServerSample>, Option<ServerSample>, Option<ServerSample>),
    gen_cpu: (Option<CpuSample>, Option<CpuSample>),
}

fn cpu_delta(a: Option<CpuSample>, b: Option<CpuSample>) -> CpuDelta {
    match (a, b) {
        (Some(a), Some(b)) => CpuDelta::between(&a, &b),
        _ => CpuDelta::default(),
    }
}

fn per(value: f64, count: u64) -> Option<f64> {
    (count > 0).then(|| value / count as f64)
}

fn build_report(cfg: &Config, reports: &[WorkerReport], w: &Window, c: Connect) -> Report {
    let st = Class::Stayer as usize;
    let ch = Class::Churner as usize;
    let mut hist = stats::new_histogram();
    let mut failures = [CauseCounts::default(), CauseCounts::default()];
    let mut drops = CauseCounts::default();
    let mut loss = [LossStats::default(), LossStats::default()];
    let (mut deliveries, mut expected, mut unique, mut foreign, mut wrong, mut comments) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut attempted, mut established, mut open_end) = ([0u64; 2], [0u64; 2], [0u64; 2]);
    let mut last_delivery_ns = 0u64;
    for r in reports {
        // Both histograms have the same bounds; add cannot fail.
        let _ = hist.add(&r.hist);
        for i in 0..2 {
            failures[i].merge(&r.connect_failures[i]);
            loss[i].merge(&r.loss[i]);
            attempted[i] += r.attempted[i];
            established[i] += r.established[i];
            open_end[i] += r.open_at_end[i];
        }
        drops.merge(&r.drops);
        deliveries += r.deliveries;
        expected += r.expected_stayers;
        unique += r.unique_stayers;
        foreign += r.foreign;
        wrong += r.wrong_topic;
        comments += r.comments;
        last_delivery_ns = last_delivery_ns.max(r.last_delivery_ns);
    }
    let dropped = drops.total();

    // Connect phase: everything opened before the window.
    let conn_est = c.totals.established[st] + c.totals.established[ch];
    let conn_secs = c.totals.last_established_ns.saturating_sub(c.start_ns) as f64 / 1e9;
    let connect = ConnectReport {
        attempted: attempted[st],
        established: established[st],
        failed: failures[st].total(),
        failures: failures[st].clone(),
        seconds: conn_secs,
        rate_per_s: if conn_secs > 0.0 { conn_est as f64 / conn_secs } else { 0.0 },
        open_at_end: open_end[st],
        dropped,
        drops: drops.clone(),
    };

    let window_wall = w.end_ns.saturating_sub(w.start_ns) as f64 / 1e9;
    let srv_window = cpu_delta(w.srv.0.map(|s| s.cpu), w.srv.1.map(|s| s.cpu));
    let gen_window = cpu_delta(w.gen_cpu.0, w.gen_cpu.1);

    let publishing = w.publish.is_some();
    let first_send = w.publish.as_ref().map_or(0, |p| p.first_send_ns);
    let delivery_window = if first_send > 0 && last_delivery_ns > first_send {
        (last_delivery_ns - first_send) as f64 / 1e9
    } else {
        0.0
    };
    let delivery = publishing.then(|| DeliveryReport {
        deliveries,
        expected,
        unique_stayers: unique,
        complete: w.complete && loss[st].missing == 0,
        window_s: delivery_window,
        deliveries_per_s: if delivery_window > 0.0 { deliveries as f64 / delivery_window } else { 0.0 },
        foreign_events: foreign,
        wrong_topic: wrong,
        sse_comments: comments,
        stayers: loss[st],
        churners: (cfg.churners > 0).then_some(loss[ch]),
    });

    let overloaded = w.publish.as_ref().is_some_and(|p| p.overloaded);
    let (latency, latency_note) = if !publishing {
        (None, None)
    } else if overloaded {
        (None, Some("publisher overloaded; latency not reported".to_string()))
    } else if hist.is_empty() {
        (None, Some("no events received".to_string()))
    } else {
        let note = Some(if cfg.rate.is_none() {
            "back-to-back publishing: latency includes queueing behind earlier events".to_string()
        } else {
            "measured from each event's scheduled send time (includes any publisher lag)".to_string()
        });
        (Some(stats::percentiles(&hist)), note)
    };

    let server = match (c.srv.0, c.srv.2, w.srv.1) {
        (Some(before), Some(settled), Some(end)) => {
            let cpu_connect = cpu_delta(Some(before.cpu), c.srv.1.map(|s| s.cpu));
            Some(ServerReport {
                pids: cfg.server_pids.clone(),
                rss_before_bytes: before.rss,
                rss_after_connect_bytes: settled.rss,
                rss_end_bytes: end.rss,
                rss_per_connection_bytes: per(settled.rss as f64 - before.rss as f64, conn_est),
                fds_before: before.fds,
                fds_after_connect: settled.fds,
                fds_end: end.fds,
                cpu_us_per_connection: per(cpu_connect.seconds() * 1e6, conn_est),
                cpu_connect,
                cpu_window: srv_window,
                cpu_ns_per_delivery: per(srv_window.seconds() * 1e9, deliveries).filter(|_| publishing),
                cpu_cores_window: if window_wall > 0.0 { srv_window.seconds() / window_wall } else { 0.0 },
            })
        }
        _ => None,
    };

    let generator = GeneratorReport {
        threads: cfg.threads,
        cpu_connect: cpu_delta(c.gen_cpu.0, c.gen_cpu.1),
        cpu_window: gen_window,
        window_s: window_wall,
        cpu_cores_window: if window_wall > 0.0 { gen_window.seconds() / window_wall } else { 0.0 },
        cpu_ns_per_delivery: per(gen_window.seconds() * 1e9, deliveries).filter(|_| publishing),
    };

    let churn = w.churn.map(|(opened, est, closed)| ChurnReport {
        pool: cfg.churners,
        target_rate: cfg.churn_rate,
        achieved_rate: if window_wall > 0.0 { est as f64 / window_wall } else { 0.0 },
        opened,
        established: est,
        closed,
        failures: failures[ch].clone(),
    });

    let soak = (cfg.scenario == Scenario::Soak).then(|| soak_summary(&w.samples)).flatten();

    // Checks.
    let mut checks = Vec::new();
    let mut check = |name, ok, detail: String| checks.push(Check { name, ok, detail });
    check(
        "subscribers connected",
        failures[st].total() == 0 && established[st] == cfg.subscribers,
        format!("{}/{} ({})", num(established[st]), num(cfg.subscribers), failures[st].summary()),
    );
    if cfg.scenario == Scenario::Idle {
        check(
            "still open after hold",
            open_end[st] == established[st] && dropped == 0 && established[st] > 0,
            format!("{}/{} open, {} dropped", num(open_end[st]), num(established[st]), num(dropped)),
        );
    } else {
        check("no streams dropped", dropped == 0, format!("{} ({})", num(dropped), drops.summary()));
    }
    if let Some(p) = &w.publish {
        check(
            "publishes accepted",
            p.error_count == 0 && p.ok > 0,
            format!("{} ok, {} errors ({})", num(p.ok), num(p.error_count), p.errors.summary()),
        );
        if cfg.paced() {
            check(
                "publisher kept schedule",
                !p.overloaded,
                format!("{:.0}/s achieved, max lag {:.0} us", p.rate_achieved, p.max_lag_us),
            );
        }
        check(
            "every event delivered",
            w.complete && loss[st].missing == 0 && loss[st].subscribers > 0,
            format!(
                "{} missing over {} stayers{}",
                num(loss[st].missing),
                num(loss[st].subscribers),
                if w.complete { "" } else { " (timed out waiting)" }
            ),
        );
        check(
            "no duplicates",
            loss[st].duplicates + loss[ch].duplicates == 0,
            num(loss[st].duplicates + loss[ch].duplicates),
        );
        if cfg.broadcast || cfg.topics > 1 {
            check("only subscribed topics", wrong == 0, format!("{} events of other topics", num(wrong)));
        }
        if cfg.churners > 0 {
            check(
                "churners lose nothing once in",
                loss[ch].missing == 0,
                format!("{} missing over {} churners", num(loss[ch].missing), num(loss[ch].subscribers)),
            );
        }
    }
    if !cfg.server_pids.is_empty() {
        check(
            "server measured",
            server.is_some(),
            if server.is_some() { "ok".into() } else { "a /proc read failed (server exited?)".into() },
        );
    }
    let ok = checks.iter().all(|c| c.ok);

    Report {
        tool: "ssehub-bench",
        version: env!("CARGO_PKG_VERSION"),
        config: cfg.clone(),
        ok,
        checks,
        connect,
        publish: w.publish.clone(),
        delivery,
        latency,
        latency_note,
        churn,
        server,
        generator,
        samples: w.samples.clone(),
        soak,
    }
}

fn soak_summary(samples: &[SoakSample]) -> Option<SoakSummary> {
    let pts: Vec<(f64, u64, u64)> = samples.iter().filter_map(|s| Some((s.t_s, s.rss_bytes?, s.fds?))).collect();
    let (first, last) = (pts.first()?, pts.last()?);
    let rss: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1 as f64)).collect();
    let fds: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.2 as f64)).collect();
    Some(SoakSummary {
        rss_start: first.1,
        rss_end: last.1,
        rss_max: pts.iter().map(|p| p.1).max()?,
        rss_slope_kib_per_min: slope(&rss) * 60.0 / 1024.0,
        fds_start: first.2,
        fds_end: last.2,
        fds_max: pts.iter().map(|p| p.2).max()?,
        fds_slope_per_min: slope(&fds) * 60.0,
    })
}

/// Least-squares slope of y over x (0 with fewer than two distinct x).
fn slope(pts: &[(f64, f64)]) -> f64 {
    let n = pts.len() as f64;
    if pts.len() < 2 {
        return 0.0;
    }
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_fits_a_line() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64 + 7.0)).collect();
        assert!((slope(&pts) - 3.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 2.0)]), 0.0);
        assert_eq!(slope(&[(1.0, 2.0), (1.0, 5.0)]), 0.0);
    }
}
