//! Incremental HTTP/1.1 chunked transfer-coding decoder (RFC 9112 §7.1).
//!
//! nchan and axum stream SSE with `Transfer-Encoding: chunked`, so every
//! subscriber read goes through this. It is a byte-level state machine for
//! the framing (size line, extensions, CRLFs, trailers) and hands chunk data
//! through as slices of the input, without copying; any split point between
//! reads is fine. Bare LF is accepted where CRLF is expected (as most
//! parsers do); anything else malformed is an error.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    BadSize,
    SizeOverflow,
    MissingCrlf,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ChunkError::BadSize => "invalid chunk size line",
            ChunkError::SizeOverflow => "chunk size overflows",
            ChunkError::MissingCrlf => "missing CRLF after chunk data",
        };
        f.write_str(s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits; `digits` counts them.
    Size,
    /// Whitespace after the digits, before `;` or CRLF.
    SizeWs,
    /// Skipping a chunk extension up to the line end.
    Ext,
    /// Saw CR at the end of the size line.
    SizeLf,
    Data,
    /// Expecting the CR (or LF) that ends the chunk data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (after the last chunk).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// Saw CR at the start of a trailer line: the final CRLF.
    TrailerEndLf,
    Done,
}

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    digits: u8,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder { state: State::Size, size: 0, digits: 0 }
    }

    /// The terminating zero-size chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes `input`, passing chunk payload slices to `out`. Returns how
    /// many bytes were consumed: all of them unless the body ended, in which
    /// case the rest belongs to whatever follows on the connection.
    pub fn feed<'a, F>(&mut self, input: &'a [u8], mut out: F) -> Result<usize, ChunkError>
    where
        F: FnMut(&'a [u8]),
    {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Data {
                let avail = input.len() - i;
                let take = usize::try_from(self.size).map_or(avail, |s| s.min(avail));
                out(&input[i..i + take]);
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            if self.state == State::Done {
                return Ok(i);
            }
            let b = input[i];
            i += 1;
            self.state = match self.state {
                State::Size => match hex(b) {
                    Some(d) => {
                        if self.digits >= 16 {
                            return Err(ChunkError::SizeOverflow);
                        }
                        self.digits += 1;
                        self.size = (self.size << 4) | u64::from(d);
                        State::Size
                    }
                    None if self.digits == 0 => return Err(ChunkError::BadSize),
                    None => match b {
                        b' ' | b'\t' => State::SizeWs,
                        b';' => State::Ext,
                        b'\r' => State::SizeLf,
                        b'\n' => self.end_size_line(),
                        _ => return Err(ChunkError::BadSize),
                    },
                },
                State::SizeWs => match b {
                    b' ' | b'\t' => State::SizeWs,
                    b';' => State::Ext,
                    b'\r' => State::SizeLf,
                    b'\n' => self.end_size_line(),
                    _ => return Err(ChunkError::BadSize),
                },
                State::Ext => match b {
                    b'\r' => State::SizeLf,
                    b'\n' => self.end_size_line(),
                    _ => State::Ext,
                },
                State::SizeLf => match b {
                    b'\n' => self.end_size_line(),
                    _ => return Err(ChunkError::BadSize),
                },
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    b'\n' => State::Size,
                    _ => return Err(ChunkError::MissingCrlf),
                },
                State::DataLf => match b {
                    b'\n' => State::Size,
                    _ => return Err(ChunkError::MissingCrlf),
                },
                State::TrailerStart => match b {
                    b'\r' => State::TrailerEndLf,
                    b'\n' => State::Done,
                    _ => State::TrailerLine,
                },
                State::TrailerLine => match b {
                    b'\n' => State::TrailerStart,
                    _ => State::TrailerLine,
                },
                State::TrailerEndLf => match b {
                    b'\n' => State::Done,
                    _ => return Err(ChunkError::MissingCrlf),
                },
                State::Data | State::Done => unreachable!("handled above"),
            };
        }
        Ok(i)
    }

    fn end_size_line(&mut self) -> State {
        let size = self.size;
        self.size = 0;
        self.digits = 0;
        if size == 0 {
            State::TrailerStart
        } else {
            self.size = size;
            State::Data
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` split at `cuts`; returns (payload, consumed, done).
    fn decode(input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut consumed = 0;
        let mut prev = 0;
        for &c in cuts.iter().chain(std::iter::once(&input.len())) {
            let part = &input[prev..c];
            let n = d.feed(part, |s| out.extend_from_slice(s))?;
            consumed += n;
            prev = c;
            if d.is_done() {
                break;
            }
        }
        Ok((out, consumed, d.is_done()))
    }

    const BODY: &[u8] =
        b"7\r\ndata: a\r\n4;ext=\"x\"\r\n\nb\n\n\r\n1B \r\n: keep-alive 0123456789abc\n\r\n0\r\nX-T: 1\r\n\r\nNEXT";
    const PAYLOAD: &[u8] = b"data: a\nb\n\n: keep-alive 0123456789abc\n";

    #[test]
    fn decodes_at_every_split() {
        let end = BODY.len() - 4;
        assert_eq!(decode(BODY, &[]).unwrap(), (PAYLOAD.to_vec(), end, true));
        for i in 0..=BODY.len() {
            for j in i..=BODY.len() {
                let got = decode(BODY, &[i, j]).unwrap();
                assert_eq!(got.0, PAYLOAD, "split {i},{j}");
                assert!(got.2);
            }
        }
        let ones: Vec<usize> = (1..BODY.len()).collect();
        assert_eq!(decode(BODY, &ones).unwrap().0, PAYLOAD);
    }

    #[test]
    fn stops_at_end_of_body_and_reports_consumed() {
        let (payload, consumed, done) = decode(BODY, &[]).unwrap();
        assert_eq!(payload, PAYLOAD);
        assert!(done);
        assert_eq!(&BODY[consumed..], b"NEXT");
    }

    #[test]
    fn bare_lf_framing_is_accepted() {
        let (p, _, done) = decode(b"3\nabc\n0\n\n", &[]).unwrap();
        assert_eq!(p, b"abc");
        assert!(done);
    }

    #[test]
    fn streaming_body_never_done() {
        let (p, consumed, done) = decode(b"5\r\nhello\r\n3\r\nwor", &[]).unwrap();
        assert_eq!(p, b"hellowor");
        assert_eq!(consumed, 16);
        assert!(!done);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(decode(b"x\r\n", &[]), Err(ChunkError::BadSize));
        assert_eq!(decode(b"\r\n", &[]), Err(ChunkError::BadSize));
        assert_eq!(decode(b"3\r\nabcX", &[]), Err(ChunkError::MissingCrlf));
        assert_eq!(decode(b"3\rX", &[]), Err(ChunkError::BadSize));
        assert_eq!(decode(b"11111111111111111\r\n", &[]), Err(ChunkError::SizeOverflow));
    }

    #[test]
    fn large_chunk_sizes_are_fine() {
        let mut d = ChunkedDecoder::new();
        let mut n = 0usize;
        d.feed(b"ffffffffffffffff\r\n", |_| {}).unwrap();
        d.feed(&[0u8; 1000], |s| n += s.len()).unwrap();
        assert_eq!(n, 1000);
    }

    /// The two incremental decoders composed: chunk boundaries and SSE line
    /// boundaries fall anywhere relative to each other and to the reads.
    #[test]
    fn chunked_sse_at_every_split() {
        use crate::sse::SseParser;
        // The CRLF after "1:2" is split across two chunks.
        let body = b"a\r\ndata: 1:2\r\r\na\r\n\n\ndata: 3:\r\n5\r\n4\r\n\r\n\r\n0\r\n\r\n";
        let expected: Vec<Vec<u8>> = vec![b"1:2".to_vec(), b"3:4".to_vec()];
        for i in 0..=body.len() {
            for j in i..=body.len() {
                let mut d = ChunkedDecoder::new();
                let mut p = SseParser::new(1024);
                let mut got: Vec<Vec<u8>> = Vec::new();
                for part in [&body[..i], &body[i..j], &body[j..]] {
                    d.feed(part, |s| {
                        p.feed(s, &mut |e| got.push(e.data.to_vec())).unwrap();
                    })
                    .unwrap();
                }
                assert_eq!(got, expected, "split {i},{j}");
            }
        }
    }
}
