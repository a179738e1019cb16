//! The member's account page (DESIGN.md §5; SMART `management_endpoint`): `GET
//! /oauth/account`, behind the same sign-in as the authorization flow, lists the apps and
//! plans the member has authorized — name, organization, when, what was granted, the
//! sensitive-data choice — each with a form posting to `/oauth/account/revoke` (a hidden
//! `grant`, a submit button named `revoke`). Revoking ends that authorization's access and
//! refresh tokens at once (`authorizations::revoke`, checked by `auth::liveness` on every
//! request and by introspection).
//!
//! A session is a `member_sessions` row found by an `HttpOnly`, `SameSite=Lax` cookie (its
//! SHA-256 stored), with a CSRF token for its forms; a fresh session id is issued at sign-in
//! (no fixation), and it lasts fifteen minutes.

use super::authorizations;
use super::browser::{Params, failure, form_params, param, same_token};
use super::logins::SignIn;
use super::pages::{self, AccountEntry, AppNames};
use super::server::AuthServer;
use crate::store::SqlValue;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

const COOKIE: &str = "pdex_account";
pub const ACCOUNT_PATH: &str = "/oauth/account";
pub const SIGN_IN_PATH: &str = "/oauth/account/signin";
pub const REVOKE_PATH: &str = "/oauth/account/revoke";
/// How long an account session lasts (seconds).
const SESSION_SECONDS: i64 = 900;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// An account-page session.
struct Session {
    id_hash: String,
    csrf: String,
    username: Option<String>,
}

impl Session {
    /// Starts a session (signed in as `username`, or not yet); returns it and its cookie.
    async fn create(
        auth: &AuthServer,
        username: Option<&str>,
    ) -> anyhow::Result<(Session, String)> {
        let cookie = authorizations::new_secret();
        let session = Session {
            id_hash: authorizations::digest(&cookie),
            csrf: authorizations::new_secret(),
            username: username.map(str::to_owned),
        };
        let now = now_ms();
        let mut tx = auth.store.db.begin().await?;
        tx.execute(
            "DELETE FROM member_sessions WHERE expires_at < ?",
            vec![SqlValue::from(now)],
        )
        .await?;
        tx.execute(
            "INSERT INTO member_sessions (id_hash, csrf, username, expires_at) VALUES (?,?,?,?)",
            vec![
                SqlValue::from(&session.id_hash),
                SqlValue::from(&session.csrf),
                SqlValue::from(session.username.clone()),
                SqlValue::from(now + SESSION_SECONDS * 1000),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok((session, cookie))
    }

    /// The live session of the request's cookie.
    async fn of(auth: &AuthServer, headers: &HeaderMap) -> anyhow::Result<Option<Session>> {
        let Some(cookie) = super::browser::cookie(headers, COOKIE) else {
            return Ok(None);
        };
        let rows = auth
            .store
            .db
            .fetch(
                "SELECT id_hash, csrf, username FROM member_sessions WHERE id_hash = ? AND expires_at >= ?",
                &[
                    SqlValue::from(authorizations::digest(&cookie)),
                    SqlValue::from(now_ms()),
                ],
            )
            .await?;
        rows.first()
            .map(|r| {
                Ok(Session {
                    id_hash: r.text(0)?,
                    csrf: r.text(1)?,
                    username: r.opt_text(2)?,
                })
            })
            .transpose()
    }

    async fn end(&self, auth: &AuthServer) -> anyhow::Result<()> {
        let mut tx = auth.store.db.begin().await?;
        tx.execute(
            "DELETE FROM member_sessions WHERE id_hash = ?",
            vec![SqlValue::from(&self.id_hash)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The session of a form whose CSRF token is this session's.
    async fn of_form(
        auth: &AuthServer,
        headers: &HeaderMap,
        form: &Params,
    ) -> anyhow::Result<Option<Session>> {
        let session = Session::of(auth, headers).await?;
        Ok(session.filter(|s| param(form, "csrf").is_some_and(|c| same_token(c, &s.csrf))))
    }
}

fn with_cookie(mut resp: Response, cookie: &str, secure: bool) -> Response {
    super::browser::set_cookie(
        &mut resp,
        COOKIE,
        cookie,
        ACCOUNT_PATH,
        SESSION_SECONDS,
        secure,
    );
    resp
}

fn stale_form() -> Response {
    pages::error(
        StatusCode::FORBIDDEN,
        "This form has expired or did not come from this browser. Open your account page again.",
    )
}

/// The account page of a signed-in session.
async fn account_page(
    auth: &AuthServer,
    session: &Session,
    username: &str,
    notice: Option<&str>,
) -> Response {
    let entries = match entries(auth, username).await {
        Ok(e) => e,
        Err(e) => return failure(e),
    };
    pages::account(username, &session.csrf, REVOKE_PATH, &entries, notice)
}

/// What `username` has authorized and not revoked, newest first, as the page shows it.
async fn entries(auth: &AuthServer, username: &str) -> anyhow::Result<Vec<AccountEntry>> {
    let mut out = Vec::new();
    for a in authorizations::list_active(&auth.store, username).await? {
        let client = super::clients::get(&auth.store, &a.client_id).await?;
        let names = client.as_ref().map(AppNames::of);
        let own = a.fhir_user == format!("Patient/{}", a.patient_id);
        out.push(AccountEntry {
            name: names
                .as_ref()
                .map_or_else(|| a.client_id.clone(), |n| n.name.clone()),
            organization: names.and_then(|n| n.organization),
            when: crate::fhir::datetime::format_instant(a.created_at)
                .chars()
                .take(10)
                .collect(),
            for_whom: if own {
                String::new()
            } else {
                format!("Patient/{}", a.patient_id)
            },
            sensitive: if a.allow_sensitive {
                "shared"
            } else {
                "withheld"
            },
            asks: pages::describe(&a.scopes),
            id: a.id,
        });
    }
    Ok(out)
}

/// `GET /oauth/account`: the list when signed in, the sign-in page otherwise.
pub async fn account(State(auth): State<Arc<AuthServer>>, headers: HeaderMap) -> Response {
    match Session::of(&auth, &headers).await {
        Ok(Some(s)) if s.username.is_some() => {
            let username = s.username.clone().unwrap_or_default();
            account_page(&auth, &s, &username, None).await
        }
        Ok(_) => match Session::create(&auth, None).await {
            Ok((s, cookie)) => with_cookie(
                pages::sign_in(StatusCode::OK, None, SIGN_IN_PATH, "account", &s.csrf, None),
                &cookie,
                auth.settings.secure_cookies(),
            ),
            Err(e) => failure(e),
        },
        Err(e) => failure(e),
    }
}

/// `POST /oauth/account/signin`.
pub async fn sign_in(
    State(auth): State<Arc<AuthServer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match form_params(&headers, &body) {
        Ok(f) => f,
        Err(resp) => return *resp,
    };
    let session = match Session::of_form(&auth, &headers, &form).await {
        Ok(Some(s)) => s,
        Ok(None) => return stale_form(),
        Err(e) => return failure(e),
    };
    let outcome = super::browser::sign_in(&auth, &form).await;
    match outcome {
        Ok(SignIn::Accepted(login)) => {
            // a new session id at sign-in: a cookie planted before it is worth nothing after
            if let Err(e) = session.end(&auth).await {
                return failure(e);
            }
            match Session::create(&auth, Some(&login.username)).await {
                Ok((_, cookie)) => {
                    let mut resp = StatusCode::SEE_OTHER.into_response();
                    resp.headers_mut()
                        .insert(header::LOCATION, HeaderValue::from_static(ACCOUNT_PATH));
                    with_cookie(
                        pages::with_page_headers(resp),
                        &cookie,
                        auth.settings.secure_cookies(),
                    )
                }
                Err(e) => failure(e),
            }
        }
        Ok(SignIn::Refused) => pages::sign_in(
            StatusCode::UNAUTHORIZED,
            None,
            SIGN_IN_PATH,
            "account",
            &session.csrf,
            Some(super::authorize::SIGN_IN_REFUSED),
        ),
        Err(e) => failure(e),
    }
}

/// `POST /oauth/account/revoke` with `grant` (and `revoke`): ends that authorization.
pub async fn revoke(
    State(auth): State<Arc<AuthServer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match form_params(&headers, &body) {
        Ok(f) => f,
        Err(resp) => return *resp,
    };
    let session = match Session::of_form(&auth, &headers, &form).await {
        Ok(Some(s)) => s,
        Ok(None) => return stale_form(),
        Err(e) => return failure(e),
    };
    let Some(username) = session.username.clone() else {
        return stale_form();
    };
    let Some(id) = param(&form, "grant") else {
        return pages::error(StatusCode::BAD_REQUEST, "Choose the access to stop.");
    };
    // only the member's own authorizations: another's id is as if unknown
    let found = match authorizations::get(&auth.store, id).await {
        Ok(a) => a.filter(|a| a.username == username),
        Err(e) => return failure(e),
    };
    let Some(a) = found else {
        return pages::error(
            StatusCode::NOT_FOUND,
            "There is no such access on your account.",
        );
    };
    if let Err(e) = authorizations::revoke(&auth.store, &a.id).await {
        return failure(e);
    }
    tracing::info!(target: "pdex::audit", client_id = %a.client_id, authorization = %a.id, "the member revoked an authorization");
    let name = match super::clients::get(&auth.store, &a.client_id).await {
        Ok(Some(c)) => c.name,
        Ok(None) => a.client_id.clone(),
        Err(e) => return failure(e),
    };
    account_page(
        &auth,
        &session,
        &username,
        Some(&format!("{name} can no longer see your records.")),
    )
    .await
}
