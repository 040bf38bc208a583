//! What each subsystem needs to know, built once from the command line.
//!
//! No subsystem reads the clap [`crate::config::Config`]: the reactor, the
//! streams, the request reader, auth, CORS and the backplane each get a small
//! struct here (as `http::Limits` does for the reader), so a subsystem's
//! inputs are visible in one place and tests can build them without a CLI.

use std::net::SocketAddr;
use std::time::Duration;

use ssehub_protocol::http::Limits;

/// Everything, grouped by subsystem.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Worker threads, each with its own loop and listener.
    pub workers: usize,
    /// The event loop and connection lifecycle.
    pub reactor: ReactorSettings,
    /// Event streams.
    pub streams: StreamSettings,
    /// Publishing: idempotency keys.
    pub publish: PublishSettings,
    /// What the request reader enforces.
    pub limits: Limits,
    /// Who may publish.
    pub auth: AuthSettings,
    /// Cross-origin responses.
    pub cors: Cors,
    /// Cluster mode (`--redis`), if on.
    pub cluster: Option<ClusterSettings>,
    /// Standalone durable history (`--data-dir`), if on.
    pub journal: Option<crate::journal::JournalSettings>,
    /// `--ui on`: serve the live page at `/` and the client at `/ssehub.js`.
    pub ui: bool,
    /// `--io`: the workers' I/O mechanism.
    pub io: Io,
}

/// The workers' I/O mechanism (`src/driver/`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Io {
    /// epoll for everything.
    Epoll,
    /// io_uring for the fan-out's writes; failing to set it up is an error.
    Uring,
    /// [`crate::driver::AUTO`], falling back to epoll with one log line.
    Auto,
}

/// The event loop and connection lifecycle.
#[derive(Clone, Debug)]
pub struct ReactorSettings {
    /// Time a request may take from its first byte; idle connections close after it.
    pub header_timeout: Duration,
    /// Open connections before new ones are turned away.
    pub max_connections: usize,
    /// Time to flush and finish after SIGTERM.
    pub shutdown_grace: Duration,
}

/// Event streams.
#[derive(Clone, Debug)]
pub struct StreamSettings {
    /// Between heartbeat comments (zero: none).
    pub heartbeat: Duration,
    /// The initial `retry:` sent to clients, in milliseconds.
    pub retry_ms: u64,
    /// Frames a subscriber may fall behind before it is dropped.
    pub max_backlog: usize,
    /// Events retained per topic for resumes.
    pub history: usize,
    /// How long an event stays replayable (zero: forever).
    pub history_ttl: Duration,
    /// Bytes all history may hold.
    pub history_memory: usize,
}

impl StreamSettings {
    /// History's bounds.
    pub fn history_limits(&self) -> ssehub_core::history::Limits {
        ssehub_core::history::Limits {
            per_topic: self.history,
            ttl_ms: self.history_ttl.as_millis() as u64,
            budget: self.history_memory,
        }
    }
}

/// Publishing.
#[derive(Clone, Debug)]
pub struct PublishSettings {
    /// How long an `Idempotency-Key` is remembered (zero: keys are ignored).
    pub idempotency_window: Duration,
    /// Standalone: bytes the remembered keys may take (the oldest go first).
    pub idempotency_max_bytes: usize,
}

/// Who may publish and subscribe.
#[derive(Clone, Default)]
pub struct AuthSettings {
    /// `--publish-token`: a bearer token that allows publishing anything.
    pub publish_token: Option<String>,
    /// `--jwt-secret`: HMAC keys.
    pub jwt_secrets: Vec<String>,
    /// `--jwt-public-key`: PEM files of public keys.
    pub jwt_public_keys: Vec<std::path::PathBuf>,
    /// `--jwt-audience`: required `aud`.
    pub jwt_audience: Option<String>,
    /// `--jwt-issuer`: required `iss`.
    pub jwt_issuer: Option<String>,
    /// `--jwt-cookie`: the cookie a subscriber's token may come in.
    pub jwt_cookie: String,
    /// `--jwt-leeway`: seconds of clock skew allowed on token times.
    pub jwt_leeway: u64,
    /// `--public-topic`: topics and patterns anyone may subscribe to.
    pub public_topics: Vec<String>,
}

impl AuthSettings {
    /// True when any JWT key is configured: subscriptions then need grants.
    pub fn jwt(&self) -> bool {
        !self.jwt_secrets.is_empty() || !self.jwt_public_keys.is_empty()
    }
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of every log line, even debug ones.
        f.debug_struct("AuthSettings")
            .field("publish_token", &self.publish_token.as_ref().map(|_| "<redacted>"))
            .field("jwt_secrets", &self.jwt_secrets.len())
            .field("jwt_public_keys", &self.jwt_public_keys)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_cookie", &self.jwt_cookie)
            .field("jwt_leeway", &self.jwt_leeway)
            .field("public_topics", &self.public_topics)
            .finish()
    }
}

/// The `--cors-origin` list.
#[derive(Clone, Debug, Default)]
pub struct Cors {
    /// Allowed origins; `*` allows any.
    pub origins: Vec<String>,
}

impl Cors {
    /// The `Access-Control-Allow-Origin` value for a request's `Origin`, if allowed.
    pub fn allow<'a>(&'a self, origin: Option<&'a [u8]>) -> Option<&'a str> {
        if self.origins.iter().any(|o| o == "*") {
            return Some("*");
        }
        let origin = std::str::from_utf8(origin?).ok()?;
        self.origins.iter().find(|o| *o == origin).map(String::as_str)
    }
}

/// Cluster mode: many nodes following one Redis stream.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// `redis://[user:pass@]host:port[/db]`.
    pub url: String,
    /// The stream every node follows.
    pub stream: String,
    /// Approximate length the stream is trimmed to on publish.
    pub maxlen: u64,
    /// Events per topic a replay from the stream returns at most (`--history`).
    pub history: usize,
    /// How long Redis keeps an `Idempotency-Key` (zero: keys are ignored).
    pub idempotency_window: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_allows_listed_origins_or_any() {
        let mut cors = Cors { origins: vec!["https://a".into(), "https://b".into()] };
        assert_eq!(cors.allow(Some(b"https://b")), Some("https://b"));
        assert_eq!(cors.allow(Some(b"https://c")), None);
        assert_eq!(cors.allow(None), None);
        cors.origins = vec!["*".into()];
        assert_eq!(cors.allow(None), Some("*"));
    }
}
