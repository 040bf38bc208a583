//! ssehub's wire formats, as bytes: nothing here does I/O.
//!
//! The server, the load generator (`ssehub-bench`), the fuzz targets and the
//! integration tests share this crate, so each format has exactly one
//! implementation, and the one the fuzzer checks is the one that runs.
//!
//! - [`http`]: the strict request reader (routes handed up to the caller),
//!   chunked coding (strict for requests, lenient for clients), response heads.
//! - [`sse`]: the field encoder, the shared frame with its id and chunk
//!   framing, the WHATWG event-stream parser.
//! - [`form`], [`query`], [`publish`]: form decoding, the subscribe query,
//!   publish bodies decoded and validated.
//! - [`journal`]: the durable log's records (`--data-dir`), checksummed.
//! - [`resp`]: Redis replies (borrowed or owned) and commands, for cluster mode.
//! - [`id`], [`topic`], [`pattern`]: event ids, topic names, and the topic
//!   patterns (`*`, trailing `**`) that subscriptions and grants share.
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

pub mod form;
pub mod http;
pub mod id;
pub mod journal;
pub mod pattern;
pub mod publish;
pub mod query;
pub mod resp;
pub mod sse;
pub mod topic;

pub use id::EventId;
