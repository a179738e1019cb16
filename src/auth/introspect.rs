//! Token introspection (RFC 7662) and revocation (RFC 7009).
//!
//! Both require an authenticated caller. Introspection accepts either a bearer access token
//! of any active client (how resource servers and Inferno call it) or client authentication
//! as at the token endpoint; revocation takes client authentication (RFC 7009 §2.1). A
//! caller learns about, and may revoke, only tokens issued to itself — `admin` clients any.

use super::access_token;
use super::server::{AuthFailure, AuthServer};
use super::token::{OAuthError, authenticate_client, oauth_json, read_form};
use crate::identity::ClientKind;
use crate::store::SqlValue;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;

/// Who is calling: (client_id, kind).
async fn caller(
    auth: &AuthServer,
    headers: &axum::http::HeaderMap,
    cert: Option<&crate::identity::ClientCertificate>,
    form: &super::token::Form,
    endpoint_url: String,
    allow_bearer: bool,
) -> Result<(String, ClientKind), OAuthError> {
    let unauthorized =
        |d: String| OAuthError::invalid_client(d).with_status(StatusCode::UNAUTHORIZED);
    if allow_bearer
        && headers.contains_key(axum::http::header::AUTHORIZATION)
        && super::token::basic_credentials(headers).is_none()
    {
        return match auth.authenticate(headers, cert).await {
            Ok(ctx) => Ok((ctx.client_id.unwrap_or_default(), ctx.kind)),
            Err(AuthFailure::Internal) => Err(OAuthError::server_error()),
            Err(AuthFailure::Unavailable) => Err(OAuthError::temporarily_unavailable()),
            Err(AuthFailure::Missing) => Err(unauthorized("authentication required".into())),
            Err(AuthFailure::Invalid(why)) => Err(unauthorized(format!("caller's token: {why}"))),
        };
    }
    let mut audiences = auth.settings.token_audiences();
    audiences.push(endpoint_url);
    let client = authenticate_client(auth, headers, form, cert, &audiences)
        .await
        .map_err(|e| match e.status {
            StatusCode::INTERNAL_SERVER_ERROR => e,
            _ => e.with_status(StatusCode::UNAUTHORIZED),
        })?;
    Ok((client.client_id, client.kind))
}

/// What both endpoints read first: the form, the authenticated caller (client id, kind) and
/// the `token` they ask about.
struct TokenRequest {
    caller_id: String,
    caller_kind: ClientKind,
    token: String,
}

async fn token_request(
    auth: &AuthServer,
    req: Request,
    endpoint_url: String,
    allow_bearer: bool,
) -> Result<TokenRequest, OAuthError> {
    let (parts, body) = req.into_parts();
    let cert = parts
        .extensions
        .get::<crate::identity::ClientCertificate>()
        .cloned();
    let form = read_form(&parts.headers, body).await?;
    let (caller_id, caller_kind) = caller(
        auth,
        &parts.headers,
        cert.as_ref(),
        &form,
        endpoint_url,
        allow_bearer,
    )
    .await?;
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?
        .to_owned();
    Ok(TokenRequest {
        caller_id,
        caller_kind,
        token,
    })
}

impl TokenRequest {
    /// May the caller learn about (or revoke) a token of `client_id`?
    fn may_see(&self, client_id: &str) -> bool {
        self.caller_kind == ClientKind::Admin || self.caller_id == client_id
    }
}

/// `POST /oauth/introspect` with `token=…`.
pub async fn introspect(State(auth): State<Arc<AuthServer>>, req: Request) -> Response {
    let result = async {
        let request = token_request(&auth, req, auth.settings.introspection_url(), true).await?;
        let inactive = json!({"active": false});
        let claims = match auth.inspect(&request.token).await {
            Ok(c) => c,
            Err(AuthFailure::Internal) => return Err(OAuthError::server_error()),
            Err(AuthFailure::Unavailable) => return Err(OAuthError::temporarily_unavailable()),
            Err(_) => return Ok(inactive),
        };
        if !request.may_see(&claims.client_id) {
            // another client's token: say nothing about it
            return Ok(inactive);
        }
        let mut out = json!({
            "active": true,
            "client_id": claims.client_id,
            "scope": claims.scopes.join(" "),
            "token_type": "Bearer",
            "exp": claims.exp,
            "iat": claims.iat,
            "sub": claims.raw["sub"],
            "aud": claims.raw["aud"],
            "iss": claims.raw["iss"],
            "jti": claims.jti,
            "kind": claims.kind.as_str(),
        });
        if let Some(p) = &claims.patient {
            out["patient"] = json!(p);
        }
        if let Some(t) = &claims.cnf {
            out["cnf"] = json!({"x5t#S256": t});
        }
        Ok(out)
    }
    .await;
    match result {
        Ok(body) => oauth_json(StatusCode::OK, &body),
        Err(e) => e.into_response(),
    }
}

/// `POST /oauth/revoke` with `token=…` (RFC 7009 §2): the token stops working at once on
/// every process sharing the database. Answers 200 whether or not the token was valid.
pub async fn revoke(State(auth): State<Arc<AuthServer>>, req: Request) -> Response {
    let result = async {
        let request = token_request(&auth, req, auth.settings.revocation_url(), false).await?;
        // Expired or foreign tokens need nothing (RFC 7009 §2.2: invalid tokens get 200 too).
        if let Ok(claims) = access_token::verify(&auth, &request.token).await
            && request.may_see(&claims.client_id)
        {
            let mut tx = auth.store.db.begin().await?;
            tx.execute(
                "INSERT INTO auth_revoked (jti, client_id, expires_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                vec![
                    SqlValue::from(&claims.jti),
                    SqlValue::from(&claims.client_id),
                    SqlValue::from(claims.exp),
                ],
            )
            .await?;
            tx.commit().await?;
            tracing::info!(target: "pdex::auth", client_id = %claims.client_id, "access token revoked");
        }
        Ok::<_, OAuthError>(())
    }
    .await;
    match result {
        Ok(()) => oauth_json(StatusCode::OK, &json!({})),
        Err(e) => e.into_response(),
    }
}
