//! `ssehub-bench`: load generator for SSE fan-out servers (ssehub and its
//! peers), plus `floor`, the minimal fan-out server that measures what this
//! machine can physically do. This file owns the command line only: it
//! parses flags, raises the open-file limit, and hands a resolved
//! [`config::Config`] to [`scenario::run`] (or runs [`floor`]).
//!
//! ```text
//! ssehub-bench floor --listen 127.0.0.1:8090 &
//! ssehub-bench run --scenario burst --preset floor -n 10000 --server-pid $!
//! ssehub-bench run --scenario steady --preset nchan -r 100 -d 20 --server-pid 1234,1235,1236
//! ssehub-bench run --scenario topics --sub-url 'http://127.0.0.1:8080/events?topic={topic}&topic={broadcast}' --json
//! ```
//!
//! Module map: `presets`/`config` (what to run), `template`/`http`/
//! `chunked`/`sse`/`payload` (the wire), `client` (mio subscribers),
//! `publisher`, `scenario` (phases), `stats`/`proc`/`sys` (measurement),
//! `report`/`progress` (output), `cause` (failure buckets), `floor`.

mod cause;
mod client;
mod config;
mod floor;
mod http;
mod payload;
mod presets;
mod proc;
mod progress;
mod publisher;
mod report;
mod scenario;
mod stats;
mod sys;
mod template;
mod token;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "ssehub-bench",
    version,
    about = "Load generator for Server-Sent Events fan-out servers",
    long_about = "Load generator for Server-Sent Events fan-out servers.\n\n\
        `run` opens many SSE subscribers (mio, one reactor per thread), publishes \
        sequenced, timestamped events over HTTP, and reports deliveries/s, \
        publish-to-receive latency, missing/duplicate events per subscriber, and the \
        server's CPU per delivery and memory per connection. `floor` runs the \
        minimal fan-out server used as the machine's physical baseline."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a load scenario against an SSE server.
    Run(Box<RunArgs>),
    /// Run the minimal fan-out server (the `floor` preset's target).
    Floor(FloorArgs),
    /// List the server presets.
    Presets,
}

/// What a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Open N connections, report connect rate and server RSS per connection, hold, verify.
    Idle,
    /// N subscribers on one topic, E events back to back: deliveries/s, CPU per delivery.
    Burst,
    /// N subscribers, R events/s for T seconds: latency at a fixed rate.
    Steady,
    /// N subscribers over K topics plus a broadcast topic: exact per-topic delivery.
    Topics,
    /// Subscribers connecting/disconnecting while events flow: stayers lose nothing.
    Churn,
    /// Steady + churn for a long time, sampling server RSS and fds.
    Soak,
    /// N subscribers each on its own topic (per-user notifications), events
    /// spread over the topics: back to back, or paced with --rate.
    PerUser,
}

/// `ssehub-bench run`: the flags of one load run.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Scenario to run.
    #[arg(long, value_enum)]
    pub scenario: Scenario,

    /// Server preset: sets sub/pub URLs, body, headers and port (see `presets`).
    #[arg(long, env = "SSEHUB_BENCH_PRESET", default_value = "ssehub")]
    pub preset: String,
    /// Host for the preset's URLs.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Overrides the preset's default port.
    #[arg(long, env = "SSEHUB_BENCH_PORT")]
    pub port: Option<u16>,
    /// Subscribe URL template ({topic}, {broadcast}).
    #[arg(long, value_name = "URL")]
    pub sub_url: Option<String>,
    /// More servers (HOST:PORT, repeatable) to spread subscribers over, round
    /// robin with the subscribe URL's own: the nodes of a cluster.
    #[arg(long = "sub-spread", value_name = "ADDR")]
    pub sub_spread: Vec<std::net::SocketAddr>,
    /// Publish URL template ({topic}).
    #[arg(long, value_name = "URL")]
    pub pub_url: Option<String>,
    /// Publish method.
    #[arg(long, value_name = "METHOD")]
    pub pub_method: Option<String>,
    /// Publish body template ({topic}, {data}).
    #[arg(long, value_name = "TEMPLATE")]
    pub pub_body: Option<String>,
    /// Publish header `Name: value` (repeatable; replaces the preset's).
    #[arg(long = "pub-header", value_name = "HEADER")]
    pub pub_headers: Vec<String>,
    /// Subscribe header `Name: value` (repeatable), e.g. `Authorization: Bearer <jwt>`.
    #[arg(long = "sub-header", value_name = "HEADER")]
    pub sub_headers: Vec<String>,
    /// Mint one JWT per subscriber before the run (`hs256:SECRET` or
    /// `es256:KEY.pem`), sent as `Authorization: Bearer`; its `sub` is the
    /// subscriber's number, its subscribe grant the subscriber's topics.
    #[arg(long = "sub-jwt", value_name = "ALG:KEY")]
    pub sub_jwt: Option<String>,
    /// The subscribe grant of every minted token instead (repeatable), e.g.
    /// `room/*` when `--sub-url` names a pattern.
    #[arg(long = "sub-jwt-grant", value_name = "PATTERN", requires = "sub_jwt")]
    pub sub_jwt_grants: Vec<String>,

    /// Subscriber threads, each with its own mio Poll [default: cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Subscribers held for the whole run [default: 10000; churn/soak: 5000].
    #[arg(long, short = 'n')]
    pub subscribers: Option<u64>,
    /// Events to publish [burst: 20; topics: 200; paced scenarios: unlimited].
    #[arg(long, short = 'e')]
    pub events: Option<u64>,
    /// Events per second, paced [steady/churn/soak: 10; topics: back to back].
    #[arg(long, short = 'r')]
    pub rate: Option<f64>,
    /// Seconds: publishing time, or hold time for idle [idle: 5; soak: 60; others: 10].
    #[arg(long, short = 'd')]
    pub duration: Option<f64>,
    /// Topics subscribers are spread over [topics: 100; others: 1].
    #[arg(long, short = 'k')]
    pub topics: Option<u32>,
    /// Event payload bytes (`<seq>:<send_ns>:<letters>`).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Seconds to wait for deliveries (burst/topics: from the first publish;
    /// paced: after the last) and for the connect phase.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,

    /// New connections per second while ramping up (0: unpaced).
    #[arg(long, default_value_t = 10_000.0)]
    pub connect_rate: f64,
    /// Connects in flight at most (started, response head not yet received).
    #[arg(long, default_value_t = 2_000)]
    pub max_inflight: usize,
    /// Seconds before an unanswered connect counts as a timeout.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Source addresses 127.0.0.1..N to spread subscribers over
    /// [default: one per 5000 connections].
    #[arg(long)]
    pub source_addrs: Option<usize>,

    /// Publish connections (each topic is owned by one, to keep order).
    #[arg(long, default_value_t = 4)]
    pub pub_conns: usize,
    /// In `topics`, every Nth event goes to the broadcast topic.
    #[arg(long, default_value_t = 10)]
    pub broadcast_every: u64,

    /// Churn: connections replaced per second [churn: 100; soak: 50].
    #[arg(long)]
    pub churn_rate: Option<f64>,
    /// Churn: size of the churning pool [default: subscribers / 10].
    #[arg(long)]
    pub churners: Option<u64>,
    /// Soak: seconds between samples [default: 5].
    #[arg(long)]
    pub sample_every: Option<f64>,

    /// Server process id(s) to measure, comma separated (e.g. nginx master,workers).
    #[arg(long, value_delimiter = ',', env = "SSEHUB_BENCH_SERVER_PID")]
    pub server_pid: Vec<u32>,

    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// `ssehub-bench floor`: the minimal fan-out server's flags.
#[derive(Args, Debug)]
pub struct FloorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Reactor threads (SO_REUSEPORT listeners; events are handed to all).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Exit after this many seconds (for scripts and tests).
    #[arg(long, value_name = "SECS")]
    pub exit_after: Option<f64>,
    /// No periodic stats on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let nofile = match sys::raise_nofile_limit() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("ssehub-bench: cannot raise RLIMIT_NOFILE: {e}");
            0
        }
    };
    match cli.command {
        Command::Presets => {
            for p in presets::PRESETS {
                let u = p.urls("127.0.0.1", None);
                println!("{:<16} {}", p.name, p.note);
                println!("{:<16}   sub: {}", "", u.sub_url);
                if let Some(m) = &u.sub_url_multi {
                    println!("{:<16}   sub (topics): {m}", "");
                }
                println!("{:<16}   pub: {} {}  body: {}", "", p.pub_method, u.pub_url, p.pub_body);
            }
            ExitCode::SUCCESS
        }
        Command::Floor(args) => match floor::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ssehub-bench floor: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            let cfg = match config::Config::resolve(&args, nofile) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("ssehub-bench: {e}");
                    return ExitCode::from(64);
                }
            };
            match scenario::run(&cfg) {
                Ok(rep) => {
                    let printed = if args.json {
                        report::print_json(&rep)
                    } else {
                        report::print_table(&rep);
                        Ok(())
                    };
                    if let Err(e) = printed {
                        eprintln!("ssehub-bench: {e}");
                        return ExitCode::FAILURE;
                    }
                    if rep.ok { ExitCode::SUCCESS } else { ExitCode::from(2) }
                }
                Err(e) => {
                    eprintln!("ssehub-bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
