//! The authorization endpoint and the member's way through it (SMART App Launch 2.2
//! `app-launch.md` §"Obtain authorization code", RFC 6749 §4.1, RFC 7636, PDex
//! §pdex-111..115):
//!
//! 1. `GET|POST /oauth/authorize` checks the request. A missing or unknown client, or a
//!    `redirect_uri` that is not exactly one the client registered, gets a 400 error page and
//!    no redirect (RFC 6749 §4.1.2.1: "MUST NOT automatically redirect"); every other defect
//!    is redirected back as `error` + `state`: `response_type` other than `code` →
//!    `unsupported_response_type`; a client not registered for the flow →
//!    `unauthorized_client`; `aud` other than our FHIR base, a missing `state`, PKCE missing
//!    or not S256 (SMART: "SHALL NOT support the plain method") → `invalid_request`; nothing
//!    grantable → `invalid_scope`. A good request is kept (`auth_requests`, ten minutes),
//!    bound to the browser by an `HttpOnly`, `SameSite=Lax` cookie (`Secure` over https), and
//!    answered with the sign-in page.
//! 2. `POST /oauth/authorize/signin`: the member's username and password (`logins`). Every
//!    refusal re-renders the sign-in page with 401 and one message.
//! 3. `POST /oauth/authorize/decide`: the member approves or denies, choosing to share or
//!    withhold sensitive data (§pdex-111); approval records the authorization and redirects
//!    with a code, denial with `error=access_denied`.
//!
//! The forms carry the request id and a CSRF token; a form whose token, cookie or request does
//! not match (or has expired) gets a 403 page. Nothing the member types is logged.

use super::authorizations::{self, Approval};
use super::clients::Client;
use super::logins::{self, SignIn};
use super::pages::{self, AppNames};
use super::server::AuthServer;
use super::throttle::Throttle;
use crate::identity::{ClientKind, ListenerInfo, scopes};
use crate::store::SqlValue;
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;

/// The browser-binding cookie.
const COOKIE: &str = "pdex_browser";
/// How long a member has from the authorize request to the decision (seconds).
const REQUEST_LIFETIME_SECONDS: i64 = 600;
/// Where the forms post.
pub const SIGN_IN_PATH: &str = "/oauth/authorize/signin";
pub const DECIDE_PATH: &str = "/oauth/authorize/decide";
/// The one message of every refused sign-in.
pub const SIGN_IN_REFUSED: &str = "The username or password is not right, or this account is locked for a while after too many attempts. Check them and try again.";

type Params = HashMap<String, String>;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `GET /oauth/authorize`.
pub async fn authorize_get(
    State(auth): State<Arc<AuthServer>>,
    listener: Option<Extension<ListenerInfo>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    match parse_params(query.unwrap_or_default().as_bytes()) {
        Ok(params) => start(&auth, listener.map(|l| l.0), &headers, params).await,
        Err(why) => pages::error(StatusCode::BAD_REQUEST, &why),
    }
}

/// `POST /oauth/authorize` (SMART `authorize-post`: the same parameters as a form).
pub async fn authorize_post(
    State(auth): State<Arc<AuthServer>>,
    listener: Option<Extension<ListenerInfo>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match form_params(&headers, &body) {
        Ok(params) => start(&auth, listener.map(|l| l.0), &headers, params).await,
        Err(resp) => *resp,
    }
}

/// `application/x-www-form-urlencoded` pairs; a repeated parameter is an error (RFC 6749
/// §3.1: "Request and response parameters MUST NOT be included more than once").
fn parse_params(bytes: &[u8]) -> Result<Params, String> {
    let mut map = HashMap::new();
    for (k, v) in form_urlencoded::parse(bytes) {
        if map.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(format!("The parameter {k:?} appears more than once."));
        }
    }
    Ok(map)
}

/// The refusal is boxed: a `Response` is large (clippy's `result_large_err`).
fn form_params(headers: &HeaderMap, body: &[u8]) -> Result<Params, Box<Response>> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(Box::new(pages::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "This page takes a form (application/x-www-form-urlencoded).",
        )));
    }
    parse_params(body).map_err(|why| Box::new(pages::error(StatusCode::BAD_REQUEST, &why)))
}

fn param<'a>(p: &'a Params, k: &str) -> Option<&'a str> {
    p.get(k).map(String::as_str).filter(|v| !v.is_empty())
}

/// A store failure as an error page (503 while the database is unavailable).
fn failure(e: anyhow::Error) -> Response {
    if crate::fhir::is_unavailable(&e) {
        tracing::warn!(target: "pdex::auth", error = %format!("{e:#}"), "authorization page: database unavailable");
        let mut resp = pages::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The sign-in service is unavailable for a moment. Please try again.",
        );
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(crate::fhir::error::RETRY_AFTER_SECONDS),
        );
        return resp;
    }
    tracing::error!(target: "pdex::auth", error = %format!("{e:#}"), "authorization page failed");
    pages::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "The sign-in service failed. Please try again.",
    )
}

/// A redirect back to the client (303: the browser follows with GET), with `pairs` added to
/// the registered redirect URI's query.
fn redirect(redirect_uri: &str, pairs: &[(&str, &str)]) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        // registered URIs are parsed at registration; this cannot happen
        return pages::error(
            StatusCode::BAD_REQUEST,
            "The app's redirect URI is not valid.",
        );
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    let mut resp = StatusCode::SEE_OTHER.into_response();
    match HeaderValue::from_str(url.as_str()) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => {
            return pages::error(
                StatusCode::BAD_REQUEST,
                "The app's redirect URI is not valid.",
            );
        }
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// An RFC 6749 §4.1.2.1 error redirect.
fn redirect_error(
    redirect_uri: &str,
    error: &str,
    description: &str,
    state: Option<&str>,
) -> Response {
    tracing::info!(target: "pdex::auth", error, reason = description, "authorization request refused");
    let mut pairs = vec![("error", error), ("error_description", description)];
    if let Some(s) = state {
        pairs.push(("state", s));
    }
    redirect(redirect_uri, &pairs)
}

/// The FHIR bases an authorization may name as `aud`: ours, and the one of the listener the
/// request came in on.
fn audience_ok(auth: &AuthServer, listener: Option<&ListenerInfo>, aud: &str) -> bool {
    let aud = aud.trim_end_matches('/');
    aud == auth.settings.fhir_base || listener.is_some_and(|l| l.base_url == aud)
}

/// What a client may be granted in this flow: an `app` its registered `patient/` scopes, or
/// all of [`scopes::APP_DEFAULT_SCOPES`] when it registered none; a `payer` (a new health
/// plan the member sends their data to) read scopes only, from its registration.
fn ceiling(client: &Client) -> Vec<String> {
    match client.kind {
        ClientKind::App if client.scopes.is_empty() => scopes::APP_DEFAULT_SCOPES
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        ClientKind::App => client.scopes.clone(),
        _ => scopes::as_patient_read(&client.scopes),
    }
}

async fn start(
    auth: &AuthServer,
    listener: Option<ListenerInfo>,
    headers: &HeaderMap,
    p: Params,
) -> Response {
    let Some(client_id) = param(&p, "client_id") else {
        return pages::error(
            StatusCode::BAD_REQUEST,
            "The app did not say who it is (client_id is missing).",
        );
    };
    let client = match super::token::active_client(auth, client_id).await {
        Ok(c) => c,
        Err(e) if e.status == StatusCode::BAD_REQUEST => {
            return pages::error(
                StatusCode::BAD_REQUEST,
                "This app is not registered with your health plan, or it was disabled.",
            );
        }
        Err(e) => {
            return pages::error(e.status, "The sign-in service failed. Please try again.");
        }
    };
    // SMART: the redirect URI must exactly match a registered one; otherwise no redirect
    let Some(redirect_uri) = param(&p, "redirect_uri")
        .filter(|u| client.redirect_uris.iter().any(|r| r == u))
        .map(str::to_owned)
    else {
        return pages::error(
            StatusCode::BAD_REQUEST,
            "The app's redirect URI is missing or is not one it registered.",
        );
    };
    let state = param(&p, "state");
    let refuse = |error: &str, why: &str| redirect_error(&redirect_uri, error, why, state);
    match param(&p, "response_type") {
        Some("code") => {}
        Some(_) => {
            return refuse("unsupported_response_type", "response_type must be code");
        }
        None => return refuse("invalid_request", "response_type is required"),
    }
    if !matches!(client.kind, ClientKind::App | ClientKind::Payer)
        || !client.grant_types.iter().any(|g| g == "authorization_code")
    {
        return refuse(
            "unauthorized_client",
            "this client is not registered for the authorization_code grant",
        );
    }
    let Some(state) = state else {
        return refuse("invalid_request", "state is required");
    };
    match param(&p, "aud") {
        Some(aud) if audience_ok(auth, listener.as_ref(), aud) => {}
        Some(_) => {
            return refuse("invalid_request", "aud must be this server's FHIR base URL");
        }
        None => return refuse("invalid_request", "aud is required (the FHIR base URL)"),
    }
    if param(&p, "launch").is_some() {
        return refuse(
            "invalid_request",
            "EHR launch is not supported: make a standalone launch without launch",
        );
    }
    match (
        param(&p, "code_challenge"),
        param(&p, "code_challenge_method"),
    ) {
        (Some(c), Some("S256")) if authorizations::is_s256_challenge(c) => {}
        (Some(_), Some("S256")) => {
            return refuse(
                "invalid_request",
                "code_challenge must be a base64url SHA-256 (43 characters)",
            );
        }
        (_, Some(m)) => {
            return refuse(
                "invalid_request",
                &format!("code_challenge_method {m:?} is not supported: use S256"),
            );
        }
        _ => {
            return refuse(
                "invalid_request",
                "PKCE is required: code_challenge and code_challenge_method=S256",
            );
        }
    }
    let requested = scopes::split(param(&p, "scope").unwrap_or_default());
    let granted = scopes::negotiate_launch(&requested, &ceiling(&client));
    if granted.is_empty() {
        return refuse(
            "invalid_scope",
            "none of the requested scopes can be granted to this app",
        );
    }
    let (browser, new_cookie) = match browser_cookie(headers) {
        Some(b) => (b, false),
        None => (authorizations::new_secret(), true),
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let csrf = authorizations::new_secret();
    let pending = Pending {
        id: id.clone(),
        csrf: csrf.clone(),
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        scopes: granted,
        state: state.to_owned(),
        code_challenge: param(&p, "code_challenge").unwrap_or_default().to_owned(),
        nonce: param(&p, "nonce").map(str::to_owned),
        username: None,
    };
    if let Err(e) = pending.insert(auth, &browser).await {
        return failure(e);
    }
    let mut resp = pages::sign_in(
        StatusCode::OK,
        &AppNames::of(&client),
        SIGN_IN_PATH,
        &id,
        &csrf,
        None,
    );
    if new_cookie {
        set_cookie(&mut resp, &browser, auth.settings.secure_cookies());
    }
    resp
}

/// The browser-binding cookie's value, if the request carries one.
fn browser_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && (32..=64).contains(&value.len()))
        .map(|(_, value)| value.to_owned())
}

fn set_cookie(resp: &mut Response, value: &str, secure: bool) {
    let cookie = format!(
        "{COOKIE}={value}; Path=/oauth/authorize; Max-Age={REQUEST_LIFETIME_SECONDS}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
}

/// An authorization request in progress.
struct Pending {
    id: String,
    csrf: String,
    client_id: String,
    redirect_uri: String,
    scopes: Vec<String>,
    state: String,
    code_challenge: String,
    nonce: Option<String>,
    username: Option<String>,
}

impl Pending {
    async fn insert(&self, auth: &AuthServer, browser: &str) -> anyhow::Result<()> {
        let now = now_ms();
        let mut tx = auth.store.db.begin().await?;
        tx.execute(
            "DELETE FROM auth_requests WHERE expires_at < ?",
            vec![SqlValue::from(now)],
        )
        .await?;
        tx.execute(
            "INSERT INTO auth_requests (id, browser_hash, csrf, client_id, redirect_uri, scopes, state, code_challenge, nonce, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            vec![
                SqlValue::from(&self.id),
                SqlValue::from(authorizations::digest(browser)),
                SqlValue::from(&self.csrf),
                SqlValue::from(&self.client_id),
                SqlValue::from(&self.redirect_uri),
                SqlValue::from(self.scopes.join(" ")),
                SqlValue::from(&self.state),
                SqlValue::from(&self.code_challenge),
                SqlValue::from(self.nonce.clone()),
                SqlValue::from(now + REQUEST_LIFETIME_SECONDS * 1000),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The request a form names, if the form's CSRF token and the browser's cookie are the
    /// ones it was issued with and it has not expired.
    async fn load(
        auth: &AuthServer,
        headers: &HeaderMap,
        form: &Params,
    ) -> anyhow::Result<Option<Pending>> {
        let (Some(id), Some(csrf), Some(browser)) = (
            param(form, "request"),
            param(form, "csrf"),
            browser_cookie(headers),
        ) else {
            return Ok(None);
        };
        let rows = auth
            .store
            .db
            .fetch(
                "SELECT id, csrf, client_id, redirect_uri, scopes, state, code_challenge, nonce, username, browser_hash, expires_at FROM auth_requests WHERE id = ?",
                &[SqlValue::from(id)],
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let same = |a: &str, b: &str| {
            a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |x, (p, q)| x | (p ^ q)) == 0
        };
        if !same(&r.text(1)?, csrf)
            || !same(&r.text(9)?, &authorizations::digest(&browser))
            || r.int(10)? < now_ms()
        {
            return Ok(None);
        }
        Ok(Some(Pending {
            id: r.text(0)?,
            csrf: r.text(1)?,
            client_id: r.text(2)?,
            redirect_uri: r.text(3)?,
            scopes: scopes::split(&r.text(4)?),
            state: r.text(5)?,
            code_challenge: r.text(6)?,
            nonce: r.opt_text(7)?,
            username: r.opt_text(8)?,
        }))
    }

    async fn signed_in(&self, auth: &AuthServer, username: &str) -> anyhow::Result<()> {
        let mut tx = auth.store.db.begin().await?;
        tx.execute(
            "UPDATE auth_requests SET username = ? WHERE id = ?",
            vec![SqlValue::from(username), SqlValue::from(&self.id)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete(&self, auth: &AuthServer) -> anyhow::Result<()> {
        let mut tx = auth.store.db.begin().await?;
        tx.execute(
            "DELETE FROM auth_requests WHERE id = ?",
            vec![SqlValue::from(&self.id)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The 403 page of a form that is not this browser's live request.
fn stale_form() -> Response {
    pages::error(
        StatusCode::FORBIDDEN,
        "This form has expired or did not come from this browser. Go back to the app and start again.",
    )
}

/// The form's request, the client it is for, and the page naming it.
async fn form_request(
    auth: &AuthServer,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Params, Pending, Client), Response> {
    let form = form_params(headers, body).map_err(|r| *r)?;
    let pending = match Pending::load(auth, headers, &form).await {
        Ok(Some(p)) => p,
        Ok(None) => return Err(stale_form()),
        Err(e) => return Err(failure(e)),
    };
    let client = match super::token::active_client(auth, &pending.client_id).await {
        Ok(c) => c,
        Err(e) if e.status == StatusCode::BAD_REQUEST => {
            return Err(pages::error(
                StatusCode::BAD_REQUEST,
                "This app is no longer registered with your health plan.",
            ));
        }
        Err(e) => {
            return Err(pages::error(
                e.status,
                "The sign-in service failed. Please try again.",
            ));
        }
    };
    Ok((form, pending, client))
}

/// `POST /oauth/authorize/signin`.
pub async fn sign_in(
    State(auth): State<Arc<AuthServer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, pending, client) = match form_request(&auth, &headers, &body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let app = AppNames::of(&client);
    let lockout = Throttle::new(
        auth.store.clone(),
        auth.settings.patient_access.login_failure_limit,
        auth.settings.patient_access.login_lockout_seconds,
    );
    let outcome = logins::sign_in(
        &auth.store,
        &lockout,
        param(&form, "username").unwrap_or_default(),
        form.get("password").map(String::as_str).unwrap_or_default(),
    )
    .await;
    match outcome {
        Ok(SignIn::Accepted(login)) => {
            if let Err(e) = pending.signed_in(&auth, &login.username).await {
                return failure(e);
            }
            pages::authorize(
                &app,
                DECIDE_PATH,
                &pending.id,
                &pending.csrf,
                &login.username,
                &pending.scopes,
            )
        }
        Ok(SignIn::Refused) => pages::sign_in(
            StatusCode::UNAUTHORIZED,
            &app,
            SIGN_IN_PATH,
            &pending.id,
            &pending.csrf,
            Some(SIGN_IN_REFUSED),
        ),
        Err(e) => failure(e),
    }
}

/// `POST /oauth/authorize/decide`.
pub async fn decide(
    State(auth): State<Arc<AuthServer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, pending, _client) = match form_request(&auth, &headers, &body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let Some(username) = pending.username.clone() else {
        return pages::error(
            StatusCode::FORBIDDEN,
            "Sign in before you decide. Go back to the app and start again.",
        );
    };
    let allow_sensitive = match param(&form, "sensitive") {
        Some("share") => true,
        // the default, pre-selected choice: withhold (§pdex-111)
        Some("withhold") | None => false,
        Some(_) => {
            return pages::error(
                StatusCode::BAD_REQUEST,
                "Choose whether to share sensitive information.",
            );
        }
    };
    let approve = match param(&form, "decision") {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return pages::error(StatusCode::BAD_REQUEST, "Choose Allow or Don't allow.");
        }
    };
    if let Err(e) = pending.delete(&auth).await {
        return failure(e);
    }
    if !approve {
        tracing::info!(target: "pdex::audit", client_id = %pending.client_id, "the member denied an authorization");
        return redirect_error(
            &pending.redirect_uri,
            "access_denied",
            "the member did not allow access",
            Some(&pending.state),
        );
    }
    let login = match logins::get(&auth.store, &username).await {
        Ok(Some(l)) if !l.disabled => l,
        Ok(_) => return stale_form(),
        Err(e) => return failure(e),
    };
    let approval = Approval {
        client_id: &pending.client_id,
        username: &login.username,
        fhir_user: &login.fhir_user,
        patient_id: &login.patient_id,
        scopes: &pending.scopes,
        allow_sensitive,
        redirect_uri: &pending.redirect_uri,
        code_challenge: &pending.code_challenge,
        nonce: pending.nonce.as_deref(),
        code_lifetime: auth.settings.patient_access.authorization_code_lifetime,
    };
    match authorizations::approve(&auth.store, &approval).await {
        Ok(code) => {
            tracing::info!(target: "pdex::audit", client_id = %pending.client_id, allow_sensitive, "the member approved an authorization");
            redirect(
                &pending.redirect_uri,
                &[("code", &code), ("state", &pending.state)],
            )
        }
        Err(e) => failure(e),
    }
}
