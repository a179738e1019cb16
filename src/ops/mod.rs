//! FHIR operations, one file each.

pub mod bulk_member_match;
pub mod davinci_data_export;
pub mod groups;
