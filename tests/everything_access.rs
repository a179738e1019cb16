//! What a requesting payer's member-scoped access receives, checked on the demo plan with
//! the access context a member-scoped payer token yields (kind payer, one member, the
//! consent's sensitivity allowance): under `#regular` nothing labelled sensitive comes back
//! from `$everything`, searches or `_include`/`_revinclude`; claims EOBs come as the
//! non-financial view, prior authorizations only under the PA rule; only the look-back
//! window; another member is refused.

mod common;

use common::{TestServer, backends};
use pdex::identity::{AccessContext, ClientKind};
use pdex::search::query;
use serde_json::Value;
use std::collections::BTreeSet;

fn payer_member(patient: &str, allow_sensitive: bool) -> AccessContext {
    let mut ctx = AccessContext::member(patient, allow_sensitive);
    ctx.kind = ClientKind::Payer;
    ctx.client_id = Some("new-payer".into());
    ctx
}

/// `$everything` for `ctx`, all pages, as resources.
async fn everything(s: &TestServer, ctx: &AccessContext, patient: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut pairs = vec![("_count".to_owned(), "50".to_owned())];
    loop {
        let resp = pdex::ops::everything::run(
            s.state.clone(),
            ctx.clone(),
            s.base.clone(),
            patient.into(),
            pairs,
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), 200);
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let bundle: Value = serde_json::from_slice(&bytes).unwrap();
        out.extend(
            bundle["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["resource"].clone()),
        );
        let Some(next) = common::next_link(&bundle) else {
            return out;
        };
        let q = next.split_once('?').unwrap().1;
        pairs = form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    }
}

fn is_sensitive(r: &Value) -> bool {
    let labels = pdex::store::sensitivity::SensitivityLabels::default();
    labels.is_sensitive(r)
}

fn key(r: &Value) -> String {
    format!(
        "{}/{}",
        r["resourceType"].as_str().unwrap(),
        r["id"].as_str().unwrap()
    )
}

#[tokio::test]
async fn regular_consent_hides_sensitive_data_from_everything() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |_| {}).await;
        // m000002 has sensitive data (members.json has_sensitive = true)
        let all = everything(&s, &payer_member("m000002", true), "m000002").await;
        let regular = everything(&s, &payer_member("m000002", false), "m000002").await;
        assert!(
            all.iter().any(is_sensitive),
            "the member has sensitive data"
        );
        assert!(
            !regular.iter().any(is_sensitive),
            "nothing sensitive under #regular"
        );
        let all_keys: BTreeSet<String> = all.iter().map(key).collect();
        let regular_keys: BTreeSet<String> = regular.iter().map(key).collect();
        let hidden: BTreeSet<String> = all.iter().filter(|r| is_sensitive(r)).map(key).collect();
        let withheld: BTreeSet<String> = all_keys.difference(&regular_keys).cloned().collect();
        assert!(
            withheld.is_superset(&hidden),
            "every sensitive resource is withheld"
        );
        // Beyond them, only shared resources that nothing else of the member references (a
        // behavioural-health clinic reached only through the sensitive records) are left out:
        // even their names would tell.
        for k in withheld.difference(&hidden) {
            let t = k.split('/').next().unwrap();
            assert!(
                [
                    "Location",
                    "Medication",
                    "Organization",
                    "Practitioner",
                    "PractitionerRole"
                ]
                .contains(&t),
                "{k} withheld but not sensitive"
            );
        }
        assert_eq!(key(&regular[0]), "Patient/m000002");
        s.stop().await;
    }
}

#[tokio::test]
async fn payers_get_non_financial_claims_rule_bound_prior_auths_and_the_look_back_window() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |_| {}).await;
        let operator = everything(&s, &AccessContext::operator(), "m000001").await;
        let payer = everything(&s, &payer_member("m000001", false), "m000001").await;
        let now = chrono::Utc::now().timestamp_millis();
        let eobs: Vec<&Value> = payer
            .iter()
            .filter(|r| r["resourceType"] == "ExplanationOfBenefit")
            .collect();
        assert!(!eobs.is_empty());
        for e in &eobs {
            if e["use"] == "claim" {
                for money in ["total", "payment", "adjudication", "benefitBalance"] {
                    assert!(e.get(money).is_none(), "{money} in {}", e["id"]);
                }
                for item in e["item"].as_array().into_iter().flatten() {
                    assert!(item.get("adjudication").is_none());
                }
            } else {
                assert!(pdex::fhir::projection::prior_auth_releasable(
                    &e.to_string(),
                    now
                ));
            }
        }
        // the operator sees the amounts (and any PA the rule holds back)
        assert!(
            operator
                .iter()
                .any(|r| r["resourceType"] == "ExplanationOfBenefit" && r.get("total").is_some())
        );
        // look-back: nothing whose care dates all lie more than five years back
        let cutoff = now - 5 * 365 * 86_400_000;
        let obs_dates = |rs: &[Value]| -> Vec<i64> {
            rs.iter()
                .filter(|r| r["resourceType"] == "Observation")
                .filter_map(|r| r["effectiveDateTime"].as_str())
                .filter_map(pdex::fhir::datetime::parse)
                .map(|d| d.high)
                .collect()
        };
        assert!(
            obs_dates(&operator).iter().any(|d| *d < cutoff),
            "old data exists"
        );
        assert!(
            obs_dates(&payer)
                .iter()
                .all(|d| *d >= cutoff - 2 * 86_400_000)
        );
        assert!(payer.len() < operator.len());
        s.stop().await;
    }
}

#[tokio::test]
async fn a_member_scoped_context_cannot_reach_another_member() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |_| {}).await;
        let resp = pdex::ops::everything::run(
            s.state.clone(),
            payer_member("m000002", true),
            s.base.clone(),
            "m000001".into(),
            vec![],
        )
        .await
        .unwrap_err();
        assert_eq!(resp.status, reqwest::StatusCode::FORBIDDEN);
        s.stop().await;
    }
}

async fn search(
    s: &TestServer,
    ctx: &AccessContext,
    rtype: &str,
    q: &[(&str, &str)],
) -> Vec<Value> {
    let pairs: Vec<(String, String)> = q
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let req = query::parse(&s.state.store.registry, rtype, &pairs, &s.base, false).unwrap();
    let page = s.state.store.search(ctx, &req).await.unwrap();
    page.matches
        .iter()
        .chain(page.included.iter())
        .map(|r| serde_json::from_str(&r.content).unwrap())
        .collect()
}

#[tokio::test]
async fn searches_and_includes_hide_sensitive_data_and_stay_in_the_member() {
    for b in backends() {
        // sensitivity alone: the five-year window (tests/release_matrix.rs) would hide the
        // member's older sensitive Encounters from both tokens
        let s = TestServer::start_demo(&b, |c| c.exchange.lookback_years = 0).await;
        let regular = payer_member("m000002", false);
        let sensitive = payer_member("m000002", true);
        for (rtype, q) in [
            ("Condition", vec![("_revinclude", "Provenance:target")]),
            (
                "Encounter",
                vec![("patient", "m000002"), ("_revinclude", "Provenance:target")],
            ),
            (
                "ExplanationOfBenefit",
                vec![("_include", "ExplanationOfBenefit:*")],
            ),
            (
                "MedicationDispense",
                vec![
                    ("_include", "MedicationDispense:medication"),
                    ("_revinclude", "Provenance:target"),
                ],
            ),
            ("Provenance", vec![("_include", "Provenance:target")]),
            (
                "Patient",
                vec![
                    ("_revinclude", "Provenance:target"),
                    ("_revinclude", "Encounter:patient"),
                ],
            ),
        ] {
            let hidden = search(&s, &regular, rtype, &q).await;
            let shown = search(&s, &sensitive, rtype, &q).await;
            assert!(
                !hidden.iter().any(is_sensitive),
                "{rtype} {q:?} leaked sensitive data"
            );
            // without a patient parameter the search is still limited to the member
            for r in hidden.iter().chain(shown.iter()) {
                let k = key(r);
                assert!(
                    !k.contains("/m000001") && !k.contains("/m000003") && !k.contains("/m000004"),
                    "{rtype} {q:?}: {k} belongs to another member of the household"
                );
            }
            if rtype != "Patient" {
                assert!(
                    shown.iter().any(is_sensitive) || rtype == "Provenance" || rtype == "Patient",
                    "{rtype} {q:?}: the member's sensitive data exists with the allowance"
                );
            }
        }
        s.stop().await;
    }
}
