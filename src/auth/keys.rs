//! The server's own signing keys: generated on first start and kept in the store
//! (`auth_signing_keys`), rotated with `pdex keys rotate`. Two kinds, one row each per
//! generation: ECDSA P-256 (ES256) signs access tokens, RSA 2048 (RS256) signs OpenID Connect
//! id_tokens (SMART `sso-openid-connect`: "SHALL support Signing ID Tokens with RSA
//! SHA-256"). The newest unretired key of an algorithm signs; a retired key stays in the JWKS
//! (`jwks_uri`) and is still accepted until every token it signed has expired (retirement
//! time + token lifetime).
//!
//! Keys are generated with aws-lc-rs and stored as PKCS#8 DER (base64).
//! Nothing is cached across a rotation: the signing key is looked up per issued token, and
//! an unknown `kid` makes the verifier reload, so a rotation in another process on the same
//! database takes effect at once.

use crate::store::{SqlValue, Store};
use anyhow::Context;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// One server key, ready to sign and verify.
pub struct ServerKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    pub public_jwk: Value,
    /// Epoch milliseconds.
    pub created_at: i64,
    pub retired_at: Option<i64>,
    /// Epoch milliseconds: no token it signed expires later (`signed_until`).
    pub signed_until: Option<i64>,
}

/// Summary of a stored key (for `pdex keys list`).
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn new_kid() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

/// A fresh key of `alg` (ES256 or RS256): (kid, PKCS#8 DER, public JWK).
fn new_key(alg: Algorithm) -> anyhow::Result<(String, Vec<u8>, Value)> {
    match alg {
        Algorithm::ES256 => new_es256(),
        Algorithm::RS256 => new_rs256(),
        other => anyhow::bail!("no server keys of alg {other:?}"),
    }
}

/// A fresh RS256 key (2048 bits): (kid, PKCS#8 DER, public JWK).
fn new_rs256() -> anyhow::Result<(String, Vec<u8>, Value)> {
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|_| anyhow::anyhow!("cannot generate an RSA key"))?;
    let der: aws_lc_rs::encoding::Pkcs8V1Der = pair
        .as_der()
        .map_err(|_| anyhow::anyhow!("cannot encode the RSA key"))?;
    let der = der.as_ref().to_vec();
    let kid = new_kid();
    let jwk = rsa_public_jwk(&der, &kid)?;
    Ok((kid, der, jwk))
}

/// The PEM text of a PKCS#8 DER private key (jsonwebtoken reads RSA keys from PEM).
fn pkcs8_pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

fn rsa_encoding_key(der: &[u8]) -> anyhow::Result<EncodingKey> {
    EncodingKey::from_rsa_pem(pkcs8_pem(der).as_bytes()).context("an unreadable RSA key")
}

/// The public JWK of an RSA private key (PKCS#8 DER).
fn rsa_public_jwk(der: &[u8], kid: &str) -> anyhow::Result<Value> {
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&rsa_encoding_key(der)?, Algorithm::RS256)
        .context("cannot derive the RSA public key")?;
    let mut v = serde_json::to_value(jwk)?;
    let out = json!({
        "kty": "RSA",
        "n": v["n"].take(),
        "e": v["e"].take(),
        "kid": kid,
        "alg": "RS256",
        "use": "sig",
    });
    anyhow::ensure!(
        out["n"].is_string() && out["e"].is_string(),
        "RSA JWK without n/e"
    );
    Ok(out)
}

/// A fresh ES256 key: (kid, PKCS#8 DER, public JWK).
fn new_es256() -> anyhow::Result<(String, Vec<u8>, Value)> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("cannot generate a P-256 key"))?;
    let der = doc.as_ref().to_vec();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
        .map_err(|e| anyhow::anyhow!("generated key rejected: {e}"))?;
    let kid = new_kid();
    let jwk = ec_public_jwk(pair.public_key().as_ref(), "P-256", &kid, "ES256")?;
    Ok((kid, der, jwk))
}

/// The public JWK of an uncompressed EC point (`0x04 || x || y`).
pub fn ec_public_jwk(point: &[u8], crv: &str, kid: &str, alg: &str) -> anyhow::Result<Value> {
    anyhow::ensure!(
        point.first() == Some(&4) && point.len() % 2 == 1,
        "not an uncompressed EC point"
    );
    let half = (point.len() - 1) / 2;
    Ok(json!({
        "kty": "EC",
        "crv": crv,
        "x": URL_SAFE_NO_PAD.encode(&point[1..1 + half]),
        "y": URL_SAFE_NO_PAD.encode(&point[1 + half..]),
        "kid": kid,
        "alg": alg,
        "use": "sig",
    }))
}

fn load_key(row: crate::store::db::Row) -> anyhow::Result<ServerKey> {
    let kid = row.text(0)?;
    let alg = row.text(1)?;
    let private = row.text(2)?;
    let jwk: Value = serde_json::from_str(&row.text(3)?)
        .with_context(|| format!("signing key {kid}: bad public JWK"))?;
    let created_at = row.int(4)?;
    let retired_at = row.opt_int(5)?;
    let signed_until = row.opt_int(6)?;
    let der = STANDARD
        .decode(private)
        .with_context(|| format!("signing key {kid}: bad base64"))?;
    let text = |f: &str| jwk[f].as_str().unwrap_or_default();
    let (alg, encoding, decoding) = match alg.as_str() {
        "ES256" => (
            Algorithm::ES256,
            EncodingKey::from_ec_der(&der),
            DecodingKey::from_ec_components(text("x"), text("y")),
        ),
        "RS256" => (
            Algorithm::RS256,
            rsa_encoding_key(&der).with_context(|| format!("signing key {kid}"))?,
            DecodingKey::from_rsa_components(text("n"), text("e")),
        ),
        other => anyhow::bail!("signing key {kid}: unsupported alg {other:?}"),
    };
    Ok(ServerKey {
        encoding,
        decoding: decoding.with_context(|| format!("signing key {kid}: bad public key"))?,
        kid,
        alg,
        public_jwk: jwk,
        created_at,
        retired_at,
        signed_until,
    })
}

const KEY_COLUMNS: &str = "kid, alg, private_key, public_jwk, created_at, retired_at, signed_until";

/// The algorithms the server signs with: access tokens, then id_tokens.
pub const SERVER_ALGORITHMS: [Algorithm; 2] = [Algorithm::ES256, Algorithm::RS256];

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::RS256 => "RS256",
        _ => "ES256",
    }
}

async fn insert_new(
    tx: &mut Box<dyn crate::store::db::Transaction>,
    alg: Algorithm,
) -> anyhow::Result<String> {
    let (kid, der, jwk) = new_key(alg)?;
    tx.execute(
        // retired_at stays NULL (a typeless NULL parameter would be text on Postgres)
        "INSERT INTO auth_signing_keys (kid, alg, private_key, public_jwk, created_at) VALUES (?,?,?,?,?)",
        vec![
            SqlValue::from(&kid),
            SqlValue::from(alg_name(alg)),
            SqlValue::from(STANDARD.encode(der)),
            SqlValue::from(jwk.to_string()),
            SqlValue::from(now_ms()),
        ],
    )
    .await?;
    Ok(kid)
}

/// Makes sure a signing key of each algorithm exists (first start); returns the current
/// access-token (ES256) key id.
pub async fn ensure_signing_key(store: &Store) -> anyhow::Result<String> {
    let kid = ensure_key(store, Algorithm::ES256).await?;
    ensure_key(store, Algorithm::RS256).await?;
    Ok(kid)
}

/// The current key id of `alg`, generating the key if there is none.
async fn ensure_key(store: &Store, alg: Algorithm) -> anyhow::Result<String> {
    if let Some(kid) = current_kid(store, alg).await? {
        return Ok(kid);
    }
    let mut tx = store.db.begin().await?;
    let kid = insert_new(&mut tx, alg).await?;
    tx.commit().await?;
    tracing::info!(target: "pdex::auth", kid, alg = alg_name(alg), "generated a server signing key");
    Ok(kid)
}

/// Retires every current key and makes new ones (one per algorithm) the signing keys.
/// Retired keys stay published until their tokens have expired. Returns the new
/// access-token key id.
pub async fn rotate(store: &Store) -> anyhow::Result<String> {
    let mut tx = store.db.begin().await?;
    tx.execute(
        "UPDATE auth_signing_keys SET retired_at = ? WHERE retired_at IS NULL",
        vec![SqlValue::from(now_ms())],
    )
    .await?;
    let kid = insert_new(&mut tx, Algorithm::ES256).await?;
    insert_new(&mut tx, Algorithm::RS256).await?;
    tx.commit().await?;
    tracing::info!(target: "pdex::auth", kid, "rotated the server signing keys");
    Ok(kid)
}

/// Every stored key, newest first.
pub async fn list(store: &Store) -> anyhow::Result<Vec<KeyInfo>> {
    let rows = store
        .db
        .fetch(
            "SELECT kid, alg, created_at, retired_at FROM auth_signing_keys ORDER BY created_at DESC, kid",
            &[],
        )
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(KeyInfo {
                kid: r.text(0)?,
                alg: r.text(1)?,
                created_at: r.int(2)?,
                retired_at: r.opt_int(3)?,
            })
        })
        .collect()
}

async fn current_kid(store: &Store, alg: Algorithm) -> anyhow::Result<Option<String>> {
    let rows = store
        .db
        .fetch(
            "SELECT kid FROM auth_signing_keys WHERE retired_at IS NULL AND alg = ? ORDER BY created_at DESC, kid LIMIT 1",
            &[SqlValue::from(alg_name(alg))],
        )
        .await?;
    rows.first().map(|r| r.text(0)).transpose()
}

/// The server's keys as the token issuer and the resource server use them.
pub struct KeyRing {
    store: Store,
    /// How long a retired key stays valid at least: this process's token lifetime plus
    /// clock skew (keys that signed longer-lived tokens stay until `signed_until`).
    grace_ms: i64,
    cache: RwLock<Cache>,
    /// The `signed_until` this process last wrote per key (to write at most once a step).
    recorded: std::sync::Mutex<HashMap<String, i64>>,
}

/// Clock skew allowed past a token's `exp`.
const SKEW_MS: i64 = 60_000;

/// `signed_until` is written rounded up to this step, so that a busy token endpoint writes
/// it about once per step and key, not once per token.
const RECORD_STEP_MS: i64 = 300_000;

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Arc<ServerKey>>,
    loaded: Option<std::time::Instant>,
}

/// How long the verifier trusts its copy of the key table before re-reading it (another
/// process may have rotated; a retired key stays valid far longer than this).
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl KeyRing {
    pub fn new(store: Store, token_lifetime_secs: u64) -> Self {
        KeyRing {
            store,
            grace_ms: token_lifetime_secs as i64 * 1000 + SKEW_MS,
            cache: RwLock::new(Cache::default()),
            recorded: Default::default(),
        }
    }

    /// Records that `kid` signed a token expiring at `exp_ms`, before the token is handed
    /// out: the key then stays published and accepted until that token has expired, even
    /// if it is retired first (`pdex keys rotate` in another process).
    pub async fn note_signed(&self, kid: &str, exp_ms: i64) -> anyhow::Result<()> {
        let covered = |m: &HashMap<String, i64>| m.get(kid).is_some_and(|&t| t >= exp_ms);
        if covered(&self.recorded.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(());
        }
        let mark = (exp_ms / RECORD_STEP_MS + 1) * RECORD_STEP_MS;
        let mut tx = self.store.db.begin().await?;
        tx.execute(
            "UPDATE auth_signing_keys SET signed_until = ? WHERE kid = ? AND (signed_until IS NULL OR signed_until < ?)",
            vec![SqlValue::Int(mark), SqlValue::from(kid), SqlValue::Int(mark)],
        )
        .await?;
        tx.commit().await?;
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        let entry = recorded.entry(kid.to_owned()).or_insert(mark);
        *entry = (*entry).max(mark);
        Ok(())
    }

    async fn reload(&self) -> anyhow::Result<()> {
        let rows = self
            .store
            .db
            .fetch(&format!("SELECT {KEY_COLUMNS} FROM auth_signing_keys"), &[])
            .await?;
        let mut map = HashMap::new();
        for row in rows {
            let key = load_key(row)?;
            map.insert(key.kid.clone(), Arc::new(key));
        }
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = Cache {
            keys: map,
            loaded: Some(std::time::Instant::now()),
        };
        Ok(())
    }

    fn cached(&self, kid: &str) -> Option<Arc<ServerKey>> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .get(kid)
            .cloned()
    }

    fn fresh(&self) -> bool {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .loaded
            .is_some_and(|t| t.elapsed() < CACHE_TTL)
    }

    /// The key that signs new access tokens (generated if the store has none).
    pub async fn signing_key(&self) -> anyhow::Result<Arc<ServerKey>> {
        self.current(Algorithm::ES256).await
    }

    /// The key that signs OpenID Connect id_tokens (RS256).
    pub async fn id_token_key(&self) -> anyhow::Result<Arc<ServerKey>> {
        self.current(Algorithm::RS256).await
    }

    async fn current(&self, alg: Algorithm) -> anyhow::Result<Arc<ServerKey>> {
        let kid = ensure_key(&self.store, alg).await?;
        if let Some(k) = self.cached(&kid).filter(|k| k.retired_at.is_none()) {
            return Ok(k);
        }
        self.reload().await?;
        self.cached(&kid)
            .ok_or_else(|| anyhow::anyhow!("signing key {kid} vanished"))
    }

    /// A current key, or a retired one until the last token it signed has expired (and at
    /// least this process's token lifetime after retirement).
    fn usable(&self, key: &ServerKey) -> bool {
        key.retired_at.is_none_or(|t| {
            let until = (t + self.grace_ms).max(key.signed_until.map_or(0, |s| s + SKEW_MS));
            until > now_ms()
        })
    }

    /// The key `kid` if it may still verify tokens.
    pub async fn verification_key(&self, kid: &str) -> anyhow::Result<Option<Arc<ServerKey>>> {
        let key = match self.cached(kid) {
            // a retired key our copy calls spent may have signed later tokens since: re-read
            Some(k) if self.fresh() && self.usable(&k) => Some(k),
            // unknown kid (a rotation elsewhere) or a stale copy: re-read the table
            _ => {
                self.reload().await?;
                self.cached(kid)
            }
        };
        Ok(key.filter(|k| self.usable(k)))
    }

    /// The public JWK Set (`jwks_uri`): every key that may still verify a token.
    pub async fn jwks(&self) -> anyhow::Result<Value> {
        self.reload().await?;
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let mut keys: Vec<&Arc<ServerKey>> =
            cache.keys.values().filter(|k| self.usable(k)).collect();
        keys.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.kid.cmp(&b.kid)));
        Ok(json!({"keys": keys.iter().map(|k| k.public_jwk.clone()).collect::<Vec<_>>()}))
    }
}
