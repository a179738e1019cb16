//! Kick-off parameters: parsing and validation of a Bulk Data STU2 export request (GET query
//! or POST `Parameters`) into the [`ExportParams`] a job stores. Every unsupported or invalid
//! value is a 400 OperationOutcome, or, under `Prefer: handling=lenient`, a message for the
//! manifest's error file (Bulk STU2 "Query Parameters": "the server SHOULD return an error…
//! MAY process the request instead", and PDex 2.2.0 §pdex-180d: never silently ignored).

use crate::fhir::FhirError;
use crate::fhir::parameters::Parameter;
use crate::identity::{AccessContext, Interaction};
use crate::search::query;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which data an export is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Level {
    /// `[base]/$export`: every resource the caller may see.
    System,
    /// `[base]/Patient/$export`: the Patient compartments of all (or the listed) members.
    Patient,
    /// `[base]/Group/{id}/$export`: the compartments of the Group's members.
    Group(String),
}

/// A validated export request, as the job stores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportParams {
    pub level: Level,
    /// Resource types to export, in output order.
    pub types: Vec<String>,
    /// `_since`, epoch ms (exclusive).
    pub since: Option<i64>,
    /// `_until` (`$davinci-data-export`), epoch ms (inclusive); `transactionTime` if absent.
    pub until: Option<i64>,
    /// Valid `_typeFilter` queries per type (the query part after `?`), ORed.
    pub type_filters: BTreeMap<String, Vec<String>>,
    /// `_elements`, as given (`Type.element` or `element`).
    pub elements: Vec<String>,
    /// The `patient` parameter (POST), as ids; `None` for all members.
    pub patients: Option<Vec<String>>,
    /// Messages for the error file (parameters ignored under lenient handling).
    pub warnings: Vec<String>,
    /// Name of a registered per-member filter run when the job starts (e.g. consent
    /// re-checks for `$davinci-data-export`), `None` for plain Bulk exports.
    #[serde(default)]
    pub member_filter: Option<String>,
}

impl ExportParams {
    /// Does this export iterate members (Patient and Group level)?
    pub fn is_member_level(&self) -> bool {
        self.level != Level::System
    }

    /// The `_elements` that apply to `rtype` (`None`: the whole resource).
    pub fn elements_for(&self, rtype: &str) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for e in &self.elements {
            match e.split_once('.') {
                Some((t, el)) if t == rtype => out.push(el.to_owned()),
                Some(_) => {}
                None => out.push(e.clone()),
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

/// How to parse a kick-off.
pub struct ParseOptions<'a> {
    pub level: Level,
    /// Was it a POST (`patient` is POST-only)?
    pub post: bool,
    pub lenient: bool,
    /// Accept `_until` (`$davinci-data-export`; not in Bulk STU2).
    pub allow_until: bool,
    /// Extra parameter names the calling operation handles itself (e.g. `exportType`).
    pub extra: &'a [&'a str],
    pub base_url: &'a str,
}

/// The outcome of [`parse`]: the params plus any extra parameters, by name.
pub struct Parsed {
    pub params: ExportParams,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Parameters of the Bulk OperationDefinitions that take comma-delimited values: repeats
/// are treated as one comma list (Bulk STU2 "A client MAY repeat kick-off parameters that
/// accept comma delimited values").
const LIST_PARAMS: [&str; 5] = [
    "_type",
    "_elements",
    "patient",
    "includeAssociatedData",
    "_typeFilter",
];

/// Parses and validates a kick-off for `ctx`. Patients named in `patient` are checked in
/// the handler (they need the store and, for Groups, the member list).
pub fn parse(
    store: &Store,
    ctx: &AccessContext,
    raw: Vec<Parameter>,
    opts: &ParseOptions<'_>,
) -> Result<Parsed, FhirError> {
    let mut warnings: Vec<String> = Vec::new();
    // Unsupported → 400, or a warning under lenient handling.
    let mut reject = |msg: String| -> Result<(), FhirError> {
        if opts.lenient {
            warnings.push(msg);
            Ok(())
        } else {
            Err(FhirError::bad_request(msg))
        }
    };
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in raw {
        let name = p.name.as_str();
        if opts.extra.contains(&name) {
            extra.entry(p.name).or_default().push(p.value);
            continue;
        }
        match name {
            "_outputFormat" | "_since" | "_until" => {
                if name == "_until" && !opts.allow_until {
                    reject("_until is not a Bulk Data $export parameter".into())?;
                    continue;
                }
                if values.contains_key(name) {
                    return Err(FhirError::bad_request(format!(
                        "{name} may appear only once"
                    )));
                }
                values.insert(p.name, vec![p.value]);
            }
            "patient" if !opts.post => {
                return Err(FhirError::bad_request(
                    "the patient parameter is only accepted in a POST kick-off",
                ));
            }
            "patient" if opts.level == Level::System => {
                return Err(FhirError::bad_request(
                    "the patient parameter does not apply to a system-level export",
                ));
            }
            n if LIST_PARAMS.contains(&n) => {
                let entry = values.entry(p.name.clone()).or_default();
                if n == "_typeFilter" {
                    entry.extend(split_type_filters(&p.value));
                } else {
                    entry.extend(
                        p.value
                            .split(',')
                            .map(|v| v.trim().to_owned())
                            .filter(|v| !v.is_empty()),
                    );
                }
            }
            _ => reject(format!("{name} is not a supported export parameter"))?,
        }
    }

    if let Some(f) = values.get("_outputFormat").and_then(|v| v.first()) {
        // Bulk STU2: SHALL accept the full and the abbreviated ndjson types.
        if !matches!(
            f.as_str(),
            "application/fhir+ndjson" | "application/ndjson" | "ndjson"
        ) {
            return Err(FhirError::bad_request(format!(
                "_outputFormat {f:?} is not supported; use application/fhir+ndjson"
            )));
        }
    }
    let since = match values.get("_since").and_then(|v| v.first()) {
        Some(s) => Some(parse_instant("_since", s)?),
        None => None,
    };
    let until = match values.get("_until").and_then(|v| v.first()) {
        Some(s) => Some(parse_instant("_until", s)?),
        None => None,
    };
    let member_level = opts.level != Level::System;
    let mut include_provenance = false;
    for v in values.get("includeAssociatedData").into_iter().flatten() {
        match v.as_str() {
            // Provenance rows carry their targets' owner, so the Provenance of every exported
            // member resource is exactly the member's Provenance.
            "RelevantProvenanceResources" => include_provenance = true,
            other => reject(format!(
                "includeAssociatedData={other} is not supported (supported: RelevantProvenanceResources)"
            ))?,
        }
    }

    // Types: as asked, else every supported type the caller may read.
    let registry = &store.registry;
    let exportable = |t: &str| -> bool {
        if member_level {
            store.compartment.is_member_type(t) && t != "Group"
        } else {
            registry.has_type(t)
        }
    };
    let mut types: Vec<String> = Vec::new();
    match values.get("_type") {
        Some(asked) => {
            for t in asked {
                if !registry.has_type(t) {
                    reject(format!("_type {t:?} is not a supported resource type"))?;
                } else if !exportable(t) {
                    reject(format!(
                        "_type {t} is outside the Patient compartment, which a Patient- or Group-level export covers"
                    ))?;
                } else if !ctx.allows(t, Interaction::Read) {
                    return Err(FhirError::forbidden(format!(
                        "the access token does not allow reading {t}"
                    )));
                } else if !types.contains(t) {
                    types.push(t.clone());
                }
            }
            if include_provenance && !types.iter().any(|t| t == "Provenance") {
                types.push("Provenance".into());
            }
        }
        None => {
            let mut all: Vec<&str> = if member_level {
                store
                    .compartment
                    .member_types()
                    .filter(|t| *t != "Group")
                    .collect()
            } else {
                registry.resource_types()
            };
            all.sort_unstable();
            all.dedup();
            // "all supported resources within the scope of the client authorization"
            types = all
                .into_iter()
                .filter(|t| exportable(t) && ctx.allows(t, Interaction::Read))
                .map(str::to_owned)
                .collect();
        }
    }
    // Patient first (clients load it before what refers to it), then alphabetical.
    types.sort_by_key(|t| (t != "Patient", t.clone()));

    // _typeFilter: real searches, planned by the search engine.
    let mut type_filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut filtered_types: Vec<String> = Vec::new();
    for f in values.get("_typeFilter").into_iter().flatten() {
        let Some((t, q)) = f.split_once('?') else {
            reject(format!(
                "_typeFilter {f:?} is not a search query like Type?param=value"
            ))?;
            continue;
        };
        if !filtered_types.contains(&t.to_owned()) {
            filtered_types.push(t.to_owned());
        }
        if !types.iter().any(|x| x == t) {
            reject(format!(
                "_typeFilter {f:?} names a type this export does not include"
            ))?;
            continue;
        }
        match parse_type_filter(store, t, q, opts.base_url) {
            Ok(_) => type_filters
                .entry(t.to_owned())
                .or_default()
                .push(q.to_owned()),
            Err(e) => reject(format!("_typeFilter {f:?}: {e}"))?,
        }
    }
    // Under lenient handling an unsupported query matches nothing (it is reported, not
    // replaced by unfiltered data): a type whose every query was dropped is not exported.
    types.retain(|t| !filtered_types.contains(t) || type_filters.contains_key(t));

    let elements: Vec<String> = values.remove("_elements").unwrap_or_default();
    for e in &elements {
        // `[type].[element]` or `[element]`, root elements only
        let el = match e.split_once('.') {
            Some((t, el)) if registry.has_type(t) => el,
            _ => e.as_str(),
        };
        if el.is_empty() || !el.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(FhirError::bad_request(format!(
                "_elements {e:?} is not a top-level element name (Bulk STU2 allows only root elements)"
            )));
        }
    }

    let patients = match values.remove("patient") {
        Some(refs) => {
            let mut ids = Vec::new();
            for r in refs {
                let local = r
                    .strip_prefix(opts.base_url)
                    .map(|s| s.trim_start_matches('/'))
                    .unwrap_or(&r);
                match local.strip_prefix("Patient/") {
                    Some(id) if crate::fhir::is_valid_id(id) => {
                        if !ids.contains(&id.to_owned()) {
                            ids.push(id.to_owned());
                        }
                    }
                    _ => reject(format!("patient {r:?} is not a Patient reference"))?,
                }
            }
            Some(ids)
        }
        None => None,
    };

    Ok(Parsed {
        params: ExportParams {
            level: opts.level.clone(),
            types,
            since,
            until,
            type_filters,
            elements,
            patients,
            warnings,
            member_filter: None,
        },
        extra,
    })
}

/// Parses one `_typeFilter` query for `rtype` with the search engine. Result parameters
/// (`_include`, `_sort`, …) are refused: Bulk STU2 "SHALL NOT be used".
pub fn parse_type_filter(
    store: &Store,
    rtype: &str,
    query_text: &str,
    base_url: &str,
) -> Result<query::SearchRequest, String> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query_text.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if pairs.is_empty() {
        return Err("the query has no parameters".into());
    }
    for (k, _) in &pairs {
        if k.starts_with('_')
            && !matches!(
                k.as_str(),
                "_id" | "_lastUpdated" | "_tag" | "_profile" | "_security"
            )
        {
            return Err(format!("{k} is not allowed in a _typeFilter query"));
        }
    }
    let req = query::parse(&store.registry, rtype, &pairs, base_url, false)?;
    if !req.include.is_empty() || !req.revinclude.is_empty() || !req.sort.is_empty() {
        return Err("search result parameters are not allowed in a _typeFilter query".into());
    }
    Ok(req)
}

/// Splits a `_typeFilter` value into queries at commas that start a new `Type?` query (a
/// comma inside a query's own value list stays with it).
fn split_type_filters(value: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in value.split(',') {
        let starts_query = piece
            .split_once('?')
            .is_some_and(|(t, _)| crate::fhir::looks_like_type(t));
        match out.last_mut() {
            Some(last) if !starts_query => {
                last.push(',');
                last.push_str(piece);
            }
            _ => out.push(piece.to_owned()),
        }
    }
    out.retain(|q| !q.is_empty());
    out
}

/// A FHIR `instant` (seconds and a time zone required) as epoch ms.
fn parse_instant(name: &str, text: &str) -> Result<i64, FhirError> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            FhirError::bad_request(format!(
                "{name} {text:?} is not a FHIR instant such as 2024-01-01T00:00:00Z"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_filters_split_on_query_starts_only() {
        assert_eq!(
            split_type_filters("Observation?code=a,b,Condition?clinical-status=active"),
            vec!["Observation?code=a,b", "Condition?clinical-status=active"]
        );
        assert_eq!(
            split_type_filters("Patient?gender=female"),
            vec!["Patient?gender=female"]
        );
    }

    #[test]
    fn instants_need_a_zone() {
        assert!(parse_instant("_since", "2024-01-01T00:00:00Z").is_ok());
        assert!(parse_instant("_since", "2024-01-01T00:00:00+05:00").is_ok());
        assert!(parse_instant("_since", "2024-01-01").is_err());
        assert!(parse_instant("_since", "garbage").is_err());
    }
}
