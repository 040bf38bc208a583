//! Mints a JWT for ssehub, as an app would: for trying private topics with
//! curl and for the load generator's auth runs.
//!
//! ```sh
//! cargo run --example mint-token -- --secret S --claims '{"sub":"42","ssehub":{"subscribe":["user/42/**"]}}'
//! cargo run --example mint-token -- --es256-key tests/keys/es256.key.pem --ttl 3600
//! ```
//! `exp` is set to now + `--ttl` seconds unless the claims hold one.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

/// Flags.
#[derive(Parser)]
struct Args {
    /// HMAC secret (HS256).
    #[arg(long, conflicts_with = "es256_key")]
    secret: Option<String>,
    /// PKCS#8 PEM private key (ES256).
    #[arg(long)]
    es256_key: Option<std::path::PathBuf>,
    /// Claims as JSON.
    #[arg(long, default_value = r#"{"ssehub":{"subscribe":["**"]}}"#)]
    claims: String,
    /// Seconds until `exp`, when the claims have none.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut claims: serde_json::Value = serde_json::from_str(&args.claims)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    if let Some(object) = claims.as_object_mut() {
        object.entry("exp").or_insert_with(|| (now + args.ttl).into());
    }
    let (header, key) = match (&args.secret, &args.es256_key) {
        (Some(secret), _) => (Header::new(Algorithm::HS256), EncodingKey::from_secret(secret.as_bytes())?),
        (None, Some(path)) => (Header::new(Algorithm::ES256), EncodingKey::from_ec_pem(&std::fs::read(path)?)?),
        (None, None) => return Err("give --secret or --es256-key".into()),
    };
    println!("{}", encode(&header, &claims, &key)?);
    Ok(())
}
