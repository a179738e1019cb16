//! `GET|POST [base]/Patient/{id}/$everything` (FHIR R4 Patient-everything; PDex §pdex-212..214,
//! 392/393): the Patient first, then the member's compartment (Provenance included: it takes
//! its targets' owner at write time), then the shared resources the compartment references
//! (Practitioner, PractitionerRole, Organization, Location, Medication).
//!
//! Everything the caller may not receive is decided where it always is — the caller's
//! `store::access::View` (compartment, sensitivity, and the release rules of
//! `store::release`: ExplanationOfBenefit views, the prior-authorization rule, the look-back
//! window) — by `Store::stream_everything`.
//!
//! Pages are streamed: rows go from the database cursor to the socket one by one through a
//! small channel, so memory stays flat whatever `_count` is. Paging is a keyset on
//! (phase, resource type, pk), carried in an opaque `_cursor`: stable when resources are added.

use crate::fhir::datetime::{self, DateRange};
use crate::fhir::{FhirError, is_valid_id};
use crate::identity::AccessContext;
use crate::store::everything::EverythingPhase;
use crate::web::http::{body_text, query_pairs};
use crate::web::{Access, SharedState};
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

/// `GET|POST [base]/Patient/{id}/$everything`: parameters from the query, and from a
/// `Parameters` body on POST.
pub async fn everything(
    State(state): State<SharedState>,
    Access(ctx): Access,
    crate::web::Base(base): crate::web::Base,
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
    run(state, ctx, base, id, pairs).await
}

/// A Parameters body as name/value pairs (`fhir::parameters`, the one reader).
fn parameters_to_pairs(text: &str) -> Result<Vec<(String, String)>, FhirError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| FhirError::bad_request(format!("the body is not valid JSON: {e}")))?;
    Ok(crate::fhir::parameters::read(&v)?
        .into_iter()
        .map(|p| (p.name, p.value))
        .collect())
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
/// returns the streaming response, its links and `fullUrl`s on `base` (the caller's
/// listener).
pub async fn run(
    state: SharedState,
    ctx: AccessContext,
    base: String,
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
    let window = (req.start.is_some() || req.end.is_some()).then(|| {
        (
            req.start.map_or(i64::MIN, |s| s.low),
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
        link_base: format!("{}/Patient/{}/$everything", base, id),
        echo: req.echo,
        base_url: base,
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
    /// Care-date window [low, high] (`start`/`end`; the look-back window is the view's).
    window: Option<(i64, i64)>,
    count: usize,
    cursor: Option<Cursor>,
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
            let types = if phase == 1 {
                &self.phase1
            } else {
                &self.phase2
            };
            if types.is_empty() {
                continue;
            }
            let mut rows = state.store.stream_everything(
                ctx,
                EverythingPhase {
                    patient_id: &self.patient_id,
                    referenced_shared: phase == 2,
                    types,
                    since: self.since,
                    care_window: self.window,
                    after: after.as_ref().map(|c| (c.rtype.as_str(), c.pk)),
                    limit: remaining + 1,
                },
            );
            let mut seen = 0usize;
            let mut last: Option<(String, i64)> = None;
            while let Some(row) = rows.next().await {
                let r = row?;
                if seen == remaining {
                    // one row beyond the page: there is more
                    if let Some((rtype, pk)) = last.take() {
                        next = Some(Cursor { phase, rtype, pk });
                    }
                    break;
                }
                seen += 1;
                let mode = if phase == 1 { "match" } else { "include" };
                w.entry(
                    format!("{}/{}/{}", self.base_url, r.rtype, r.id),
                    &r.content,
                    mode,
                )
                .await?;
                last = Some((r.rtype, r.pk));
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
}
