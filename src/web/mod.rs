//! The request layer every handler stands on: the state handlers share ([`AppState`]), the
//! [`Access`] extractor (bearer token → `AccessContext`, or 401), and the HTTP details of FHIR
//! (`http.rs`: Prefer, If-Match, ETag, `_format`, bodies). Below the handlers (`rest`, `ops`)
//! and the router (`server`), which all depend on it; it never depends on them.

pub mod http;
pub mod kickoff;

use crate::auth::AuthServer;
use crate::auth::server::AuthFailure;
use crate::fhir::{FhirError, IssueType};
use crate::identity::{AccessContext, ClientCertificate, OrgIdentifier};
use crate::store::Store;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// What every handler shares.
pub struct AppState {
    pub store: Store,
    /// FHIR base URL without a trailing slash, e.g. `http://127.0.0.1:8080/fhir`.
    pub base_url: String,
    /// The CapabilityStatement served at `/metadata`.
    pub capability: String,
    /// The authorization server (tokens, keys, clients) and the resource server's check.
    pub auth: Arc<AuthServer>,
    /// The Bulk Data export engine (jobs, workers, files).
    pub bulk: Arc<crate::bulk::Engine>,
    /// Payer-to-payer settings (`$member-match`, consent, `$everything`).
    pub exchange: crate::config::ExchangeConfig,
    /// Failed `$member-match` attempts (HRex mm-7), counted in the database.
    pub match_throttle: crate::auth::throttle::Throttle,
    payer_identifiers: Vec<OrgIdentifier>,
    /// Bounds on waits and costs (search size and time).
    pub limits: crate::config::LimitsConfig,
    /// Origins browser apps may call the API from, parsed at start-up
    /// (`server::parse_cors_origins`); empty: any.
    pub cors_origins: Vec<axum::http::HeaderValue>,
}

impl AppState {
    /// The shared state; fails when the payer-to-payer settings do not parse. `capability` is
    /// the CapabilityStatement the router layer computed (`server::capability`).
    pub fn new(
        store: Store,
        base_url: String,
        bulk: Arc<crate::bulk::Engine>,
        auth: Arc<AuthServer>,
        exchange: crate::config::ExchangeConfig,
        capability: String,
    ) -> anyhow::Result<Self> {
        let match_throttle = crate::auth::throttle::Throttle::new(
            store.clone(),
            exchange.match_failure_limit,
            exchange.match_failure_window_seconds,
        );
        Ok(AppState {
            store,
            base_url,
            capability,
            auth,
            bulk,
            match_throttle,
            payer_identifiers: parse_payer_identifiers(&exchange)?,
            exchange,
            limits: Default::default(),
            cors_origins: Vec::new(),
        })
    }

    /// This plan's organization identifiers (consent source, CoverageToMatch payor).
    pub fn payer_identifiers(&self) -> Vec<OrgIdentifier> {
        self.payer_identifiers.clone()
    }
}

pub type SharedState = Arc<AppState>;

/// The caller's access, extracted per request from the bearer token (verified signature,
/// audience, expiry, client enabled, not revoked, certificate binding): a handler that takes
/// it is closed to unauthenticated callers, who get 401 with `WWW-Authenticate: Bearer`.
pub struct Access(pub AccessContext);

impl FromRequestParts<SharedState> for Access {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Response> {
        let cert = parts.extensions.get::<ClientCertificate>();
        match state.auth.authenticate(&parts.headers, cert).await {
            Ok(ctx) => Ok(Access(ctx)),
            Err(e) => Err(unauthorized(e)),
        }
    }
}

/// The FHIR base as this request's caller sees it: the base of the listener the request came
/// in on (`ListenerInfo`: the public one or the mTLS one), else the configured base. Every
/// URL handed out — `Location`, `Content-Location`, manifest `url`s, paging links,
/// `fullUrl`s — is built on it (issue 18: a payer on the mTLS listener was sent to the public
/// one, where its certificate-bound token is refused).
pub struct Base(pub String);

impl FromRequestParts<SharedState> for Base {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Base(
            parts
                .extensions
                .get::<crate::identity::ListenerInfo>()
                .map_or_else(|| state.base_url.clone(), |l| l.base_url.clone()),
        ))
    }
}

/// The plan's own identifiers from the configuration (`SYSTEM|VALUE` each).
fn parse_payer_identifiers(
    config: &crate::config::ExchangeConfig,
) -> anyhow::Result<Vec<OrgIdentifier>> {
    config
        .payer_identifiers
        .iter()
        .map(|s| {
            s.parse::<OrgIdentifier>()
                .map_err(|_| anyhow::anyhow!("payer identifier {s:?} is not SYSTEM|VALUE"))
        })
        .collect()
}

/// RFC 6750 §3: 401 with a `WWW-Authenticate: Bearer` challenge (with `invalid_token` when a
/// token was presented) and an OperationOutcome saying why.
fn unauthorized(e: AuthFailure) -> Response {
    let (challenge, text) = match e {
        AuthFailure::Missing => (
            r#"Bearer realm="pdex""#.to_owned(),
            "an access token is required: send Authorization: Bearer <token>".to_owned(),
        ),
        AuthFailure::Invalid(why) => (
            format!(
                r#"Bearer realm="pdex", error="invalid_token", error_description="{}""#,
                why.replace(['"', '\\'], "'")
            ),
            format!("invalid access token: {why}"),
        ),
        AuthFailure::Internal => {
            return FhirError::internal("cannot check the access token").into_response();
        }
        // the token may be fine: the database that would tell is down (503, never 401)
        AuthFailure::Unavailable => return FhirError::unavailable().into_response(),
    };
    let mut resp = FhirError::new(StatusCode::UNAUTHORIZED, IssueType::Login, text).into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}
