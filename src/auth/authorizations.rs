//! What a member authorized, and the credentials issued on it: the `member_authorizations`
//! table (client, member, scopes, the sensitive-data choice), authorization codes
//! (`auth_codes`) and refresh tokens (`refresh_tokens`). Codes and refresh tokens are random
//! 256-bit values stored as SHA-256 digests only.
//!
//! Rules (SMART App Launch 2.2 `app-launch.md`, RFC 6749, RFC 7636, OAuth 2.0 Security BCP):
//! - a code is single use, expires after `--authorization-code-lifetime`, and is bound to the
//!   client, the redirect URI and the PKCE S256 challenge; a code presented a second time is
//!   refused and revokes the authorization, so the tokens issued from it die (RFC 6749
//!   §4.1.2: "the authorization server … SHOULD revoke (when possible) all tokens previously
//!   issued based on that authorization code");
//! - a refresh token is bound to its client, rotated on every use (the old one dead at once),
//!   and never carries more than the authorization's scopes; a rotated-out refresh token
//!   presented again is refused and revokes the authorization (BCP §4.14.2: refresh token
//!   replay detection);
//! - every access token from this flow names its authorization (`pdex_authorization`), which
//!   `auth::liveness` checks on each request.

use crate::identity::scopes;
use crate::store::{SqlValue, Store};
use base64::Engine;
use sha2::Digest;

/// A member's authorization of one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub id: String,
    pub client_id: String,
    pub username: String,
    pub fhir_user: String,
    pub patient_id: String,
    pub scopes: Vec<String>,
    pub allow_sensitive: bool,
    /// Epoch milliseconds.
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// What the member approved, to be recorded with its code.
pub struct Approval<'a> {
    pub client_id: &'a str,
    pub username: &'a str,
    pub fhir_user: &'a str,
    pub patient_id: &'a str,
    pub scopes: &'a [String],
    pub allow_sensitive: bool,
    pub redirect_uri: &'a str,
    pub code_challenge: &'a str,
    pub nonce: Option<&'a str>,
    /// Seconds.
    pub code_lifetime: u64,
}

/// A redeemed code: the authorization and the OpenID Connect `nonce` of its request.
pub struct Redeemed {
    pub authorization: Authorization,
    pub nonce: Option<String>,
}

/// A refresh token exchanged: the authorization and the scopes the old token carried.
pub struct Refreshed {
    pub authorization: Authorization,
    pub scopes: Vec<String>,
}

/// `Ok(Err(why))`: the grant is refused (`invalid_grant`, the text for the client);
/// `Err`: the store failed.
pub type Checked<T> = anyhow::Result<Result<T, String>>;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A fresh random secret: 32 bytes, base64url.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 (hex) of a secret, as stored.
pub fn digest(secret: &str) -> String {
    sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// RFC 7636 §4.2 S256: `BASE64URL(SHA256(ASCII(code_verifier))) == code_challenge`, with a
/// verifier of 43 to 128 unreserved characters (§4.1).
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    well_formed
        && base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()))
            == challenge
}

/// Is `challenge` an S256 code challenge (43 base64url characters, RFC 7636 §4.2)?
pub fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

const AUTHORIZATION_COLUMNS: &str = "id, client_id, username, fhir_user, patient_id, scopes, allow_sensitive, created_at, revoked_at";

fn authorization_of(r: &crate::store::db::Row) -> anyhow::Result<Authorization> {
    Ok(Authorization {
        id: r.text(0)?,
        client_id: r.text(1)?,
        username: r.text(2)?,
        fhir_user: r.text(3)?,
        patient_id: r.text(4)?,
        scopes: scopes::split(&r.text(5)?),
        allow_sensitive: r.flag(6)?,
        created_at: r.int(7)?,
        revoked_at: r.opt_int(8)?,
    })
}

/// One authorization by id.
pub async fn get(store: &Store, id: &str) -> anyhow::Result<Option<Authorization>> {
    let rows = store
        .db
        .fetch(
            &format!("SELECT {AUTHORIZATION_COLUMNS} FROM member_authorizations WHERE id = ?"),
            &[SqlValue::from(id)],
        )
        .await?;
    rows.first().map(authorization_of).transpose()
}

/// What `username` has authorized and not revoked, newest first (the account page).
pub async fn list_active(store: &Store, username: &str) -> anyhow::Result<Vec<Authorization>> {
    let rows = store
        .db
        .fetch(
            &format!(
                "SELECT {AUTHORIZATION_COLUMNS} FROM member_authorizations WHERE username = ? AND revoked_at IS NULL ORDER BY created_at DESC, id"
            ),
            &[SqlValue::from(username)],
        )
        .await?;
    rows.iter().map(authorization_of).collect()
}

/// Records the member's approval and returns the authorization code for it.
pub async fn approve(store: &Store, a: &Approval<'_>) -> anyhow::Result<String> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let code = new_secret();
    let now = now_ms();
    let mut tx = store.db.begin().await?;
    tx.execute(
        "INSERT INTO member_authorizations (id, client_id, username, fhir_user, patient_id, scopes, allow_sensitive, created_at) VALUES (?,?,?,?,?,?,?,?)",
        vec![
            SqlValue::from(&id),
            SqlValue::from(a.client_id),
            SqlValue::from(a.username),
            SqlValue::from(a.fhir_user),
            SqlValue::from(a.patient_id),
            SqlValue::from(a.scopes.join(" ")),
            SqlValue::from(a.allow_sensitive),
            SqlValue::from(now),
        ],
    )
    .await?;
    tx.execute(
        "INSERT INTO auth_codes (code_hash, authorization_id, client_id, redirect_uri, code_challenge, nonce, expires_at) VALUES (?,?,?,?,?,?,?)",
        vec![
            SqlValue::from(digest(&code)),
            SqlValue::from(&id),
            SqlValue::from(a.client_id),
            SqlValue::from(a.redirect_uri),
            SqlValue::from(a.code_challenge),
            SqlValue::from(a.nonce.map(str::to_owned)),
            SqlValue::from(now + a.code_lifetime as i64 * 1000),
        ],
    )
    .await?;
    // spent codes are kept a day (so that a replay is recognised and revokes), then dropped
    tx.execute(
        "DELETE FROM auth_codes WHERE expires_at < ?",
        vec![SqlValue::from(now - 86_400_000)],
    )
    .await?;
    tx.commit().await?;
    Ok(code)
}

/// Revokes an authorization: its access and refresh tokens stop working at once.
pub async fn revoke(store: &Store, id: &str) -> anyhow::Result<bool> {
    let mut tx = store.db.begin().await?;
    let n = tx
        .execute(
            "UPDATE member_authorizations SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            vec![SqlValue::from(now_ms()), SqlValue::from(id)],
        )
        .await?;
    tx.commit().await?;
    Ok(n > 0)
}

/// Redeems an authorization code for `client_id` (RFC 6749 §4.1.3, RFC 7636 §4.6). The code
/// is spent by the first attempt whatever its outcome; a spent code revokes its
/// authorization.
pub async fn redeem_code(
    store: &Store,
    code: &str,
    client_id: &str,
    redirect_uri: Option<&str>,
    verifier: Option<&str>,
) -> Checked<Redeemed> {
    let hash = digest(code);
    let now = now_ms();
    let mut tx = store.db.begin().await?;
    let claimed = tx
        .execute(
            "UPDATE auth_codes SET used_at = ? WHERE code_hash = ? AND used_at IS NULL",
            vec![SqlValue::from(now), SqlValue::from(&hash)],
        )
        .await?;
    tx.commit().await?;
    let rows = store
        .db
        .fetch(
            "SELECT authorization_id, client_id, redirect_uri, code_challenge, nonce, expires_at FROM auth_codes WHERE code_hash = ?",
            &[SqlValue::from(&hash)],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(Err("the authorization code is not valid".into()));
    };
    let authorization_id = row.text(0)?;
    if claimed == 0 {
        revoke(store, &authorization_id).await?;
        tracing::warn!(target: "pdex::auth", authorization = %authorization_id, "an authorization code was presented twice: its authorization is revoked");
        return Ok(Err(
            "the authorization code was already used; the tokens issued from it are revoked".into(),
        ));
    }
    if row.int(5)? < now {
        return Ok(Err("the authorization code has expired".into()));
    }
    if row.text(1)? != client_id {
        return Ok(Err(
            "the authorization code was issued to another client".into()
        ));
    }
    if redirect_uri != Some(row.text(2)?.as_str()) {
        return Ok(Err(
            "redirect_uri must be the one of the authorization request".into(),
        ));
    }
    let Some(verifier) = verifier else {
        return Ok(Err("code_verifier is required (PKCE)".into()));
    };
    if !pkce_matches(verifier, &row.text(3)?) {
        return Ok(Err("code_verifier does not match the code_challenge".into()));
    }
    let nonce = row.opt_text(4)?;
    match get(store, &authorization_id).await? {
        Some(a) if a.revoked_at.is_none() => Ok(Ok(Redeemed {
            authorization: a,
            nonce,
        })),
        _ => Ok(Err("the authorization was revoked".into())),
    }
}

/// Issues a refresh token on `authorization` carrying `scopes`, valid for `lifetime`
/// seconds.
pub async fn issue_refresh_token(
    store: &Store,
    authorization: &Authorization,
    scopes: &[String],
    lifetime: u64,
) -> anyhow::Result<String> {
    let token = new_secret();
    let now = now_ms();
    let mut tx = store.db.begin().await?;
    tx.execute(
        "INSERT INTO refresh_tokens (token_hash, authorization_id, client_id, scopes, expires_at) VALUES (?,?,?,?,?)",
        vec![
            SqlValue::from(digest(&token)),
            SqlValue::from(&authorization.id),
            SqlValue::from(&authorization.client_id),
            SqlValue::from(scopes.join(" ")),
            SqlValue::from(now + lifetime as i64 * 1000),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(token)
}

/// The client a refresh token was issued to (a public client may leave `client_id` out of
/// its refresh request).
pub async fn refresh_token_client(store: &Store, token: &str) -> anyhow::Result<Option<String>> {
    let rows = store
        .db
        .fetch(
            "SELECT client_id FROM refresh_tokens WHERE token_hash = ?",
            &[SqlValue::from(digest(token))],
        )
        .await?;
    rows.first().map(|r| r.text(0)).transpose()
}

/// Spends a refresh token presented by `client_id` (SMART: "bound to the same client_id");
/// the caller issues its successor.
pub async fn use_refresh_token(store: &Store, token: &str, client_id: &str) -> Checked<Refreshed> {
    let hash = digest(token);
    let rows = store
        .db
        .fetch(
            "SELECT authorization_id, client_id, scopes, expires_at FROM refresh_tokens WHERE token_hash = ?",
            &[SqlValue::from(&hash)],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(Err("the refresh token is not valid".into()));
    };
    let authorization_id = row.text(0)?;
    if row.text(1)? != client_id {
        return Ok(Err("the refresh token was issued to another client".into()));
    }
    let now = now_ms();
    let mut tx = store.db.begin().await?;
    let claimed = tx
        .execute(
            "UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL",
            vec![SqlValue::from(now), SqlValue::from(&hash)],
        )
        .await?;
    tx.commit().await?;
    if claimed == 0 {
        revoke(store, &authorization_id).await?;
        tracing::warn!(target: "pdex::auth", authorization = %authorization_id, "a rotated-out refresh token was presented: its authorization is revoked");
        return Ok(Err(
            "the refresh token was already used (each is good once; use the newest)".into(),
        ));
    }
    if row.int(3)? < now {
        return Ok(Err("the refresh token has expired".into()));
    }
    let scopes = scopes::split(&row.text(2)?);
    match get(store, &authorization_id).await? {
        Some(a) if a.revoked_at.is_none() => Ok(Ok(Refreshed {
            authorization: a,
            scopes,
        })),
        _ => Ok(Err("the authorization was revoked".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        // RFC 7636 Appendix B
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge));
        assert!(is_s256_challenge(challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXx",
            challenge
        ));
        // too short a verifier never matches
        assert!(!pkce_matches("abc", challenge));
        assert!(!is_s256_challenge("plain-challenge"));
    }
}
