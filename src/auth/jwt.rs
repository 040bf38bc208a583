//! Signed grants: JWTs any app can mint (PyJWT, `jsonwebtoken`), verified
//! with `--jwt-secret` (HS256/384/512) or `--jwt-public-key` (RS*, PS*,
//! ES256/384, EdDSA). Several keys may be configured, for rotation: a token
//! is valid if one of them verifies it.
//!
//! Each key accepts only its own family's algorithms, so `alg: none`, an
//! HMAC token checked against a public key (algorithm confusion) and unknown
//! algorithms never verify. `exp` is required, `nbf` and `iat` are honoured,
//! with `--jwt-leeway` (30 s) for clock skew; `--jwt-audience`/`--jwt-issuer`, when
//! set, must match. The grants are the namespaced claim
//! `"ssehub": {"subscribe": [...], "publish": [...]}`, topics or patterns.
//! `sub` is only ever logged (debug), never trusted.

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use ssehub_protocol::pattern::Pattern;

use super::{Authorizer, Credentials, Denied, PublishGrant, StreamGrant, bearer, constant_time_eq, cookie, covered};
use crate::settings::AuthSettings;

/// One configured key and the checks that go with it.
struct Key {
    /// The secret or public key.
    decoding: DecodingKey,
    /// Its family's algorithms, the time, audience and issuer rules.
    validation: Validation,
}

/// The claims ssehub reads; any others are ignored.
#[derive(Deserialize)]
struct Claims {
    /// Subject, for logs only.
    #[serde(default)]
    sub: Option<String>,
    /// Expiry, Unix seconds (required).
    exp: u64,
    /// Issued at, Unix seconds.
    #[serde(default)]
    iat: Option<u64>,
    /// The grants.
    #[serde(default)]
    ssehub: GrantClaim,
}

/// The `ssehub` claim.
#[derive(Deserialize, Default)]
struct GrantClaim {
    /// Topics and patterns the bearer may subscribe to.
    #[serde(default)]
    subscribe: Vec<String>,
    /// Topics and patterns the bearer may publish to.
    #[serde(default)]
    publish: Vec<String>,
}

/// A verified token.
#[derive(Debug)]
pub struct Verified {
    /// The token's `sub`.
    pub subject: Option<String>,
    /// Its `exp`.
    pub expires: u64,
    /// Its subscribe grants.
    pub subscribe: Vec<Pattern>,
    /// Its publish grants.
    pub publish: Vec<Pattern>,
}

/// The rules when any JWT key is configured.
pub struct JwtAuthorizer {
    /// Every configured key.
    keys: Vec<Key>,
    /// `--publish-token`: full publish access besides tokens.
    publish_token: Option<String>,
    /// `--public-topic` patterns: subscribable without a token.
    public: Vec<Pattern>,
    /// `--jwt-cookie`: the cookie a token may come in.
    cookie: String,
    /// `--jwt-leeway`: seconds of clock skew allowed on `exp`, `nbf` and
    /// `iat`. A stream opened with a token ends this long after its `exp`
    /// too, so a token accepted within the leeway is not cut off at once.
    leeway: u64,
}

/// Unix seconds now.
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn invalid_input(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

impl JwtAuthorizer {
    /// Loads the keys `settings` name; an unreadable or unparsable key is an
    /// error at start, never a silently open hub.
    pub fn new(settings: &AuthSettings) -> io::Result<JwtAuthorizer> {
        let mut keys = Vec::new();
        for secret in &settings.jwt_secrets {
            if secret.is_empty() {
                return Err(invalid_input("--jwt-secret: empty".into()));
            }
            let decoding =
                DecodingKey::from_secret(secret.as_bytes()).map_err(|e| invalid_input(format!("--jwt-secret: {e}")))?;
            keys.push(decoding);
        }
        for path in &settings.jwt_public_keys {
            let pem = std::fs::read(path)
                .map_err(|e| io::Error::new(e.kind(), format!("--jwt-public-key {}: {e}", path.display())))?;
            let decoding = DecodingKey::from_rsa_pem(&pem)
                .or_else(|_| DecodingKey::from_ec_pem(&pem))
                .or_else(|_| DecodingKey::from_ed_pem(&pem))
                .map_err(|_| {
                    invalid_input(format!(
                        "--jwt-public-key {}: not an RSA, EC or Ed25519 public key PEM",
                        path.display()
                    ))
                })?;
            keys.push(decoding);
        }
        let keys = keys
            .into_iter()
            .map(|decoding| {
                let mut validation = Validation::new_for_family(decoding.family());
                validation.leeway = settings.jwt_leeway;
                validation.validate_nbf = true;
                validation.validate_aud = settings.jwt_audience.is_some();
                if let Some(audience) = &settings.jwt_audience {
                    validation.set_audience(&[audience]);
                    validation.required_spec_claims.insert("aud".into());
                }
                if let Some(issuer) = &settings.jwt_issuer {
                    validation.set_issuer(&[issuer]);
                    validation.required_spec_claims.insert("iss".into());
                }
                Key { decoding, validation }
            })
            .collect();
        let mut public = Vec::new();
        for topic in &settings.public_topics {
            public.push(Pattern::parse(topic).map_err(|e| invalid_input(format!("--public-topic {topic:?}: {e}")))?);
        }
        Ok(JwtAuthorizer {
            keys,
            publish_token: settings.publish_token.clone(),
            public,
            cookie: settings.jwt_cookie.clone(),
            leeway: settings.jwt_leeway,
        })
    }

    /// Verifies a token with whichever configured key of its algorithm's
    /// family accepts it.
    pub fn verify(&self, token: &[u8]) -> Result<Verified, Denied> {
        let header = decode_header(token).map_err(|_| Denied::TokenInvalid)?;
        let family = header.alg.family();
        for key in self.keys.iter().filter(|k| k.decoding.family() == family) {
            let claims = match decode::<Claims>(token, &key.decoding, &key.validation) {
                Ok(data) => data.claims,
                // Another key of the family may verify it (rotation).
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey) => continue,
                // Past the signature: the claims are definitive.
                Err(e) => {
                    return Err(match e.kind() {
                        ErrorKind::ExpiredSignature => Denied::TokenExpired,
                        ErrorKind::ImmatureSignature => Denied::TokenNotYetValid,
                        _ => Denied::TokenInvalid,
                    });
                }
            };
            if claims.iat.is_some_and(|iat| iat > unix_now() + self.leeway) {
                return Err(Denied::TokenNotYetValid);
            }
            let patterns = |list: Vec<String>| -> Result<Vec<Pattern>, Denied> {
                list.iter().map(|p| Pattern::parse(p).map_err(|_| Denied::TokenInvalid)).collect()
            };
            return Ok(Verified {
                subject: claims.sub,
                expires: claims.exp,
                subscribe: patterns(claims.ssehub.subscribe)?,
                publish: patterns(claims.ssehub.publish)?,
            });
        }
        Err(Denied::TokenInvalid)
    }

    /// The token a subscriber presents, first found: `Authorization: Bearer`,
    /// the `token` query parameter, the cookie.
    fn subscriber_token<'a>(&self, credentials: &Credentials<'a>) -> Option<&'a [u8]> {
        credentials
            .authorization
            .and_then(bearer)
            .or(credentials.query_token)
            .or_else(|| credentials.cookie.and_then(|c| cookie(c, self.cookie.as_bytes())))
    }
}

impl Authorizer for JwtAuthorizer {
    fn publish(&self, credentials: &Credentials<'_>) -> Result<PublishGrant, Denied> {
        let Some(presented) = credentials.authorization.and_then(bearer) else {
            return Err(Denied::PublishCredentials);
        };
        if let Some(token) = &self.publish_token
            && constant_time_eq(presented, token.as_bytes())
        {
            return Ok(PublishGrant::All);
        }
        let verified = self.verify(presented)?;
        log::debug!("publisher token for sub {:?}", verified.subject);
        Ok(PublishGrant::Topics(verified.publish))
    }

    fn subscribe(&self, credentials: &Credentials<'_>, topics: &[String]) -> Result<Option<StreamGrant>, Denied> {
        let private: Vec<&String> = topics.iter().filter(|t| !covered(&self.public, t)).collect();
        let Some(token) = self.subscriber_token(credentials) else {
            return if private.is_empty() { Ok(None) } else { Err(Denied::TokenMissing) };
        };
        // A token presented is always checked: a bad one is refused, never
        // taken for no token, even where the topics are public.
        let verified = self.verify(token)?;
        if !private.iter().all(|topic| covered(&verified.subscribe, topic)) {
            return Err(Denied::SubscribeNotGranted);
        }
        log::debug!("subscriber token for sub {:?}", verified.subject);
        Ok(Some(StreamGrant { expires_at: verified.expires.saturating_add(self.leeway), subject: verified.subject }))
    }
}
