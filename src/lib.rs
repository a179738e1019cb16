//! pdex: a health plan's FHIR R4 server for the Da Vinci PDex exchanges.
//! See `ARCHITECTURE.md` for the map of the code.

pub mod app;
pub mod auth;
pub mod bulk;
pub mod certs;
pub mod config;
pub mod consent;
pub mod demo;
pub mod fhir;
pub mod identity;
pub mod import;
pub mod ops;
pub mod rest;
pub mod search;
pub mod server;
pub mod store;
pub mod synth;
#[cfg(test)]
mod tidy;
pub mod web;
