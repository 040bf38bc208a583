//! Event ids and the shared, immutable frame every subscriber receives.
//!
//! An [`Event`] is encoded once, when it is published, into the exact bytes
//! that go on the wire (`id:`, `event:`, `retry:`, `data:` lines and the blank
//! line). Once sequenced it is shared as an `Arc<Event>`: fan-out copies
//! pointers, never bytes.

use std::fmt;

/// `<unix-ms>-<seq>`: ordered by time first, then by sequence within a millisecond.
///
/// The same shape as a Redis stream id, so a backplane can use stream ids as is.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct EventId {
    pub ms: u64,  // wall-clock milliseconds since the Unix epoch
    pub seq: u64, // order within `ms`
}

/// Longest textual id: two `u64::MAX` and a dash.
pub const MAX_ID_LEN: usize = 20 + 1 + 20;

impl EventId {
    pub const ZERO: EventId = EventId { ms: 0, seq: 0 };

    /// Parses `<ms>-<seq>` (ASCII digits only, no sign, no spaces).
    pub fn parse(text: &[u8]) -> Option<EventId> {
        let dash = text.iter().position(|&b| b == b'-')?;
        let ms = parse_u64(&text[..dash])?;
        let seq = parse_u64(&text[dash + 1..])?;
        Some(EventId { ms, seq })
    }

    /// Writes the id into the end of `out` and returns how many bytes it took.
    fn write_right_aligned(self, out: &mut [u8]) -> usize {
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

/// Room kept in front of an encoded event for its `id: <id>\n` line, which is
/// only known once the sequencer has ordered the event.
const ID_RESERVE: usize = b"id: ".len() + MAX_ID_LEN + 1;

/// One published event: its id, its topics and its complete wire frame.
#[derive(Debug)]
pub struct Event {
    id: EventId,
    topics: Box<[Box<str>]>, // distinct, validated topic names
    buf: Box<[u8]>,          // ID_RESERVE bytes of room, then the encoded fields
    start: usize,            // where the frame begins inside `buf`
    to_all: bool,            // a notice for every subscriber, whatever its topics
}

impl Event {
    /// Wraps encoded fields (see [`crate::sse::encode_fields`]) written after
    /// [`Event::reserve`] bytes of `buf`. The sequencer stamps the id and only
    /// then shares the event (see [`crate::bus::Bus::publish`]).
    pub fn new(topics: Box<[Box<str>]>, mut buf: Vec<u8>) -> Event {
        if buf.len() < ID_RESERVE {
            buf.splice(0..0, std::iter::repeat_n(0, ID_RESERVE - buf.len()));
        }
        Event { id: EventId::ZERO, topics, buf: buf.into_boxed_slice(), start: ID_RESERVE, to_all: false }
    }

    /// A frame for every subscriber (e.g. an `ssehub-gap` after the cluster's
    /// stream was reset). It has no id and is not kept in any history.
    pub fn notice(frame: &[u8]) -> Event {
        let mut buf = vec![0; ID_RESERVE];
        buf.extend_from_slice(frame);
        Event { id: EventId::ZERO, topics: Box::new([]), buf: buf.into_boxed_slice(), start: ID_RESERVE, to_all: true }
    }

    pub fn to_all(&self) -> bool {
        self.to_all
    }

    /// Bytes to leave at the front of the buffer handed to [`Event::new`].
    pub const fn reserve() -> usize {
        ID_RESERVE
    }

    /// Stamps the id into the reserved room, before the event is shared.
    pub fn set_id(&mut self, id: EventId) {
        let room = &mut self.buf[..ID_RESERVE];
        room[ID_RESERVE - 1] = b'\n';
        let digits = id.write_right_aligned(&mut room[..ID_RESERVE - 1]);
        let start = ID_RESERVE - 1 - digits - 4;
        room[start..start + 4].copy_from_slice(b"id: ");
        self.start = start;
        self.id = id;
    }

    pub fn id(&self) -> EventId {
        self.id
    }

    pub fn topics(&self) -> &[Box<str>] {
        &self.topics
    }

    /// The complete frame, ready for `write`.
    pub fn frame(&self) -> &[u8] {
        &self.buf[self.start..]
    }
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
    }

    #[test]
    fn set_id_writes_the_id_line_in_front_of_the_fields() {
        for id in [EventId::ZERO, EventId { ms: 1_700_000_000_123, seq: 7 }, EventId { ms: u64::MAX, seq: u64::MAX }] {
            let mut buf = vec![0; Event::reserve()];
            buf.extend_from_slice(b"data: x\n\n");
            let mut event = Event::new(Box::new([]), buf);
            event.set_id(id);
            let want = format!("id: {id}\ndata: x\n\n");
            assert_eq!(event.frame(), want.as_bytes());
            assert_eq!(EventId::parse(id.to_string().as_bytes()), Some(id));
        }
    }
}
