//! The resources the release tests ask every read path about (issue 14): a financial claim,
//! a stale and a current prior authorization, a current, a sensitive, a seven-year-old and a
//! pre-2016 Observation of one demo member, and a current Observation of another.
#![allow(dead_code)]

use serde_json::{Value, json};

/// The demo member the fixtures belong to (has sensitive data of its own too).
pub const MEMBER: &str = "m000002";
/// Another member of the same household.
pub const OTHER_MEMBER: &str = "m000003";

pub fn day(offset_days: i64) -> String {
    (chrono::Utc::now().date_naive() + chrono::Duration::days(offset_days))
        .format("%Y-%m-%d")
        .to_string()
}

/// The resources every path is asked about, all of `MEMBER` except `obs-other`.
pub fn fixtures() -> Vec<Value> {
    let patient = json!({"reference": format!("Patient/{MEMBER}")});
    let recent = day(-30);
    let eob = |id: &str, extra: Value| {
        let mut r = json!({
            "resourceType": "ExplanationOfBenefit", "id": id, "status": "active",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
            "patient": patient, "insurer": {"display": "Old Health Plan"}, "provider": {"display": "Clinic"},
            "outcome": "complete",
            "insurance": [{"focal": true, "coverage": {"reference": format!("Coverage/{MEMBER}-cov-1")}}],
        });
        r.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        r
    };
    let obs = |id: &str, subject: &str, when: &str, security: Option<&str>| {
        let mut r = json!({
            "resourceType": "Observation", "id": id, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": format!("Patient/{subject}")},
            "effectiveDateTime": when, "valueQuantity": {"value": 72, "unit": "/min"},
        });
        if let Some(code) = security {
            r["meta"] = json!({"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": code}]});
        }
        r
    };
    vec![
        eob(
            "eob-claim",
            json!({"use": "claim", "created": recent, "billablePeriod": {"start": recent, "end": recent},
                   "item": [{"sequence": 1, "productOrService": {"text": "office visit"}, "servicedDate": recent, "net": {"value": 120.5, "currency": "USD"},
                             "adjudication": [{"category": {"text": "paid"}, "amount": {"value": 100.25, "currency": "USD"}}]}],
                   "total": [{"category": {"text": "submitted"}, "amount": {"value": 120.5, "currency": "USD"}}],
                   "payment": {"amount": {"value": 100.25, "currency": "USD"}}}),
        ),
        // cancelled two years ago: within the five-year window, outside the PA rule's year
        eob(
            "eob-pa-stale",
            json!({"use": "preauthorization", "status": "cancelled", "created": day(-730)}),
        ),
        // pending: in force
        eob(
            "eob-pa-current",
            json!({"use": "preauthorization", "outcome": "queued", "created": day(-20)}),
        ),
        obs("obs-current", MEMBER, &day(-10), None),
        obs("obs-sensitive", MEMBER, &day(-10), Some("PSY")),
        // seven years ago: outside the payer-to-payer window, after 2016-01-01
        obs("obs-old", MEMBER, &day(-7 * 365), None),
        obs("obs-2015", MEMBER, "2015-06-01", None),
        obs("obs-other", OTHER_MEMBER, &day(-10), None),
    ]
}
