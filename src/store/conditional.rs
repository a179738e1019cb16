//! Conditional create (FHIR R4 http §3.1.0.8, `If-None-Exist` and a transaction entry's
//! `request.ifNoneExist`): inside the write transaction, the criteria are searched as the
//! caller sees the data; no match → create, one match → the existing resource, several →
//! 412. Concurrent conditional creates with the same criteria are serialised (a transaction
//! lock on the type and criteria; SQLite's immediate write transactions already run one at a
//! time), so exactly one of them creates.

use super::access::RESOURCE_COLUMNS;
use super::db::{SqlValue, Transaction};
use super::{Prepared, Store, StoredResource, WriteKind, WriteOp, WriteResult};
use crate::fhir::FhirError;
use crate::identity::AccessContext;
use crate::search::query::SearchRequest;
use sha2::{Digest, Sha256};

/// What the criteria of a conditional create match.
pub enum Existing {
    None,
    One(StoredResource),
}

/// What a conditional create did.
pub enum Conditional {
    Created(WriteResult),
    /// One resource matched: nothing was written.
    Exists(StoredResource),
}

impl Store {
    /// Creates `prepared` unless `criteria` match a resource `ctx` can see, atomically.
    pub async fn create_if_none_exist(
        &self,
        ctx: &AccessContext,
        criteria: &SearchRequest,
        prepared: Prepared,
    ) -> Result<Conditional, FhirError> {
        let mut tx = self.db.begin().await?;
        self.lock_conditional(tx.as_mut(), &[criteria]).await?;
        match self.conditional_match(tx.as_mut(), ctx, criteria).await? {
            // nothing written: the transaction rolls back when dropped
            Existing::One(r) => Ok(Conditional::Exists(r)),
            Existing::None => {
                let mut results = self
                    .write_in(tx.as_mut(), vec![WriteOp::put(WriteKind::Create, prepared)])
                    .await?;
                tx.commit().await?;
                Ok(Conditional::Created(results.remove(0)))
            }
        }
    }

    /// Serialises the conditional creates of `criteria` (a list of searches) in `tx`: the
    /// locks are taken in one order, so transactions holding several cannot deadlock.
    pub async fn lock_conditional(
        &self,
        tx: &mut dyn Transaction,
        criteria: &[&SearchRequest],
    ) -> Result<(), FhirError> {
        let mut keys: Vec<i64> = criteria.iter().map(|c| lock_key(c)).collect();
        keys.sort_unstable();
        keys.dedup();
        for k in keys {
            tx.lock(k).await?;
        }
        Ok(())
    }

    /// The resource `criteria` match for `ctx` within `tx` (after [`Store::lock_conditional`]);
    /// 412 when more than one does (R4 §3.1.0.8: "the criteria are not selective enough").
    pub async fn conditional_match(
        &self,
        tx: &mut dyn Transaction,
        ctx: &AccessContext,
        criteria: &SearchRequest,
    ) -> Result<Existing, FhirError> {
        if criteria.filters.is_empty() {
            return Err(FhirError::bad_request(
                "If-None-Exist needs search criteria, e.g. identifier=system|value",
            ));
        }
        // the caller's view, as every read: the match comes back released
        let view = self.view(ctx);
        let (filters, filter_params) = self.filters_condition(&view, criteria, "r")?;
        let (restrict, restrict_params) = view.restriction("r");
        let mut params = vec![SqlValue::from(&criteria.rtype)];
        params.extend(restrict_params);
        params.extend(filter_params);
        let sql = format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources r WHERE r.rtype = ? AND r.deleted = 0 AND {restrict} AND {filters} LIMIT 2"
        );
        let mut rows = tx.fetch(&sql, params).await?;
        match rows.len() {
            0 => Ok(Existing::None),
            1 => Ok(Existing::One(view.resource(rows.remove(0))?)),
            _ => Err(FhirError::precondition_failed(format!(
                "the conditional create's criteria match more than one {}",
                criteria.rtype
            ))),
        }
    }
}

/// A stable 64-bit lock key for the type and criteria (the same on every instance).
fn lock_key(criteria: &SearchRequest) -> i64 {
    let mut pairs: Vec<&(String, String)> = criteria.echo.iter().collect();
    pairs.sort();
    let mut h = Sha256::new();
    h.update(b"conditional-create\0");
    h.update(criteria.rtype.as_bytes());
    for (k, v) in pairs {
        h.update([0]);
        h.update(k.as_bytes());
        h.update([b'=']);
        h.update(v.as_bytes());
    }
    let d = h.finalize();
    i64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}
