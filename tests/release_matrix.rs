//! The release matrix (issue 14): for each kind of token — the plan's admin, a payer's
//! system token, a payer's member-scoped token under a `#regular` and under a `#sensitive`
//! consent — and each read path that returns resource bytes — read, vread, history, search
//! and its total, `_summary=count`, `_include` / `_revinclude`, batch and transaction GET
//! entries, `Patient/$everything`, `Patient/$export` — the same resources (a financial claim,
//! a stale and a current prior authorization, a sensitive resource, a resource older than
//! the five-year window, one older than 2016, another member's resource) come back exactly
//! as the direct read gives them, or not at all. The direct read itself is checked against
//! what the rules say. Then revocation: a member token stops on its next request when the
//! consent is revoked, and an export queued before the revocation never runs.
//! Over real HTTP with real tokens, on every configured store.

mod common;
#[path = "support/jobs.rs"]
mod jobs;
#[path = "support/member_flow.rs"]
mod member_flow;
#[path = "support/release.rs"]
mod release;

use common::{ClientSpec, TestClient, TestServer, backends};
use pdex::identity::ClientKind;
use release::{MEMBER, day, fixtures};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

const MEMBER_MATCH: &str = "http://hl7.org/fhir/us/davinci-hrex/OperationDefinition/member-match";
const NPI: &str = "http://hl7.org/fhir/sid/us-npi";
const REGULAR_NPI: &str = "0123456789";
const SENSITIVE_NPI: &str = "1234567893";
const HREX_CONSENT: &str =
    "http://hl7.org/fhir/us/davinci-hrex/StructureDefinition-hrex-consent.html";

fn key(r: &Value) -> String {
    format!(
        "{}/{}",
        r["resourceType"].as_str().unwrap(),
        r["id"].as_str().unwrap()
    )
}

/// Two answers for the same resource agree (as JSON values: every path serves the bytes the
/// direct read serves).
fn same(a: &Value, b: &Value) -> bool {
    a == b
}

/// The tokens of the matrix.
struct Tokens {
    admin: String,
    payer_system: String,
    regular: String,
    sensitive: String,
    regular_client: TestClient,
}

async fn payer(s: &TestServer, npi: &str) -> TestClient {
    s.register_client(ClientSpec {
        name: format!("payer {npi}"),
        kind: ClientKind::Payer,
        organization: Some(format!("{NPI}|{npi}")),
        scopes: format!("system/*.rs {MEMBER_MATCH}"),
        ..ClientSpec::default()
    })
    .await
}

/// `$member-match` of `MEMBER` by `c` with a current consent of `policy` naming `npi`.
async fn member_match(s: &TestServer, c: &TestClient, npi: &str, policy: &str) {
    let m = common::demo_member(MEMBER);
    let mut p: Value = serde_json::from_str(include_str!("fixtures/member-match-in.json")).unwrap();
    for x in p["parameter"].as_array_mut().unwrap() {
        let name = x["name"].as_str().unwrap().to_owned();
        let r = &mut x["resource"];
        match name.as_str() {
            "MemberPatient" => {
                r["name"] = json!([{"family": m["family"], "given": m["given"]}]);
                r["birthDate"] = m["birthDate"].clone();
                r["gender"] = m["gender"].clone();
            }
            "CoverageToMatch" => {
                r["identifier"] = json!([{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB"}]}, "value": m["member_id"]}]);
                r["subscriberId"] = m["subscriber_id"].clone();
            }
            "Consent" => {
                r["provision"]["period"] = json!({"start": day(-10), "end": day(80)});
                r["provision"]["actor"][1]["reference"]["identifier"]["value"] = json!(npi);
                r["policy"] = json!([{"uri": format!("{HREX_CONSENT}#{policy}")}]);
            }
            _ => {}
        }
    }
    let token = c.token_response(s, Some(MEMBER_MATCH)).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = s
        .http(&token)
        .post(s.url("Patient/$member-match"))
        .header("Content-Type", "application/fhir+json")
        .body(p.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap()
    );
}

async fn setup(s: &TestServer) -> Tokens {
    s.load(&fixtures()).await;
    let regular_client = payer(s, REGULAR_NPI).await;
    let sensitive_client = payer(s, SENSITIVE_NPI).await;
    member_match(s, &regular_client, REGULAR_NPI, "regular").await;
    member_match(s, &sensitive_client, SENSITIVE_NPI, "sensitive").await;
    let sub = format!("Patient/{MEMBER}");
    Tokens {
        admin: s.admin.token(s).await,
        payer_system: regular_client.token(s).await,
        regular: regular_client.member_token(s, &sub).await,
        sensitive: sensitive_client.member_token(s, &sub).await,
        regular_client,
    }
}

/// What the direct read answers: the resource, or `None` (404).
async fn direct(http: &Client, s: &TestServer, k: &str) -> Option<Value> {
    let resp = http.get(s.url(k)).send().await.unwrap();
    match resp.status() {
        StatusCode::OK => Some(resp.json().await.unwrap()),
        StatusCode::NOT_FOUND => None,
        other => panic!("{k}: {other} {}", resp.text().await.unwrap()),
    }
}

async fn get_json(http: &Client, url: &str) -> (StatusCode, Value) {
    let resp = http.get(url).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn resources(bundle: &Value) -> Vec<Value> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("resource").cloned())
        .filter(|r| r["resourceType"] != "OperationOutcome")
        .collect()
}

/// Every resource of a searchset, all pages.
async fn all_pages(http: &Client, s: &TestServer, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut url = s.url(path);
    for _ in 0..50 {
        let (status, bundle) = get_json(http, &url).await;
        assert_eq!(status, StatusCode::OK, "{url}: {bundle}");
        out.extend(resources(&bundle));
        match common::next_link(&bundle) {
            Some(n) => url = n,
            None => return out,
        }
    }
    panic!("too many pages of {path}");
}

/// Checks every path for one token against its direct reads; returns the direct views.
async fn check_paths(
    s: &TestServer,
    who: &str,
    token: &str,
    member_paths: bool,
) -> BTreeMap<String, Option<Value>> {
    let http = s.http(token);
    let mut views = BTreeMap::new();
    for r in fixtures() {
        let k = key(&r);
        views.insert(k.clone(), direct(&http, s, &k).await);
    }
    for (k, view) in &views {
        let (rtype, id) = k.split_once('/').unwrap();
        // vread
        let (status, body) = get_json(&http, &s.url(&format!("{k}/_history/1"))).await;
        match view {
            Some(v) => assert!(status == 200 && same(&body, v), "{who} vread {k}: {body}"),
            None => assert_eq!(status, 404, "{who} vread {k}: {body}"),
        }
        // instance history
        let (status, body) = get_json(&http, &s.url(&format!("{k}/_history"))).await;
        match view {
            Some(v) => {
                assert_eq!(status, 200, "{who} history {k}");
                let got = resources(&body);
                assert!(
                    got.len() == 1 && same(&got[0], v),
                    "{who} history {k}: {body}"
                );
            }
            None => assert_eq!(status, 404, "{who} history {k}: {body}"),
        }
        // search by id, with an accurate total, and the count alone
        let (status, body) =
            get_json(&http, &s.url(&format!("{rtype}?_id={id}&_total=accurate"))).await;
        assert_eq!(status, 200, "{who} search {k}: {body}");
        let got = resources(&body);
        let want = usize::from(view.is_some());
        assert_eq!(got.len(), want, "{who} search {k}: {body}");
        assert_eq!(body["total"], json!(want), "{who} search total {k}: {body}");
        if let Some(v) = view {
            assert!(same(&got[0], v), "{who} search {k}: {body}");
        }
        let (_, body) = get_json(&http, &s.url(&format!("{rtype}?_id={id}&_summary=count"))).await;
        assert_eq!(
            body["total"],
            json!(want),
            "{who} _summary=count {k}: {body}"
        );
    }
    // batch and transaction GET entries: each answers as the direct read (a withheld
    // resource is a 404 entry, like a resource that does not exist)
    let keys: Vec<&String> = views.keys().collect();
    for bundle_type in ["batch", "transaction"] {
        let body = post_bundle(&http, s, bundle_type, &keys).await;
        for (i, k) in keys.iter().enumerate() {
            let entry = &body["entry"][i];
            let code = entry["response"]["status"].as_str().unwrap_or_default();
            match &views[*k] {
                Some(v) => assert!(
                    code.starts_with("200") && same(&entry["resource"], v),
                    "{who} {bundle_type} {k}: {entry}"
                ),
                None => assert!(
                    code.starts_with("404") && entry.get("resource").is_none(),
                    "{who} {bundle_type} {k}: {entry}"
                ),
            }
        }
    }
    // _revinclude from the member, and _include back to it
    let visible: BTreeSet<String> = views
        .iter()
        .filter(|(k, v)| v.is_some() && !k.ends_with("obs-other"))
        .map(|(k, _)| k.clone())
        .collect();
    let fixture_keys: BTreeSet<String> = views.keys().cloned().collect();
    let included = all_pages(
        &http,
        s,
        &format!("Patient?_id={MEMBER}&_revinclude=Observation:subject&_revinclude=ExplanationOfBenefit:patient&_count=1000"),
    )
    .await;
    let patient_visible = direct(&http, s, &format!("Patient/{MEMBER}"))
        .await
        .is_some();
    let got: BTreeSet<String> = included
        .iter()
        .map(key)
        .filter(|k| fixture_keys.contains(k))
        .collect();
    let want = if patient_visible {
        visible.clone()
    } else {
        BTreeSet::new()
    };
    assert_eq!(got, want, "{who} _revinclude");
    for r in &included {
        if let Some(v) = views.get(&key(r)) {
            assert!(same(r, v.as_ref().unwrap()), "{who} _revinclude {}", key(r));
        }
    }
    let from_eob = all_pages(
        &http,
        s,
        "ExplanationOfBenefit?_id=eob-claim,eob-pa-stale,eob-pa-current&_include=ExplanationOfBenefit:patient",
    )
    .await;
    for r in &from_eob {
        match views.get(&key(r)) {
            Some(v) => assert!(
                same(r, v.as_ref().expect("only what a read gives")),
                "{who} _include {}",
                key(r)
            ),
            None => assert_eq!(key(r), format!("Patient/{MEMBER}"), "{who} _include"),
        }
    }
    if member_paths {
        // $everything
        let everything = all_pages(
            &http,
            s,
            &format!("Patient/{MEMBER}/$everything?_count=100"),
        )
        .await;
        let got: BTreeSet<String> = everything
            .iter()
            .map(key)
            .filter(|k| fixture_keys.contains(k))
            .collect();
        assert_eq!(got, visible, "{who} $everything");
        for r in &everything {
            if let Some(v) = views.get(&key(r)) {
                assert!(same(r, v.as_ref().unwrap()), "{who} $everything {}", key(r));
            }
        }
        // Patient/$export
        let resp = http
            .get(s.url("Patient/$export?_type=Observation,ExplanationOfBenefit"))
            .header("Prefer", "respond-async")
            .send()
            .await
            .unwrap();
        let poll = jobs::accepted(resp).await;
        let files = jobs::download(&http, &jobs::manifest(&s.state, &http, &poll).await).await;
        let exported: Vec<&Value> = files
            .iter()
            .filter(|(section, _, _)| section == "output")
            .flat_map(|(_, _, lines)| lines)
            .collect();
        let got: BTreeSet<String> = exported
            .iter()
            .map(|r| key(r))
            .filter(|k| fixture_keys.contains(k))
            .collect();
        // every member's data for the back office, the one member's for a member token
        let readable: BTreeSet<String> = views
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(got, readable, "{who} Patient/$export");
        for r in exported {
            if let Some(v) = views.get(&key(r)) {
                assert!(
                    same(r, v.as_ref().unwrap()),
                    "{who} Patient/$export {}",
                    key(r)
                );
            }
        }
    }
    views
}

/// POSTs a `bundle_type` Bundle of GET entries for `keys`; asserts 200.
async fn post_bundle(http: &Client, s: &TestServer, bundle_type: &str, keys: &[&String]) -> Value {
    let bundle = json!({"resourceType": "Bundle", "type": bundle_type,
        "entry": keys.iter().map(|k| json!({"request": {"method": "GET", "url": k}})).collect::<Vec<_>>()});
    let resp = http
        .post(s.url(""))
        .header("Content-Type", "application/fhir+json")
        .body(bundle.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{bundle_type}: {body}");
    body
}

fn has(view: &Option<Value>) -> bool {
    view.is_some()
}

#[tokio::test]
async fn every_read_path_releases_what_a_direct_read_does() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |_| {}).await;
        let t = setup(&s).await;

        // What the rules say a direct read gives.
        let admin = check_paths(&s, "admin", &t.admin, true).await;
        assert!(admin.values().all(has), "the back office reads everything");
        assert!(admin["ExplanationOfBenefit/eob-claim"].as_ref().unwrap()["payment"].is_object());

        let system = check_paths(&s, "payer system", &t.payer_system, false).await;
        assert!(
            system.values().all(|v| v.is_none()),
            "no member data on a payer system token"
        );

        for (who, token, sensitive) in [
            ("#regular", &t.regular, false),
            ("#sensitive", &t.sensitive, true),
        ] {
            let v = check_paths(&s, who, token, true).await;
            let claim = v["ExplanationOfBenefit/eob-claim"]
                .as_ref()
                .expect("the claim");
            for gone in ["payment", "total", "adjudication"] {
                assert!(claim.get(gone).is_none(), "{who}: claim {gone}: {claim}");
            }
            assert!(
                claim["item"][0].get("net").is_none()
                    && claim["item"][0].get("adjudication").is_none()
            );
            assert!(
                !has(&v["ExplanationOfBenefit/eob-pa-stale"]),
                "{who}: stale PA"
            );
            assert!(
                has(&v["ExplanationOfBenefit/eob-pa-current"]),
                "{who}: current PA"
            );
            assert!(has(&v["Observation/obs-current"]), "{who}");
            assert_eq!(
                has(&v["Observation/obs-sensitive"]),
                sensitive,
                "{who}: sensitive"
            );
            assert!(
                !has(&v["Observation/obs-old"]),
                "{who}: older than the window"
            );
            assert!(!has(&v["Observation/obs-2015"]), "{who}: older than 2016");
            assert!(!has(&v["Observation/obs-other"]), "{who}: another member");
        }

        // A member-scoped token cannot export a Group (refused at kick-off, not a failing job).
        let group = json!({"resourceType": "Group", "id": "g-member", "type": "person", "actual": true,
            "member": [{"entity": {"reference": format!("Patient/{MEMBER}")}}]});
        s.load(&[group]).await;
        for path in [
            "Group/g-member/$export",
            "Group/g-member/$davinci-data-export",
        ] {
            let resp = s
                .http(&t.regular)
                .get(s.url(path))
                .header("Prefer", "respond-async")
                .send()
                .await
                .unwrap();
            common::assert_outcome(resp, StatusCode::FORBIDDEN).await;
        }
        drop(t.regular_client);
        s.stop().await;
    }
}

/// Patient Access (issue 20 item 5): tokens from the member's own authorization, through the
/// sign-in and authorization pages over HTTP. A member's app reads back to 2016 with claims
/// as stored; a `payer` client that came through the same flow (the seed's "new health
/// plan") gets the payer-to-payer rules; the member's sensitive-data choice holds on every
/// path for both.
#[tokio::test]
async fn member_authorized_tokens_follow_their_client_kind_on_every_read_path() {
    use member_flow::{AppSpec, SCOPES};
    for b in backends() {
        let s = TestServer::start_demo(&b, |_| {}).await;
        s.load(&fixtures()).await;
        member_flow::set_login(&s, "member-two", MEMBER, "correct horse battery").await;
        let app = member_flow::register(&s, AppSpec::default()).await;
        let plan = member_flow::register(
            &s,
            AppSpec {
                name: "New Health Plan",
                kind: ClientKind::Payer,
                scopes: "system/*.rs",
                organization: Some("http://hl7.org/fhir/sid/us-npi|0123456789"),
                redirect: "https://newplan.example.org/callback",
                ..AppSpec::default()
            },
        )
        .await;
        let token = |client: &member_flow::App, sensitive: &'static str| {
            let s = &s;
            let client = client.clone();
            async move {
                let t = member_flow::tokens(
                    s,
                    &client,
                    SCOPES,
                    "member-two",
                    "correct horse battery",
                    sensitive,
                )
                .await;
                assert_eq!(t["patient"], MEMBER, "{t}");
                t["access_token"].as_str().unwrap().to_owned()
            }
        };
        for (who, access, sensitive) in [
            ("app, withhold", token(&app, "withhold").await, false),
            ("app, share", token(&app, "share").await, true),
        ] {
            let v = check_paths(&s, who, &access, true).await;
            let claim = v["ExplanationOfBenefit/eob-claim"]
                .as_ref()
                .expect("the claim");
            assert!(
                claim["payment"].is_object(),
                "{who}: claims as stored: {claim}"
            );
            assert!(
                has(&v["ExplanationOfBenefit/eob-pa-stale"]),
                "{who}: every PA"
            );
            assert!(has(&v["Observation/obs-current"]), "{who}");
            assert!(has(&v["Observation/obs-old"]), "{who}: back to 2016");
            assert!(!has(&v["Observation/obs-2015"]), "{who}: not before 2016");
            assert!(!has(&v["Observation/obs-other"]), "{who}: another member");
            assert_eq!(
                has(&v["Observation/obs-sensitive"]),
                sensitive,
                "{who}: sensitive"
            );
        }
        let access = token(&plan, "withhold").await;
        let v = check_paths(&s, "new plan", &access, true).await;
        let claim = v["ExplanationOfBenefit/eob-claim"]
            .as_ref()
            .expect("the claim");
        assert!(
            claim.get("payment").is_none(),
            "non-financial view: {claim}"
        );
        assert!(!has(&v["ExplanationOfBenefit/eob-pa-stale"]), "the PA rule");
        assert!(!has(&v["Observation/obs-old"]), "the five-year window");
        assert!(!has(&v["Observation/obs-sensitive"]), "withheld");
        assert!(!has(&v["Observation/obs-other"]), "another member");
        assert!(has(&v["Observation/obs-current"]));
        s.stop().await;
    }
}

#[tokio::test]
async fn a_revoked_consent_stops_its_tokens_and_queued_exports_at_once() {
    for b in backends() {
        // No export workers here: the kick-off queues; a second instance on the same database
        // runs the job after the revocation.
        let s = TestServer::start_demo(&b, |c| c.bulk.workers = 0).await;
        let t = setup(&s).await;
        let http = s.http(&t.regular);
        assert_eq!(
            http.get(s.url(&format!("Patient/{MEMBER}")))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let resp = http
            .get(s.url("Patient/$export"))
            .header("Prefer", "respond-async")
            .send()
            .await
            .unwrap();
        let poll = jobs::accepted(resp).await;

        assert_eq!(
            common::revoke_consent_with_cli(&s, MEMBER, &format!("{NPI}|{REGULAR_NPI}")),
            1
        );

        // The next request of the member token is refused, on every path.
        for path in [
            format!("Patient/{MEMBER}"),
            format!("Observation?patient={MEMBER}"),
            format!("Patient/{MEMBER}/$everything"),
        ] {
            let resp = http.get(s.url(&path)).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
            let challenge = resp.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(challenge.contains("invalid_token"), "{challenge}");
        }
        // Introspection says so too.
        let resp = Client::new()
            .post(s.state.auth.settings.introspection_url())
            .bearer_auth(&t.admin)
            .form(&[("token", t.regular.as_str())])
            .send()
            .await
            .unwrap();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["active"], false, "{body}");
        // The #sensitive payer's consent is untouched.
        assert_eq!(
            s.http(&t.sensitive)
                .get(s.url(&format!("Patient/{MEMBER}")))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );

        // The queued export, run by a second instance on the same database, is refused
        // before it reads anything; its owner's fresh system token sees why.
        let db_url = s.db.url.clone();
        let second = pdex::app::Server::bind(&pdex::config::ServerConfig {
            database_url: db_url,
            listen: "127.0.0.1:0".into(),
            bulk: pdex::config::BulkConfig {
                export_dir: s.exports.path().to_owned(),
                poll_interval_seconds: 1,
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
        let handle = tokio::spawn(async move {
            let _ = second.run().await;
        });
        let owner = s.http(&t.regular_client.token(&s).await);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let resp = owner.get(&poll).send().await.unwrap();
            let status = resp.status();
            let body = resp.text().await.unwrap();
            match status {
                StatusCode::ACCEPTED | StatusCode::TOO_MANY_REQUESTS => {}
                StatusCode::FORBIDDEN => {
                    assert!(body.contains("consent"), "{body}");
                    break;
                }
                other => panic!("the queued export after revocation: {other} {body}"),
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the job was never run"
            );
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        handle.abort();
        let _ = handle.await;
        s.stop().await;
    }
}

/// The window's settings, driven over HTTP: under PDex 2.2 five years is a floor (nothing is
/// cut off) and `--lookback-years 0` turns the window off under 2.1; the other release rules
/// stay.
#[tokio::test]
async fn the_window_follows_the_pdex_version_and_the_lookback_setting() {
    for b in backends() {
        for (what, configure) in [
            (
                "--pdex-version 2.2",
                (|c: &mut pdex::config::ServerConfig| {
                    c.exchange.pdex_version = pdex::config::PdexVersion::V22
                }) as fn(&mut pdex::config::ServerConfig),
            ),
            ("--lookback-years 0", |c| c.exchange.lookback_years = 0),
        ] {
            let s = TestServer::start_demo(&b, configure).await;
            let t = setup(&s).await;
            let http = s.http(&t.regular);
            for old in ["Observation/obs-old", "Observation/obs-2015"] {
                assert!(direct(&http, &s, old).await.is_some(), "{what}: {old}");
            }
            assert!(
                direct(&http, &s, "ExplanationOfBenefit/eob-pa-stale")
                    .await
                    .is_none(),
                "{what}"
            );
            let claim = direct(&http, &s, "ExplanationOfBenefit/eob-claim")
                .await
                .unwrap();
            assert!(claim.get("payment").is_none(), "{what}: {claim}");
            s.stop().await;
        }
    }
}
