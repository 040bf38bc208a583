//! The fan-out loop's own work per subscriber: routing a batch into masks,
//! building each subscriber's iovec array and accounting, with the writes
//! going to an in-memory sink instead of sockets. It must stay small against
//! the `writev` itself (measured whole-server by `ssehub-bench`) and allocate
//! nothing per subscriber: a regression here multiplies by every subscriber.

use std::hint::black_box;
use std::io::IoSlice;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ssehub_core::event::Event;
use ssehub_core::fanout::{Fanout, Streams, Write, Wrote};
use ssehub_core::subscriber::{MAX_IOV, Subscriber, Tally};
use ssehub_core::topics::Topics;
use ssehub_protocol::EventId;
use ssehub_protocol::publish::Publication;
use ssehub_protocol::sse::Framing;

/// Subscribers whose sockets always have room.
struct Sinks {
    subscribers: Vec<Subscriber>,
}

impl Streams for Sinks {
    fn subscriber(&mut self, key: u32) -> Option<&mut Subscriber> {
        self.subscribers.get_mut(key as usize)
    }
    fn for_each_subscriber(&mut self, each: &mut dyn FnMut(u32, &mut Subscriber)) {
        for (key, subscriber) in self.subscribers.iter_mut().enumerate() {
            each(key as u32, subscriber);
        }
    }
    fn write(&mut self, batch: &[Arc<Event>], writes: &mut [Write]) {
        for write in writes {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let n = write.iovecs(batch, &mut iov);
            let bytes: usize = black_box(&iov[..n]).iter().map(|b| b.len()).sum();
            write.wrote = Wrote::Bytes(bytes);
        }
    }
}

fn events(count: usize, first: u64) -> Vec<Arc<Event>> {
    (0..count)
        .map(|i| {
            let publication = Publication {
                topics: vec!["t".into()],
                data: format!("{i}:{}", "x".repeat(60)),
                event: None,
                retry: None,
            };
            let mut event = Event::from_publication(&publication);
            event.set_id(EventId { ms: first + i as u64, seq: 0 });
            Arc::new(event)
        })
        .collect()
}

fn fanout(c: &mut Criterion) {
    const SUBSCRIBERS: usize = 10_000;
    let mut group = c.benchmark_group("fanout_loop");
    for count in [1usize, 8, 64] {
        for framing in [Framing::Plain, Framing::Chunked] {
            let mut topics = Topics::new();
            let names = ssehub_core::topics::names(&["t".to_string()]);
            let subscribers = (0..SUBSCRIBERS)
                .map(|key| Subscriber::new(topics.subscribe(key as u32, &names, &mut Vec::new()), framing))
                .collect();
            let mut sinks = Sinks { subscribers };
            let mut fanout = Fanout::new(256);
            let mut next_ms = 1_700_000_000_000;
            group.throughput(Throughput::Elements((SUBSCRIBERS * count) as u64));
            group.bench_function(format!("{SUBSCRIBERS}_subscribers_x_{count}_events/{framing:?}"), |b| {
                b.iter_batched(
                    || {
                        next_ms += count as u64;
                        events(count, next_ms)
                    },
                    |batch| {
                        for event in batch {
                            fanout.accept(event);
                        }
                        let mut tally = Tally::default();
                        while fanout.run(&topics, &mut sinks, &mut tally) {}
                        assert_eq!(tally.frames, (SUBSCRIBERS * count) as u64);
                        tally
                    },
                    criterion::BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
