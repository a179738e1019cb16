//! Preparing a resource for writing: parse, check, assign identity, extract search index
//! rows, compute the compartment owner and the sensitivity flag — everything done once, at
//! write time, so that reads can serve stored bytes.

use super::Store;
use crate::fhir::json::RawResource;
use crate::fhir::{FhirError, Issue, is_valid_id, validate};
use crate::search::{IndexEntries, extract};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A resource ready to be written (identity not yet stamped: version and time are set by
/// the write, inside its transaction).
pub struct Prepared {
    pub rtype: String,
    pub id: String,
    pub raw: RawResource,
    pub source_hash: String,
    pub index: IndexEntries,
    pub patient_id: Option<String>,
    /// Outside the Patient compartment: visible to every caller.
    pub shared: bool,
    /// For a Provenance without a Patient target: the (type, id) of its targets, whose owner
    /// becomes its owner (US Core Provenance reaches the member only through `target`).
    pub owner_from: Vec<(String, String)>,
    pub sensitive: bool,
    /// The latest care date (`store::release::care_end`).
    pub care_end: Option<i64>,
    /// A prior authorization's last releasable instant (`store::release::release_until`).
    pub release_until: Option<i64>,
    /// Validation warnings (unknown elements under `Prefer: handling=lenient`), for the
    /// OperationOutcome of the answer.
    pub warnings: Vec<Issue>,
}

/// Where the logical id comes from.
#[derive(Debug, Clone)]
pub enum IdRule {
    /// Create: the server assigns a new id (any id in the body is ignored, per FHIR create).
    Assign,
    /// Update: the id from the URL; a body id must agree.
    Given(String),
    /// Import: the body's id, or a new one when it has none.
    FromBody,
}

impl Store {
    /// Checks and prepares `text` as a resource of `expected_type` (when known), strictly:
    /// an unknown element is an error.
    pub fn prepare(
        &self,
        text: &str,
        expected_type: Option<&str>,
        id_rule: IdRule,
    ) -> Result<Prepared, FhirError> {
        self.prepare_with(text, expected_type, id_rule, false)
    }

    /// [`Store::prepare`], with `lenient` (`Prefer: handling=lenient`): unknown elements
    /// are then warnings (`Prepared::warnings`), not errors. Every write path — REST create
    /// and update, batch and transaction entries, `pdex import` — comes through here, so
    /// nothing reaches the store without passing the R4 validation (`fhir::validate`).
    pub fn prepare_with(
        &self,
        text: &str,
        expected_type: Option<&str>,
        id_rule: IdRule,
        lenient: bool,
    ) -> Result<Prepared, FhirError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| FhirError::bad_request(format!("the body is not valid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| FhirError::bad_request("a resource must be a JSON object"))?;
        let rtype = obj
            .get("resourceType")
            .and_then(Value::as_str)
            .ok_or_else(|| FhirError::bad_request("the resource has no resourceType"))?
            .to_owned();
        if let Some(expected) = expected_type
            && expected != rtype
        {
            return Err(FhirError::bad_request(format!(
                "resourceType {rtype} does not match the URL's type {expected}"
            )));
        }
        if !self.registry.has_type(&rtype) {
            return Err(FhirError::bad_request(format!(
                "{rtype:?} is not a FHIR R4 resource type"
            )));
        }
        check_structure(&value, &rtype)?;
        // The R4 structure (issue 16): 422 naming every element that is wrong.
        let warnings = validate::validate(&value, lenient);
        if warnings.first().is_some_and(|i| i.severity == "error") {
            return Err(FhirError::invalid_resource(warnings));
        }
        let body_id = match obj.get("id") {
            None => None,
            Some(Value::String(id)) if is_valid_id(id) => Some(id.clone()),
            Some(other) => {
                return Err(FhirError::unprocessable(format!(
                    "id {other} is not a valid FHIR id ([A-Za-z0-9-.], 1-64 characters)"
                )));
            }
        };
        let id = match id_rule {
            IdRule::Assign => uuid::Uuid::new_v4().to_string(),
            IdRule::Given(id) => {
                if let Some(body_id) = &body_id
                    && *body_id != id
                {
                    return Err(FhirError::bad_request(format!(
                        "the body's id {body_id:?} does not match the URL's id {id:?}"
                    )));
                }
                if body_id.is_none() {
                    return Err(FhirError::bad_request(
                        "an update must carry the resource id in the body",
                    ));
                }
                id
            }
            IdRule::FromBody => body_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        };
        let raw = RawResource::parse(text).map_err(FhirError::bad_request)?;
        let index = extract(&self.registry, &rtype, &value);
        let patient_id = self.compartment.owner(&rtype, &id, &index);
        let mut shared = !self.compartment.is_member_type(&rtype);
        let mut owner_from = Vec::new();
        if rtype == "Provenance" && patient_id.is_none() {
            owner_from = index
                .references
                .iter()
                .filter(|r| r.param == "target")
                .filter_map(|r| Some((r.target_type.clone()?, r.target_id.clone()?)))
                .collect();
            // Provenance of shared resources only (an Organization's record) is shared too.
            shared = !owner_from.is_empty()
                && owner_from
                    .iter()
                    .all(|(t, _)| !self.compartment.is_member_type(t));
        }
        let sensitive = self.sensitivity.is_sensitive(&value);
        let care_end = super::release::care_end(&rtype, &index);
        let release_until = super::release::release_until(&rtype, text);
        let source_hash = format!("{:x}", Sha256::digest(text.as_bytes()));
        Ok(Prepared {
            rtype,
            id,
            raw,
            source_hash,
            index,
            patient_id,
            shared,
            owner_from,
            sensitive,
            care_end,
            release_until,
            warnings,
        })
    }
}

/// FHIR JSON rules a resource must meet (R4 JSON §2.6.2): no `null`, no empty objects or
/// arrays, no empty strings, and only element names (letters and digits, `_` prefix for
/// primitive extensions).
fn check_structure(value: &Value, root: &str) -> Result<(), FhirError> {
    let mut path = Vec::new();
    match structure_problem(value, &mut path) {
        None => Ok(()),
        Some(problem) => {
            // `path` holds the location, innermost last.
            let mut at = root.to_owned();
            for seg in path.iter().rev() {
                at.push_str(seg);
            }
            Err(FhirError {
                expression: Some(at.clone()),
                ..FhirError::unprocessable(format!("{at}: {problem}"))
            })
        }
    }
}

/// The first problem found, with its path pushed innermost-first into `path` on the way
/// out (so the happy path allocates nothing).
fn structure_problem(value: &Value, path: &mut Vec<String>) -> Option<String> {
    match value {
        Value::Null => Some("null is not allowed in FHIR JSON".into()),
        Value::String(s) if s.is_empty() => {
            Some("empty strings are not allowed in FHIR JSON".into())
        }
        // FHIR strings exclude control characters other than tab, CR and LF; NUL in
        // particular cannot be stored in a Postgres text column.
        Value::String(s)
            if s.chars()
                .any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n')) =>
        {
            Some("control characters are not allowed in FHIR strings".into())
        }
        Value::Array(items) => {
            if items.is_empty() {
                return Some("empty arrays are not allowed in FHIR JSON".into());
            }
            for (i, item) in items.iter().enumerate() {
                // Arrays of primitives may hold null placeholders paired with `_name`.
                if item.is_null() {
                    continue;
                }
                if let Some(p) = structure_problem(item, path) {
                    path.push(format!("[{i}]"));
                    return Some(p);
                }
            }
            None
        }
        Value::Object(members) => {
            if members.is_empty() {
                return Some("empty objects are not allowed in FHIR JSON".into());
            }
            for (k, v) in members {
                let name = k.strip_prefix('_').unwrap_or(k);
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !valid {
                    return Some(format!("{k:?} is not a FHIR element name"));
                }
                // The narrative div is XHTML and is not checked further, except that XML
                // cannot hold C0 control characters other than tab, CR and LF (XML 1.0
                // §2.2 `Char`; FHIR R4 §2.4.0.2 narrative is XHTML).
                if k == "div" {
                    if let Value::String(div) = v
                        && div
                            .chars()
                            .any(|c| c < ' ' && !matches!(c, '\t' | '\r' | '\n'))
                    {
                        path.push(".div".into());
                        return Some(
                            "control characters (NUL included) are not allowed in XHTML".into(),
                        );
                    }
                    continue;
                }
                if let Some(p) = structure_problem(v, path) {
                    path.push(format!(".{k}"));
                    return Some(p);
                }
            }
            None
        }
        _ => None,
    }
}
