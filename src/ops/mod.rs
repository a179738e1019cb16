//! FHIR operations, one file each, and the table that declares them ([`OPERATIONS`]):
//! name, canonical URL, where it is invoked, its HTTP methods, the scope that admits a
//! caller, whether it runs as a job, and how it plugs into the bulk engine. The router
//! mounts every entry, the CapabilityStatement lists every entry, handlers check their
//! caller with [`Operation::authorize`], and `app` registers each entry's job hooks — so an
//! operation is declared here once. Handlers take the caller's `AccessContext` like every
//! REST handler and read through the store's access layer.

pub mod bulk_match_job;
pub mod bulk_member_match;
pub mod davinci_data_export;
pub mod everything;
pub mod export;
pub mod groups;
pub mod member_match;

use crate::fhir::FhirError;
use crate::identity::{AccessContext, scopes};
use crate::web::{AppState, SharedState};
use axum::routing::{MethodFilter, MethodRouter, on};

/// Where an operation is invoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `[base]/$name`
    System,
    /// `[base]/{Type}/$name`
    Type(&'static str),
    /// `[base]/{Type}/{id}/$name`
    Instance(&'static str),
}

/// What admits a caller to an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The operation's own scope (its canonical, or one of `also_accepted`) must be granted.
    OperationScope,
    /// The caller's data scopes decide what it reads (the access layer); no scope of its own.
    DataScopes,
}

/// One operation (see the module doc).
pub struct Operation {
    /// The operation's code, e.g. `member-match` (the URL segment after `$`).
    pub name: &'static str,
    /// The OperationDefinition's canonical URL, declared in the CapabilityStatement.
    pub canonical: &'static str,
    /// Earlier canonicals a token may name as the operation's scope (PDex 2.1 spellings).
    pub also_accepted: &'static [&'static str],
    pub level: Level,
    /// The HTTP methods it answers (`GET` and/or `POST`).
    pub methods: MethodFilter,
    pub admission: Admission,
    /// Kicked off with `Prefer: respond-async` and run by the bulk engine as a job of this
    /// kind (`None`: answered synchronously).
    pub job_kind: Option<&'static str>,
    /// Plugs the operation's hooks into the bulk engine (job runners, member filters).
    pub register: Option<fn(&AppState)>,
    /// The handler for the methods the router passes.
    pub handler: fn(MethodFilter) -> MethodRouter<SharedState>,
}

impl Operation {
    /// The route under the FHIR base, e.g. `/Patient/{id}/$everything`.
    pub fn path(&self) -> String {
        match self.level {
            Level::System => format!("/${}", self.name),
            Level::Type(t) => format!("/{t}/${}", self.name),
            Level::Instance(t) => format!("/{t}/{{id}}/${}", self.name),
        }
    }

    /// The method router for this operation's methods.
    pub fn route(&self) -> MethodRouter<SharedState> {
        (self.handler)(self.methods)
    }

    /// 403 unless `ctx` may invoke this operation: for [`Admission::OperationScope`] the
    /// token must carry the operation's scope (HRex/PDex operation scopes); data-scoped
    /// operations admit every authenticated caller and leave the rest to the access layer.
    pub fn authorize(&self, ctx: &AccessContext) -> Result<(), FhirError> {
        if self.admission == Admission::DataScopes
            || ctx.has_operation(self.canonical)
            || self.also_accepted.iter().any(|c| ctx.has_operation(c))
        {
            return Ok(());
        }
        Err(FhirError::forbidden(format!(
            "this access token does not carry the scope {}",
            self.canonical
        )))
    }
}

const GET_POST: MethodFilter = MethodFilter::GET.or(MethodFilter::POST);
const POST: MethodFilter = MethodFilter::POST;

/// Bulk Data STU2 `$export` (system level).
pub static EXPORT: Operation = Operation {
    name: "export",
    canonical: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
    also_accepted: &[],
    level: Level::System,
    methods: GET_POST,
    admission: Admission::DataScopes,
    job_kind: Some(export::JOB_KIND),
    register: None,
    handler: |m| on(m, export::system),
};

/// Bulk Data STU2 `Patient/$export`.
pub static PATIENT_EXPORT: Operation = Operation {
    name: "export",
    canonical: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
    also_accepted: &[],
    level: Level::Type("Patient"),
    methods: GET_POST,
    admission: Admission::DataScopes,
    job_kind: Some(export::JOB_KIND),
    register: None,
    handler: |m| on(m, export::patient),
};

/// Bulk Data STU2 `Group/{id}/$export` (a payer's follows the `$davinci-data-export` rules).
pub static GROUP_EXPORT: Operation = Operation {
    name: "export",
    canonical: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
    also_accepted: &[],
    level: Level::Instance("Group"),
    methods: GET_POST,
    admission: Admission::DataScopes,
    job_kind: Some(export::JOB_KIND),
    register: None,
    handler: |m| on(m, export::group),
};

/// HRex `$member-match` (PDex payer-to-payer single member).
pub static MEMBER_MATCH: Operation = Operation {
    name: "member-match",
    canonical: scopes::MEMBER_MATCH,
    also_accepted: &[],
    level: Level::Type("Patient"),
    methods: POST,
    admission: Admission::OperationScope,
    job_kind: None,
    register: None,
    handler: |m| on(m, member_match::member_match),
};

/// `Patient/{id}/$everything`.
pub static EVERYTHING: Operation = Operation {
    name: "everything",
    canonical: "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    also_accepted: &[],
    level: Level::Instance("Patient"),
    methods: GET_POST,
    admission: Admission::DataScopes,
    job_kind: None,
    register: None,
    handler: |m| on(m, everything::everything),
};

/// PDex `Group/$bulk-member-match` (payer-to-payer multi-member match).
pub static BULK_MEMBER_MATCH: Operation = Operation {
    name: "bulk-member-match",
    canonical: scopes::BULK_MEMBER_MATCH,
    also_accepted: &[scopes::BULK_MEMBER_MATCH_2_1],
    level: Level::Type("Group"),
    methods: POST,
    admission: Admission::OperationScope,
    job_kind: Some(bulk_match_job::JOB_KIND),
    register: Some(|state| {
        bulk_match_job::BulkMatchRunner::register(
            &state.bulk,
            state.store.clone(),
            state.payer_identifiers(),
            state.store.sensitivity.segmentation(),
        )
    }),
    handler: |m| on(m, bulk_match_job::kickoff_handler),
};

/// ATR/PDex `Group/{id}/$davinci-data-export` (§pdex-284: POST; GET accepted).
pub static DAVINCI_DATA_EXPORT: Operation = Operation {
    name: "davinci-data-export",
    canonical: "http://hl7.org/fhir/us/davinci-atr/OperationDefinition/davinci-data-export",
    also_accepted: &[],
    level: Level::Instance("Group"),
    methods: GET_POST,
    admission: Admission::DataScopes,
    job_kind: Some(davinci_data_export::JOB_KIND),
    register: Some(|state| davinci_data_export::register(&state.bulk)),
    handler: |m| on(m, davinci_data_export::handler),
};

/// Every operation this server offers (§pdex-98/225: each is declared in the
/// CapabilityStatement with its exact canonical).
pub static OPERATIONS: &[&Operation] = &[
    &EXPORT,
    &MEMBER_MATCH,
    &EVERYTHING,
    &PATIENT_EXPORT,
    &GROUP_EXPORT,
    &BULK_MEMBER_MATCH,
    &DAVINCI_DATA_EXPORT,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_one_route_and_one_canonical() {
        let mut paths: Vec<String> = OPERATIONS.iter().map(|o| o.path()).collect();
        let n = paths.len();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), n, "two operations on one route");
        let mut canonicals: Vec<&str> = OPERATIONS.iter().map(|o| o.canonical).collect();
        canonicals.sort();
        canonicals.dedup();
        assert_eq!(canonicals.len(), n, "two operations with one canonical");
        assert_eq!(MEMBER_MATCH.path(), "/Patient/$member-match");
        assert_eq!(EVERYTHING.path(), "/Patient/{id}/$everything");
        assert_eq!(EXPORT.path(), "/$export");
        for op in OPERATIONS {
            // every entry builds its route for its methods
            let _ = op.route();
        }
    }
}
