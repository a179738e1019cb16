//! HTTP details of the FHIR REST API: media types and `_format`, the `Prefer` header,
//! `If-Match`, `If-None-Match` (304 on read), resource responses with `ETag` / `Last-Modified` / `Location`.

use crate::fhir::datetime::format_instant;
use crate::fhir::{FHIR_JSON, FhirError};
use crate::store::StoredResource;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Query pairs, percent-decoded (`+` becomes a space, as forms encode it).
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

/// Refuses formats other than JSON, from `_format` or `Accept`.
pub fn check_format(headers: &HeaderMap, pairs: &[(String, String)]) -> Result<(), FhirError> {
    if let Some((_, f)) = pairs.iter().find(|(k, _)| k == "_format") {
        let f = f.trim();
        if !matches!(
            f,
            "json" | "application/json" | "application/fhir+json" | "application/json+fhir"
        ) && !f.starts_with("application/fhir+json")
        {
            return Err(FhirError::new(
                StatusCode::NOT_ACCEPTABLE,
                crate::fhir::IssueType::NotSupported,
                format!("_format={f} is not supported; this server speaks JSON only"),
            ));
        }
    }
    if let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        let acceptable = accept.split(',').any(|part| {
            let media = part.split(';').next().unwrap_or_default().trim();
            matches!(
                media,
                "" | "*/*"
                    | "application/*"
                    | "application/json"
                    | "application/fhir+json"
                    | "application/json+fhir"
            )
        });
        if !acceptable {
            return Err(FhirError::new(
                StatusCode::NOT_ACCEPTABLE,
                crate::fhir::IssueType::NotSupported,
                format!("cannot produce {accept}; this server speaks application/fhir+json"),
            ));
        }
    }
    Ok(())
}

/// Checks the request's Content-Type and returns the body as text.
pub fn body_text(headers: &HeaderMap, body: &Bytes) -> Result<String, FhirError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ct.split(';').next().unwrap_or_default().trim();
    if !matches!(
        media,
        "application/fhir+json" | "application/json" | "application/json+fhir"
    ) {
        return Err(FhirError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            crate::fhir::IssueType::NotSupported,
            format!("Content-Type {ct:?} is not supported; send application/fhir+json"),
        ));
    }
    String::from_utf8(body.to_vec())
        .map_err(|_| FhirError::bad_request("the body is not valid UTF-8"))
}

/// `Prefer: return=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    Minimal,
    Representation,
    OperationOutcome,
}

/// Parsed `Prefer` header.
#[derive(Debug, Clone, Copy)]
pub struct Prefer {
    pub ret: Return,
    pub lenient: bool,
}

pub fn prefer(headers: &HeaderMap) -> Prefer {
    let mut p = Prefer {
        ret: Return::Representation,
        lenient: false,
    };
    for value in headers.get_all("prefer") {
        for part in value.to_str().unwrap_or_default().split([',', ';']) {
            match part.trim().replace(' ', "").as_str() {
                "return=minimal" => p.ret = Return::Minimal,
                "return=representation" => p.ret = Return::Representation,
                "return=OperationOutcome" => p.ret = Return::OperationOutcome,
                "handling=lenient" => p.lenient = true,
                "handling=strict" => p.lenient = false,
                _ => {}
            }
        }
    }
    p
}

/// The version an `If-Match` header asks for (`W/"3"` or `"3"`).
pub fn if_match(headers: &HeaderMap) -> Result<Option<i64>, FhirError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or_default().trim();
    let inner = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    inner.parse().map(Some).map_err(|_| {
        FhirError::bad_request(format!(
            "If-Match {text:?} is not a version ETag like W/\"3\""
        ))
    })
}

/// Does `If-None-Match` name the current version (RFC 9110 §13.1.2: weak comparison, a
/// comma-separated list, or `*` for any current representation)? Then a read answers 304.
pub fn if_none_match(headers: &HeaderMap, version: i64) -> bool {
    let current = version.to_string();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag).trim_matches('"') == current)
}

/// 304 Not Modified for a read whose `If-None-Match` holds the current version, with the
/// `ETag` and `Last-Modified` a 200 would carry (RFC 9110 §15.4.5).
pub fn not_modified(r: &StoredResource) -> Response {
    let mut resp = StatusCode::NOT_MODIFIED.into_response();
    let h = resp.headers_mut();
    h.insert(header::ETAG, etag(r.version));
    h.insert(header::LAST_MODIFIED, http_date(r.last_updated));
    resp
}

/// `W/"3"`.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("W/\"{version}\"")).expect("ascii")
}

/// RFC 7231 HTTP-date.
pub fn http_date(ms: i64) -> HeaderValue {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    HeaderValue::from_str(&t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()).expect("ascii")
}

/// A FHIR JSON response with `body` as given.
pub fn fhir_json(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    resp
}

/// A response carrying one stored resource, shaped by `Prefer: return`.
pub fn resource_response(
    status: StatusCode,
    r: &StoredResource,
    base_url: &str,
    ret: Return,
    location: bool,
) -> Response {
    let body = match ret {
        Return::Representation => r.content.clone(),
        Return::Minimal => String::new(),
        Return::OperationOutcome => crate::fhir::error::operation_outcome(
            "information",
            crate::fhir::IssueType::Informational,
            &format!(
                "{}/{} version {} stored at {}",
                r.rtype,
                r.id,
                r.version,
                format_instant(r.last_updated)
            ),
        )
        .to_string(),
    };
    let mut resp = if body.is_empty() {
        status.into_response()
    } else {
        fhir_json(status, body)
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, etag(r.version));
    h.insert(header::LAST_MODIFIED, http_date(r.last_updated));
    if location {
        let loc = format!("{base_url}/{}/{}/_history/{}", r.rtype, r.id, r.version);
        if let Ok(v) = HeaderValue::from_str(&loc) {
            h.insert(header::LOCATION, v.clone());
            h.insert(header::CONTENT_LOCATION, v);
        }
    }
    resp
}
