//! The one place that decides what a requester receives from the store: *which rows*
//! ([`restriction`]: compartment, readable types, sensitivity, Group ownership) and *what of
//! each row* (the release rules of `store::release`: the non-financial EOB view, the
//! prior-authorization rule, the look-back window). Every read path — read, vread, history,
//! search pages, includes, counts, `$everything`, exports — reads through a [`View`].
//!
//! Architecture invariant: a [`StoredResource`] or an [`ExportRow`] can only be made here
//! (their `_released` field is private to this module), so stored bytes reach a caller only
//! after [`View`] released them; the one exception, [`written`], is the writer's own result.
//!
//! Group ownership (PDex §pdex-159..164): a payer or provider caller sees a Group only when
//! `group_owners` records it as theirs ([`owner_keys`]); every other Group is as if absent.

use super::Store;
use super::db::{Row, SqlValue};
use super::release::Release;
use crate::identity::{AccessContext, ClientKind};
use crate::search::query::SearchRequest;
use std::borrow::Cow;

/// Proof that a row went through the release rules; only this module makes one.
#[derive(Debug, Clone)]
pub struct Released(());

/// A resource row as a caller receives it (released by a [`View`]).
#[derive(Debug, Clone)]
pub struct StoredResource {
    pub pk: i64,
    pub rtype: String,
    pub id: String,
    pub version: i64,
    /// Epoch milliseconds.
    pub last_updated: i64,
    pub deleted: bool,
    /// The JSON we serve, as released to this caller.
    pub content: String,
    _released: Released,
}

/// One exported row, as released.
#[derive(Debug, Clone)]
pub struct ExportRow {
    pub pk: i64,
    pub last_updated: i64,
    pub id: String,
    /// The stored JSON, as released to the job's owner.
    pub content: String,
    _released: Released,
}

/// Columns selected for a [`StoredResource`], in order, for the `resources` alias `r`.
pub(crate) const RESOURCE_COLUMNS: &str =
    "r.pk, r.rtype, r.id, r.version, r.last_updated, r.deleted, r.content";

/// A caller's view of the store at one moment.
pub struct View {
    ctx: AccessContext,
    release: Release,
    /// Types read through granular scopes only, with their queries parsed (`None`: a query
    /// that does not parse, which then matches nothing).
    granular: Vec<(String, Vec<Option<SearchRequest>>)>,
    /// To compile the granular queries into SQL (the search planner's filters).
    store: Store,
}

impl Store {
    /// What `ctx` receives now.
    pub fn view(&self, ctx: &AccessContext) -> View {
        let now = chrono::Utc::now().timestamp_millis();
        let granular = ctx
            .granular_reads()
            .into_iter()
            .map(|(rtype, queries)| {
                let reqs = queries
                    .iter()
                    .map(|q| self.scope_query(&rtype, q))
                    .collect();
                (rtype, reqs)
            })
            .collect();
        View {
            ctx: ctx.clone(),
            release: Release::for_context(ctx, &self.release, now),
            granular,
            store: self.clone(),
        }
    }

    /// The query of a granular scope on `rtype` as search filters, if it is one this server
    /// can enforce: every parameter a search parameter of the type (SMART v2: "any search
    /// parameter the resource type supports"), no result parameters (`_count`, `_sort`,
    /// `_include`, …).
    pub fn scope_query(&self, rtype: &str, query: &str) -> Option<SearchRequest> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if pairs.is_empty() || pairs.iter().any(|(k, _)| k.starts_with('_') && k != "_id") {
            return None;
        }
        crate::search::query::parse(&self.registry, rtype, &pairs, "", false)
            .ok()
            .filter(|r| r.filters.len() == pairs.len())
    }
}

impl View {
    /// The caller's context.
    pub fn ctx(&self) -> &AccessContext {
        &self.ctx
    }

    /// The SQL condition on the `resources` (or `resource_history`) row aliased `alias`:
    /// the access restriction and the release rules' row conditions.
    pub fn restriction(&self, alias: &str) -> (String, Vec<SqlValue>) {
        let (mut sql, mut params) = restriction(&self.ctx, alias);
        self.granular_conditions(alias, &mut sql, &mut params);
        self.release.conditions(alias, &mut sql, &mut params);
        (sql, params)
    }

    /// [`View::restriction`] for `resource_history` rows, which have no index rows: without
    /// the granular conditions, which the current version met (history and vread read the
    /// current version through [`View::restriction`] first).
    pub fn history_restriction(&self, alias: &str) -> (String, Vec<SqlValue>) {
        let (mut sql, mut params) = restriction(&self.ctx, alias);
        self.release.conditions(alias, &mut sql, &mut params);
        (sql, params)
    }

    /// Granular scopes (SMART v2 `patient/Observation.rs?category=laboratory`): a row of a
    /// type read only through them must match one of their queries, on every path that reads
    /// through this view (search, includes, reads, `$everything`, exports).
    fn granular_conditions(&self, alias: &str, sql: &mut String, params: &mut Vec<SqlValue>) {
        if self.granular.is_empty() {
            return;
        }
        // the queries' own chained filters read through the view without granular terms
        let plain = View {
            ctx: self.ctx.clone(),
            release: self.release,
            granular: Vec::new(),
            store: self.store.clone(),
        };
        for (rtype, reqs) in &self.granular {
            sql.push_str(&format!(" AND ({alias}.rtype <> ?"));
            params.push(SqlValue::from(rtype));
            for req in reqs {
                let Some(req) = req else { continue };
                match self.store.filters_condition(&plain, req, alias) {
                    Ok((cond, p)) => {
                        sql.push_str(&format!(" OR ({cond})"));
                        params.extend(p);
                    }
                    Err(e) => {
                        tracing::warn!(target: "pdex::access", rtype, error = %e.diagnostics, "a granular scope's query cannot be enforced; it matches nothing");
                    }
                }
            }
            sql.push(')');
        }
    }

    /// Stored bytes of a row that met [`View::restriction`], as released.
    pub fn content<'c>(&self, rtype: &str, content: &'c str) -> Cow<'c, str> {
        self.release.content(rtype, content)
    }

    /// A row of [`RESOURCE_COLUMNS`] that met [`View::restriction`], released. A column
    /// that does not decode is an error, never a default.
    pub(crate) fn resource(&self, row: Row) -> anyhow::Result<StoredResource> {
        anyhow::ensure!(
            row.len() == 7,
            "a resource row has {} columns, not 7",
            row.len()
        );
        let rtype = row.text(1)?;
        let content = row.text(6)?;
        let deleted = row.flag(5)?;
        let content = if deleted {
            content
        } else {
            self.content(&rtype, &content).into_owned()
        };
        Ok(StoredResource {
            pk: row.int(0)?,
            rtype,
            id: row.text(2)?,
            version: row.int(3)?,
            last_updated: row.int(4)?,
            deleted,
            content,
            _released: Released(()),
        })
    }

    /// An export row (`pk`, `last_updated`, `id`, `content`) of type `rtype` that met
    /// [`View::restriction`], released (tombstones as they are).
    pub(crate) fn export_row(
        &self,
        rtype: &str,
        row: Row,
        deleted: bool,
    ) -> anyhow::Result<ExportRow> {
        anyhow::ensure!(
            row.len() == 4,
            "an export row has {} columns, not 4",
            row.len()
        );
        let content = row.text(3)?;
        let content = if deleted {
            content
        } else {
            self.content(rtype, &content).into_owned()
        };
        Ok(ExportRow {
            pk: row.int(0)?,
            last_updated: row.int(1)?,
            id: row.text(2)?,
            content,
            _released: Released(()),
        })
    }
}

/// The write side of the one access layer: may `ctx` make this write? Contexts over every
/// member (the operator, an `admin` token with write scopes) may write what their scopes
/// allow (checked by the caller). A patient-scoped context — a member's own app holding
/// `patient/Consent.c` (issue 21: the member's own Consents) — may only *create* a resource
/// in its own member's compartment: never another member's, never shared data, never an
/// update or a delete. `Err` is the reason (a 403 for the client).
pub fn may_write(
    ctx: &AccessContext,
    kind: &super::WriteKind,
    prepared: Option<&super::Prepared>,
) -> Result<(), String> {
    if !ctx.can_write {
        return Err("this access token does not allow writes".into());
    }
    let Some(member) = ctx.patient() else {
        return match ctx.scope {
            crate::identity::DataScope::All => Ok(()),
            _ => Err("this access token does not allow writes".into()),
        };
    };
    let own = prepared.is_some_and(|p| !p.shared && p.patient_id.as_deref() == Some(member));
    match kind {
        super::WriteKind::Create if own => Ok(()),
        super::WriteKind::Create => Err(format!(
            "a member's token writes only for its own member: the resource must name Patient/{member}"
        )),
        _ => Err("a member's token may create resources, not change or delete them".into()),
    }
}

/// The result of a write, for the writer (who may see what it wrote).
pub(crate) fn written(
    rtype: String,
    id: String,
    version: i64,
    last_updated: i64,
    deleted: bool,
    content: String,
) -> StoredResource {
    StoredResource {
        pk: 0,
        rtype,
        id,
        version,
        last_updated,
        deleted,
        content,
        _released: Released(()),
    }
}

/// The row restriction alone (no release rules): a SQL condition on the `resources` row
/// aliased `alias`, with its parameters. Reads go through [`View::restriction`].
fn restriction(ctx: &AccessContext, alias: &str) -> (String, Vec<SqlValue>) {
    let mut sql = String::from("1=1");
    let mut params = Vec::new();
    if let Some(ids) = ctx.scope.members() {
        // Shared resources (types outside the compartment) stay visible; anything owned by
        // another member, or by no member we know, is not.
        sql.push_str(&format!(" AND ({alias}.shared = 1"));
        if !ids.is_empty() {
            sql.push_str(&format!(" OR {alias}.patient_id IN ("));
            for (i, id) in ids.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ",?" });
                params.push(SqlValue::from(id));
            }
            sql.push(')');
        }
        if let Some(owned) = owned_groups(ctx, alias, &mut params) {
            sql.push_str(&format!(" OR ({alias}.rtype = 'Group' AND {owned})"));
        }
        sql.push(')');
    } else if let Some(owned) = owned_groups(ctx, alias, &mut params) {
        // An unrestricted payer or provider context still sees only its own Groups.
        sql.push_str(&format!(" AND ({alias}.rtype <> 'Group' OR {owned})"));
    }
    if let Some(types) = ctx.readable_types() {
        // Scopes name the types a caller may read (SMART `system/Patient.rs` …): included
        // and exported resources of other types stay out.
        if types.is_empty() {
            sql.push_str(" AND 1=0");
        } else {
            sql.push_str(&format!(" AND {alias}.rtype IN ("));
            for (i, t) in types.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ",?" });
                params.push(SqlValue::from(t));
            }
            sql.push(')');
        }
    }
    if !ctx.allow_sensitive {
        sql.push_str(&format!(" AND {alias}.sensitive = 0"));
    }
    (sql, params)
}

/// For payer and provider callers, the condition that the Group row `alias` is theirs (its
/// parameters appended to `params`); `None` for other callers, whose Groups follow the
/// general rules (unrestricted contexts see all, member contexts none).
fn owned_groups(ctx: &AccessContext, alias: &str, params: &mut Vec<SqlValue>) -> Option<String> {
    if !matches!(ctx.kind, ClientKind::Payer | ClientKind::Provider) {
        return None;
    }
    let keys = owner_keys(ctx);
    if keys.is_empty() {
        return Some("1=0".to_owned());
    }
    let marks = super::placeholders(keys.len());
    params.extend(keys.into_iter().map(SqlValue::from));
    Some(format!(
        "EXISTS (SELECT 1 FROM group_owners gown WHERE gown.group_id = {alias}.id AND gown.owner IN ({marks}))"
    ))
}

/// The ownership keys a caller's Groups are recorded under: its organization
/// (`org:SYSTEM|VALUE`) and its client id (`client:ID`).
pub fn owner_keys(ctx: &AccessContext) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(org) = &ctx.organization {
        keys.push(format!("org:{org}"));
    }
    if let Some(client) = &ctx.client_id {
        keys.push(format!("client:{client}"));
    }
    keys
}

impl super::Store {
    /// Records that Group `group_id` belongs to `ctx`'s organization (or client), in the
    /// caller's transaction — the one that writes the Group. A Group already owned keeps its
    /// owner (a resumed job writes it again). Nothing is recorded for in-process callers.
    pub async fn record_group_owner(
        &self,
        tx: &mut dyn super::db::Transaction,
        group_id: &str,
        ctx: &AccessContext,
    ) -> anyhow::Result<()> {
        let Some(owner) = owner_key(ctx) else {
            return Ok(());
        };
        tx.execute(
            "INSERT INTO group_owners (group_id, owner, client_id, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (group_id) DO NOTHING",
            vec![
                group_id.into(),
                owner.into(),
                ctx.client_id.as_deref().into(),
                chrono::Utc::now().timestamp_millis().into(),
            ],
        )
        .await?;
        Ok(())
    }
}

/// The key a Group created for `ctx` is recorded under: the organization when known (every
/// client of that payer then sees it), else the client. `None` for in-process callers.
pub fn owner_key(ctx: &AccessContext) -> Option<String> {
    owner_keys(ctx).into_iter().next()
}
