//! Arbitrary bytes, split at arbitrary points, through the request reader the
//! connections use. No panic, and the requests, errors and leftover bytes must
//! not depend on how the input was split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssehub_protocol::http::reader::{Limits, Outcome, read_stream};

fuzz_target!(|input: (Vec<u16>, &[u8])| {
    let (cuts, bytes) = input;
    let limits = Limits { max_body: 4096 };
    let whole = read_stream(limits, [bytes]);
    let mut points: Vec<usize> = cuts.iter().map(|&c| usize::from(c) % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for point in points {
        chunks.push(&bytes[start..point]);
        start = point;
    }
    chunks.push(&bytes[start..]);
    let split: Vec<Outcome> = read_stream(limits, chunks);
    assert_eq!(whole, split);
});
