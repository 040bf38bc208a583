//! Who may do what: an [`Authorizer`] decides on a request's credentials
//! before anything is published or subscribed, and a refusal is a [`Denied`]
//! reason, mapped to its status in one place ([`Denied::status`]).
//!
//! Two implementations, chosen at start:
//! - [`token::TokenAuthorizer`] (no JWT key configured): `--publish-token`
//!   for publishers (loopback peers only when none is set), anyone may
//!   subscribe to anything.
//! - [`jwt::JwtAuthorizer`] (any `--jwt-secret`/`--jwt-public-key`): signed
//!   grants. Subscribing needs a token whose `subscribe` grants cover every
//!   requested topic or pattern, except `--public-topic`s; publishing needs
//!   `--publish-token` or a token whose `publish` grants cover every topic.
//!
//! Every decision is made from the request head (a publish's topics are
//! checked against its grant once the body is decoded, before anything is
//! published), so a refused subscribe never becomes a stream. Failures are
//! closed: anything that cannot be checked is refused, and a bad token is
//! never treated as no token. Tokens are never logged or echoed.

pub mod jwt;
pub mod token;

use std::fmt;

use ssehub_protocol::pattern::{Pattern, covers};

/// Why a request is refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// 401: publishing needs credentials the request does not carry (or they are wrong).
    PublishCredentials,
    /// 403: no publish credential is configured and the peer is not on loopback.
    NotLoopback,
    /// 401: a topic needs a token and none was presented.
    TokenMissing,
    /// 401: the token is malformed, its signature or claims do not verify.
    TokenInvalid,
    /// 401: the token has expired.
    TokenExpired,
    /// 401: the token is not valid yet (`nbf` or `iat` in the future).
    TokenNotYetValid,
    /// 403: a valid token whose `subscribe` grants do not cover a requested topic.
    SubscribeNotGranted,
    /// 403: a valid token whose `publish` grants do not cover a topic of the request.
    PublishNotGranted,
}

impl Denied {
    /// The status code.
    pub fn status(self) -> u16 {
        match self {
            Denied::PublishCredentials
            | Denied::TokenMissing
            | Denied::TokenInvalid
            | Denied::TokenExpired
            | Denied::TokenNotYetValid => 401,
            Denied::NotLoopback | Denied::SubscribeNotGranted | Denied::PublishNotGranted => 403,
        }
    }

    /// One line for the response body and the log; never holds a credential.
    pub fn detail(self) -> &'static str {
        match self {
            Denied::PublishCredentials => "publishing needs Authorization: Bearer <token>",
            Denied::NotLoopback => "publishing without a token is allowed from loopback only",
            Denied::TokenMissing => {
                "a requested topic is private: present a token (Authorization: Bearer, ?token= or the cookie)"
            }
            Denied::TokenInvalid => "the token is malformed or its signature, audience or issuer does not verify",
            Denied::TokenExpired => "the token has expired",
            Denied::TokenNotYetValid => "the token is not valid yet",
            Denied::SubscribeNotGranted => "the token's subscribe grants do not cover every requested topic",
            Denied::PublishNotGranted => "the token's publish grants do not cover every topic of the request",
        }
    }

    /// The `reason` label of `ssehub_auth_failures_total`, for token failures.
    pub fn metric_reason(self) -> Option<&'static str> {
        match self {
            Denied::TokenMissing => Some("missing"),
            Denied::TokenInvalid | Denied::TokenNotYetValid => Some("invalid"),
            Denied::TokenExpired => Some("expired"),
            Denied::SubscribeNotGranted | Denied::PublishNotGranted => Some("forbidden"),
            Denied::PublishCredentials | Denied::NotLoopback => None,
        }
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.detail())
    }
}

impl std::error::Error for Denied {}

/// What a request presents to be authorized.
#[derive(Copy, Clone, Default)]
pub struct Credentials<'a> {
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a [u8]>,
    /// The subscribe query's `token` parameter, decoded.
    pub query_token: Option<&'a [u8]>,
    /// The `Cookie` header, if any.
    pub cookie: Option<&'a [u8]>,
    /// The peer's address is loopback.
    pub loopback: bool,
}

impl fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a credential, even in a debug log.
        f.debug_struct("Credentials")
            .field("authorization", &self.authorization.map(|_| "<redacted>"))
            .field("query_token", &self.query_token.map(|_| "<redacted>"))
            .field("cookie", &self.cookie.map(|_| "<redacted>"))
            .field("loopback", &self.loopback)
            .finish()
    }
}

/// What a publisher may publish to, decided on the head.
#[derive(Clone, Debug)]
pub enum PublishGrant {
    /// Anything (the publish token, or loopback without one).
    All,
    /// Only topics these patterns match.
    Topics(Vec<Pattern>),
}

impl PublishGrant {
    /// Checks every topic of a request: all covered, or nothing is published.
    pub fn allows<'a>(&self, mut topics: impl Iterator<Item = &'a str>) -> Result<(), Denied> {
        match self {
            PublishGrant::All => Ok(()),
            PublishGrant::Topics(grants) => {
                if topics.all(|topic| grants.iter().any(|grant| grant.matches(topic))) {
                    Ok(())
                } else {
                    Err(Denied::PublishNotGranted)
                }
            }
        }
    }
}

/// What a stream opened with a token carries: when it must end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamGrant {
    /// Unix seconds after which the stream is ended with `ssehub-expired`.
    pub expires_at: u64,
    /// The token's `sub`, for the debug log only.
    pub subject: Option<String>,
}

/// Decides who may publish and subscribe. Implementations must fail closed:
/// anything they cannot check is refused.
pub trait Authorizer: Send + Sync {
    /// What may these credentials publish to? Decided on the head, before the body is read.
    fn publish(&self, credentials: &Credentials<'_>) -> Result<PublishGrant, Denied>;

    /// May these credentials subscribe to `topics` (topics or patterns)?
    /// `Some` when the stream rests on a token and must end when it expires.
    fn subscribe(&self, credentials: &Credentials<'_>, topics: &[String]) -> Result<Option<StreamGrant>, Denied>;
}

/// The credentials of `Bearer <credentials>` (scheme case-insensitive).
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    scheme.eq_ignore_ascii_case(b"bearer").then(|| rest.trim_ascii())
}

/// The value of cookie `name` in a `Cookie` header (`a=1; b=2`), if present.
pub fn cookie<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let value = pair[eq + 1..].trim_ascii();
        // RFC 6265 allows the value in double quotes.
        let value = value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value);
        (pair[..eq].trim_ascii() == name).then_some(value)
    })
}

/// True when `grants` cover the subscription `topic` (a topic or a pattern):
/// every topic it can match is matched by one grant.
pub fn covered(grants: &[Pattern], topic: &str) -> bool {
    let Ok(wanted) = Pattern::parse(topic) else { return false };
    grants.iter().any(|grant| covers(grant, &wanted))
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

    #[test]
    fn cookies_are_found_by_exact_name() {
        let header = b"a=1; ssehub_token=abc.def ; x_ssehub_token=no; q=\"quoted\"";
        assert_eq!(cookie(header, b"ssehub_token"), Some(&b"abc.def"[..]));
        assert_eq!(cookie(header, b"q"), Some(&b"quoted"[..]));
        assert_eq!(cookie(header, b"token"), None);
        assert_eq!(cookie(b"", b"a"), None);
        assert_eq!(cookie(b"novalue; a=", b"a"), Some(&b""[..]));
    }

    #[test]
    fn credentials_never_print_their_secrets() {
        let credentials = Credentials {
            authorization: Some(b"Bearer s3cret"),
            query_token: Some(b"s3cret"),
            cookie: Some(b"t=s3cret"),
            loopback: false,
        };
        assert!(!format!("{credentials:?}").contains("s3cret"));
    }
}
