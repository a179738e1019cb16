//! The one place that turns an [`AccessContext`] into SQL restrictions on `resources`.
//! Every read path (read, vread, history, search, includes, exports) appends this.
//!
//! Group ownership (PDex §pdex-159..164): a payer or provider caller sees a Group only when
//! `group_owners` records it as theirs ([`owner_keys`]); every other Group is as if absent.

use super::db::SqlValue;
use crate::auth::{AccessContext, ClientKind};

/// A SQL condition on the `resources` row aliased `alias`, with its parameters.
pub fn restriction(ctx: &AccessContext, alias: &str) -> (String, Vec<SqlValue>) {
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
        keys.push(format!("org:{}|{}", org.system, org.value));
    }
    if let Some(client) = &ctx.client_id {
        keys.push(format!("client:{client}"));
    }
    keys
}

/// The key a Group created for `ctx` is recorded under: the organization when known (every
/// client of that payer then sees it), else the client. `None` for in-process callers.
pub fn owner_key(ctx: &AccessContext) -> Option<String> {
    owner_keys(ctx).into_iter().next()
}
