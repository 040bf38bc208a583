//! Failure causes: how a failed connect, a dropped stream or a failed publish
//! is bucketed in the report (refused, reset, timeout, EMFILE, out of ports,
//! closed by the server, malformed response, HTTP status, other). Errors are
//! counted, never unwrapped, so one bad socket does not end a run.

use std::collections::BTreeMap;
use std::io;

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// ECONNREFUSED: nothing listening, or the accept queue overflowed.
    Refused,
    /// ECONNRESET / EPIPE / ECONNABORTED.
    Reset,
    /// ETIMEDOUT, or our own connect / response deadline.
    Timeout,
    /// EMFILE / ENFILE: out of file descriptors (ours).
    Emfile,
    /// EADDRNOTAVAIL / EADDRINUSE: out of ephemeral ports for a source address.
    NoPorts,
    /// The server closed the connection (EOF) before or during the stream.
    Closed,
    /// The response was not valid HTTP / chunked / SSE.
    Protocol,
    /// A complete response head with an unexpected status.
    Http(u16),
    Other,
}

impl Cause {
    pub fn of(err: &io::Error) -> Cause {
        match err.raw_os_error() {
            Some(libc::ECONNREFUSED) => Cause::Refused,
            Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED) => Cause::Reset,
            Some(libc::ETIMEDOUT) => Cause::Timeout,
            Some(libc::EMFILE | libc::ENFILE) => Cause::Emfile,
            Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE) => Cause::NoPorts,
            _ => match err.kind() {
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Cause::Timeout,
                io::ErrorKind::UnexpectedEof => Cause::Closed,
                io::ErrorKind::InvalidData => Cause::Protocol,
                _ => Cause::Other,
            },
        }
    }

    fn bucket(self) -> &'static str {
        match self {
            Cause::Refused => "refused",
            Cause::Reset => "reset",
            Cause::Timeout => "timeout",
            Cause::Emfile => "emfile",
            Cause::NoPorts => "no_ports",
            Cause::Closed => "closed",
            Cause::Protocol => "protocol",
            Cause::Http(_) => "http",
            Cause::Other => "other",
        }
    }
}

/// Counts per cause. Fixed buckets plus a map for HTTP statuses (the map only
/// allocates on the failure path).
#[derive(Clone, Debug, Default)]
pub struct CauseCounts {
    fixed: [u64; 8],
    http: BTreeMap<u16, u64>,
}

const FIXED: [Cause; 8] = [
    Cause::Refused,
    Cause::Reset,
    Cause::Timeout,
    Cause::Emfile,
    Cause::NoPorts,
    Cause::Closed,
    Cause::Protocol,
    Cause::Other,
];

impl CauseCounts {
    pub fn add(&mut self, cause: Cause) {
        match cause {
            Cause::Http(code) => *self.http.entry(code).or_insert(0) += 1,
            c => {
                if let Some(i) = FIXED.iter().position(|f| *f == c) {
                    self.fixed[i] += 1;
                }
            }
        }
    }

    pub fn merge(&mut self, other: &CauseCounts) {
        for (a, b) in self.fixed.iter_mut().zip(other.fixed.iter()) {
            *a += b;
        }
        for (code, n) in &other.http {
            *self.http.entry(*code).or_insert(0) += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.fixed.iter().sum::<u64>() + self.http.values().sum::<u64>()
    }

    /// Non-zero buckets as `(name, count)`, e.g. `("refused", 3)`, `("http_503", 7)`.
    pub fn entries(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = FIXED
            .iter()
            .zip(self.fixed.iter())
            .filter(|(_, n)| **n > 0)
            .map(|(c, n)| (c.bucket().to_string(), *n))
            .collect();
        out.extend(self.http.iter().map(|(c, n)| (format!("http_{c}"), *n)));
        out
    }

    /// `refused=3 http_503=7`, or `none`.
    pub fn summary(&self) -> String {
        let e = self.entries();
        if e.is_empty() {
            return "none".to_string();
        }
        e.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    }
}

impl Serialize for CauseCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let map: BTreeMap<String, u64> = self.entries().into_iter().collect();
        map.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_errno() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(Cause::of(&e), Cause::Refused);
        let e = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(Cause::of(&e), Cause::Emfile);
        let e = io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
        assert_eq!(Cause::of(&e), Cause::NoPorts);
    }

    #[test]
    fn counts_and_merges() {
        let mut a = CauseCounts::default();
        a.add(Cause::Reset);
        a.add(Cause::Http(503));
        let mut b = CauseCounts::default();
        b.add(Cause::Http(503));
        b.add(Cause::Refused);
        a.merge(&b);
        assert_eq!(a.total(), 4);
        assert_eq!(a.summary(), "refused=1 reset=1 http_503=2");
    }
}
