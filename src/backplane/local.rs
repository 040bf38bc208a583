//! Standalone: this process orders its own events. A publish is sequenced
//! and handed to every worker before it is answered, so there is nothing to
//! wait for. History lives in memory and, with `--data-dir`, in the durable
//! log the sequencer writes each publish to first ([`crate::journal`]): a
//! failed write answers `503` and publishes nothing. Without it, a resume
//! from before this process started is a gap.
//!
//! Idempotency keys live in this process too ([`KeyStore`], bounded in
//! bytes). A keyed publish holds the store's lock across the lookup, the
//! sequencing and the remembering, so two requests with one key on two
//! workers cannot both publish. Unkeyed publishes never take that lock.
//! With `--data-dir` a key is written to the log in the same write as its
//! events, and read back at start, so a retry after a restart is still a
//! replay. The keys' bytes are charged to `--history-memory`: history keeps
//! its events within the budget less what the keys hold, and the keys may
//! hold at most half of it (`--idempotency-max-bytes` is capped there).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use ssehub_core::backplane::{
    Backplane, Catchup, IdempotencyKey, Metric, Origin, PublishFailure, Published, ReplayRequest, Submitted,
};
use ssehub_core::bus::{Bus, Refused, unix_ms};
use ssehub_core::history::Gap;
use ssehub_core::idempotency::{KeyStore, Lookup};
use ssehub_core::{Event, EventId};
use ssehub_protocol::publish::Publication;

use crate::backplane::{counter, gauge, idempotent_replays};
use crate::journal::Stats as JournalStats;
use crate::journal::recover::RestoredKey;
use crate::settings::PublishSettings;

/// The in-process sequencer as a backplane.
pub struct Local {
    /// Sequences and hands out events.
    bus: Arc<Bus>,
    /// Remembered idempotency keys.
    keys: Mutex<KeyStore>,
    /// Keyed publishes answered from the store (nothing published).
    replays: AtomicU64,
    /// The durable log's figures, with `--data-dir`.
    journal: Option<Arc<JournalStats>>,
}

impl Local {
    /// Orders events with `bus`'s sequencer, remembering `restored` keys
    /// (read back from the durable log, whose figures `journal` are).
    pub fn new(
        bus: Arc<Bus>,
        settings: &PublishSettings,
        restored: Vec<RestoredKey>,
        journal: Option<Arc<JournalStats>>,
    ) -> Self {
        let mut keys = KeyStore::new(settings.idempotency_window, settings.idempotency_max_bytes);
        for key in restored {
            keys.remember(&key.key, &key.ids, key.at_ms);
        }
        keys.expire(unix_ms());
        bus.charge_keys(keys.bytes());
        Local { bus, keys: Mutex::new(keys), replays: AtomicU64::new(0), journal }
    }

    fn keys(&self) -> MutexGuard<'_, KeyStore> {
        // The store is consistent between its methods; a panic inside one
        // cannot happen on input, so poisoning is ignored.
        self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes from `worker`'s loop, which wakes the workers it fed once
    /// it has read its turn's requests ([`Bus::pay_wakes`]).
    fn sequence(
        &self,
        worker: usize,
        publications: &[Publication],
        key: Option<&IdempotencyKey>,
    ) -> Result<Vec<EventId>, PublishFailure> {
        let events: Vec<Event> = publications.iter().map(Event::from_publication).collect();
        self.bus.publish_from(worker, events, key).map_err(|refused| match refused {
            Refused::Full => PublishFailure::Full,
            Refused::Journal => PublishFailure::Unavailable("the durable log (--data-dir) cannot be written"),
        })
    }
}

impl Backplane for Local {
    fn publish(&self, origin: Origin, publications: Vec<Publication>, key: Option<IdempotencyKey>) -> Submitted {
        let outcome = match key {
            None => self.sequence(origin.worker, &publications, None).map(Published::new),
            Some(key) => {
                let mut keys = self.keys();
                let now = unix_ms();
                match keys.lookup(&key, now) {
                    Lookup::Replay(ids) => {
                        self.replays.fetch_add(1, Relaxed);
                        Ok(Published { ids, replayed: true })
                    }
                    Lookup::Conflict => Err(PublishFailure::Conflict),
                    Lookup::Fresh => {
                        let logged = Some(&key).filter(|_| keys.enabled());
                        self.sequence(origin.worker, &publications, logged).map(|ids| {
                            keys.remember(&key, &ids, now);
                            self.bus.charge_keys(keys.bytes());
                            Published::new(ids)
                        })
                    }
                }
            }
        };
        match outcome {
            Ok(published) => Submitted::Published(published),
            Err(failure) => Submitted::Failed(failure),
        }
    }

    fn catchup(&self, after: Option<EventId>, missed: Option<Gap>) -> Catchup {
        Catchup::Memory(match after {
            None => Some(Gap::Unparseable),
            Some(id) if id < self.bus.boot_id() => Some(Gap::BeforeStart),
            Some(_) => missed,
        })
    }

    fn position(&self, live_after: EventId) -> Option<EventId> {
        // Before the first event (or after a lossy restore) the boot id:
        // every id this process issues is above it, and a resume from it is
        // no `before-start`.
        Some(live_after.max(self.bus.boot_id()))
    }

    fn replay(&self, _origin: Origin, _request: ReplayRequest) -> bool {
        false // never asked: catchup is always from memory
    }

    fn metrics(&self) -> Vec<Metric> {
        let keys = self.keys();
        let mut metrics = vec![
            gauge("idempotency_keys", "Idempotency keys remembered.", keys.len() as u64),
            gauge(
                "idempotency_bytes",
                "Bytes charged for the remembered idempotency keys (bounded by --idempotency-max-bytes).",
                keys.bytes() as u64,
            ),
            counter(
                "idempotency_evicted_total",
                "Idempotency keys forgotten before their window ended, to stay within --idempotency-max-bytes.",
                keys.evicted(),
            ),
            idempotent_replays(self.replays.load(Relaxed)),
        ];
        if let Some(journal) = &self.journal {
            metrics.extend(journal.metrics());
        }
        metrics
    }
}
