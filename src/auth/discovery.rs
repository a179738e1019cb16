//! Discovery: `GET {base}/.well-known/smart-configuration` (SMART App Launch 2.2
//! `conformance.md`: JSON whatever the Accept header, absolute URLs, `capabilities`,
//! `grant_types_supported`, `code_challenge_methods_supported` with S256 and without plain)
//! and the server's JWK Set at `jwks_uri`. CORS comes from the router.
//!
//! Only what works is advertised: no `authorization_endpoint`, no `authorization_code`
//! grant and no `response_types_supported` (RECOMMENDED, but no authorization endpoint means
//! no response type) until member login (Patient Access) lands; the registration endpoint is
//! added by the mTLS registration work.

use super::client_keys::ALGORITHMS;
use super::server::{AuthServer, AuthSettings};
use super::token::JWT_BEARER_GRANT;
use crate::identity::scopes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

/// The SMART configuration document.
pub fn smart_configuration_json(s: &AuthSettings) -> Value {
    let algs: Vec<String> = ALGORITHMS.iter().map(|a| format!("{a:?}")).collect();
    json!({
        "issuer": s.issuer(),
        "jwks_uri": s.jwks_url(),
        "token_endpoint": s.token_url(),
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "tls_client_auth", "client_secret_basic"],
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "grant_types_supported": ["client_credentials", JWT_BEARER_GRANT],
        "scopes_supported": [
            "system/*.read", "system/*.rs", "patient/*.read", "patient/*.rs",
            scopes::MEMBER_MATCH, scopes::BULK_MEMBER_MATCH, scopes::BULK_MEMBER_MATCH_2_1,
            scopes::GROUP_EXPORT
        ],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
        "code_challenge_methods_supported": ["S256"],
        "introspection_endpoint": s.introspection_url(),
        "revocation_endpoint": s.revocation_url(),
        // RFC 8705 §3.3: tokens requested over mTLS are bound to the certificate
        "tls_client_certificate_bound_access_tokens": true,
    })
}

fn json_response(body: String) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `GET /fhir/.well-known/smart-configuration`.
pub async fn smart_configuration(State(auth): State<Arc<AuthServer>>) -> Response {
    json_response(smart_configuration_json(&auth.settings).to_string())
}

/// `GET /oauth/jwks`: the public keys that verify our access tokens.
pub async fn jwks(State(auth): State<Arc<AuthServer>>) -> Response {
    match auth.keys.jwks().await {
        Ok(set) => {
            let mut resp = json_response(set.to_string());
            // short, so a rotation is seen soon
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=60"),
            );
            resp
        }
        Err(e) => {
            tracing::error!(target: "pdex::auth", error = %e, "cannot read signing keys");
            super::token::OAuthError::server_error().into_response()
        }
    }
}
