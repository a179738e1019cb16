//! The HTTP side: router assembly, middleware (request ids, tracing without PHI, panics and
//! bare errors turned into OperationOutcomes, body limits); the listeners (plain, TLS, mTLS)
//! and graceful shutdown are in `tls.rs`, `/metadata` in `capability.rs`.
//!
//! The top of the request path: it mounts the handlers of `rest` and `ops` and the
//! authorization server's routes, all of which stand on `web`; nothing below depends on it.

pub mod capability;
pub mod profiles;
pub mod tls;

use crate::fhir::{FhirError, IssueType};
use crate::web::SharedState;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

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
    use crate::rest::{bundle, interactions as rest};
    let mut fhir = Router::new()
        .route("/metadata", get(capability::metadata))
        .route("/_export/{job}", get(export::status).delete(export::cancel))
        .route("/_export/{job}/{file}", get(export::download))
        .route(
            "/",
            post(bundle::transaction_or_batch).get(rest::system_search),
        )
        .route("/{rtype}", get(rest::search_get).post(rest::create))
        .route("/{rtype}/_search", post(rest::search_post))
        .route(
            "/{rtype}/{id}",
            get(rest::read).put(rest::update).delete(rest::delete),
        )
        .route("/{rtype}/{id}/_history", get(rest::instance_history))
        .route("/{rtype}/{id}/_history/{vid}", get(rest::vread));
    // every operation, from the one table that declares it
    for op in crate::ops::OPERATIONS {
        fhir = fhir.route(&op.path(), op.route());
    }
    // an unknown URL under the FHIR base is part of the API: its 404 carries CORS too
    let fhir = fhir.fallback(|| async { FhirError::not_found("no such endpoint") });
    // The FHIR API: its bare errors (405, 413, extractor rejections) become
    // OperationOutcomes — here only, so that OAuth errors stay RFC 6749 JSON and the coming
    // member pages keep their HTML error pages.
    let fhir_api = with_body_limits(
        Router::new()
            .nest("/fhir", fhir)
            // the base with a trailing slash is the same endpoint
            .route(
                "/fhir/",
                post(bundle::transaction_or_batch).get(rest::system_search),
            )
            .layer(middleware::from_fn_with_state(
                state.clone(),
                count_forbidden,
            )),
        &state,
    )
    .layer(middleware::from_fn(errors_as_operation_outcomes));
    // The authorization server's endpoints (token, introspection, revocation, JWKS,
    // registration, SMART and UDAP discovery): bare errors become RFC 6749 JSON.
    let oauth = with_body_limits(crate::auth::server::router(state.auth.clone()), &state)
        .layer(middleware::from_fn(errors_as_oauth_errors));
    // CORS (the invariant in ARCHITECTURE.md): the API and the OAuth endpoints answer browser
    // apps from any origin, or from the `cors_origins` list, never with credentials (public
    // SMART clients send bearer tokens, not cookies); routes added outside these two groups
    // — pages that set cookies — get no CORS headers at all.
    // The member's pages (authorize, sign-in, decision): HTML error pages, no CORS.
    let pages = with_body_limits(
        crate::auth::server::pages_router(state.auth.clone()),
        &state,
    )
    .layer(middleware::from_fn(errors_as_pages));
    let cors = cors(&state.cors_origins);
    Router::new()
        .merge(fhir_api.layer(cors.clone()))
        .merge(oauth.layer(cors))
        .merge(pages)
        .route("/health", get(health).with_state(state.clone()))
        .fallback(|| async { FhirError::not_found("no such endpoint") })
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

/// The configured CORS origins (`cors_origins`) as header values; fails on one that is not
/// a valid header value (a start-up error, never a silently open API).
pub fn parse_cors_origins(origins: &[String]) -> anyhow::Result<Vec<HeaderValue>> {
    origins
        .iter()
        .map(|o| {
            HeaderValue::from_str(o.trim_end_matches('/'))
                .map_err(|_| anyhow::anyhow!("CORS origin {o:?} is not a valid origin"))
        })
        .collect()
}

/// The CORS policy of the FHIR API and the OAuth endpoints: `origins` empty → any origin
/// (`Access-Control-Allow-Origin: *`), else exactly those; never credentials.
fn cors(origins: &[HeaderValue]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    let allow = if origins.is_empty() {
        AllowOrigin::from(Any)
    } else {
        AllowOrigin::list(origins.iter().cloned())
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers([header::LOCATION, header::ETAG, header::CONTENT_LOCATION])
}

/// One limit for every body, under the body-read deadline: the tower layer refuses larger
/// requests (413), and the extractors' own 2 MB default is lifted to the same size (a
/// 10,000-member `$bulk-member-match` or a large transaction Bundle is far above 2 MB).
/// Inside each route group's error layer, so that its 413 is answered in the group's form.
fn with_body_limits(routes: Router<SharedState>, state: &SharedState) -> Router {
    routes
        .layer(middleware::from_fn_with_state(state.clone(), bounded_body))
        .with_state(state.clone())
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
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

/// A bare error (a 4xx or 5xx whose Content-Type is not `formed`) — produced outside the
/// handlers: unknown method → 405, body too large → 413, extractor rejections — replaced by
/// the body `answer` gives for its status, keeping what inner layers said in the headers
/// (CORS, `WWW-Authenticate`, `Retry-After`) but not the old body's.
fn replace_bare_error(
    resp: Response,
    formed: impl Fn(&str) -> bool,
    answer: impl FnOnce(StatusCode) -> Response,
) -> Response {
    let status = resp.status();
    let is_formed = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(formed);
    if !(status.is_client_error() || status.is_server_error()) || is_formed {
        return resp;
    }
    let mut out = answer(status);
    for (name, value) in resp.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// FHIR routes: a bare error becomes an OperationOutcome.
async fn errors_as_operation_outcomes(req: Request, next: Next) -> Response {
    let formed =
        |ct: &str| ct.starts_with("application/fhir+json") || ct.starts_with("application/json");
    replace_bare_error(next.run(req).await, formed, |status| {
        let (issue, text) = match status {
            StatusCode::METHOD_NOT_ALLOWED => {
                (IssueType::NotSupported, "method not allowed on this URL")
            }
            StatusCode::PAYLOAD_TOO_LARGE => {
                (IssueType::TooCostly, "the request body is too large")
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                IssueType::NotSupported,
                "unsupported Content-Type; send application/fhir+json",
            ),
            StatusCode::NOT_FOUND => (IssueType::NotFound, "not found"),
            s if s.is_server_error() => (IssueType::Exception, "internal server error"),
            _ => (IssueType::Invalid, "the request could not be processed"),
        };
        FhirError::new(status, issue, text).into_response()
    })
}

/// The member's pages: a bare error (or one the body limits answered as an OperationOutcome)
/// becomes an HTML error page.
async fn errors_as_pages(req: Request, next: Next) -> Response {
    replace_bare_error(
        next.run(req).await,
        |ct| ct.starts_with("text/html"),
        |status| {
            let message = match status {
                StatusCode::METHOD_NOT_ALLOWED => "This page cannot be used that way.",
                StatusCode::PAYLOAD_TOO_LARGE => "The form sent was too large.",
                StatusCode::REQUEST_TIMEOUT => "The form took too long to arrive.",
                s if s.is_server_error() => "The sign-in service failed. Please try again.",
                _ => "This request cannot be handled.",
            };
            crate::auth::pages::error(status, message)
        },
    )
}

/// OAuth routes: a bare error becomes RFC 6749 §5.2 `{"error": …}` JSON.
async fn errors_as_oauth_errors(req: Request, next: Next) -> Response {
    let formed = |ct: &str| ct.starts_with("application/json") || ct.contains("+json");
    replace_bare_error(next.run(req).await, formed, |status| {
        let (error, description) = match status {
            StatusCode::METHOD_NOT_ALLOWED => ("invalid_request", "method not allowed on this URL"),
            StatusCode::PAYLOAD_TOO_LARGE => ("invalid_request", "the request body is too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "invalid_request",
                "unsupported Content-Type; send application/x-www-form-urlencoded",
            ),
            s if s.is_server_error() => ("server_error", "internal server error"),
            _ => ("invalid_request", "the request could not be processed"),
        };
        (
            status,
            axum::Json(serde_json::json!({"error": error, "error_description": description})),
        )
            .into_response()
    })
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
