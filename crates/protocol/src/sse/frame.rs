//! The frame an event is encoded into once and then shared by every
//! subscriber, in both body framings a stream can have.
//!
//! A frame is built in one buffer: room reserved at the front, the encoded
//! fields, and a final CRLF. The room takes the `id:` line, which is only
//! known once the sequencer has ordered the event, and in front of it the
//! hex size line of an HTTP/1.1 chunk. So one buffer holds both wire forms:
//!
//! ```text
//! [ unused | 2a\r\n | id: 1700000000000-0\n | data: ...\n\n | \r\n ]
//!            ^chunked                                             end^
//!                   ^plain                            plain end^
//! ```
//!
//! HTTP/1.1 subscribers (chunked) get `chunked()`, HTTP/1.0 subscribers (a
//! close-delimited body) get `plain()`: sub-slices of the same bytes, so the
//! framing costs nothing per subscriber.

use crate::id::{EventId, MAX_ID_LEN};

/// How a stream's body is delimited.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Until the connection closes (HTTP/1.0 clients).
    Plain,
    /// `Transfer-Encoding: chunked`, one chunk per frame; ends with `0\r\n\r\n`.
    Chunked,
}

impl Framing {
    /// The bytes that end a body cleanly: the last chunk, or nothing.
    pub fn end(self) -> &'static [u8] {
        match self {
            Framing::Plain => b"",
            Framing::Chunked => b"0\r\n\r\n",
        }
    }

    /// Appends `bytes` as one piece of a body in this framing: as is, or as
    /// one chunk. For the few bytes that are not shared frames (an opening).
    pub fn push(self, out: &mut Vec<u8>, bytes: &[u8]) {
        match self {
            Framing::Plain => out.extend_from_slice(bytes),
            Framing::Chunked => encode_chunk(out, bytes),
        }
    }
}

/// Most hex digits of a chunk size, plus its CRLF.
const SIZE_LINE_MAX: usize = 16 + 2;
/// `id: <id>\n` at its longest.
const ID_LINE_MAX: usize = b"id: ".len() + MAX_ID_LEN + 1;
/// Room kept in front of the encoded fields.
const RESERVE: usize = SIZE_LINE_MAX + ID_LINE_MAX;

/// One encoded event, immutable once its id is set.
#[derive(Debug)]
pub struct Frame {
    /// `RESERVE` bytes of room, the fields, then CRLF.
    buf: Box<[u8]>,
    /// Where the chunk size line begins.
    chunked: u32,
    /// Where the `id:` line (or, without an id, the fields) begins.
    plain: u32,
}

impl Frame {
    /// A buffer to encode fields into (see [`crate::sse::encode_fields`]):
    /// it starts with the room [`Frame::new`] expects.
    pub fn buffer(capacity: usize) -> Vec<u8> {
        let mut buf = Vec::with_capacity(RESERVE + capacity + 2);
        buf.resize(RESERVE, 0);
        buf
    }

    /// Wraps fields encoded into a [`Frame::buffer`]; the frame has no id
    /// until [`Frame::set_id`]. A buffer without the room gets it.
    pub fn new(mut buf: Vec<u8>) -> Frame {
        if buf.len() < RESERVE {
            buf.splice(0..0, std::iter::repeat_n(0, RESERVE - buf.len()));
        }
        buf.extend_from_slice(b"\r\n");
        let mut frame = Frame { buf: buf.into_boxed_slice(), chunked: 0, plain: RESERVE as u32 };
        frame.write_size_line();
        frame
    }

    /// A frame of fixed bytes with no id (notices to every subscriber).
    pub fn notice(fields: &[u8]) -> Frame {
        let mut buf = Frame::buffer(fields.len());
        buf.extend_from_slice(fields);
        Frame::new(buf)
    }

    /// Stamps the id into the reserved room, before the frame is shared.
    pub fn set_id(&mut self, id: EventId) {
        let room = &mut self.buf[SIZE_LINE_MAX..RESERVE];
        room[ID_LINE_MAX - 1] = b'\n';
        let digits = id.write_right_aligned(&mut room[..ID_LINE_MAX - 1]);
        let start = ID_LINE_MAX - 1 - digits - 4;
        room[start..start + 4].copy_from_slice(b"id: ");
        self.plain = (SIZE_LINE_MAX + start) as u32;
        self.write_size_line();
    }

    /// Writes the chunk size line right in front of `plain`.
    fn write_size_line(&mut self) {
        let plain = self.plain as usize;
        let size = self.buf.len() - 2 - plain;
        let mut at = plain - 2;
        self.buf[at..plain].copy_from_slice(b"\r\n");
        let mut rest = size;
        loop {
            at -= 1;
            self.buf[at] = HEX[rest & 15];
            rest >>= 4;
            if rest == 0 {
                break;
            }
        }
        self.chunked = at as u32;
    }

    /// The frame for a close-delimited body.
    pub fn plain(&self) -> &[u8] {
        &self.buf[self.plain as usize..self.buf.len() - 2]
    }

    /// The frame as one HTTP/1.1 chunk.
    pub fn chunked(&self) -> &[u8] {
        &self.buf[self.chunked as usize..]
    }

    /// The frame in `framing`.
    pub fn bytes(&self, framing: Framing) -> &[u8] {
        match framing {
            Framing::Plain => self.plain(),
            Framing::Chunked => self.chunked(),
        }
    }

    /// The encoded fields alone: no `id:` line, no chunk framing (what a
    /// durable log keeps; [`Frame::notice`] of them and [`Frame::set_id`]
    /// rebuild this frame byte for byte).
    pub fn fields(&self) -> &[u8] {
        &self.buf[RESERVE..self.buf.len() - 2]
    }

    /// Bytes held, for memory accounting.
    pub fn allocated(&self) -> usize {
        self.buf.len()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `bytes` as one chunk (nothing for empty input: an empty chunk would end the body).
pub fn encode_chunk(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut rest = bytes.len();
    loop {
        at -= 1;
        digits[at] = HEX[rest & 15];
        rest >>= 4;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Fixed bytes the server sends on its own (heartbeats, gap notices), in both framings.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct StaticFrame {
    /// For close-delimited bodies.
    pub plain: &'static [u8],
    /// The same bytes as one chunk.
    pub chunked: &'static [u8],
}

impl StaticFrame {
    /// The frame in `framing`.
    pub fn bytes(self, framing: Framing) -> &'static [u8] {
        match framing {
            Framing::Plain => self.plain,
            Framing::Chunked => self.chunked,
        }
    }
}

/// Length of `len` bytes as one chunk: size line, data, CRLF.
pub const fn chunked_len(len: usize) -> usize {
    let mut digits = 1;
    let mut rest = len >> 4;
    while rest > 0 {
        digits += 1;
        rest >>= 4;
    }
    digits + 2 + len + 2
}

/// `plain` as one chunk, at compile time; `N` must be `chunked_len(plain.len())`.
pub const fn chunk_const<const N: usize>(plain: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let digits = N - 4 - plain.len();
    let mut i = digits;
    let mut rest = plain.len();
    while i > 0 {
        i -= 1;
        out[i] = HEX[rest & 15];
        rest >>= 4;
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    let mut j = 0;
    while j < plain.len() {
        out[digits + 2 + j] = plain[j];
        j += 1;
    }
    out[N - 2] = b'\r';
    out[N - 1] = b'\n';
    out
}

/// A [`StaticFrame`] from a byte-string constant, chunked at compile time.
#[macro_export]
macro_rules! static_frame {
    ($plain:expr) => {{
        const PLAIN: &[u8] = $plain;
        const N: usize = $crate::sse::chunked_len(PLAIN.len());
        const CHUNKED: [u8; N] = $crate::sse::chunk_const::<N>(PLAIN);
        $crate::sse::StaticFrame { plain: PLAIN, chunked: &CHUNKED }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::chunked::{ChunkedDecoder, Line};

    fn dechunk(bytes: &[u8]) -> Vec<u8> {
        let mut decoder = ChunkedDecoder::new(u64::MAX, Line::Strict);
        let mut out = Vec::new();
        let mut stream = bytes.to_vec();
        stream.extend_from_slice(b"0\r\n\r\n");
        let decoded = decoder.decode(&stream, &mut |data: &[u8]| out.extend_from_slice(data)).unwrap();
        assert!(decoded.done && decoded.consumed == stream.len(), "{:?}", String::from_utf8_lossy(bytes));
        out
    }

    #[test]
    fn both_framings_hold_the_same_event() {
        for id in [
            None,
            Some(EventId::ZERO),
            Some(EventId { ms: 1_700_000_000_123, seq: 7 }),
            Some(EventId { ms: u64::MAX, seq: u64::MAX }),
        ] {
            for data_len in [0, 1, 15, 16, 255, 256, 5000] {
                let mut buf = Frame::buffer(data_len);
                buf.extend_from_slice(b"data: ");
                buf.extend(std::iter::repeat_n(b'x', data_len));
                buf.extend_from_slice(b"\n\n");
                let mut frame = Frame::new(buf);
                let mut want = String::new();
                if let Some(id) = id {
                    frame.set_id(id);
                    want = format!("id: {id}\n");
                }
                want.push_str(&format!("data: {}\n\n", "x".repeat(data_len)));
                assert_eq!(frame.plain(), want.as_bytes());
                assert_eq!(dechunk(frame.chunked()), want.as_bytes());
                assert_eq!(frame.bytes(Framing::Plain), frame.plain());
            }
        }
    }

    #[test]
    fn a_frame_can_be_restamped() {
        let mut frame = Frame::notice(b"data: x\n\n");
        frame.set_id(EventId { ms: 123_456, seq: 1 });
        frame.set_id(EventId { ms: 1, seq: 0 });
        assert_eq!(frame.plain(), b"id: 1-0\ndata: x\n\n");
        assert_eq!(frame.chunked(), b"11\r\nid: 1-0\ndata: x\n\n\r\n");
    }

    #[test]
    fn static_frames_are_chunked_at_compile_time() {
        const HEARTBEAT: StaticFrame = static_frame!(b":\n");
        assert_eq!(HEARTBEAT.chunked, b"2\r\n:\n\r\n");
        let long: &'static [u8] = &[b'a'; 300];
        let mut want = Vec::new();
        encode_chunk(&mut want, long);
        const LONG: StaticFrame = static_frame!(&[b'a'; 300]);
        assert_eq!(LONG.chunked, &want[..]);
        assert_eq!(dechunk(LONG.chunked), long);
        let mut empty = Vec::new();
        encode_chunk(&mut empty, b"");
        assert!(empty.is_empty());
        assert_eq!(Framing::Chunked.end(), b"0\r\n\r\n");
    }
}
