//! The implementations of [`ssehub_core::backplane::Backplane`]: the
//! in-process sequencer ([`local`]) and, with the `redis` feature, cluster
//! mode on a Redis stream ([`redis`]).

pub mod local;
#[cfg(feature = "redis")]
pub mod redis;

use ssehub_core::backplane::Metric;

/// A counter sample for [`ssehub_core::backplane::Backplane::metrics`].
pub(crate) fn counter(name: &'static str, help: &'static str, value: u64) -> Metric {
    Metric { name, kind: "counter", help, value }
}

/// A gauge sample for [`ssehub_core::backplane::Backplane::metrics`].
pub(crate) fn gauge(name: &'static str, help: &'static str, value: u64) -> Metric {
    Metric { name, kind: "gauge", help, value }
}

/// Keyed publishes answered from an earlier publish, whichever backplane keeps the keys.
pub(crate) fn idempotent_replays(value: u64) -> Metric {
    counter(
        "idempotent_replays_total",
        "Publishes answered with the ids of an earlier one under the same Idempotency-Key.",
        value,
    )
}
