//! `$bulk-member-match` on the Bulk Data job engine (PDex §pdex-136/147/148/397: asynchronous):
//! the kick-off handler (validates, queues a job, answers 202 with the status URL), the
//! job's runner (evaluates every member with the single-member engine, stores the Matched
//! Group as the requester's, writes the Group NDJSON file, the optional PDex 2.1.0
//! Parameters envelope file (§pdex-138a) and the error file), and the adapter that puts the
//! single-member `$member-match` engine (`ops::member_match`: matcher and consent decision
//! flow) behind [`MemberEvaluator`].
//!
//! Choices:
//! - Callers: payer clients with the `BulkMemberMatch` scope (either spelling), plus the
//!   plan's admin clients and the operator; a caller without an organization cannot be the
//!   recipient of a consent, so its kick-off is refused (403) after the body is validated.
//! - The envelope file is written when `--pdex-version 2.1` (the default): 2.1.0 clients
//!   expect the Parameters response; under 2.2 the Group file alone (§pdex-138b).
//! - Members are evaluated like `$member-match` except that CoverageToLink stays optional
//!   (PDex bulk: MAY) and failed matches do not count towards the single-member brute-force
//!   throttle (HRex mm-7 protects the synchronous operation; a bulk request is bounded by
//!   `RequestLimits` and the per-client job limit).
//! - HRex mm-6 (local references to the member SHALL resolve to MemberPatient by id) is
//!   applied leniently: a local `Patient/…` reference in the bundle's Coverages or Consent
//!   is taken to mean its MemberPatient and re-pointed at its id before the single-member
//!   checks — the IG's own bulk example refers to `Patient/1` from a MemberPatient with id
//!   `patient-1` (ig-digest §15 item 13), and one MemberBundle describes one person, so the
//!   reference can mean no one else (the same reasoning `$member-match` applies to absolute
//!   Patient URLs). The stored consent carries the re-pointed reference.
//! - The Matched Group's id is the job id, so a job resumed after a crash writes the same
//!   Group again instead of a second one.

use super::bulk_member_match::{
    self, BulkMatchRequest, MatchedMember, MemberBundle, MemberEvaluator, MemberOutcome,
    RequestLimits,
};
use super::groups::{self, GroupSettings};
use super::member_match::{matcher, validate};
use crate::bulk::job::{Job, JobFile, StoredAccess, now_ms};
use crate::bulk::ndjson::PartWriter;
use crate::bulk::{Engine, JobRunner};
use crate::config::PdexVersion;
use crate::consent::policy::{ComplianceCheck, can_comply};
use crate::consent::stored;
use crate::fhir::FhirError;
use crate::identity::{ClientKind, OrgIdentifier};
use crate::store::Store;
use crate::web::SharedState;
use crate::web::kickoff::KickOff;
use async_trait::async_trait;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::sync::Arc;

/// The job kind in the jobs table.
pub const JOB_KIND: &str = "bulk-member-match";

/// Batches of members evaluated at once (each batch shares its lookups).
const CONCURRENCY: usize = 4;

const UMB_SYSTEM: &str = "http://hl7.org/fhir/us/davinci-hrex/CodeSystem/hrex-temp";

/// What the job stores: the request as received (validated at kick-off, kept as raw JSON
/// so that tens of megabytes are neither escaped nor unescaped) and the output choice of the
/// server at that time.
#[derive(Debug, Serialize, Deserialize)]
struct JobParams {
    body: Box<RawValue>,
    envelope: bool,
}

/// `POST [base]/Group/$bulk-member-match`.
pub async fn kickoff_handler(
    State(state): State<SharedState>,
    k: KickOff,
) -> Result<Response, FhirError> {
    let ctx = &k.ctx;
    super::BULK_MEMBER_MATCH.authorize(ctx)?;
    if !matches!(
        ctx.kind,
        ClientKind::Payer | ClientKind::Admin | ClientKind::Operator
    ) {
        return Err(FhirError::forbidden(
            "$bulk-member-match is the payer-to-payer operation; providers use $provider-member-match",
        ));
    }
    // §pdex-147: Prefer: respond-async SHALL be sent (same rule as the Bulk kick-offs)
    k.check_headers()?;
    let body = k.body_text()?;
    bulk_member_match::parse_request(&body, RequestLimits::default())?;
    if ctx.organization.is_none() {
        return Err(FhirError::forbidden(
            "this client has no organization identifier, so no member's consent can name it as recipient",
        ));
    }
    let params = JobParams {
        body: RawValue::from_string(body).map_err(FhirError::internal)?,
        envelope: state.exchange.pdex_version == PdexVersion::V21,
    };
    let params = serde_json::to_string(&params).map_err(FhirError::internal)?;
    // No settling delay: the match reads the member store as it is when the job runs, and
    // its transactionTime is only the match date of the Groups.
    super::export::start_job_with(&state, ctx, JOB_KIND, params, &k.request_url(), &k.base, 0).await
}

/// The single-member engine for one requesting payer (the `$member-match` matcher and
/// consent decision flow). Matched members' consents are stored as `$member-match` stores
/// them (HRex mm-13), but together: [`SingleMemberEngine::evaluate`] collects them and
/// [`SingleMemberEngine::store_consents`] writes them in one transaction, before the Matched
/// Group that names the members is saved (one commit per member made a 10,000-member request
/// wait on 10,000 commits).
pub struct SingleMemberEngine {
    pub store: Store,
    pub us: Vec<OrgIdentifier>,
    pub requester: OrgIdentifier,
    pub client_id: Option<String>,
    pub segmentation: bool,
    pub now_ms: i64,
    /// The job id: stored consents get the id `{job}-{member index}`, so a resumed job
    /// records each member's consent once.
    pub consent_key: String,
    pending: std::sync::Mutex<Vec<stored::ConsentRow>>,
}

impl SingleMemberEngine {
    pub fn new(
        store: Store,
        us: Vec<OrgIdentifier>,
        requester: OrgIdentifier,
        client_id: Option<String>,
        segmentation: bool,
        now_ms: i64,
        consent_key: String,
    ) -> SingleMemberEngine {
        SingleMemberEngine {
            store,
            us,
            requester,
            client_id,
            segmentation,
            now_ms,
            consent_key,
            pending: Default::default(),
        }
    }

    /// Stores the consents of the members matched so far; returns how many.
    pub async fn store_consents(&self) -> anyhow::Result<usize> {
        let rows = std::mem::take(&mut *self.pending.lock().expect("consent list"));
        stored::insert_all(&self.store, &rows).await?;
        Ok(rows.len())
    }
}

impl SingleMemberEngine {
    /// Evaluates `members`, each on its own, with their index and Patient lookups shared
    /// ([`matcher::find_members`]).
    async fn evaluate_all(&self, members: &[&MemberBundle]) -> anyhow::Result<Vec<MemberOutcome>> {
        let mut outcomes: Vec<Option<MemberOutcome>> = members.iter().map(|_| None).collect();
        let mut reqs: Vec<(usize, validate::MatchRequest)> = Vec::with_capacity(members.len());
        for (k, member) in members.iter().enumerate() {
            let mut params = member.as_member_match_parameters();
            repoint_member_references(&mut params);
            match validate::read_request(&params) {
                Err(why) => {
                    outcomes[k] = Some(MemberOutcome::NotEvaluated(format!(
                        "bad bundle format: {why}"
                    )))
                }
                Ok(req) if req.consent.is_none() => {
                    outcomes[k] = Some(MemberOutcome::NotEvaluated(
                        "Consent is missing (1..1)".into(),
                    ))
                }
                Ok(req) => reqs.push((k, req)),
            }
        }
        let refs: Vec<&validate::MatchRequest> = reqs.iter().map(|(_, r)| r).collect();
        let found = matcher::find_members(&self.store, &refs, &self.us).await?;
        for ((k, req), result) in reqs.iter().zip(found) {
            outcomes[*k] = Some(self.decide(members[*k], req, result).await?);
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.expect("every member decided"))
            .collect())
    }

    /// The consent decision for one member the matcher has looked up.
    async fn decide(
        &self,
        member: &MemberBundle,
        req: &validate::MatchRequest,
        found: matcher::MatchResult,
    ) -> anyhow::Result<MemberOutcome> {
        let Some((consent_json, terms)) = &req.consent else {
            return Ok(MemberOutcome::NotEvaluated(
                "Consent is missing (1..1)".into(),
            ));
        };
        let (patient_id, patient) = match found {
            matcher::MatchResult::One {
                patient_id,
                patient,
            } => (patient_id, patient),
            // none, or several candidates (by analogy with HRex mm-8/mm-10)
            matcher::MatchResult::None(_) | matcher::MatchResult::Several => {
                return Ok(MemberOutcome::NonMatched);
            }
        };
        let member_has_sensitive = !self.segmentation
            && self
                .store
                .member_lookup()
                .member_has_sensitive(&patient_id)
                .await?;
        let check = ComplianceCheck {
            us: &self.us,
            requester: &self.requester,
            now_ms: self.now_ms,
            segmentation: self.segmentation,
            member_has_sensitive,
        };
        if can_comply(terms, &check).is_err() {
            return Ok(MemberOutcome::ConsentConstrained);
        }
        let row = stored::NewConsent {
            patient_id: &patient_id,
            requester: &self.requester,
            client_id: self.client_id.as_deref(),
            terms,
            consent_json,
            coverage_to_link: req.coverage_to_link.as_deref(),
            now_ms: self.now_ms,
            // one consent per job and member, however often the job is resumed
            id: Some(format!("{}-{}", self.consent_key, member.index)),
        }
        .row();
        let consent_id = row.id.clone();
        self.pending.lock().expect("consent list").push(row);
        Ok(MemberOutcome::Matched(MatchedMember {
            umb: umb_of(&patient),
            patient_id,
            consent_id: Some(consent_id),
            consent_end_ms: Some(terms.period_end),
        }))
    }
}

#[async_trait]
impl MemberEvaluator for SingleMemberEngine {
    async fn evaluate(&self, member: &MemberBundle) -> anyhow::Result<MemberOutcome> {
        let mut outcomes = self.evaluate_all(&[member]).await?;
        Ok(outcomes.pop().expect("one member, one outcome"))
    }

    async fn evaluate_batch(
        &self,
        members: &[&MemberBundle],
    ) -> Vec<anyhow::Result<MemberOutcome>> {
        match self.evaluate_all(members).await {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            // a failure on our side (the store) leaves every member of the batch unevaluated
            Err(e) => {
                let why = format!("{e:#}");
                members
                    .iter()
                    .map(|_| Err(anyhow::anyhow!("{why}")))
                    .collect()
            }
        }
    }
}

/// Re-points local `Patient/…` references of the Coverages and the Consent at MemberPatient
/// (see the module comment on mm-6).
fn repoint_member_references(params: &mut Value) {
    let Some(parts) = params["parameter"].as_array_mut() else {
        return;
    };
    let Some(id) = parts
        .iter()
        .find(|p| p["name"] == "MemberPatient")
        .and_then(|p| p["resource"]["id"].as_str())
        .map(str::to_owned)
    else {
        return;
    };
    let local = format!("Patient/{id}");
    let repoint = |r: &mut Value| {
        if r["reference"]
            .as_str()
            .is_some_and(|s| s.starts_with("Patient/"))
        {
            r["reference"] = Value::String(local.clone());
        }
    };
    for p in parts.iter_mut() {
        let name = p["name"].as_str().unwrap_or_default().to_owned();
        let r = &mut p["resource"];
        match name.as_str() {
            "CoverageToMatch" | "CoverageToLink" => repoint(&mut r["beneficiary"]),
            "Consent" => {
                repoint(&mut r["patient"]);
                for performer in r["performer"].as_array_mut().into_iter().flatten() {
                    repoint(performer);
                }
            }
            _ => {}
        }
    }
}

/// The member's unique member identifier (`hrex-temp#UMB`), as stored on their Patient.
fn umb_of(patient: &Value) -> Option<Value> {
    patient["identifier"]
        .as_array()?
        .iter()
        .find(|i| {
            i["value"].is_string()
                && i["type"]["coding"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["system"] == UMB_SYSTEM && c["code"] == "UMB")
                })
        })
        .cloned()
}

/// Runs `$bulk-member-match` jobs.
pub struct BulkMatchRunner {
    pub store: Store,
    pub us: Vec<OrgIdentifier>,
    pub segmentation: bool,
}

impl BulkMatchRunner {
    /// Registers the runner with the engine (at server start).
    pub fn register(engine: &Engine, store: Store, us: Vec<OrgIdentifier>, segmentation: bool) {
        engine.register_job_runner(
            JOB_KIND,
            Arc::new(BulkMatchRunner {
                store,
                us,
                segmentation,
            }),
        );
    }
}

#[async_trait]
impl JobRunner for BulkMatchRunner {
    async fn run(&self, engine: &Engine, job: &Job, worker: &str) -> anyhow::Result<bool> {
        let params: JobParams = serde_json::from_str(&engine.jobs.payload(&job.id).await?.params)?;
        let access: StoredAccess = serde_json::from_str(&job.access)?;
        let ctx = access.rebuild();
        let requester = ctx.organization.clone().ok_or_else(|| {
            anyhow::anyhow!("bulk member-match job without a requesting organization")
        })?;
        let req: BulkMatchRequest =
            bulk_member_match::parse_request(params.body.get(), RequestLimits::default()).map_err(
                |e| anyhow::anyhow!("stored request no longer parses: {}", e.diagnostics),
            )?;
        let lease_ms = engine.config.lease_seconds as i64 * 1000;
        if !engine
            .jobs
            .heartbeat(
                &job.id,
                worker,
                lease_ms,
                &format!("matching {} members", req.members.len()),
            )
            .await?
        {
            return Ok(false);
        }
        let evaluator = SingleMemberEngine::new(
            self.store.clone(),
            self.us.clone(),
            requester.clone(),
            ctx.client_id.clone(),
            self.segmentation,
            job.transaction_time,
            job.id.clone(),
        );
        let settings = GroupSettings {
            profiles: &crate::ops::groups::PAYER_TO_PAYER,
            group_id: &job.id,
            requester: Some(&requester),
            us: self.us.first(),
            us_display: None,
            match_time_ms: job.transaction_time,
        };
        let run = {
            // keep the lease while the members are evaluated
            let beat = async {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(
                        (lease_ms / 3).max(100) as u64
                    ))
                    .await;
                    match engine
                        .jobs
                        .heartbeat(&job.id, worker, lease_ms, "matching members")
                        .await
                    {
                        Ok(true) => {}
                        _ => return,
                    }
                }
            };
            tokio::select! {
                run = bulk_member_match::run_match(&req, &evaluator, &settings, CONCURRENCY) => Some(run),
                () = beat => None,
            }
        };
        let Some(run) = run else { return Ok(false) };
        evaluator.store_consents().await?;
        groups::save_owned_group(&self.store, &ctx, &run.groups.matched).await?;
        tracing::info!(target: "pdex::audit", event = "bulk-member-match", job = %job.id,
            client = ctx.client_id.as_deref().unwrap_or("operator"),
            matched = run.counts.0, non_matched = run.counts.1, consent_constrained = run.counts.2,
            "bulk member match evaluated");

        let mut seq = 0;
        let groups_lines: Vec<String> = run.groups.groups().iter().map(|g| g.to_string()).collect();
        let mut files = vec![("output", "Group", groups_lines)];
        if params.envelope {
            files.push((
                "output",
                "Parameters",
                vec![run.groups.envelope().to_string()],
            ));
        }
        if !run.errors.is_empty() {
            files.push((
                "error",
                "OperationOutcome",
                run.errors.iter().map(Value::to_string).collect(),
            ));
        }
        for (section, rtype, lines) in files {
            let name = if section == "error" {
                format!("{seq:05}-errors.ndjson")
            } else {
                format!("{seq:05}-{rtype}.ndjson")
            };
            let path = engine.spool_dir(&job.id).join(&name);
            let mut w = PartWriter::create(&path).await?;
            for line in &lines {
                w.write_line(line).await?;
            }
            let (spool, bytes, count) = w.finish().await?;
            engine.storage.commit(&job.id, &name, &spool).await?;
            let file = JobFile {
                seq,
                section: section.into(),
                rtype: rtype.into(),
                name,
                count: count as i64,
                bytes: bytes as i64,
            };
            seq += 1;
            let checkpoint = serde_json::json!({"files": seq}).to_string();
            if !engine
                .jobs
                .checkpoint(
                    &job.id,
                    worker,
                    lease_ms,
                    Some(&file),
                    &checkpoint,
                    "writing files",
                )
                .await?
            {
                return Ok(false);
            }
        }
        let expires = now_ms() + engine.config.expiry_seconds as i64 * 1000;
        engine.jobs.complete(&job.id, worker, expires).await
    }
}
