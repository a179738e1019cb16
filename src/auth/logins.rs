//! Member logins (PDex §pdex-112: "The member SHALL authenticate using credentials they have
//! been issued by, or accepted by the Health Plan"): the `member_logins` table, passwords as
//! argon2id hashes (`argon2` crate, its recommended parameters), and the sign-in check with
//! its lockout (`auth::throttle`, keyed per username).
//!
//! `pdex member set-login` / `disable-login` and `serve --demo` write through [`set_login`]
//! and [`set_disabled`]; the sign-in page checks through [`sign_in`]. A disabled login cannot
//! sign in, and the tokens of its authorizations stop working (`auth::liveness`).

use super::throttle::{self, Throttle};
use crate::store::{SqlValue, Store};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};

/// One member login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    /// Whom the login signs in as: `Patient/{id}` (SMART `fhirUser`).
    pub fhir_user: String,
    /// The member the login acts for.
    pub patient_id: String,
    pub disabled: bool,
}

/// Why a login cannot be set.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// The outcome of a sign-in. The page shows one message for every refusal (an unknown user,
/// a wrong password, a locked or disabled login), so that it tells an attacker nothing.
#[derive(Debug)]
pub enum SignIn {
    Accepted(Login),
    Refused,
}

/// Shortest and longest password accepted.
const PASSWORD_LEN: std::ops::RangeInclusive<usize> = 8..=1024;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A username as stored and compared: trimmed; 1 to 128 characters, no control characters.
pub fn normalize_username(username: &str) -> Result<String, LoginError> {
    let u = username.trim();
    if u.is_empty() || u.chars().count() > 128 || u.chars().any(char::is_control) {
        return Err(LoginError::Invalid(
            "a username is 1 to 128 characters without control characters".into(),
        ));
    }
    Ok(u.to_owned())
}

/// The argon2id hash (PHC string) of `password`; runs on a blocking thread (it takes tens of
/// milliseconds of CPU by design).
async fn hash_password(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
    })
    .await?
}

/// Does `password` match the PHC string `hash`? On a blocking thread.
async fn password_matches(password: String, hash: String) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok()
    })
    .await
    .map_err(anyhow::Error::from)
}

/// A hash no password matches, verified for unknown usernames so that they take as long as
/// known ones.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        Argon2::default()
            .hash_password(uuid::Uuid::new_v4().to_string().as_bytes())
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// Creates or replaces the login `username` for the member `patient_id` (who must exist as
/// a Patient), with `password` (one line; 8 to 1024 characters). A replaced login is enabled
/// again.
pub async fn set_login(
    store: &Store,
    username: &str,
    patient_id: &str,
    password: &str,
) -> Result<Login, LoginError> {
    let username = normalize_username(username)?;
    if !PASSWORD_LEN.contains(&password.chars().count()) {
        return Err(LoginError::Invalid(format!(
            "a password is {} to {} characters",
            PASSWORD_LEN.start(),
            PASSWORD_LEN.end()
        )));
    }
    if patient_id.is_empty() || patient_id.chars().any(char::is_control) {
        return Err(LoginError::Invalid(format!("no Patient {patient_id:?}")));
    }
    if !store.member_lookup().patient_exists(patient_id).await? {
        return Err(LoginError::Invalid(format!(
            "no Patient {patient_id:?} in this store: a login signs in as an existing member"
        )));
    }
    let hash = hash_password(password.to_owned()).await?;
    let fhir_user = format!("Patient/{patient_id}");
    let now = now_ms();
    let mut tx = store.db.begin().await?;
    tx.execute(
        "DELETE FROM member_logins WHERE username = ?",
        vec![SqlValue::from(&username)],
    )
    .await?;
    tx.execute(
        "INSERT INTO member_logins (username, fhir_user, patient_id, password_hash, disabled, created_at, updated_at) VALUES (?,?,?,?,?,?,?)",
        vec![
            SqlValue::from(&username),
            SqlValue::from(&fhir_user),
            SqlValue::from(patient_id),
            SqlValue::from(hash),
            SqlValue::from(false),
            SqlValue::from(now),
            SqlValue::from(now),
        ],
    )
    .await?;
    tx.commit().await?;
    tracing::info!(target: "pdex::auth", "member login set");
    Ok(Login {
        username,
        fhir_user,
        patient_id: patient_id.to_owned(),
        disabled: false,
    })
}

/// Disables (or enables) a login; false when there is no such login.
pub async fn set_disabled(store: &Store, username: &str, disabled: bool) -> anyhow::Result<bool> {
    let mut tx = store.db.begin().await?;
    let n = tx
        .execute(
            "UPDATE member_logins SET disabled = ?, updated_at = ? WHERE username = ?",
            vec![
                SqlValue::from(disabled),
                SqlValue::from(now_ms()),
                SqlValue::from(username.trim()),
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(n > 0)
}

/// The login `username`, if there is one.
pub async fn get(store: &Store, username: &str) -> anyhow::Result<Option<Login>> {
    Ok(fetch(store, username).await?.map(|(login, _)| login))
}

async fn fetch(store: &Store, username: &str) -> anyhow::Result<Option<(Login, String)>> {
    let rows = store
        .db
        .fetch(
            "SELECT username, fhir_user, patient_id, disabled, password_hash FROM member_logins WHERE username = ?",
            &[SqlValue::from(username)],
        )
        .await?;
    rows.into_iter()
        .next()
        .map(|r| {
            Ok((
                Login {
                    username: r.text(0)?,
                    fhir_user: r.text(1)?,
                    patient_id: r.text(2)?,
                    disabled: r.flag(3)?,
                },
                r.text(4)?,
            ))
        })
        .transpose()
}

/// Checks a sign-in: refused while the username is locked (the password is not even
/// checked), for an unknown username, a wrong password or a disabled login; each refusal
/// counts towards the lockout, a success clears the count.
pub async fn sign_in(
    store: &Store,
    lockout: &Throttle,
    username: &str,
    password: &str,
) -> anyhow::Result<SignIn> {
    let Ok(username) = normalize_username(username) else {
        return Ok(SignIn::Refused);
    };
    let key = throttle::login_key(&username);
    if lockout.login_locked(&key).await?.is_some() {
        tracing::info!(target: "pdex::auth", "sign-in refused: the login is locked");
        return Ok(SignIn::Refused);
    }
    let found = fetch(store, &username).await?;
    let hash = found
        .as_ref()
        .map_or_else(|| decoy_hash().to_owned(), |(_, h)| h.clone());
    let matches = password_matches(password.to_owned(), hash).await?;
    match found {
        Some((login, _)) if matches && !login.disabled => {
            lockout.clear(&key).await?;
            Ok(SignIn::Accepted(login))
        }
        _ => {
            lockout.record_login_failure(&key).await?;
            tracing::info!(target: "pdex::auth", "sign-in refused");
            Ok(SignIn::Refused)
        }
    }
}
