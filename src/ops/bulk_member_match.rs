//! `POST [base]/Group/$bulk-member-match` (PDex payer-to-payer bulk, `BulkMemberMatch`):
//! reading the multi-member request (`pdex-parameters-multi-member-match-bundle-in`) into a
//! typed [`BulkMatchRequest`], and the per-member result ([`MemberOutcome`]) the matching
//! engine produces for each `MemberBundle`. The result Groups are built by `ops::groups`.
//!
//! What fails the whole request and what fails one member (PDex §pdex-154: "a failure on one
//! member SHALL NOT fail the request nor re-bucket others"):
//! - the request itself (400): a body that is not JSON, or not a `Parameters` resource;
//! - the request profile (422, the decision flow's "Bad bundle format"): `parameter` missing
//!   or not a list, no `MemberBundle` at all (1..*), more MemberBundles than we accept;
//! - one `MemberBundle` (that member only): without a usable `MemberPatient` it cannot be
//!   echoed in any Group, so it is [rejected](RejectedBundle) and only reported in the job's
//!   error file; with a Patient but a missing or malformed `CoverageToMatch`, `Consent` or
//!   `CoverageToLink` it is not evaluated at all and goes to NonMatched (evaluating it would
//!   tell the requester whether the person is our member), its defect reported in the error
//!   file.
//!
//! Depends on `fhir`.

use super::groups::{self, GroupSettings, ResultGroups};
use crate::fhir::{FhirError, IssueType};
use async_trait::async_trait;
use axum::http::StatusCode;
use futures::StreamExt;
use serde_json::{Value, json};

/// The request profile.
pub const REQUEST_PROFILE: &str = "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/pdex-parameters-multi-member-match-bundle-in";

/// One `MemberBundle` that passed the structural checks far enough to be answered in a Group.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberBundle {
    /// Position among the request's `MemberBundle` parameters (0-based).
    pub index: usize,
    /// Position in `Parameters.parameter` (for error expressions).
    pub parameter_index: usize,
    /// `MemberPatient` as submitted (hrex-patient-demographics).
    pub patient: Value,
    /// `CoverageToMatch` (1..1).
    pub coverage_to_match: Option<Value>,
    /// `CoverageToLink` (0..1).
    pub coverage_to_link: Option<Value>,
    /// `Consent` (1..1 in PDex bulk, unlike HRex's 0..1: ig-digest §15 item 2).
    pub consent: Option<Value>,
    /// What makes this bundle unfit for evaluation (empty: evaluate it).
    pub defects: Vec<String>,
}

impl MemberBundle {
    /// Can the member be evaluated (all required parts present and well-formed)?
    pub fn is_complete(&self) -> bool {
        self.defects.is_empty()
    }

    /// The bundle as a single-member `$member-match` request (HRex
    /// `hrex-parameters-member-match-in`): the same parts under the same names, which is how
    /// each member goes through the single-member engine.
    pub fn as_member_match_parameters(&self) -> Value {
        let mut parameter = vec![json!({"name": "MemberPatient", "resource": self.patient})];
        if let Some(c) = &self.coverage_to_match {
            parameter.push(json!({"name": "CoverageToMatch", "resource": c}));
        }
        if let Some(c) = &self.coverage_to_link {
            parameter.push(json!({"name": "CoverageToLink", "resource": c}));
        }
        if let Some(c) = &self.consent {
            parameter.push(json!({"name": "Consent", "resource": c}));
        }
        json!({"resourceType": "Parameters", "parameter": parameter})
    }
}

/// A `MemberBundle` we cannot put in any Group (no usable `MemberPatient`).
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedBundle {
    pub index: usize,
    pub parameter_index: usize,
    pub reason: String,
}

/// A validated `$bulk-member-match` request.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkMatchRequest {
    pub members: Vec<MemberBundle>,
    pub rejected: Vec<RejectedBundle>,
}

impl BulkMatchRequest {
    /// One OperationOutcome per rejected or defective `MemberBundle`, for the job's error
    /// file (Bulk Data `error[]`). They name the bundle by position only, never the person.
    pub fn defect_outcomes(&self) -> Vec<Value> {
        let rejected = self.rejected.iter().map(|r| {
            bundle_outcome(
                r.parameter_index,
                r.index,
                &format!("{}; this MemberBundle is in no result Group", r.reason),
            )
        });
        let defective = self.members.iter().filter(|m| !m.is_complete()).map(|m| {
            bundle_outcome(
                m.parameter_index,
                m.index,
                &format!(
                    "{}; the member was not evaluated and is listed as NonMatched",
                    m.defects.join("; ")
                ),
            )
        });
        rejected.chain(defective).collect()
    }
}

fn bundle_outcome(parameter_index: usize, index: usize, text: &str) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": "error",
            "code": "structure",
            "diagnostics": format!("MemberBundle {} (Parameters.parameter[{parameter_index}]): {text}", index + 1),
            "expression": [format!("Parameters.parameter[{parameter_index}]")],
        }]
    })
}

/// What the matching and consent engine decided for one evaluated member (PDex §pdex-154,
/// the three buckets of ig-digest §3.3).
#[derive(Debug, Clone, PartialEq)]
pub enum MemberOutcome {
    /// One member matched and the consent can be complied with.
    Matched(MatchedMember),
    /// No unique match (none, several candidates — by analogy with HRex mm-8/mm-10 — or a
    /// bundle that could not be evaluated).
    NonMatched,
    /// Matched, but the consent cannot be complied with (expired, wrong parties, a
    /// `#regular` policy we cannot segment for…). Why is never said in the Group (§pdex-154c).
    ConsentConstrained,
    /// The engine refused to evaluate the bundle (its resources break the HRex profiles, e.g.
    /// a Consent without a readable policy or period): listed as NonMatched, the reason
    /// reported in the error file. Decided before any lookup, so it says nothing about
    /// whether the person is our member.
    NotEvaluated(String),
}

/// A matched member.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchedMember {
    /// Our Patient id.
    pub patient_id: String,
    /// The member's unique member identifier (HRex `hrex-temp#UMB` Identifier), when on file.
    pub umb: Option<Value>,
    /// The stored consent's id (`member_consents`).
    pub consent_id: Option<String>,
    /// The end of the consent's period (epoch ms): the member's validity in the Group.
    pub consent_end_ms: Option<i64>,
}

/// The single-member matching and consent engine, as the bulk operation uses it: one
/// evaluated `MemberBundle` (complete: [`MemberBundle::is_complete`]) in, its outcome out.
/// An implementation that stores consents does so for Matched members (as `$member-match`
/// does, HRex mm-13).
#[async_trait]
pub trait MemberEvaluator: Send + Sync {
    async fn evaluate(&self, member: &MemberBundle) -> anyhow::Result<MemberOutcome>;

    /// Evaluates several members, each on its own: the result at position `k` is that of
    /// `members[k]` alone. By default one after the other; an engine that can share its
    /// lookups across members does so here.
    async fn evaluate_batch(
        &self,
        members: &[&MemberBundle],
    ) -> Vec<anyhow::Result<MemberOutcome>> {
        let mut out = Vec::with_capacity(members.len());
        for m in members {
            out.push(self.evaluate(m).await);
        }
        out
    }
}

/// Members handed to [`MemberEvaluator::evaluate_batch`] at once.
const MEMBERS_PER_BATCH: usize = 250;

/// The result of a bulk match: the Groups and the error-file OperationOutcomes.
#[derive(Debug, Clone)]
pub struct MatchRun {
    pub groups: ResultGroups,
    pub errors: Vec<Value>,
    /// Members per bucket: matched, non-matched, consent-constrained.
    pub counts: (usize, usize, usize),
}

/// Evaluates every member of `req` independently (in batches, at most `concurrency` batches
/// at once, results kept in request order) and builds the result Groups. A bundle that is not complete is not
/// evaluated (NonMatched); a member whose evaluation fails on our side is NonMatched too and
/// reported in the error file — it never fails the request or moves another member
/// (§pdex-154).
pub async fn run_match(
    req: &BulkMatchRequest,
    evaluator: &dyn MemberEvaluator,
    settings: &GroupSettings<'_>,
    concurrency: usize,
) -> MatchRun {
    let mut errors = req.defect_outcomes();
    let complete: Vec<usize> = (0..req.members.len())
        .filter(|&i| req.members[i].is_complete())
        .collect();
    let chunks: Vec<Vec<usize>> = complete
        .chunks(MEMBERS_PER_BATCH)
        .map(<[usize]>::to_vec)
        .collect();
    let batches: Vec<(Vec<usize>, Vec<anyhow::Result<MemberOutcome>>)> =
        futures::stream::iter(chunks)
            .map(|chunk| async move {
                let members: Vec<&MemberBundle> = chunk.iter().map(|&i| &req.members[i]).collect();
                (chunk, evaluator.evaluate_batch(&members).await)
            })
            .buffered(concurrency.max(1))
            .collect()
            .await;
    let mut evaluated: Vec<anyhow::Result<MemberOutcome>> = (0..req.members.len())
        .map(|_| Ok(MemberOutcome::NonMatched))
        .collect();
    for (chunk, outcomes) in batches {
        for (&i, outcome) in chunk.iter().zip(outcomes) {
            evaluated[i] = outcome;
        }
    }
    let mut results: Vec<(&MemberBundle, MemberOutcome)> = Vec::with_capacity(evaluated.len());
    let mut counts = (0, 0, 0);
    for (m, outcome) in req.members.iter().zip(evaluated) {
        let outcome = outcome.unwrap_or_else(|e| {
            tracing::error!(error = %format!("{e:#}"), member_bundle = m.index + 1,
                "bulk member-match: evaluating one member failed; listed as NonMatched");
            errors.push(bundle_outcome(
                m.parameter_index,
                m.index,
                "the server could not evaluate this member; it is listed as NonMatched — retry it",
            ));
            MemberOutcome::NonMatched
        });
        if let MemberOutcome::NotEvaluated(why) = &outcome {
            errors.push(bundle_outcome(
                m.parameter_index,
                m.index,
                &format!("{why}; the member was not evaluated and is listed as NonMatched"),
            ));
        }
        match outcome {
            MemberOutcome::Matched(_) => counts.0 += 1,
            MemberOutcome::NonMatched | MemberOutcome::NotEvaluated(_) => counts.1 += 1,
            MemberOutcome::ConsentConstrained => counts.2 += 1,
        }
        results.push((m, outcome));
    }
    MatchRun {
        groups: groups::build(&results, settings),
        errors,
        counts,
    }
}

/// Limits on a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Most `MemberBundle`s in one request.
    pub max_members: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_members: 50_000,
        }
    }
}

/// 422 "bad bundle format" (PDex decision flow) with `text`.
fn bad_format(text: impl std::fmt::Display) -> FhirError {
    FhirError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        IssueType::Structure,
        format!("bad bundle format: {text} ({REQUEST_PROFILE})"),
    )
}

/// Reads a `$bulk-member-match` body. `Err` is a whole-request failure (see the module
/// comment); per-member defects are inside the result.
pub fn parse_request(body: &str, limits: RequestLimits) -> Result<BulkMatchRequest, FhirError> {
    // Parsed once and taken apart by move: a 10,000-member request is tens of megabytes.
    let mut value: Value = serde_json::from_str(body)
        .map_err(|e| FhirError::bad_request(format!("the body is not valid JSON: {e}")))?;
    if value["resourceType"] != "Parameters" {
        return Err(FhirError::bad_request(
            "the body must be a Parameters resource (pdex-parameters-multi-member-match-bundle-in)",
        ));
    }
    let Some(parameters) = value["parameter"].as_array_mut() else {
        return Err(bad_format("Parameters.parameter is missing or not a list"));
    };
    let bundles: Vec<(usize, &mut Value)> = parameters
        .iter_mut()
        .enumerate()
        .filter(|(_, p)| p["name"] == "MemberBundle")
        .collect();
    if bundles.is_empty() {
        return Err(bad_format("no MemberBundle parameter (1..* required)"));
    }
    if bundles.len() > limits.max_members {
        return Err(FhirError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            IssueType::TooCostly,
            format!(
                "{} MemberBundles in one request; at most {} are accepted — split the request",
                bundles.len(),
                limits.max_members
            ),
        ));
    }
    let mut out = BulkMatchRequest {
        members: Vec::with_capacity(bundles.len()),
        rejected: Vec::new(),
    };
    for (index, (parameter_index, p)) in bundles.into_iter().enumerate() {
        match read_bundle(p) {
            Ok((patient, coverage_to_match, coverage_to_link, consent, defects)) => {
                out.members.push(MemberBundle {
                    index,
                    parameter_index,
                    patient,
                    coverage_to_match,
                    coverage_to_link,
                    consent,
                    defects,
                })
            }
            Err(reason) => out.rejected.push(RejectedBundle {
                index,
                parameter_index,
                reason,
            }),
        }
    }
    Ok(out)
}

type BundleParts = (
    Value,
    Option<Value>,
    Option<Value>,
    Option<Value>,
    Vec<String>,
);

/// One `MemberBundle`'s parts, moved out of it (open slicing by name: parts with other names
/// are ignored).
fn read_bundle(p: &mut Value) -> Result<BundleParts, String> {
    let Some(parts) = p["part"].as_array_mut() else {
        return Err("MemberBundle has no part list".into());
    };
    let mut defects = Vec::new();
    let mut take = |name: &str, rtype: &str, required: bool| -> Option<Value> {
        let mut found: Vec<&mut Value> = parts.iter_mut().filter(|q| q["name"] == name).collect();
        let n = found.len();
        match found.as_mut_slice() {
            [] => {
                if required {
                    defects.push(format!("{name} is missing (1..1)"));
                }
                None
            }
            [one] => match one.get_mut("resource") {
                Some(r) if r["resourceType"] == rtype && r.is_object() => Some(r.take()),
                Some(_) => {
                    defects.push(format!("{name} must hold a {rtype} resource"));
                    None
                }
                None => {
                    defects.push(format!("{name} has no resource"));
                    None
                }
            },
            _ => {
                defects.push(format!("{name} appears {n} times (at most once)"));
                None
            }
        }
    };
    let patient = take("MemberPatient", "Patient", true);
    let coverage_to_match = take("CoverageToMatch", "Coverage", true);
    let coverage_to_link = take("CoverageToLink", "Coverage", false);
    let consent = take("Consent", "Consent", true);
    let Some(patient) = patient else {
        // Without the Patient there is nothing to echo in a Group (§pdex-150).
        return Err(defects.join("; "));
    };
    if let Some(id) = patient.get("id")
        && !id.as_str().is_some_and(crate::fhir::is_valid_id)
    {
        return Err("MemberPatient.id is not a valid FHIR id".into());
    }
    Ok((
        patient,
        coverage_to_match,
        coverage_to_link,
        consent,
        defects,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Matches by the submitted Patient's id: `m-*` matched, `c-*` consent-constrained,
    /// `boom` fails, anything else not matched.
    struct ById;

    #[async_trait]
    impl MemberEvaluator for ById {
        async fn evaluate(&self, member: &MemberBundle) -> anyhow::Result<MemberOutcome> {
            let id = member.patient["id"].as_str().unwrap_or_default();
            if id == "boom" {
                anyhow::bail!("database went away");
            }
            if id == "bad" {
                return Ok(MemberOutcome::NotEvaluated(
                    "Consent.status must be 'active'".into(),
                ));
            }
            Ok(if let Some(rest) = id.strip_prefix("m-") {
                MemberOutcome::Matched(MatchedMember {
                    patient_id: format!("our-{rest}"),
                    umb: None,
                    consent_id: None,
                    consent_end_ms: None,
                })
            } else if id.starts_with("c-") {
                MemberOutcome::ConsentConstrained
            } else {
                MemberOutcome::NonMatched
            })
        }
    }

    #[tokio::test]
    async fn each_member_is_bucketed_on_its_own() {
        let full = |id: &str| bundle(json!([patient(id), coverage("CoverageToMatch"), consent()]));
        let req = parse(json!({"resourceType": "Parameters", "parameter": [
            full("m-1"), full("x-1"), full("boom"), full("c-1"),
            // a matched id but an incomplete bundle: never evaluated
            bundle(json!([patient("m-2"), coverage("CoverageToMatch")])),
            full("m-3"),
            full("bad"),
        ]}))
        .unwrap();
        let settings = GroupSettings {
            profiles: &crate::ops::groups::PAYER_TO_PAYER,
            group_id: "g",
            requester: None,
            us: None,
            us_display: None,
            match_time_ms: 0,
        };
        let run = run_match(&req, &ById, &settings, 3).await;
        assert_eq!(run.counts, (2, 4, 1));
        let refs = |g: &Value| -> Vec<String> {
            g["member"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .map(|m| m["entity"]["reference"].as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(
            refs(&run.groups.matched),
            ["Patient/our-1", "Patient/our-3"]
        );
        assert_eq!(
            refs(run.groups.non_matched.as_ref().unwrap()),
            ["#x-1", "#boom", "#m-2", "#bad"]
        );
        assert_eq!(
            refs(run.groups.consent_constrained.as_ref().unwrap()),
            ["#c-1"]
        );
        // the defect and the server-side failure are in the error file, by position
        assert_eq!(run.errors.len(), 3);
        assert!(
            run.errors[2]["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains("Consent.status")
        );
        assert!(
            run.errors[0]["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains("MemberBundle 5")
        );
        assert!(
            run.errors[1]["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains("MemberBundle 3")
        );
    }

    const EXAMPLE: &str =
        include_str!("../../tests/fixtures/pdex/Parameters-payer-multi-member-match-in.json");

    fn bundle(parts: Value) -> Value {
        json!({"name": "MemberBundle", "part": parts})
    }

    fn patient(id: &str) -> Value {
        json!({"name": "MemberPatient", "resource": {"resourceType": "Patient", "id": id, "name": [{"family": "X"}], "birthDate": "1970-01-01"}})
    }
    fn coverage(name: &str) -> Value {
        json!({"name": name, "resource": {"resourceType": "Coverage", "id": "c", "status": "active"}})
    }
    fn consent() -> Value {
        json!({"name": "Consent", "resource": {"resourceType": "Consent", "id": "k", "status": "active"}})
    }

    fn parse(v: Value) -> Result<BulkMatchRequest, FhirError> {
        parse_request(&v.to_string(), RequestLimits::default())
    }

    #[test]
    fn the_ig_example_request_is_one_complete_member() {
        let req = parse_request(EXAMPLE, RequestLimits::default()).unwrap();
        assert!(req.rejected.is_empty());
        assert_eq!(req.members.len(), 1);
        let m = &req.members[0];
        assert!(m.is_complete(), "{:?}", m.defects);
        assert_eq!(m.patient["id"], "patient-1");
        assert_eq!(m.coverage_to_match.as_ref().unwrap()["id"], "coverage-1");
        assert_eq!(
            m.coverage_to_link.as_ref().unwrap()["id"],
            "coverage-link-1"
        );
        assert_eq!(m.consent.as_ref().unwrap()["id"], "consent-1");
        let single = m.as_member_match_parameters();
        let names: Vec<&str> = single["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "MemberPatient",
                "CoverageToMatch",
                "CoverageToLink",
                "Consent"
            ]
        );
        assert_eq!(single["parameter"][0]["resource"], m.patient);
    }

    #[test]
    fn whole_request_failures_are_4xx_and_say_what() {
        let e = parse_request("{not json", RequestLimits::default()).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse(json!({"resourceType": "Bundle"})).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse(json!({"resourceType": "Parameters"})).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.diagnostics.contains("parameter"), "{}", e.diagnostics);
        let e = parse(json!({"resourceType": "Parameters", "parameter": [{"name": "Other", "valueString": "x"}]}))
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            e.diagnostics.contains("no MemberBundle"),
            "{}",
            e.diagnostics
        );
        let three = json!({"resourceType": "Parameters", "parameter": [
            bundle(json!([patient("a"), coverage("CoverageToMatch"), consent()])),
            bundle(json!([patient("b"), coverage("CoverageToMatch"), consent()])),
            bundle(json!([patient("c"), coverage("CoverageToMatch"), consent()])),
        ]});
        let e = parse_request(&three.to_string(), RequestLimits { max_members: 2 }).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(parse(three).unwrap().members.len(), 3);
    }

    #[test]
    fn a_defective_member_bundle_fails_only_itself() {
        let req = parse(json!({"resourceType": "Parameters", "parameter": [
            {"name": "SomethingElse", "valueString": "ignored: the slicing is open"},
            bundle(json!([patient("ok"), coverage("CoverageToMatch"), consent(), coverage("CoverageToLink")])),
            bundle(json!([coverage("CoverageToMatch"), consent()])),
            bundle(json!([patient("no-consent"), coverage("CoverageToMatch")])),
            bundle(json!([patient("two-coverages"), coverage("CoverageToMatch"), coverage("CoverageToMatch"), consent()])),
            bundle(json!([patient("wrong-type"), {"name": "CoverageToMatch", "resource": {"resourceType": "Patient"}}, consent()])),
            {"name": "MemberBundle"},
            bundle(json!([{"name": "MemberPatient", "resource": {"resourceType": "Patient", "id": "bad id!"}}, coverage("CoverageToMatch"), consent()])),
            bundle(json!([patient("ok-2"), coverage("CoverageToMatch"), consent()])),
        ]}))
        .unwrap();
        let ids: Vec<(&str, bool)> = req
            .members
            .iter()
            .map(|m| (m.patient["id"].as_str().unwrap(), m.is_complete()))
            .collect();
        assert_eq!(
            ids,
            [
                ("ok", true),
                ("no-consent", false),
                ("two-coverages", false),
                ("wrong-type", false),
                ("ok-2", true)
            ]
        );
        assert_eq!(req.members[1].defects, ["Consent is missing (1..1)"]);
        assert_eq!(
            req.members[2].defects,
            ["CoverageToMatch appears 2 times (at most once)"]
        );
        assert_eq!(
            req.members[3].defects,
            ["CoverageToMatch must hold a Coverage resource"]
        );
        let rejected: Vec<(usize, usize)> = req
            .rejected
            .iter()
            .map(|r| (r.index, r.parameter_index))
            .collect();
        assert_eq!(rejected, [(1, 2), (5, 6), (6, 7)]);
        assert!(req.rejected[0].reason.contains("MemberPatient is missing"));
        let outcomes = req.defect_outcomes();
        assert_eq!(outcomes.len(), 6);
        assert!(
            outcomes
                .iter()
                .all(|o| o["resourceType"] == "OperationOutcome")
        );
        assert_eq!(
            outcomes[0]["issue"][0]["expression"][0],
            "Parameters.parameter[2]"
        );
        // no submitted demographics in the error file
        let text = serde_json::to_string(&outcomes).unwrap();
        assert!(
            !text.contains("no-consent") && !text.contains("two-coverages"),
            "{text}"
        );
    }
}
