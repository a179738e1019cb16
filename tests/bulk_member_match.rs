//! `$bulk-member-match` end to end on the real server and job engine, against the synthetic
//! demo plan (`fixtures/demo`): a mixed request (matched, no match, several matches, expired
//! consent, `#regular` with sensitive data and segmentation off, wrong recipient, a defective
//! bundle) lands each member in its exact bucket; the Group and Parameters files conform to
//! the PDex profiles; the Matched Group is stored for the requesting payer only; the IG's
//! example request gives the answer the IG describes; whole-request errors are 4xx. Every
//! call is made over HTTP with a real payer token (registered client, `private_key_jwt`).

mod common;
#[path = "support/jobs.rs"]
mod jobs;
#[path = "support/profile.rs"]
mod profile;

use common::{ClientSpec, TestClient, TestServer, assert_outcome, backends};
use pdex::config::PdexVersion;
use pdex::identity::{ClientKind, OrgIdentifier};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const NPI: &str = "http://hl7.org/fhir/sid/us-npi";
/// The operation's canonical (PDex 2.2.0), which is also its scope, and the 2.1.0 spelling.
const OPERATION: &str = "http://hl7.org/fhir/us/davinci-pdex/OperationDefinition/BulkMemberMatch";
const OPERATION_V21: &str =
    "http://hl7.org/fhir/us/davinci-pdex/OperationDefinition/bulk-member-match";
const DATA_EXPORT: &str =
    "http://hl7.org/fhir/us/davinci-atr/OperationDefinition/davinci-data-export";
const NEW_PAYER_NPI: &str = "0123456789";

/// A registered client of `kind` for the organization with NPI `npi`, with `scopes`.
struct Caller {
    client: TestClient,
    http: Client,
}

async fn caller(s: &TestServer, kind: ClientKind, npi: &str, scopes: &str) -> Caller {
    let client = s
        .register_client(ClientSpec {
            name: format!("{} {npi}", kind.as_str()),
            kind,
            organization: Some(format!("{NPI}|{npi}")),
            scopes: scopes.into(),
            ..ClientSpec::default()
        })
        .await;
    let http = s.http(&client.token(s).await);
    Caller { client, http }
}

/// A payer with the bulk match scope.
async fn payer(s: &TestServer, npi: &str) -> Caller {
    caller(
        s,
        ClientKind::Payer,
        npi,
        &format!("system/*.rs {OPERATION}"),
    )
    .await
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

use jobs::Files;

/// `POST Group/$bulk-member-match` with `body` as `http`.
async fn post(s: &TestServer, http: &Client, body: String, prefer: bool) -> reqwest::Response {
    let mut r = http
        .post(s.url("Group/$bulk-member-match"))
        .header("content-type", "application/fhir+json")
        .body(body);
    if prefer {
        r = r.header("prefer", "respond-async");
    }
    r.send().await.unwrap()
}

/// Kicks off as `http`, polls the status URL until the manifest, and downloads the files;
/// returns the job id and the files.
async fn run(s: &TestServer, http: &Client, body: &Value) -> (String, Files) {
    let poll = jobs::accepted(post(s, http, body.to_string(), true).await).await;
    let manifest = jobs::manifest(&s.state, http, &poll).await;
    let id = poll.rsplit('/').next().unwrap().to_owned();
    (id, jobs::download(http, &manifest).await)
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
        let s = TestServer::start_demo(&b, |c| c.exchange.segmentation = false).await;
        // a second record with m000001's demographics under the same subscriber id
        s.load(&[
            json!({"resourceType": "Patient", "id": "dup1", "name": [{"family": "Nguyen", "given": ["Aisha"]}], "gender": "female", "birthDate": "1960-08-25"}),
            json!({"resourceType": "Coverage", "id": "dup1-cov", "status": "active", "subscriberId": "S10000004",
                "beneficiary": {"reference": "Patient/dup1"}, "payor": [{"reference": "Organization/org-payer"}]}),
        ])
        .await;
        let matched = bundle_for(&common::demo_member("m000001"), "sent-matched");
        let mut unknown = bundle_for(&common::demo_member("m000005"), "sent-unknown");
        part(&mut unknown, "CoverageToMatch")["identifier"][0]["value"] = json!("NOPE0001");
        part(&mut unknown, "CoverageToMatch")["subscriberId"] = json!("NOPE");
        // subscriber id only: m000001 and dup1 both fit
        let mut several = bundle_for(&common::demo_member("m000001"), "sent-several");
        part(&mut several, "CoverageToMatch")
            .as_object_mut()
            .unwrap()
            .remove("identifier");
        let mut expired = bundle_for(&common::demo_member("m000003"), "sent-expired");
        part(&mut expired, "Consent")["provision"]["period"] =
            json!({"start": "2023-12-01", "end": "2024-03-31"});
        // #regular (the IG example's policy) for a member with sensitive data, no segmentation
        let sensitive = bundle_for(&common::demo_member("m000002"), "sent-sensitive");
        let mut wrong_recipient =
            bundle_for(&common::demo_member("m000004"), "sent-wrong-recipient");
        part(&mut wrong_recipient, "Consent")["provision"]["actor"][1]["reference"]["identifier"]
            ["value"] = json!("5555555555");
        let mut no_consent = bundle_for(&common::demo_member("m000007"), "sent-no-consent");
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
        let new_payer = payer(&s, NEW_PAYER_NPI).await;
        let (job_id, files) = run(&s, &new_payer.http, &body).await;

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
            common::demo_member("m000001")["umb"]
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
        let group_url = s.url(&format!("Group/{job_id}"));
        let resp = new_payer.http.get(&group_url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let other = payer(&s, "1111111111").await;
        let resp = other.http.get(&group_url).send().await.unwrap();
        assert_outcome(resp, StatusCode::NOT_FOUND).await;
        // the matched member's consent is stored as in the single-member flow (the payer gets
        // a member-scoped token for them, without sensitive data: #regular); the others' not
        let grant = pdex::consent::member_grant(
            &s.state.store,
            &OrgIdentifier {
                system: NPI.into(),
                value: NEW_PAYER_NPI.into(),
            },
            "Patient/m000001",
        )
        .await
        .unwrap()
        .unwrap();
        assert!(!grant.allow_sensitive, "#regular");
        new_payer.client.member_token(&s, "Patient/m000001").await;
        for other in ["Patient/m000002", "Patient/m000003", "Patient/m000004"] {
            let resp = new_payer.client.request_member_token(&s, other).await;
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{other}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"], "invalid_grant", "{other}");
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn the_ig_example_request_gets_the_answer_the_ig_describes() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |c| c.exchange.pdex_version = PdexVersion::V22).await;
        let new_payer = payer(&s, NEW_PAYER_NPI).await;
        // as published: the member (Patricia Ann Person, card DH10001235) is ours, but the
        // consent's period ended on 2024-03-31 → ConsentConstrained, the submitted Patient
        // echoed; the Matched Group is still there, empty
        let (_, files) = run(&s, &new_payer.http, &ig_request()).await;
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
        let (job_id, files) = run(&s, &new_payer.http, &p).await;
        let groups = file(&files, "Group").unwrap();
        assert_eq!(groups.len(), 1);
        let m = &groups[0];
        assert_eq!(entities(Some(m)), ["Patient/m000000"]);
        assert_eq!(m["contained"][0], *sent);
        assert_eq!(
            m["member"][0]["entity"]["extension"][0],
            json!({"url": "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/base-ext-match-parameters", "valueReference": {"reference": "#patient-1"}})
        );
        let resp = new_payer
            .http
            .get(s.url(&format!("Group/{job_id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let stored: Value = resp.json().await.unwrap();
        assert_eq!(stored["member"], m["member"]);
        s.stop().await;
    }
}

#[tokio::test]
async fn whole_request_errors_are_4xx_and_queue_nothing() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |_| {}).await;
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
        assert!(defs.contains(&DATA_EXPORT), "{defs:?}");
        let send = |body: String, prefer: bool| post(&s, &s.client, body, prefer);
        let good = request(vec![bundle_for(&common::demo_member("m000001"), "x")]).to_string();
        assert_outcome(send(good.clone(), false).await, StatusCode::BAD_REQUEST).await;
        assert_outcome(send("{oops".into(), true).await, StatusCode::BAD_REQUEST).await;
        assert_outcome(
            send(json!({"resourceType": "Patient"}).to_string(), true).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        let out = assert_outcome(
            send(
                json!({"resourceType": "Parameters", "parameter": []}).to_string(),
                true,
            )
            .await,
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
        assert_outcome(send(good.clone(), true).await, StatusCode::FORBIDDEN).await;

        // a payer without the scope, and a provider, are refused; the older scope spelling works
        let no_scope = caller(&s, ClientKind::Payer, NEW_PAYER_NPI, "system/Group.rs").await;
        let provider = caller(&s, ClientKind::Provider, NEW_PAYER_NPI, OPERATION).await;
        for refused in [no_scope, provider] {
            let resp = post(&s, &refused.http, good.clone(), true).await;
            assert_outcome(resp, StatusCode::FORBIDDEN).await;
        }
        let old_scope = caller(&s, ClientKind::Payer, NEW_PAYER_NPI, OPERATION_V21).await;
        jobs::accepted(post(&s, &old_scope.http, good.clone(), true).await).await;
        s.stop().await;
    }
}

/// A job resumed after a crash evaluates its members again: each member's consent is
/// recorded once (its id is the job's and the member's), and one revoked in between stays
/// revoked.
#[tokio::test]
async fn a_resumed_job_records_each_consent_once() {
    use pdex::ops::bulk_match_job::SingleMemberEngine;
    use pdex::ops::bulk_member_match::{MemberEvaluator, MemberOutcome, RequestLimits};
    for b in backends() {
        let s = TestServer::start_demo(&b, |_| {}).await;
        let new_payer = OrgIdentifier {
            system: NPI.into(),
            value: NEW_PAYER_NPI.into(),
        };
        let body = request(vec![bundle_for(&common::demo_member("m000001"), "sent-1")]).to_string();
        let req =
            pdex::ops::bulk_member_match::parse_request(&body, RequestLimits::default()).unwrap();
        let engine = SingleMemberEngine::new(
            s.state.store.clone(),
            vec![OrgIdentifier {
                system: NPI.into(),
                value: "9876543210".into(),
            }],
            new_payer.clone(),
            Some("payer-client".into()),
            true,
            chrono::Utc::now().timestamp_millis(),
            "job-1".into(),
        );
        let count = || async {
            s.state
                .store
                .db
                .fetch(
                    "SELECT id FROM member_consents WHERE patient_id = 'm000001'",
                    &[],
                )
                .await
                .unwrap()
                .len()
        };
        // evaluated consents are stored together, once
        let outcome = engine.evaluate(&req.members[0]).await.unwrap();
        assert!(matches!(outcome, MemberOutcome::Matched(_)), "{outcome:?}");
        assert_eq!(count().await, 0);
        assert_eq!(engine.store_consents().await.unwrap(), 1);
        assert_eq!(count().await, 1);
        // the job resumed: evaluated and stored again
        engine.evaluate(&req.members[0]).await.unwrap();
        engine.store_consents().await.unwrap();
        assert_eq!(count().await, 1);
        pdex::consent::stored::revoke(&s.state.store, "m000001", &new_payer)
            .await
            .unwrap();
        engine.evaluate(&req.members[0]).await.unwrap();
        engine.store_consents().await.unwrap();
        assert_eq!(count().await, 1);
        assert!(
            pdex::consent::member_grant(&s.state.store, &new_payer, "Patient/m000001")
                .await
                .unwrap()
                .is_none(),
            "a revoked consent is not revived by a resumed job"
        );
        s.stop().await;
    }
}
