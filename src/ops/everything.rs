//! `GET|POST [base]/Patient/{id}/$everything` (FHIR R4 Patient-everything; PDex §pdex-212..214,
//! 392/393): the Patient first, then the member's compartment (Provenance included: it takes
//! its targets' owner at write time), then the shared resources the compartment references
//! (Practitioner, PractitionerRole, Organization, Location, Medication).
//!
//! Everything the caller may not see is filtered where it always is — the access layer
//! (`store::access`: compartment and sensitivity) in every SQL statement — and the release
//! rules of `consent::release` shape ExplanationOfBenefits and the look-back window.
//!
//! Pages are streamed: rows go from the database cursor to the socket one by one through a
//! small channel, so memory stays flat whatever `_count` is. Paging is a keyset on
//! (phase, resource type, pk), carried in an opaque `_cursor`: stable when resources are added.

use crate::auth::AccessContext;
use crate::consent::release::{self, ReleaseRules};
use crate::fhir::datetime::{self, DateRange};
use crate::fhir::{FhirError, is_valid_id};
use crate::server::http::{body_text, query_pairs};
use crate::server::{Access, SharedState};
use crate::store::{SqlValue, access, placeholders};
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use futures::StreamExt;
use serde_json::{Value, json};

/// Shared types returned when the compartment references them.
const REFERENCED_TYPES: &[&str] = &[
    "Location",
    "Medication",
    "Organization",
    "Practitioner",
    "PractitionerRole",
];
const DEFAULT_COUNT: usize = 200;
const MAX_COUNT: usize = 10_000;

/// The parsed parameters.
#[derive(Debug, Default)]
struct Request {
    start: Option<DateRange>,
    end: Option<DateRange>,
    since: Option<i64>,
    types: Option<Vec<String>>,
    count: usize,
    cursor: Option<Cursor>,
    /// Parameters to repeat in paging links.
    echo: Vec<(String, String)>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Cursor {
    /// 1 = compartment, 2 = referenced shared resources.
    phase: u8,
    rtype: String,
    pk: i64,
}

pub async fn everything_get(
    State(state): State<SharedState>,
    Access(ctx): Access,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, FhirError> {
    let pairs = query_pairs(q.as_deref());
    run(state, ctx, id, pairs).await
}

pub async fn everything_post(
    State(state): State<SharedState>,
    Access(ctx): Access,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FhirError> {
    let mut pairs = query_pairs(q.as_deref());
    if !body.is_empty() {
        let text = body_text(&headers, &body)?;
        pairs.extend(parameters_to_pairs(&text)?);
    }
    run(state, ctx, id, pairs).await
}

/// A Parameters body as name/value pairs.
fn parameters_to_pairs(text: &str) -> Result<Vec<(String, String)>, FhirError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| FhirError::bad_request(format!("the body is not valid JSON: {e}")))?;
    if v["resourceType"] != "Parameters" {
        return Err(FhirError::bad_request(
            "the body must be a Parameters resource",
        ));
    }
    let mut out = Vec::new();
    for p in v["parameter"].as_array().into_iter().flatten() {
        let name = p["name"]
            .as_str()
            .ok_or_else(|| FhirError::bad_request("a parameter has no name"))?;
        let value = p
            .as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.starts_with("value")))
            .map(|(_, v)| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .ok_or_else(|| FhirError::bad_request(format!("parameter {name} has no value")))?;
        out.push((name.to_owned(), value));
    }
    Ok(out)
}

fn parse_request(state: &SharedState, pairs: Vec<(String, String)>) -> Result<Request, FhirError> {
    let mut req = Request {
        count: DEFAULT_COUNT,
        ..Default::default()
    };
    let date = |name: &str, v: &str| {
        datetime::parse(v)
            .ok_or_else(|| FhirError::bad_request(format!("{name}={v:?} is not a FHIR date")))
    };
    for (k, v) in pairs {
        match k.as_str() {
            "start" => req.start = Some(date("start", &v)?),
            "end" => req.end = Some(date("end", &v)?),
            "_since" => req.since = Some(date("_since", &v)?.low),
            "_type" => {
                let mut types = Vec::new();
                for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if !state.store.registry.has_type(t) {
                        return Err(FhirError::bad_request(format!(
                            "_type: {t:?} is not a resource type this server supports"
                        )));
                    }
                    types.push(t.to_owned());
                }
                req.types.get_or_insert_with(Vec::new).extend(types);
            }
            "_count" => {
                let n: usize = v.parse().map_err(|_| {
                    FhirError::bad_request(format!("_count={v:?} is not a non-negative integer"))
                })?;
                req.count = n.clamp(1, MAX_COUNT);
            }
            "_cursor" => {
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(&v)
                    .map_err(|_| FhirError::bad_request("the paging cursor is invalid"))?;
                let c: Cursor = serde_json::from_slice(&bytes)
                    .map_err(|_| FhirError::bad_request("the paging cursor is invalid"))?;
                if !matches!(c.phase, 1 | 2) {
                    return Err(FhirError::bad_request("the paging cursor is invalid"));
                }
                req.cursor = Some(c);
                continue;
            }
            "_format" => continue,
            other => {
                return Err(FhirError::bad_request(format!(
                    "$everything has no parameter {other:?} (supported: start, end, _since, _type, _count)"
                )));
            }
        }
        req.echo.push((k, v));
    }
    if let (Some(s), Some(e)) = (req.start, req.end)
        && e.high < s.low
    {
        return Err(FhirError::bad_request("end is before start"));
    }
    Ok(req)
}

/// Runs `$everything` for `ctx` with the request's parameters (as name/value pairs) and
/// returns the streaming response.
pub async fn run(
    state: SharedState,
    ctx: AccessContext,
    id: String,
    pairs: Vec<(String, String)>,
) -> Result<Response, FhirError> {
    if !is_valid_id(&id) {
        return Err(FhirError::bad_request(format!(
            "{id:?} is not a valid FHIR id"
        )));
    }
    if let Some(ids) = ctx.scope.members()
        && !ids.contains(&id)
    {
        return Err(FhirError::forbidden(
            "this access token is limited to another member",
        ));
    }
    let req = parse_request(&state, pairs)?;
    let patient = state
        .store
        .read(&ctx, "Patient", &id)
        .await?
        .ok_or_else(|| FhirError::not_found(format!("Patient/{id} is not known")))?;
    if patient.deleted {
        return Err(FhirError::gone(format!("Patient/{id} was deleted")));
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let member_types: Vec<String> = state
        .store
        .compartment
        .member_types()
        .filter(|t| *t != "Patient")
        .map(str::to_owned)
        .collect();
    let wanted = |t: &str| {
        req.types
            .as_ref()
            .is_none_or(|ts| ts.iter().any(|x| x == t))
    };
    // Which types the token's scopes allow is the access layer's business (it restricts
    // every statement below); `_type` only narrows.
    let mut phase1: Vec<String> = member_types.into_iter().filter(|t| wanted(t)).collect();
    phase1.sort();
    let phase2: Vec<String> = REFERENCED_TYPES
        .iter()
        .filter(|t| wanted(t))
        .map(|t| (*t).to_owned())
        .collect();
    let lookback = release::lookback_start(&ctx, state.exchange.lookback_years, now_ms);
    let window_low = match (req.start.map(|s| s.low), lookback) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let window = (window_low.is_some() || req.end.is_some()).then(|| {
        (
            window_low.unwrap_or(i64::MIN),
            req.end.map_or(i64::MAX, |e| e.high),
        )
    });
    let plan = Plan {
        patient_id: id.clone(),
        first_page: req.cursor.is_none(),
        patient_content: (req.cursor.is_none() && wanted("Patient")).then_some(patient.content),
        phase1,
        phase2,
        since: req.since,
        window,
        count: req.count,
        cursor: req.cursor.clone(),
        rules: ReleaseRules::for_context(&ctx, now_ms),
        link_base: format!("{}/Patient/{}/$everything", state.base_url, id),
        echo: req.echo,
        base_url: state.base_url.clone(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(32);
    tokio::spawn(async move {
        if let Err(e) = plan.write(&state, &ctx, &tx).await {
            tracing::error!(error = %e, "$everything stream failed");
            let _ = tx
                .send(Err(std::io::Error::other(
                    "the response could not be completed",
                )))
                .await;
        }
    });
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::fhir::FHIR_JSON),
    );
    Ok(resp)
}

/// One page to write.
struct Plan {
    patient_id: String,
    first_page: bool,
    patient_content: Option<String>,
    phase1: Vec<String>,
    phase2: Vec<String>,
    since: Option<i64>,
    /// Care-date window [low, high] (start/end and the look-back window).
    window: Option<(i64, i64)>,
    count: usize,
    cursor: Option<Cursor>,
    rules: ReleaseRules,
    link_base: String,
    echo: Vec<(String, String)>,
    base_url: String,
}

type Sender = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Writes Bundle text to the channel, one entry per chunk.
struct BundleWriter<'a> {
    tx: &'a Sender,
    entries: usize,
}

impl BundleWriter<'_> {
    async fn send(&self, text: String) -> anyhow::Result<()> {
        self.tx
            .send(Ok(Bytes::from(text)))
            .await
            .map_err(|_| anyhow::anyhow!("client went away"))
    }

    async fn entry(&mut self, full_url: String, resource: &str, mode: &str) -> anyhow::Result<()> {
        let mut s = String::with_capacity(resource.len() + 96);
        s.push_str(if self.entries == 0 {
            ",\"entry\":["
        } else {
            ","
        });
        s.push_str("{\"fullUrl\":");
        s.push_str(&json!(full_url).to_string());
        s.push_str(",\"resource\":");
        s.push_str(resource);
        s.push_str(",\"search\":{\"mode\":\"");
        s.push_str(mode);
        s.push_str("\"}}");
        self.entries += 1;
        self.send(s).await
    }
}

impl Plan {
    async fn write(
        self,
        state: &SharedState,
        ctx: &AccessContext,
        tx: &Sender,
    ) -> anyhow::Result<()> {
        let mut w = BundleWriter { tx, entries: 0 };
        w.send(format!(
            r#"{{"resourceType":"Bundle","id":"{}","meta":{{"lastUpdated":"{}"}},"type":"searchset""#,
            uuid::Uuid::new_v4(),
            datetime::format_instant(chrono::Utc::now().timestamp_millis())
        ))
        .await?;
        if let Some(p) = &self.patient_content {
            w.entry(
                format!("{}/Patient/{}", self.base_url, self.patient_id),
                p,
                "match",
            )
            .await?;
        }
        let mut remaining = self.count;
        let mut next: Option<Cursor> = None;
        let start_phase = self.cursor.as_ref().map_or(1, |c| c.phase);
        for phase in start_phase..=2 {
            let after = self.cursor.clone().filter(|c| c.phase == phase);
            let (sql, params) = self.phase_sql(ctx, phase, after.as_ref(), remaining + 1);
            let Some(sql) = sql else { continue };
            let mut rows = state.store.db.stream(sql, params);
            let mut seen = 0usize;
            let mut last: Option<(String, i64)> = None;
            while let Some(row) = rows.next().await {
                let row = row?;
                if seen == remaining {
                    // one row beyond the page: there is more
                    if let Some((rtype, pk)) = last.take() {
                        next = Some(Cursor { phase, rtype, pk });
                    }
                    break;
                }
                seen += 1;
                let mut it = row.into_iter();
                let pk = it.next().and_then(|v| v.as_i64()).unwrap_or_default();
                let rtype = it
                    .next()
                    .and_then(SqlValue::into_string)
                    .unwrap_or_default();
                let id = it
                    .next()
                    .and_then(SqlValue::into_string)
                    .unwrap_or_default();
                let content = it
                    .next()
                    .and_then(SqlValue::into_string)
                    .unwrap_or_default();
                if let Some(released) = self.rules.apply(&rtype, &content) {
                    let mode = if phase == 1 { "match" } else { "include" };
                    w.entry(format!("{}/{rtype}/{id}", self.base_url), &released, mode)
                        .await?;
                }
                last = Some((rtype, pk));
            }
            drop(rows);
            if next.is_some() {
                break;
            }
            remaining -= seen;
            if remaining == 0 {
                // The page is full exactly at a phase boundary: continue with what follows.
                if let Some((rtype, pk)) = last {
                    next = Some(Cursor { phase, rtype, pk });
                }
                break;
            }
        }
        let mut tail = String::new();
        if w.entries > 0 {
            tail.push(']');
        }
        let mut links = vec![json!({"relation": "self", "url": self.link(self.cursor.as_ref())})];
        if let Some(c) = &next {
            links.push(json!({"relation": "next", "url": self.link(Some(c))}));
        }
        if self.first_page && next.is_none() {
            tail.push_str(&format!(",\"total\":{}", w.entries));
        }
        tail.push_str(",\"link\":");
        tail.push_str(&Value::Array(links).to_string());
        tail.push('}');
        w.send(tail).await
    }

    fn link(&self, cursor: Option<&Cursor>) -> String {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.echo {
            ser.append_pair(k, v);
        }
        if let Some(c) = cursor {
            let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(c).expect("cursor serialises"));
            ser.append_pair("_cursor", &token);
        }
        let q = ser.finish();
        if q.is_empty() {
            self.link_base.clone()
        } else {
            format!("{}?{q}", self.link_base)
        }
    }

    /// The SQL of one phase, after `after`, at most `limit` rows, in (rtype, pk) order.
    fn phase_sql(
        &self,
        ctx: &AccessContext,
        phase: u8,
        after: Option<&Cursor>,
        limit: usize,
    ) -> (Option<String>, Vec<SqlValue>) {
        let types = if phase == 1 {
            &self.phase1
        } else {
            &self.phase2
        };
        if types.is_empty() {
            return (None, vec![]);
        }
        let mut params: Vec<SqlValue> = Vec::new();
        let mut sql = String::from("SELECT r.pk, r.rtype, r.id, r.content FROM resources r WHERE ");
        if phase == 1 {
            sql.push_str("r.patient_id = ? AND r.rtype <> 'Patient' AND ");
            params.push((&self.patient_id).into());
        } else {
            sql.push_str("r.shared = 1 AND ");
        }
        sql.push_str(&format!(
            "r.deleted = 0 AND r.rtype IN ({}) AND ",
            placeholders(types.len())
        ));
        params.extend(types.iter().map(SqlValue::from));
        let (restrict, p) = access::restriction(ctx, "r");
        sql.push_str(&restrict);
        params.extend(p);
        if phase == 2 {
            // Shared resources the member's visible records reference (index lookups: the
            // member's rows, their reference rows by res_pk, targets by (rtype, id)).
            let (restrict_m, pm) = access::restriction(ctx, "m");
            sql.push_str(&format!(
                " AND r.pk IN (SELECT t.pk FROM resources m \
                 JOIN idx_reference x ON x.res_pk = m.pk \
                 JOIN resources t ON t.rtype = x.target_type AND t.id = x.target_id \
                 WHERE m.patient_id = ? AND m.deleted = 0 AND {restrict_m} AND x.target_type IN ({}))",
                placeholders(types.len())
            ));
            params.push((&self.patient_id).into());
            params.extend(pm);
            params.extend(types.iter().map(SqlValue::from));
        }
        if let Some(since) = self.since {
            sql.push_str(" AND r.last_updated >= ?");
            params.push(since.into());
        }
        if phase == 1
            && let Some((low, high)) = self.window
        {
            sql.push_str(" AND ");
            sql.push_str(&release::care_date_condition());
            params.push(low.into());
            params.push(high.into());
        }
        if let Some(c) = after {
            sql.push_str(" AND (r.rtype > ? OR (r.rtype = ? AND r.pk > ?))");
            params.push((&c.rtype).into());
            params.push((&c.rtype).into());
            params.push(c.pk.into());
        }
        sql.push_str(" ORDER BY r.rtype, r.pk LIMIT ?");
        params.push((limit as i64).into());
        (Some(sql), params)
    }
}
