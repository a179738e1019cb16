//! Stored payer-to-payer consents (`member_consents`, migration 0003): written by
//! `$member-match` when a consent can be complied with (HRex mm-13, §pdex-204), read back by
//! the member-scoped token grant and by export jobs (§pdex-156, §pdex-223).

use super::policy::{ConsentTerms, Policy};
use crate::identity::OrgIdentifier;
use crate::store::{SqlValue, Store};

/// A consent as we keep it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredConsent {
    pub id: String,
    pub patient_id: String,
    pub requester: OrgIdentifier,
    pub client_id: Option<String>,
    pub policy: Policy,
    pub period_start: i64,
    pub period_end: i64,
    pub source_reference: Option<String>,
    pub status: String,
    pub created: i64,
}

/// What `$member-match` records.
pub struct NewConsent<'a> {
    pub patient_id: &'a str,
    pub requester: &'a OrgIdentifier,
    pub client_id: Option<&'a str>,
    pub terms: &'a ConsentTerms,
    /// The Consent resource as received.
    pub consent_json: &'a str,
    /// The requester's CoverageToLink as received (HRex mm-4), if any.
    pub coverage_to_link: Option<&'a str>,
    pub now_ms: i64,
    /// A fixed id for a consent that may be recorded more than once (a `$bulk-member-match`
    /// job resumed after a crash evaluates its members again): the second insert is a no-op,
    /// and a consent revoked in between stays revoked. `None`: a fresh UUID.
    pub id: Option<String>,
}

/// A consent row as stored (owned, so that a bulk match can collect its members' consents
/// and store them together).
#[derive(Debug, Clone)]
pub struct ConsentRow {
    pub id: String,
    pub patient_id: String,
    pub requester: OrgIdentifier,
    pub client_id: Option<String>,
    pub policy: Policy,
    pub period_start: i64,
    pub period_end: i64,
    pub source_reference: Option<String>,
    pub coverage_to_link: Option<String>,
    pub consent: String,
    pub created: i64,
}

impl NewConsent<'_> {
    /// The row to store (a fresh UUID unless the id is fixed).
    pub fn row(self) -> ConsentRow {
        ConsentRow {
            id: self.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            patient_id: self.patient_id.to_owned(),
            requester: self.requester.clone(),
            client_id: self.client_id.map(str::to_owned),
            policy: self.terms.policy,
            period_start: self.terms.period_start,
            period_end: self.terms.period_end,
            source_reference: self.terms.source_reference.clone(),
            coverage_to_link: self.coverage_to_link.map(str::to_owned),
            consent: self.consent_json.to_owned(),
            created: self.now_ms,
        }
    }
}

/// Stores a consent (once per id); returns its id.
pub async fn insert(store: &Store, c: NewConsent<'_>) -> anyhow::Result<String> {
    let row = c.row();
    let id = row.id.clone();
    insert_all(store, std::slice::from_ref(&row)).await?;
    Ok(id)
}

/// Stores `rows` in one transaction. A row whose `(patient_id, id)` is already stored is left
/// as it is, so a resumed job's second pass adds nothing and a consent revoked in between
/// stays revoked (the lease keeps two workers off one job).
pub async fn insert_all(store: &Store, rows: &[ConsentRow]) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut tx = store.db.begin().await?;
    let mut known = std::collections::HashSet::new();
    for chunk in rows.chunks(1000) {
        let marks = crate::store::placeholders(chunk.len());
        let mut params: Vec<SqlValue> =
            chunk.iter().map(|r| r.patient_id.as_str().into()).collect();
        params.extend(chunk.iter().map(|r| SqlValue::from(r.id.as_str())));
        let sql = format!(
            "SELECT patient_id, id FROM member_consents WHERE patient_id IN ({marks}) AND id IN ({marks})"
        );
        for row in tx.fetch(&sql, params).await? {
            known.insert((row.text(0)?, row.text(1)?));
        }
    }
    let mut values = Vec::new();
    for r in rows {
        if !known.insert((r.patient_id.clone(), r.id.clone())) {
            continue;
        }
        values.extend([
            r.patient_id.as_str().into(),
            r.id.as_str().into(),
            r.requester.system.as_str().into(),
            r.requester.value.as_str().into(),
            r.client_id.as_deref().into(),
            r.policy.as_str().into(),
            r.period_start.into(),
            r.period_end.into(),
            r.source_reference.as_deref().into(),
            r.coverage_to_link.as_deref().into(),
            r.consent.as_str().into(),
            "active".into(),
            r.created.into(),
        ]);
    }
    tx.insert_rows(
        "member_consents (patient_id, id, requester_system, requester_value, client_id, policy, \
         period_start, period_end, source_reference, coverage_to_link, consent, status, created)",
        13,
        values,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The latest active consent of `patient_id` whose recipient is `requester` (sequence
/// step 16: "queries consent records to find the latest active consent that matches on Member
/// and Payer Identifiers"). One index range read on `member_consents_grant`.
pub async fn latest_active(
    store: &Store,
    patient_id: &str,
    requester: &OrgIdentifier,
) -> anyhow::Result<Option<StoredConsent>> {
    let rows = store
        .db
        .fetch(
            "SELECT id, patient_id, requester_system, requester_value, client_id, policy, period_start, \
             period_end, source_reference, status, created FROM member_consents \
             WHERE patient_id = ? AND requester_system = ? AND requester_value = ? AND status = 'active' \
             ORDER BY created DESC LIMIT 1",
            &[
                patient_id.into(),
                (&requester.system).into(),
                (&requester.value).into(),
            ],
        )
        .await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    let id = row.text(0)?;
    let policy_text = row.text(5)?;
    let Some(policy) = Policy::parse(&policy_text) else {
        anyhow::bail!("stored consent {id} has an unknown policy {policy_text:?}");
    };
    let (patient_id, system, value, client_id) =
        (row.text(1)?, row.text(2)?, row.text(3)?, row.opt_text(4)?);
    let (period_start, period_end) = (row.int(6)?, row.int(7)?);
    let (source_reference, status, created) = (row.opt_text(8)?, row.text(9)?, row.int(10)?);
    Ok(Some(StoredConsent {
        id,
        patient_id,
        requester: OrgIdentifier { system, value },
        client_id,
        policy,
        period_start,
        period_end,
        source_reference,
        status,
        created,
    }))
}

/// Revokes (marks `inactive`) the active consents of `patient_id` for `requester` — the
/// member withdrew their consent at the old payer (`pdex consent revoke`). Later member-scoped
/// tokens and export jobs no longer find them (§pdex-167). Returns how many were revoked.
pub async fn revoke(
    store: &Store,
    patient_id: &str,
    requester: &OrgIdentifier,
) -> anyhow::Result<u64> {
    let mut tx = store.db.begin().await?;
    let n = tx
        .execute(
            "UPDATE member_consents SET status = 'inactive' \
             WHERE patient_id = ? AND requester_system = ? AND requester_value = ? AND status = 'active'",
            vec![
                patient_id.into(),
                (&requester.system).into(),
                (&requester.value).into(),
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}
