//! Discovery: `GET {base}/.well-known/smart-configuration` (SMART App Launch 2.2
//! `conformance.md`: JSON whatever the Accept header, absolute URLs, `capabilities`,
//! `grant_types_supported`, `code_challenge_methods_supported` with S256 and without plain)
//! and the server's JWK Set at `jwks_uri`. CORS comes from the router.
//!
//! Only what works is advertised: the authorization endpoint with the member's sign-in
//! (`authorize`), the grants of `token` and `app_tokens`, and the SMART capabilities they
//! implement. `/oauth/.well-known/openid-configuration` is the OpenID Provider metadata of
//! our issuer (OIDC Discovery §3), for the id_tokens of `id_token`.

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
        "authorization_endpoint": s.authorize_url(),
        "token_endpoint": s.token_url(),
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "tls_client_auth", "client_secret_basic", "none"],
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", JWT_BEARER_GRANT],
        "response_types_supported": ["code"],
        "scopes_supported": scopes_supported(),
        "capabilities": [
            "launch-standalone", "authorize-post",
            "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
            "context-standalone-patient",
            "permission-offline", "permission-online", "permission-patient",
            "permission-v1", "permission-v2",
            "sso-openid-connect"
        ],
        "code_challenge_methods_supported": ["S256"],
        "introspection_endpoint": s.introspection_url(),
        // where the member sees and revokes what they authorized
        "management_endpoint": s.account_url(),
        "revocation_endpoint": s.revocation_url(),
        // RFC 8705 §3.3: tokens requested over mTLS are bound to the certificate
        "tls_client_certificate_bound_access_tokens": true,
    })
}

fn scopes_supported() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = scopes::LAUNCH_SCOPES.to_vec();
    v.extend([
        "patient/*.rs",
        "patient/*.read",
        "patient/Consent.c",
        "system/*.read",
        "system/*.rs",
        scopes::MEMBER_MATCH,
        scopes::BULK_MEMBER_MATCH,
        scopes::BULK_MEMBER_MATCH_2_1,
        scopes::GROUP_EXPORT,
    ]);
    v
}

/// The OpenID Provider metadata of our issuer (OIDC Discovery 1.0 §3; SMART
/// `sso-openid-connect`: id_tokens signed RS256).
pub fn openid_configuration_json(s: &AuthSettings) -> Value {
    json!({
        "issuer": s.issuer(),
        "authorization_endpoint": s.authorize_url(),
        "token_endpoint": s.token_url(),
        "jwks_uri": s.jwks_url(),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "fhirUser", "launch/patient", "offline_access", "online_access"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "fhirUser"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "private_key_jwt"],
        "code_challenge_methods_supported": ["S256"],
    })
}

/// `GET /oauth/.well-known/openid-configuration`.
pub async fn openid_configuration(State(auth): State<Arc<AuthServer>>) -> Response {
    json_response(openid_configuration_json(&auth.settings).to_string())
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
