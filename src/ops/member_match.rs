//! `POST [base]/Patient/$member-match` (HRex `member-match`, used by PDex payer-to-payer
//! single-member exchange, sequence steps 12–15 and the single-member consent decision flow):
//!
//! 1. is the request valid (`validate`)? no → 422 "bad bundle format";
//! 2. is the member matched (`matcher`)? none or several → 422 (mm-9, mm-10);
//! 3. can we comply with the consent (`consent::policy`)? no → 422 "consent constraint" with no
//!    member identifier anywhere in the response (§pdex-203/207, mm-11);
//! 4. capture the consent (`consent::stored`, mm-13) with the CoverageToLink (mm-4) and
//!    return the member (§pdex-198/199).
//!
//! Repeated failures are throttled (`throttle`, mm-7). Every outcome is written to the audit
//! log (target `pdex::audit`) with the client and, on success, the member's Patient id only.

pub mod matcher;
pub mod validate;

use crate::config::MemberMatchProfile;
use crate::consent::policy::{ComplianceCheck, can_comply};
use crate::consent::stored;
use crate::fhir::{FhirError, IssueType};
use crate::identity::{AccessContext, ClientKind};
use crate::web::http::{body_text, fhir_json};
use crate::web::{Access, AppState, SharedState};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use matcher::MatchResult;
use serde_json::{Value, json};

const UMB_SYSTEM: &str = "http://hl7.org/fhir/us/davinci-hrex/CodeSystem/hrex-temp";

/// Why a `$member-match` did not return a member.
#[derive(Debug)]
pub enum Refusal {
    /// Any 4xx that is not a match outcome (scope, body, throttling).
    Http(FhirError, Option<std::time::Duration>),
    /// 422 with an OperationOutcome; the text never names the member.
    Unprocessable(String),
}

impl From<FhirError> for Refusal {
    fn from(e: FhirError) -> Self {
        Refusal::Http(e, None)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Http(e, retry) => {
                let mut resp = e.into_response();
                if let Some(wait) = retry
                    && let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string())
                {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
                resp
            }
            Refusal::Unprocessable(text) => FhirError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                IssueType::Processing,
                text,
            )
            .into_response(),
        }
    }
}

/// The handler.
pub async fn member_match(
    State(state): State<SharedState>,
    Access(ctx): Access,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let text = body_text(&headers, &body)?;
    let out = evaluate(&state, &ctx, &text).await?;
    Ok(fhir_json(StatusCode::OK, out.to_string()))
}

/// Runs `$member-match` for `ctx` on the request text: the response Parameters, or why not.
pub async fn evaluate(state: &AppState, ctx: &AccessContext, text: &str) -> Result<Value, Refusal> {
    super::MEMBER_MATCH.authorize(ctx)?;
    if !matches!(
        ctx.kind,
        ClientKind::Payer | ClientKind::Provider | ClientKind::Admin | ClientKind::Operator
    ) {
        return Err(FhirError::forbidden("$member-match is for payer and provider clients").into());
    }
    let exchange = &state.exchange;
    let params: Value = serde_json::from_str(text)
        .map_err(|e| FhirError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let client = ctx.client_id.as_deref().unwrap_or("operator");
    let req = match validate::read_request(&params) {
        Ok(r) => r,
        Err(why) => {
            audit(client, "bad-format", None);
            return Err(Refusal::Unprocessable(format!("bad bundle format: {why}")));
        }
    };
    // A payer SHALL send the coverage we link the member to (HRex CoverageToLink).
    if ctx.kind == ClientKind::Payer && req.coverage_to_link.is_none() {
        audit(client, "bad-format", None);
        return Err(Refusal::Unprocessable(
            "bad bundle format: a payer's request SHALL include CoverageToLink".into(),
        ));
    }
    let keys = crate::auth::throttle::AttemptKeys::new(client, &req.demographics.key());
    if let Some(wait) = state
        .match_throttle
        .check(&keys)
        .await
        .map_err(FhirError::internal)?
    {
        tracing::warn!(target: "pdex::audit", event = "member-match", outcome = "throttled",
            client, demographics = %keys.demographics_tag, "repeated failed matches: throttled (HRex mm-7)");
        return Err(Refusal::Http(
            FhirError::new(
                StatusCode::TOO_MANY_REQUESTS,
                IssueType::Throttled,
                "too many failed $member-match attempts; retry later",
            ),
            Some(wait),
        ));
    }
    let fail = async |outcome: &'static str, text: String| {
        if let Err(e) = state.match_throttle.record_failure(&keys).await {
            tracing::error!(target: "pdex::audit", error = %e, "cannot record a failed $member-match");
        }
        audit(client, outcome, None);
        Refusal::Unprocessable(text)
    };
    let requester = ctx.organization.clone();
    if req.consent.is_none() && exchange.consent_required && ctx.kind == ClientKind::Payer {
        return Err(fail(
            "consent-required",
            "consent required: a payer's $member-match must include the member's Consent (PDex payer-to-payer)".into(),
        ).await);
    }
    if req.consent.is_some() && requester.is_none() {
        return Err(FhirError::forbidden(
            "the client has no organization, so the consent's recipient cannot be checked",
        )
        .into());
    }
    let us = state.payer_identifiers();
    let found = matcher::find_member(&state.store, &req, &us)
        .await
        .map_err(FhirError::internal)?;
    let (patient_id, patient) = match found {
        MatchResult::One {
            patient_id,
            patient,
        } => (patient_id, patient),
        MatchResult::None(why) => return Err(fail("no-match", why.to_owned()).await),
        MatchResult::Several => {
            return Err(fail(
                "multiple-matches",
                "multiple matches: more than one member fits MemberPatient and CoverageToMatch; send the member id from the card".into(),
            ).await);
        }
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut consent_id = None;
    if let (Some((consent_json, terms)), Some(requester)) = (&req.consent, &requester) {
        let segmentation = state.store.sensitivity.segmentation();
        let member_has_sensitive = !segmentation
            && state
                .store
                .member_lookup()
                .member_has_sensitive(&patient_id)
                .await
                .map_err(FhirError::internal)?;
        let check = ComplianceCheck {
            us: &us,
            requester,
            now_ms,
            segmentation,
            member_has_sensitive,
        };
        if let Err(constraint) = can_comply(terms, &check) {
            return Err(fail("consent-constraint", constraint.describe().to_owned()).await);
        }
        let id = stored::insert(
            &state.store,
            stored::NewConsent {
                patient_id: &patient_id,
                requester,
                client_id: ctx.client_id.as_deref(),
                terms,
                consent_json,
                coverage_to_link: req.coverage_to_link.as_deref(),
                now_ms,
                id: None,
            },
        )
        .await
        .map_err(FhirError::internal)?;
        consent_id = Some(id);
    }
    tracing::info!(target: "pdex::audit", event = "member-match", outcome = "matched", client,
        patient = %patient_id, consent = consent_id.as_deref().unwrap_or("-"), "member matched");
    Ok(response(
        &patient_id,
        &patient,
        &state.base_url,
        exchange.member_match_profile,
    ))
}

fn audit(client: &str, outcome: &str, patient: Option<&str>) {
    tracing::info!(target: "pdex::audit", event = "member-match", outcome, client,
        patient = patient.unwrap_or("-"), "member not returned");
}

/// `hrex-parameters-member-match-out`: our UMB (typed `hrex-temp#UMB`, with its system) and,
/// unless answering as HRex 1.0.0, the RESTful `Patient/{id}` reference.
fn response(
    patient_id: &str,
    patient: &Value,
    base_url: &str,
    profile: MemberMatchProfile,
) -> Value {
    let umb = patient["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| {
            i["type"]["coding"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["system"] == UMB_SYSTEM && c["code"] == "UMB")
            }) && i["value"].is_string()
        });
    let mut identifier = json!({
        "type": {"coding": [{"system": UMB_SYSTEM, "code": "UMB"}]},
    });
    match umb {
        Some(i) => {
            identifier["system"] = i["system"].clone();
            identifier["value"] = i["value"].clone();
            if i["system"].is_null() {
                identifier.as_object_mut().expect("object").remove("system");
            }
        }
        // No UMB on file: the Patient id is our stable person-level identifier.
        None => {
            identifier["system"] = json!(format!("{base_url}/Patient"));
            identifier["value"] = json!(patient_id);
        }
    }
    let mut parameter = vec![json!({"name": "MemberIdentifier", "valueIdentifier": identifier})];
    if profile == MemberMatchProfile::Hrex11 {
        parameter.push(json!({"name": "MemberId", "valueReference": {"reference": format!("Patient/{patient_id}")}}));
    }
    json!({
        "resourceType": "Parameters",
        "meta": {"profile": ["http://hl7.org/fhir/us/davinci-hrex/StructureDefinition/hrex-parameters-member-match-out"]},
        "parameter": parameter,
    })
}
