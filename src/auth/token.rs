//! The token endpoint (`POST /oauth/token`, RFC 6749 §3.2) and its grants:
//! - `client_credentials` (SMART Backend Services), the client authenticated with
//!   `private_key_jwt` (RFC 7523 §2.2 client assertion) or RFC 8705 `tls_client_auth`;
//! - the RFC 7523 §2.1 JWT authorization grant
//!   (`urn:ietf:params:oauth:grant-type:jwt-bearer`) for the member-scoped token: the
//!   payer client, authenticated as above, presents an `assertion` whose `sub` is the member
//!   (`Patient/{id}` or the UMB, §pdex-222); the token is issued only if
//!   `consent::member_grant` finds a consent for the client's organization (§pdex-223);
//! - UDAP B2B (`udap=1`): [`udap_client`] is the hook the UDAP module fills in;
//! - `authorization_code` and `refresh_token` for the member's apps: `auth::app_tokens`.
//!
//! Client authentication: `private_key_jwt`, `tls_client_auth`, or the secret of a client
//! registered with `--secret` sent as RFC 6749 §2.3.1 `client_secret_basic`.
//!
//! Errors are RFC 6749 §5.2 JSON with status 400, except a failed `Authorization: Basic`
//! client authentication: 401 with `WWW-Authenticate: Basic` (§5.2 `invalid_client`); every
//! response carries `Cache-Control: no-store` and `Pragma: no-cache` (§5.1).

use super::access_token::{self, Grant};
use super::client_keys::Subject;
use super::clients::{self, Client};
use super::metrics::AuthMetrics;
use super::server::AuthServer;
use crate::identity::scopes::{self, Context};
use crate::identity::{ClientCertificate, ClientKind};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Scope of a member-scoped token when the request names none.
pub const DEFAULT_MEMBER_SCOPE: &str = "patient/*.rs";
/// Largest form body accepted at the OAuth endpoints.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// An RFC 6749 §5.2 error response.
#[derive(Debug, Clone)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    /// A `WWW-Authenticate` challenge to send (RFC 6749 §5.2: the scheme the client used).
    pub challenge: Option<&'static str>,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            error,
            description: description.into(),
            challenge: None,
        }
    }
    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_client", d)
    }
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", d)
    }
    pub fn unauthorized_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", d)
    }
    pub fn unsupported_grant_type(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unsupported_grant_type", d)
    }
    pub fn invalid_scope(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", d)
    }
    pub fn server_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the authorization server failed; try again",
        )
    }
    /// 503 `temporarily_unavailable` (RFC 6749 §4.1.2.1's code) with `Retry-After`: the
    /// database is down; the same request may succeed later.
    pub fn temporarily_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            format!(
                "the authorization server's database is unavailable; retry after {} seconds",
                crate::fhir::error::RETRY_AFTER_SECONDS
            ),
        )
    }
    /// The same error with another status (401 at introspection and revocation).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

impl From<anyhow::Error> for OAuthError {
    fn from(e: anyhow::Error) -> Self {
        if crate::fhir::is_unavailable(&e) {
            tracing::warn!(target: "pdex::auth", error = %format!("{e:#}"), "database unavailable");
            return OAuthError::temporarily_unavailable();
        }
        tracing::error!(target: "pdex::auth", error = %e, "authorization server failure");
        OAuthError::server_error()
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut resp = oauth_json(
            self.status,
            &json!({"error": self.error, "error_description": self.description}),
        );
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::fhir::error::RETRY_AFTER_SECONDS),
            );
        }
        if let Some(c) = self.challenge {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        resp
    }
}

/// A JSON response with the RFC 6749 §5.1 no-caching headers.
pub fn oauth_json(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// A parsed `application/x-www-form-urlencoded` request body.
pub struct Form(HashMap<String, String>);

impl Form {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }
}

/// Reads a form body; parameters may not repeat (RFC 6749 §3.2).
pub async fn read_form(headers: &HeaderMap, body: Body) -> Result<Form, OAuthError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(OAuthError::invalid_request(
            "send the parameters as an application/x-www-form-urlencoded body",
        ));
    }
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| OAuthError::invalid_request("the request body is too large or unreadable"))?;
    let mut map = HashMap::new();
    for (k, v) in form_urlencoded::parse(&bytes) {
        if map.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "parameter {k:?} appears more than once"
            )));
        }
    }
    Ok(Form(map))
}

/// `POST /oauth/token`.
pub async fn token_endpoint(State(auth): State<Arc<AuthServer>>, req: Request) -> Response {
    match issue(&auth, req).await {
        Ok(resp) => {
            AuthMetrics::inc(&auth.metrics.tokens_issued);
            resp
        }
        Err(e) => {
            AuthMetrics::inc(&auth.metrics.token_failures);
            tracing::info!(target: "pdex::auth", error = e.error, reason = %e.description, "token request refused");
            e.into_response()
        }
    }
}

async fn issue(auth: &AuthServer, req: Request) -> Result<Response, OAuthError> {
    let (parts, body) = req.into_parts();
    let cert = parts.extensions.get::<ClientCertificate>().cloned();
    let form = read_form(&parts.headers, body).await?;
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
    if grant_type == "authorization_code" || grant_type == "refresh_token" {
        return super::app_tokens::exchange(auth, &parts.headers, &form, cert.as_ref(), grant_type)
            .await;
    }
    if grant_type != "client_credentials" && grant_type != JWT_BEARER_GRANT {
        return Err(OAuthError::unsupported_grant_type(format!(
            "grant_type {grant_type:?} is not supported: use client_credentials, authorization_code, refresh_token or {JWT_BEARER_GRANT}"
        )));
    }
    let audiences = auth.settings.token_audiences();
    let client = if form.get("udap") == Some("1") {
        udap_client(auth, &form, cert.as_ref(), true).await?
    } else {
        authenticate_client(auth, &parts.headers, &form, cert.as_ref(), &audiences).await?
    };
    let cnf = cert.as_ref().map(|c| c.thumbprint.clone());
    let grant = if grant_type == JWT_BEARER_GRANT {
        member_grant(auth, &client, &form, &audiences, cnf).await?
    } else {
        client_credentials(auth, &client, &form, cnf)?
    };
    let issued = access_token::mint(auth, &grant).await?;
    tracing::info!(
        target: "pdex::auth",
        client_id = %grant.client_id,
        grant_type,
        member_scoped = grant.patient.is_some(),
        cert_bound = grant.cnf.is_some(),
        "access token issued"
    );
    let mut body = json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": grant.scopes.join(" "),
    });
    if let Some(p) = &grant.patient {
        body["patient"] = json!(p);
    }
    Ok(oauth_json(StatusCode::OK, &body))
}

/// UDAP B2B client authentication (`udap=1`, UDAP b2b.md §5.2): the client assertion's
/// `x5c` chain is re-validated against the trust anchors on every request and the
/// `hl7-b2b` extension checked (`auth::udap::validate_b2b_assertion`); the `jti` is refused
/// when replayed; the B2B context (organization, purpose of use, `subject_id`) is recorded
/// in the audit log.
pub async fn udap_client(
    auth: &AuthServer,
    form: &Form,
    _cert: Option<&ClientCertificate>,
    require_b2b: bool,
) -> Result<Client, OAuthError> {
    let Some(anchors) = &auth.settings.trust else {
        return Err(OAuthError::invalid_request(
            "UDAP B2B authentication (udap=1) is not enabled on this server",
        ));
    };
    if form.get("client_assertion_type") != Some(JWT_BEARER_ASSERTION) {
        return Err(OAuthError::invalid_client(format!(
            "UDAP clients authenticate with client_assertion_type {JWT_BEARER_ASSERTION}"
        )));
    }
    let jwt = form
        .get("client_assertion")
        .ok_or_else(|| OAuthError::invalid_client("client_assertion is required"))?;
    let iss = super::udap::assertion_issuer(jwt)
        .ok_or_else(|| OAuthError::invalid_client("client_assertion is not a JWT with iss"))?;
    let client = active_client(auth, &iss).await?;
    // A UDAP registration is keyed by its statement's iss, a SAN URI of its certificate.
    let Some(registered_san) = client.external_id.clone() else {
        return Err(OAuthError::invalid_client(
            "this client was not registered through UDAP",
        ));
    };
    let now = chrono::Utc::now().timestamp();
    let b2b = super::udap::validate_b2b_assertion(
        jwt,
        anchors,
        &client.client_id,
        &registered_san,
        &auth.settings.token_audiences(),
        now,
        require_b2b,
    )
    .map_err(|e| match e.code {
        "invalid_grant" => OAuthError::invalid_grant(e.description),
        _ => OAuthError::invalid_client(e.description),
    })?;
    let fresh = auth
        .client_keys
        .record_jti(&auth.store, &client.client_id, &b2b.jti, b2b.exp)
        .await?;
    if !fresh {
        return Err(OAuthError::invalid_client(
            "this jti was already used: a client assertion may be used once",
        ));
    }
    if let Some(ext) = &b2b.b2b {
        tracing::info!(
            target: "pdex::audit",
            client_id = %client.client_id,
            organization_id = %ext.organization_id,
            purpose_of_use = ?ext.purpose_of_use,
            subject_id = ext.subject_id.as_deref().unwrap_or(""),
            subject_name = ext.subject_name.as_deref().unwrap_or(""),
            "UDAP B2B authorization"
        );
    }
    Ok(client)
}

/// The `iss` of a JWT, read without verifying it (to find whose keys verify it).
fn unverified_issuer(jwt: &str) -> Option<String> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v["iss"].as_str().map(str::to_owned)
}

/// A registered, enabled client, or `invalid_client`.
pub async fn active_client(auth: &AuthServer, client_id: &str) -> Result<Client, OAuthError> {
    // no registered id holds a control character, and Postgres text cannot hold NUL: an
    // id with one is unknown, not a database error (RFC 6749 §5.2 invalid_client)
    if client_id.chars().any(char::is_control) {
        return Err(OAuthError::invalid_client("unknown client"));
    }
    match clients::get(&auth.store, client_id).await? {
        Some(c) if !c.disabled => Ok(c),
        Some(_) => Err(OAuthError::invalid_client("this client is disabled")),
        None => Err(OAuthError::invalid_client("unknown client")),
    }
}

/// Client authentication at the token, introspection and revocation endpoints:
/// `private_key_jwt` (SMART §2.3: `client_assertion_type` jwt-bearer and a signed
/// `client_assertion` whose `aud` is one of `audiences`), RFC 8705 `tls_client_auth`
/// (`client_id` plus the connection's client certificate carrying the registered SAN URI) or
/// RFC 6749 §2.3.1 `client_secret_basic` (an `Authorization: Basic` header). A client
/// registered with a certificate must present it either way.
pub async fn authenticate_client(
    auth: &AuthServer,
    headers: &HeaderMap,
    form: &Form,
    cert: Option<&ClientCertificate>,
    audiences: &[String],
) -> Result<Client, OAuthError> {
    let form_client_id = form.get("client_id");
    if let Some(basic) = basic_credentials(headers) {
        // RFC 6749 §2.3: "The client MUST NOT use more than one authentication method in
        // each request."
        if form.get("client_assertion").is_some() || form.get("client_secret").is_some() {
            return Err(OAuthError::invalid_request(
                "use one client authentication method: an Authorization header or a client assertion, not both",
            ));
        }
        let (id, secret) = basic?;
        if form_client_id.is_some_and(|f| f != id) {
            return Err(basic_failure(
                "client_id does not match the Authorization header",
            ));
        }
        let client = active_client(auth, &id).await.map_err(|e| match e.status {
            StatusCode::INTERNAL_SERVER_ERROR => e,
            _ => basic_failure(e.description),
        })?;
        if !clients::secret_matches(&client, &secret) {
            return Err(basic_failure(
                "the client secret is wrong, or this client has none",
            ));
        }
        check_certificate(&client, cert)?;
        return Ok(client);
    }
    if let Some(kind) = form.get("client_assertion_type") {
        if kind != JWT_BEARER_ASSERTION {
            return Err(OAuthError::invalid_client(format!(
                "client_assertion_type must be {JWT_BEARER_ASSERTION}"
            )));
        }
        let jwt = form
            .get("client_assertion")
            .ok_or_else(|| OAuthError::invalid_client("client_assertion is required"))?;
        let iss = unverified_issuer(jwt)
            .ok_or_else(|| OAuthError::invalid_client("client_assertion is not a JWT with iss"))?;
        if form_client_id.is_some_and(|id| id != iss) {
            return Err(OAuthError::invalid_client(
                "client_id does not match the assertion's iss",
            ));
        }
        let client = active_client(auth, &iss).await?;
        if client.jwks.is_none() && client.jwks_uri.is_none() {
            return Err(OAuthError::invalid_client(
                "this client has no registered keys for private_key_jwt",
            ));
        }
        auth.client_keys
            .verify(&auth.store, &client, jwt, audiences, Subject::ClientId)
            .await
            .map_err(|e| OAuthError::invalid_client(format!("client_assertion: {e}")))?;
        check_certificate(&client, cert)?;
        return Ok(client);
    }
    if let (Some(id), Some(cert)) = (form_client_id, cert) {
        let client = active_client(auth, id).await?;
        if client.cert_san_uri.is_none() {
            return Err(OAuthError::invalid_client(
                "this client is not registered for tls_client_auth",
            ));
        }
        check_certificate(&client, Some(cert))?;
        return Ok(client);
    }
    Err(OAuthError::invalid_client(
        "client authentication is required: private_key_jwt (client_assertion_type and client_assertion), client_secret_basic (Authorization: Basic) or tls_client_auth over mTLS",
    ))
}

/// RFC 6749 §5.2: a client that authenticated with the Authorization header and failed gets
/// 401 with a challenge for the scheme it used.
fn basic_failure(description: impl Into<String>) -> OAuthError {
    let mut e = OAuthError::invalid_client(description).with_status(StatusCode::UNAUTHORIZED);
    e.challenge = Some("Basic realm=\"pdex\"");
    e
}

/// The client id and secret of an `Authorization: Basic` header (RFC 6749 §2.3.1: each
/// form-urlencoded, then joined by `:` and base64-encoded as RFC 7617 says); `None` without
/// such a header, an error when it cannot be read.
pub fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, String), OAuthError>> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    let Some((id, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        return Some(Err(basic_failure(
            "the Authorization header is not Basic base64(client_id:client_secret)",
        )));
    };
    let unescape = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
    };
    match (unescape(id), unescape(secret)) {
        (Ok(id), Ok(secret)) if !id.is_empty() => Some(Ok((id, secret))),
        _ => Some(Err(basic_failure(
            "the Authorization header's client id or secret is not valid form-urlencoded UTF-8",
        ))),
    }
}

/// A certificate-bound client (HRex: tokens "SHALL be tied to the client system's
/// certificate") must present its certificate: the registered SAN URI must be among the
/// certificate's SAN URIs (RFC 8705 §2.1.2 `tls_client_auth_san_uri`; a renewed certificate
/// with the same SAN keeps working); a client registered by thumbprint only must present
/// exactly that certificate.
pub fn check_certificate(
    client: &Client,
    cert: Option<&ClientCertificate>,
) -> Result<(), OAuthError> {
    if !client.cert_bound() {
        return Ok(());
    }
    let cert = cert.ok_or_else(|| {
        OAuthError::invalid_client(
            "this client is bound to a client certificate: call the mTLS token endpoint with it",
        )
    })?;
    let ok = match (&client.cert_san_uri, &client.cert_thumbprint) {
        (Some(san), _) => cert.san_uris.iter().any(|u| u == san),
        (None, Some(tp)) => &cert.thumbprint == tp,
        (None, None) => true,
    };
    if ok {
        Ok(())
    } else {
        Err(OAuthError::invalid_client(
            "the client certificate is not the one registered for this client",
        ))
    }
}

fn requested_scopes(form: &Form) -> Option<Vec<String>> {
    form.get("scope")
        .map(scopes::split)
        .filter(|s| !s.is_empty())
}

/// `client_credentials`: the granted scopes are the requested ones narrowed to the client's
/// registration (all registered ones when none are requested).
fn client_credentials(
    auth: &AuthServer,
    client: &Client,
    form: &Form,
    cnf: Option<String>,
) -> Result<Grant, OAuthError> {
    if !client.grant_types.iter().any(|g| g == "client_credentials") {
        return Err(OAuthError::unauthorized_client(
            "this client is not registered for the client_credentials grant",
        ));
    }
    let requested = requested_scopes(form);
    let granted = scopes::negotiate(requested.as_deref(), &client.scopes, Context::System);
    if granted.is_empty() {
        return Err(OAuthError::invalid_scope(
            "none of the requested scopes is registered for this client (backend clients get system/ scopes and operation scopes)",
        ));
    }
    Ok(Grant {
        client_id: client.client_id.clone(),
        kind: client.kind,
        organization: client.organization.clone(),
        scopes: granted,
        patient: None,
        allow_sensitive: client.kind == ClientKind::Admin,
        consent_id: None,
        authorization_id: None,
        cnf,
        lifetime: auth.settings.token_lifetime,
    })
}

/// RFC 7523 §2.1 authorization grant for a member-scoped token (§pdex-222..224). The
/// assertion is signed by the client like its client assertion (`iss` = client_id,
/// `aud` = token URL, `exp` ≤ 5 min, single-use `jti`); its `sub` names the member. The token
/// reads that member's compartment only, with the consent's sensitivity allowance, and
/// lives no longer than the default lifetime.
async fn member_grant(
    auth: &AuthServer,
    client: &Client,
    form: &Form,
    audiences: &[String],
    cnf: Option<String>,
) -> Result<Grant, OAuthError> {
    if client.kind != ClientKind::Payer {
        return Err(OAuthError::unauthorized_client(
            "member-scoped tokens (the JWT-bearer grant) are for payer clients",
        ));
    }
    let assertion = form.get("assertion").ok_or_else(|| {
        OAuthError::invalid_request("assertion is required for the jwt-bearer grant")
    })?;
    let verified = auth
        .client_keys
        .verify(&auth.store, client, assertion, audiences, Subject::Any)
        .await
        .map_err(|e| OAuthError::invalid_grant(format!("assertion: {e}")))?;
    let org = client.organization.as_ref().ok_or_else(|| {
        OAuthError::invalid_grant(
            "this client has no organization identifier, so no member consent can name it",
        )
    })?;
    let Some(consent) = crate::consent::member_grant(&auth.store, org, &verified.sub).await? else {
        return Err(OAuthError::invalid_grant(
            "no active consent of this member authorizes your organization",
        ));
    };
    let requested = requested_scopes(form).unwrap_or_else(|| scopes::split(DEFAULT_MEMBER_SCOPE));
    let allowed = scopes::as_patient_read(&client.scopes);
    let granted = scopes::negotiate(Some(&requested), &allowed, Context::Patient);
    if granted.is_empty() {
        return Err(OAuthError::invalid_scope(
            "member-scoped tokens carry patient/ read scopes covered by the client's registered read scopes",
        ));
    }
    Ok(Grant {
        client_id: client.client_id.clone(),
        kind: client.kind,
        organization: client.organization.clone(),
        scopes: granted,
        patient: Some(consent.patient_id),
        allow_sensitive: consent.allow_sensitive,
        consent_id: Some(consent.consent_id),
        authorization_id: None,
        cnf,
        lifetime: auth
            .settings
            .token_lifetime
            .min(crate::config::DEFAULT_TOKEN_LIFETIME),
    })
}
