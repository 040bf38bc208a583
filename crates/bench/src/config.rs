//! The resolved run configuration: command-line flags + preset + per-scenario
//! defaults, validated once, in one struct that every part reads and that the
//! JSON report embeds verbatim. Flags that mean nothing for the chosen
//! scenario are rejected rather than silently ignored.

use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

use crate::presets;
use crate::template::{Template, UrlTemplate};
use crate::{RunArgs, Scenario};

/// Connections per extra source address when `--source-addrs` is automatic.
const CONNS_PER_SOURCE: u64 = 5_000;

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub scenario: Scenario,
    pub preset: String,
    pub sub_url: String,
    pub pub_url: String,
    pub pub_method: String,
    pub pub_body: String,
    pub pub_headers: Vec<String>,
    /// Extra subscribe request headers (`Name: value`).
    pub sub_headers: Vec<String>,
    /// `--sub-jwt`'s algorithm, for the report (never the key).
    pub sub_jwt: Option<String>,
    /// Every minted token's grant instead of the subscriber's topics.
    pub sub_jwt_grants: Vec<String>,
    /// Signs the subscriber tokens.
    #[serde(skip)]
    pub signer: Option<crate::token::Signer>,
    pub threads: usize,
    /// Subscribers connected before publishing and kept to the end.
    pub subscribers: u64,
    /// Cap on events published (None: until the duration ends).
    pub events: Option<u64>,
    /// Paced events/s (None: back to back).
    pub rate: Option<f64>,
    /// Publishing time (paced), hold time (idle); unused for burst.
    pub duration_s: f64,
    pub topics: u32,
    /// Subscribers also subscribe to a broadcast topic (topics scenario).
    pub broadcast: bool,
    pub broadcast_every: u64,
    pub payload: usize,
    pub timeout_s: f64,
    /// None: unpaced.
    pub connect_rate: Option<f64>,
    pub max_inflight: usize,
    pub connect_timeout_s: f64,
    /// Source addresses 127.0.0.1 .. 127.0.0.N (0 or 1: no explicit bind).
    pub source_addrs: usize,
    pub pub_conns: usize,
    pub churn_rate: f64,
    pub churners: u64,
    pub sample_every_s: f64,
    pub server_pids: Vec<u32>,
    pub nofile_limit: u64,
    /// More subscribe servers, round robin with `sub` (cluster nodes).
    pub spread: Vec<std::net::SocketAddr>,
    #[serde(skip)]
    pub sub: UrlTemplate,
    #[serde(skip)]
    pub publish: UrlTemplate,
    #[serde(skip)]
    pub body: Template,
    #[serde(skip)]
    pub quiet: bool,
    #[serde(skip)]
    pub json: bool,
}

impl Config {
    pub fn resolve(a: &RunArgs, nofile_limit: u64) -> Result<Config, String> {
        use Scenario::*;
        let s = a.scenario;
        let reject = |given: bool, flag: &str| -> Result<(), String> {
            if given { Err(format!("{flag} does not apply to the {s:?} scenario")) } else { Ok(()) }
        };
        let paced = matches!(s, Steady | Churn | Soak) || (matches!(s, Topics | PerUser) && a.rate.is_some());
        reject(matches!(s, Idle | Burst) && a.rate.is_some(), "--rate")?;
        reject(s == Idle && a.events.is_some(), "--events")?;
        reject(s == Burst && a.duration.is_some(), "--duration")?;
        reject(
            matches!(s, Topics | PerUser) && a.rate.is_none() && a.duration.is_some(),
            "--duration (without --rate)",
        )?;
        let churny = matches!(s, Churn | Soak);
        reject(!churny && a.churn_rate.is_some(), "--churn-rate")?;
        reject(!churny && a.churners.is_some(), "--churners")?;
        reject(s != Soak && a.sample_every.is_some(), "--sample-every")?;

        let preset = presets::find(&a.preset)
            .ok_or_else(|| format!("unknown preset {:?} (known: {})", a.preset, presets::names().join(", ")))?;
        let urls = preset.urls(&a.host, a.port);
        let broadcast = s == Topics;
        let sub_url = match (&a.sub_url, broadcast) {
            (Some(u), _) => u.clone(),
            (None, false) => urls.sub_url,
            (None, true) => urls.sub_url_multi.ok_or_else(|| {
                format!(
                    "preset {} has no multi-topic subscribe URL; pass --sub-url with {{topic}} and {{broadcast}}",
                    preset.name
                )
            })?,
        };
        let sub = UrlTemplate::parse(&sub_url)?;
        if a.topics.is_some_and(|k| k > 1) && !sub.path.uses_topic() {
            return Err("--topics needs {topic} in --sub-url".into());
        }
        if broadcast && !sub.path.uses_broadcast() {
            return Err("the topics scenario needs {broadcast} in --sub-url".into());
        }
        let pub_url = a.pub_url.clone().unwrap_or(urls.pub_url);
        let publish = UrlTemplate::parse(&pub_url)?;
        let pub_body = a.pub_body.clone().unwrap_or_else(|| preset.pub_body.to_string());
        let body = Template::parse(&pub_body);
        if !body.uses_data() && !publish.path.uses_data() {
            return Err("the publish body (or URL) must contain {data}".into());
        }
        let pub_headers = if a.pub_headers.is_empty() {
            preset.pub_headers.iter().map(|h| h.to_string()).collect()
        } else {
            a.pub_headers.clone()
        };
        for h in pub_headers.iter().chain(&a.sub_headers) {
            let ok = h.split_once(':').is_some_and(|(n, _)| !n.is_empty() && !n.contains(char::is_whitespace))
                && !h.contains(['\r', '\n']);
            if !ok {
                return Err(format!("header {h:?}: expected `Name: value`"));
            }
            if h.to_ascii_lowercase().starts_with("content-length:") {
                return Err("--pub-header: Content-Length is computed, do not pass it".into());
            }
        }

        let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).max(1);
        let subscribers = a.subscribers.unwrap_or(if churny || s == PerUser { 5_000 } else { 10_000 });
        let topics = a.topics.unwrap_or(match s {
            Topics => 100,
            PerUser => u32::try_from(subscribers).map_err(|_| "--subscribers: too many for per-user topics")?,
            _ => 1,
        });
        if topics == 0 {
            return Err("--topics must be at least 1".into());
        }
        let events = match s {
            Idle => None,
            Burst => Some(a.events.unwrap_or(20)),
            Topics if !paced => Some(a.events.unwrap_or(200)),
            PerUser if !paced => Some(a.events.unwrap_or(subscribers * 10)),
            _ => a.events,
        };
        let rate = if paced {
            let r = a.rate.unwrap_or(10.0);
            if !(r > 0.0 && r.is_finite()) {
                return Err("--rate must be a positive number".into());
            }
            Some(r)
        } else {
            None
        };
        let duration_s = a.duration.unwrap_or(match s {
            Idle => 5.0,
            Soak => 60.0,
            _ => 10.0,
        });
        let churn_rate = a.churn_rate.unwrap_or(match s {
            Churn => 100.0,
            Soak => 50.0,
            _ => 0.0,
        });
        let churners = if churny { a.churners.unwrap_or((subscribers / 10).max(1)) } else { 0 };
        for (v, name) in
            [(duration_s, "--duration"), (a.timeout, "--timeout"), (a.connect_timeout, "--connect-timeout")]
        {
            if !(v > 0.0 && v.is_finite()) {
                return Err(format!("{name} must be a positive number of seconds"));
            }
        }
        if churn_rate < 0.0 || !churn_rate.is_finite() {
            return Err("--churn-rate must be >= 0".into());
        }

        let total_conns = subscribers + churners;
        let loopback_v4 = matches!(sub.addr.ip(), IpAddr::V4(ip) if ip.is_loopback());
        let source_addrs = match a.source_addrs {
            Some(n) if n > 1 && !loopback_v4 => {
                return Err("--source-addrs needs an IPv4 loopback target".into());
            }
            Some(n) if n > 254 => return Err("--source-addrs: at most 254".into()),
            Some(n) => n,
            None if loopback_v4 => total_conns.div_ceil(CONNS_PER_SOURCE).clamp(1, 254) as usize,
            None => 1,
        };
        if nofile_limit > 0 && total_conns + 64 > nofile_limit {
            return Err(format!(
                "{total_conns} connections need more descriptors than the limit ({nofile_limit}); \
                 run several generator processes"
            ));
        }

        Ok(Config {
            spread: a.sub_spread.clone(),
            scenario: s,
            preset: preset.name.to_string(),
            sub_url,
            pub_url,
            pub_method: a.pub_method.clone().unwrap_or_else(|| preset.pub_method.to_string()),
            pub_body,
            pub_headers,
            sub_headers: a.sub_headers.clone(),
            sub_jwt: a.sub_jwt.as_deref().and_then(|s| s.split_once(':')).map(|(alg, _)| alg.to_ascii_lowercase()),
            sub_jwt_grants: a.sub_jwt_grants.clone(),
            signer: a.sub_jwt.as_deref().map(crate::token::Signer::parse).transpose()?,
            threads,
            subscribers,
            events,
            rate,
            duration_s,
            topics,
            broadcast,
            broadcast_every: a.broadcast_every.max(1),
            payload: a.payload,
            timeout_s: a.timeout,
            connect_rate: (a.connect_rate > 0.0).then_some(a.connect_rate),
            max_inflight: a.max_inflight.max(1),
            connect_timeout_s: a.connect_timeout,
            source_addrs,
            pub_conns: a.pub_conns.max(1),
            churn_rate,
            churners,
            sample_every_s: a.sample_every.unwrap_or(5.0).max(0.1),
            server_pids: a.server_pid.clone(),
            nofile_limit,
            sub,
            publish,
            body,
            quiet: a.quiet,
            json: a.json,
        })
    }

    /// Number of topic indices, broadcast included: K in `seq = n*K + topic`.
    pub fn modulus(&self) -> u32 {
        self.topics + u32::from(self.broadcast)
    }

    /// Topic names by index: `t0`, `t1`, ..., then `all` for the broadcast.
    pub fn topic_names(&self) -> Vec<String> {
        let mut v: Vec<String> = (0..self.topics).map(|i| format!("t{i}")).collect();
        if self.broadcast {
            v.push("all".to_string());
        }
        v
    }

    pub fn source_ips(&self) -> Vec<IpAddr> {
        if self.source_addrs <= 1 {
            return Vec::new();
        }
        (0..self.source_addrs).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + i as u8))).collect()
    }

    pub fn paced(&self) -> bool {
        self.rate.is_some()
    }
}
