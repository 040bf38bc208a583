//! The event payload format shared by the publisher and the subscribers:
//! `<seq>:<send_ns>:<padding>`, where `send_ns` is CLOCK_MONOTONIC at the
//! moment the publish request is written and the padding (letters only)
//! brings the payload to `--payload` bytes.
//!
//! `seq` encodes both the topic and the per-topic sequence number:
//! `seq = n * K + topic`, with K the number of topics including the broadcast
//! one (K = 1 for single-topic scenarios, where `seq` is simply 0, 1, 2, ...).
//! That keeps the format the one the issue asks for while letting a
//! subscriber of several topics check order per topic.

use std::io::Write;

const LETTERS: &[u8; 26] = b"abcdefghijklmnopqrstuvwxyz";

/// Writes the payload for (`seq`, `send_ns`) into `out` (cleared first),
/// padded with letters to `len` bytes (never truncated: if the numbers alone
/// are longer than `len`, the payload is longer).
pub fn encode(out: &mut Vec<u8>, seq: u64, send_ns: u64, len: usize) {
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{seq}:{send_ns}:");
    let mut i = 0;
    while out.len() < len {
        out.push(LETTERS[i % LETTERS.len()]);
        i += 1;
    }
}

/// Parses `<seq>:<send_ns>[:...]`; `None` for anything else (an event not
/// produced by this generator, e.g. a server's hello or keep-alive event).
pub fn decode(data: &[u8]) -> Option<(u64, u64)> {
    let (seq, rest) = number(data)?;
    let rest = rest.strip_prefix(b":")?;
    let (ns, rest) = number(rest)?;
    if rest.is_empty() || rest[0] == b':' { Some((seq, ns)) } else { None }
}

fn number(b: &[u8]) -> Option<(u64, &[u8])> {
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in &b[..digits] {
        v = v * 10 + u64::from(c - b'0');
    }
    Some((v, &b[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads_with_letters() {
        let mut buf = Vec::new();
        encode(&mut buf, 42, 123_456_789, 64);
        assert_eq!(buf.len(), 64);
        assert!(buf.starts_with(b"42:123456789:abc"));
        assert!(buf[13..].iter().all(u8::is_ascii_lowercase));
        assert_eq!(decode(&buf), Some((42, 123_456_789)));
    }

    #[test]
    fn short_payload_is_not_truncated() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, 99, 1);
        assert_eq!(buf, b"7:99:");
        assert_eq!(decode(&buf), Some((7, 99)));
    }

    #[test]
    fn rejects_foreign_data() {
        assert_eq!(decode(b"hello"), None);
        assert_eq!(decode(b"1:"), None);
        assert_eq!(decode(b"1:2x"), None);
        assert_eq!(decode(b"99999999999999999999:1"), None);
        assert_eq!(decode(b"1:2"), Some((1, 2)));
    }
}
