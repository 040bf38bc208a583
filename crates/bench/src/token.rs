//! Subscriber tokens, minted before the run as an app would mint them (one
//! per subscriber, each with its own `sub` and a grant for its own topics),
//! so a run measures the server's verification, not the generator's signing.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

/// How tokens are signed: `hs256:SECRET` or `es256:PKCS8-PEM-FILE`.
#[derive(Clone)]
pub struct Signer {
    /// The JWT algorithm.
    alg: Algorithm,
    /// Its key.
    key: EncodingKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({:?})", self.alg) // never the key
    }
}

impl Signer {
    /// Parses `--sub-jwt`.
    pub fn parse(spec: &str) -> Result<Signer, String> {
        let (alg, key) = spec.split_once(':').ok_or("--sub-jwt: expected hs256:SECRET or es256:KEY.pem")?;
        match alg.to_ascii_lowercase().as_str() {
            "hs256" => Ok(Signer {
                alg: Algorithm::HS256,
                key: EncodingKey::from_secret(key.as_bytes()).map_err(|e| format!("--sub-jwt: {e}"))?,
            }),
            "es256" => {
                let pem = std::fs::read(key).map_err(|e| format!("--sub-jwt {key}: {e}"))?;
                let key = EncodingKey::from_ec_pem(&pem).map_err(|e| format!("--sub-jwt {key}: {e}"))?;
                Ok(Signer { alg: Algorithm::ES256, key })
            }
            other => Err(format!("--sub-jwt: unknown algorithm {other:?} (hs256, es256)")),
        }
    }

    /// One token per subscriber id `0..count`: `sub` is the id, the grant is
    /// `grants` if given, else the names `topics_of(id)` returns. Valid for a day.
    pub fn mint_all(
        &self,
        count: u64,
        grants: &[String],
        topics_of: impl Fn(u64) -> Vec<String>,
    ) -> Result<Vec<String>, String> {
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs() + 86_400;
        let header = Header::new(self.alg);
        (0..count)
            .map(|id| {
                let subscribe = if grants.is_empty() { topics_of(id) } else { grants.to_vec() };
                let claims = json!({"sub": id.to_string(), "exp": exp, "ssehub": {"subscribe": subscribe}});
                encode(&header, &claims, &self.key).map_err(|e| format!("minting: {e}"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_each_subscribers_own_grant() {
        let signer = Signer::parse("hs256:secret").expect("signer");
        let tokens = signer.mint_all(3, &[], |id| vec![format!("t{id}")]).expect("mint");
        assert_eq!(tokens.len(), 3);
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        let key = jsonwebtoken::DecodingKey::from_secret(b"secret").expect("key");
        let claims = jsonwebtoken::decode::<serde_json::Value>(&tokens[2], &key, &validation).expect("valid").claims;
        assert_eq!(claims["sub"], "2");
        assert_eq!(claims["ssehub"]["subscribe"], json!(["t2"]));
        assert!(Signer::parse("none:x").is_err());
        assert!(Signer::parse("hs256").is_err());
    }
}
