//! Who may publish: a bearer token when one is configured, else loopback peers only.

use crate::http::HttpError;

/// Checks a publish request's `Authorization` header against `--publish-token`.
pub fn authorize_publish(token: Option<&str>, authorization: Option<&[u8]>, loopback: bool) -> Result<(), HttpError> {
    match token {
        Some(token) => match authorization.and_then(bearer) {
            Some(presented) if constant_time_eq(presented, token.as_bytes()) => Ok(()),
            _ => Err(HttpError::Unauthorized),
        },
        None if loopback => Ok(()),
        None => Err(HttpError::Forbidden),
    }
}

/// The credentials of `Bearer <credentials>` (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    scheme.eq_ignore_ascii_case(b"bearer").then(|| rest.trim_ascii())
}

/// Compares without stopping at the first difference, so response time does
/// not reveal how much of a guessed token was right. (The length is not secret.)
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    type Case<'a> = (Option<&'a str>, Option<&'a [u8]>, bool, Result<(), HttpError>);

    #[test]
    fn token_rules() {
        let cases: &[Case] = &[
            (Some("s3cret"), Some(b"Bearer s3cret"), false, Ok(())),
            (Some("s3cret"), Some(b"bearer  s3cret "), false, Ok(())),
            (Some("s3cret"), Some(b"Bearer s3cre"), true, Err(HttpError::Unauthorized)),
            (Some("s3cret"), Some(b"Basic s3cret"), true, Err(HttpError::Unauthorized)),
            (Some("s3cret"), Some(b"s3cret"), true, Err(HttpError::Unauthorized)),
            (Some("s3cret"), None, true, Err(HttpError::Unauthorized)),
            (None, None, true, Ok(())),
            (None, Some(b"Bearer x"), false, Err(HttpError::Forbidden)),
        ];
        for (token, header, loopback, want) in cases {
            assert_eq!(authorize_publish(*token, *header, *loopback), *want, "{token:?} {header:?}");
        }
    }
}
