//! FHIR operations, one file each.

pub mod export;
