//! Writes: create, update, delete and import upserts, in batches, inside one transaction.
//! The current version lives in `resources`; the version it replaces moves to
//! `resource_history`; its index rows are replaced. A delete leaves a tombstone row.

use super::db::{Dialect, MAX_PARAMS, Row, SqlValue, Transaction};
use super::{Prepared, Store, index_key, placeholders};
use crate::fhir::FhirError;
use crate::search::IndexEntries;
use std::collections::HashMap;

/// What a write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// A new resource; fails with 409 if the id exists (and is not deleted).
    Create,
    /// Create or replace; `if_match` is the version the client expects (412 otherwise).
    Update { if_match: Option<i64> },
    /// Like `Update`, but a resource identical to the stored one is left alone (import).
    Import,
    /// Delete (no-op if absent or already deleted).
    Delete { if_match: Option<i64> },
}

/// One write. `prepared` is `None` only for deletes.
pub struct WriteOp {
    pub rtype: String,
    pub id: String,
    pub kind: WriteKind,
    pub prepared: Option<Prepared>,
}

impl WriteOp {
    pub fn put(kind: WriteKind, prepared: Prepared) -> Self {
        WriteOp {
            rtype: prepared.rtype.clone(),
            id: prepared.id.clone(),
            kind,
            prepared: Some(prepared),
        }
    }
    pub fn delete(rtype: &str, id: &str, if_match: Option<i64>) -> Self {
        WriteOp {
            rtype: rtype.to_owned(),
            id: id.to_owned(),
            kind: WriteKind::Delete { if_match },
            prepared: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Created,
    Updated,
    Unchanged,
    Deleted,
    /// Delete of something absent or already deleted.
    NoOp,
}

#[derive(Debug, Clone)]
pub struct WriteResult {
    pub rtype: String,
    pub id: String,
    pub version: i64,
    pub last_updated: i64,
    pub outcome: WriteOutcome,
    /// The stored JSON (for creates and updates).
    pub content: Option<String>,
}

impl WriteResult {
    /// What was written, as the writer receives it back (its own data: no release rules).
    pub fn stored(&self) -> super::StoredResource {
        super::access::written(
            self.rtype.clone(),
            self.id.clone(),
            self.version,
            self.last_updated,
            self.outcome == WriteOutcome::Deleted,
            self.content.clone().unwrap_or_default(),
        )
    }
}

struct Existing {
    pk: i64,
    version: i64,
    deleted: bool,
    source_hash: Option<String>,
}

impl Store {
    /// Applies `ops` atomically: all or nothing.
    pub async fn write(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteResult>, FhirError> {
        // Issue 16: on PostgreSQL two batches commit concurrently (pdex import, concurrent
        // requests); a Provenance in one and its target in the other each miss the other's
        // uncommitted rows, so the owner fix-up inside the transactions can miss both ways.
        // Run it once more after the commit: whichever batch commits last sees both.
        let may_leave_ownerless = self.db.dialect() == Dialect::Postgres
            && ops
                .iter()
                .filter_map(|op| op.prepared.as_ref())
                .any(|p| p.patient_id.is_some() || !p.owner_from.is_empty());
        let mut tx = self.db.begin().await?;
        let results = self.write_in(tx.as_mut(), ops).await?;
        tx.commit().await?;
        if may_leave_ownerless {
            let mut tx = self.db.begin().await?;
            tx.execute(PROVENANCE_OWNER_FIXUP, vec![]).await?;
            tx.commit().await?;
        }
        Ok(results)
    }

    /// Applies `ops` inside an open transaction.
    pub async fn write_in(
        &self,
        tx: &mut dyn Transaction,
        ops: Vec<WriteOp>,
    ) -> Result<Vec<WriteResult>, FhirError> {
        let now = now_ms();
        let existing = lookup(tx, &ops, self.db.dialect() == Dialect::Postgres).await?;
        let mut results = Vec::with_capacity(ops.len());
        let mut replaced_pks: Vec<i64> = Vec::new();
        let mut inserts: Vec<(usize, WriteOp)> = Vec::new();
        let mut updates: Vec<(i64, WriteOp)> = Vec::new();
        let mut seen: HashMap<(String, String), i64> = HashMap::new();

        for op in ops {
            let key = (op.rtype.clone(), op.id.clone());
            if seen.contains_key(&key) {
                return Err(FhirError::bad_request(format!(
                    "{}/{} appears more than once in one batch",
                    op.rtype, op.id
                )));
            }
            let current = existing.get(&key);
            let live = current.filter(|c| !c.deleted);
            let if_match = match op.kind {
                WriteKind::Update { if_match } | WriteKind::Delete { if_match } => if_match,
                _ => None,
            };
            if let Some(expected) = if_match {
                let actual = live.map(|c| c.version);
                if actual != Some(expected) {
                    return Err(FhirError::precondition_failed(format!(
                        "If-Match expects version {expected} of {}/{}, but the current version is {}",
                        op.rtype,
                        op.id,
                        actual.map_or("none".to_owned(), |v| v.to_string())
                    )));
                }
            }
            let version = current.map_or(1, |c| c.version + 1);
            let result = |outcome, version, content| WriteResult {
                rtype: op.rtype.clone(),
                id: op.id.clone(),
                version,
                last_updated: now,
                outcome,
                content,
            };
            match op.kind {
                WriteKind::Delete { .. } => {
                    let Some(c) = live else {
                        results.push(result(
                            WriteOutcome::NoOp,
                            current.map_or(0, |c| c.version),
                            None,
                        ));
                        continue;
                    };
                    replaced_pks.push(c.pk);
                    results.push(result(WriteOutcome::Deleted, version, None));
                    seen.insert(key, version);
                    updates.push((c.pk, op));
                }
                WriteKind::Create if live.is_some() => {
                    return Err(FhirError::conflict(format!(
                        "{}/{} already exists",
                        op.rtype, op.id
                    )));
                }
                WriteKind::Import
                    if live.is_some_and(|c| {
                        c.source_hash.as_deref()
                            == op.prepared.as_ref().map(|p| p.source_hash.as_str())
                    }) =>
                {
                    let c = live.expect("checked");
                    results.push(result(WriteOutcome::Unchanged, c.version, None));
                }
                _ => {
                    let outcome = if live.is_some() {
                        WriteOutcome::Updated
                    } else {
                        WriteOutcome::Created
                    };
                    results.push(result(outcome, version, None));
                    seen.insert(key, version);
                    match current {
                        Some(c) => {
                            replaced_pks.push(c.pk);
                            updates.push((c.pk, op));
                        }
                        None => inserts.push((results.len() - 1, op)),
                    }
                }
            }
        }

        // Earlier versions move to history; their index rows go.
        for chunk in replaced_pks.chunks(MAX_PARAMS / 2) {
            let params: Vec<SqlValue> = chunk.iter().map(|pk| SqlValue::Int(*pk)).collect();
            let list = placeholders(chunk.len());
            tx.execute(
                &format!(
                    "INSERT INTO resource_history (rtype, id, version, last_updated, deleted, patient_id, shared, sensitive, care_end, release_until, content) \
                     SELECT rtype, id, version, last_updated, deleted, patient_id, shared, sensitive, care_end, release_until, content FROM resources WHERE pk IN ({list})"
                ),
                params.clone(),
            )
            .await?;
            for table in INDEX_TABLES {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE res_pk IN ({list})"),
                    params.clone(),
                )
                .await?;
            }
        }

        resolve_provenance_owners(tx, &mut updates, &mut inserts).await?;
        // Only a batch that writes member-owned resources can be the late target of an
        // ownerless Provenance.
        let writes_owned_targets = updates
            .iter()
            .map(|(_, op)| op)
            .chain(inserts.iter().map(|(_, op)| op))
            .filter_map(|op| op.prepared.as_ref())
            .any(|p| p.patient_id.is_some() && p.rtype != "Provenance");

        let mut index_rows = IndexRows::default();
        let result_pos: HashMap<(String, String), usize> = results
            .iter()
            .enumerate()
            .map(|(i, r)| ((r.rtype.clone(), r.id.clone()), i))
            .collect();

        for (pk, mut op) in updates {
            let pos = result_pos[&(op.rtype.clone(), op.id.clone())];
            let version = results[pos].version;
            let written = op.prepared.as_mut().map(|p| {
                let content = stamp(p, version, now);
                results[pos].content = Some(content.clone());
                index_rows.add(pk, p);
                (content, &*p)
            });
            let deleted = written.is_none();
            // A tombstone keeps its owner so that member-scoped `_since` exports can list it,
            // its sensitivity so that a caller without the allowance never learns, from a
            // 410 or a Bulk `deleted` entry, that a sensitive resource existed, and its release
            // inputs (care dates, PA rule) for the same reason.
            let keep_owner = if deleted {
                "patient_id = patient_id, shared = shared, sensitive = sensitive, \
                 care_end = care_end, release_until = release_until"
            } else {
                "patient_id = ?, shared = ?, sensitive = ?, care_end = ?, release_until = ?"
            };
            let mut params = vec![
                SqlValue::Int(version),
                SqlValue::Int(now),
                SqlValue::from(deleted),
            ];
            let (content, hash) = match written {
                Some((content, p)) => {
                    params.extend([
                        p.patient_id.clone().into(),
                        SqlValue::from(p.shared),
                        SqlValue::from(p.sensitive),
                        SqlValue::int_or_null(p.care_end),
                        SqlValue::int_or_null(p.release_until),
                    ]);
                    (content, Some(p.source_hash.clone()))
                }
                None => (tombstone(&op.rtype, &op.id, version, now), None),
            };
            params.extend([hash.into(), SqlValue::Text(content), SqlValue::Int(pk)]);
            tx.execute(
                &format!(
                    "UPDATE resources SET version = ?, last_updated = ?, deleted = ?, {keep_owner}, \
                     source_hash = ?, content = ? WHERE pk = ?"
                ),
                params,
            )
            .await?;
        }

        const COLS: usize = 11;
        for chunk in inserts.chunks_mut(MAX_PARAMS / COLS) {
            let mut params = Vec::with_capacity(chunk.len() * COLS);
            for (pos, op) in chunk.iter_mut() {
                let p = op.prepared.as_mut().expect("inserts carry a resource");
                let content = stamp(p, 1, now);
                results[*pos].content = Some(content.clone());
                params.extend([
                    SqlValue::from(&p.rtype),
                    SqlValue::from(&p.id),
                    SqlValue::Int(1),
                    SqlValue::Int(now),
                    p.patient_id.clone().into(),
                    SqlValue::from(p.shared),
                    SqlValue::from(p.sensitive),
                    SqlValue::int_or_null(p.care_end),
                    SqlValue::int_or_null(p.release_until),
                    SqlValue::from(&p.source_hash),
                    SqlValue::Text(content),
                ]);
            }
            let values = vec!["(?,?,?,?,0,?,?,?,?,?,?,?)"; chunk.len()].join(",");
            let rows = tx
                .fetch(
                    &format!(
                        "INSERT INTO resources (rtype, id, version, last_updated, deleted, patient_id, shared, sensitive, care_end, release_until, source_hash, content) \
                         VALUES {values} ON CONFLICT (rtype, id) DO NOTHING RETURNING pk, rtype, id"
                    ),
                    params,
                )
                .await?;
            let pks: HashMap<(String, String), i64> = rows
                .into_iter()
                .map(key_of_row)
                .collect::<anyhow::Result<_>>()?;
            for (_, op) in chunk.iter_mut() {
                let p = op.prepared.as_mut().expect("inserts carry a resource");
                let Some(pk) = pks.get(&(p.rtype.clone(), p.id.clone())) else {
                    return Err(FhirError::conflict(format!(
                        "{}/{} was created concurrently; retry",
                        p.rtype, p.id
                    )));
                };
                index_rows.add(*pk, p);
            }
        }
        index_rows.insert(tx).await?;
        // Provenance written before its targets: now that more owners are known, give each
        // still-ownerless Provenance the owner of one of its targets.
        if writes_owned_targets {
            tx.execute(PROVENANCE_OWNER_FIXUP, vec![]).await?;
        }
        Ok(results)
    }
}

/// Gives every still-ownerless Provenance the owner of one of its targets that has one
/// (US Core Provenance reaches the member only through `target`).
const PROVENANCE_OWNER_FIXUP: &str = "UPDATE resources SET patient_id = (SELECT t.patient_id FROM idx_reference x \
     JOIN resources t ON t.rtype = x.target_type AND t.id = x.target_id \
     WHERE x.res_pk = resources.pk AND x.param = 'target' AND t.patient_id IS NOT NULL LIMIT 1) \
     WHERE patient_id IS NULL AND rtype = 'Provenance' AND shared = 0 AND EXISTS (SELECT 1 FROM idx_reference x \
     JOIN resources t ON t.rtype = x.target_type AND t.id = x.target_id \
     WHERE x.res_pk = resources.pk AND x.param = 'target' AND t.patient_id IS NOT NULL)";

/// Gives each Provenance without a Patient target the owner of its targets: from the same
/// batch first, then from the database.
async fn resolve_provenance_owners(
    tx: &mut dyn Transaction,
    updates: &mut [(i64, WriteOp)],
    inserts: &mut [(usize, WriteOp)],
) -> anyhow::Result<()> {
    let ops = || {
        updates
            .iter()
            .map(|(_, op)| op)
            .chain(inserts.iter().map(|(_, op)| op))
    };
    let mut wanted: Vec<(String, String)> = ops()
        .filter_map(|op| op.prepared.as_ref())
        .filter(|p| p.patient_id.is_none())
        .flat_map(|p| p.owner_from.iter().cloned())
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let mut owners: HashMap<(String, String), String> = ops()
        .filter_map(|op| op.prepared.as_ref())
        .filter_map(|p| Some(((p.rtype.clone(), p.id.clone()), p.patient_id.clone()?)))
        .collect();
    wanted.retain(|k| !owners.contains_key(k));
    let mut by_type: HashMap<String, Vec<String>> = HashMap::new();
    for (t, id) in wanted {
        by_type.entry(t).or_default().push(id);
    }
    for (rtype, ids) in by_type {
        for chunk in ids.chunks(MAX_PARAMS - 1) {
            let mut params = vec![SqlValue::from(&rtype)];
            params.extend(chunk.iter().map(SqlValue::from));
            let rows = tx
                .fetch(
                    &format!(
                        "SELECT id, patient_id FROM resources WHERE rtype = ? AND id IN ({}) AND patient_id IS NOT NULL",
                        placeholders(chunk.len())
                    ),
                    params,
                )
                .await?;
            for row in rows {
                owners.insert((rtype.clone(), row.text(0)?), row.text(1)?);
            }
        }
    }
    let all = updates
        .iter_mut()
        .map(|(_, op)| op)
        .chain(inserts.iter_mut().map(|(_, op)| op));
    for op in all {
        if let Some(p) = op.prepared.as_mut()
            && p.patient_id.is_none()
        {
            p.patient_id = p.owner_from.iter().find_map(|k| owners.get(k).cloned());
        }
    }
    Ok(())
}

pub(crate) const INDEX_TABLES: [&str; 5] = [
    "idx_token",
    "idx_string",
    "idx_date",
    "idx_quantity",
    "idx_reference",
];

fn key_of_row(row: Row) -> anyhow::Result<((String, String), i64)> {
    Ok(((row.text(1)?, row.text(2)?), row.int(0)?))
}

/// Finds the current rows of the resources `ops` touch. With `lock` (Postgres) the rows are
/// locked until the transaction ends, so two concurrent updates of one resource queue and
/// get consecutive versions instead of colliding on the history key; SQLite has one writer.
async fn lookup(
    tx: &mut dyn Transaction,
    ops: &[WriteOp],
    lock: bool,
) -> anyhow::Result<HashMap<(String, String), Existing>> {
    let mut by_type: HashMap<&str, Vec<&str>> = HashMap::new();
    for op in ops {
        by_type.entry(&op.rtype).or_default().push(&op.id);
    }
    let mut found = HashMap::new();
    for (rtype, ids) in by_type {
        for chunk in ids.chunks(MAX_PARAMS - 1) {
            let mut params = vec![SqlValue::from(rtype)];
            params.extend(chunk.iter().map(|id| SqlValue::from(*id)));
            let rows = tx
                .fetch(
                    &format!(
                        "SELECT pk, id, version, deleted, source_hash FROM resources WHERE rtype = ? AND id IN ({}){}",
                        placeholders(chunk.len()),
                        if lock { " FOR UPDATE" } else { "" }
                    ),
                    params,
                )
                .await?;
            for row in rows {
                found.insert(
                    (rtype.to_owned(), row.text(1)?),
                    Existing {
                        pk: row.int(0)?,
                        version: row.int(2)?,
                        deleted: row.flag(3)?,
                        source_hash: row.opt_text(4)?,
                    },
                );
            }
        }
    }
    Ok(found)
}

/// Sets the identity of a prepared resource and returns the JSON to store.
fn stamp(p: &mut Prepared, version: i64, now: i64) -> String {
    p.raw
        .set_identity(&p.id, version, &crate::fhir::datetime::format_instant(now));
    p.raw.to_json()
}

fn tombstone(rtype: &str, id: &str, version: i64, now: i64) -> String {
    serde_json::json!({
        "resourceType": rtype,
        "id": id,
        "meta": {"versionId": version.to_string(), "lastUpdated": crate::fhir::datetime::format_instant(now)}
    })
    .to_string()
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Index rows collected for a batch, inserted with multi-row statements.
#[derive(Default)]
struct IndexRows {
    token: Vec<SqlValue>,
    string: Vec<SqlValue>,
    date: Vec<SqlValue>,
    quantity: Vec<SqlValue>,
    reference: Vec<SqlValue>,
}

impl IndexRows {
    /// Takes the index entries out of `p` (they are not needed after the write).
    fn add(&mut self, pk: i64, p: &mut Prepared) {
        let IndexEntries {
            tokens,
            strings,
            dates,
            quantities,
            references,
        } = std::mem::take(&mut p.index);
        let rt = || SqlValue::from(&p.rtype);
        let owner = || SqlValue::from(p.patient_id.clone());
        for t in tokens {
            self.token.extend([
                SqlValue::Int(pk),
                rt(),
                SqlValue::Text(t.param),
                t.system.as_deref().map(index_key).into(),
                SqlValue::Text(index_key(&t.code)),
                t.text.into(),
                owner(),
            ]);
        }
        for s in strings {
            self.string.extend([
                SqlValue::Int(pk),
                rt(),
                SqlValue::Text(s.param),
                SqlValue::Text(index_key(&s.normalized)),
                SqlValue::Text(s.exact),
                owner(),
            ]);
        }
        for d in dates {
            self.date.extend([
                SqlValue::Int(pk),
                rt(),
                SqlValue::Text(d.param),
                SqlValue::Int(d.low),
                SqlValue::Int(d.high),
                owner(),
            ]);
        }
        for q in quantities {
            self.quantity.extend([
                SqlValue::Int(pk),
                rt(),
                SqlValue::Text(q.param),
                SqlValue::Real(q.value),
                q.system.into(),
                q.code.into(),
                owner(),
            ]);
        }
        for r in references {
            self.reference.extend([
                SqlValue::Int(pk),
                rt(),
                SqlValue::Text(r.param),
                r.target_type.as_deref().map(index_key).into(),
                r.target_id.as_deref().map(index_key).into(),
                SqlValue::Text(r.url),
                owner(),
            ]);
        }
    }

    async fn insert(self, tx: &mut dyn Transaction) -> anyhow::Result<()> {
        tx.insert_rows(
            "idx_token (res_pk, rtype, param, system, code, text, patient_id)",
            7,
            self.token,
        )
        .await?;
        tx.insert_rows(
            "idx_string (res_pk, rtype, param, normalized, exact, patient_id)",
            6,
            self.string,
        )
        .await?;
        tx.insert_rows(
            "idx_date (res_pk, rtype, param, low, high, patient_id)",
            6,
            self.date,
        )
        .await?;
        tx.insert_rows(
            "idx_quantity (res_pk, rtype, param, value, system, code, patient_id)",
            7,
            self.quantity,
        )
        .await?;
        tx.insert_rows(
            "idx_reference (res_pk, rtype, param, target_type, target_id, url, patient_id)",
            7,
            self.reference,
        )
        .await?;
        Ok(())
    }
}
