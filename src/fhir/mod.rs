//! FHIR wire basics: JSON helpers, OperationOutcome and errors, Bundle builders, date/period
//! precision, string normalisation. Depends on nothing else in the crate.

pub mod bundle;
pub mod datetime;
pub mod error;
pub mod json;
pub mod parameters;
pub mod projection;
pub mod text;

pub mod validate;

pub use error::{FhirError, Issue, IssueType, TimedOut, Unavailable, is_unavailable};

/// The FHIR JSON media type we answer with.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// Is `id` a valid FHIR logical id (`[A-Za-z0-9\-\.]{1,64}`)?
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Is `name` shaped like a FHIR resource type name?
pub fn looks_like_type(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
}
