//! Search execution: turns a parsed [`SearchRequest`] into SQL over the index tables
//! (index lookups, never scans of resource JSON), pages with a keyset cursor (stable when
//! rows are inserted), and resolves `_include` / `_revinclude`.

use super::access::{RESOURCE_COLUMNS, View};
use super::db::SqlValue;
use super::{Store, StoredResource, index_key, placeholders};
use crate::fhir::FhirError;
use crate::fhir::datetime::{DateRange, Prefix};
use crate::identity::AccessContext;
use crate::search::ParamType;
use crate::search::query::{
    Filter, FilterValue, IncludeSpec, Modifier, SearchRequest, SortKey, TokenSystem,
};
use base64::Engine;
use std::collections::HashSet;

/// One page of results.
pub struct SearchPage {
    pub matches: Vec<StoredResource>,
    pub included: Vec<StoredResource>,
    /// Cursor for the next page, if there is one.
    pub next_cursor: Option<String>,
    /// Cursor for the previous page, on pages after the first.
    pub prev_cursor: Option<String>,
    pub total: Option<i64>,
}

/// A SQL condition with its parameters.
#[derive(Default)]
struct Sql {
    text: String,
    params: Vec<SqlValue>,
}

impl Sql {
    fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }
    fn bind(&mut self, v: impl Into<SqlValue>) {
        self.params.push(v.into());
    }
    fn append(&mut self, other: Sql) {
        self.text.push_str(&other.text);
        self.params.extend(other.params);
    }
}

const MAX_INCLUDE_DEPTH: usize = 3;
/// Ids bound in one include query (both engines cap the number of parameters).
const ID_CHUNK: usize = 10_000;

impl Store {
    /// Runs a search for `ctx` (rows, counts and includes through its `access::View`).
    pub async fn search(
        &self,
        ctx: &AccessContext,
        req: &SearchRequest,
    ) -> Result<SearchPage, FhirError> {
        let view = &self.view(ctx);
        let where_sql = self.where_clause(view, req, "r")?;
        // `_count=0` asks for the count only (R4 search §3.1.1.5.6.1), like `_summary=count`.
        if req.summary_count || req.count == 0 {
            let total = self.count(&where_sql).await?;
            return Ok(SearchPage {
                matches: vec![],
                included: vec![],
                next_cursor: None,
                prev_cursor: None,
                total: Some(total),
            });
        }
        let cursor = match &req.cursor {
            Some(c) => Some(decode_cursor(c, &req.sort)?),
            None => None,
        };
        // A `previous` cursor walks the keyset backwards: reversed comparisons and order,
        // then the page is put back in the search's order.
        let back = cursor.as_ref().is_some_and(|c| c.back);

        let keys: Vec<Sql> = req.sort.iter().map(|k| sort_expr(k, "r")).collect();
        let mut sql = Sql::default();
        sql.push(&format!("SELECT * FROM (SELECT {RESOURCE_COLUMNS}"));
        for (i, k) in keys.into_iter().enumerate() {
            sql.push(", ");
            sql.append(k);
            sql.push(&format!(" AS s{i}"));
        }
        sql.push(" FROM resources r WHERE ");
        sql.push(&where_sql.text);
        sql.params.extend(where_sql.params.iter().cloned());
        sql.push(") t");
        if let Some(c) = cursor {
            sql.push(" WHERE ");
            sql.append(keyset_condition(&req.sort, c.values, back));
        }
        sql.push(" ORDER BY ");
        for (i, k) in req.sort.iter().enumerate() {
            sql.push(&format!(
                "s{i}{}, ",
                if k.descending != back { " DESC" } else { "" }
            ));
        }
        // Ties break on pk, in the direction of the first key, so that `-_lastUpdated` is
        // exactly the reverse of `_lastUpdated`.
        let pk_desc = req.sort.first().is_some_and(|k| k.descending);
        sql.push(if pk_desc != back {
            "pk DESC LIMIT ?"
        } else {
            "pk LIMIT ?"
        });
        sql.bind(req.count as i64 + 1);

        let rows = self.db.fetch_search(&sql.text, &sql.params).await?;
        let has_more = rows.len() > req.count;
        let mut matches = Vec::with_capacity(rows.len());
        // the keyset position (sort keys…, pk) of each row of the page
        let mut positions = Vec::with_capacity(rows.len());
        for row in rows {
            if matches.len() == req.count {
                break;
            }
            let (resource, mut position) = row.split(7)?;
            position.push(resource.value(0)?.clone());
            positions.push(position);
            matches.push(view.resource(resource)?);
        }
        if back {
            matches.reverse();
            positions.reverse();
        }
        // Forward: a next page when more rows follow; a previous one when we came by cursor.
        // Backward: the reverse (the page we came from follows; more rows before precede).
        let (more_after, more_before) = if back {
            (true, has_more)
        } else {
            (has_more, req.cursor.is_some())
        };
        let next_cursor = positions
            .last()
            .filter(|_| more_after)
            .map(|p| encode_cursor(p, false));
        let prev_cursor = positions
            .first()
            .filter(|_| more_before)
            .map(|p| encode_cursor(p, true));
        // Count only when asked for (a full count costs a scan), or when it is free.
        let total = if req.total_accurate && req.cursor.is_none() {
            Some(self.count(&where_sql).await?)
        } else if req.cursor.is_none() && next_cursor.is_none() {
            Some(matches.len() as i64)
        } else {
            None
        };
        let included = self.includes(view, req, &matches).await?;
        Ok(SearchPage {
            matches,
            included,
            next_cursor,
            prev_cursor,
            total,
        })
    }

    async fn count(&self, where_sql: &Sql) -> Result<i64, FhirError> {
        let rows = self
            .db
            .fetch_search(
                &format!("SELECT COUNT(*) FROM resources r WHERE {}", where_sql.text),
                &where_sql.params,
            )
            .await?;
        Ok(rows
            .first()
            .ok_or_else(|| anyhow::anyhow!("COUNT(*) returned no row"))?
            .int(0)?)
    }

    /// The WHERE clause (type, not deleted, access, filters) on alias `a`.
    fn where_clause(&self, view: &View, req: &SearchRequest, a: &str) -> Result<Sql, FhirError> {
        let mut sql = Sql::default();
        sql.push(&format!("{a}.rtype = ? AND {a}.deleted = 0 AND "));
        sql.bind(&req.rtype);
        let (restrict, params) = view.restriction(a);
        sql.push(&restrict);
        sql.params.extend(params);
        let driver = driving_filter(&req.filters);
        for (i, f) in req.filters.iter().enumerate() {
            sql.push(" AND ");
            sql.append(self.filter_sql(view, &req.rtype, f, a, Some(i) == driver)?);
        }
        Ok(sql)
    }

    /// The ANDed filters of `req` as one SQL condition on the `resources` row `a` (type,
    /// deletion and access are the caller's): the Bulk `_typeFilter` queries reuse the
    /// search planner through this.
    pub(crate) fn filters_condition(
        &self,
        view: &View,
        req: &SearchRequest,
        a: &str,
    ) -> Result<(String, Vec<SqlValue>), FhirError> {
        let mut sql = Sql::default();
        sql.push("1=1");
        let driver = driving_filter(&req.filters);
        for (i, f) in req.filters.iter().enumerate() {
            sql.push(" AND ");
            sql.append(self.filter_sql(view, &req.rtype, f, a, Some(i) == driver)?);
        }
        Ok((sql.text, sql.params))
    }

    /// One filter as a condition on the `resources` row `a`. The `driver` filter is written
    /// `pk IN (…)`, so the planner starts from its index lookup; the others are correlated
    /// `EXISTS` probes on `res_pk`, cheap per candidate row however unselective they are
    /// (`category=laboratory` alone matches a large share of all Observations).
    fn filter_sql(
        &self,
        view: &View,
        rtype: &str,
        f: &Filter,
        a: &str,
        driver: bool,
    ) -> Result<Sql, FhirError> {
        let mut sql = Sql::default();
        if f.code == "_id" {
            sql.push(&format!("{a}.id IN ({})", placeholders(f.values.len())));
            for v in &f.values {
                if let FilterValue::Exact(id) = v {
                    sql.bind(id);
                }
            }
            return Ok(sql);
        }
        if f.code == "_lastUpdated" {
            sql.push("(");
            for (i, v) in f.values.iter().enumerate() {
                if i > 0 {
                    sql.push(" OR ");
                }
                if let FilterValue::Date { prefix, range } = v {
                    sql.append(date_condition(
                        *prefix,
                        range.low,
                        range.high,
                        &format!("{a}.last_updated"),
                        &format!("{a}.last_updated"),
                    ));
                }
            }
            sql.push(")");
            return Ok(sql);
        }
        if let Some(chain) = &f.chain {
            // subject:Patient.name=x → references whose target matches the inner filter.
            sql.push(&format!(
                "{a}.pk IN (SELECT x.res_pk FROM idx_reference x WHERE x.rtype = ? AND x.param = ? AND ("
            ));
            sql.bind(rtype);
            sql.bind(&f.code);
            for (i, target) in chain.target_types.iter().enumerate() {
                if i > 0 {
                    sql.push(" OR ");
                }
                let alias = "c";
                sql.push(&format!(
                    "(x.target_type = ? AND x.target_id IN (SELECT {alias}.id FROM resources {alias} WHERE {alias}.rtype = ? AND {alias}.deleted = 0 AND "
                ));
                sql.bind(target);
                sql.bind(target);
                let (restrict, params) = view.restriction(alias);
                sql.push(&restrict);
                sql.params.extend(params);
                sql.push(" AND ");
                let inner_rtype_filter = &chain.filter;
                if self
                    .registry
                    .get(target, &inner_rtype_filter.code)
                    .is_none()
                {
                    return Err(FhirError::bad_request(format!(
                        "{target} has no search parameter {}",
                        inner_rtype_filter.code
                    )));
                }
                sql.append(self.filter_sql(view, target, inner_rtype_filter, alias, true)?);
                sql.push("))");
            }
            sql.push("))");
            return Ok(sql);
        }

        let (table, alias) = match (f.kind, &f.modifier) {
            (ParamType::Reference, Some(Modifier::Identifier)) => ("idx_token", "t"),
            (ParamType::Token | ParamType::Uri, _) => ("idx_token", "t"),
            (ParamType::String, _) => ("idx_string", "s"),
            (ParamType::Date, _) => ("idx_date", "d"),
            (ParamType::Number | ParamType::Quantity, _) => ("idx_quantity", "q"),
            (ParamType::Reference, _) => ("idx_reference", "x"),
            (kind, _) => {
                return Err(FhirError::bad_request(format!(
                    "{kind:?} search parameters are not supported"
                )));
            }
        };
        let param = if matches!(f.modifier, Some(Modifier::Identifier)) {
            format!("{}:identifier", f.code)
        } else {
            f.code.clone()
        };
        let negate = matches!(
            f.modifier,
            Some(Modifier::Not) | Some(Modifier::Missing(true))
        );
        let not = if negate { "NOT " } else { "" };
        if driver && !negate {
            sql.push(&format!(
                "{a}.pk IN (SELECT {alias}.res_pk FROM {table} {alias} WHERE {alias}.rtype = ? AND {alias}.param = ?"
            ));
            sql.bind(rtype);
            sql.bind(param);
        } else {
            // No rtype term: res_pk implies it, and leaving it out keeps the planner from
            // probing the (rtype, param, …) value indexes instead of the res_pk one.
            sql.push(&format!(
                "{not}EXISTS (SELECT 1 FROM {table} {alias} WHERE {alias}.res_pk = {a}.pk AND {alias}.param = ?"
            ));
            sql.bind(param);
        }
        if matches!(f.modifier, Some(Modifier::Missing(_))) {
            sql.push(")");
            return Ok(sql);
        }
        sql.push(" AND (");
        for (i, v) in f.values.iter().enumerate() {
            if i > 0 {
                sql.push(" OR ");
            }
            sql.append(value_condition(f, v, alias)?);
        }
        sql.push("))");
        Ok(sql)
    }

    /// `_include` and `_revinclude` targets of `matches` (and, with `:iterate`, of what they
    /// bring in), deduplicated and restricted by access like everything else.
    async fn includes(
        &self,
        view: &View,
        req: &SearchRequest,
        matches: &[StoredResource],
    ) -> Result<Vec<StoredResource>, FhirError> {
        if (req.include.is_empty() && req.revinclude.is_empty()) || matches.is_empty() {
            return Ok(vec![]);
        }
        let mut seen: HashSet<i64> = matches.iter().map(|r| r.pk).collect();
        let mut out: Vec<StoredResource> = Vec::new();
        let mut frontier: Vec<StoredResource> = matches.to_vec();
        for depth in 0..MAX_INCLUDE_DEPTH {
            let mut found = Vec::new();
            for spec in &req.include {
                if depth > 0 && !spec.iterate {
                    continue;
                }
                found.extend(self.include_targets(view, spec, &frontier).await?);
            }
            for spec in &req.revinclude {
                if depth > 0 && !spec.iterate {
                    continue;
                }
                found.extend(self.revinclude_sources(view, spec, &frontier).await?);
            }
            let fresh: Vec<StoredResource> =
                found.into_iter().filter(|r| seen.insert(r.pk)).collect();
            if fresh.is_empty() {
                break;
            }
            out.extend(fresh.iter().cloned());
            frontier = fresh;
        }
        Ok(out)
    }

    async fn include_targets(
        &self,
        view: &View,
        spec: &IncludeSpec,
        from: &[StoredResource],
    ) -> Result<Vec<StoredResource>, FhirError> {
        let pks: Vec<i64> = from
            .iter()
            .filter(|r| r.rtype == spec.source_type)
            .map(|r| r.pk)
            .collect();
        if pks.is_empty() {
            return Ok(vec![]);
        }
        let mut by_type: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for pks in pks.chunks(ID_CHUNK) {
            let mut sql = Sql::default();
            sql.push(&format!(
                "SELECT DISTINCT x.target_type, x.target_id FROM idx_reference x WHERE x.res_pk IN ({}) AND x.rtype = ? AND x.target_id IS NOT NULL",
                placeholders(pks.len())
            ));
            for pk in pks {
                sql.bind(*pk);
            }
            sql.bind(&spec.source_type);
            if let Some(p) = &spec.param {
                sql.push(" AND x.param = ?");
                sql.bind(p);
            }
            if let Some(t) = &spec.target_type {
                sql.push(" AND x.target_type = ?");
                sql.bind(t);
            }
            for row in self.db.fetch_search(&sql.text, &sql.params).await? {
                // a reference to an id-less or unknown target names nothing to include
                if let (Some(t), Some(id)) = (row.opt_text(0)?, row.opt_text(1)?) {
                    by_type.entry(t).or_default().push(id);
                }
            }
        }
        let mut out = Vec::new();
        let mut chunks: Vec<(&String, &[String])> = Vec::new();
        for (t, ids) in &by_type {
            chunks.extend(ids.chunks(ID_CHUNK).map(|c| (t, c)));
        }
        for (rtype, ids) in chunks {
            let mut sql = Sql::default();
            sql.push(&format!(
                "SELECT {RESOURCE_COLUMNS} FROM resources r WHERE r.rtype = ? AND r.deleted = 0 AND r.id IN ({}) AND ",
                placeholders(ids.len())
            ));
            sql.bind(rtype);
            for id in ids {
                sql.bind(id);
            }
            let (restrict, params) = view.restriction("r");
            sql.push(&restrict);
            sql.params.extend(params);
            for row in self.db.fetch_search(&sql.text, &sql.params).await? {
                out.push(view.resource(row)?);
            }
        }
        Ok(out)
    }

    async fn revinclude_sources(
        &self,
        view: &View,
        spec: &IncludeSpec,
        to: &[StoredResource],
    ) -> Result<Vec<StoredResource>, FhirError> {
        let mut targets: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for r in to {
            if spec.target_type.as_deref().is_none_or(|t| t == r.rtype) {
                targets.entry(&r.rtype).or_default().push(&r.id);
            }
        }
        let mut out = Vec::new();
        let mut chunks: Vec<(&str, &[&str])> = Vec::new();
        for (t, ids) in &targets {
            chunks.extend(ids.chunks(ID_CHUNK).map(|c| (*t, c)));
        }
        for (rtype, ids) in chunks {
            let mut sql = Sql::default();
            sql.push(&format!(
                "SELECT {RESOURCE_COLUMNS} FROM resources r WHERE r.rtype = ? AND r.deleted = 0 AND r.pk IN \
                 (SELECT x.res_pk FROM idx_reference x WHERE x.rtype = ? AND x.target_type = ? AND x.target_id IN ({})",
                placeholders(ids.len())
            ));
            sql.bind(&spec.source_type);
            sql.bind(&spec.source_type);
            sql.bind(rtype);
            for id in ids {
                sql.bind(*id);
            }
            if let Some(p) = &spec.param {
                sql.push(" AND x.param = ?");
                sql.bind(p);
            }
            sql.push(") AND ");
            let (restrict, params) = view.restriction("r");
            sql.push(&restrict);
            sql.params.extend(params);
            sql.push(" ORDER BY r.pk");
            for row in self.db.fetch_search(&sql.text, &sql.params).await? {
                out.push(view.resource(row)?);
            }
        }
        Ok(out)
    }
}

fn value_condition(f: &Filter, v: &FilterValue, t: &str) -> Result<Sql, FhirError> {
    let mut sql = Sql::default();
    match (v, &f.modifier) {
        (FilterValue::Token { system, code }, _) => {
            let mut parts = Vec::new();
            match system {
                TokenSystem::Any => {}
                TokenSystem::None => parts.push(format!("{t}.system IS NULL")),
                TokenSystem::Is(s) => {
                    parts.push(format!("{t}.system = ?"));
                    sql.bind(index_key(s));
                }
            }
            if let Some(c) = code {
                parts.push(format!("{t}.code = ?"));
                sql.bind(index_key(c));
            }
            if parts.is_empty() {
                parts.push("1=1".into());
            }
            sql.push(&format!("({})", parts.join(" AND ")));
        }
        // A value of punctuation only normalises to nothing; it must not match everything.
        // Token text holds normalised text only, so it can match nothing.
        (FilterValue::String { normalized, .. }, Some(Modifier::Text)) if normalized.is_empty() => {
            sql.push("1=0");
        }
        (FilterValue::String { normalized, .. }, Some(Modifier::Text)) => {
            sql.push(&format!("{t}.text LIKE ? ESCAPE '\\'"));
            sql.bind(format!("%{}%", like_literal(normalized)));
        }
        (FilterValue::String { raw, .. }, Some(Modifier::Exact)) => {
            sql.push(&format!("{t}.exact = ?"));
            sql.bind(raw);
        }
        // Punctuation-only values are compared literally with the value as written.
        (FilterValue::String { normalized, raw }, Some(Modifier::Contains))
            if normalized.is_empty() =>
        {
            sql.push(&format!("{t}.exact LIKE ? ESCAPE '\\'"));
            sql.bind(format!("%{}%", like_literal(raw)));
        }
        (FilterValue::String { normalized, raw }, None) if normalized.is_empty() => {
            sql.push(&format!("{t}.exact LIKE ? ESCAPE '\\'"));
            sql.bind(format!("{}%", like_literal(raw)));
        }
        (FilterValue::String { normalized, .. }, Some(Modifier::Contains)) => {
            sql.push(&format!("{t}.normalized LIKE ? ESCAPE '\\'"));
            sql.bind(format!("%{}%", like_literal(normalized)));
        }
        (FilterValue::String { normalized, .. }, _) => {
            // starts-with as an index range: [prefix, prefix + U+10FFFF)
            let prefix = index_key(normalized);
            sql.push(&format!("({t}.normalized >= ? AND {t}.normalized < ?)"));
            let upper = format!("{prefix}\u{10FFFF}");
            sql.bind(prefix);
            sql.bind(upper);
        }
        (FilterValue::Exact(value), Some(Modifier::Below)) => {
            sql.push(&format!("{t}.code LIKE ? ESCAPE '\\'"));
            sql.bind(format!("{}%", like_literal(&index_key(value))));
        }
        (FilterValue::Exact(value), _) => {
            sql.push(&format!("{t}.code = ?"));
            sql.bind(index_key(value));
        }
        (FilterValue::Date { prefix, range }, _) => {
            sql.append(date_condition(
                *prefix,
                range.low,
                range.high,
                &format!("{t}.low"),
                &format!("{t}.high"),
            ));
        }
        (
            FilterValue::Quantity {
                prefix,
                value,
                low,
                high,
                system,
                code,
            },
            _,
        ) => {
            let col = format!("{t}.value");
            let (cond, binds): (String, Vec<f64>) = match prefix {
                Prefix::Eq => (format!("({col} >= ? AND {col} < ?)"), vec![*low, *high]),
                Prefix::Ne => (format!("NOT ({col} >= ? AND {col} < ?)"), vec![*low, *high]),
                Prefix::Gt | Prefix::Sa => (format!("{col} > ?"), vec![*value]),
                Prefix::Lt | Prefix::Eb => (format!("{col} < ?"), vec![*value]),
                Prefix::Ge => (format!("{col} >= ?"), vec![*value]),
                Prefix::Le => (format!("{col} <= ?"), vec![*value]),
                Prefix::Ap => {
                    let w = (value.abs() * 0.1).max(*high - *low);
                    (
                        format!("({col} >= ? AND {col} <= ?)"),
                        vec![value - w, value + w],
                    )
                }
            };
            sql.push("(");
            sql.push(&cond);
            for b in binds {
                sql.bind(b);
            }
            if let Some(s) = system {
                sql.push(&format!(" AND {t}.system = ?"));
                sql.bind(s);
            }
            if let Some(c) = code {
                sql.push(&format!(" AND {t}.code = ?"));
                sql.bind(c);
            }
            sql.push(")");
        }
        (FilterValue::Reference { url, .. }, Some(Modifier::Identifier)) => {
            // value is system|value
            let parts = crate::search::query::split_unescaped(url, '|');
            match parts.as_slice() {
                [value] => {
                    sql.push(&format!("{t}.code = ?"));
                    sql.bind(index_key(value));
                }
                [system, value] => {
                    sql.push(&format!("({t}.system = ? AND {t}.code = ?)"));
                    sql.bind(index_key(system));
                    sql.bind(index_key(value));
                }
                _ => {
                    return Err(FhirError::bad_request(format!(
                        "{url:?} is not system|value"
                    )));
                }
            }
        }
        (
            FilterValue::Reference {
                target_type,
                id,
                url,
            },
            _,
        ) => match id {
            Some(id) => {
                sql.push(&format!("({t}.target_id = ?"));
                sql.bind(index_key(id));
                if let Some(tt) = target_type {
                    sql.push(&format!(" AND {t}.target_type = ?"));
                    sql.bind(tt);
                }
                sql.push(")");
            }
            None => {
                sql.push(&format!("{t}.url = ?"));
                sql.bind(url);
            }
        },
    }
    Ok(sql)
}

/// `value` as a LIKE pattern that matches it literally: `%`, `_` and the escape character
/// `\` escaped (used with `ESCAPE '\'`, which both engines take as standard SQL).
fn like_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The filter to drive the search from: a reference to a given resource (in practice the
/// member: `patient=`, `subject=`), else the first positive filter.
fn driving_filter(filters: &[Filter]) -> Option<usize> {
    let positive = |f: &Filter| {
        f.chain.is_none()
            && !matches!(
                f.modifier,
                Some(Modifier::Not)
                    | Some(Modifier::Missing(_))
                    | Some(Modifier::Text)
                    | Some(Modifier::Contains)
            )
            && f.code != "_id"
            && f.code != "_lastUpdated"
    };
    filters
        .iter()
        .position(|f| {
            positive(f)
                && f.kind == ParamType::Reference
                && f.values
                    .iter()
                    .all(|v| matches!(v, FilterValue::Reference { id: Some(_), .. }))
        })
        .or_else(|| filters.iter().position(positive))
}

/// FHIR date prefix semantics (R4 search "prefixes") on a stored range [`lo_col`, `hi_col`]
/// against the search range [low, high]; the same rules as `fhir::datetime::matches`.
fn date_condition(prefix: Prefix, low: i64, high: i64, lo_col: &str, hi_col: &str) -> Sql {
    let mut sql = Sql::default();
    let contained = format!("({lo_col} >= ? AND {hi_col} <= ?)");
    match prefix {
        Prefix::Eq => {
            sql.push(&contained);
            sql.bind(low);
            sql.bind(high);
        }
        Prefix::Ne => {
            sql.push(&format!("NOT {contained}"));
            sql.bind(low);
            sql.bind(high);
        }
        Prefix::Gt => {
            sql.push(&format!("{hi_col} > ?"));
            sql.bind(high);
        }
        Prefix::Lt => {
            sql.push(&format!("{lo_col} < ?"));
            sql.bind(low);
        }
        Prefix::Ge => {
            sql.push(&format!("({hi_col} > ? OR {contained})"));
            sql.bind(high);
            sql.bind(low);
            sql.bind(high);
        }
        Prefix::Le => {
            sql.push(&format!("({lo_col} < ? OR {contained})"));
            sql.bind(low);
            sql.bind(low);
            sql.bind(high);
        }
        Prefix::Sa => {
            sql.push(&format!("{lo_col} > ?"));
            sql.bind(high);
        }
        Prefix::Eb => {
            sql.push(&format!("{hi_col} < ?"));
            sql.bind(low);
        }
        Prefix::Ap => {
            let now = chrono::Utc::now().timestamp_millis();
            let a = crate::fhir::datetime::approximate_range(DateRange { low, high }, now);
            sql.push(&format!("({hi_col} >= ? AND {lo_col} <= ?)"));
            sql.bind(a.low);
            sql.bind(a.high);
        }
    }
    sql
}

/// The sort value of a resource for `_sort` (missing values sort last).
fn sort_expr(key: &SortKey, a: &str) -> Sql {
    let mut sql = Sql::default();
    if key.code == "_lastUpdated" {
        sql.push(&format!("{a}.last_updated"));
        return sql;
    }
    if key.code == "_id" {
        sql.push(&format!("{a}.id"));
        return sql;
    }
    let agg = if key.descending { "MAX" } else { "MIN" };
    let (table, col, missing): (&str, &str, SqlValue) = match key.kind {
        ParamType::Date => (
            "idx_date",
            if key.descending { "high" } else { "low" },
            SqlValue::Int(if key.descending { i64::MIN } else { i64::MAX }),
        ),
        ParamType::Number | ParamType::Quantity => (
            "idx_quantity",
            "value",
            SqlValue::Real(if key.descending { f64::MIN } else { f64::MAX }),
        ),
        ParamType::Token => (
            "idx_token",
            "code",
            SqlValue::Text(if key.descending {
                String::new()
            } else {
                "\u{10FFFF}".into()
            }),
        ),
        _ => (
            "idx_string",
            "normalized",
            SqlValue::Text(if key.descending {
                String::new()
            } else {
                "\u{10FFFF}".into()
            }),
        ),
    };
    sql.push(&format!(
        "COALESCE((SELECT {agg}(z.{col}) FROM {table} z WHERE z.res_pk = {a}.pk AND z.param = ?), ?)"
    ));
    sql.bind(&key.code);
    sql.bind(missing);
    sql
}

/// Rows strictly after (`back`: before) the cursor position in (sort keys…, pk) order.
fn keyset_condition(sort: &[SortKey], values: Vec<SqlValue>, back: bool) -> Sql {
    let mut sql = Sql::default();
    let cols: Vec<(String, bool)> = sort
        .iter()
        .enumerate()
        .map(|(i, k)| (format!("s{i}"), k.descending))
        .chain(std::iter::once((
            "pk".to_owned(),
            sort.first().is_some_and(|k| k.descending),
        )))
        .collect();
    sql.push("(");
    for i in 0..cols.len() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("(");
        for (j, (col, _)) in cols.iter().enumerate().take(i) {
            sql.push(&format!("{col} = ? AND "));
            sql.bind(values[j].clone());
        }
        let (col, desc) = &cols[i];
        sql.push(&format!(
            "{col} {} ?)",
            if *desc != back { "<" } else { ">" }
        ));
        sql.bind(values[i].clone());
    }
    sql.push(")");
    sql
}

#[derive(serde::Serialize, serde::Deserialize)]
enum CursorValue {
    I(i64),
    F(f64),
    S(String),
    N,
}

/// What a `_cursor` carries: the keyset position of a row and the direction to page in.
#[derive(serde::Serialize, serde::Deserialize)]
struct Cursor {
    /// The page before the position (a `previous` link) rather than after it.
    #[serde(rename = "b")]
    back: bool,
    #[serde(rename = "v")]
    values: Vec<CursorValue>,
}

/// A decoded cursor, its values checked against the search's sort keys.
struct Position {
    back: bool,
    values: Vec<SqlValue>,
}

fn encode_cursor(values: &[SqlValue], back: bool) -> String {
    let values: Vec<CursorValue> = values
        .iter()
        .map(|v| match v {
            SqlValue::Int(i) => CursorValue::I(*i),
            SqlValue::Real(f) => CursorValue::F(*f),
            SqlValue::Text(s) => CursorValue::S(s.clone()),
            SqlValue::Null | SqlValue::NullInt => CursorValue::N,
        })
        .collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&Cursor { back, values }).expect("cursor values serialise"))
}

/// Decodes a `_cursor`; each value must have the type of its sort key (see `sort_expr`) and
/// the last one is the pk, so a forged or foreign cursor is a 400, never a database error.
fn decode_cursor(cursor: &str, sort: &[SortKey]) -> Result<Position, FhirError> {
    let bad =
        || FhirError::bad_request("the paging cursor is invalid or belongs to another search");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let c: Cursor = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if c.values.len() != sort.len() + 1 {
        return Err(bad());
    }
    let mut values = Vec::with_capacity(c.values.len());
    for (i, v) in c.values.into_iter().enumerate() {
        let key = sort.get(i);
        let value = match (key.map(sort_value_type), v) {
            (None | Some(KeyType::Int), CursorValue::I(n)) => SqlValue::Int(n),
            (Some(KeyType::Real), CursorValue::F(f)) if f.is_finite() => SqlValue::Real(f),
            (Some(KeyType::Real), CursorValue::I(n)) => SqlValue::Real(n as f64),
            (Some(KeyType::Text), CursorValue::S(s)) if !s.contains('\0') => SqlValue::Text(s),
            _ => return Err(bad()),
        };
        values.push(value);
    }
    Ok(Position {
        back: c.back,
        values,
    })
}

/// The SQL type of a sort key's value.
enum KeyType {
    Int,
    Real,
    Text,
}

/// Mirrors `sort_expr`: which value type each sort key produces.
fn sort_value_type(key: &SortKey) -> KeyType {
    match (key.code.as_str(), key.kind) {
        ("_lastUpdated", _) => KeyType::Int,
        ("_id", _) => KeyType::Text,
        (_, ParamType::Date) => KeyType::Int,
        (_, ParamType::Number | ParamType::Quantity) => KeyType::Real,
        _ => KeyType::Text,
    }
}
