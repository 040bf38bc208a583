//! `application/x-www-form-urlencoded` decoding, as browsers encode it.
//!
//! `+` is a space, then `%XX` is a byte. Stricter than the WHATWG parser in one
//! way: a `%` not followed by two hex digits is an error, not a literal,
//! because no browser produces it.

use std::fmt;

/// Why a form component could not be decoded.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FormError {
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// The decoded bytes are not UTF-8 where text was expected.
    NotUtf8,
}

impl FormError {
    /// One line for a response body and the log.
    pub fn detail(self) -> &'static str {
        match self {
            FormError::BadEscape => "malformed percent-encoding",
            FormError::NotUtf8 => "value is not UTF-8",
        }
    }
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.detail())
    }
}

impl std::error::Error for FormError {}

/// Splits `a=1&b=2` into raw (still encoded) name/value pairs; empty pieces are skipped.
pub fn pairs(input: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    input.split(|&b| b == b'&').filter(|piece| !piece.is_empty()).map(|piece| {
        match piece.iter().position(|&b| b == b'=') {
            Some(i) => (&piece[..i], &piece[i + 1..]),
            None => (piece, &piece[piece.len()..]),
        }
    })
}

/// Decodes one component into bytes.
pub fn decode_bytes(raw: &[u8]) -> Result<Vec<u8>, FormError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(raw.get(i + 1)), hex(raw.get(i + 2))) else {
                    return Err(FormError::BadEscape);
                };
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Ok(out)
}

/// Decodes one component into UTF-8 text.
pub fn decode_text(raw: &[u8]) -> Result<String, FormError> {
    String::from_utf8(decode_bytes(raw)?).map_err(|_| FormError::NotUtf8)
}

/// Encodes `text` as one form component the way `URLSearchParams` does.
pub fn encode(text: &str, out: &mut String) {
    for b in text.bytes() {
        match b {
            b'*' | b'-' | b'.' | b'_' | b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' => out.push(b as char),
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_as_browsers_encode() {
        let cases: &[(&str, Result<&str, FormError>)] = &[
            ("plain", Ok("plain")),
            ("a+b", Ok("a b")),
            ("a%20b", Ok("a b")),
            ("%2B", Ok("+")),
            ("%e2%9c%93", Ok("✓")),
            ("100%25", Ok("100%")),
            ("%", Err(FormError::BadEscape)),
            ("%2", Err(FormError::BadEscape)),
            ("%zz", Err(FormError::BadEscape)),
            ("%ff", Err(FormError::NotUtf8)),
        ];
        for (raw, want) in cases {
            assert_eq!(decode_text(raw.as_bytes()).as_deref(), want.as_deref(), "{raw}");
        }
    }

    #[test]
    fn encode_round_trips() {
        for text in ["", "a b", "100%", "✓ & = + ?", "\u{0}\n"] {
            let mut encoded = String::new();
            encode(text, &mut encoded);
            assert_eq!(decode_text(encoded.as_bytes()).as_deref(), Ok(text));
        }
    }
}
