//! The token path of `JwtAuthorizer`: arbitrary bytes as a token never panic
//! and never verify; arbitrary claims signed with the configured key never
//! panic, and what verifies has `exp` honoured and grants that are valid
//! patterns. The cookie reader returns only a part of its input.
#![no_main]

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use libfuzzer_sys::fuzz_target;
use ssehub::auth::cookie;
use ssehub::auth::jwt::JwtAuthorizer;
use ssehub::settings::AuthSettings;
use ssehub_protocol::pattern::Pattern;

const SECRET: &str = "fuzz-secret";

fuzz_target!(|input: (&[u8], &str, &[u8])| {
    let (token, claims, header) = input;
    let settings = AuthSettings { jwt_secrets: vec![SECRET.into()], jwt_leeway: 0, ..AuthSettings::default() };
    let Ok(authorizer) = JwtAuthorizer::new(&settings) else { return };
    assert!(authorizer.verify(token).is_err(), "an unsigned token never verifies");

    if let Ok(claims) = serde_json::from_str::<serde_json::Value>(claims)
        && let Ok(key) = EncodingKey::from_secret(SECRET.as_bytes())
        && let Ok(signed) = encode(&Header::default(), &claims, &key)
        && let Ok(verified) = authorizer.verify(signed.as_bytes())
    {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        assert!(verified.expires >= now, "an expired token never verifies");
        for grant in verified.subscribe.iter().chain(&verified.publish) {
            assert!(Pattern::parse(&grant.to_string()).is_ok());
        }
    }

    if let Some(value) = cookie(header, b"ssehub_token") {
        let start = value.as_ptr() as usize - header.as_ptr() as usize;
        assert!(start + value.len() <= header.len(), "a cookie value is a part of the header");
    }
});
