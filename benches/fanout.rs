//! The per-batch fan-out loop's own work per subscriber: walking the batch
//! mask, building the iovec array and accounting, with the write going to an
//! in-memory sink instead of a socket. It must stay small against the
//! `writev` itself (measured whole-server by `ssehub-bench`) and allocate
//! nothing: a regression here multiplies by every subscriber.

use std::io::{self, IoSlice, Write};
use std::sync::Arc;

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ssehub::conn::{Stream, Subscriptions};
use ssehub::event::{Event, EventId};
use ssehub::fanout::deliver;
use ssehub::metrics::Tally;
use ssehub::publish::Publication;

/// Accepts everything, like a socket with room.
struct Sink;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(bufs.iter().map(|b| b.len()).sum())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn batch(events: usize) -> Vec<Arc<Event>> {
    (0..events)
        .map(|i| {
            let publication = Publication {
                topics: vec!["t".into()],
                data: format!("{i}:{}", "x".repeat(60)),
                event: None,
                retry: None,
            };
            let mut event = publication.encode();
            event.set_id(EventId { ms: 1_700_000_000_000, seq: i as u64 });
            Arc::new(event)
        })
        .collect()
}

fn fanout(c: &mut Criterion) {
    const SUBSCRIBERS: usize = 10_000;
    let mut group = c.benchmark_group("fanout_loop");
    for events in [1usize, 8, 64] {
        let batch = batch(events);
        let mask = if events == 64 { u64::MAX } else { (1u64 << events) - 1 };
        group.throughput(Throughput::Elements((SUBSCRIBERS * events) as u64));
        group.bench_function(format!("{SUBSCRIBERS}_subscribers_x_{events}_events"), |b| {
            b.iter_batched_ref(
                || {
                    (0..SUBSCRIBERS)
                        .map(|_| Stream { batch: mask, filtered: false, subs: Subscriptions::One(0, 0), backlog: None })
                        .collect::<Vec<_>>()
                },
                |streams| {
                    let mut tally = Tally::default();
                    for stream in streams.iter_mut() {
                        let _ = deliver(&mut Sink, stream, black_box(&batch), 256, &mut tally);
                    }
                    tally
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
