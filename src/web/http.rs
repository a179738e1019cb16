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

/// Refuses formats other than FHIR R4 JSON, from `_format` or `Accept` (R4 http §3.1.0.1.6
/// content types: 406 when the server cannot produce what the client accepts; §3.1.0.1.8 the
/// `fhirVersion` MIME parameter: only 4.0 is served). A raw `+` in `_format` arrives as a
/// space (form decoding), so `_format=application/fhir+json` works unescaped.
pub fn check_format(headers: &HeaderMap, pairs: &[(String, String)]) -> Result<(), FhirError> {
    let refuse = |text: String| {
        FhirError::new(
            StatusCode::NOT_ACCEPTABLE,
            crate::fhir::IssueType::NotSupported,
            text,
        )
    };
    if let Some((_, f)) = pairs.iter().find(|(k, _)| k == "_format") {
        let f = f.trim().replace(' ', "+");
        let ok = matches!(f.as_str(), "json") || media_range_is_ours(&f, false);
        if !ok {
            return Err(refuse(format!(
                "_format={f} is not supported; this server speaks FHIR R4 JSON only"
            )));
        }
    }
    if let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())
        && !accept
            .split(',')
            .any(|part| media_range_is_ours(part, true))
    {
        return Err(refuse(format!(
            "cannot produce {accept}; this server speaks application/fhir+json (FHIR 4.0)"
        )));
    }
    Ok(())
}

/// Whether one media range (`type/subtype; param=value…`) admits our FHIR R4 JSON; wildcards
/// count only in `Accept`. A `q=0` range refuses.
fn media_range_is_ours(range: &str, wildcards: bool) -> bool {
    let mut parts = range.split(';');
    let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let media_ok = matches!(
        media.as_str(),
        "application/json" | "application/fhir+json" | "application/json+fhir"
    ) || (wildcards && matches!(media.as_str(), "" | "*/*" | "application/*"));
    media_ok
        && parts.all(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            let value = value.trim().trim_matches('"');
            match name.trim().to_ascii_lowercase().as_str() {
                "fhirversion" => value == "4.0" || value.starts_with("4.0."),
                "q" => value.parse::<f32>().map_or(true, |q| q > 0.0),
                _ => true,
            }
        })
}

/// Checks the request's Content-Type and returns the body as text; a NUL anywhere in it is a
/// 400 (operation Parameters and other non-resource bodies).
pub fn body_text(headers: &HeaderMap, body: &Bytes) -> Result<String, FhirError> {
    let text = resource_text(headers, body)?;
    if has_nul(&text) {
        // FHIR strings exclude control characters (R4 §2.24.0.1) and Postgres text cannot
        // hold NUL: refuse it before any value reaches the database.
        return Err(FhirError::bad_request(
            "the body contains a NUL character (\\u0000), which no FHIR value may hold",
        ));
    }
    Ok(text)
}

/// Like [`body_text`] for resources and Bundles of them, whose NULs (and other control
/// characters, in `text.div` too) the structure check refuses with their path (422).
pub fn resource_text(headers: &HeaderMap, body: &Bytes) -> Result<String, FhirError> {
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

/// Whether JSON text holds a NUL: a raw NUL byte or a `\u0000` escape (an escaped backslash
/// followed by `u0000` is not one).
fn has_nul(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            0 => return true,
            b'\\' => {
                if bytes.get(i + 1) == Some(&b'u') && bytes.get(i + 2..i + 6) == Some(&b"0000"[..])
                {
                    return true;
                }
                // skip the escaped character, so that `\\` never starts an escape
                i += 2;
            }
            _ => i += 1,
        }
    }
    false
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
    version_etag(text).map(Some).ok_or_else(|| {
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

/// The version of an entity tag `W/"3"` or `"3"` (RFC 7232 §2.3: `[W/] DQUOTE *etagc
/// DQUOTE`, both quotes required); `None` for anything else, `W/"1` included.
pub fn version_etag(text: &str) -> Option<i64> {
    let tag = text.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let inner = tag.strip_prefix('"')?.strip_suffix('"')?;
    if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    inner.parse().ok()
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
    stored_response(status, r, base_url, ret, location, &[])
}

/// The answer to a write that was accepted with `warnings` (`Prefer: handling=lenient`:
/// unknown elements, R4 http.html#lenient): an OperationOutcome holding the "stored" issue and
/// the warnings — what `return=OperationOutcome` gives — unless the client asked for
/// `return=minimal`; without warnings, as [`resource_response`].
pub fn written_response(
    status: StatusCode,
    r: &StoredResource,
    base_url: &str,
    ret: Return,
    warnings: &[crate::fhir::Issue],
) -> Response {
    let ret = if warnings.is_empty() || ret == Return::Minimal {
        ret
    } else {
        Return::OperationOutcome
    };
    stored_response(status, r, base_url, ret, true, warnings)
}

fn stored_response(
    status: StatusCode,
    r: &StoredResource,
    base_url: &str,
    ret: Return,
    location: bool,
    warnings: &[crate::fhir::Issue],
) -> Response {
    let body = match ret {
        Return::Representation => r.content.clone(),
        Return::Minimal => String::new(),
        Return::OperationOutcome => {
            let mut outcome = crate::fhir::error::operation_outcome(
                "information",
                crate::fhir::IssueType::Informational,
                &format!(
                    "{}/{} version {} stored at {}",
                    r.rtype,
                    r.id,
                    r.version,
                    format_instant(r.last_updated)
                ),
            );
            if let Some(issues) = outcome["issue"].as_array_mut() {
                issues.extend(warnings.iter().map(crate::fhir::Issue::to_json));
            }
            outcome.to_string()
        }
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

#[cfg(test)]
mod tests {
    use super::{check_format, has_nul, version_etag};
    use axum::http::{HeaderMap, HeaderValue, header};

    fn accept(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn formats() {
        let format = |f: &str| check_format(&HeaderMap::new(), &[("_format".into(), f.into())]);
        assert!(format("json").is_ok());
        assert!(format("application/fhir json").is_ok());
        assert!(format("xml").is_err());
        assert!(format("application/fhir+xml").is_err());
        assert!(check_format(&accept("application/fhir+xml"), &[]).is_err());
        assert!(check_format(&accept("application/fhir+json; fhirVersion=3.0"), &[]).is_err());
        assert!(check_format(&accept("application/fhir+json; fhirVersion=4.0"), &[]).is_ok());
        assert!(check_format(&accept("application/fhir+xml, */*;q=0.1"), &[]).is_ok());
    }

    #[test]
    fn version_etags() {
        assert_eq!(version_etag(r#"W/"3""#), Some(3));
        assert_eq!(version_etag(r#""12""#), Some(12));
        assert_eq!(version_etag(r#"W/"1"#), None);
        assert_eq!(version_etag("1"), None);
        assert_eq!(version_etag(r#"W/"""#), None);
        assert_eq!(version_etag(r#""-1""#), None);
    }

    #[test]
    fn nul_escapes() {
        assert!(has_nul(r#"{"a":"x\u0000"}"#));
        assert!(has_nul("{\"a\":\"\0\"}"));
        assert!(!has_nul(r#"{"a":"\\u0000"}"#));
        assert!(has_nul(r#"{"a":"\\\u0000"}"#));
        assert!(!has_nul(r#"{"a":"\u0041"}"#));
    }
}
