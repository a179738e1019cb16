//! pdex: a health plan's FHIR R4 server for the Da Vinci PDex exchanges.
//! See `ARCHITECTURE.md` for the map of the code.

pub mod fhir;
pub mod search;
pub mod synth;
