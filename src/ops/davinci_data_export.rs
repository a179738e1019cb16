//! `Group/{id}/$davinci-data-export` (ATR 2.1.0 operation, PDex payer-to-payer rules,
//! ig-digest §7): the parts that are PDex's own on top of a Bulk Data Group export —
//! `exportType`, and the five-year `_since` rule that differs between PDex 2.1.0 and 2.2.0.
//!
//! - `exportType`: `hl7.fhir.us.davinci-pdex#payertopayer` (§pdex-171) is the only value for
//!   a payer-to-payer match Group. Absent, it defaults to `#payertopayer` (ATR leaves the
//!   default open; ig-digest §7.4 "decide"). The provider-access values
//!   (`#provider-delta|download|snapshot`) and the ATR one name other kinds of Group: 400,
//!   as does any unknown value (§15 item 10: the values are not URLs and no CodeSystem
//!   defines them, so they are compared as exact strings).
//! - `_since` (§pdex-173..176, seed page "_since"): under PDex 2.1.0 (the default) data is
//!   limited to what was updated in the five years before the request, and a `_since`
//!   earlier than that "will be overridden and set to five years before the transaction
//!   request" — we do, and say so in the error file (an informational OperationOutcome). Under
//!   2.2.0 `_since` is never rewritten (§pdex-176) and nothing is cut off: at least five years
//!   (everything we hold) is returned.
//!
//! - The Group must be one the caller may read (for a payer: its own, `store::access`);
//!   anyone else gets 404. `patient` references outside the Group are ignored and each is
//!   reported in the error file (ATR; §pdex-296).
//! - Consent is re-checked for every member when the job starts (§pdex-167): the member's
//!   latest stored consent for the caller's organization must be active and cover that
//!   moment; others are left out with an OperationOutcome each ([`PayerConsentFilter`]).
//! - The job reads with the caller's identity narrowed to the Group's members and without
//!   sensitive data; the members whose consent is `#sensitive` are then read with sensitive
//!   data allowed, in queries restricted to them alone (`bulk::export`), so each member's
//!   consent decides their own allowance.
//! - What of each row goes out — ExplanationOfBenefit as the non-financial view, prior
//!   authorizations only while active or changed within the last year, the five-year window
//!   on care dates — is the store's `access::View` for the payer, as on every read path.
//! - `Group/{id}/$export` on a payer's Group is the same operation with `exportType` absent.
//!
//! Depends on `bulk` (the engine), `consent`, `store`, `server` (handler plumbing), `fhir`.

use crate::bulk::request::{self, Level, ParseOptions};
use crate::bulk::{Admission, Engine, MemberFilter};
pub use crate::config::PdexVersion;
use crate::fhir::FhirError;
use crate::fhir::datetime::format_instant;
use crate::identity::{AccessContext, ClientKind, DataScope};
use crate::store::Store;
use crate::web::SharedState;
use crate::web::http::prefer;
use crate::web::kickoff::KickOff;
use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::json;
use std::sync::Arc;

pub const EXPORT_TYPE_PAYER_TO_PAYER: &str = "hl7.fhir.us.davinci-pdex#payertopayer";
/// Export types that exist but belong to other Groups than a payer-to-payer match Group.
const OTHER_EXPORT_TYPES: [&str; 4] = [
    "hl7.fhir.us.davinci-pdex#provider-delta",
    "hl7.fhir.us.davinci-pdex#provider-download",
    "hl7.fhir.us.davinci-pdex#provider-snapshot",
    "hl7.fhir.us.davinci-atr",
];

/// The job kind of these exports (an export run by the export engine).
pub const JOB_KIND: &str = "davinci-data-export";
/// Registered name of the consent re-check.
pub const MEMBER_FILTER: &str = "payer-consent";

/// The kinds of `$davinci-data-export` we run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportType {
    PayerToPayer,
}

/// The `exportType` of a kick-off on a payer-to-payer match Group (all values given,
/// repeated or not). See the module comment for the rules.
pub fn export_type(given: &[String]) -> Result<ExportType, FhirError> {
    match given {
        [] => Ok(ExportType::PayerToPayer),
        [one] if one == EXPORT_TYPE_PAYER_TO_PAYER => Ok(ExportType::PayerToPayer),
        [one] if OTHER_EXPORT_TYPES.contains(&one.as_str()) => {
            Err(FhirError::bad_request(format!(
                "exportType {one} does not apply to a payer-to-payer member-match Group; use {EXPORT_TYPE_PAYER_TO_PAYER}"
            )))
        }
        [one] => Err(FhirError::bad_request(format!(
            "unknown exportType {one:?}; a payer-to-payer export uses {EXPORT_TYPE_PAYER_TO_PAYER}"
        ))),
        _ => Err(FhirError::bad_request(
            "exportType may be given once (0..1)",
        )),
    }
}

/// The instant five calendar years before `now_ms` (29 February → 28 February).
pub fn five_years_before(now_ms: i64) -> i64 {
    crate::store::release::years_before(now_ms, 5)
}

/// The effective `_since` of a payer-to-payer export requested at `now_ms`, and a message for
/// the error file when it was moved.
pub fn since_rule(
    since: Option<i64>,
    now_ms: i64,
    version: PdexVersion,
) -> (Option<i64>, Option<String>) {
    match version {
        PdexVersion::V22 => (since, None),
        PdexVersion::V21 => {
            let floor = five_years_before(now_ms);
            match since {
                Some(s) if s >= floor => (Some(s), None),
                Some(s) => (
                    Some(floor),
                    Some(format!(
                        "_since {} is more than five years before the request; it was set to {} (PDex 2.1.0 payer-to-payer: only data updated within five years of the request is returned)",
                        format_instant(s),
                        format_instant(floor)
                    )),
                ),
                None => (Some(floor), None),
            }
        }
    }
}

/// Registers the consent re-check with the engine.
pub fn register(engine: &Engine) {
    engine.register_member_filter(MEMBER_FILTER, Arc::new(PayerConsentFilter));
}

/// §pdex-167: only members whose consent for the caller's organization is valid now.
pub struct PayerConsentFilter;

#[async_trait]
impl MemberFilter for PayerConsentFilter {
    async fn admit(
        &self,
        store: &Store,
        ctx: &AccessContext,
        members: Vec<String>,
    ) -> anyhow::Result<Admission> {
        let now = chrono::Utc::now().timestamp_millis();
        let Some(requester) = &ctx.organization else {
            // the plan's own back office exporting its Group: nothing to re-check
            return Ok(Admission {
                members,
                ..Admission::default()
            });
        };
        let mut admission = Admission::default();
        for m in members {
            match crate::consent::grant_for(store, requester, &m, now).await? {
                Some(grant) => {
                    // §pdex-203/207: a `#sensitive` consent releases all data, `#regular`
                    // only what is not sensitive; the allowance is the member's own.
                    if grant.allow_sensitive {
                        admission.sensitive.push(m.clone());
                    }
                    admission.members.push(m);
                }
                None => admission.left_out.push(json!({
                    "resourceType": "OperationOutcome",
                    "issue": [{
                        "severity": "error",
                        "code": "forbidden",
                        "diagnostics": format!("Patient/{m}: no consent of this member for your organization is valid now (revoked or expired); the member's data is not exported"),
                        "expression": [format!("Patient/{m}")],
                    }]
                })),
            }
        }
        Ok(admission)
    }
}

/// `GET|POST [base]/Group/{id}/$davinci-data-export` (parameters as in `$export`).
#[allow(clippy::too_many_arguments)]
pub async fn handler(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    k: KickOff,
) -> Result<Response, FhirError> {
    super::export::refuse_member_token(&k.ctx)?;
    kickoff(&state, &k, &id).await
}

/// The kick-off `k` on `Group/{group_id}` (also a payer's `Group/{id}/$export`).
pub async fn kickoff(
    state: &SharedState,
    k: &KickOff,
    group_id: &str,
) -> Result<Response, FhirError> {
    let ctx = &k.ctx;
    k.check_headers()?;
    let group = state
        .store
        .read(ctx, "Group", group_id)
        .await?
        .filter(|g| !g.deleted)
        .ok_or_else(|| FhirError::not_found(format!("Group/{group_id} is not known")))?;
    let members = crate::bulk::export::group_member_ids(&group.content);
    let opts = ParseOptions {
        level: Level::Group(group_id.to_owned()),
        post: k.is_post(),
        lenient: prefer(&k.headers).lenient,
        allow_until: true,
        extra: &["exportType"],
        base_url: &state.base_url,
    };
    let parsed = request::parse(&state.store, ctx, k.params()?, &opts)?;
    let mut params = parsed.params;
    let given: Vec<String> = parsed.extra.get("exportType").cloned().unwrap_or_default();
    export_type(&given)?;
    let now = chrono::Utc::now().timestamp_millis();
    let (since, note) = since_rule(params.since, now, state.exchange.pdex_version);
    params.since = since;
    params.warnings.extend(note);
    // `patient` outside the Group: ignored, each reported (ATR, §pdex-296)
    super::export::check_patients(state, ctx, &mut params, true).await?;
    params.member_filter = Some(MEMBER_FILTER.into());
    // the job reads the Group's members only, without sensitive data unless a member's own
    // consent allows it (module comment)
    let mut job_ctx = ctx.clone();
    if matches!(ctx.kind, ClientKind::Payer | ClientKind::Provider) {
        job_ctx.scope = DataScope::Patients(members);
        job_ctx.allow_sensitive = false;
    }
    super::export::start_job(state, &job_ctx, JOB_KIND, params, &k.request_url(), &k.base).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        crate::fhir::datetime::parse(text).unwrap().low
    }

    #[test]
    fn export_types() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(export_type(&v(&[])).unwrap(), ExportType::PayerToPayer);
        assert_eq!(
            export_type(&v(&[EXPORT_TYPE_PAYER_TO_PAYER])).unwrap(),
            ExportType::PayerToPayer
        );
        for bad in [
            "hl7.fhir.us.davinci-pdex#provider-delta",
            "hl7.fhir.us.davinci-atr",
            "payertopayer",
            "hl7.fhir.us.davinci-pdex#PayerToPayer",
        ] {
            let e = export_type(&v(&[bad])).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
        assert!(
            export_type(&v(&[
                EXPORT_TYPE_PAYER_TO_PAYER,
                EXPORT_TYPE_PAYER_TO_PAYER
            ]))
            .is_err()
        );
    }

    #[test]
    fn five_calendar_years() {
        assert_eq!(
            five_years_before(ms("2026-12-01T07:00:00Z")),
            ms("2021-12-01T07:00:00Z")
        );
        assert_eq!(
            five_years_before(ms("2024-02-29T12:30:00Z")),
            ms("2019-02-28T12:30:00Z")
        );
        assert_eq!(
            five_years_before(ms("2025-01-01T00:00:00Z")),
            ms("2020-01-01T00:00:00Z")
        );
    }

    #[test]
    fn since_rule_by_version() {
        let now = ms("2026-12-01T07:00:00Z");
        let floor = ms("2021-12-01T07:00:00Z");
        let old = ms("2018-01-01T00:00:00Z");
        let recent = ms("2025-06-01T00:00:00Z");
        // 2.1: moved up to five years, and said so; absent means five years; recent kept
        let (s, note) = since_rule(Some(old), now, PdexVersion::V21);
        assert_eq!(s, Some(floor));
        assert!(note.unwrap().contains("2021-12-01T07:00:00"));
        assert_eq!(since_rule(None, now, PdexVersion::V21), (Some(floor), None));
        assert_eq!(
            since_rule(Some(recent), now, PdexVersion::V21),
            (Some(recent), None)
        );
        // 2.2: never rewritten, nothing cut off
        assert_eq!(
            since_rule(Some(old), now, PdexVersion::V22),
            (Some(old), None)
        );
        assert_eq!(since_rule(None, now, PdexVersion::V22), (None, None));
        assert_eq!(PdexVersion::parse("2.2").unwrap(), PdexVersion::V22);
        assert!(PdexVersion::parse("3").is_err());
        assert_eq!(PdexVersion::default(), PdexVersion::V21);
    }
}
