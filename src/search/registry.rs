//! The search parameter registry: every SearchParameter the server supports, per resource
//! type, loaded from the vendored definition files under `vendor/definitions/` (embedded in
//! the binary with `include_str!`).
//!
//! Load order, later overriding earlier for the same (resource type, code): official R4 <
//! US Core < CARIN Blue Button < PDex/HRex.

use crate::search::fhirpath::{self, Expr};
use anyhow::{Context, anyhow};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// FHIR search parameter type (R4 `SearchParameter.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

impl ParamType {
    fn from_code(code: &str) -> Option<ParamType> {
        Some(match code {
            "number" => ParamType::Number,
            "date" => ParamType::Date,
            "string" => ParamType::String,
            "token" => ParamType::Token,
            "reference" => ParamType::Reference,
            "composite" => ParamType::Composite,
            "quantity" => ParamType::Quantity,
            "uri" => ParamType::Uri,
            "special" => ParamType::Special,
            _ => return None,
        })
    }

    /// Whether values of this type are extracted into the index tables.
    pub fn is_indexed(self) -> bool {
        !matches!(self, ParamType::Composite | ParamType::Special)
    }
}

/// One search parameter as it applies to one resource type.
#[derive(Debug, Clone)]
pub struct SearchParam {
    /// The code used in URLs, e.g. `patient`, `_lastUpdated`.
    pub code: String,
    /// Canonical URL of the definition.
    pub url: String,
    pub kind: ParamType,
    /// Allowed target resource types for reference parameters (empty = any).
    pub targets: Vec<String>,
    /// The FHIRPath expression restricted to this resource type (the `|` pieces whose root is
    /// this type or `Resource`/`DomainResource`), as text.
    pub expression: String,
    /// The compiled expression; `None` for parameters the store answers from columns
    /// (`_id`, `_lastUpdated`) or that have no expression (composite may come later).
    pub path: Option<Expr>,
}

/// All search parameters, by resource type and code.
#[derive(Debug, Default)]
pub struct Registry {
    by_type: HashMap<String, BTreeMap<String, SearchParam>>,
}

/// The definition files, in override order.
const R4: &str = include_str!("../../vendor/definitions/search-parameters.json");
const US_CORE: &str = include_str!("../../vendor/definitions/search-parameters-uscore.json");
const CARIN_BB: &str = include_str!("../../vendor/definitions/carin-bb/search-parameters.json");
const PDEX: &[&str] = &[
    include_str!(
        "../../vendor/definitions/pdex/SearchParameter-explanationofbenefit-identifier.json"
    ),
    include_str!("../../vendor/definitions/pdex/SearchParameter-explanationofbenefit-patient.json"),
    include_str!(
        "../../vendor/definitions/pdex/SearchParameter-explanationofbenefit-service-date.json"
    ),
    include_str!("../../vendor/definitions/pdex/SearchParameter-explanationofbenefit-type.json"),
    include_str!("../../vendor/definitions/pdex/SearchParameter-explanationofbenefit-use.json"),
    include_str!("../../vendor/definitions/pdex/SearchParameter-group-code.json"),
    include_str!("../../vendor/definitions/pdex/SearchParameter-hrex-coverage-identifier.json"),
    include_str!("../../vendor/definitions/pdex/SearchParameter-hrex-coverage-patient.json"),
    include_str!("../../vendor/definitions/pdex/SearchParameter-hrex-coverage-payor.json"),
    include_str!("../../vendor/definitions/pdex/SearchParameter-hrex-coverage-subscriber.json"),
    include_str!("../../vendor/definitions/pdex/SearchParameter-hrex-coverage-subscriberId.json"),
    include_str!("../../vendor/definitions/pdex/SearchParameter-pdex-consent-action.json"),
    include_str!("../../vendor/definitions/pdex/SearchParameter-pdex-consent-provider-access.json"),
    include_str!("../../vendor/definitions/pdex/SearchParameter-pdex-consent-provision-type.json"),
    include_str!(
        "../../vendor/definitions/pdex/SearchParameter-pdex-group-characteristic-value-reference.json"
    ),
    include_str!(
        "../../vendor/definitions/pdex/SearchParameter-pdex-medicationdispense-patient.json"
    ),
    include_str!(
        "../../vendor/definitions/pdex/SearchParameter-pdex-medicationdispense-status.json"
    ),
];

/// R4 resource types that have no search parameter of their own (they still get the
/// Resource-level ones).
const TYPES_WITHOUT_OWN_PARAMS: &[&str] = &[
    "Binary",
    "BiologicallyDerivedProduct",
    "CatalogEntry",
    "MedicinalProductIngredient",
    "MedicinalProductManufactured",
    "ObservationDefinition",
    "OperationOutcome",
    "Parameters",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
];

/// Resource-level special parameters that have no SearchParameter resource in R4.
const SYNTHETIC_SPECIALS: &[&str] = &["_has", "_list", "_type"];

/// Answered from table columns, never extracted.
const COLUMN_PARAMS: &[&str] = &["_id", "_lastUpdated"];

fn is_generic_root(root: &str) -> bool {
    root == "Resource" || root == "DomainResource"
}

/// Splits an expression at top-level `|` (outside parentheses and string literals).
pub(crate) fn split_union(expression: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut in_str, mut start) = (0i32, false, 0);
    for (i, c) in expression.char_indices() {
        match c {
            '\'' => in_str = !in_str,
            '(' if !in_str => depth += 1,
            ')' if !in_str => depth -= 1,
            '|' if !in_str && depth == 0 => {
                out.push(expression[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(expression[start..].trim());
    out.retain(|p| !p.is_empty());
    out
}

/// The type name a piece starts at (`(Observation.value as Quantity)` → `Observation`).
fn piece_root(piece: &str) -> &str {
    let p = piece.trim_start_matches(|c: char| c == '(' || c.is_whitespace());
    let end = p
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(p.len());
    &p[..end]
}

/// The pieces of `expression` that apply to `resource_type`, joined with ` | `.
fn restrict(expression: &str, resource_type: &str) -> String {
    split_union(expression)
        .into_iter()
        .filter(|p| {
            let r = piece_root(p);
            // A lower-case start is a path relative to the resource (`name | alias`).
            r == resource_type
                || is_generic_root(r)
                || r.starts_with(|c: char| c.is_ascii_lowercase())
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The SearchParameter resources of one definition file (a Bundle or a single resource).
fn definitions(text: &str) -> anyhow::Result<Vec<Value>> {
    let v: Value = serde_json::from_str(text).context("invalid definition JSON")?;
    match v.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") => Ok(v
            .get("entry")
            .and_then(Value::as_array)
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|e| e.get("resource").cloned())
                    .filter(|r| r["resourceType"] == "SearchParameter")
                    .collect()
            })
            .unwrap_or_default()),
        Some("SearchParameter") => Ok(vec![v]),
        other => Err(anyhow!("unexpected definition resource {other:?}")),
    }
}

/// Every built-in SearchParameter resource, in override order.
pub(crate) fn builtin_definitions() -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for text in [R4, US_CORE, CARIN_BB].iter().chain(PDEX) {
        out.extend(definitions(text)?);
    }
    Ok(out)
}

fn str_list(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Builds the `SearchParam` of definition `def` for `resource_type` (a concrete type, or
/// `Resource` for the generic ones).
fn build(def: &Value, resource_type: &str) -> anyhow::Result<SearchParam> {
    let url = def.get("url").and_then(Value::as_str).unwrap_or_default();
    let code = def
        .get("code")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("SearchParameter {url} has no code"))?;
    let type_code = def.get("type").and_then(Value::as_str).unwrap_or_default();
    let kind = ParamType::from_code(type_code)
        .ok_or_else(|| anyhow!("SearchParameter {url} has unknown type `{type_code}`"))?;
    let full = def.get("expression").and_then(Value::as_str).unwrap_or("");
    let expression = if is_generic_root(resource_type) {
        full.to_string()
    } else {
        restrict(full, resource_type)
    };
    let path = if kind.is_indexed() && !expression.is_empty() && !COLUMN_PARAMS.contains(&code) {
        Some(fhirpath::compile(&expression).map_err(|e| {
            anyhow!(
                "cannot compile SearchParameter {url} ({resource_type}.{code}) expression \
                 `{expression}`: {e}"
            )
        })?)
    } else {
        None
    };
    Ok(SearchParam {
        code: code.to_string(),
        url: url.to_string(),
        kind,
        targets: str_list(def, "target"),
        expression,
        path,
    })
}

impl Registry {
    /// Loads the built-in definitions. Fails (loudly, with the parameter url and expression)
    /// if an expression of an indexed parameter cannot be compiled.
    pub fn load_builtin() -> anyhow::Result<Registry> {
        Self::from_definitions(&builtin_definitions()?)
    }

    /// Builds a registry from SearchParameter resources; later ones override earlier ones
    /// with the same (resource type, code).
    pub fn from_definitions(defs: &[Value]) -> anyhow::Result<Registry> {
        let mut common: BTreeMap<String, SearchParam> = BTreeMap::new();
        let mut by_type: HashMap<String, BTreeMap<String, SearchParam>> = HashMap::new();
        for code in SYNTHETIC_SPECIALS {
            common.insert(
                code.to_string(),
                SearchParam {
                    code: code.to_string(),
                    url: format!(
                        "http://hl7.org/fhir/SearchParameter/Resource-{}",
                        &code[1..]
                    ),
                    kind: ParamType::Special,
                    targets: Vec::new(),
                    expression: String::new(),
                    path: None,
                },
            );
        }
        for def in defs {
            for base in str_list(def, "base") {
                if is_generic_root(&base) {
                    let p = build(def, &base)?;
                    common.insert(p.code.clone(), p);
                } else {
                    let p = build(def, &base)?;
                    by_type.entry(base).or_default().insert(p.code.clone(), p);
                }
            }
        }
        for t in TYPES_WITHOUT_OWN_PARAMS {
            by_type.entry(t.to_string()).or_default();
        }
        for params in by_type.values_mut() {
            for (code, p) in &common {
                params.entry(code.clone()).or_insert_with(|| p.clone());
            }
        }
        Ok(Registry { by_type })
    }

    /// The parameter `code` for `resource_type` (including the Resource-level ones such as
    /// `_id`, `_lastUpdated`, `_tag`, `_profile`, `_security`, `_source`).
    pub fn get(&self, resource_type: &str, code: &str) -> Option<&SearchParam> {
        self.by_type.get(resource_type)?.get(code)
    }

    /// Every parameter that applies to `resource_type`, sorted by code.
    pub fn for_type(&self, resource_type: &str) -> Vec<&SearchParam> {
        self.by_type
            .get(resource_type)
            .map(|m| m.values().collect())
            .unwrap_or_default()
    }

    /// The parameters of `resource_type` whose values are extracted into the index (those
    /// with a compiled path), sorted by code. Borrowing iterator: no allocation per call.
    pub fn indexed(&self, resource_type: &str) -> impl Iterator<Item = (&SearchParam, &Expr)> {
        self.by_type
            .get(resource_type)
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|p| p.path.as_ref().map(|e| (p, e)))
    }

    /// Is `resource_type` an R4 resource type we know? (A map lookup: called per request and
    /// per imported resource.)
    pub fn has_type(&self, resource_type: &str) -> bool {
        self.by_type.contains_key(resource_type)
    }

    /// Every resource type that has at least one parameter (i.e. every R4 resource type).
    pub fn resource_types(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.by_type.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_indexed_expression_compiles() {
        let defs = builtin_definitions().unwrap();
        let mut failures = Vec::new();
        let mut compiled = 0;
        for d in &defs {
            let kind = ParamType::from_code(d["type"].as_str().unwrap()).unwrap();
            if !kind.is_indexed() {
                continue;
            }
            let Some(e) = d.get("expression").and_then(Value::as_str) else {
                continue;
            };
            match fhirpath::compile(e) {
                Ok(_) => compiled += 1,
                Err(err) => failures.push(format!("{}: {e}: {err}", d["url"])),
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        assert!(compiled > 1300, "{compiled}");
    }

    #[test]
    fn load_builtin_and_lookups() {
        let r = Registry::load_builtin().unwrap();
        let types = r.resource_types();
        assert!(types.len() >= 145, "{}", types.len());
        assert!(types.contains(&"Binary") && types.contains(&"Patient"));
        assert!(!types.contains(&"Resource") && !types.contains(&"DomainResource"));

        let id = r.get("Patient", "_id").unwrap();
        assert_eq!(id.kind, ParamType::Token);
        assert!(id.path.is_none());
        assert!(r.get("Binary", "_lastUpdated").unwrap().path.is_none());
        let tag = r.get("Coverage", "_tag").unwrap();
        assert!(tag.path.is_some());
        assert_eq!(tag.expression, "Resource.meta.tag");
        for code in [
            "_profile",
            "_security",
            "_source",
            "_text",
            "_content",
            "_list",
            "_has",
            "_type",
            "_query",
        ] {
            assert!(r.get("Observation", code).is_some(), "{code}");
        }
        assert!(r.get("Observation", "_has").unwrap().path.is_none());

        // Restriction to the type's pieces.
        let p = r.get("Observation", "patient").unwrap();
        assert_eq!(
            p.expression,
            "Observation.subject.where(resolve() is Patient)"
        );
        assert_eq!(p.kind, ParamType::Reference);
        let ip = r.get("InsurancePlan", "name").unwrap();
        assert_eq!(ip.expression, "name | alias");
        assert!(ip.path.is_some());
        let cond = r.get("Condition", "code").unwrap();
        assert_eq!(cond.expression, "Condition.code");

        // Overrides: US Core, CARIN, PDex/HRex.
        assert!(r.get("Patient", "race").unwrap().url.contains("us/core"));
        let sd = r.get("ExplanationOfBenefit", "service-date").unwrap();
        assert!(sd.url.contains("davinci-pdex"), "{}", sd.url);
        assert!(
            r.get("ExplanationOfBenefit", "insurer")
                .unwrap()
                .url
                .contains("carin-bb")
        );
        assert!(
            r.get("ExplanationOfBenefit", "type")
                .unwrap()
                .url
                .contains("davinci-pdex")
        );
        assert!(
            r.get("ExplanationOfBenefit", "service-start-date")
                .unwrap()
                .path
                .is_some()
        );
        let cp = r.get("Coverage", "patient").unwrap();
        assert_eq!(cp.expression, "Coverage.beneficiary");
        assert!(cp.url.contains("davinci-hrex"));
        assert!(r.get("Coverage", "subscriber-id").is_some());

        // Composite parameters are present but not indexed.
        let c = r.get("Observation", "code-value-quantity").unwrap();
        assert_eq!(c.kind, ParamType::Composite);
        assert!(c.path.is_none());

        // Every indexed parameter got a compiled path for each of its base types.
        let no_expression = ["_text", "_content", "_query", "_id", "_lastUpdated"];
        for t in r.resource_types() {
            for p in r.for_type(t) {
                if p.kind.is_indexed() && !no_expression.contains(&p.code.as_str()) {
                    assert!(p.path.is_some(), "{t}.{} `{}`", p.code, p.expression);
                }
            }
        }

        // Sorted, and unknown types/codes are None/empty.
        let all = r.for_type("Patient");
        assert!(all.windows(2).all(|w| w[0].code < w[1].code));
        assert!(all.iter().any(|p| p.code == "birthdate"));
        assert!(r.for_type("Nope").is_empty());
        assert!(r.get("Patient", "nope").is_none());
    }

    #[test]
    fn bad_expression_fails_loudly() {
        let def = serde_json::json!({"resourceType": "SearchParameter",
            "url": "http://x/SearchParameter/bad", "code": "bad", "type": "token",
            "base": ["Patient"], "expression": "Patient.name.first()"});
        let err = Registry::from_definitions(&[def]).unwrap_err().to_string();
        assert!(err.contains("http://x/SearchParameter/bad"), "{err}");
        assert!(err.contains("Patient.name.first()"), "{err}");
    }

    #[test]
    fn union_splitting() {
        assert_eq!(
            split_union("A.b | (A.c.ofType(X)) | B.d.where(x='a|b')"),
            vec!["A.b", "(A.c.ofType(X))", "B.d.where(x='a|b')"]
        );
        assert_eq!(piece_root("(Observation.value as Quantity)"), "Observation");
    }
}
