//! The ready-to-send requests in `examples/`, each sent verbatim (the file's bytes as the
//! body) over real HTTP against the demo plan, with real tokens of the demo clients: their
//! shipped private keys (`fixtures/demo-clients/`) sign `private_key_jwt` assertions, as
//! `pdex token` does. The payer-to-payer path `$member-match` → member token → `$everything`,
//! then `$bulk-member-match` (one member in each of the Matched, NonMatched and
//! ConsentConstrained buckets) → `Group/{id}/$davinci-data-export`; and the Patient and
//! transaction Bundle that the README's write examples post, with the README's searches.

mod common;
#[path = "support/jobs.rs"]
mod jobs;

use common::{TestServer, backends};
use pdex::auth::assertion::{SigningKey, token_form};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use std::path::Path;

/// An example request, byte for byte.
fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The demo server: the demo data and the demo clients, registered as `serve --demo` does.
async fn demo(b: &common::Backend) -> TestServer {
    let s = TestServer::start_demo(b, |_| {}).await;
    pdex::demo::register_clients(&s.state.store).await.unwrap();
    s
}

/// The token response for demo client `client_id`, signed with its key file; `member` asks
/// for a member-scoped token.
async fn token_response(s: &TestServer, client_id: &str, member: Option<&str>) -> Value {
    let demo = pdex::demo::clients()
        .into_iter()
        .find(|c| c.client_id == client_id)
        .unwrap();
    let key = SigningKey::from_file(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/demo-clients")
            .join(demo.key_file),
        None,
    )
    .unwrap();
    let form = token_form(&key, client_id, &s.token_url(), None, member).unwrap();
    let resp = Client::new()
        .post(s.token_url())
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{client_id}: {body}");
    body
}

async fn as_client(s: &TestServer, client_id: &str, member: Option<&str>) -> Client {
    let body = token_response(s, client_id, member).await;
    s.http(body["access_token"].as_str().unwrap())
}

/// POSTs an example file as a FHIR JSON body, `Prefer: respond-async` when `asynchronous`.
async fn post_example(
    s: &TestServer,
    http: &Client,
    path: &str,
    file: &str,
    asynchronous: bool,
) -> reqwest::Response {
    let mut req = http
        .post(s.url(path))
        .header("Content-Type", "application/fhir+json")
        .header("Accept", "application/fhir+json")
        .body(example(file));
    if asynchronous {
        req = req.header("Prefer", "respond-async");
    }
    req.send().await.unwrap()
}

async fn json_ok(resp: reqwest::Response, expect: StatusCode) -> Value {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, expect, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn member_match_then_a_member_token_and_everything() {
    for b in backends() {
        let s = demo(&b).await;
        let payer = as_client(&s, "demo-payer", None).await;
        let out = json_ok(
            post_example(
                &s,
                &payer,
                "Patient/$member-match",
                "member-match.json",
                false,
            )
            .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(out["parameter"][0]["name"], "MemberIdentifier");
        assert_eq!(
            out["parameter"][0]["valueIdentifier"]["value"],
            common::demo_member("m000000")["umb"]
        );
        assert_eq!(
            out["parameter"][1]["valueReference"]["reference"],
            "Patient/m000000"
        );

        // the consent the example carries names the demo payer: a member token, then the data
        let member = token_response(&s, "demo-payer", Some("Patient/m000000")).await;
        assert_eq!(member["patient"], "m000000");
        let http = s.http(member["access_token"].as_str().unwrap());
        let everything = json_ok(
            http.get(s.url("Patient/m000000/$everything"))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        let entries = everything["entry"].as_array().unwrap();
        assert!(entries.iter().any(
            |e| e["resource"]["resourceType"] == "Patient" && e["resource"]["id"] == "m000000"
        ));
        assert!(
            entries
                .iter()
                .any(|e| e["resource"]["resourceType"] == "ExplanationOfBenefit"),
            "claims within the look-back window"
        );
        // another member is out of reach of that token
        let resp = http
            .get(s.url("Patient/m000001/$everything"))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_client_error(), "{}", resp.status());

        // the provider and the admin get tokens with their keys too
        let provider = token_response(&s, "demo-provider", None).await;
        assert!(provider["scope"].as_str().unwrap().contains("member-match"));
        let admin = token_response(&s, "demo-admin", None).await;
        assert_eq!(admin["scope"], "system/*.cruds");
        s.stop().await;
    }
}

#[tokio::test]
async fn bulk_member_match_buckets_then_davinci_data_export() {
    for b in backends() {
        let s = demo(&b).await;
        let payer = as_client(&s, "demo-payer", None).await;
        let resp = post_example(
            &s,
            &payer,
            "Group/$bulk-member-match",
            "bulk-member-match.json",
            true,
        )
        .await;
        let poll = jobs::accepted(resp).await;
        let files = jobs::download(&payer, &jobs::manifest(&s.state, &payer, &poll).await).await;
        let groups: Vec<&Value> = files
            .iter()
            .filter(|f| f.1 == "Group")
            .flat_map(|f| &f.2)
            .collect();
        let bucket = |code: &str| -> Vec<String> {
            groups
                .iter()
                .find(|g| g["code"]["coding"][0]["code"] == code)
                .and_then(|g| g["member"].as_array())
                .map(|m| {
                    m.iter()
                        .map(|m| m["entity"]["reference"].as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(bucket("match"), ["Patient/m000001"]);
        assert_eq!(bucket("nomatch"), ["#unknown-member"]);
        assert_eq!(bucket("consentconstraint"), ["#consent-not-yet-valid"]);
        let group = groups
            .iter()
            .find(|g| g["code"]["coding"][0]["code"] == "match")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();

        let resp = post_example(
            &s,
            &payer,
            &format!("Group/{group}/$davinci-data-export"),
            "davinci-data-export.json",
            true,
        )
        .await;
        let poll = jobs::accepted(resp).await;
        let files = jobs::download(&payer, &jobs::manifest(&s.state, &payer, &poll).await).await;
        let patients: Vec<&str> = files
            .iter()
            .filter(|f| f.0 == "output" && f.1 == "Patient")
            .flat_map(|f| &f.2)
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        assert_eq!(patients, ["m000001"]);
        assert!(
            files
                .iter()
                .any(|f| f.0 == "output" && f.1 == "ExplanationOfBenefit"),
            "the member's claims"
        );
        s.stop().await;
    }
}

/// The README's write examples with the demo admin's token: create, update with a version
/// check, history, a transaction Bundle, and the searches that follow them.
#[tokio::test]
async fn readme_write_examples_post_the_example_files() {
    for b in backends() {
        let s = demo(&b).await;
        let admin = as_client(&s, "demo-admin", None).await;
        let put = |version: Option<&str>| {
            let mut req = admin
                .put(s.url("Patient/example-ann"))
                .header("Content-Type", "application/fhir+json")
                .body(example("patient.json"));
            if let Some(v) = version {
                req = req.header("If-Match", v);
            }
            req.send()
        };
        let created = put(None).await.unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let changed = put(Some("W/\"1\"")).await.unwrap();
        assert_eq!(changed.status(), StatusCode::OK);
        assert_eq!(changed.headers()["etag"], "W/\"2\"");
        let stale = put(Some("W/\"1\"")).await.unwrap();
        assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
        let history = json_ok(
            admin
                .get(s.url("Patient/example-ann/_history"))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(history["entry"].as_array().unwrap().len(), 2);
        let posted = post_example(&s, &admin, "Patient", "patient.json", false).await;
        assert_eq!(posted.status(), StatusCode::CREATED);

        let out = json_ok(
            post_example(&s, &admin, "", "transaction.json", false).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(out["type"], "transaction-response");
        let location = out["entry"][0]["response"]["location"].as_str().unwrap();
        let patient = location.split('/').nth(1).unwrap();
        let found = s
            .ids(&format!(
                "Observation?patient={patient}&code=http://loinc.org|4548-4"
            ))
            .await;
        assert_eq!(found.len(), 1, "the Observation refers to the new Patient");
        s.stop().await;
    }
}
