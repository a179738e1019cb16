//! Dynamic client registration at `POST /oauth/register`:
//!
//! - **RFC 7591, unsigned, only on the mTLS listener** (PDex 2.1 payer-to-payer: "The
//!   Registration Endpoint will only be accessible via the mTLS connection"; refused with
//!   403 on the public listener). The presenting certificate's SAN URI and thumbprint are
//!   recorded against the new client (HRex: tokens "SHALL be tied to the client system's
//!   certificate"); `token_endpoint_auth_method` is `private_key_jwt` (with `jwks` or
//!   `jwks_uri`) or `tls_client_auth` (with `tls_client_auth_san_uri`, a SAN URI of that
//!   certificate); `grant_types` must be, and becomes, `["client_credentials"]`; the client
//!   is a payer; 201 with the registered metadata (RFC 7591 §3.2.1).
//! - **UDAP**, when the body carries a `software_statement` (any listener): the statement is
//!   checked by `auth::udap::validate_registration`; `client_credentials` registers a
//!   payer (B2B), `authorization_code` a member's `app` with its redirect URIs (UDAP
//!   consumer-facing; the Patient Access flow then applies); 201 for a new `iss`, 200 when
//!   the same `iss` registers again (same `client_id`), and an empty `grant_types` cancels.

use super::clients::{self, NewClient};
use super::server::AuthServer;
use super::udap::{self, RegistrationError, SoftwareStatement};
use crate::identity::scopes;
use crate::identity::{ClientCertificate, ClientKind, OrgIdentifier};
use crate::identity::{ListenerInfo, ListenerKind};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

/// Scopes a dynamically registered payer may hold, and gets when it asks for none: reading
/// (`system/*.rs` — what it then sees is still decided by the member's consent and its Group
/// ownership) and the payer-to-payer operations. Issue 18: protocols.md §5.4's narrower
/// "operation scopes only" left a DCR payer able to match but never to read its members.
pub const PAYER_SCOPES: [&str; 5] = [
    "system/*.rs",
    scopes::MEMBER_MATCH,
    scopes::BULK_MEMBER_MATCH_2_1,
    scopes::BULK_MEMBER_MATCH,
    scopes::GROUP_EXPORT,
];

/// The organization identifier system for a payer known by its certificate SAN URI.
pub const URI_SYSTEM: &str = "urn:ietf:rfc:3986";

fn registration_json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(body.clone()),
    )
        .into_response()
}

/// The granted scopes: the requested ones we can grant, or all of `allowed` when none was
/// requested or none of them is grantable (the server "MAY replace" requested metadata,
/// RFC 7591 §3.2.1; the response says what was granted).
fn negotiate_scopes(requested: &str, allowed: &[&str]) -> Vec<String> {
    let granted: Vec<String> = requested
        .split_whitespace()
        .filter(|s| allowed.contains(s))
        .map(str::to_owned)
        .collect();
    if granted.is_empty() {
        allowed.iter().map(|s| (*s).to_owned()).collect()
    } else {
        granted
    }
}

/// `POST /oauth/register`.
pub async fn register(
    State(state): State<Arc<AuthServer>>,
    listener: Option<axum::Extension<ListenerInfo>>,
    cert: Option<axum::Extension<ClientCertificate>>,
    body: Bytes,
) -> Response {
    let listener = listener.map(|e| e.0).unwrap_or_else(|| ListenerInfo {
        kind: ListenerKind::Public,
        base_url: state.settings.fhir_base.clone(),
    });
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return RegistrationError::invalid_metadata(
                "the registration request must be a JSON object",
            )
            .into_response();
        }
    };
    let result = if body.get("software_statement").is_some() {
        register_udap(&state, &listener, &body).await
    } else {
        match (listener.kind, cert) {
            (ListenerKind::Mtls, Some(cert)) => register_unsigned(&state, &cert.0, &body).await,
            _ => {
                return registration_json(
                    StatusCode::FORBIDDEN,
                    &json!({
                        "error": "access_denied",
                        "error_description": "unsigned dynamic registration (RFC 7591) is only accepted on the mTLS listener, with the client certificate of the trust framework",
                    }),
                );
            }
        }
    };
    match result {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

fn store_error(e: impl std::fmt::Display) -> RegistrationError {
    tracing::error!(target: "pdex::auth", error = %e, "registration could not be stored");
    RegistrationError {
        code: "server_error",
        description: "the registration could not be stored".into(),
    }
}

fn client_error(e: clients::ClientError) -> RegistrationError {
    match e {
        clients::ClientError::Invalid(d) => RegistrationError::invalid_metadata(d),
        clients::ClientError::Store(e) => store_error(e),
    }
}

/// RFC 7591 over mTLS.
async fn register_unsigned(
    state: &AuthServer,
    cert: &ClientCertificate,
    body: &Value,
) -> Result<Response, RegistrationError> {
    // grant_types: client_credentials only (RFC 7591's default is authorization_code, so we
    // assign it explicitly when absent; protocols.md §8.16).
    match &body["grant_types"] {
        Value::Null => {}
        Value::Array(a) if a.len() == 1 && a[0] == "client_credentials" => {}
        _ => {
            return Err(RegistrationError::invalid_metadata(
                "`grant_types` must be [\"client_credentials\"]: payer clients use the client credentials grant",
            ));
        }
    }
    if body.get("redirect_uris").is_some() || body.get("response_types").is_some() {
        return Err(RegistrationError::invalid_metadata(
            "`redirect_uris` and `response_types` do not apply to client_credentials clients",
        ));
    }
    let method = body["token_endpoint_auth_method"].as_str().unwrap_or("");
    let (jwks, jwks_uri, san_uri) = match method {
        "private_key_jwt" => {
            let jwks = body.get("jwks").filter(|v| !v.is_null()).cloned();
            let jwks_uri = body["jwks_uri"].as_str().map(str::to_owned);
            match (&jwks, &jwks_uri) {
                (Some(_), Some(_)) => {
                    return Err(RegistrationError::invalid_metadata(
                        "`jwks` and `jwks_uri` must not both be present (RFC 7591 §2)",
                    ));
                }
                (None, None) => {
                    return Err(RegistrationError::invalid_metadata(
                        "private_key_jwt needs `jwks` or `jwks_uri`",
                    ));
                }
                _ => {}
            }
            if body.get("tls_client_auth_san_uri").is_some() {
                return Err(RegistrationError::invalid_metadata(
                    "`tls_client_auth_san_uri` is only for tls_client_auth",
                ));
            }
            // The client is still bound to the certificate it registered with: its SAN URI
            // (HRex: URIs), or, without one, its thumbprint.
            (jwks, jwks_uri, cert.san_uris.first().cloned())
        }
        "tls_client_auth" => {
            // RFC 8705 §2.1.2: exactly one of the subject metadata parameters; HRex: URIs.
            for other in [
                "tls_client_auth_subject_dn",
                "tls_client_auth_san_dns",
                "tls_client_auth_san_ip",
                "tls_client_auth_san_email",
            ] {
                if body.get(other).is_some() {
                    return Err(RegistrationError::invalid_metadata(format!(
                        "use tls_client_auth_san_uri, not {other} (HRex: signing options use URIs)"
                    )));
                }
            }
            let san = body["tls_client_auth_san_uri"].as_str().ok_or_else(|| {
                RegistrationError::invalid_metadata(
                    "tls_client_auth needs `tls_client_auth_san_uri`",
                )
            })?;
            if !cert.san_uris.iter().any(|u| u == san) {
                return Err(RegistrationError::invalid_metadata(format!(
                    "`tls_client_auth_san_uri` {san:?} is not a SAN URI of the presented client certificate"
                )));
            }
            if body.get("jwks").is_some() || body.get("jwks_uri").is_some() {
                return Err(RegistrationError::invalid_metadata(
                    "tls_client_auth clients do not register keys",
                ));
            }
            (None, None, Some(san.to_owned()))
        }
        "" => {
            return Err(RegistrationError::invalid_metadata(
                "`token_endpoint_auth_method` is required: private_key_jwt or tls_client_auth",
            ));
        }
        other => {
            return Err(RegistrationError::invalid_metadata(format!(
                "token_endpoint_auth_method {other:?} is not supported: use private_key_jwt or tls_client_auth"
            )));
        }
    };
    // the requested scope narrows the payer scopes (intersected as at the token endpoint)
    let allowed: Vec<String> = PAYER_SCOPES.iter().map(|s| (*s).to_owned()).collect();
    let requested = scopes::split(body["scope"].as_str().unwrap_or(""));
    let mut scopes = scopes::negotiate(Some(&requested), &allowed, scopes::Context::System);
    if scopes.is_empty() {
        scopes = allowed;
    }
    let name = body["client_name"]
        .as_str()
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| cert.subject.clone());
    let created = clients::create(
        &state.store,
        NewClient {
            name,
            kind: Some(ClientKind::Payer),
            jwks: jwks.clone(),
            jwks_uri: jwks_uri.clone(),
            organization: san_uri.as_ref().map(|u| OrgIdentifier {
                system: URI_SYSTEM.into(),
                value: u.clone(),
            }),
            scopes: scopes.clone(),
            cert_san_uri: san_uri.clone(),
            cert_thumbprint: Some(cert.thumbprint.clone()),
            grant_types: vec!["client_credentials".into()],
            metadata: Some(body.clone()),
            ..Default::default()
        },
    )
    .await
    .map_err(client_error)?;
    let client = created.client;
    tracing::info!(target: "pdex::auth", client_id = %client.client_id, method, "client registered over mTLS (RFC 7591)");
    let mut out = json!({
        "client_id": client.client_id,
        "client_id_issued_at": client.created_at / 1000,
        "client_name": client.name,
        "token_endpoint_auth_method": method,
        "grant_types": ["client_credentials"],
        "scope": scopes.join(" "),
        "tls_client_certificate_bound_access_tokens": true,
    });
    if let Some(j) = jwks {
        out["jwks"] = j;
    }
    if let Some(u) = jwks_uri {
        out["jwks_uri"] = json!(u);
    }
    if let Some(san) = &san_uri {
        out["tls_client_auth_san_uri"] = json!(san);
    }
    Ok(registration_json(StatusCode::CREATED, &out))
}

/// UDAP DCR.
async fn register_udap(
    state: &AuthServer,
    listener: &ListenerInfo,
    body: &Value,
) -> Result<Response, RegistrationError> {
    let (Some(anchors), Some(_)) = (&state.settings.trust, &state.settings.udap) else {
        return Err(RegistrationError::unapproved(
            "UDAP registration is not enabled on this server (no trust anchors or UDAP certificate)",
        ));
    };
    let now = chrono::Utc::now().timestamp();
    let statement =
        udap::validate_registration(body, anchors, &listener.oauth_url("register"), now)?;
    // jti replay (UDAP registration.md: a jti may be reused only after the statement
    // expired), keyed by the statement's iss.
    let fresh = state
        .client_keys
        .record_jti(
            &state.store,
            &format!("udap-dcr:{}", statement.iss),
            &statement.jti,
            statement.exp,
        )
        .await
        .map_err(store_error)?;
    if !fresh {
        return Err(RegistrationError::invalid_statement(
            "this software statement's jti was already used",
        ));
    }
    let existing = clients::find_by_external_id(&state.store, &statement.iss)
        .await
        .map_err(store_error)?;
    if statement.cancels() {
        let Some(client) = existing.filter(|c| !c.disabled) else {
            return Err(RegistrationError::invalid_metadata(
                "empty grant_types cancels a registration, and there is none for this iss",
            ));
        };
        clients::set_disabled(&state.store, &client.client_id, true)
            .await
            .map_err(store_error)?;
        tracing::info!(target: "pdex::auth", client_id = %client.client_id, "UDAP registration cancelled");
        return Ok(registration_json(
            StatusCode::OK,
            &json!({
                "client_id": client.client_id,
                "software_statement": statement.raw,
                "grant_types": [],
            }),
        ));
    }
    // a member app (authorization_code) registers patient/ scopes within what apps may get;
    // a B2B client the scopes UDAP discovery lists
    let app = statement
        .grant_types
        .iter()
        .any(|g| g == "authorization_code");
    let scopes = if app {
        let defaults: Vec<String> = crate::identity::scopes::APP_DEFAULT_SCOPES
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        crate::identity::scopes::negotiate(
            Some(&crate::identity::scopes::split(&statement.scope)),
            &defaults,
            crate::identity::scopes::Context::Patient,
        )
    } else {
        negotiate_scopes(&statement.scope, &udap::SCOPES_SUPPORTED)
    };
    let (status, client_id) = match existing {
        Some(mut client) => {
            // Same iss (and community): the new statement replaces the registration, same
            // client_id, 200 (UDAP registration.md §3.4).
            client.name = statement.client_name.clone();
            client.scopes = scopes.clone();
            client.grant_types = statement.grant_types.clone();
            client.redirect_uris = statement.redirect_uris.clone();
            client.kind = if app {
                ClientKind::App
            } else {
                ClientKind::Payer
            };
            client.metadata = Some(udap_metadata(&statement));
            client.disabled = false;
            client.cert_thumbprint = Some(statement.certificate.thumbprint.clone());
            let client = clients::update(&state.store, &client)
                .await
                .map_err(client_error)?;
            (StatusCode::OK, client.client_id)
        }
        None => {
            let created = clients::create(
                &state.store,
                NewClient {
                    name: statement.client_name.clone(),
                    kind: Some(if app {
                        ClientKind::App
                    } else {
                        ClientKind::Payer
                    }),
                    redirect_uris: statement.redirect_uris.clone(),
                    organization: Some(OrgIdentifier {
                        system: URI_SYSTEM.into(),
                        value: statement.iss.clone(),
                    }),
                    scopes: scopes.clone(),
                    grant_types: statement.grant_types.clone(),
                    external_id: Some(statement.iss.clone()),
                    // identified by its certificate: the SAN URI that is its iss
                    cert_san_uri: Some(statement.iss.clone()),
                    cert_thumbprint: Some(statement.certificate.thumbprint.clone()),
                    metadata: Some(udap_metadata(&statement)),
                    ..Default::default()
                },
            )
            .await
            .map_err(client_error)?;
            (StatusCode::CREATED, created.client.client_id)
        }
    };
    tracing::info!(target: "pdex::auth", %client_id, iss = %statement.iss, "UDAP client registered");
    Ok(registration_json(
        status,
        &json!({
            "client_id": client_id,
            "software_statement": statement.raw,
            "client_name": statement.client_name,
            "grant_types": statement.grant_types,
            "token_endpoint_auth_method": statement.token_endpoint_auth_method,
            "scope": scopes.join(" "),
            "contacts": statement.contacts,
        }),
    ))
}

/// What we keep of a UDAP registration: the statement and the certificate it came with.
fn udap_metadata(s: &SoftwareStatement) -> Value {
    json!({
        "udap": true,
        "software_statement": s.raw,
        "certificate_san_uris": s.certificate.san_uris,
        "certificate_thumbprint": s.certificate.thumbprint,
        "contacts": s.contacts,
        "logo_uri": s.logo_uri,
    })
}
