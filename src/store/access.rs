//! The one place that turns an [`AccessContext`] into SQL restrictions on `resources`.
//! Every read path (read, vread, history, search, includes, exports) appends this.

use super::db::SqlValue;
use crate::auth::{AccessContext, DataScope};

/// A SQL condition on the `resources` row aliased `alias`, with its parameters.
pub fn restriction(ctx: &AccessContext, alias: &str) -> (String, Vec<SqlValue>) {
    let mut sql = String::from("1=1");
    let mut params = Vec::new();
    if let DataScope::Patients(ids) = &ctx.scope {
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
        sql.push(')');
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
