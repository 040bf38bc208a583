//! The request reader on the requests the hub sees most: a subscribe, a form
//! publish and a chunked publish, whole and split into small reads. Throughput
//! is request bytes; a regression in parsing or framing shows up here.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ssehub_protocol::http::reader::{Limits, Outcome, read_stream};

const SUBSCRIBE: &[u8] = b"GET /events?topic=news&topic=alerts&lastEventId=1700000000000-3 HTTP/1.1\r\n\
Host: hub.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0\r\nAccept: text/event-stream\r\n\
Cache-Control: no-cache\r\nOrigin: https://app.example.com\r\nAccept-Language: en-US,en;q=0.9\r\n\r\n";
const PUBLISH: &[u8] = b"POST /publish HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: python-requests/2.32\r\n\
Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 48\r\n\r\ntopic=news&data=%7B%22id%22%3A42%2C%22ok%22%3A1%7D";
const CHUNKED: &[u8] = b"POST /publish HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
10\r\ntopic=news&data=\r\n20\r\n0123456789abcdef0123456789abcdef\r\n0\r\n\r\n";

fn reader(c: &mut Criterion) {
    let limits = Limits { max_body: 64 * 1024 };
    let mut group = c.benchmark_group("request_reader");
    for (name, request) in [("subscribe", SUBSCRIBE), ("publish_form", PUBLISH), ("publish_chunked", CHUNKED)] {
        assert!(matches!(read_stream(limits, [request]).as_slice(), [Outcome::Request { .. }]));
        group.throughput(Throughput::Bytes(request.len() as u64));
        group.bench_function(format!("{name}/whole"), |b| b.iter(|| read_stream(limits, [black_box(request)])));
        group.bench_function(format!("{name}/16_byte_reads"), |b| {
            b.iter(|| read_stream(limits, black_box(request).chunks(16)))
        });
    }
    group.finish();
}

criterion_group!(benches, reader);
criterion_main!(benches);
