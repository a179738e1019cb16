//! The rows of one `Patient/$everything` page phase (`ops::everything` writes the Bundle):
//! the member's compartment, or the shared resources its visible records reference — both
//! through the caller's `access::View`, so row restriction and release rules apply as on
//! every read path. Streamed in `(rtype, pk)` keyset order.

use super::access::RESOURCE_COLUMNS;
use super::db::SqlValue;
use super::release::care_date_overlap_condition;
use super::{Store, StoredResource, placeholders};
use crate::identity::AccessContext;
use futures::StreamExt;
use futures::stream::BoxStream;

/// What one phase of a `$everything` page reads.
#[derive(Debug, Clone, Copy)]
pub struct EverythingPhase<'a> {
    pub patient_id: &'a str,
    /// `false`: the member's compartment (without the Patient itself); `true`: shared
    /// resources the member's visible records reference.
    pub referenced_shared: bool,
    /// The resource types of this phase (non-empty).
    pub types: &'a [String],
    /// Only resources changed at or after this instant (epoch ms).
    pub since: Option<i64>,
    /// `start`/`end`: the member's records with a care date overlapping `[low, high]` (or
    /// none).
    pub care_window: Option<(i64, i64)>,
    /// Resume strictly after this `(rtype, pk)`.
    pub after: Option<(&'a str, i64)>,
    pub limit: usize,
}

impl Store {
    /// Streams the rows of `phase` visible to `ctx`, released, in `(rtype, pk)` order.
    pub fn stream_everything(
        &self,
        ctx: &AccessContext,
        phase: EverythingPhase<'_>,
    ) -> BoxStream<'_, anyhow::Result<StoredResource>> {
        let view = self.view(ctx);
        let types = phase.types;
        let mut params: Vec<SqlValue> = Vec::new();
        let mut sql = format!("SELECT {RESOURCE_COLUMNS} FROM resources r WHERE ");
        if phase.referenced_shared {
            sql.push_str("r.shared = 1 AND ");
        } else {
            sql.push_str("r.patient_id = ? AND r.rtype <> 'Patient' AND ");
            params.push(phase.patient_id.into());
        }
        sql.push_str(&format!(
            "r.deleted = 0 AND r.rtype IN ({}) AND ",
            placeholders(types.len())
        ));
        params.extend(types.iter().map(SqlValue::from));
        let (restrict, p) = view.restriction("r");
        sql.push_str(&restrict);
        params.extend(p);
        if phase.referenced_shared {
            // Shared resources the member's visible records reference (index lookups: the
            // member's rows, their reference rows by res_pk, targets by (rtype, id)); a
            // record the caller may not receive brings nothing in.
            let (restrict_m, pm) = view.restriction("m");
            sql.push_str(&format!(
                " AND r.pk IN (SELECT t.pk FROM resources m \
                 JOIN idx_reference x ON x.res_pk = m.pk \
                 JOIN resources t ON t.rtype = x.target_type AND t.id = x.target_id \
                 WHERE m.patient_id = ? AND m.deleted = 0 AND {restrict_m} AND x.target_type IN ({}))",
                placeholders(types.len())
            ));
            params.push(phase.patient_id.into());
            params.extend(pm);
            params.extend(types.iter().map(SqlValue::from));
        }
        if let Some(since) = phase.since {
            sql.push_str(" AND r.last_updated >= ?");
            params.push(since.into());
        }
        if !phase.referenced_shared
            && let Some((low, high)) = phase.care_window
        {
            sql.push_str(" AND ");
            sql.push_str(&care_date_overlap_condition());
            params.push(low.into());
            params.push(high.into());
        }
        if let Some((rtype, pk)) = phase.after {
            sql.push_str(" AND (r.rtype > ? OR (r.rtype = ? AND r.pk > ?))");
            params.push(rtype.into());
            params.push(rtype.into());
            params.push(pk.into());
        }
        sql.push_str(" ORDER BY r.rtype, r.pk LIMIT ?");
        params.push((phase.limit as i64).into());
        self.db
            .stream(sql, params)
            .map(move |row| view.resource(row?))
            .boxed()
    }
}
