//! The client side of `private_key_jwt`: a client's private key read from a PEM file, its
//! public JWK Set, and the signed assertions a client sends to the token endpoint (SMART
//! Backend Services §2.3: `iss` = `sub` = client_id, `aud` = the token URL, `exp` at most five
//! minutes ahead, a fresh `jti`). Used by `pdex token` and by the demo, whose clients'
//! public keys are derived from the same PEM files, so the two cannot disagree.
//!
//! The header's `kid` is the key's RFC 7638 JWK thumbprint (SHA-256) unless one is given:
//! a PEM file carries no key id, and the thumbprint is one the key itself determines.

use anyhow::Context;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// A client's private signing key.
#[derive(Clone)]
pub struct SigningKey {
    pub alg: Algorithm,
    pub kid: String,
    encoding: EncodingKey,
    /// The public half as a JWK (with `kid` and `alg`).
    pub public_jwk: Value,
}

impl SigningKey {
    /// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`; PKCS#1 `RSA PRIVATE
    /// KEY` too): EC P-384 signs ES384, EC P-256 ES256, RSA RS384 (the algorithms SMART
    /// names). `kid` defaults to the RFC 7638 thumbprint of the public key.
    pub fn from_pem(pem: &[u8], kid: Option<&str>) -> anyhow::Result<SigningKey> {
        let (alg, encoding, jwk) = if let Ok(ec) = EncodingKey::from_ec_pem(pem) {
            // the curve decides the algorithm: try P-384 first, then P-256
            [Algorithm::ES384, Algorithm::ES256]
                .into_iter()
                .find_map(|alg| {
                    Jwk::from_encoding_key(&ec, alg)
                        .ok()
                        .map(|jwk| (alg, ec.clone(), jwk))
                })
                .context("the EC key is neither P-384 (ES384) nor P-256 (ES256)")?
        } else if let Ok(rsa) = EncodingKey::from_rsa_pem(pem) {
            let jwk = Jwk::from_encoding_key(&rsa, Algorithm::RS384)
                .context("the RSA key cannot be read")?;
            (Algorithm::RS384, rsa, jwk)
        } else {
            anyhow::bail!(
                "not a PEM private key (PKCS#8 EC P-256/P-384 or RSA); an EC \"BEGIN EC PRIVATE KEY\" file converts with `openssl pkcs8 -topk8 -nocrypt`"
            );
        };
        let kid = match kid {
            Some(k) => k.to_owned(),
            None => jwk.thumbprint(ThumbprintHash::SHA256)?,
        };
        let mut public_jwk = serde_json::to_value(&jwk)?;
        public_jwk["kid"] = json!(kid);
        public_jwk["alg"] = json!(format!("{alg:?}"));
        Ok(SigningKey {
            alg,
            kid,
            encoding,
            public_jwk,
        })
    }

    /// Reads [`SigningKey::from_pem`] from a file.
    pub fn from_file(path: &std::path::Path, kid: Option<&str>) -> anyhow::Result<SigningKey> {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_pem(&pem, kid).with_context(|| format!("{}", path.display()))
    }

    /// `{"keys": [public JWK]}`: what the client registers.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.public_jwk]})
    }

    /// A signed JWT with `iss` = `client_id`, the given `sub`, `aud`, `exp` 4 minutes ahead
    /// and a random `jti` (a client assertion when `sub` is the client id; the RFC 7523
    /// member assertion when `sub` is `Patient/{id}`).
    pub fn sign(&self, client_id: &str, sub: &str, aud: &str) -> anyhow::Result<String> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        let claims = json!({
            "iss": client_id,
            "sub": sub,
            "aud": aud,
            "exp": chrono::Utc::now().timestamp() + 240,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        Ok(jsonwebtoken::encode(&header, &claims, &self.encoding)?)
    }
}

/// The token request `pdex token` sends: `client_credentials`, or with `member` the RFC 7523
/// §2.1 JWT-bearer grant for that member (`Patient/{id}` or the UMB); the client
/// authenticates with a `private_key_jwt` assertion either way.
pub fn token_form(
    key: &SigningKey,
    client_id: &str,
    token_url: &str,
    scope: Option<&str>,
    member: Option<&str>,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let mut form = vec![
        (
            "client_assertion_type",
            super::token::JWT_BEARER_ASSERTION.to_owned(),
        ),
        (
            "client_assertion",
            key.sign(client_id, client_id, token_url)?,
        ),
    ];
    match member {
        Some(sub) => {
            form.push(("grant_type", super::token::JWT_BEARER_GRANT.to_owned()));
            form.push(("assertion", key.sign(client_id, sub, token_url)?));
        }
        None => form.push(("grant_type", "client_credentials".to_owned())),
    }
    if let Some(s) = scope.filter(|s| !s.is_empty()) {
        form.push(("scope", s.to_owned()));
    }
    Ok(form)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_keys_read_with_thumbprint_kids() {
        let pem = include_bytes!("../../fixtures/demo-clients/payer.pem");
        let key = SigningKey::from_pem(pem, None).unwrap();
        assert_eq!(key.alg, Algorithm::ES384);
        assert_eq!(key.public_jwk["crv"], "P-384");
        assert!(key.public_jwk.get("d").is_none(), "public half only");
        assert_eq!(key.kid.len(), 43, "base64url SHA-256");
        let again = SigningKey::from_pem(pem, None).unwrap();
        assert_eq!(key.kid, again.kid, "the kid is the key's own");
        assert!(SigningKey::from_pem(b"not a key", None).is_err());
    }
}
