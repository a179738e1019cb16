//! FHIR wire basics: JSON helpers, OperationOutcome, Bundle builders, date/period precision,
//! string normalisation. Depends on nothing else in the crate.

pub mod datetime;
pub mod text;
