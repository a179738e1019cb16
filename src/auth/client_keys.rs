//! Client public keys and the checks on JWTs clients sign: the `private_key_jwt` client
//! assertion (SMART Backend Services, RFC 7523 §3) and the RFC 7523 authorization grant of
//! the member-scoped token.
//!
//! Keys come from the client's inline JWK Set or its `jwks_uri`, fetched with reqwest and
//! cached no longer than the response's `Cache-Control` allows (SMART: "SHALL NOT cache a
//! JWKS for longer than the client's cache-control header indicates"; no header, no cache).

use super::clients::Client;
use crate::store::{SqlValue, Store};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Signature algorithms accepted on client JWTs (SMART: RS384/ES384; UDAP: RS256).
pub const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// Allowed clock skew, seconds.
pub const SKEW_SECS: i64 = 30;
/// Longest assertion lifetime: "no more than five minutes in the future" (SMART §2.3).
pub const MAX_ASSERTION_SECS: i64 = 300;
const MAX_JWKS_BYTES: usize = 256 * 1024;
const MAX_CACHE: Duration = Duration::from_secs(24 * 3600);

/// Who the `sub` of a client JWT must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// `sub == iss == client_id` (client authentication).
    ClientId,
    /// Any non-empty subject (RFC 7523 §2.1 authorization grant: the member).
    Any,
}

/// A verified client JWT.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Value,
    pub sub: String,
    pub jti: String,
    /// Epoch seconds.
    pub exp: i64,
}

/// Fetches and caches `jwks_uri` key sets; verifies client JWTs.
pub struct ClientKeys {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, (Arc<Value>, Instant)>>,
    inserts: AtomicU64,
}

impl Default for ClientKeys {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientKeys {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client for jwks_uri");
        ClientKeys {
            http,
            cache: Mutex::new(HashMap::new()),
            inserts: AtomicU64::new(0),
        }
    }

    /// The key set at `uri`: from the cache while its `Cache-Control` allows, else fetched.
    async fn fetch(&self, uri: &str, refresh: bool) -> Result<Arc<Value>, String> {
        if !refresh
            && let Some((set, until)) = self
                .cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(uri)
            && Instant::now() < *until
        {
            return Ok(set.clone());
        }
        let resp = self
            .http
            .get(uri)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("cannot fetch the client's jwks_uri: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("the client's jwks_uri answered {}", resp.status()));
        }
        let max_age = resp
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(cache_lifetime);
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("cannot read the client's jwks_uri: {e}"))?;
        if bytes.len() > MAX_JWKS_BYTES {
            return Err("the client's JWK Set is too large".into());
        }
        let set: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the client's jwks_uri did not return JSON: {e}"))?;
        if !set.get("keys").is_some_and(Value::is_array) {
            return Err("the client's jwks_uri did not return a JWK Set".into());
        }
        let set = Arc::new(set);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match max_age {
            Some(age) if !age.is_zero() => {
                cache.insert(
                    uri.to_owned(),
                    (set.clone(), Instant::now() + age.min(MAX_CACHE)),
                );
            }
            _ => {
                cache.remove(uri);
            }
        }
        Ok(set)
    }

    /// Verifies a JWT the client signed: header rules, key resolution (SMART §2.3: `jku`
    /// must equal the registered `jwks_uri`; exactly one key with the `kid` and a `kty`
    /// consistent with `alg`), signature, `iss == client_id`, `sub` per `subject`, `aud` one
    /// of `audiences`, `exp` present and at most five minutes ahead, `nbf`, and `jti` not
    /// seen before for this client within its lifetime (recorded in the store, so replays
    /// are refused across processes).
    pub async fn verify(
        &self,
        store: &Store,
        client: &Client,
        jwt: &str,
        audiences: &[String],
        subject: Subject,
    ) -> Result<Verified, String> {
        let header = jsonwebtoken::decode_header(jwt).map_err(|e| format!("not a JWT: {e}"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(format!(
                "alg {:?} is not accepted (RS256, RS384, ES256, ES384)",
                header.alg
            ));
        }
        if let Some(typ) = &header.typ
            && !typ.eq_ignore_ascii_case("JWT")
        {
            return Err(format!("typ {typ:?} is not JWT"));
        }
        let kid = header
            .kid
            .as_deref()
            .filter(|k| !k.is_empty())
            .ok_or("the JWT header has no kid")?;
        if let Some(jku) = &header.jku
            && client.jwks_uri.as_deref() != Some(jku.as_str())
        {
            return Err("the jku header is not the client's registered jwks_uri".into());
        }
        let key = match (&client.jwks, &client.jwks_uri) {
            (Some(set), _) => select_key(set, kid, header.alg)?,
            (None, Some(uri)) => {
                let set = self.fetch(uri, false).await?;
                match select_key(&set, kid, header.alg) {
                    Ok(k) => k,
                    // a key rotated in since we cached the set: fetch once more
                    Err(_) => select_key(&*self.fetch(uri, true).await?, kid, header.alg)?,
                }
            }
            (None, None) => return Err("the client has no registered keys".into()),
        };
        let mut v = Validation::new(header.alg);
        v.leeway = SKEW_SECS as u64;
        v.validate_nbf = true;
        v.set_audience(audiences);
        v.set_issuer(&[client.client_id.as_str()]);
        if subject == Subject::ClientId {
            v.sub = Some(client.client_id.clone());
        }
        v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let data = jsonwebtoken::decode::<Value>(jwt, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => "signature does not verify".to_owned(),
                ErrorKind::ExpiredSignature => "the JWT has expired".to_owned(),
                ErrorKind::InvalidAudience => {
                    format!(
                        "aud must be the token endpoint URL {}",
                        audiences.join(" or ")
                    )
                }
                ErrorKind::InvalidIssuer => "iss must be the client_id".to_owned(),
                ErrorKind::InvalidSubject => "sub must be the client_id".to_owned(),
                ErrorKind::ImmatureSignature => "the JWT is not valid yet (nbf)".to_owned(),
                ErrorKind::MissingRequiredClaim(c) => format!("the JWT has no {c} claim"),
                _ => format!("invalid JWT: {e}"),
            }
        })?;
        let claims = data.claims;
        let now = chrono::Utc::now().timestamp();
        let exp = claims["exp"].as_i64().ok_or("exp must be a number")?;
        if exp > now + MAX_ASSERTION_SECS + SKEW_SECS {
            return Err("exp is more than five minutes in the future".into());
        }
        let sub = claims["sub"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or("sub must be a non-empty string")?
            .to_owned();
        let jti = claims["jti"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or("the JWT has no jti")?
            .to_owned();
        if !self
            .record_jti(store, &client.client_id, &jti, exp)
            .await
            .map_err(|e| {
                tracing::error!(target: "pdex::auth", error = %e, "cannot record a jti");
                "the server could not record the jti".to_owned()
            })?
        {
            return Err("this jti was already used: a JWT may be used once".into());
        }
        Ok(Verified {
            claims,
            sub,
            jti,
            exp,
        })
    }

    /// Records `jti` for `client_id`; false when it was already recorded (a replay).
    pub async fn record_jti(
        &self,
        store: &Store,
        client_id: &str,
        jti: &str,
        exp: i64,
    ) -> anyhow::Result<bool> {
        let mut tx = store.db.begin().await?;
        // every so often, forget the jtis whose assertions have expired
        if self.inserts.fetch_add(1, Ordering::Relaxed) % 256 == 0 {
            let cutoff = chrono::Utc::now().timestamp() - SKEW_SECS;
            tx.execute(
                "DELETE FROM auth_jti WHERE expires_at < ?",
                vec![SqlValue::from(cutoff)],
            )
            .await?;
            tx.execute(
                "DELETE FROM auth_revoked WHERE expires_at < ?",
                vec![SqlValue::from(cutoff)],
            )
            .await?;
        }
        let n = tx
            .execute(
                "INSERT INTO auth_jti (client_id, jti, expires_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                vec![
                    SqlValue::from(client_id),
                    SqlValue::from(jti),
                    SqlValue::from(exp),
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }
}

/// `max-age` of a `Cache-Control` value; `None` for `no-store` / `no-cache` / no max-age.
pub fn cache_lifetime(cc: &str) -> Option<Duration> {
    let mut age = None;
    for part in cc.split(',').map(str::trim) {
        let lower = part.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return None;
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            age = v
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

/// Does JWK `k` fit `alg` (SMART: `kty` consistent with `alg`; EC curve by alg)?
fn fits(k: &Value, alg: Algorithm) -> bool {
    let kty = k["kty"].as_str().unwrap_or_default();
    let crv = k["crv"].as_str().unwrap_or_default();
    let kind_ok = match alg {
        Algorithm::RS256 | Algorithm::RS384 => kty == "RSA",
        Algorithm::ES256 => kty == "EC" && crv == "P-256",
        Algorithm::ES384 => kty == "EC" && crv == "P-384",
        _ => false,
    };
    let alg_ok = k["alg"].as_str().is_none_or(|a| format!("{alg:?}") == a);
    let use_ok = k["use"].as_str().is_none_or(|u| u == "sig");
    kind_ok && alg_ok && use_ok
}

/// The one key of `set` with `kid` whose type fits `alg` ("If no keys match, or more than
/// one key matches, the verification fails").
pub fn select_key(set: &Value, kid: &str, alg: Algorithm) -> Result<DecodingKey, String> {
    let matching: Vec<&Value> = set["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["kid"].as_str() == Some(kid) && fits(k, alg))
        .collect();
    let k = match matching.as_slice() {
        [k] => *k,
        [] => {
            return Err(format!(
                "no registered key has kid {kid:?} and fits {alg:?}"
            ));
        }
        _ => return Err(format!("more than one registered key has kid {kid:?}")),
    };
    let s = |f: &str| k[f].as_str().unwrap_or_default();
    let key = match k["kty"].as_str() {
        Some("RSA") => DecodingKey::from_rsa_components(s("n"), s("e")),
        _ => DecodingKey::from_ec_components(s("x"), s("y")),
    };
    key.map_err(|e| format!("registered key {kid:?} is not usable: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control() {
        assert_eq!(cache_lifetime("max-age=60"), Some(Duration::from_secs(60)));
        assert_eq!(
            cache_lifetime("public, max-age=5"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(cache_lifetime("no-store, max-age=60"), None);
        assert_eq!(cache_lifetime("no-cache"), None);
        assert_eq!(cache_lifetime("public"), None);
    }

    #[test]
    fn key_must_fit_alg() {
        let set = serde_json::json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "a", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "b", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "c", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "c", "n": "AQAB", "e": "AQAB"},
        ]});
        assert!(select_key(&set, "a", Algorithm::ES384).is_err());
        assert!(select_key(&set, "a", Algorithm::RS256).is_err());
        assert!(select_key(&set, "b", Algorithm::RS384).is_ok());
        assert!(select_key(&set, "b", Algorithm::ES256).is_err());
        assert!(select_key(&set, "c", Algorithm::RS384).is_err());
        assert!(select_key(&set, "zz", Algorithm::RS384).is_err());
    }
}
