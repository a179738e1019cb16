//! Index-value extraction at write time: turns a resource into the rows of the search index
//! tables. INTERFACE (to be implemented).

use crate::search::registry::Registry;
use serde_json::Value;

/// All index rows for one resource.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IndexEntries {
    pub tokens: Vec<TokenEntry>,
    pub strings: Vec<StringEntry>,
    pub dates: Vec<DateEntry>,
    pub quantities: Vec<QuantityEntry>,
    pub references: Vec<ReferenceEntry>,
}

/// token and uri parameters. For reference parameters, `Reference.identifier` is also
/// emitted here under the parameter code suffixed with `:identifier` (for the
/// `:identifier` modifier).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEntry {
    pub param: String,
    pub system: Option<String>,
    pub code: String,
    /// Normalised (see `fhir::text::normalize`) display / text, for the `:text` modifier.
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StringEntry {
    pub param: String,
    /// `fhir::text::normalize(value)`: for the default (starts-with) and `:contains` matches.
    pub normalized: String,
    /// The value as written: for `:exact`.
    pub exact: String,
}

/// date parameters: the instant range the value covers, epoch milliseconds, both inclusive.
#[derive(Debug, Clone, PartialEq)]
pub struct DateEntry {
    pub param: String,
    pub low: i64,
    pub high: i64,
}

/// number and quantity parameters (numbers have neither system nor code).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantityEntry {
    pub param: String,
    pub value: f64,
    pub system: Option<String>,
    pub code: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceEntry {
    pub param: String,
    /// `Patient` for `Patient/123`, `http://x/fhir/Patient/123` (last two segments).
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// The reference (or canonical) as written.
    pub url: String,
}

/// Extracts the index rows of `resource` (whose `resourceType` is `resource_type`).
pub fn extract(registry: &Registry, resource_type: &str, resource: &Value) -> IndexEntries {
    let _ = (registry, resource_type, resource);
    unimplemented!()
}
