//! The HTTP side: router assembly, middleware (request ids, tracing without PHI, panics and
//! bare errors turned into OperationOutcomes, body limits); the listeners (plain, TLS, mTLS)
//! and graceful shutdown are in `tls.rs`.
//!
//! Depends on `store`, `search`, `fhir`, `auth`. Handlers live in `rest.rs` (FHIR REST
//! interactions), `bundle.rs` (transaction/batch) and `capability.rs` (`/metadata`).

pub mod bundle;
pub mod capability;
pub mod http;
pub mod profiles;
pub mod rest;
pub mod tls;

use crate::auth::AuthServer;
use crate::auth::server::AuthFailure;
use crate::fhir::{FHIR_JSON, FhirError, IssueType};
use crate::identity::{AccessContext, ClientCertificate};
use crate::store::Store;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

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
    pub match_throttle: crate::ops::member_match::Throttle,
    payer_identifiers: Vec<crate::identity::OrgIdentifier>,
    /// The trust framework's anchors (`--trust-anchors`): mTLS and UDAP `x5c` chains.
    pub trust: Option<crate::auth::pki::TrustAnchors>,
    /// UDAP signing identity; `None` when UDAP is off (`/.well-known/udap` is then 404).
    pub udap: Option<Arc<crate::auth::udap::UdapSigner>>,
    /// The FHIR base on the mTLS listener, when there is one.
    pub mtls_base_url: Option<String>,
    /// The UDAP trust community URI we answer `?community=` for (`--udap-community`).
    pub udap_community: Option<String>,
    /// Bounds on waits and costs (search size and time).
    pub limits: crate::config::LimitsConfig,
}

impl AppState {
    /// The shared state; fails when the payer-to-payer settings do not parse.
    pub fn new(
        store: Store,
        base_url: String,
        bulk: Arc<crate::bulk::Engine>,
        auth: Arc<AuthServer>,
        exchange: crate::config::ExchangeConfig,
    ) -> anyhow::Result<Self> {
        let capability =
            capability::capability_statement(&store.registry, &base_url, &auth.settings)
                .to_string();
        let match_throttle = crate::ops::member_match::Throttle::new(
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
            payer_identifiers: crate::ops::member_match::parse_payer_identifiers(&exchange)?,
            exchange,
            trust: None,
            udap: None,
            mtls_base_url: None,
            udap_community: None,
            limits: Default::default(),
        })
    }

    /// This plan's organization identifiers (consent source, CoverageToMatch payor).
    pub fn payer_identifiers(&self) -> Vec<crate::identity::OrgIdentifier> {
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

/// `GET /health`: 200 `ok` while the database answers, 503 (with `Retry-After`) while it
/// does not (issue 15: a load balancer must see an outage).
async fn health(axum::extract::State(state): axum::extract::State<SharedState>) -> Response {
    match state.store.ping().await {
        Ok(_) => "ok".into_response(),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "health check: the database does not answer");
            FhirError::unavailable().into_response()
        }
    }
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

/// Counts 403 answers (insufficient scope) for the audit counters.
async fn count_forbidden(
    axum::extract::State(state): axum::extract::State<SharedState>,
    req: Request,
    next: Next,
) -> Response {
    let resp = next.run(req).await;
    if resp.status() == StatusCode::FORBIDDEN {
        crate::auth::metrics::AuthMetrics::inc(&state.auth.metrics.forbidden);
    }
    resp
}

/// Largest request body we accept (transaction Bundles included).
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Builds the application router.
pub fn router(state: SharedState) -> Router {
    use crate::ops::export;
    let fhir = Router::new()
        .route("/metadata", get(capability::metadata))
        .route("/.well-known/udap", get(crate::auth::udap::discovery))
        .route("/$export", get(export::system).post(export::system))
        .route(
            "/Patient/$export",
            get(export::patient).post(export::patient),
        )
        .route(
            "/Group/{id}/$export",
            get(export::group).post(export::group),
        )
        .route("/_export/{job}", get(export::status).delete(export::cancel))
        .route("/_export/{job}/{file}", get(export::download))
        .route(
            "/",
            post(bundle::transaction_or_batch).get(rest::system_search),
        )
        .route("/{rtype}", get(rest::search_get).post(rest::create))
        .route("/{rtype}/_search", post(rest::search_post))
        .route(
            "/Group/{id}/$davinci-data-export",
            get(crate::ops::davinci_data_export::handler)
                .post(crate::ops::davinci_data_export::handler),
        )
        .route(
            "/Group/$bulk-member-match",
            post(crate::ops::bulk_match_job::kickoff_handler),
        )
        .route(
            "/Patient/$member-match",
            post(crate::ops::member_match::member_match),
        )
        .route(
            "/Patient/{id}/$everything",
            get(crate::ops::everything::everything_get)
                .post(crate::ops::everything::everything_post),
        )
        .route(
            "/{rtype}/{id}",
            get(rest::read).put(rest::update).delete(rest::delete),
        )
        .route("/{rtype}/{id}/_history", get(rest::instance_history))
        .route("/{rtype}/{id}/_history/{vid}", get(rest::vread));
    Router::new()
        .nest("/fhir", fhir)
        .merge(crate::auth::server::router(state.auth.clone()))
        .route("/oauth/register", post(crate::auth::dcr::register))
        // the base with a trailing slash is the same endpoint
        .route(
            "/fhir/",
            post(bundle::transaction_or_batch).get(rest::system_search),
        )
        .route("/health", get(health))
        .fallback(|| async { FhirError::not_found("no such endpoint") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_forbidden,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), bounded_body))
        .with_state(state)
        // Discovery and FHIR calls from browser apps (SMART 2.2 CORS); no cookies are used,
        // so any origin may read what its bearer token allows.
        .layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::Any)
                .allow_methods(tower_http::cors::Any)
                .allow_headers(tower_http::cors::Any)
                .expose_headers([header::LOCATION, header::ETAG, header::CONTENT_LOCATION]),
        )
        // One limit for every body: the tower layer refuses larger requests (413), and the
        // extractors' own 2 MB default is lifted to the same size (a 10,000-member
        // `$bulk-member-match` or a large transaction Bundle is far above 2 MB).
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // outside the body limit, so that its 413 is an OperationOutcome too
        .layer(middleware::from_fn(errors_as_operation_outcomes))
        .layer(CatchPanicLayer::custom(|_| {
            FhirError::internal("a request handler panicked").into_response()
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            // Method and route template only: paths and queries can carry PHI.
            let route = req
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            let request_id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            tracing::info_span!("request", method = %req.method(), route, request_id)
        }))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
        ]))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// The whole request body must arrive within `body_read_timeout_seconds` (issue 15 item 4: a
/// client dribbling its body held a connection for as long as it liked). Bodies are read here,
/// under the deadline, before any handler runs (every handler reads its body whole anyway);
/// late ones get 408 and the connection is closed.
async fn bounded_body(
    axum::extract::State(state): axum::extract::State<SharedState>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let deadline = std::time::Duration::from_secs(state.limits.body_read_timeout_seconds.max(1));
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, BODY_LIMIT)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(e)) => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            let mut too_large = false;
            while let Some(c) = cause {
                too_large |= c.is::<http_body_util::LengthLimitError>();
                cause = c.source();
            }
            if too_large {
                FhirError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    IssueType::TooCostly,
                    "the request body is too large",
                )
                .into_response()
            } else {
                FhirError::bad_request("the request body could not be read").into_response()
            }
        }
        Err(_) => {
            let mut resp = FhirError::new(
                StatusCode::REQUEST_TIMEOUT,
                IssueType::Timeout,
                format!(
                    "the request body did not arrive within {} seconds",
                    deadline.as_secs()
                ),
            )
            .into_response();
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    }
}

/// Errors produced outside our handlers (unknown method → 405, body too large → 413,
/// extractor rejections) arrive without a FHIR body; give them one.
async fn errors_as_operation_outcomes(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_fhir = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        // FHIR OperationOutcomes, and RFC 6749 JSON errors from the OAuth endpoints
        .is_some_and(|v| {
            v.starts_with("application/fhir+json") || v.starts_with("application/json")
        });
    if !(status.is_client_error() || status.is_server_error()) || is_fhir {
        return resp;
    }
    let (issue, text) = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            (IssueType::NotSupported, "method not allowed on this URL")
        }
        StatusCode::PAYLOAD_TOO_LARGE => (IssueType::TooCostly, "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            IssueType::NotSupported,
            "unsupported Content-Type; send application/fhir+json",
        ),
        StatusCode::NOT_FOUND => (IssueType::NotFound, "not found"),
        s if s.is_server_error() => (IssueType::Exception, "internal server error"),
        _ => (IssueType::Invalid, "the request could not be processed"),
    };
    let mut out = FhirError::new(status, issue, text).into_response();
    // keep what inner layers said (CORS, WWW-Authenticate, Retry-After), not the old body's
    for (name, value) in resp.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    out
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
