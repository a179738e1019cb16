//! FHIR operations, one file each. Handlers take the caller's `AccessContext` like every
//! REST handler and read through the store's access layer.

pub mod bulk_match_job;
pub mod bulk_member_match;
pub mod davinci_data_export;
pub mod everything;
pub mod export;
pub mod groups;
pub mod member_match;
