//! The progress line on stderr: rewritten in place on a terminal (4 times a
//! second), a plain line every 5 s otherwise (logs, CI), nothing with
//! `--quiet`, and nothing during the first second, so short runs stay clean.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    enabled: bool,
    tty: bool,
    start: Instant,
    last: Option<Instant>,
    dirty: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        Progress {
            enabled: !quiet,
            tty: std::io::stderr().is_terminal(),
            start: Instant::now(),
            last: None,
            dirty: false,
        }
    }

    /// Shows `line()` if it is time to; `line` is only built then.
    pub fn update(&mut self, line: impl FnOnce() -> String) {
        if !self.enabled || self.start.elapsed() < Duration::from_secs(1) {
            return;
        }
        let every = if self.tty { Duration::from_millis(250) } else { Duration::from_secs(5) };
        if self.last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        // Progress is best effort: a closed stderr must not stop the run.
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{}", line());
            self.dirty = true;
        } else {
            let _ = writeln!(err, "{}", line());
        }
        let _ = err.flush();
    }

    /// Clears the line (before printing anything else on the terminal).
    pub fn clear(&mut self) {
        if self.dirty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            self.dirty = false;
        }
    }
}
