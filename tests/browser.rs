//! The browser suite: `clients/js/ssehub.js` and the live page at `/` in
//! Debian's headless Chromium, driven by playwright-core (which downloads no
//! browser). The checks are node:test files in `tests/browser/`, each against
//! the real binary (`harness.mjs` starts it):
//!
//! - `client.test.mjs`: ssehub.js is at most 4 KB minified (terser) and
//!   gzipped (-9); the hub serves exactly that file, with CORS for `--cors-origin`.
//! - `share.test.mjs`: 8 tabs of one page on the same topics get every event,
//!   over exactly one subscriber connection on `/metrics`; the tab holding it
//!   closes mid-stream and the others lose and repeat nothing. Once with the
//!   module from the hub's origin (leader election), once from the page's
//!   origin (SharedWorker).
//! - `token.test.mjs`: an expired first token (401) and tokens of 1–2 s from
//!   `tokenUrl`, refreshed on `ssehub-expired`, without loss or duplicates.
//! - `gap.test.mjs`: a hub restart gives every tab `onGap` (`before-start`).
//! - `page.test.mjs`: `/` loads with no console error, its numbers move, a
//!   topic and data that are markup show as text; `--ui off` removes it.
//!
//! The first run installs `tests/browser/package-lock.json` with `npm ci`
//! into `target/browser-env` (again only when the lockfile changes). Node,
//! npm and Chromium come from Debian: `./test.sh` installs them when missing.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Debian's Chromium, unless `CHROMIUM` names another.
const CHROMIUM: &str = "/usr/bin/chromium";

#[test]
fn browser() {
    let chromium = std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from(CHROMIUM), PathBuf::from);
    let missing: Vec<&str> = [
        ("node", Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success())),
        ("npm", Command::new("npm").arg("--version").output().is_ok_and(|o| o.status.success())),
        ("chromium", chromium.exists()),
    ]
    .into_iter()
    .filter_map(|(name, found)| (!found).then_some(name))
    .collect();
    assert!(
        missing.is_empty(),
        "the browser tests need {} (Debian packages nodejs, npm, chromium): run ./test.sh, which installs them",
        missing.join(", ")
    );
    let env = install().unwrap_or_else(|report| panic!("installing the browser test libraries failed:\n{report}"));
    let dir = root().join("tests/browser");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("tests/browser")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.to_str().is_some_and(|p| p.ends_with(".test.mjs")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no tests/browser/*.test.mjs");
    let started = Instant::now();
    let output = Command::new("node")
        .args(["--test", "--test-concurrency=1", "--test-timeout=180000"])
        .args(&files)
        .env("SSEHUB_BIN", env!("CARGO_BIN_EXE_ssehub"))
        .env("BROWSER_ENV", &env)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .output()
        .expect("run node --test");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the browser tests failed ({}):\n{report}", output.status);
    // The summary (and the measured size of ssehub.js) for `cargo test -- --nocapture`.
    for line in report.lines().filter(|l| l.starts_with("# ") || l.starts_with("ok ")) {
        eprintln!("{line}");
    }
    eprintln!("browser tests passed in {:?}", started.elapsed());
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `npm ci` of `tests/browser/package-lock.json` into `target/browser-env`,
/// unless it was installed from this very lockfile already; under a file lock,
/// so two test processes do not install into one directory together.
fn install() -> Result<PathBuf, String> {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().ok_or("no target directory")?;
    let dir = target.join("browser-env");
    fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("setup.lock"))
        .map_err(|e| format!("open the setup lock: {e}"))?;
    // SAFETY: flock only takes a descriptor, which `lock` owns and keeps open during the call.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!("lock {}: {}", dir.display(), io::Error::last_os_error()));
    }
    let src = root().join("tests/browser");
    let mut manifest = String::new();
    for name in ["package.json", "package-lock.json"] {
        manifest += &fs::read_to_string(src.join(name)).map_err(|e| format!("read tests/browser/{name}: {e}"))?;
    }
    let stamp = dir.join("installed-from");
    if fs::read_to_string(&stamp).is_ok_and(|was| was == manifest) && dir.join("node_modules").exists() {
        return Ok(dir);
    }
    let _ = fs::remove_file(&stamp);
    for name in ["package.json", "package-lock.json"] {
        fs::copy(src.join(name), dir.join(name)).map_err(|e| format!("copy {name}: {e}"))?;
    }
    let output = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run npm ci: {e} (./test.sh installs npm)"))?;
    if !output.status.success() {
        return Err(format!(
            "npm ci failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    fs::write(&stamp, &manifest).map_err(|e| format!("write the stamp: {e}"))?;
    Ok(dir)
}
