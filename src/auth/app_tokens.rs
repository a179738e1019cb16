//! The token endpoint's grants for the member's apps (SMART App Launch 2.2 §"Obtain access
//! token", §"Refresh access token"): `authorization_code` (with PKCE) and `refresh_token`.
//! The client is a public client (PKCE only, `client_id` in the body), a confidential
//! symmetric one (`client_secret_basic`) or a confidential asymmetric one
//! (`private_key_jwt`); the codes and refresh tokens themselves are `authorizations`.
//!
//! The access token reads the authorizing member's compartment (`patient`) with the member's
//! sensitive-data choice; its kind is the client's, so a `payer` client that came through
//! this flow gets the payer-to-payer release rules and a member's app the Patient Access ones
//! (`store::release`).

use super::access_token::{self, Grant};
use super::authorizations::{self, Authorization};
use super::clients::Client;
use super::server::AuthServer;
use super::token::{Form, OAuthError, oauth_json};
use crate::identity::{ClientCertificate, scopes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

/// A refresh token for `offline_access` lasts this long (seconds): 90 days.
pub const OFFLINE_REFRESH_LIFETIME: u64 = 90 * 24 * 3600;
/// A refresh token for `online_access` only lasts this long (seconds): 8 hours.
pub const ONLINE_REFRESH_LIFETIME: u64 = 8 * 3600;

/// Does `client` authenticate at all (a secret, keys or a certificate)? If not it is a
/// public client, identified by `client_id` alone and protected by PKCE.
pub fn is_public(client: &Client) -> bool {
    client.auth_methods().is_empty()
}

/// `grant_type=authorization_code` or `refresh_token`.
pub async fn exchange(
    auth: &AuthServer,
    headers: &HeaderMap,
    form: &Form,
    cert: Option<&ClientCertificate>,
    grant_type: &str,
) -> Result<Response, OAuthError> {
    let client = authenticate(auth, headers, form, cert).await?;
    if !client.grant_types.iter().any(|g| g == "authorization_code") {
        return Err(OAuthError::unauthorized_client(
            "this client is not registered for the authorization_code grant",
        ));
    }
    let cnf = cert.map(|c| c.thumbprint.clone());
    if grant_type == "authorization_code" {
        by_code(auth, &client, form, cnf).await
    } else {
        by_refresh_token(auth, &client, form, cnf).await
    }
}

/// Client authentication for these grants: a confidential client authenticates as at every
/// grant (`token::authenticate_client`); a public one names itself with `client_id` (for a
/// refresh, the refresh token's own client when `client_id` is left out).
async fn authenticate(
    auth: &AuthServer,
    headers: &HeaderMap,
    form: &Form,
    cert: Option<&ClientCertificate>,
) -> Result<Client, OAuthError> {
    if form.get("udap") == Some("1") {
        // a UDAP app (consumer-facing): its x5c client assertion, no hl7-b2b extension
        return super::token::udap_client(auth, form, cert, false).await;
    }
    let presents_credentials = headers.contains_key(axum::http::header::AUTHORIZATION)
        || form.get("client_assertion").is_some()
        || form.get("client_assertion_type").is_some();
    if presents_credentials {
        let audiences = auth.settings.token_audiences();
        return super::token::authenticate_client(auth, headers, form, cert, &audiences).await;
    }
    let client_id = match (form.get("client_id"), form.get("refresh_token")) {
        (Some(id), _) => id.to_owned(),
        (None, Some(token)) => authorizations::refresh_token_client(&auth.store, token)
            .await?
            .ok_or_else(|| OAuthError::invalid_grant("the refresh token is not valid"))?,
        (None, None) => {
            return Err(OAuthError::invalid_client(
                "client_id is required (public clients), or client authentication",
            ));
        }
    };
    let client = super::token::active_client(auth, &client_id).await?;
    if !is_public(&client) {
        return Err(OAuthError::invalid_client(format!(
            "this client is confidential: authenticate with {}",
            client.auth_methods().join(" or ")
        )));
    }
    Ok(client)
}

async fn by_code(
    auth: &AuthServer,
    client: &Client,
    form: &Form,
    cnf: Option<String>,
) -> Result<Response, OAuthError> {
    let code = form
        .get("code")
        .ok_or_else(|| OAuthError::invalid_request("code is required"))?;
    let redeemed = authorizations::redeem_code(
        &auth.store,
        code,
        &client.client_id,
        form.get("redirect_uri"),
        form.get("code_verifier"),
    )
    .await?
    .map_err(OAuthError::invalid_grant)?;
    let a = &redeemed.authorization;
    let mut body = issue(auth, client, a, &a.scopes, cnf).await?;
    if let Some(refresh) = refresh_lifetime(&a.scopes) {
        let token = authorizations::issue_refresh_token(&auth.store, a, &a.scopes, refresh).await?;
        body["refresh_token"] = json!(token);
    }
    if a.scopes.iter().any(|s| s == "openid") {
        let fhir_user = a.scopes.iter().any(|s| s == "fhirUser");
        let id_token = super::id_token::mint(
            auth,
            &super::id_token::IdTokenClaims {
                client_id: &client.client_id,
                username: &a.username,
                fhir_user: fhir_user.then_some(a.fhir_user.as_str()),
                nonce: redeemed.nonce.as_deref(),
                lifetime: auth.settings.token_lifetime,
            },
        )
        .await?;
        body["id_token"] = json!(id_token);
    }
    tracing::info!(target: "pdex::audit", client_id = %client.client_id, authorization = %a.id, "authorization code exchanged");
    Ok(oauth_json(StatusCode::OK, &body))
}

async fn by_refresh_token(
    auth: &AuthServer,
    client: &Client,
    form: &Form,
    cnf: Option<String>,
) -> Result<Response, OAuthError> {
    let token = form
        .get("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
    let refreshed = authorizations::use_refresh_token(&auth.store, token, &client.client_id)
        .await?
        .map_err(OAuthError::invalid_grant)?;
    // SMART: a requested scope "must be a strict sub-set of the scopes granted in the
    // original launch"; none → the same scopes
    let access_scopes = match form.get("scope").map(scopes::split) {
        Some(asked) => {
            if let Some(extra) = asked.iter().find(|s| !refreshed.scopes.contains(s)) {
                return Err(OAuthError::invalid_scope(format!(
                    "{extra:?} was not granted in the original authorization"
                )));
            }
            asked
        }
        None => refreshed.scopes.clone(),
    };
    let a = &refreshed.authorization;
    // a representative's authority is checked again: a guardianship or power of attorney
    // that has ended since the authorization ends its refreshes too (§pdex-114)
    if a.fhir_user.starts_with("RelatedPerson/") {
        let still = match super::logins::get(&auth.store, &a.username).await? {
            Some(login) => super::logins::acts_for(&auth.store, &login)
                .await?
                .iter()
                .any(|s| s.patient_id == a.patient_id),
            None => false,
        };
        if !still {
            authorizations::revoke(&auth.store, &a.id).await?;
            return Err(OAuthError::invalid_grant(
                "the representative may no longer act for this member",
            ));
        }
    }
    let mut body = issue(auth, client, a, &access_scopes, cnf).await?;
    // rotation: a new refresh token with the authorization's scopes, the old one spent
    if let Some(lifetime) = refresh_lifetime(&refreshed.scopes) {
        let next = authorizations::issue_refresh_token(&auth.store, a, &refreshed.scopes, lifetime)
            .await?;
        body["refresh_token"] = json!(next);
    }
    tracing::info!(target: "pdex::audit", client_id = %client.client_id, authorization = %a.id, "access token refreshed");
    Ok(oauth_json(StatusCode::OK, &body))
}

/// `offline_access` or `online_access` granted: how long a refresh token lasts.
fn refresh_lifetime(granted: &[String]) -> Option<u64> {
    let has = |s: &str| granted.iter().any(|g| g == s);
    if has("offline_access") {
        Some(OFFLINE_REFRESH_LIFETIME)
    } else if has("online_access") {
        Some(ONLINE_REFRESH_LIFETIME)
    } else {
        None
    }
}

/// Mints the access token of `authorization` with `granted` scopes; the token response body
/// without refresh or id token.
async fn issue(
    auth: &AuthServer,
    client: &Client,
    authorization: &Authorization,
    granted: &[String],
    cnf: Option<String>,
) -> Result<serde_json::Value, OAuthError> {
    let grant = Grant {
        client_id: client.client_id.clone(),
        kind: client.kind,
        organization: client.organization.clone(),
        scopes: granted.to_vec(),
        patient: Some(authorization.patient_id.clone()),
        allow_sensitive: authorization.allow_sensitive,
        consent_id: None,
        authorization_id: Some(authorization.id.clone()),
        cnf,
        lifetime: auth.settings.token_lifetime,
    };
    let issued = access_token::mint(auth, &grant).await?;
    Ok(json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": granted.join(" "),
        "patient": authorization.patient_id,
        "need_patient_banner": true,
    }))
}
