//! Command-line flags, each also readable from an `SSEHUB_*` environment
//! variable. Parsed once at start into [`Settings`]; nothing else reads them.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use ssehub_protocol::http::Limits;

use crate::journal::{Fsync, JournalSettings};
use crate::settings::{
    AuthSettings, ClusterSettings, Cors, Io, PublishSettings, ReactorSettings, Settings, StreamSettings,
};

/// A Server-Sent Events fan-out hub: publish once, every subscriber receives it.
#[derive(Parser, Debug, Clone)]
#[command(name = "ssehub", version, about)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, env = "SSEHUB_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Worker threads, each with its own event loop and listener (at most 64) [default: available cores].
    #[arg(long, env = "SSEHUB_WORKERS", value_parser = clap::value_parser!(u16).range(0..=64))]
    pub workers: Option<u16>,

    /// Events retained per topic for `Last-Event-ID` replay.
    #[arg(long, env = "SSEHUB_HISTORY", default_value_t = 1024)]
    pub history: usize,

    /// Seconds an event stays replayable (0: no expiry); a resume that
    /// needed an expired event gets `ssehub-gap` (`expired`).
    #[arg(long, env = "SSEHUB_HISTORY_TTL", default_value = "3600", value_parser = parse_seconds)]
    pub history_ttl: Duration,

    /// Memory all history may hold, bookkeeping included (e.g. `128MiB`,
    /// `1GiB`, `500MB`, or bytes); past it the oldest events go first.
    #[arg(long, env = "SSEHUB_HISTORY_MEMORY", default_value = "128MiB", value_parser = parse_bytes)]
    pub history_memory: usize,

    /// Frames a subscriber may fall behind before it is dropped as a slow consumer.
    #[arg(long, env = "SSEHUB_MAX_BACKLOG", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_backlog: u32,

    /// Seconds between comment heartbeats on each stream (0 disables; fractions allowed).
    #[arg(long, env = "SSEHUB_HEARTBEAT", default_value = "15", value_parser = parse_seconds)]
    pub heartbeat: Duration,

    /// Reconnection delay sent to clients in the stream's first `retry:` line, in milliseconds.
    #[arg(long, env = "SSEHUB_RETRY", default_value_t = 3000)]
    pub retry: u64,

    /// Seconds a request may take from its first byte (and an idle connection may wait) before 408/close.
    #[arg(long, env = "SSEHUB_HEADER_TIMEOUT", default_value = "10", value_parser = parse_seconds)]
    pub header_timeout: Duration,

    /// Largest publish body in bytes; larger is 413, decided before reading it.
    #[arg(long, env = "SSEHUB_MAX_BODY", default_value_t = 64 * 1024)]
    pub max_body: u64,

    /// Open connections before new publishers get 503 and subscribers a retry-and-close
    /// [default: the open-file limit minus a reserve].
    #[arg(long, env = "SSEHUB_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Require `Authorization: Bearer TOKEN` to publish. Without it, only loopback peers may publish.
    #[arg(long, env = "SSEHUB_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<String>,

    /// HMAC secret verifying subscriber and publisher JWTs (HS256/384/512; repeatable, for rotation).
    /// Any JWT key turns auth on: private topics then need a token's grants.
    #[arg(long = "jwt-secret", env = "SSEHUB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secrets: Vec<String>,

    /// PEM public key verifying JWTs (RS*, PS*, ES256/384, EdDSA; repeatable, for rotation).
    #[arg(long = "jwt-public-key", env = "SSEHUB_JWT_PUBLIC_KEY", value_delimiter = ',')]
    pub jwt_public_keys: Vec<std::path::PathBuf>,

    /// Audience every token must carry in `aud`.
    #[arg(long, env = "SSEHUB_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Issuer every token must carry in `iss`.
    #[arg(long, env = "SSEHUB_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Cookie a subscriber's token may come in (after `Authorization` and `?token=`).
    #[arg(long, env = "SSEHUB_JWT_COOKIE", default_value = "ssehub_token")]
    pub jwt_cookie: String,

    /// Seconds of clock skew allowed on token `exp`, `nbf` and `iat`; an open stream ends this long after `exp`.
    #[arg(long, env = "SSEHUB_JWT_LEEWAY", default_value_t = 30)]
    pub jwt_leeway: u64,

    /// Topic or pattern anyone may subscribe to without a token when JWT auth is on (repeatable).
    #[arg(long = "public-topic", env = "SSEHUB_PUBLIC_TOPIC", value_delimiter = ',')]
    pub public_topics: Vec<String>,

    /// Allowed CORS origin (repeatable), or `*` for any.
    #[arg(long = "cors-origin", env = "SSEHUB_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Seconds a publish's `Idempotency-Key` is remembered: a retry with the
    /// same key within it publishes nothing and gets the first ids (0 ignores keys).
    #[arg(long, env = "SSEHUB_IDEMPOTENCY_WINDOW", default_value = "600", value_parser = parse_seconds)]
    pub idempotency_window: Duration,

    /// Bytes the remembered idempotency keys may take (standalone; in cluster
    /// mode they live in Redis); past it the oldest are forgotten early.
    #[arg(long, env = "SSEHUB_IDEMPOTENCY_MAX_BYTES", default_value_t = 16 << 20)]
    pub idempotency_max_bytes: usize,

    /// Seconds to flush streams and finish requests after SIGTERM/SIGINT.
    #[arg(long, env = "SSEHUB_SHUTDOWN_GRACE", default_value = "5", value_parser = parse_seconds)]
    pub shutdown_grace: Duration,

    /// Cluster mode: follow and publish to a Redis stream, `redis://[user:pass@]host:port[/db]`.
    #[arg(long, env = "SSEHUB_REDIS", hide_env_values = true)]
    pub redis: Option<String>,

    /// The Redis stream every node follows (cluster mode).
    #[arg(long, env = "SSEHUB_REDIS_STREAM", default_value = "ssehub")]
    pub redis_stream: String,

    /// Approximate length the stream is trimmed to on each publish (cluster mode).
    #[arg(long, env = "SSEHUB_REDIS_MAXLEN", default_value_t = 100_000)]
    pub redis_maxlen: u64,

    /// Standalone: keep history in an on-disk log in this directory, so it
    /// survives restarts (events are written before their publish is answered).
    /// Refused with --redis, whose stream is already the durable log.
    #[arg(long, env = "SSEHUB_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,

    /// With --data-dir: when the log is forced to disk: after every write
    /// (`always`), at most once a second in the background (`everysec`), or
    /// when the OS decides (`no`).
    #[arg(long, env = "SSEHUB_FSYNC", value_enum, default_value_t = FsyncFlag::Everysec)]
    pub fsync: FsyncFlag,

    /// With --data-dir: size past which a log segment is closed and a new one begun.
    #[arg(long, env = "SSEHUB_DATA_SEGMENT_BYTES", default_value = "16MiB", value_parser = parse_bytes, hide = true)]
    pub data_segment_bytes: usize,

    /// The live page at `/` and the browser client at `/ssehub.js` (`off` answers 404 there).
    #[arg(long, env = "SSEHUB_UI", value_enum, default_value_t = Switch::On)]
    pub ui: Switch,

    /// The I/O mechanism: `epoll`, `uring` (io_uring for the fan-out's
    /// writes; an error at start if the kernel refuses it) or `auto` (see
    /// README: what the benchmark chose, falling back to epoll).
    #[arg(long, env = "SSEHUB_IO", value_enum, default_value_t = IoFlag::Auto)]
    pub io: IoFlag,

    /// Log filter (error, warn, info, debug, trace; RUST_LOG syntax).
    #[arg(long, env = "SSEHUB_LOG", default_value = "info")]
    pub log: String,
}

/// `--fsync`'s values.
#[derive(clap::ValueEnum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum FsyncFlag {
    /// After every write.
    Always,
    /// At most once a second, in the background.
    Everysec,
    /// Never asked for.
    No,
}

/// A feature flag's value.
#[derive(clap::ValueEnum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// `--io`'s values.
#[derive(clap::ValueEnum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum IoFlag {
    /// epoll (mio) for everything.
    Epoll,
    /// io_uring for the fan-out's writes, epoll for readiness.
    Uring,
    /// What the benchmark chose, falling back to epoll.
    Auto,
}

/// Descriptors kept free under the open-file limit so the server can always
/// accept, answer 503 and close.
pub const FD_RESERVE: usize = 64;

impl Config {
    /// The settings of every subsystem, given the process's open-file limit.
    pub fn settings(&self, open_file_limit: u64) -> Settings {
        let workers = self
            .workers
            .map(usize::from)
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .min(ssehub_core::bus::MAX_WORKERS);
        let max_connections = self.max_connections.unwrap_or_else(|| {
            let limit = usize::try_from(open_file_limit).unwrap_or(usize::MAX);
            limit.saturating_sub(FD_RESERVE).max(1)
        });
        Settings {
            listen: self.listen,
            workers,
            reactor: ReactorSettings {
                header_timeout: self.header_timeout,
                max_connections,
                shutdown_grace: self.shutdown_grace,
            },
            streams: StreamSettings {
                heartbeat: self.heartbeat,
                retry_ms: self.retry,
                max_backlog: self.max_backlog as usize,
                history: self.history,
                history_ttl: self.history_ttl,
                history_memory: self.history_memory,
            },
            publish: PublishSettings {
                idempotency_window: self.idempotency_window,
                // Keys are charged to --history-memory (see backplane::local):
                // they may take at most half of it.
                idempotency_max_bytes: self.idempotency_max_bytes.min(self.history_memory / 2),
            },
            limits: Limits { max_body: self.max_body },
            auth: AuthSettings {
                publish_token: self.publish_token.clone(),
                jwt_secrets: self.jwt_secrets.clone(),
                jwt_public_keys: self.jwt_public_keys.clone(),
                jwt_audience: self.jwt_audience.clone(),
                jwt_issuer: self.jwt_issuer.clone(),
                jwt_cookie: self.jwt_cookie.clone(),
                jwt_leeway: self.jwt_leeway,
                public_topics: self.public_topics.clone(),
            },
            cors: Cors { origins: self.cors_origins.clone() },
            cluster: self.redis.clone().map(|url| ClusterSettings {
                url,
                stream: self.redis_stream.clone(),
                maxlen: self.redis_maxlen,
                history: self.history,
                idempotency_window: self.idempotency_window,
            }),
            journal: self.data_dir.clone().map(|dir| JournalSettings {
                dir,
                fsync: match self.fsync {
                    FsyncFlag::Always => Fsync::Always,
                    FsyncFlag::Everysec => Fsync::Everysec,
                    FsyncFlag::No => Fsync::No,
                },
                segment_bytes: self.data_segment_bytes.max(4096) as u64,
                key_window_ms: self.idempotency_window.as_millis() as u64,
            }),
            ui: self.ui == Switch::On,
            io: match self.io {
                IoFlag::Epoll => Io::Epoll,
                IoFlag::Uring => Io::Uring,
                IoFlag::Auto => Io::Auto,
            },
        }
    }
}

/// Bytes as a number with an optional suffix: `KiB`, `MiB`, `GiB` (powers
/// of 1024), `kB`, `MB`, `GB` (powers of 1000), `B`.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KiB" | "K" | "k" => 1024.0,
        "MiB" | "M" => 1024.0 * 1024.0,
        "GiB" | "G" => 1024.0 * 1024.0 * 1024.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        other => return Err(format!("unknown size unit {other:?} (KiB, MiB, GiB, kB, MB, GB)")),
    };
    let value: f64 = number.parse().map_err(|_| format!("not a size: {text:?}"))?;
    let bytes = value * scale;
    if !bytes.is_finite() || bytes < 0.0 || bytes > usize::MAX as f64 {
        return Err(format!("size out of range: {text:?}"));
    }
    Ok(bytes as usize)
}

/// Seconds as a decimal number (`15`, `0.25`), or with an `ms`/`s` suffix.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 0.001)
    } else {
        (text.strip_suffix('s').unwrap_or(text), 1.0)
    };
    let value: f64 = number.trim().parse().map_err(|_| format!("not a duration: {text:?}"))?;
    if !(0.0..=1e9).contains(&value) {
        return Err(format!("out of range: {text:?}"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_bytes("128MiB"), Ok(128 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("500MB"), Ok(500_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("1.5 KiB"), Ok(1536));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("").is_err());
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_seconds("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_seconds("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_seconds("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("soon").is_err());
    }

    #[test]
    fn defaults_are_sane() {
        let settings = Config::parse_from(["ssehub"]).settings(20000);
        assert_eq!(settings.streams.history, 1024);
        assert_eq!(settings.streams.max_backlog, 256);
        assert_eq!(settings.streams.heartbeat, Duration::from_secs(15));
        assert_eq!(settings.limits.max_body, 65536);
        assert_eq!(settings.reactor.max_connections, 20000 - FD_RESERVE);
        assert!(settings.workers >= 1 && settings.cluster.is_none() && settings.ui);
        assert!(!Config::parse_from(["ssehub", "--ui", "off"]).settings(100).ui);
        let settings =
            Config::parse_from(["ssehub", "--workers", "0", "--cors-origin", "https://a,https://b"]).settings(100);
        assert!(settings.workers >= 1);
        assert_eq!(settings.cors.origins, ["https://a", "https://b"]);
    }

    #[test]
    fn data_dir_defaults_to_everysec_and_keys_get_at_most_half_the_history_budget() {
        assert!(Config::parse_from(["ssehub"]).settings(100).journal.is_none());
        let settings = Config::parse_from(["ssehub", "--data-dir", "/d", "--history-memory", "8MiB"]).settings(100);
        let journal = settings.journal.expect("on");
        assert_eq!((journal.fsync, journal.segment_bytes), (Fsync::Everysec, 16 << 20));
        assert_eq!(journal.key_window_ms, 600_000);
        assert_eq!(settings.publish.idempotency_max_bytes, 4 << 20, "16 MiB capped at half of 8 MiB");
        let always = Config::parse_from(["ssehub", "--data-dir", "/d", "--fsync", "always"]).settings(100);
        assert_eq!(always.journal.expect("on").fsync, Fsync::Always);
    }
}
