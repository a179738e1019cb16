//! A FHIRPath subset: exactly the forms that occur in the search parameter expressions we
//! index. INTERFACE (to be implemented).

use serde_json::Value;

/// A compiled expression.
#[derive(Debug, Clone)]
pub struct Expr {}

/// A value reached by an expression together with its FHIR type when the path tells it
/// (choice elements such as `value[x]` resolve to e.g. `valueQuantity` → `Quantity`).
#[derive(Debug, Clone)]
pub struct Node<'a> {
    pub value: &'a Value,
    /// FHIR type name when known from a choice suffix or `ofType`, e.g. `Quantity`, `Period`.
    pub fhir_type: Option<String>,
}

/// Compiles `expression` (may contain `|` unions).
pub fn compile(expression: &str) -> Result<Expr, String> {
    let _ = expression;
    unimplemented!()
}

/// Evaluates `expr` against a resource; arrays are flattened, as FHIRPath collections are.
pub fn evaluate<'a>(expr: &Expr, resource: &'a Value) -> Vec<Node<'a>> {
    let _ = (expr, resource);
    unimplemented!()
}
