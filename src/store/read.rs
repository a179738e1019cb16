//! Reads by id: read, vread and instance history — each restricted by the caller's access.

use super::db::SqlValue;
use super::{RESOURCE_COLUMNS, Store, StoredResource, access, stored_from_row};
use crate::auth::AccessContext;

impl Store {
    /// The current version (a tombstone if deleted), or `None` if absent or not visible.
    pub async fn read(
        &self,
        ctx: &AccessContext,
        rtype: &str,
        id: &str,
    ) -> anyhow::Result<Option<StoredResource>> {
        let (restrict, mut params) = access::restriction(ctx, "r");
        let mut all = vec![SqlValue::from(rtype), SqlValue::from(id)];
        all.append(&mut params);
        let rows = self
            .db
            .fetch(
                &format!(
                    "SELECT {RESOURCE_COLUMNS} FROM resources r WHERE r.rtype = ? AND r.id = ? AND {restrict}"
                ),
                &all,
            )
            .await?;
        rows.into_iter().next().map(stored_from_row).transpose()
    }

    /// Every version, newest first (empty if absent or not visible).
    pub async fn history(
        &self,
        ctx: &AccessContext,
        rtype: &str,
        id: &str,
    ) -> anyhow::Result<Vec<StoredResource>> {
        let Some(current) = self.read(ctx, rtype, id).await? else {
            return Ok(vec![]);
        };
        let (restrict, mut params) = access::restriction(ctx, "r");
        let mut all = vec![SqlValue::from(rtype), SqlValue::from(id)];
        all.append(&mut params);
        let rows = self
            .db
            .fetch(
                &format!(
                    "SELECT 0, r.rtype, r.id, r.version, r.last_updated, r.deleted, r.content \
                     FROM resource_history r WHERE r.rtype = ? AND r.id = ? AND {restrict} ORDER BY r.version DESC"
                ),
                &all,
            )
            .await?;
        let mut out = vec![current];
        for row in rows {
            out.push(stored_from_row(row)?);
        }
        Ok(out)
    }

    /// One version, or `None`.
    pub async fn vread(
        &self,
        ctx: &AccessContext,
        rtype: &str,
        id: &str,
        version: i64,
    ) -> anyhow::Result<Option<StoredResource>> {
        Ok(self
            .history(ctx, rtype, id)
            .await?
            .into_iter()
            .find(|r| r.version == version))
    }
}
