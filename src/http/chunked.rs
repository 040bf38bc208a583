//! Strict `Transfer-Encoding: chunked` body decoding (RFC 9112 §7.1).
//!
//! Chunk sizes are hex digits and nothing else: no sign, no `0x`, no
//! whitespace, at most 16 digits. Every line ends in CRLF, chunk data is
//! followed by CRLF, extensions may not hold control bytes, and trailer
//! fields are checked like header fields and then dropped. Anything else is a
//! framing error: the caller answers 400 and closes without reading on.

use super::HttpError;

const MAX_SIZE_DIGITS: u8 = 16;
/// Bytes of chunk extensions and trailer fields together, per message.
const MAX_METADATA: usize = 16 * 1024;

#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    total: u64,      // data bytes so far
    max: u64,        // refuse (413) once the data would exceed this
    metadata: usize, // extension and trailer bytes so far
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    Size { value: u64, digits: u8 },
    Extension { value: u64, quoted: bool, escaped: bool },
    SizeLf { value: u64 },
    Data { left: u64 },
    DataCr,
    DataLf,
    TrailerStart,            // at the start of a trailer line, or of the final CRLF
    TrailerName,             // inside a field name
    TrailerValue,            // after the colon
    TrailerLf { end: bool }, // saw CR; `end` when the line was empty
    Done,
}

/// What [`ChunkedDecoder::decode`] did with its input.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    pub consumed: usize, // input bytes used; the rest belongs to the next request
    pub done: bool,      // the last chunk and the trailers have been read
}

fn bad(why: &'static str) -> HttpError {
    HttpError::BadRequest(why)
}

/// RFC 9110 `tchar`.
pub(crate) fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl ChunkedDecoder {
    pub fn new(max: u64) -> Self {
        ChunkedDecoder { state: State::Size { value: 0, digits: 0 }, total: 0, max, metadata: 0 }
    }

    /// Decodes as much of `input` as it can, appending chunk data to `body`.
    pub fn decode(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<Decoded, HttpError> {
        let mut i = 0;
        while i < input.len() && self.state != State::Done {
            if let State::Data { left } = self.state {
                let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                body.extend_from_slice(&input[i..i + take]);
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

    fn step(&mut self, b: u8) -> Result<State, HttpError> {
        use State::*;
        Ok(match self.state {
            Size { value, digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if digits == MAX_SIZE_DIGITS {
                        return Err(bad("chunk size too long"));
                    }
                    let digit = match b {
                        b'0'..=b'9' => b - b'0',
                        _ => (b | 0x20) - b'a' + 10,
                    };
                    Size { value: value << 4 | u64::from(digit), digits: digits + 1 }
                }
                b';' if digits > 0 => Extension { value, quoted: false, escaped: false },
                b'\r' if digits > 0 => SizeLf { value },
                _ => return Err(bad("invalid chunk size")),
            },
            Extension { value, quoted, escaped } => {
                self.count_metadata()?;
                match b {
                    b'\r' if !quoted => SizeLf { value },
                    b'\t' => Extension { value, quoted, escaped: false },
                    0..=0x1f | 0x7f => return Err(bad("control byte in chunk extension")),
                    _ if escaped => Extension { value, quoted, escaped: false },
                    b'\\' if quoted => Extension { value, quoted, escaped: true },
                    b'"' => Extension { value, quoted: !quoted, escaped: false },
                    _ => Extension { value, quoted, escaped: false },
                }
            }
            SizeLf { value } => {
                if b != b'\n' {
                    return Err(bad("chunk size line must end in CRLF"));
                }
                if value == 0 {
                    TrailerStart
                } else {
                    self.total = self.total.saturating_add(value);
                    if self.total > self.max {
                        return Err(HttpError::PayloadTooLarge);
                    }
                    Data { left: value }
                }
            }
            // `decode` copies data runs itself and never steps through them.
            Data { left } => Data { left },
            DataCr if b == b'\r' => DataLf,
            DataLf if b == b'\n' => Size { value: 0, digits: 0 },
            DataCr | DataLf => return Err(bad("chunk data must be followed by CRLF")),
            TrailerStart => match b {
                b'\r' => TrailerLf { end: true },
                _ if is_token(b) => {
                    self.count_metadata()?;
                    TrailerName
                }
                _ => return Err(bad("invalid trailer field")),
            },
            TrailerName => {
                self.count_metadata()?;
                match b {
                    b':' => TrailerValue,
                    _ if is_token(b) => TrailerName,
                    _ => return Err(bad("invalid trailer field")),
                }
            }
            TrailerValue => {
                self.count_metadata()?;
                match b {
                    b'\r' => TrailerLf { end: false },
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => TrailerValue,
                    _ => return Err(bad("control byte in trailer field")),
                }
            }
            TrailerLf { end } => match (b, end) {
                (b'\n', true) => Done,
                (b'\n', false) => TrailerStart,
                _ => return Err(bad("trailer line must end in CRLF")),
            },
            Done => Done,
        })
    }

    fn count_metadata(&mut self) -> Result<(), HttpError> {
        self.metadata += 1;
        if self.metadata > MAX_METADATA {
            return Err(bad("chunk extensions or trailers too long"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], max: u64) -> Result<(Vec<u8>, usize), HttpError> {
        let mut decoder = ChunkedDecoder::new(max);
        let mut body = Vec::new();
        let decoded = decoder.decode(input, &mut body)?;
        if !decoded.done {
            return Err(bad("incomplete"));
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
        for (input, want, consumed) in cases {
            let (body, used) = decode_all(input, 1 << 20).unwrap();
            assert_eq!(body, *want, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(used, *consumed, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn refuses_every_malformed_shape() {
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
            let err = decode_all(input, 1 << 20).expect_err(&String::from_utf8_lossy(input));
            assert!(matches!(err, HttpError::BadRequest(_)), "{:?}: {err:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn refuses_bodies_over_the_limit_before_reading_them() {
        let mut decoder = ChunkedDecoder::new(10);
        let mut body = Vec::new();
        assert!(decoder.decode(b"5\r\nhello\r\n", &mut body).is_ok());
        assert_eq!(decoder.decode(b"6\r\n", &mut body), Err(HttpError::PayloadTooLarge));
        let mut decoder = ChunkedDecoder::new(10);
        assert_eq!(decoder.decode(b"ffffffffffffffff\r\n", &mut body), Err(HttpError::PayloadTooLarge));
    }

    #[test]
    fn any_split_gives_the_same_result() {
        let input: &[u8] = b"4;x=\"a\\\"b\"\r\nwiki\r\n5\r\npedia\r\n0\r\nT: v\r\n\r\nNEXT";
        for split in 0..=input.len() {
            let mut decoder = ChunkedDecoder::new(1 << 20);
            let mut body = Vec::new();
            let first = decoder.decode(&input[..split], &mut body).unwrap();
            assert_eq!(first.consumed, split.min(input.len() - 4));
            let second = decoder.decode(&input[first.consumed..], &mut body).unwrap();
            assert!(second.done);
            assert_eq!(first.consumed + second.consumed, input.len() - 4);
            assert_eq!(body, b"wikipedia");
        }
    }
}
