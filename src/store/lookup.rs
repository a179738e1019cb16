//! The privileged read handle for member matching and consent decisions ([`MemberLookup`]):
//! lookups that must see every member — who holds this member id or subscriber id, is this a
//! Patient on file, does the member have sensitive data — before any requester's access is
//! known. It bypasses `access::View` on purpose, so it never hands a stored resource to a
//! caller: it answers with Patient ids, flags, the parsed demographics of candidate
//! Patients that the matcher compares and the operation answers with an identifier only, and
//! the RelatedPersons that decide whom a representative's login may act for.
//! Everything it reads is an index or primary-key lookup.

use super::{SqlValue, Store, index_key, placeholders};
use serde_json::Value;
use std::collections::HashMap;

/// Most ids per statement.
const BATCH: usize = 500;

/// Which identifier index a member lookup reads (`idx_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKey {
    /// The member id: Coverage and Patient `identifier`.
    MemberId,
    /// The subscriber id: Coverage `subscriber-id` (names a household).
    SubscriberId,
}

impl MemberKey {
    fn filter(self) -> &'static str {
        match self {
            MemberKey::MemberId => "t.rtype IN ('Coverage', 'Patient') AND t.param = 'identifier'",
            MemberKey::SubscriberId => "t.rtype = 'Coverage' AND t.param = 'subscriber-id'",
        }
    }
}

/// One owner a code was found for: the member's Patient id and the identifier's stored
/// system (normalised as indexed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeOwner {
    pub patient_id: String,
    pub system: Option<String>,
}

/// See the module doc. Made by [`Store::member_lookup`].
pub struct MemberLookup<'a> {
    store: &'a Store,
}

impl Store {
    /// The privileged lookups of member matching and consent decisions.
    pub fn member_lookup(&self) -> MemberLookup<'_> {
        MemberLookup { store: self }
    }
}

impl MemberLookup<'_> {
    /// For each of `codes` (identifier values, already normalised with [`index_key`]), the
    /// members holding it under `key`: at most `per_code` owners per code, as a `LIMIT` would
    /// give each code on its own.
    pub async fn owners_by_code(
        &self,
        key: MemberKey,
        mut codes: Vec<String>,
        per_code: usize,
    ) -> anyhow::Result<HashMap<String, Vec<CodeOwner>>> {
        codes.sort();
        codes.dedup();
        let mut out: HashMap<String, Vec<CodeOwner>> = HashMap::new();
        for chunk in codes.chunks(BATCH) {
            let mut params: Vec<SqlValue> = chunk.iter().map(SqlValue::from).collect();
            params.push((per_code as i64).into());
            let rows = self
                .store
                .db
                .fetch(
                    &format!(
                        "SELECT code, patient_id, system FROM (\
                         SELECT t.code, t.patient_id, t.system, \
                         ROW_NUMBER() OVER (PARTITION BY t.code) AS n FROM idx_token t \
                         WHERE {} AND t.code IN ({})) c WHERE n <= ?",
                        key.filter(),
                        placeholders(chunk.len())
                    ),
                    &params,
                )
                .await?;
            for row in rows {
                // an index row of a resource without a known owner names nobody
                let Some(patient_id) = row.opt_text(1)? else {
                    continue;
                };
                out.entry(row.text(0)?).or_default().push(CodeOwner {
                    patient_id,
                    system: row.opt_text(2)?,
                });
            }
        }
        Ok(out)
    }

    /// The current (not deleted) Patients of `ids`, parsed, for comparing demographics; an id
    /// not on file is absent from the map.
    pub async fn candidate_patients(&self, ids: &[&str]) -> anyhow::Result<HashMap<String, Value>> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(BATCH) {
            let params: Vec<SqlValue> = chunk.iter().map(|id| SqlValue::from(*id)).collect();
            let rows = self
                .store
                .db
                .fetch(
                    &format!(
                        "SELECT r.id, r.content FROM resources r WHERE r.rtype = 'Patient' AND r.deleted = 0 AND r.id IN ({})",
                        placeholders(params.len())
                    ),
                    &params,
                )
                .await?;
            for row in rows {
                let id = row.text(0)?;
                let patient: Value = serde_json::from_str(&row.text(1)?)
                    .map_err(|e| anyhow::anyhow!("stored Patient {id} is not JSON: {e}"))?;
                out.insert(id, patient);
            }
        }
        Ok(out)
    }

    /// The RelatedPerson `id` (not deleted), parsed: the person a representative's login
    /// stands for (Patient Access, §pdex-114).
    pub async fn related_person(&self, id: &str) -> anyhow::Result<Option<Value>> {
        let rows = self
            .store
            .db
            .fetch(
                "SELECT content FROM resources WHERE rtype = 'RelatedPerson' AND id = ? AND deleted = 0",
                &[id.into()],
            )
            .await?;
        rows.first()
            .map(|r| {
                serde_json::from_str(&r.text(0)?)
                    .map_err(|e| anyhow::anyhow!("stored RelatedPerson {id} is not JSON: {e}"))
            })
            .transpose()
    }

    /// The RelatedPersons (not deleted) holding the identifier `system|value`, parsed, by
    /// id: the same person related to several members (FHIR has one RelatedPerson per
    /// patient).
    pub async fn related_persons_by_identifier(
        &self,
        system: Option<&str>,
        value: &str,
    ) -> anyhow::Result<Vec<(String, Value)>> {
        let mut sql = String::from(
            "SELECT DISTINCT r.id, r.content FROM idx_token t JOIN resources r ON r.pk = t.res_pk \
             WHERE t.rtype = 'RelatedPerson' AND t.param = 'identifier' AND t.code = ? AND r.deleted = 0",
        );
        let mut params: Vec<SqlValue> = vec![index_key(value).into()];
        if let Some(s) = system.filter(|s| !s.is_empty()) {
            sql.push_str(" AND t.system = ?");
            params.push(s.into());
        }
        sql.push_str(" ORDER BY r.id");
        let rows = self.store.db.fetch(&sql, &params).await?;
        rows.iter()
            .map(|r| {
                let id = r.text(0)?;
                let v = serde_json::from_str(&r.text(1)?)
                    .map_err(|e| anyhow::anyhow!("stored RelatedPerson {id} is not JSON: {e}"))?;
                Ok((id, v))
            })
            .collect()
    }

    /// Is `Patient/{id}` on file (and not deleted)?
    pub async fn patient_exists(&self, id: &str) -> anyhow::Result<bool> {
        let rows = self
            .store
            .db
            .fetch(
                "SELECT 1 FROM resources WHERE rtype = 'Patient' AND id = ? AND deleted = 0",
                &[id.into()],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// The distinct members whose Patient `identifier` is `value` (with `system`, when
    /// given).
    pub async fn patients_by_identifier(
        &self,
        system: Option<&str>,
        value: &str,
    ) -> anyhow::Result<Vec<String>> {
        let mut sql = String::from(
            "SELECT DISTINCT t.patient_id FROM idx_token t WHERE t.rtype = 'Patient' AND t.param = 'identifier' AND t.code = ?",
        );
        let mut params: Vec<SqlValue> = vec![index_key(value).into()];
        if let Some(s) = system.filter(|s| !s.is_empty()) {
            sql.push_str(" AND t.system = ?");
            params.push(s.into());
        }
        let rows = self.store.db.fetch(&sql, &params).await?;
        let mut ids = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(id) = row.opt_text(0)? {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Does the member have any resource flagged sensitive? (Index range on
    /// `resources_patient`, the member's own rows only.)
    pub async fn member_has_sensitive(&self, patient_id: &str) -> anyhow::Result<bool> {
        let rows = self
            .store
            .db
            .fetch(
                "SELECT 1 FROM resources r WHERE r.patient_id = ? AND r.sensitive = 1 AND r.deleted = 0 LIMIT 1",
                &[patient_id.into()],
            )
            .await?;
        Ok(!rows.is_empty())
    }
}
