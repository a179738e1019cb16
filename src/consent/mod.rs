//! Consent: evaluating a requesting payer's Consent (`$member-match`, §pdex-203/207), the
//! stored consents of matched members, and the sensitivity allowance they grant. The
//! authorization server asks this module before it issues a member-scoped token
//! (§pdex-222..224); the bulk engine asks it again per member when an export runs.
//!
//! - `policy`: reading an `hrex-consent` and the "can we comply" decision (pure);
//! - `stored`: the `member_consents` table.
//!
//! What a payer or provider may see of an ExplanationOfBenefit is not consent but data
//! shaping: the release rules of `store::release`.
//!
//! Depends on `store`, `fhir` and `identity` (types); never on `auth`, which asks it.

pub mod policy;
pub mod stored;

use crate::identity::OrgIdentifier;
use crate::store::Store;

pub use policy::{ConsentTerms, Constraint, Policy};

/// What a stored consent lets a requesting organization receive for one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberGrant {
    /// The member's Patient id in our store.
    pub patient_id: String,
    /// `#sensitive` policy → true; `#regular` → false.
    pub allow_sensitive: bool,
    /// The stored consent's id (`member_consents.id`): a token issued on it lives only as
    /// long as it stays active (`auth::liveness`).
    pub consent_id: String,
}

/// The member-scoped-token check (§pdex-222..224): finds the latest active stored consent of
/// `member` (a `Patient/{id}` reference, a bare id, or the member's UMB) whose recipient is
/// `requester`, checks its period covers today and its policy can still be honoured, and says
/// what the token may carry. `Ok(None)` means no valid consent: the token endpoint answers
/// `invalid_grant`.
pub async fn member_grant(
    store: &Store,
    requester: &OrgIdentifier,
    member: &str,
) -> anyhow::Result<Option<MemberGrant>> {
    let Some(patient_id) = resolve_member(store, member).await? else {
        return Ok(None);
    };
    grant_for(
        store,
        requester,
        &patient_id,
        chrono::Utc::now().timestamp_millis(),
    )
    .await
}

/// [`member_grant`] for a known Patient id at `now_ms` (export jobs call this per member).
pub async fn grant_for(
    store: &Store,
    requester: &OrgIdentifier,
    patient_id: &str,
    now_ms: i64,
) -> anyhow::Result<Option<MemberGrant>> {
    let Some(consent) = stored::latest_active(store, patient_id, requester).await? else {
        return Ok(None);
    };
    // Sequence step 16: "confirms current date is within the consent period and the policy
    // scope can be complied with".
    if now_ms < consent.period_start || now_ms > consent.period_end {
        return Ok(None);
    }
    let has_sensitive = match consent.policy {
        Policy::Regular if !store.sensitivity.segmentation() => {
            store
                .member_lookup()
                .member_has_sensitive(patient_id)
                .await?
        }
        _ => false,
    };
    match policy::policy_allowance(
        consent.policy,
        store.sensitivity.segmentation(),
        has_sensitive,
    ) {
        Ok(allow_sensitive) => Ok(Some(MemberGrant {
            patient_id: consent.patient_id,
            allow_sensitive,
            consent_id: consent.id,
        })),
        Err(_) => Ok(None),
    }
}

/// Our Patient id for a member named as `Patient/{id}` (relative or absolute), a bare id,
/// or a UMB value (`value` or `system|value`, HRex mm-3). `None` when it names nobody, or
/// (a UMB) more than one person.
pub async fn resolve_member(store: &Store, member: &str) -> anyhow::Result<Option<String>> {
    let member = member.trim();
    if member.is_empty() {
        return Ok(None);
    }
    let as_reference = member
        .rsplit_once("Patient/")
        .map(|(_, id)| id)
        .filter(|id| crate::fhir::is_valid_id(id));
    let candidate_id = as_reference.or_else(|| crate::fhir::is_valid_id(member).then_some(member));
    let lookup = store.member_lookup();
    if let Some(id) = candidate_id {
        if lookup.patient_exists(id).await? {
            return Ok(Some(id.to_owned()));
        }
        if as_reference.is_some() {
            return Ok(None);
        }
    }
    let (system, value) = match member.split_once('|') {
        Some((s, v)) => (Some(s), v),
        None => (None, member),
    };
    let ids = lookup.patients_by_identifier(system, value).await?;
    Ok(match ids.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    })
}
