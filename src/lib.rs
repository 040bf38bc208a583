//! ssehub: a Server-Sent Events fan-out hub.
//!
//! Publishers `POST /publish` an event once; the hub holds every subscriber's
//! `GET /events` stream and writes the event to each. The wire formats live
//! in `ssehub-protocol`, the fan-out core (events, topics, history, the
//! sequencer, the batch write) in `ssehub-core`; this crate is the server
//! around them, in the order a request travels (`ARCHITECTURE.md` has the map):
//!
//! - [`driver`]: the event-loop mechanism behind a short contract (epoll today).
//! - [`reactor`], `exchange`, `streams`: one event loop per worker; request
//!   and response connections; event streams and the bridge to the fan-out.
//! - [`app`]: what each request means, decided without a socket in sight.
//! - [`auth`], [`response`]: who may do what; every refusal and its status.
//! - [`backplane`]: what orders events: in-process, or a Redis stream (`redis` feature).
//! - [`journal`]: the durable log of `--data-dir` (standalone history across restarts).
//! - [`conn`], [`timer`], [`metrics`]: connection state, deadlines, counters.
//! - [`config`], [`settings`], [`server`]: flags, per-subsystem settings, start and stop.
//! - [`ui`]: the live page at `/` and the browser client at `/ssehub.js`, embedded.
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

pub mod app;
pub mod auth;
pub mod backplane;
pub mod config;
pub mod conn;
pub mod driver;
mod exchange;
pub mod journal;
pub mod metrics;
pub mod reactor;
pub mod response;
pub mod server;
pub mod settings;
mod streams;
mod sys;
pub mod timer;
pub mod ui;

pub use config::Config;
pub use server::Server;

/// Raises the soft open-file limit to the hard limit and returns it (1024 if unknown).
pub fn sys_open_file_limit() -> u64 {
    match sys::raise_open_file_limit() {
        Ok(limit) => limit,
        Err(error) => {
            log::warn!("cannot read the open-file limit: {error}");
            1024
        }
    }
}
