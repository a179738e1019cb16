//! `$bulk-member-match` end to end on the real server and job engine, against the synthetic
//! demo plan (`fixtures/demo`): a mixed request (matched, no match, several matches, expired
//! consent, `#regular` with sensitive data and segmentation off, wrong recipient, a defective
//! bundle) lands each member in its exact bucket; the Group and Parameters files conform to
//! the PDex profiles; the Matched Group is stored for the requesting payer only; the IG's
//! example request gives the answer the IG describes; whole-request errors are 4xx.
//!
//! Until the authorization server is in `main`, every HTTP caller is the operator, which has
//! no organization to be a consent's recipient: the payer's kick-offs are made in-process
//! with the context a payer client's token yields, and the job then runs on the server's own
//! workers exactly as it would for an HTTP kick-off.

mod common;
#[path = "support/jobs.rs"]
mod jobs;
#[path = "support/profile.rs"]
mod profile;

use axum::http::{HeaderMap, HeaderValue};
use common::{Backend, TestServer, assert_outcome, backends};
use pdex::auth::{AccessContext, ClientKind, DataScope, OrgIdentifier};
use pdex::config::{PdexVersion, ServerConfig};
use pdex::ops::bulk_match_job::kickoff;
use pdex::ops::bulk_member_match::OPERATION;
use reqwest::StatusCode;
use serde_json::{Value, json};

const NPI: &str = "http://hl7.org/fhir/sid/us-npi";
const NEW_PAYER_NPI: &str = "0123456789";

fn demo_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo")
}

fn member(id: &str) -> Value {
    let all: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(demo_dir().join("members.json")).unwrap())
            .unwrap();
    all.into_iter().find(|m| m["patient_id"] == id).unwrap()
}

async fn server(b: &Backend, configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let s = TestServer::start_with(b, configure).await;
    let r = pdex::import::import(&s.state.store, &[demo_dir()], Default::default())
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    s
}

fn payer(npi: &str) -> AccessContext {
    AccessContext {
        client_id: Some(format!("payer-{npi}")),
        kind: ClientKind::Payer,
        organization: Some(OrgIdentifier {
            system: NPI.into(),
            value: npi.into(),
        }),
        scopes: vec![OPERATION.into(), "system/Group.rs".into()],
        scope: DataScope::Patients(vec![]),
        allow_sensitive: false,
        can_write: false,
        cert_thumbprint: None,
    }
}

fn day(offset_days: i64) -> String {
    let d = chrono::Utc::now().date_naive() + chrono::Duration::days(offset_days);
    d.format("%Y-%m-%d").to_string()
}

fn ig_request() -> Value {
    profile::load("Parameters-payer-multi-member-match-in.json")
}

fn part<'a>(bundle: &'a mut Value, name: &str) -> &'a mut Value {
    bundle["part"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["name"] == name)
        .map(|p| &mut p["resource"])
        .unwrap()
}

/// A MemberBundle for a synthetic member, shaped like the IG example (card member id and
/// subscriber id, demographics, a consent current today), with `sent_id` as the submitted
/// Patient's id.
fn bundle_for(m: &Value, sent_id: &str) -> Value {
    let mut b = ig_request()["parameter"][0].clone();
    let p = part(&mut b, "MemberPatient");
    p["id"] = json!(sent_id);
    p["name"] = json!([{"family": m["family"], "given": m["given"]}]);
    p["birthDate"] = m["birthDate"].clone();
    p["gender"] = m["gender"].clone();
    let c = part(&mut b, "CoverageToMatch");
    c["identifier"] = json!([{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB"}]}, "value": m["member_id"]}]);
    c["subscriberId"] = m["subscriber_id"].clone();
    part(&mut b, "Consent")["provision"]["period"] = json!({"start": day(-10), "end": day(80)});
    b
}

fn request(bundles: Vec<Value>) -> Value {
    json!({"resourceType": "Parameters", "parameter": bundles})
}

fn async_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("prefer", HeaderValue::from_static("respond-async"));
    h
}

use jobs::Files;

/// Kicks off for `ctx` in-process, waits for the server's workers to finish the job, and
/// reads its files back from the engine's storage.
async fn run(s: &TestServer, ctx: &AccessContext, body: &Value) -> (String, Files) {
    let url = format!("{}/Group/$bulk-member-match", s.state.base_url);
    let resp = kickoff(&s.state, ctx, &async_headers(), &body.to_string(), &url)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let id = jobs::job_id(&resp);
    let files = jobs::files(&s.state, &id).await;
    (id, files)
}

fn file<'a>(files: &'a Files, rtype: &str) -> Option<&'a Vec<Value>> {
    files.iter().find(|f| f.1 == rtype).map(|f| &f.2)
}

fn group_by_code<'a>(groups: &'a [Value], code: &str) -> Option<&'a Value> {
    groups
        .iter()
        .find(|g| g["code"]["coding"][0]["code"] == code)
}

/// The member entities of a Group (ours for Matched, `#contained` otherwise).
fn entities(g: Option<&Value>) -> Vec<String> {
    g.and_then(|g| g["member"].as_array())
        .map(|m| {
            m.iter()
                .map(|m| m["entity"]["reference"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn each_member_of_a_mixed_request_lands_in_its_own_bucket() {
    for b in backends() {
        let s = server(&b, |c| c.exchange.segmentation = false).await;
        // a second record with m000001's demographics under the same subscriber id
        s.load(&[
            json!({"resourceType": "Patient", "id": "dup1", "name": [{"family": "Nguyen", "given": ["Aisha"]}], "gender": "female", "birthDate": "1960-08-25"}),
            json!({"resourceType": "Coverage", "id": "dup1-cov", "status": "active", "subscriberId": "S10000004",
                "beneficiary": {"reference": "Patient/dup1"}, "payor": [{"reference": "Organization/org-payer"}]}),
        ])
        .await;
        let matched = bundle_for(&member("m000001"), "sent-matched");
        let mut unknown = bundle_for(&member("m000005"), "sent-unknown");
        part(&mut unknown, "CoverageToMatch")["identifier"][0]["value"] = json!("NOPE0001");
        part(&mut unknown, "CoverageToMatch")["subscriberId"] = json!("NOPE");
        // subscriber id only: m000001 and dup1 both fit
        let mut several = bundle_for(&member("m000001"), "sent-several");
        part(&mut several, "CoverageToMatch")
            .as_object_mut()
            .unwrap()
            .remove("identifier");
        let mut expired = bundle_for(&member("m000003"), "sent-expired");
        part(&mut expired, "Consent")["provision"]["period"] =
            json!({"start": "2023-12-01", "end": "2024-03-31"});
        // #regular (the IG example's policy) for a member with sensitive data, no segmentation
        let sensitive = bundle_for(&member("m000002"), "sent-sensitive");
        let mut wrong_recipient = bundle_for(&member("m000004"), "sent-wrong-recipient");
        part(&mut wrong_recipient, "Consent")["provision"]["actor"][1]["reference"]["identifier"]
            ["value"] = json!("5555555555");
        let mut no_consent = bundle_for(&member("m000007"), "sent-no-consent");
        no_consent["part"]
            .as_array_mut()
            .unwrap()
            .retain(|p| p["name"] != "Consent");
        let body = request(vec![
            matched,
            unknown,
            several,
            expired,
            sensitive,
            wrong_recipient,
            no_consent,
        ]);
        let ctx = payer(NEW_PAYER_NPI);
        let (job_id, files) = run(&s, &ctx, &body).await;

        let groups = file(&files, "Group").expect("a Group file (§pdex-138)");
        assert_eq!(groups.len(), 3);
        let m = group_by_code(groups, "match");
        let n = group_by_code(groups, "nomatch");
        let c = group_by_code(groups, "consentconstraint");
        assert_eq!(entities(m), ["Patient/m000001"]);
        assert_eq!(
            entities(n),
            ["#sent-unknown", "#sent-several", "#sent-no-consent"]
        );
        assert_eq!(
            entities(c),
            ["#sent-expired", "#sent-sensitive", "#sent-wrong-recipient"]
        );
        // the Groups follow the profiles; the matched one carries the requester and us
        assert_eq!(
            profile::check(
                m.unwrap(),
                "StructureDefinition-pdex-member-match-group.json"
            ),
            Vec::<String>::new()
        );
        for g in [n.unwrap(), c.unwrap()] {
            assert_eq!(
                profile::check(g, "StructureDefinition-pdex-member-no-match-group.json"),
                Vec::<String>::new()
            );
            // no member id of ours, no consent detail (§pdex-154c)
            let text = g.to_string();
            for leak in ["m00000", "ended", "2024-03-31", "5555555555", "diagnostics"] {
                assert!(!text.contains(leak), "{leak} in {text}");
            }
        }
        let m = m.unwrap();
        assert_eq!(m["id"], job_id.as_str());
        assert_eq!(
            m["characteristic"][0]["valueReference"]["identifier"],
            json!({"system": NPI, "value": NEW_PAYER_NPI})
        );
        assert_eq!(m["managingEntity"]["identifier"]["value"], "9876543210");
        assert_eq!(m["characteristic"][0]["period"]["start"], day(0));
        assert_eq!(m["characteristic"][0]["period"]["end"], day(80));
        assert_eq!(
            m["member"][0]["entity"]["identifier"]["value"],
            member("m000001")["umb"]
        );
        // the 2.1.0 envelope (default --pdex-version 2.1) wraps the same Groups
        let envelope = &file(&files, "Parameters").expect("the envelope file")[0];
        assert_eq!(
            profile::check(
                envelope,
                "StructureDefinition-pdex-parameters-multi-member-match-bundle-out.json"
            ),
            Vec::<String>::new()
        );
        assert_eq!(envelope["parameter"][0]["resource"], *m);
        // the defective bundle is reported by position only
        let errors = files
            .iter()
            .find(|f| f.0 == "error")
            .expect("an error file");
        assert_eq!(errors.2.len(), 1);
        let text = errors.2[0]["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(
            text.contains("MemberBundle 7") && text.contains("Consent"),
            "{text}"
        );

        // the Matched Group is stored and belongs to the requesting payer only
        let store = &s.state.store;
        assert!(store.read(&ctx, "Group", &job_id).await.unwrap().is_some());
        let other = payer("1111111111");
        assert!(
            store
                .read(&other, "Group", &job_id)
                .await
                .unwrap()
                .is_none()
        );
        // the matched member's consent is stored as in the single-member flow; the others' not
        let new_payer = ctx.organization.clone().unwrap();
        let grant = pdex::consent::member_grant(store, &new_payer, "Patient/m000001")
            .await
            .unwrap()
            .unwrap();
        assert!(!grant.allow_sensitive, "#regular");
        for other in ["Patient/m000002", "Patient/m000003", "Patient/m000004"] {
            assert!(
                pdex::consent::member_grant(store, &new_payer, other)
                    .await
                    .unwrap()
                    .is_none(),
                "{other}"
            );
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn the_ig_example_request_gets_the_answer_the_ig_describes() {
    for b in backends() {
        let s = server(&b, |c| c.exchange.pdex_version = PdexVersion::V22).await;
        let ctx = payer(NEW_PAYER_NPI);
        // as published: the member (Patricia Ann Person, card DH10001235) is ours, but the
        // consent's period ended on 2024-03-31 → ConsentConstrained, the submitted Patient
        // echoed; the Matched Group is still there, empty
        let (_, files) = run(&s, &ctx, &ig_request()).await;
        let groups = file(&files, "Group").unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(
            entities(group_by_code(groups, "match")),
            Vec::<String>::new()
        );
        let c = group_by_code(groups, "consentconstraint").unwrap();
        assert_eq!(entities(Some(c)), ["#patient-1"]);
        let sent = &ig_request()["parameter"][0]["part"][0]["resource"];
        assert_eq!(c["contained"][0], *sent);
        // PDex 2.2: Group files only
        assert!(file(&files, "Parameters").is_none());

        // the same request with a consent current today: matched to our Patient
        let mut p = ig_request();
        part(&mut p["parameter"][0], "Consent")["provision"]["period"] =
            json!({"start": day(-1), "end": day(30)});
        let (job_id, files) = run(&s, &ctx, &p).await;
        let groups = file(&files, "Group").unwrap();
        assert_eq!(groups.len(), 1);
        let m = &groups[0];
        assert_eq!(entities(Some(m)), ["Patient/m000000"]);
        assert_eq!(m["contained"][0], *sent);
        assert_eq!(
            m["member"][0]["entity"]["extension"][0],
            json!({"url": "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/base-ext-match-parameters", "valueReference": {"reference": "#patient-1"}})
        );
        let stored = s
            .state
            .store
            .read(&ctx, "Group", &job_id)
            .await
            .unwrap()
            .unwrap();
        let stored: Value = serde_json::from_str(&stored.content).unwrap();
        assert_eq!(stored["member"], m["member"]);
        s.stop().await;
    }
}

#[tokio::test]
async fn whole_request_errors_are_4xx_and_queue_nothing() {
    for b in backends() {
        let s = server(&b, |_| {}).await;
        // §pdex-98: both operations are declared on Group with their canonicals
        let cs: Value = s.get("metadata").await.json().await.unwrap();
        let group = cs["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "Group")
            .unwrap()
            .clone();
        let defs: Vec<&str> = group["operation"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["definition"].as_str().unwrap())
            .collect();
        assert!(defs.contains(&OPERATION), "{defs:?}");
        assert!(
            defs.contains(&pdex::ops::davinci_data_export::OPERATION),
            "{defs:?}"
        );
        let path = "Group/$bulk-member-match";
        let send = |body: String, prefer: bool| {
            let mut r = s
                .client
                .post(s.url(path))
                .header("content-type", "application/fhir+json")
                .body(body);
            if prefer {
                r = r.header("prefer", "respond-async");
            }
            r.send()
        };
        let good = request(vec![bundle_for(&member("m000001"), "x")]).to_string();
        assert_outcome(
            send(good.clone(), false).await.unwrap(),
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_outcome(
            send("{oops".into(), true).await.unwrap(),
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_outcome(
            send(json!({"resourceType": "Patient"}).to_string(), true)
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
        )
        .await;
        let out = assert_outcome(
            send(
                json!({"resourceType": "Parameters", "parameter": []}).to_string(),
                true,
            )
            .await
            .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(
            out["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains("MemberBundle")
        );
        // a valid request from a caller with no organization cannot name a consent recipient
        assert_outcome(
            send(good.clone(), true).await.unwrap(),
            StatusCode::FORBIDDEN,
        )
        .await;

        // a payer without the scope, and a provider, are refused; the older scope spelling works
        let url = format!("{}/{path}", s.state.base_url);
        let mut no_scope = payer(NEW_PAYER_NPI);
        no_scope.scopes = vec!["system/Group.rs".into()];
        let e = kickoff(&s.state, &no_scope, &async_headers(), &good, &url)
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        let mut provider = payer(NEW_PAYER_NPI);
        provider.kind = ClientKind::Provider;
        let e = kickoff(&s.state, &provider, &async_headers(), &good, &url)
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        let mut old_scope = payer(NEW_PAYER_NPI);
        old_scope.scopes = vec![pdex::ops::bulk_member_match::OPERATION_V21.into()];
        let resp = kickoff(&s.state, &old_scope, &async_headers(), &good, &url)
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        s.stop().await;
    }
}
