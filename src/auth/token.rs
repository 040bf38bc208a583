//! The rules without JWT keys: a shared publish token, or loopback peers only; open subscriptions.

use super::{Authorizer, Credentials, Denied, PublishGrant, StreamGrant, bearer, constant_time_eq};
use crate::settings::AuthSettings;

/// `--publish-token` for publishers (loopback-only without one); anyone may subscribe.
#[derive(Debug)]
pub struct TokenAuthorizer {
    /// The bearer token that allows publishing, if configured.
    publish_token: Option<String>,
}

impl TokenAuthorizer {
    /// The authorizer `settings` describe.
    pub fn new(settings: &AuthSettings) -> Self {
        TokenAuthorizer { publish_token: settings.publish_token.clone() }
    }
}

impl Authorizer for TokenAuthorizer {
    fn publish(&self, credentials: &Credentials<'_>) -> Result<PublishGrant, Denied> {
        match &self.publish_token {
            Some(token) => match credentials.authorization.and_then(bearer) {
                Some(presented) if constant_time_eq(presented, token.as_bytes()) => Ok(PublishGrant::All),
                _ => Err(Denied::PublishCredentials),
            },
            None if credentials.loopback => Ok(PublishGrant::All),
            None => Err(Denied::NotLoopback),
        }
    }

    fn subscribe(&self, _credentials: &Credentials<'_>, _topics: &[String]) -> Result<Option<StreamGrant>, Denied> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Case<'a> = (Option<&'a str>, Option<&'a [u8]>, bool, Result<(), Denied>);

    #[test]
    fn token_rules() {
        let cases: &[Case] = &[
            (Some("s3cret"), Some(b"Bearer s3cret"), false, Ok(())),
            (Some("s3cret"), Some(b"bearer  s3cret "), false, Ok(())),
            (Some("s3cret"), Some(b"Bearer s3cre"), true, Err(Denied::PublishCredentials)),
            (Some("s3cret"), Some(b"Basic s3cret"), true, Err(Denied::PublishCredentials)),
            (Some("s3cret"), Some(b"s3cret"), true, Err(Denied::PublishCredentials)),
            (Some("s3cret"), None, true, Err(Denied::PublishCredentials)),
            (None, None, true, Ok(())),
            (None, Some(b"Bearer x"), false, Err(Denied::NotLoopback)),
        ];
        for (token, header, loopback, want) in cases {
            let settings = AuthSettings { publish_token: token.map(str::to_owned), ..AuthSettings::default() };
            let authorizer = TokenAuthorizer::new(&settings);
            let credentials = Credentials { authorization: *header, loopback: *loopback, ..Credentials::default() };
            assert_eq!(authorizer.publish(&credentials).map(|_| ()), *want, "{token:?} {header:?}");
            assert_eq!(authorizer.subscribe(&credentials, &["t".into()]), Ok(None));
        }
    }
}
