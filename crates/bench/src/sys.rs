//! Thin safe wrappers over the few libc calls the generator needs and that
//! std, mio and socket2 do not expose: the raw CLOCK_MONOTONIC clock (event
//! payloads carry it), the open-file limit, the clock tick rate for
//! `/proc/PID/stat`, and `IP_BIND_ADDRESS_NO_PORT`. Every `unsafe` block of
//! the tool lives here.

use std::io;
use std::os::fd::AsRawFd;

/// CLOCK_MONOTONIC in nanoseconds. Publisher and subscribers run in the same
/// process, so send and receive stamps come from one clock.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, exclusively borrowed timespec for the duration
    // of the call; CLOCK_MONOTONIC is always available on Linux, so the call
    // cannot fail with valid arguments.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    // tv_sec and tv_nsec are non-negative for CLOCK_MONOTONIC.
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit with cur <= max, read back above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// `sysconf(_SC_CLK_TCK)`: the unit of utime/stime in `/proc/PID/stat`.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` so that binding a source address before
/// `connect` does not reserve an ephemeral port at bind time: the port is then
/// chosen at connect time per 4-tuple, which is what lets each extra source
/// address add a full ephemeral range.
pub fn set_bind_address_no_port(sock: &impl AsRawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: the fd is owned by `sock` and open for the duration of the call;
    // the option value points to a live c_int and the length matches it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_advances() {
        let a = now_ns();
        let b = now_ns();
        assert!(a > 0 && b >= a);
    }

    #[test]
    fn clock_ticks_is_sane() {
        let t = clock_ticks_per_second();
        assert!((1..=10_000).contains(&t));
    }
}
