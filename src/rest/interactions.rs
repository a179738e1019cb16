//! FHIR REST interactions on resources: read, vread, instance history, create, update,
//! delete, and search by GET and by POST `_search`.

use crate::fhir::bundle::{Entry, write_bundle};
use crate::fhir::datetime::format_instant;
use crate::fhir::{FhirError, is_valid_id};
use crate::identity::Interaction;
use crate::search::query;
use crate::store::conditional::Conditional;
use crate::store::{IdRule, WriteKind, WriteOp, WriteOutcome};
use crate::web::http::{
    Return, check_format, fhir_json, if_match, prefer, query_pairs, resource_response,
    resource_text, written_response,
};
use crate::web::{Access, Base, SharedState};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

/// Checks that `rtype` is a resource type we serve.
pub fn check_type(state: &SharedState, rtype: &str) -> Result<(), FhirError> {
    if state.store.registry.has_type(rtype) {
        Ok(())
    } else {
        Err(FhirError::not_found(format!(
            "{rtype:?} is not a resource type this server supports"
        )))
    }
}

/// 403 unless the caller's scopes allow `interaction` on `rtype` (SMART: "ensure that its
/// scope covers the requested resource"; RFC 6750 `insufficient_scope`).
pub fn check_scope(
    ctx: &crate::identity::AccessContext,
    rtype: &str,
    interaction: Interaction,
) -> Result<(), FhirError> {
    if ctx.allows(rtype, interaction) {
        Ok(())
    } else {
        let what = match interaction {
            Interaction::Create => "create",
            Interaction::Read => "read",
            Interaction::Update => "update",
            Interaction::Delete => "delete",
            Interaction::Search => "search",
        };
        Err(FhirError::forbidden(format!(
            "the access token's scopes do not allow {what} on {rtype}"
        )))
    }
}

fn check_id(id: &str) -> Result<(), FhirError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(FhirError::bad_request(format!(
            "{id:?} is not a valid FHIR id"
        )))
    }
}

pub async fn read(
    State(state): State<SharedState>,
    Access(ctx): Access,
    Base(base): Base,
    Path((rtype, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, FhirError> {
    check_type(&state, &rtype)?;
    check_scope(&ctx, &rtype, Interaction::Read)?;
    check_format(&headers, &query_pairs(q.as_deref()))?;
    check_id(&id)?;
    let r = state
        .store
        .read(&ctx, &rtype, &id)
        .await?
        .ok_or_else(|| FhirError::not_found(format!("{rtype}/{id} is not known")))?;
    if r.deleted {
        return Err(FhirError::gone(format!("{rtype}/{id} was deleted")));
    }
    if crate::web::http::if_none_match(&headers, r.version) {
        return Ok(crate::web::http::not_modified(&r));
    }
    Ok(resource_response(
        StatusCode::OK,
        &r,
        &base,
        Return::Representation,
        false,
    ))
}

pub async fn vread(
    State(state): State<SharedState>,
    Access(ctx): Access,
    Base(base): Base,
    Path((rtype, id, vid)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, FhirError> {
    check_type(&state, &rtype)?;
    check_scope(&ctx, &rtype, Interaction::Read)?;
    check_format(&headers, &[])?;
    check_id(&id)?;
    let version: i64 = vid
        .parse()
        .map_err(|_| FhirError::bad_request(format!("{vid:?} is not a version id")))?;
    let r = state
        .store
        .vread(&ctx, &rtype, &id, version)
        .await?
        .ok_or_else(|| FhirError::not_found(format!("{rtype}/{id} has no version {version}")))?;
    if r.deleted {
        return Err(FhirError::gone(format!(
            "version {version} of {rtype}/{id} is a deletion"
        )));
    }
    Ok(resource_response(
        StatusCode::OK,
        &r,
        &base,
        Return::Representation,
        false,
    ))
}

pub async fn instance_history(
    State(state): State<SharedState>,
    Access(ctx): Access,
    Base(base): Base,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, FhirError> {
    check_type(&state, &rtype)?;
    check_scope(&ctx, &rtype, Interaction::Read)?;
    check_format(&headers, &[])?;
    check_id(&id)?;
    let versions = state.store.history(&ctx, &rtype, &id).await?;
    if versions.is_empty() {
        return Err(FhirError::not_found(format!("{rtype}/{id} is not known")));
    }
    let entries: Vec<Entry> = versions
        .iter()
        .map(|r| {
            let url = format!("{}/{}/{}", base, r.rtype, r.id);
            let (method, status) = match (r.deleted, r.version) {
                (true, _) => ("DELETE", "204"),
                (false, 1) => ("POST", "201"),
                _ => ("PUT", "200"),
            };
            Entry {
                full_url: Some(url),
                resource: (!r.deleted).then(|| r.content.clone()),
                extra: vec![
                    (
                        "request",
                        json!({"method": method, "url": format!("{}/{}", r.rtype, r.id)}),
                    ),
                    (
                        "response",
                        json!({"status": status, "etag": format!("W/\"{}\"", r.version), "lastModified": format_instant(r.last_updated)}),
                    ),
                ],
            }
        })
        .collect();
    let body = write_bundle("history", vec![("total", json!(entries.len()))], &entries);
    Ok(fhir_json(StatusCode::OK, body))
}

pub async fn create(
    State(state): State<SharedState>,
    Access(ctx): Access,
    Base(base): Base,
    Path(rtype): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FhirError> {
    check_type(&state, &rtype)?;
    check_scope(&ctx, &rtype, Interaction::Create)?;
    check_format(&headers, &query_pairs(q.as_deref()))?;
    if let Some(v) = headers.get("if-none-exist") {
        let text = v
            .to_str()
            .map_err(|_| FhirError::bad_request("If-None-Exist is not ASCII"))?;
        let criteria = if_none_exist(&state, &rtype, text)?;
        return create_conditionally(&state, &ctx, &base, &rtype, &criteria, &headers, &body).await;
    }
    put_one(
        &state,
        &ctx,
        &base,
        &rtype,
        (IdRule::Assign, WriteKind::Create),
        &headers,
        &body,
    )
    .await
}

pub async fn update(
    State(state): State<SharedState>,
    Access(ctx): Access,
    Base(base): Base,
    Path((rtype, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FhirError> {
    check_type(&state, &rtype)?;
    check_scope(&ctx, &rtype, Interaction::Update)?;
    check_format(&headers, &query_pairs(q.as_deref()))?;
    check_id(&id)?;
    let kind = WriteKind::Update {
        if_match: if_match(&headers)?,
    };
    put_one(
        &state,
        &ctx,
        &base,
        &rtype,
        (IdRule::Given(id), kind),
        &headers,
        &body,
    )
    .await
}

/// Create or update one resource from a request body and answer as `Prefer` asks:
/// 201 with `Location` when it was created, 200 when it replaced a version.
async fn put_one(
    state: &SharedState,
    ctx: &crate::identity::AccessContext,
    base: &str,
    rtype: &str,
    (id_rule, kind): (IdRule, WriteKind),
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, FhirError> {
    require_write(ctx)?;
    let text = resource_text(headers, body)?;
    let prefer = prefer(headers);
    let mut prepared = state
        .store
        .prepare_with(&text, Some(rtype), id_rule, prefer.lenient)?;
    let warnings = std::mem::take(&mut prepared.warnings);
    let op = WriteOp::put(kind, prepared);
    crate::store::access::may_write(ctx, &op.kind, op.prepared.as_ref())
        .map_err(FhirError::forbidden)?;
    let results = state.store.write(vec![op]).await?;
    let status = match results[0].outcome {
        WriteOutcome::Created => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    let r = results[0].stored();
    Ok(written_response(status, &r, base, prefer.ret, &warnings))
}

/// The search of an `If-None-Exist` header or `ifNoneExist` entry (`param=value&…`, the query
/// part of a search URL; a leading `?` or `Type?` is tolerated).
pub fn if_none_exist(
    state: &SharedState,
    rtype: &str,
    text: &str,
) -> Result<query::SearchRequest, FhirError> {
    let q = text.trim();
    // a `?` inside a value (`url=http://x?y`) is not a separator: only one before any `=`
    let q = match q.split_once('?') {
        Some((head, rest)) if !head.contains('=') => rest,
        _ => q,
    };
    let pairs = query_pairs(Some(q));
    query::parse(&state.store.registry, rtype, &pairs, &state.base_url, false)
        .map_err(|e| FhirError::bad_request(format!("If-None-Exist: {e}")))
}

/// Conditional create (FHIR R4 http §3.1.0.8): 201 when nothing matched `criteria`, 200 with
/// the existing resource when one did, 412 when several did.
async fn create_conditionally(
    state: &SharedState,
    ctx: &crate::identity::AccessContext,
    base: &str,
    rtype: &str,
    criteria: &query::SearchRequest,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, FhirError> {
    require_write(ctx)?;
    let text = resource_text(headers, body)?;
    let prefer = prefer(headers);
    let mut prepared =
        state
            .store
            .prepare_with(&text, Some(rtype), IdRule::Assign, prefer.lenient)?;
    let warnings = std::mem::take(&mut prepared.warnings);
    crate::store::access::may_write(ctx, &crate::store::WriteKind::Create, Some(&prepared))
        .map_err(FhirError::forbidden)?;
    let ret = prefer.ret;
    match state
        .store
        .create_if_none_exist(ctx, criteria, prepared)
        .await?
    {
        Conditional::Created(r) => Ok(written_response(
            StatusCode::CREATED,
            &r.stored(),
            base,
            ret,
            &warnings,
        )),
        // released by the caller's view, as a read would give it
        Conditional::Exists(r) => Ok(resource_response(StatusCode::OK, &r, base, ret, true)),
    }
}

pub async fn delete(
    State(state): State<SharedState>,
    Access(ctx): Access,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, FhirError> {
    check_type(&state, &rtype)?;
    check_scope(&ctx, &rtype, Interaction::Delete)?;
    check_format(&headers, &[])?;
    check_id(&id)?;
    require_write(&ctx)?;
    let if_match = if_match(&headers)?;
    let op = WriteOp::delete(&rtype, &id, if_match);
    crate::store::access::may_write(&ctx, &op.kind, None).map_err(FhirError::forbidden)?;
    let results = state.store.write(vec![op]).await?;
    let result = &results[0];
    let text = match result.outcome {
        WriteOutcome::Deleted => format!("{rtype}/{id} deleted (version {})", result.version),
        _ => format!("{rtype}/{id} did not exist or was already deleted"),
    };
    let mut resp = fhir_json(
        StatusCode::OK,
        crate::fhir::error::operation_outcome(
            "information",
            crate::fhir::IssueType::Informational,
            &text,
        )
        .to_string(),
    );
    if result.outcome == WriteOutcome::Deleted {
        resp.headers_mut().insert(
            axum::http::header::ETAG,
            crate::web::http::etag(result.version),
        );
    }
    Ok(resp)
}

pub fn require_write(ctx: &crate::identity::AccessContext) -> Result<(), FhirError> {
    if ctx.can_write {
        Ok(())
    } else {
        Err(FhirError::forbidden(
            "this access token does not allow writes",
        ))
    }
}

pub async fn search_get(
    State(state): State<SharedState>,
    Access(ctx): Access,
    Base(base): Base,
    Path(rtype): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, FhirError> {
    let pairs = query_pairs(q.as_deref());
    run_search(&state, &ctx, &base, &rtype, pairs, &headers).await
}

pub async fn search_post(
    State(state): State<SharedState>,
    Access(ctx): Access,
    Base(base): Base,
    Path(rtype): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FhirError> {
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(FhirError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            crate::fhir::IssueType::NotSupported,
            "POST _search takes an application/x-www-form-urlencoded body",
        ));
    }
    let mut pairs = query_pairs(q.as_deref());
    pairs.extend(form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), v.into_owned())));
    run_search(&state, &ctx, &base, &rtype, pairs, &headers).await
}

/// `GET /fhir?…`: whole-system search is not offered.
pub async fn system_search() -> Result<Response, FhirError> {
    Err(FhirError::new(
        StatusCode::BAD_REQUEST,
        crate::fhir::IssueType::NotSupported,
        "whole-system search is not supported; search a resource type, e.g. GET /fhir/Patient?…",
    ))
}

/// A search's size is bounded before it is planned (issue 15: repeated filters and sort keys
/// made one request cost minutes of database time): at most `search_max_parameters` query
/// parameters and `search_max_sort_keys` `_sort` keys, else 400 `too-costly`.
fn check_search_cost(
    limits: &crate::config::LimitsConfig,
    pairs: &[(String, String)],
) -> Result<(), FhirError> {
    let too_costly = |msg: String| {
        FhirError::new(
            StatusCode::BAD_REQUEST,
            crate::fhir::IssueType::TooCostly,
            msg,
        )
    };
    if pairs.len() > limits.search_max_parameters {
        return Err(too_costly(format!(
            "a search may carry at most {} parameters, this one has {}",
            limits.search_max_parameters,
            pairs.len()
        )));
    }
    let sort_keys: usize = pairs
        .iter()
        .filter(|(k, _)| k == "_sort")
        .map(|(_, v)| v.split(',').count())
        .sum();
    if sort_keys > limits.search_max_sort_keys {
        return Err(too_costly(format!(
            "a search may sort by at most {} keys, this one has {sort_keys}",
            limits.search_max_sort_keys
        )));
    }
    Ok(())
}

/// Runs a search and renders the searchset Bundle.
pub async fn run_search(
    state: &SharedState,
    ctx: &crate::identity::AccessContext,
    base: &str,
    rtype: &str,
    pairs: Vec<(String, String)>,
    headers: &HeaderMap,
) -> Result<Response, FhirError> {
    check_type(state, rtype)?;
    check_scope(ctx, rtype, Interaction::Search)?;
    check_search_cost(&state.limits, &pairs)?;
    check_format(headers, &pairs)?;
    let lenient = prefer(headers).lenient;
    let req = query::parse(
        &state.store.registry,
        rtype,
        &pairs,
        &state.base_url,
        lenient,
    )
    .map_err(FhirError::bad_request)?;
    let page = state.store.search(ctx, &req).await?;

    let link_to = |cursor: Option<&str>| {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &req.echo {
            ser.append_pair(k, v);
        }
        if let Some(c) = cursor {
            ser.append_pair("_cursor", c);
        }
        let q = ser.finish();
        if q.is_empty() {
            format!("{}/{}", base, rtype)
        } else {
            format!("{}/{}?{}", base, rtype, q)
        }
    };
    let mut links = vec![json!({"relation": "self", "url": link_to(req.cursor.as_deref())})];
    // Pages after the first link back to the one before and to the first (R4 http
    // §3.1.0.6.1 paging links; the cursor carries the direction).
    if req.cursor.is_some() {
        links.push(json!({"relation": "first", "url": link_to(None)}));
    }
    if let Some(prev) = &page.prev_cursor {
        links.push(json!({"relation": "previous", "url": link_to(Some(prev))}));
    }
    if let Some(next) = &page.next_cursor {
        links.push(json!({"relation": "next", "url": link_to(Some(next))}));
    }
    let mut head = vec![];
    if let Some(total) = page.total {
        head.push(("total", json!(total)));
    }
    head.push(("link", json!(links)));

    let shape = |content: &str| -> String {
        let mut c = content.to_owned();
        if let Some(el) = &req.elements {
            c = crate::fhir::json::select_elements(&c, el);
        }
        if req.summary_data {
            c = crate::fhir::json::without_text(&c);
        }
        c
    };
    let mut entries: Vec<Entry> = Vec::with_capacity(page.matches.len() + page.included.len() + 1);
    for r in &page.matches {
        entries.push(Entry {
            full_url: Some(format!("{}/{}/{}", base, r.rtype, r.id)),
            resource: Some(shape(&r.content)),
            extra: vec![("search", json!({"mode": "match"}))],
        });
    }
    for r in &page.included {
        entries.push(Entry {
            full_url: Some(format!("{}/{}/{}", base, r.rtype, r.id)),
            resource: Some(r.content.clone()),
            extra: vec![("search", json!({"mode": "include"}))],
        });
    }
    if !req.ignored.is_empty() {
        let outcome = json!({
            "resourceType": "OperationOutcome",
            "issue": req.ignored.iter().map(|msg| json!({
                "severity": "warning", "code": "not-supported",
                "diagnostics": format!("ignored (Prefer: handling=lenient): {msg}")
            })).collect::<Vec<_>>()
        });
        entries.push(Entry {
            full_url: None,
            resource: Some(outcome.to_string()),
            extra: vec![("search", json!({"mode": "outcome"}))],
        });
    }
    Ok(fhir_json(
        StatusCode::OK,
        write_bundle("searchset", head, &entries),
    ))
}
