//! Readers for `/proc`: CPU time, resident memory and open descriptors of the
//! server process(es) under test (summed over a PID list, for multi-process
//! servers such as nginx master + workers) and of the generator itself.
//!
//! CPU comes from two sources. `/proc/PID/stat` utime+stime (in clock ticks,
//! `sysconf(_SC_CLK_TCK)`, usually 10 ms) is the portable number and covers
//! threads that have exited. `/proc/PID/task/*/schedstat` gives on-CPU
//! nanoseconds per live thread: far finer, which matters for short bursts,
//! but blind to threads that exit inside the window. The report gives both
//! and uses the nanosecond one for "CPU per delivery" when it is available.

use std::fs;
use std::io;

use serde::Serialize;

use crate::sys;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuSample {
    /// utime + stime, in clock ticks, summed over the pids.
    pub ticks: u64,
    /// Sum of per-thread schedstat run time, if every pid had it.
    pub sched_ns: Option<u64>,
}

/// CPU consumed between two samples.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuDelta {
    /// From utime+stime (clock-tick resolution).
    pub seconds_ticks: f64,
    /// From schedstat (nanosecond resolution), when available.
    pub seconds_precise: Option<f64>,
}

impl CpuDelta {
    pub fn between(a: &CpuSample, b: &CpuSample) -> CpuDelta {
        let hz = sys::clock_ticks_per_second() as f64;
        CpuDelta {
            seconds_ticks: b.ticks.saturating_sub(a.ticks) as f64 / hz,
            seconds_precise: match (a.sched_ns, b.sched_ns) {
                (Some(x), Some(y)) => Some(y.saturating_sub(x) as f64 / 1e9),
                _ => None,
            },
        }
    }

    /// The best available figure.
    pub fn seconds(&self) -> f64 {
        self.seconds_precise.unwrap_or(self.seconds_ticks)
    }
}

/// Checks that every pid exists now.
pub fn check_pids(pids: &[u32]) -> Result<(), String> {
    for pid in pids {
        if fs::metadata(format!("/proc/{pid}/stat")).is_err() {
            return Err(format!("--server-pid {pid}: no such process"));
        }
    }
    Ok(())
}

pub fn cpu(pids: &[u32]) -> io::Result<CpuSample> {
    let mut s = CpuSample { ticks: 0, sched_ns: Some(0) };
    for &pid in pids {
        s.ticks += stat_ticks(&fs::read_to_string(format!("/proc/{pid}/stat"))?)?;
        s.sched_ns = match (s.sched_ns, sched_ns(pid)) {
            (Some(acc), Some(v)) => Some(acc + v),
            _ => None,
        };
    }
    Ok(s)
}

pub fn self_cpu() -> io::Result<CpuSample> {
    cpu(&[std::process::id()])
}

/// utime + stime from the text of `/proc/PID/stat`.
fn stat_ticks(stat: &str) -> io::Result<u64> {
    // The command name (field 2) is parenthesised and may contain spaces
    // and parentheses: fields resume after the last ')'. After it come
    // field 3 (state) ... field 14 (utime), field 15 (stime).
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/PID/stat format");
    let rest = &stat[stat.rfind(')').ok_or_else(bad)? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let utime: u64 = fields.nth(11).and_then(|f| f.parse().ok()).ok_or_else(bad)?;
    let stime: u64 = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
    Ok(utime + stime)
}

/// Sum of the first schedstat field over the live threads of `pid`.
fn sched_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for entry in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = entry.ok()?.path().join("schedstat");
        // A thread may exit between listing and reading: skip it.
        if let Ok(text) = fs::read_to_string(path) {
            total += text.split_ascii_whitespace().next()?.parse::<u64>().ok()?;
        }
    }
    Some(total)
}

/// VmRSS in bytes, summed over the pids.
pub fn rss_bytes(pids: &[u32]) -> io::Result<u64> {
    let mut total = 0;
    for pid in pids {
        total += vm_rss(&fs::read_to_string(format!("/proc/{pid}/status"))?)?;
    }
    Ok(total)
}

fn vm_rss(status: &str) -> io::Result<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in /proc/PID/status"))
}

/// Open descriptors (entries of `/proc/PID/fd`), summed over the pids.
pub fn fd_count(pids: &[u32]) -> io::Result<u64> {
    let mut total = 0;
    for pid in pids {
        total += fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    }
    Ok(total)
}

/// One sample of everything we watch on the server.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerSample {
    pub cpu: CpuSample,
    pub rss: u64,
    pub fds: u64,
}

pub fn server_sample(pids: &[u32]) -> io::Result<ServerSample> {
    Ok(ServerSample { cpu: cpu(pids)?, rss: rss_bytes(pids)?, fds: fd_count(pids)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let stat = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 1 0 5 0 0";
        assert_eq!(stat_ticks(stat).unwrap(), 267);
        assert!(stat_ticks("garbage").is_err());
    }

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t    2048 kB\nThreads: 1\n";
        assert_eq!(vm_rss(status).unwrap(), 2048 * 1024);
        assert!(vm_rss("Name: x\n").is_err());
    }

    #[test]
    fn reads_own_process() {
        let me = [std::process::id()];
        assert!(rss_bytes(&me).unwrap() > 0);
        assert!(fd_count(&me).unwrap() >= 3);
        let a = self_cpu().unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = self_cpu().unwrap();
        assert!(b.ticks >= a.ticks);
        if let (Some(p), Some(q)) = (a.sched_ns, b.sched_ns) {
            assert!(q > p);
        }
        assert!(check_pids(&me).is_ok());
        assert!(check_pids(&[u32::MAX]).is_err());
    }
}
