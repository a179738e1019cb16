//! Member logins (PDex §pdex-112: "The member SHALL authenticate using credentials they have
//! been issued by, or accepted by the Health Plan"): the `member_logins` table, passwords as
//! argon2id hashes (`argon2` crate, its recommended parameters), and the sign-in check with
//! its lockout (`auth::throttle`, keyed per username).
//!
//! `pdex member set-login` / `disable-login` and `serve --demo` write through [`set_login`]
//! (a member's own login) or [`set_representative_login`] (an authorized representative's,
//! linked to a RelatedPerson, §pdex-114) and [`set_disabled`]; the sign-in page checks
//! through [`sign_in`], and [`acts_for`] says whom a login may act for. A disabled login cannot
//! sign in, and the tokens of its authorizations stop working (`auth::liveness`).

use super::throttle::{self, Throttle};
use crate::store::{SqlValue, Store};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use serde_json::Value;

/// The v3-RoleCode relationships that make a RelatedPerson an authorized representative
/// (§pdex-114): powers of attorney (general, durable, healthcare) and guardians.
pub const REPRESENTATIVE_ROLES: [&str; 4] = ["POWATT", "DPOWATT", "HPOWATT", "GUARD"];
const ROLE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";

/// Someone a login may act for: the member, and whom the login is as SMART `fhirUser`
/// (`Patient/{id}` for the member's own login, `RelatedPerson/{id}` — the RelatedPerson
/// linking the representative to that member — for a representative).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub patient_id: String,
    pub fhir_user: String,
}

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
    if patient_id.is_empty() || patient_id.chars().any(char::is_control) {
        return Err(LoginError::Invalid(format!("no Patient {patient_id:?}")));
    }
    if !store.member_lookup().patient_exists(patient_id).await? {
        return Err(LoginError::Invalid(format!(
            "no Patient {patient_id:?} in this store: a login signs in as an existing member"
        )));
    }
    write_login(
        store,
        username,
        &format!("Patient/{patient_id}"),
        patient_id,
        password,
    )
    .await
}

/// Stores a login (replacing one of the same username, enabled again).
async fn write_login(
    store: &Store,
    username: &str,
    fhir_user: &str,
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
    let hash = hash_password(password.to_owned()).await?;
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
            SqlValue::from(fhir_user),
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
        fhir_user: fhir_user.to_owned(),
        patient_id: patient_id.to_owned(),
        disabled: false,
    })
}

/// The member a RelatedPerson lets its person act for: its `patient`, when it is active, in
/// its `period`, and its `relationship` is one of [`REPRESENTATIVE_ROLES`].
pub fn represented(rp: &Value, now_ms: i64) -> Option<String> {
    if rp["active"] == Value::Bool(false) {
        return None;
    }
    let role = rp["relationship"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|cc| {
            cc["coding"].as_array().into_iter().flatten().any(|c| {
                c["system"] == ROLE_SYSTEM
                    && c["code"]
                        .as_str()
                        .is_some_and(|code| REPRESENTATIVE_ROLES.contains(&code))
            })
        });
    let bound = |k: &str| {
        rp["period"][k]
            .as_str()
            .and_then(crate::fhir::datetime::parse)
    };
    let in_period = bound("start").is_none_or(|s| s.low <= now_ms)
        && bound("end").is_none_or(|e| e.high >= now_ms);
    let patient = rp["patient"]["reference"]
        .as_str()?
        .strip_prefix("Patient/")?;
    (role && in_period && !patient.is_empty() && !patient.contains('/')).then(|| patient.to_owned())
}

/// Creates or replaces the login `username` of an authorized representative, linked to the
/// RelatedPerson `related_person`, which must exist and make its person a representative of
/// an existing member ([`represented`]).
pub async fn set_representative_login(
    store: &Store,
    username: &str,
    related_person: &str,
    password: &str,
) -> Result<Login, LoginError> {
    if related_person.is_empty() || related_person.chars().any(char::is_control) {
        return Err(LoginError::Invalid(format!(
            "no RelatedPerson {related_person:?}"
        )));
    }
    let rp = store
        .member_lookup()
        .related_person(related_person)
        .await?
        .ok_or_else(|| {
            LoginError::Invalid(format!("no RelatedPerson {related_person:?} in this store"))
        })?;
    let patient = represented(&rp, now_ms()).ok_or_else(|| {
        LoginError::Invalid(format!(
            "RelatedPerson {related_person:?} does not make its person a representative: it needs active, a current period, a patient and a relationship of {} ({ROLE_SYSTEM})",
            REPRESENTATIVE_ROLES.join(", ")
        ))
    })?;
    write_login(
        store,
        username,
        &format!("RelatedPerson/{related_person}"),
        &patient,
        password,
    )
    .await
}

/// Whom `login` may act for, decided now from the store: the member for a member's login;
/// for a representative, the member of every RelatedPerson of the same person (the linked
/// one and those sharing one of its identifiers) that [`represented`] accepts. Empty when
/// the representation has ended.
pub async fn acts_for(store: &Store, login: &Login) -> anyhow::Result<Vec<Subject>> {
    let Some(rp_id) = login.fhir_user.strip_prefix("RelatedPerson/") else {
        return Ok(vec![Subject {
            patient_id: login.patient_id.clone(),
            fhir_user: login.fhir_user.clone(),
        }]);
    };
    let lookup = store.member_lookup();
    let Some(rp) = lookup.related_person(rp_id).await? else {
        return Ok(Vec::new());
    };
    let mut group = vec![(rp_id.to_owned(), rp.clone())];
    for ident in rp["identifier"].as_array().into_iter().flatten() {
        if let Some(value) = ident["value"].as_str() {
            for (id, other) in lookup
                .related_persons_by_identifier(ident["system"].as_str(), value)
                .await?
            {
                if !group.iter().any(|(g, _)| *g == id) {
                    group.push((id, other));
                }
            }
        }
    }
    let now = now_ms();
    let mut out: Vec<Subject> = Vec::new();
    for (id, person) in group {
        if let Some(patient) = represented(&person, now)
            && !out.iter().any(|s| s.patient_id == patient)
            && lookup.patient_exists(&patient).await?
        {
            out.push(Subject {
                patient_id: patient,
                fhir_user: format!("RelatedPerson/{id}"),
            });
        }
    }
    Ok(out)
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
