//! The search parameter registry: every SearchParameter the server supports, per resource
//! type, loaded from the vendored definition files under `vendor/definitions/`.
//! INTERFACE (to be implemented).

use crate::search::fhirpath::Expr;

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
pub struct Registry {}

impl Registry {
    /// Loads the built-in definitions. Fails (loudly, with the parameter url and expression)
    /// if an expression of an indexed parameter cannot be compiled.
    pub fn load_builtin() -> anyhow::Result<Registry> {
        unimplemented!()
    }

    /// The parameter `code` for `resource_type` (including the Resource-level ones such as
    /// `_id`, `_lastUpdated`, `_tag`, `_profile`, `_security`, `_source`).
    pub fn get(&self, resource_type: &str, code: &str) -> Option<&SearchParam> {
        let _ = (resource_type, code);
        unimplemented!()
    }

    /// Every parameter that applies to `resource_type`, sorted by code.
    pub fn for_type(&self, resource_type: &str) -> Vec<&SearchParam> {
        let _ = resource_type;
        unimplemented!()
    }

    /// Every resource type that has at least one parameter (i.e. every R4 resource type).
    pub fn resource_types(&self) -> Vec<&str> {
        unimplemented!()
    }
}
