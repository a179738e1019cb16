//! The FHIR RESTful API on resources: the instance and type interactions (`interactions.rs`:
//! read, vread, history, create, update, delete, search by GET and POST `_search`) and
//! transaction and batch Bundles (`bundle.rs`). Handlers stand on `web` (state, the caller's
//! `Access`, HTTP details) and read and write through the store's access layer; the router
//! (`server`) mounts them.

pub mod bundle;
pub mod interactions;
