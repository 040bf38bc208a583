//! The implementations of [`ssehub_core::backplane::Backplane`]: the
//! in-process sequencer ([`local`]) and, with the `redis` feature, cluster
//! mode on a Redis stream ([`redis`]).

pub mod local;
#[cfg(feature = "redis")]
pub mod redis;
