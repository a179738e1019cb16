//! Search: the parameter registry (official R4 + US Core + CARIN BB + PDex definitions),
//! the FHIRPath subset that evaluates their expressions, index-value extraction at write
//! time, query parsing and SQL planning.
//!
//! May depend on `fhir`; never on `store` or `server` (the store calls into `extract`,
//! the planner produces portable SQL fragments the store runs).

pub mod extract;
pub mod fhirpath;
pub mod query;
pub mod registry;

pub use extract::{IndexEntries, extract};
pub use registry::{ParamType, Registry, SearchParam};
