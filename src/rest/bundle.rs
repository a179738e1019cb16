//! `POST /fhir` with a transaction or batch Bundle. A transaction runs in one database
//! transaction (all or nothing) and rewrites `urn:uuid:` references to the ids it assigns;
//! a batch runs each entry on its own and reports each entry's outcome.

use super::interactions::require_write;
use crate::fhir::bundle::{Entry, write_bundle};
use crate::fhir::datetime::format_instant;
use crate::fhir::json::replace_string_literal;
use crate::fhir::{FhirError, Issue, is_valid_id};
use crate::identity::AccessContext;
use crate::search::query::SearchRequest;
use crate::store::conditional::{Conditional, Existing};
use crate::store::{IdRule, StoredResource, WriteKind, WriteOp, WriteOutcome, WriteResult};
use crate::web::http::{Return, fhir_json, prefer, query_pairs, resource_text};
use crate::web::{Access, SharedState};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct BundleIn {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    #[serde(rename = "type")]
    bundle_type: Option<String>,
    #[serde(default)]
    entry: Vec<EntryIn>,
}

#[derive(Deserialize)]
struct EntryIn {
    #[serde(rename = "fullUrl")]
    full_url: Option<String>,
    resource: Option<Box<RawValue>>,
    request: Option<RequestIn>,
}

#[derive(Deserialize)]
struct RequestIn {
    method: String,
    url: String,
    #[serde(rename = "ifMatch")]
    if_match: Option<String>,
    #[serde(rename = "ifNoneExist")]
    if_none_exist: Option<String>,
}

/// What one entry asks for, once checked.
enum Action {
    Write { op: Box<WriteOp> },
    Get { url: String },
}

pub async fn transaction_or_batch(
    axum::extract::State(state): axum::extract::State<SharedState>,
    Access(ctx): Access,
    crate::web::Base(base): crate::web::Base,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FhirError> {
    crate::web::http::check_format(&headers, &[])?;
    let text = resource_text(&headers, &body)?;
    let bundle: BundleIn = serde_json::from_str(&text)
        .map_err(|e| FhirError::bad_request(format!("not a Bundle: {e}")))?;
    if bundle.resource_type.as_deref() != Some("Bundle") {
        return Err(FhirError::bad_request("POST to the base takes a Bundle"));
    }
    let p = prefer(&headers);
    match bundle.bundle_type.as_deref() {
        Some("transaction") => transaction(&state, &ctx, &base, bundle, p.ret, p.lenient).await,
        Some("batch") => batch(&state, &ctx, &base, bundle, p.ret, p.lenient).await,
        other => Err(FhirError::bad_request(format!(
            "Bundle.type must be transaction or batch, not {other:?}"
        ))),
    }
}

/// Splits `Type/id` (or `Type`, or `Type?query`).
fn parse_url(url: &str) -> (String, Option<String>, Option<String>) {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (url, None),
    };
    let mut parts = path.trim_matches('/').splitn(2, '/');
    let rtype = parts.next().unwrap_or_default().to_owned();
    let id = parts.next().map(str::to_owned);
    (rtype, id, query)
}

fn parse_if_match(v: &Option<String>) -> Result<Option<i64>, FhirError> {
    match v {
        None => Ok(None),
        Some(t) => crate::web::http::version_etag(t)
            .map(Some)
            .ok_or_else(|| FhirError::bad_request(format!("ifMatch {t:?} is not a version ETag"))),
    }
}

/// Checks one entry and prepares its action. `resource_text` has references rewritten;
/// `lenient`: `Prefer: handling=lenient` (unknown elements are warnings).
fn plan_entry(
    state: &SharedState,
    entry: &EntryIn,
    resource_text: Option<&str>,
    assigned_id: Option<&str>,
    lenient: bool,
) -> Result<Action, FhirError> {
    let request = entry
        .request
        .as_ref()
        .ok_or_else(|| FhirError::bad_request("every entry needs a request"))?;
    let (rtype, id, _query) = parse_url(&request.url);
    super::interactions::check_type(state, &rtype)?;
    let body = || {
        resource_text.ok_or_else(|| {
            FhirError::bad_request(format!(
                "{} {} needs a resource",
                request.method, request.url
            ))
        })
    };
    match request.method.as_str() {
        "POST" => {
            let rule = match assigned_id {
                Some(id) => IdRule::Given(id.to_owned()),
                None => IdRule::Assign,
            };
            let text = body()?;
            let prepared = if let IdRule::Given(id) = &rule {
                // The entry's resource may have no id; give it the assigned one.
                let mut raw =
                    crate::fhir::json::RawResource::parse(text).map_err(FhirError::bad_request)?;
                raw.set_id(id);
                state
                    .store
                    .prepare_with(&raw.to_json(), Some(&rtype), rule.clone(), lenient)?
            } else {
                state
                    .store
                    .prepare_with(text, Some(&rtype), rule, lenient)?
            };
            Ok(Action::Write {
                op: Box::new(WriteOp::put(WriteKind::Create, prepared)),
            })
        }
        "PUT" => {
            let id = id.filter(|i| is_valid_id(i)).ok_or_else(|| {
                FhirError::bad_request(format!(
                    "PUT {} needs Type/id (conditional update is not supported)",
                    request.url
                ))
            })?;
            let prepared =
                state
                    .store
                    .prepare_with(body()?, Some(&rtype), IdRule::Given(id), lenient)?;
            Ok(Action::Write {
                op: Box::new(WriteOp::put(
                    WriteKind::Update {
                        if_match: parse_if_match(&request.if_match)?,
                    },
                    prepared,
                )),
            })
        }
        "DELETE" => {
            let id = id.filter(|i| is_valid_id(i)).ok_or_else(|| {
                FhirError::bad_request(format!(
                    "DELETE {} needs Type/id (conditional delete is not supported)",
                    request.url
                ))
            })?;
            Ok(Action::Write {
                op: Box::new(WriteOp::delete(
                    &rtype,
                    &id,
                    parse_if_match(&request.if_match)?,
                )),
            })
        }
        "GET" | "HEAD" => {
            // run after the writes, through the same read and search paths as GET requests
            Ok(Action::Get {
                url: request.url.clone(),
            })
        }
        other => Err(FhirError::bad_request(format!(
            "request.method {other} is not supported in a Bundle"
        ))),
    }
}

/// 403 unless the caller's scopes allow this write on its resource type.
fn check_write_scope(ctx: &AccessContext, op: &WriteOp) -> Result<(), FhirError> {
    use crate::identity::Interaction;
    let interaction = match op.kind {
        crate::store::WriteKind::Create => Interaction::Create,
        crate::store::WriteKind::Delete { .. } => Interaction::Delete,
        _ => Interaction::Update,
    };
    super::interactions::check_scope(ctx, &op.rtype, interaction)?;
    crate::store::access::may_write(ctx, &op.kind, op.prepared.as_ref())
        .map_err(FhirError::forbidden)
}

/// Runs a GET entry and returns (status, resource JSON).
async fn run_get(
    state: &SharedState,
    ctx: &AccessContext,
    base: &str,
    url: &str,
) -> Result<(StatusCode, String), FhirError> {
    let (rtype, id, query) = parse_url(url);
    super::interactions::check_type(state, &rtype)?;
    match id {
        Some(id) => {
            super::interactions::check_scope(ctx, &rtype, crate::identity::Interaction::Read)?;
            let r = state
                .store
                .read(ctx, &rtype, &id)
                .await?
                .filter(|r| !r.deleted)
                .ok_or_else(|| FhirError::not_found(format!("{rtype}/{id} is not known")))?;
            Ok((StatusCode::OK, r.content))
        }
        None => {
            let pairs = query_pairs(query.as_deref());
            let resp =
                super::interactions::run_search(state, ctx, base, &rtype, pairs, &HeaderMap::new())
                    .await?;
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .map_err(FhirError::internal)?;
            Ok((StatusCode::OK, String::from_utf8_lossy(&bytes).into_owned()))
        }
    }
}

fn response_entry(base: &str, r: &WriteResult, ret: Return) -> Entry {
    let status = match r.outcome {
        WriteOutcome::Created => "201 Created",
        WriteOutcome::Deleted | WriteOutcome::NoOp => "204 No Content",
        _ => "200 OK",
    };
    let mut response = json!({"status": status});
    if matches!(
        r.outcome,
        WriteOutcome::Created | WriteOutcome::Updated | WriteOutcome::Unchanged
    ) {
        response["location"] = json!(format!(
            "{}/_history/{}",
            format!("{}/{}", r.rtype, r.id),
            r.version
        ));
        response["etag"] = json!(format!("W/\"{}\"", r.version));
        response["lastModified"] = json!(format_instant(r.last_updated));
    }
    let resource = match (ret, &r.content) {
        (Return::Representation, Some(c)) => Some(c.clone()),
        _ => None,
    };
    Entry {
        full_url: resource
            .as_ref()
            .map(|_| format!("{}/{}/{}", base, r.rtype, r.id)),
        resource,
        extra: vec![("response", response)],
    }
}

/// The entry of a conditional create whose criteria matched: 200 with the existing resource.
fn existing_entry(base: &str, r: &StoredResource, ret: Return) -> Entry {
    let response = json!({
        "status": "200 OK",
        "location": format!("{}/{}/_history/{}", r.rtype, r.id, r.version),
        "etag": format!("W/\"{}\"", r.version),
        "lastModified": format_instant(r.last_updated),
    });
    let resource = (ret == Return::Representation).then(|| r.content.clone());
    Entry {
        full_url: Some(format!("{}/{}/{}", base, r.rtype, r.id)),
        resource,
        extra: vec![("response", response)],
    }
}

/// The `ifNoneExist` search of a POST entry, if it has one (the caller must be allowed to
/// create the type: the search is part of the create).
fn conditional_criteria(
    state: &SharedState,
    ctx: &AccessContext,
    entry: &EntryIn,
) -> Result<Option<SearchRequest>, FhirError> {
    let Some(request) = entry.request.as_ref().filter(|r| r.method == "POST") else {
        return Ok(None);
    };
    let Some(text) = &request.if_none_exist else {
        return Ok(None);
    };
    let (rtype, _, _) = parse_url(&request.url);
    super::interactions::check_type(state, &rtype)?;
    require_write(ctx)?;
    super::interactions::check_scope(ctx, &rtype, crate::identity::Interaction::Create)?;
    super::interactions::if_none_exist(state, &rtype, text).map(Some)
}

/// The validation warnings of a write (`Prefer: handling=lenient`), taken out of it.
fn take_warnings(op: &mut WriteOp) -> Vec<Issue> {
    op.prepared
        .as_mut()
        .map(|p| std::mem::take(&mut p.warnings))
        .unwrap_or_default()
}

/// An entry's `response.outcome` carries the warnings of its write (R4
/// bundle.html#Bundle.entry.response.outcome).
fn with_warnings(mut entry: Entry, warnings: &[Issue]) -> Entry {
    if warnings.is_empty() {
        return entry;
    }
    if let Some((_, response)) = entry.extra.iter_mut().find(|(k, _)| *k == "response") {
        response["outcome"] = json!({
            "resourceType": "OperationOutcome",
            "issue": warnings.iter().map(Issue::to_json).collect::<Vec<_>>(),
        });
    }
    entry
}

fn error_entry(e: &FhirError) -> Entry {
    Entry {
        full_url: None,
        resource: None,
        extra: vec![(
            "response",
            json!({"status": e.status.as_u16().to_string(), "outcome": e.outcome()}),
        )],
    }
}

/// FHIR transaction processing order (R4 http §3.1.0.11.2): DELETE, POST, PUT/PATCH, GET.
fn order_of(entry: &EntryIn) -> u8 {
    match entry.request.as_ref().map(|r| r.method.as_str()) {
        Some("DELETE") => 0,
        Some("POST") => 1,
        Some("PUT") | Some("PATCH") => 2,
        _ => 3,
    }
}

async fn transaction(
    state: &SharedState,
    ctx: &AccessContext,
    base: &str,
    bundle: BundleIn,
    ret: Return,
    lenient: bool,
) -> Result<Response, FhirError> {
    let in_entry = |i: usize| move |e: FhirError| e.prefixed(&format!("entry {i}: "));
    // Conditional creates (R4 http §3.1.0.8) are decided first, inside the write transaction
    // (opened only when there are some): an entry whose ifNoneExist matches is not written,
    // and references to its fullUrl point at the existing resource.
    let mut criteria: Vec<Option<SearchRequest>> = Vec::with_capacity(bundle.entry.len());
    for (i, entry) in bundle.entry.iter().enumerate() {
        criteria.push(conditional_criteria(state, ctx, entry).map_err(in_entry(i))?);
    }
    let mut existing: Vec<Option<StoredResource>> = (0..bundle.entry.len()).map(|_| None).collect();
    let mut tx = None;
    if criteria.iter().any(Option::is_some) {
        let mut t = state.store.db.begin().await?;
        let all: Vec<&SearchRequest> = criteria.iter().flatten().collect();
        state.store.lock_conditional(t.as_mut(), &all).await?;
        for (i, c) in criteria.iter().enumerate() {
            if let Some(c) = c
                && let Existing::One(r) = state
                    .store
                    .conditional_match(t.as_mut(), ctx, c)
                    .await
                    .map_err(in_entry(i))?
            {
                // released by the caller's view, as a read would give it
                existing[i] = Some(r);
            }
        }
        tx = Some(t);
    }
    // Assign ids to POSTed entries first, so every urn:uuid reference can be rewritten.
    let mut rewrites: Vec<(String, String)> = Vec::new();
    let mut assigned: Vec<Option<String>> = Vec::with_capacity(bundle.entry.len());
    for (i, entry) in bundle.entry.iter().enumerate() {
        let is_post = entry.request.as_ref().is_some_and(|r| r.method == "POST");
        if let Some(r) = &existing[i] {
            if let Some(full) = &entry.full_url {
                rewrites.push((full.clone(), format!("{}/{}", r.rtype, r.id)));
            }
            assigned.push(None);
        } else if is_post {
            let id = uuid::Uuid::new_v4().to_string();
            if let (Some(full), Some(req)) = (&entry.full_url, &entry.request) {
                let (rtype, _, _) = parse_url(&req.url);
                rewrites.push((full.clone(), format!("{rtype}/{id}")));
            }
            assigned.push(Some(id));
        } else {
            assigned.push(None);
        }
    }
    let mut order: Vec<usize> = (0..bundle.entry.len()).collect();
    order.sort_by_key(|&i| order_of(&bundle.entry[i]));

    let mut writes: Vec<(usize, WriteOp)> = Vec::new();
    let mut gets: Vec<(usize, String)> = Vec::new();
    for &i in &order {
        let entry = &bundle.entry[i];
        if existing[i].is_some() {
            continue;
        }
        let text = entry.resource.as_ref().map(|r| {
            let mut t = r.get().to_owned();
            for (from, to) in &rewrites {
                if from.starts_with("urn:uuid:") || from.starts_with("urn:oid:") {
                    t = replace_string_literal(&t, from, to);
                }
            }
            t
        });
        let action = plan_entry(
            state,
            entry,
            text.as_deref(),
            assigned[i].as_deref(),
            lenient,
        )
        .map_err(in_entry(i))?;
        match action {
            Action::Write { op } => writes.push((i, *op)),
            Action::Get { url } => gets.push((i, url)),
        }
    }
    if !writes.is_empty() {
        require_write(ctx)?;
    }
    for (i, op) in &writes {
        check_write_scope(ctx, op).map_err(|e| e.prefixed(&format!("entry {i}: ")))?;
    }
    let warnings: Vec<Vec<Issue>> = writes.iter_mut().map(|(_, op)| take_warnings(op)).collect();
    let (positions, ops): (Vec<usize>, Vec<WriteOp>) = writes.into_iter().unzip();
    let results = match tx {
        Some(mut t) => {
            let results = state.store.write_in(t.as_mut(), ops).await?;
            t.commit().await?;
            results
        }
        None => state.store.write(ops).await?,
    };
    let mut out: Vec<Option<Entry>> = (0..bundle.entry.len()).map(|_| None).collect();
    for (pos, r) in existing.iter().enumerate() {
        if let Some(r) = r {
            out[pos] = Some(existing_entry(base, r, ret));
        }
    }
    for ((pos, r), w) in positions.into_iter().zip(results.iter()).zip(&warnings) {
        out[pos] = Some(with_warnings(response_entry(base, r, ret), w));
    }
    for (pos, url) in gets {
        let entry = match run_get(state, ctx, base, &url).await {
            Ok((status, body)) => Entry {
                full_url: None,
                resource: Some(body),
                extra: vec![("response", json!({"status": status.as_u16().to_string()}))],
            },
            Err(e) => error_entry(&e),
        };
        out[pos] = Some(entry);
    }
    let entries: Vec<Entry> = out.into_iter().flatten().collect();
    Ok(fhir_json(
        StatusCode::OK,
        write_bundle("transaction-response", vec![], &entries),
    ))
}

async fn batch(
    state: &SharedState,
    ctx: &AccessContext,
    base: &str,
    bundle: BundleIn,
    ret: Return,
    lenient: bool,
) -> Result<Response, FhirError> {
    let mut entries = Vec::with_capacity(bundle.entry.len());
    for entry in &bundle.entry {
        let text = entry.resource.as_ref().map(|r| r.get().to_owned());
        let result: Result<Entry, FhirError> = async {
            let criteria = conditional_criteria(state, ctx, entry)?;
            match plan_entry(state, entry, text.as_deref(), None, lenient)? {
                Action::Write { mut op } if criteria.is_some() => {
                    let criteria = criteria.expect("checked");
                    let warnings = take_warnings(&mut op);
                    let prepared = op.prepared.expect("a POST carries a resource");
                    match state
                        .store
                        .create_if_none_exist(ctx, &criteria, prepared)
                        .await?
                    {
                        Conditional::Created(r) => {
                            Ok(with_warnings(response_entry(base, &r, ret), &warnings))
                        }
                        // released by the caller's view, as a read would give it
                        Conditional::Exists(r) => Ok(existing_entry(base, &r, ret)),
                    }
                }
                Action::Write { mut op } => {
                    require_write(ctx)?;
                    check_write_scope(ctx, &op)?;
                    let warnings = take_warnings(&mut op);
                    let results = state.store.write(vec![*op]).await?;
                    Ok(with_warnings(
                        response_entry(base, &results[0], ret),
                        &warnings,
                    ))
                }
                Action::Get { url } => {
                    let (status, body) = run_get(state, ctx, base, &url).await?;
                    Ok(Entry {
                        full_url: None,
                        resource: Some(body),
                        extra: vec![("response", json!({"status": status.as_u16().to_string()}))],
                    })
                }
            }
        }
        .await;
        entries.push(result.unwrap_or_else(|e| error_entry(&e)));
    }
    Ok(fhir_json(
        StatusCode::OK,
        write_bundle("batch-response", vec![], &entries),
    ))
}
