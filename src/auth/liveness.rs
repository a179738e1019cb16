//! Is an access still live? The one check, shared by the resource server (every request with
//! a token: [`crate::auth::AuthServer::check_live`]), introspection, and the export engine
//! (every job when it starts and when it resumes): the client exists and is enabled, the
//! token was not revoked, and — for a payer's member-scoped token — the stored consent it was
//! issued on is still active and in its period (PDex §pdex-167: consent "at the time of
//! execution"; `pdex consent revoke` stops what it granted at once); for an app's token (the
//! authorization-code flow), the member's authorization is not revoked and the member's login
//! not disabled.
//!
//! One statement, no cache, so `pdex client disable`, `/oauth/revoke` and a consent
//! revocation made by any process on the same database take effect on the next request.

use crate::identity::GrantRef;
use crate::store::{SqlValue, Store};

/// Why an access is no longer live (the text is for the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dead {
    Refused(String),
    /// The database is unavailable (fail closed: nothing is served on this access now).
    Unavailable(String),
    /// The check failed otherwise (fail closed).
    Internal(String),
}

/// Checks `client_id` and `grant` now.
pub async fn check(store: &Store, client_id: &str, grant: &GrantRef) -> Result<(), Dead> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut sql = String::from("SELECT c.disabled");
    let mut params: Vec<SqlValue> = Vec::new();
    if let Some(jti) = &grant.token_id {
        sql.push_str(", (SELECT COUNT(*) FROM auth_revoked r WHERE r.jti = ?)");
        params.push(jti.into());
    }
    if let Some((patient, consent)) = &grant.consent {
        sql.push_str(
            ", (SELECT COUNT(*) FROM member_consents mc WHERE mc.patient_id = ? AND mc.id = ? \
             AND mc.status = 'active' AND mc.period_start <= ? AND mc.period_end >= ?)",
        );
        params.extend([patient.into(), consent.into(), now.into(), now.into()]);
    }
    if let Some(id) = &grant.authorization_id {
        sql.push_str(
            ", (SELECT COUNT(*) FROM member_authorizations g JOIN member_logins l ON l.username = g.username \
             WHERE g.id = ? AND g.revoked_at IS NULL AND l.disabled = 0)",
        );
        params.push(id.into());
    }
    sql.push_str(" FROM auth_clients c WHERE c.client_id = ?");
    params.push(client_id.into());
    let rows = store.db.fetch(&sql, &params).await.map_err(|e| {
        if crate::fhir::is_unavailable(&e) {
            Dead::Unavailable(format!("{e:#}"))
        } else {
            Dead::Internal(format!("{e:#}"))
        }
    })?;
    let Some(row) = rows.into_iter().next() else {
        return Err(Dead::Refused("the token's client is not registered".into()));
    };
    let mut col = 0;
    let mut next = || {
        let v = row
            .int(col)
            .map_err(|e| Dead::Internal(format!("the liveness check: {e:#}")));
        col += 1;
        v
    };
    if next()? != 0 {
        return Err(Dead::Refused("the token's client is disabled".into()));
    }
    if grant.token_id.is_some() && next()? != 0 {
        return Err(Dead::Refused("the token was revoked".into()));
    }
    if grant.consent.is_some() && next()? == 0 {
        return Err(Dead::Refused(
            "the member's consent for your organization was revoked or has expired".into(),
        ));
    }
    if grant.authorization_id.is_some() && next()? == 0 {
        return Err(Dead::Refused(
            "the member's authorization of this app was revoked".into(),
        ));
    }
    Ok(())
}
