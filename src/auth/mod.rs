//! Who may do what: an [`Authorizer`] decides on a request's credentials
//! before anything is published or subscribed, and a refusal is a [`Denied`]
//! reason, mapped to its status in one place ([`Denied::status`]).
//!
//! The first implementation is [`token::TokenAuthorizer`]: `--publish-token`
//! for publishers (loopback peers only when none is set), anyone may
//! subscribe. Every decision is made from the request head, so an
//! authorizer that refuses some topics refuses them before the connection
//! becomes a stream.

pub mod token;

use std::fmt;

/// Why a request is refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// 401: the request needs credentials it does not carry (or they are wrong).
    PublishCredentials,
    /// 403: no publish token is configured and the peer is not on loopback.
    NotLoopback,
}

impl Denied {
    /// The status code.
    pub fn status(self) -> u16 {
        match self {
            Denied::PublishCredentials => 401,
            Denied::NotLoopback => 403,
        }
    }

    /// One line for the response body and the log; never holds a credential.
    pub fn detail(self) -> &'static str {
        match self {
            Denied::PublishCredentials => "publishing needs Authorization: Bearer <token>",
            Denied::NotLoopback => "publishing without a token is allowed from loopback only",
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
#[derive(Copy, Clone, Debug)]
pub struct Credentials<'a> {
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a [u8]>,
    /// The peer's address is loopback.
    pub loopback: bool,
}

/// Decides who may publish and subscribe. Implementations must fail closed:
/// anything they cannot check is refused.
pub trait Authorizer: Send + Sync {
    /// May these credentials publish? Decided on the head, before the body is read.
    fn publish(&self, credentials: &Credentials<'_>) -> Result<(), Denied>;

    /// May these credentials subscribe to `topics`?
    fn subscribe(&self, credentials: &Credentials<'_>, topics: &[String]) -> Result<(), Denied>;
}

/// The credentials of `Bearer <credentials>` (scheme case-insensitive).
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
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
