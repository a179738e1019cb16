//! FHIR operations, one file each. Handlers take the caller's `AccessContext` like every
//! REST handler and read through the store's access layer.

pub mod everything;
pub mod export;
pub mod member_match;
