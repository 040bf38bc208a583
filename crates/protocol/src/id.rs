//! Event ids: `<unix-ms>-<seq>`, the same shape as a Redis stream id, so a
//! backplane can use stream ids as they are.

use std::fmt;

/// `<unix-ms>-<seq>`: ordered by time first, then by sequence within a millisecond.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct EventId {
    /// Wall-clock milliseconds since the Unix epoch when the id was issued.
    pub ms: u64,
    /// Order within `ms`.
    pub seq: u64,
}

/// Longest textual id: two `u64::MAX` and a dash.
pub const MAX_ID_LEN: usize = 20 + 1 + 20;

impl EventId {
    /// The smallest id; no event carries it.
    pub const ZERO: EventId = EventId { ms: 0, seq: 0 };

    /// Parses `<ms>-<seq>` (ASCII digits only, no sign, no spaces).
    pub fn parse(text: &[u8]) -> Option<EventId> {
        let dash = text.iter().position(|&b| b == b'-')?;
        let ms = parse_u64(&text[..dash])?;
        let seq = parse_u64(&text[dash + 1..])?;
        Some(EventId { ms, seq })
    }

    /// The id right after this one in the order.
    pub fn successor(self) -> EventId {
        match self.seq.checked_add(1) {
            Some(seq) => EventId { ms: self.ms, seq },
            None => EventId { ms: self.ms.saturating_add(1), seq: 0 },
        }
    }

    /// Writes the id into the end of `out` and returns how many bytes it took.
    /// `out` must hold at least [`MAX_ID_LEN`] bytes.
    pub fn write_right_aligned(self, out: &mut [u8]) -> usize {
        let mut at = out.len();
        for (i, value) in [self.seq, self.ms].into_iter().enumerate() {
            if i == 1 {
                at -= 1;
                out[at] = b'-';
            }
            let mut v = value;
            loop {
                at -= 1;
                out[at] = b'0' + (v % 10) as u8;
                v /= 10;
                if v == 0 {
                    break;
                }
            }
        }
        out.len() - at
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Parses a non-empty run of ASCII digits into a `u64`, refusing overflow.
pub fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    type IdParts = (u64, u64);

    #[test]
    fn parse_accepts_only_digit_dash_digit() {
        let cases: &[(&[u8], Option<IdParts>)] = &[
            (b"0-0", Some((0, 0))),
            (b"1700000000000-42", Some((1_700_000_000_000, 42))),
            (b"18446744073709551615-18446744073709551615", Some((u64::MAX, u64::MAX))),
            (b"18446744073709551616-0", None),
            (b"", None),
            (b"-", None),
            (b"5", None),
            (b"5-", None),
            (b"-5", None),
            (b"+5-1", None),
            (b"5-1-2", None),
            (b" 5-1", None),
            (b"0x5-1", None),
        ];
        for (text, want) in cases {
            let got = EventId::parse(text).map(|id| (id.ms, id.seq));
            assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn ids_order_by_ms_then_seq() {
        let a = EventId { ms: 1, seq: 9 };
        let b = EventId { ms: 2, seq: 0 };
        assert!(a < b);
        assert!(EventId { ms: 2, seq: 1 } > b);
        assert_eq!(a.successor(), EventId { ms: 1, seq: 10 });
        assert_eq!(EventId { ms: 1, seq: u64::MAX }.successor(), b);
    }

    #[test]
    fn right_aligned_ids_read_back() {
        for id in [EventId::ZERO, EventId { ms: 1_700_000_000_123, seq: 7 }, EventId { ms: u64::MAX, seq: u64::MAX }] {
            let mut out = [0u8; MAX_ID_LEN];
            let n = id.write_right_aligned(&mut out);
            assert_eq!(&out[MAX_ID_LEN - n..], id.to_string().as_bytes());
            assert_eq!(EventId::parse(&out[MAX_ID_LEN - n..]), Some(id));
        }
    }
}
