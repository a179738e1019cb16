//! `$member-match` over HTTP against the synthetic demo plan (`fixtures/demo`, `pdex synth
//! --members 30 --seed 1`): the HRex examples as requests, the hard cases synth plants
//! (dependents under one subscriber id, twins, a name + birth-date collision across
//! households, accents and suffixes), no match, several matches, the wrong payor, bad
//! request formats, the HRex 1.0 response profile and brute-force throttling; and the consent
//! decision flow with a payer's identity, stored consents and `consent::member_grant`.

mod common;

use common::{TestServer, assert_outcome, backends};
use pdex::config::MemberMatchProfile;
use pdex::identity::{AccessContext, ClientKind, OrgIdentifier};
use pdex::ops::member_match::{Refusal, evaluate};
use reqwest::StatusCode;
use serde_json::{Value, json};

const NPI: &str = "http://hl7.org/fhir/sid/us-npi";
const NEW_PAYER_NPI: &str = "0123456789";
const UMB_SYSTEM: &str = "https://pdex.example.org/fhir/sid/umb";

fn hrex_example() -> Value {
    serde_json::from_str(include_str!("fixtures/member-match-in.json")).unwrap()
}

fn hrex_provider_example() -> Value {
    serde_json::from_str(include_str!("fixtures/member-match-in-provider.json")).unwrap()
}

fn param<'a>(p: &'a mut Value, name: &str) -> &'a mut Value {
    p["parameter"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|x| x["name"] == name)
        .map(|x| &mut x["resource"])
        .unwrap()
}

fn remove_param(p: &mut Value, name: &str) {
    p["parameter"]
        .as_array_mut()
        .unwrap()
        .retain(|x| x["name"] != name);
}

fn day(offset_days: i64) -> String {
    let d = chrono::Utc::now().date_naive() + chrono::Duration::days(offset_days);
    d.format("%Y-%m-%d").to_string()
}

/// The HRex example's Consent with a period around today.
fn current_consent(p: &mut Value) {
    param(p, "Consent")["provision"]["period"] = json!({"start": day(-10), "end": day(80)});
}

/// A request for a synthetic member, shaped like the HRex example: the card's member id (no
/// system), subscriber id, the member's demographics, and a current consent.
fn request_for(m: &Value) -> Value {
    let mut p = hrex_example();
    let patient = param(&mut p, "MemberPatient");
    patient["name"] = json!([{"family": m["family"], "given": m["given"]}]);
    patient["birthDate"] = m["birthDate"].clone();
    patient["gender"] = m["gender"].clone();
    let cov = param(&mut p, "CoverageToMatch");
    cov["identifier"] = json!([{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB"}]}, "value": m["member_id"]}]);
    cov["subscriberId"] = m["subscriber_id"].clone();
    current_consent(&mut p);
    p
}

async fn post(s: &TestServer, body: &Value) -> reqwest::Response {
    s.post("Patient/$member-match", body).await
}

/// The matched member's Patient id (asserting the HRex 1.1 response shape).
async fn matched(s: &TestServer, body: &Value) -> String {
    let resp = post(s, body).await;
    let status = resp.status();
    let out: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["resourceType"], "Parameters");
    let params = out["parameter"].as_array().unwrap();
    assert_eq!(params.len(), 2, "{out}");
    assert_eq!(params[0]["name"], "MemberIdentifier");
    let ident = &params[0]["valueIdentifier"];
    assert_eq!(
        ident["type"]["coding"][0],
        json!({"system": "http://hl7.org/fhir/us/davinci-hrex/CodeSystem/hrex-temp", "code": "UMB"})
    );
    assert_eq!(ident["system"], UMB_SYSTEM);
    assert_eq!(params[1]["name"], "MemberId");
    let reference = params[1]["valueReference"]["reference"].as_str().unwrap();
    let id = reference.strip_prefix("Patient/").unwrap().to_owned();
    assert_eq!(
        ident["value"],
        common::demo_member(&id)["umb"],
        "the member's own UMB"
    );
    id
}

/// A 422 whose OperationOutcome says `expect`; returns the diagnostics.
async fn refused(s: &TestServer, body: &Value, expect: &str) -> String {
    let out = assert_outcome(post(s, body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    let text = out["issue"][0]["diagnostics"].as_str().unwrap().to_owned();
    assert!(text.contains(expect), "{expect:?} not in {text:?}");
    text
}

/// The IG's own requests without their (long expired) Consent: the operator context has no
/// organization to be a consent recipient, so these runs test matching alone.
#[tokio::test]
async fn the_hrex_examples_match_the_example_member() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |_| {}).await;
        let mut p = hrex_example();
        remove_param(&mut p, "Consent");
        assert_eq!(matched(&s, &p).await, "m000000");
        let mut p = hrex_provider_example();
        remove_param(&mut p, "Consent");
        assert_eq!(matched(&s, &p).await, "m000000");

        // mm-3: the returned UMB finds the member, with and without its system
        let umb = common::demo_member("m000000")["umb"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            s.ids(&format!("Patient?identifier={umb}")).await,
            vec!["m000000"]
        );
        assert_eq!(
            s.ids(&format!("Patient?identifier={UMB_SYSTEM}|{umb}"))
                .await,
            vec!["m000000"]
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn synthetic_members_match_uniquely_including_the_hard_cases() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |_| {}).await;
        // every member by member id + demographics, consent left out (operator context)
        for m in common::demo_members() {
            let mut p = request_for(&m);
            remove_param(&mut p, "Consent");
            assert_eq!(matched(&s, &p).await, m["patient_id"], "{m}");
        }
        // dependents and twins under one subscriber id: subscriber id alone, demographics decide
        for id in ["m000001", "m000002", "m000003", "m000004"] {
            let m = common::demo_member(id);
            let mut p = request_for(&m);
            remove_param(&mut p, "Consent");
            param(&mut p, "CoverageToMatch")
                .as_object_mut()
                .unwrap()
                .remove("identifier");
            assert_eq!(
                matched(&s, &p).await,
                id,
                "subscriber {}",
                m["subscriber_id"]
            );
        }
        // the same name and birth date in two households: the card's ids tell them apart
        for id in ["m000005", "m000006"] {
            let mut p = request_for(&common::demo_member(id));
            remove_param(&mut p, "Consent");
            assert_eq!(matched(&s, &p).await, id);
        }
        // name variants: case, accents, punctuation, suffixes
        let mut p = request_for(&common::demo_member("m000007"));
        remove_param(&mut p, "Consent");
        param(&mut p, "MemberPatient")["name"] =
            json!([{"family": "ANDERSON JR.", "given": ["Jose"]}]);
        assert_eq!(matched(&s, &p).await, "m000007");
        let mut p = request_for(&common::demo_member("m000008"));
        remove_param(&mut p, "Consent");
        param(&mut p, "MemberPatient")["name"] =
            json!([{"family": "Muller Ramirez", "given": ["zoe", "Anne Marie"]}]);
        assert_eq!(matched(&s, &p).await, "m000008");
        s.stop().await;
    }
}

#[tokio::test]
async fn no_match_several_matches_and_the_wrong_payor_are_422() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |_| {}).await;
        let base = |id: &str| {
            let mut p = request_for(&common::demo_member(id));
            remove_param(&mut p, "Consent");
            p
        };
        // demographics that do not agree with the card's member
        let mut p = base("m000001");
        param(&mut p, "MemberPatient")["birthDate"] = json!("1960-08-26");
        refused(&s, &p, "no match").await;
        let mut p = base("m000003");
        param(&mut p, "MemberPatient")["gender"] = json!("female");
        refused(&s, &p, "no match").await;
        // demographics alone never match: an unknown card
        let mut p = base("m000001");
        param(&mut p, "CoverageToMatch")["identifier"][0]["value"] = json!("NOPE0001");
        param(&mut p, "CoverageToMatch")["subscriberId"] = json!("NOPE");
        refused(&s, &p, "no match").await;
        // another plan's coverage
        let mut p = base("m000001");
        param(&mut p, "CoverageToMatch")["payor"] =
            json!([{"identifier": {"system": NPI, "value": "1111111111"}}]);
        refused(&s, &p, "payor").await;
        // a member id with a system must agree with ours
        let mut p = base("m000001");
        param(&mut p, "CoverageToMatch")["identifier"][0]["system"] =
            json!("http://example.org/another-plan");
        param(&mut p, "CoverageToMatch")
            .as_object_mut()
            .unwrap()
            .remove("subscriberId");
        refused(&s, &p, "no match").await;

        // a second record with the same demographics under the same subscriber id
        let twin = json!({"resourceType": "Patient", "id": "dup1", "name": [{"family": "Nguyen", "given": ["Aisha"]}], "gender": "female", "birthDate": "1960-08-25"});
        let cov = json!({"resourceType": "Coverage", "id": "dup1-cov", "status": "active", "subscriberId": "S10000004",
            "beneficiary": {"reference": "Patient/dup1"}, "payor": [{"reference": "Organization/org-payer"}]});
        s.load(&[twin, cov]).await;
        let mut p = base("m000001");
        param(&mut p, "CoverageToMatch")
            .as_object_mut()
            .unwrap()
            .remove("identifier");
        let text = refused(&s, &p, "multiple matches").await;
        assert!(!text.contains("m000001") && !text.contains("dup1"));
        // the member id still singles out the right one
        assert_eq!(matched(&s, &base("m000001")).await, "m000001");
        s.stop().await;
    }
}

/// An edit that breaks a request.
type Edit = Box<dyn Fn(&mut Value)>;

#[tokio::test]
async fn invalid_requests_are_bad_bundle_format() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |_| {}).await;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|p| {
                    p["parameter"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!({"name": "Other", "valueString": "x"}))
                }),
                "closed",
            ),
            (
                Box::new(|p| remove_param(p, "CoverageToMatch")),
                "CoverageToMatch is required",
            ),
            (
                Box::new(|p| remove_param(p, "MemberPatient")),
                "MemberPatient is required",
            ),
            (
                Box::new(|p| {
                    let c = param(p, "CoverageToMatch").as_object_mut().unwrap();
                    c.remove("identifier");
                    c.remove("subscriberId");
                }),
                "us-core-15",
            ),
            (
                Box::new(|p| {
                    param(p, "MemberPatient")
                        .as_object_mut()
                        .unwrap()
                        .remove("gender");
                }),
                "hrex-pat-1",
            ),
            (
                Box::new(|p| {
                    param(p, "CoverageToMatch")["beneficiary"] =
                        json!({"reference": "Patient/other"})
                }),
                "mm-6",
            ),
            (
                Box::new(|p| {
                    param(p, "Consent")["patient"] = json!({"reference": "Patient/other"})
                }),
                "mm-6",
            ),
            (
                Box::new(|p| {
                    param(p, "Consent")["policy"] = json!([{"uri": "http://example.org/all"}])
                }),
                "hrex-consent-policy",
            ),
            (
                Box::new(|p| param(p, "MemberPatient")["birthDate"] = json!("1974")),
                "birthDate",
            ),
            (
                Box::new(|p| *p = json!({"resourceType": "Patient"})),
                "Parameters",
            ),
        ];
        for (edit, expect) in cases {
            let mut p = hrex_example();
            current_consent(&mut p);
            edit(&mut p);
            let text = refused(&s, &p, expect).await;
            assert!(text.starts_with("bad bundle format"), "{text}");
        }
        // not JSON at all
        let resp = s
            .client
            .post(s.url("Patient/$member-match"))
            .header("Content-Type", "application/fhir+json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_outcome(resp, StatusCode::BAD_REQUEST).await;
        s.stop().await;
    }
}

#[tokio::test]
async fn hrex_1_0_profile_returns_the_member_identifier_only() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |c| {
            c.exchange.member_match_profile = MemberMatchProfile::Hrex10
        })
        .await;
        let mut p = hrex_example();
        remove_param(&mut p, "Consent");
        let out: Value = post(&s, &p).await.json().await.unwrap();
        let params = out["parameter"].as_array().unwrap();
        assert_eq!(params.len(), 1, "{out}");
        assert_eq!(params[0]["name"], "MemberIdentifier");
        assert_eq!(
            params[0]["valueIdentifier"]["value"],
            common::demo_member("m000000")["umb"]
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn repeated_failures_are_throttled() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |c| c.exchange.match_failure_limit = 3).await;
        let mut p = request_for(&common::demo_member("m000001"));
        remove_param(&mut p, "Consent");
        for attempt in 0..3 {
            param(&mut p, "CoverageToMatch")["identifier"][0]["value"] =
                json!(format!("GUESS{attempt}"));
            param(&mut p, "CoverageToMatch")["subscriberId"] = json!(format!("SUB{attempt}"));
            refused(&s, &p, "no match").await;
        }
        // the same person with yet other card data: 429 with Retry-After
        let resp = post(&s, &p).await;
        let retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let out = assert_outcome(resp, StatusCode::TOO_MANY_REQUESTS).await;
        assert_eq!(out["issue"][0]["code"], "throttled");
        assert!(retry.is_some_and(|r| r > 0 && r <= 900), "{retry:?}");
        s.stop().await;
    }
}

// ---- consent evaluation, with a payer's access context -------------------------------------
//
// These call the operation in-process with the context a payer client's token yields
// (kind payer, its organization, the member-match scope).

fn payer(npi: &str) -> AccessContext {
    AccessContext {
        client_id: Some(format!("payer-{npi}")),
        kind: ClientKind::Payer,
        organization: Some(OrgIdentifier {
            system: NPI.into(),
            value: npi.into(),
        }),
        scopes: vec![pdex::identity::scopes::MEMBER_MATCH.into()],
        scope: pdex::identity::DataScope::Patients(vec![]),
        allow_sensitive: false,
        can_write: false,
        cert_thumbprint: None,
        grant: Default::default(),
    }
}

fn new_payer() -> OrgIdentifier {
    OrgIdentifier {
        system: NPI.into(),
        value: NEW_PAYER_NPI.into(),
    }
}

/// The request's 422 text; asserts it carries no identifier of the member.
fn constraint(result: Result<Value, Refusal>, m: &Value) -> String {
    match result {
        Err(Refusal::Unprocessable(text)) => {
            for key in ["patient_id", "umb", "member_id"] {
                let v = m[key].as_str().unwrap();
                assert!(!text.contains(v), "{key} {v} leaked into {text:?}");
            }
            text
        }
        other => panic!("expected a 422, got {other:?}"),
    }
}

#[tokio::test]
async fn the_consent_decision_flow() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |_| {}).await;
        let store = &s.state.store;
        let ctx = payer(NEW_PAYER_NPI);
        let m0 = common::demo_member("m000000");

        // the HRex example as sent: its consent period (January 2022) is over
        let text = constraint(
            evaluate(&s.state, &ctx, &hrex_example().to_string()).await,
            &m0,
        );
        assert!(
            text.contains("consent constraint") && text.contains("ended"),
            "{text}"
        );

        let with = |edit: &dyn Fn(&mut Value)| {
            let mut p = hrex_example();
            current_consent(&mut p);
            edit(&mut p);
            p.to_string()
        };
        // not yet begun
        let text = constraint(
            evaluate(
                &s.state,
                &ctx,
                &with(&|p| {
                    param(p, "Consent")["provision"]["period"] =
                        json!({"start": day(5), "end": day(90)})
                }),
            )
            .await,
            &m0,
        );
        assert!(text.contains("has not begun"), "{text}");
        // another payer asks with this consent: not its recipient
        let text = constraint(
            evaluate(&s.state, &payer("5555555555"), &with(&|_| {})).await,
            &m0,
        );
        assert!(text.contains("recipient"), "{text}");
        // we are not the source
        let text = constraint(
            evaluate(&s.state, &ctx, &with(&|p| {
                param(p, "Consent")["provision"]["actor"][0]["reference"]["identifier"]["value"] =
                    json!("4444444444")
            }))
            .await,
            &m0,
        );
        assert!(text.contains("not a source"), "{text}");
        // a payer without Consent: consent required
        let text = constraint(
            evaluate(&s.state, &ctx, &with(&|p| remove_param(p, "Consent"))).await,
            &m0,
        );
        assert!(text.contains("consent required"), "{text}");
        // a payer SHALL send CoverageToLink
        let text = constraint(
            evaluate(
                &s.state,
                &ctx,
                &with(&|p| remove_param(p, "CoverageToLink")),
            )
            .await,
            &m0,
        );
        assert!(text.contains("CoverageToLink"), "{text}");
        // no stored consent came out of any of that
        assert_eq!(
            pdex::consent::member_grant(store, &new_payer(), "Patient/m000000")
                .await
                .unwrap(),
            None
        );

        // #regular, we segment: matched, consent stored, the token may not carry sensitive data
        let out = evaluate(&s.state, &ctx, &with(&|_| {})).await.unwrap();
        assert_eq!(
            out["parameter"][1]["valueReference"]["reference"],
            "Patient/m000000"
        );
        let grant = pdex::consent::member_grant(store, &new_payer(), "Patient/m000000")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(grant.patient_id, "m000000");
        assert!(!grant.allow_sensitive);
        // the member can be named by bare id or UMB too; another payer gets nothing
        for name in [
            "m000000",
            m0["umb"].as_str().unwrap(),
            &format!("{UMB_SYSTEM}|{}", m0["umb"].as_str().unwrap()),
        ] {
            assert!(
                pdex::consent::member_grant(store, &new_payer(), name)
                    .await
                    .unwrap()
                    .is_some(),
                "{name}"
            );
        }
        let other = OrgIdentifier {
            system: NPI.into(),
            value: "5555555555".into(),
        };
        assert_eq!(
            pdex::consent::member_grant(store, &other, "Patient/m000000")
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            pdex::consent::member_grant(store, &new_payer(), "Patient/m000001")
                .await
                .unwrap(),
            None
        );
        // what was stored
        let rows = store
            .db
            .fetch(
                "SELECT patient_id, requester_value, client_id, policy, source_reference, coverage_to_link, status FROM member_consents",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        let row: Vec<Option<String>> = (0..rows[0].len())
            .map(|i| rows[0].opt_text(i).unwrap())
            .collect();
        assert_eq!(row[0].as_deref(), Some("m000000"));
        assert_eq!(row[1].as_deref(), Some(NEW_PAYER_NPI));
        assert_eq!(row[2].as_deref(), Some("payer-0123456789"));
        assert_eq!(row[3].as_deref(), Some("regular"));
        assert_eq!(
            row[4].as_deref(),
            Some("http://example.org/DocumentReference/someconsent")
        );
        assert!(
            row[5].as_deref().unwrap().contains("234567"),
            "CoverageToLink kept"
        );
        assert_eq!(row[6].as_deref(), Some("active"));

        // #sensitive: a later consent, the latest wins
        let out = evaluate(
            &s.state,
            &ctx,
            &with(&|p| {
                param(p, "Consent")["policy"][0]["uri"] =
                    json!(pdex::consent::policy::POLICY_SENSITIVE)
            }),
        )
        .await
        .unwrap();
        assert_eq!(
            out["parameter"][1]["valueReference"]["reference"],
            "Patient/m000000"
        );
        let grant = pdex::consent::member_grant(store, &new_payer(), "Patient/m000000")
            .await
            .unwrap()
            .unwrap();
        assert!(grant.allow_sensitive);
        // the old payer withdraws it (a consent directive received out of band)
        let mut tx = store.db.begin().await.unwrap();
        tx.execute("UPDATE member_consents SET status = 'inactive'", vec![])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            pdex::consent::member_grant(store, &new_payer(), "Patient/m000000")
                .await
                .unwrap(),
            None
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn regular_consent_without_segmentation_is_refused_for_members_with_sensitive_data() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |c| c.exchange.segmentation = false).await;
        let ctx = payer(NEW_PAYER_NPI);
        // m000002 has sensitive data; m000001 (same household) has none
        let sensitive = common::demo_member("m000002");
        assert_eq!(sensitive["has_sensitive"], true);
        let text = constraint(
            evaluate(&s.state, &ctx, &request_for(&sensitive).to_string()).await,
            &sensitive,
        );
        assert!(text.contains("#regular"), "{text}");
        let plain = common::demo_member("m000001");
        assert_eq!(plain["has_sensitive"], false);
        let out = evaluate(&s.state, &ctx, &request_for(&plain).to_string())
            .await
            .unwrap();
        assert_eq!(
            out["parameter"][1]["valueReference"]["reference"],
            "Patient/m000001"
        );
        // #sensitive can always be complied with
        let mut p = request_for(&sensitive);
        param(&mut p, "Consent")["policy"][0]["uri"] =
            json!(pdex::consent::policy::POLICY_SENSITIVE);
        let out = evaluate(&s.state, &ctx, &p.to_string()).await.unwrap();
        assert_eq!(
            out["parameter"][1]["valueReference"]["reference"],
            "Patient/m000002"
        );
        let grant = pdex::consent::member_grant(&s.state.store, &new_payer(), "Patient/m000002")
            .await
            .unwrap()
            .unwrap();
        assert!(grant.allow_sensitive);
        s.stop().await;
    }
}

#[tokio::test]
async fn consent_can_be_made_optional() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |c| c.exchange.consent_required = false).await;
        let mut p = request_for(&common::demo_member("m000001"));
        remove_param(&mut p, "Consent");
        let out = evaluate(&s.state, &payer(NEW_PAYER_NPI), &p.to_string())
            .await
            .unwrap();
        assert_eq!(
            out["parameter"][1]["valueReference"]["reference"],
            "Patient/m000001"
        );
        // but without a consent there is nothing to grant a member token on
        assert_eq!(
            pdex::consent::member_grant(&s.state.store, &new_payer(), "Patient/m000001")
                .await
                .unwrap(),
            None
        );
        s.stop().await;
    }
}
