//! OpenID Connect id_tokens for the member's apps (SMART `sso-openid-connect`, OIDC Core
//! §2): signed RS256 with the server's RSA key (`keys`), `iss` = the OAuth issuer, `aud` =
//! the client_id, `sub` a stable pseudonymous id of the login, and SMART's `fhirUser` claim
//! (`Patient/{id}`) when the `fhirUser` scope was granted.

use super::server::AuthServer;
use jsonwebtoken::Header;
use serde_json::json;

/// What an id_token says.
pub struct IdTokenClaims<'a> {
    pub client_id: &'a str,
    pub username: &'a str,
    /// Included when the `fhirUser` scope was granted.
    pub fhir_user: Option<&'a str>,
    pub nonce: Option<&'a str>,
    /// Seconds.
    pub lifetime: u64,
}

/// The `sub` of a login: a digest of the username (stable, under 256 characters, and not the
/// username itself).
pub fn subject_of(username: &str) -> String {
    super::authorizations::digest(&format!("member-login:{username}"))[..32].to_owned()
}

/// Signs an id_token.
pub async fn mint(auth: &AuthServer, c: &IdTokenClaims<'_>) -> anyhow::Result<String> {
    let key = auth.keys.id_token_key().await?;
    let now = chrono::Utc::now().timestamp();
    let exp = now + c.lifetime as i64;
    let mut claims = json!({
        "iss": auth.settings.issuer(),
        "sub": subject_of(c.username),
        "aud": c.client_id,
        "iat": now,
        "exp": exp,
        "auth_time": now,
    });
    if let Some(u) = c.fhir_user {
        claims["fhirUser"] = json!(u);
    }
    if let Some(n) = c.nonce {
        claims["nonce"] = json!(n);
    }
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    let token = jsonwebtoken::encode(&header, &claims, &key.encoding)?;
    auth.keys.note_signed(&key.kid, exp * 1000).await?;
    Ok(token)
}
