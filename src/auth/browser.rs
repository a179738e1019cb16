//! What the member's pages (`authorize`, `account`) share: form bodies, the sign-in check,
//! the cookies that bind a browser, the constant-time comparison of form tokens, and store
//! failures answered as error pages.

use super::logins::{self, SignIn};
use super::pages;
use super::server::AuthServer;
use super::throttle::Throttle;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use std::collections::HashMap;

/// A page's parameters (query or form).
pub type Params = HashMap<String, String>;

/// `application/x-www-form-urlencoded` pairs; a repeated parameter is an error (RFC 6749
/// §3.1: "Request and response parameters MUST NOT be included more than once").
pub fn parse_params(bytes: &[u8]) -> Result<Params, String> {
    let mut map = HashMap::new();
    for (k, v) in form_urlencoded::parse(bytes) {
        if map.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(format!("The parameter {k:?} appears more than once."));
        }
    }
    Ok(map)
}

/// The form of a page request; `Err` is the error page to answer (boxed: a `Response` is
/// large).
pub fn form_params(headers: &HeaderMap, body: &[u8]) -> Result<Params, Box<Response>> {
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

/// A non-empty parameter.
pub fn param<'a>(p: &'a Params, k: &str) -> Option<&'a str> {
    p.get(k).map(String::as_str).filter(|v| !v.is_empty())
}

/// The sign-in form's check (`username`, `password`) under the login lockout
/// (`--login-failure-limit` within `--login-lockout-seconds`).
pub async fn sign_in(auth: &AuthServer, form: &Params) -> anyhow::Result<SignIn> {
    let lockout = Throttle::new(
        auth.store.clone(),
        auth.settings.patient_access.login_failure_limit,
        auth.settings.patient_access.login_lockout_seconds,
    );
    logins::sign_in(
        &auth.store,
        &lockout,
        param(form, "username").unwrap_or_default(),
        form.get("password").map(String::as_str).unwrap_or_default(),
    )
    .await
}

/// A store failure as an error page (503 with `Retry-After` while the database is
/// unavailable, issue 15; 500 otherwise).
pub fn failure(e: anyhow::Error) -> Response {
    if crate::fhir::is_unavailable(&e) {
        tracing::warn!(target: "pdex::auth", error = %format!("{e:#}"), "member page: database unavailable");
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
    tracing::error!(target: "pdex::auth", error = %format!("{e:#}"), "member page failed");
    pages::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "The sign-in service failed. Please try again.",
    )
}

/// The value of the cookie `name`, if the request carries a well-formed one (our values are
/// 43-character random secrets).
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, value)| *n == name && (32..=64).contains(&value.len()))
        .map(|(_, value)| value.to_owned())
}

/// Sets the cookie `name` for `path`: `HttpOnly` (no script reads it), `SameSite=Lax` (not
/// sent on cross-site posts), `Secure` when the pages are served over https.
pub fn set_cookie(
    resp: &mut Response,
    name: &str,
    value: &str,
    path: &str,
    max_age_seconds: i64,
    secure: bool,
) {
    let cookie = format!(
        "{name}={value}; Path={path}; Max-Age={max_age_seconds}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Constant-time equality of two tokens.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |x, (p, q)| x | (p ^ q)) == 0
}
