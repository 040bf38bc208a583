//! ssehub: a Server-Sent Events fan-out hub.
//!
//! Publishers `POST /publish` an event once; the hub holds every subscriber's
//! `GET /events` stream and writes the event to each. The modules, in the
//! order an event travels:
//!
//! - [`http`]: the strict request reader and error statuses.
//! - [`query`], [`publish`], [`auth`]: what subscribe and publish requests say, and who may publish.
//! - [`sse`], [`event`]: the wire format; each event is encoded once into a shared frame.
//! - [`bus`]: the sequencer and the per-worker queues that carry frames between threads.
//! - [`reactor`], `handler`, [`fanout`]: one event loop per worker,
//!   what each request does, and the batch write to subscribers.
//! - [`topics`], [`conn`], [`timer`]: per-worker state: subscriptions and history,
//!   connections, deadlines.
//! - [`cluster`]: cluster mode, many nodes following one Redis stream.
//! - [`metrics`], [`config`], [`server`]: counters, flags, start and stop.
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

pub mod auth;
pub mod bus;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod event;
pub mod fanout;
mod handler;
pub mod http;
pub mod metrics;
pub mod publish;
pub mod query;
pub mod reactor;
pub mod server;
pub mod sse;
mod sys;
pub mod timer;
pub mod topics;

pub use config::Config;
pub use server::Server;
