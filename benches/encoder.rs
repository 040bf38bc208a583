//! Decoding a publish body and encoding its frame: the work done once per
//! event, before fan-out. Throughput is frame bytes.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ssehub_protocol::publish::{self, Publication};

fn encoder(c: &mut Criterion) {
    let mut group = c.benchmark_group("sse_encoder");
    let cases = [
        ("small", "{\"id\":42,\"price\":101.5}".to_string()),
        ("1k_one_line", "x".repeat(1024)),
        ("1k_32_lines", "0123456789abcdef0123456789abcde\n".repeat(32)),
    ];
    for (name, data) in cases {
        let publication = Publication { topics: vec!["news".into()], data, event: Some("update".into()), retry: None };
        group.throughput(Throughput::Bytes(publication.encode().plain().len() as u64));
        group.bench_function(name, |b| b.iter(|| black_box(&publication).encode()));
    }
    group.finish();

    let mut group = c.benchmark_group("publish_decode");
    let form: &[u8] = b"topic=news&topic=alerts&data=%7B%22id%22%3A42%7D&event=update";
    let json: &[u8] =
        br#"[{"topic":["news","alerts"],"data":"{\"id\":42}","event":"update"},{"topic":"x","data":"y"}]"#;
    for (name, content_type, body) in
        [("form", &b"application/x-www-form-urlencoded"[..], form), ("json_batch", &b"application/json"[..], json)]
    {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| b.iter(|| publish::decode(Some(content_type), black_box(body))));
    }
    group.finish();
}

criterion_group!(benches, encoder);
criterion_main!(benches);
