//! `Transfer-Encoding: chunked` decoding (RFC 9112 §7.1), strict or lenient.
//!
//! [`Line::Strict`] is what the server reads request bodies with: chunk sizes
//! are 1–16 hex digits and nothing else (no sign, no `0x`, no whitespace),
//! every line ends in CRLF, chunk data is followed by CRLF, extensions may not
//! hold control bytes, trailer fields are checked like header fields and then
//! dropped. Anything else is an error: the server answers 400 and closes.
//!
//! [`Line::Lenient`] is what a client reads other servers' streams with (the
//! load generator, tests): bare LF where CRLF belongs, whitespace after the
//! size, and any bytes in extensions and trailers, as most HTTP clients do.
//! One state machine serves both, so leniency is a setting, not a second
//! parser (httparse's `ParserConfig` does the same).
//!
//! Chunk data is handed to a callback as slices of the input: nothing is
//! copied, and any split between reads gives the same result.

use std::fmt;

const MAX_SIZE_DIGITS: u8 = 16;
/// Bytes of chunk extensions and trailer fields together, per message (strict).
const MAX_METADATA: usize = 16 * 1024;

/// How strictly line framing is checked.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// Exactly RFC 9112: a server reading requests.
    Strict,
    /// Bare LF, whitespace after sizes, anything in extensions and trailers.
    Lenient,
}

/// Why a chunked body is refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// Not a hex chunk size.
    BadSize,
    /// More than 16 hex digits.
    SizeTooLong,
    /// A size line not ending in CRLF.
    SizeLineEnd,
    /// Chunk data not followed by CRLF.
    DataEnd,
    /// A control byte in a chunk extension.
    Extension,
    /// A malformed trailer field.
    TrailerField,
    /// A control byte in a trailer field.
    TrailerByte,
    /// A trailer line not ending in CRLF.
    TrailerLineEnd,
    /// Extensions and trailers over 16 KiB.
    MetadataTooLong,
    /// The data would exceed the decoder's limit.
    TooLarge,
}

impl ChunkError {
    /// One line for a response body and the log.
    pub fn detail(self) -> &'static str {
        match self {
            ChunkError::BadSize => "invalid chunk size",
            ChunkError::SizeTooLong => "chunk size too long",
            ChunkError::SizeLineEnd => "chunk size line must end in CRLF",
            ChunkError::DataEnd => "chunk data must be followed by CRLF",
            ChunkError::Extension => "control byte in chunk extension",
            ChunkError::TrailerField => "invalid trailer field",
            ChunkError::TrailerByte => "control byte in trailer field",
            ChunkError::TrailerLineEnd => "trailer line must end in CRLF",
            ChunkError::MetadataTooLong => "chunk extensions or trailers too long",
            ChunkError::TooLarge => "body too large",
        }
    }
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.detail())
    }
}

impl std::error::Error for ChunkError {}

/// The decoder's position in the framing.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    /// Reading the size's hex digits.
    Size { value: u64, digits: u8 },
    /// Lenient only: whitespace after the digits.
    SizeSpace { value: u64 },
    /// Inside a chunk extension.
    Extension { value: u64, quoted: bool, escaped: bool },
    /// Saw CR at the end of the size line.
    SizeLf { value: u64 },
    /// `left` bytes of chunk data to go.
    Data { left: u64 },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line, or of the final CRLF.
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// After a trailer field's colon.
    TrailerValue,
    /// Saw CR in the trailers; `end` when the line was empty.
    TrailerLf { end: bool },
    /// The last chunk and the trailers have been read.
    Done,
}

/// An incremental chunked-body decoder.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    /// Where in the framing it stands.
    state: State,
    /// Data bytes so far.
    total: u64,
    /// Refuse ([`ChunkError::TooLarge`]) once the data would exceed this.
    max: u64,
    /// Extension and trailer bytes so far.
    metadata: usize,
    /// Strict or lenient line framing.
    line: Line,
}

/// What [`ChunkedDecoder::decode`] did with its input.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes used; the rest belongs to the next message.
    pub consumed: usize,
    /// The last chunk and the trailers have been read.
    pub done: bool,
}

/// RFC 9110 `tchar`.
pub fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl ChunkedDecoder {
    /// A decoder for one body of at most `max` data bytes.
    pub fn new(max: u64, line: Line) -> Self {
        ChunkedDecoder { state: State::Size { value: 0, digits: 0 }, total: 0, max, metadata: 0, line }
    }

    /// True once the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes as much of `input` as it can, passing chunk data to `data`.
    pub fn decode<'a>(&mut self, input: &'a [u8], data: &mut impl FnMut(&'a [u8])) -> Result<Decoded, ChunkError> {
        let mut i = 0;
        while i < input.len() && self.state != State::Done {
            if let State::Data { left } = self.state {
                let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                data(&input[i..i + take]);
                i += take;
                let left = left - take as u64;
                self.state = if left == 0 { State::DataCr } else { State::Data { left } };
                continue;
            }
            self.state = self.step(input[i])?;
            i += 1;
        }
        Ok(Decoded { consumed: i, done: self.state == State::Done })
    }

    fn lenient(&self) -> bool {
        self.line == Line::Lenient
    }

    fn step(&mut self, b: u8) -> Result<State, ChunkError> {
        use State::*;
        let lenient = self.lenient();
        Ok(match self.state {
            Size { value, digits } => match (hex(b), b) {
                (Some(digit), _) => {
                    if digits == MAX_SIZE_DIGITS {
                        return Err(ChunkError::SizeTooLong);
                    }
                    Size { value: value << 4 | u64::from(digit), digits: digits + 1 }
                }
                (None, _) if digits == 0 => return Err(ChunkError::BadSize),
                (None, b';') => Extension { value, quoted: false, escaped: false },
                (None, b'\r') => SizeLf { value },
                (None, b'\n') if lenient => self.end_size_line(value)?,
                (None, b' ' | b'\t') if lenient => SizeSpace { value },
                (None, _) => return Err(ChunkError::BadSize),
            },
            SizeSpace { value } => match b {
                b' ' | b'\t' => SizeSpace { value },
                b';' => Extension { value, quoted: false, escaped: false },
                b'\r' => SizeLf { value },
                b'\n' => self.end_size_line(value)?,
                _ => return Err(ChunkError::BadSize),
            },
            Extension { value, quoted, escaped } => {
                self.count_metadata()?;
                match b {
                    b'\r' if !quoted || lenient => SizeLf { value },
                    b'\n' if lenient => self.end_size_line(value)?,
                    _ if lenient => Extension { value, quoted, escaped },
                    b'\t' => Extension { value, quoted, escaped: false },
                    0..=0x1f | 0x7f => return Err(ChunkError::Extension),
                    _ if escaped => Extension { value, quoted, escaped: false },
                    b'\\' if quoted => Extension { value, quoted, escaped: true },
                    b'"' => Extension { value, quoted: !quoted, escaped: false },
                    _ => Extension { value, quoted, escaped: false },
                }
            }
            SizeLf { value } => {
                if b != b'\n' {
                    return Err(ChunkError::SizeLineEnd);
                }
                self.end_size_line(value)?
            }
            // `decode` copies data runs itself and never steps through them.
            Data { left } => Data { left },
            DataCr if b == b'\r' => DataLf,
            DataCr if b == b'\n' && lenient => Size { value: 0, digits: 0 },
            DataLf if b == b'\n' => Size { value: 0, digits: 0 },
            DataCr | DataLf => return Err(ChunkError::DataEnd),
            TrailerStart => match b {
                b'\r' => TrailerLf { end: true },
                b'\n' if lenient => Done,
                _ if is_token(b) || lenient => {
                    self.count_metadata()?;
                    TrailerName
                }
                _ => return Err(ChunkError::TrailerField),
            },
            TrailerName => {
                self.count_metadata()?;
                match b {
                    b':' => TrailerValue,
                    b'\n' if lenient => TrailerStart,
                    _ if is_token(b) || lenient => TrailerName,
                    _ => return Err(ChunkError::TrailerField),
                }
            }
            TrailerValue => {
                self.count_metadata()?;
                match b {
                    b'\r' => TrailerLf { end: false },
                    b'\n' if lenient => TrailerStart,
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => TrailerValue,
                    _ if lenient => TrailerValue,
                    _ => return Err(ChunkError::TrailerByte),
                }
            }
            TrailerLf { end } => match (b, end) {
                (b'\n', true) => Done,
                (b'\n', false) => TrailerStart,
                _ => return Err(ChunkError::TrailerLineEnd),
            },
            Done => Done,
        })
    }

    /// After a size line: data follows, or, for size 0, the trailers.
    fn end_size_line(&mut self, value: u64) -> Result<State, ChunkError> {
        if value == 0 {
            return Ok(State::TrailerStart);
        }
        self.total = self.total.saturating_add(value);
        if self.total > self.max {
            return Err(ChunkError::TooLarge);
        }
        Ok(State::Data { left: value })
    }

    fn count_metadata(&mut self) -> Result<(), ChunkError> {
        if self.lenient() {
            return Ok(());
        }
        self.metadata += 1;
        if self.metadata > MAX_METADATA {
            return Err(ChunkError::MetadataTooLong);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], max: u64, line: Line) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut decoder = ChunkedDecoder::new(max, line);
        let mut body = Vec::new();
        let decoded = decoder.decode(input, &mut |d: &[u8]| body.extend_from_slice(d))?;
        if !decoded.done {
            return Err(ChunkError::BadSize);
        }
        Ok((body, decoded.consumed))
    }

    #[test]
    fn decodes_valid_bodies_and_stops_at_the_end() {
        let cases: &[(&[u8], &[u8], usize)] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello", 15),
            (b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n", b"hello", 15),
            (b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde", 20),
            (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789", 20),
            (b"a;name=value;q=\"x;y\"\r\n0123456789\r\n0\r\n\r\n", b"0123456789", 39),
            (b"1\r\nx\r\n0\r\nTrailer: yes\r\nOther:\r\n\r\n", b"x", 33),
            (b"0\r\n\r\n", b"", 5),
            (b"0000000000000003\r\nabc\r\n0\r\n\r\n", b"abc", 28),
        ];
        for line in [Line::Strict, Line::Lenient] {
            for (input, want, consumed) in cases {
                let (body, used) = decode_all(input, 1 << 20, line).unwrap();
                assert_eq!(body, *want, "{:?}", String::from_utf8_lossy(input));
                assert_eq!(used, *consumed, "{:?}", String::from_utf8_lossy(input));
            }
        }
    }

    #[test]
    fn strict_refuses_every_malformed_shape() {
        let cases: &[&[u8]] = &[
            b"\r\n",                                    // no size
            b"-5\r\nhello\r\n0\r\n\r\n",                // sign
            b"+5\r\nhello\r\n0\r\n\r\n",                // sign
            b"0x5\r\nhello\r\n0\r\n\r\n",               // prefix
            b"5 \r\nhello\r\n0\r\n\r\n",                // whitespace after size
            b" 5\r\nhello\r\n0\r\n\r\n",                // whitespace before size
            b"5\nhello\r\n0\r\n\r\n",                   // bare LF
            b"5\rhello\r\n0\r\n\r\n",                   // bare CR
            b"5\r\nhelloXX0\r\n\r\n",                   // data without CRLF
            b"5\r\nhello\n0\r\n\r\n",                   // data then bare LF
            b"3\r\nhello\r\n0\r\n\r\n",                 // data longer than its size
            b"5;a\0b\r\nhello\r\n0\r\n\r\n",            // NUL in extension
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",            // LF in extension
            b"5;a\x7fb\r\nhello\r\n0\r\n\r\n",          // DEL in extension
            b"11111111111111111\r\n",                   // 17 digits
            b"5\r\nhello\r\n0\r\nBad Field: x\r\n\r\n", // space in trailer name
            b"5\r\nhello\r\n0\r\nX: a\0\r\n\r\n",       // NUL in trailer
            b"5\r\nhello\r\n0\r\nX: a\n\r\n",           // bare LF in trailer
            b"5\r\nhello\r\n0\r\n\n",                   // bare LF at the end
            b"g\r\n",                                   // not hex
        ];
        for input in cases {
            let err = decode_all(input, 1 << 20, Line::Strict).expect_err(&String::from_utf8_lossy(input));
            assert_ne!(err, ChunkError::TooLarge, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn lenient_accepts_what_servers_send_in_practice() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"3\nabc\n0\n\n", b"abc"),
            (b"5 \r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5;a\x01b\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5\r\nhello\r\n0\r\nX: a\x01\nY z\r\n\r\n", b"hello"),
        ];
        for (input, want) in cases {
            assert_eq!(
                decode_all(input, 1 << 20, Line::Lenient).unwrap().0,
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        for input in [&b"x\r\n"[..], b"\r\n", b"3\r\nabcX", b"3\rX", b"11111111111111111\r\n"] {
            assert!(decode_all(input, 1 << 20, Line::Lenient).is_err(), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn refuses_bodies_over_the_limit_before_reading_them() {
        let mut decoder = ChunkedDecoder::new(10, Line::Strict);
        let mut sink = |_: &[u8]| {};
        assert!(decoder.decode(b"5\r\nhello\r\n", &mut sink).is_ok());
        assert_eq!(decoder.decode(b"6\r\n", &mut sink), Err(ChunkError::TooLarge));
        let mut decoder = ChunkedDecoder::new(10, Line::Strict);
        assert_eq!(decoder.decode(b"ffffffffffffffff\r\n", &mut sink), Err(ChunkError::TooLarge));
    }

    #[test]
    fn any_split_gives_the_same_result() {
        let input: &[u8] = b"4;x=\"a\\\"b\"\r\nwiki\r\n5\r\npedia\r\n0\r\nT: v\r\n\r\nNEXT";
        for line in [Line::Strict, Line::Lenient] {
            for split in 0..=input.len() {
                let mut decoder = ChunkedDecoder::new(1 << 20, line);
                let mut body = Vec::new();
                let mut sink = |d: &[u8]| body.extend_from_slice(d);
                let first = decoder.decode(&input[..split], &mut sink).unwrap();
                assert_eq!(first.consumed, split.min(input.len() - 4));
                let second = decoder.decode(&input[first.consumed..], &mut sink).unwrap();
                assert!(second.done);
                assert_eq!(first.consumed + second.consumed, input.len() - 4);
                assert_eq!(body, b"wikipedia");
            }
        }
    }

    #[test]
    fn a_streaming_body_is_never_done() {
        let mut decoder = ChunkedDecoder::new(u64::MAX, Line::Lenient);
        let mut body = Vec::new();
        let decoded = decoder.decode(b"5\r\nhello\r\n3\r\nwor", &mut |d: &[u8]| body.extend_from_slice(d)).unwrap();
        assert_eq!((body.as_slice(), decoded.consumed, decoded.done), (&b"hellowor"[..], 16, false));
    }
}
