//! FHIR operations, one file each.

pub mod bulk_member_match;
pub mod groups;
