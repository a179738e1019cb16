//! Reads by id: read, vread and instance history — each through the caller's `access::View`
//! (a resource withheld by the release rules reads as absent).

use super::access::RESOURCE_COLUMNS;
use super::db::SqlValue;
use super::{Store, StoredResource};
use crate::identity::AccessContext;

impl Store {
    /// Rows of `table` (alias `r`) for one resource the caller may see, newest first.
    async fn rows_by_id(
        &self,
        ctx: &AccessContext,
        columns: &str,
        table: &str,
        rtype: &str,
        id: &str,
    ) -> anyhow::Result<Vec<StoredResource>> {
        let view = self.view(ctx);
        let (restrict, params) = if table == "resource_history" {
            view.history_restriction("r")
        } else {
            view.restriction("r")
        };
        let mut all = vec![SqlValue::from(rtype), SqlValue::from(id)];
        all.extend(params);
        let sql = format!(
            "SELECT {columns} FROM {table} r WHERE r.rtype = ? AND r.id = ? AND {restrict} ORDER BY r.version DESC"
        );
        self.db
            .fetch(&sql, &all)
            .await?
            .into_iter()
            .map(|row| view.resource(row))
            .collect()
    }

    /// The current version (a tombstone if deleted), or `None` if absent or not visible.
    pub async fn read(
        &self,
        ctx: &AccessContext,
        rtype: &str,
        id: &str,
    ) -> anyhow::Result<Option<StoredResource>> {
        let rows = self
            .rows_by_id(ctx, RESOURCE_COLUMNS, "resources", rtype, id)
            .await?;
        Ok(rows.into_iter().next())
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
        // history rows have no pk of their own
        let columns = "0, r.rtype, r.id, r.version, r.last_updated, r.deleted, r.content";
        let mut out = vec![current];
        out.extend(
            self.rows_by_id(ctx, columns, "resource_history", rtype, id)
                .await?,
        );
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

    /// Does the database answer (`GET /health`)?
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.db.fetch("SELECT 1", &[]).await.map(|_| ())
    }

    /// Does the store hold no resources at all (e.g. before `serve --demo` loads its data)?
    pub async fn is_empty(&self) -> anyhow::Result<bool> {
        let rows = self
            .db
            .fetch("SELECT 1 FROM resources LIMIT 1", &[])
            .await?;
        Ok(rows.is_empty())
    }
}
