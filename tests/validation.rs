//! Every write is validated against the FHIR R4 structure (issue 16 item 1): create, update,
//! batch and transaction entries, and `pdex import` refuse an invalid resource with 422 and
//! an OperationOutcome whose `expression` names the element, and store nothing of it;
//! `Prefer: handling=lenient` turns an unknown element into a warning. On SQLite, and on
//! PostgreSQL when `PDEX_TEST_POSTGRES_URL` is set.

mod common;

use common::{TestDb, TestServer, assert_outcome, backends, match_ids};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// One invalid resource of the corpus and what the answer must name.
struct Case {
    file: String,
    resource: Value,
    expression: String,
    code: String,
    /// The problem is an unknown element (which `Prefer: handling=lenient` accepts).
    unknown_element: bool,
}

/// `tests/fixtures/invalid/`: one invalid resource per file; `manifest.json` gives each
/// file's expected `expression` and issue `code`.
fn corpus() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let manifest: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let cases: Vec<Case> = manifest
        .iter()
        .map(|m| {
            let file = m["file"].as_str().unwrap().to_owned();
            let text = std::fs::read_to_string(dir.join(&file)).unwrap();
            Case {
                resource: serde_json::from_str(&text).unwrap(),
                expression: m["expression"].as_str().unwrap().to_owned(),
                code: m["code"].as_str().unwrap().to_owned(),
                unknown_element: m["unknown_element"] == true,
                file,
            }
        })
        .collect();
    // every file of the folder is in the manifest
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        files,
        cases.len() + 1,
        "files of {dir:?} not in manifest.json"
    );
    cases
}

/// The `expression`s of every issue of an OperationOutcome.
fn expressions(outcome: &Value) -> BTreeSet<String> {
    outcome["issue"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["expression"].as_array().cloned().unwrap_or_default())
        .map(|e| e.as_str().unwrap().to_owned())
        .collect()
}

/// Asserts a 422 naming exactly `case`'s element, with its issue code.
async fn assert_refused(resp: reqwest::Response, case: &Case, how: &str) {
    let outcome = assert_outcome(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(
        expressions(&outcome),
        BTreeSet::from([case.expression.clone()]),
        "{how} {}: {outcome}",
        case.file
    );
    let issue = &outcome["issue"][0];
    assert_eq!(issue["severity"], "error", "{how} {}: {outcome}", case.file);
    assert_eq!(
        issue["code"],
        case.code.as_str(),
        "{how} {}: {outcome}",
        case.file
    );
    let diagnostics = issue["diagnostics"].as_str().unwrap();
    assert!(
        diagnostics.starts_with(&format!("{}: ", case.expression)),
        "{how} {}: {diagnostics}",
        case.file
    );
}

#[tokio::test]
async fn every_invalid_resource_of_the_corpus_is_refused_by_create_and_update() {
    let cases = corpus();
    assert!(
        cases.len() >= 50,
        "the corpus has {} resources",
        cases.len()
    );
    let types: BTreeSet<&str> = cases
        .iter()
        .map(|c| c.resource["resourceType"].as_str().unwrap())
        .collect();
    assert!(types.len() >= 20, "{types:?}");
    for b in backends() {
        let s = TestServer::start(&b).await;
        for case in &cases {
            let rtype = case.resource["resourceType"].as_str().unwrap();
            let id = case.resource["id"].as_str().unwrap();
            let resp = s.post(rtype, &case.resource).await;
            assert_refused(resp, case, "POST").await;
            let resp = s.put(&format!("{rtype}/{id}"), &case.resource).await;
            assert_refused(resp, case, "PUT").await;
            // lenient handling forgives unknown elements only (their warning is tested below)
            if !case.unknown_element {
                let resp = s
                    .client
                    .put(s.url(&format!("{rtype}/{id}")))
                    .header("Content-Type", "application/fhir+json")
                    .header("Prefer", "handling=lenient")
                    .body(case.resource.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_refused(resp, case, "PUT lenient").await;
            }
            let resp = s.get(&format!("{rtype}/{id}")).await;
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{}", case.file);
        }
        // nothing of the corpus was stored, under any id
        for rtype in &types {
            assert!(s.ids(rtype).await.is_empty(), "{rtype} stored");
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn the_issue_examples_are_refused_naming_the_element() {
    let examples = [
        (
            json!({"resourceType": "Patient", "birthDate": "not-a-date"}),
            "Patient.birthDate",
        ),
        (
            json!({"resourceType": "Patient", "bogus": 1}),
            "Patient.bogus",
        ),
        (
            json!({"resourceType": "Patient", "gender": "sometimes"}),
            "Patient.gender",
        ),
        (
            json!({"resourceType": "Patient", "name": "x"}),
            "Patient.name",
        ),
        (
            json!({"resourceType": "Patient", "active": "yes"}),
            "Patient.active",
        ),
        (
            json!({"resourceType": "Patient", "birthDate": 1980}),
            "Patient.birthDate",
        ),
        (
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "valueQuantity": {"value": "12"}}),
            "Observation.valueQuantity.value",
        ),
    ];
    for b in backends() {
        let s = TestServer::start(&b).await;
        for (resource, expression) in &examples {
            let rtype = resource["resourceType"].as_str().unwrap();
            let outcome = assert_outcome(
                s.post(rtype, resource).await,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
            assert_eq!(
                outcome["issue"][0]["expression"],
                json!([expression]),
                "{outcome}"
            );
        }
        assert!(s.ids("Patient").await.is_empty());
        assert!(s.ids("Observation").await.is_empty());
        s.stop().await;
    }
}

#[tokio::test]
async fn several_problems_are_reported_together() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        let resp = s
            .post(
                "Patient",
                &json!({"resourceType": "Patient", "birthDate": "1980-13", "gender": "M",
                    "name": [{"given": ["Ann", 3]}]}),
            )
            .await;
        let outcome = assert_outcome(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(
            expressions(&outcome),
            BTreeSet::from([
                "Patient.birthDate".to_owned(),
                "Patient.gender".to_owned(),
                "Patient.name[0].given[1]".to_owned(),
            ]),
            "{outcome}"
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn an_invalid_entry_refuses_the_whole_transaction() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": "tx-ok"},
             "request": {"method": "PUT", "url": "Patient/tx-ok"}},
            {"fullUrl": "urn:uuid:c757873d-ec9a-4326-a141-556f43239520",
             "resource": {"resourceType": "Patient", "birthDate": "not-a-date"},
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "subject": {"reference": "urn:uuid:c757873d-ec9a-4326-a141-556f43239520"}},
             "request": {"method": "POST", "url": "Observation"}}
        ]});
        let outcome =
            assert_outcome(s.post("", &bundle).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(
            outcome["issue"][0]["expression"],
            json!(["Patient.birthDate"]),
            "{outcome}"
        );
        let diagnostics = outcome["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(
            diagnostics.starts_with("entry 1: Patient.birthDate: "),
            "{diagnostics}"
        );
        assert_eq!(s.get("Patient/tx-ok").await.status(), StatusCode::NOT_FOUND);
        assert!(s.ids("Patient").await.is_empty());
        assert!(s.ids("Observation").await.is_empty());
        s.stop().await;
    }
}

#[tokio::test]
async fn an_invalid_batch_entry_fails_alone() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": {"resourceType": "Patient", "id": "b-ok"},
             "request": {"method": "PUT", "url": "Patient/b-ok"}},
            {"resource": {"resourceType": "Patient", "id": "b-bad", "gender": "sometimes"},
             "request": {"method": "PUT", "url": "Patient/b-bad"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "valueQuantity": {"value": "12"}},
             "request": {"method": "POST", "url": "Observation"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "valueQuantity": {"value": 12}},
             "request": {"method": "POST", "url": "Observation"}}
        ]});
        let resp = s.post("", &bundle).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let out: Value = resp.json().await.unwrap();
        assert_eq!(out["type"], "batch-response");
        let status = |i: usize| out["entry"][i]["response"]["status"].as_str().unwrap();
        let expression =
            |i: usize| &out["entry"][i]["response"]["outcome"]["issue"][0]["expression"];
        assert!(status(0).starts_with("201"), "{out}");
        assert_eq!(status(1), "422", "{out}");
        assert_eq!(expression(1), &json!(["Patient.gender"]), "{out}");
        assert_eq!(status(2), "422", "{out}");
        assert_eq!(
            expression(2),
            &json!(["Observation.valueQuantity.value"]),
            "{out}"
        );
        assert!(status(3).starts_with("201"), "{out}");
        assert_eq!(s.ids("Patient").await, ["b-ok"]);
        assert_eq!(s.ids("Observation").await.len(), 1);
        s.stop().await;
    }
}

#[tokio::test]
async fn lenient_handling_accepts_unknown_elements_with_a_warning() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        let resource = json!({"resourceType": "Patient", "birthDate": "1980-02-01", "bogus": 1});
        let send = |prefer: Option<&'static str>, resource: Value| {
            let mut req = s
                .client
                .post(s.url("Patient"))
                .header("Content-Type", "application/fhir+json");
            if let Some(p) = prefer {
                req = req.header("Prefer", p);
            }
            req.body(resource.to_string()).send()
        };
        // strict by default
        let outcome = assert_outcome(
            send(None, resource.clone()).await.unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(outcome["issue"][0]["expression"], json!(["Patient.bogus"]));
        assert!(s.ids("Patient").await.is_empty());

        // lenient: 201, and the OperationOutcome names the ignored element as a warning
        let resp = send(Some("handling=lenient"), resource.clone())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        let outcome: Value = resp.json().await.unwrap();
        assert_eq!(outcome["resourceType"], "OperationOutcome", "{outcome}");
        let warnings: Vec<&Value> = outcome["issue"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["severity"] == "warning")
            .collect();
        assert_eq!(warnings.len(), 1, "{outcome}");
        assert_eq!(warnings[0]["code"], "structure");
        assert_eq!(warnings[0]["expression"], json!(["Patient.bogus"]));
        assert_eq!(s.get(&location).await.status(), StatusCode::OK);

        // lenient forgives unknown elements only
        let bad = json!({"resourceType": "Patient", "birthDate": "not-a-date", "bogus": 1});
        let outcome = assert_outcome(
            send(Some("handling=lenient"), bad).await.unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(
            outcome["issue"][0]["expression"],
            json!(["Patient.birthDate"])
        );
        assert_eq!(outcome["issue"][1]["severity"], "warning", "{outcome}");

        // in a batch, the warning is the entry's response.outcome
        let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": {"resourceType": "Patient", "id": "l-1", "bogus": true},
             "request": {"method": "PUT", "url": "Patient/l-1"}}]});
        let resp = s
            .client
            .post(s.url(""))
            .header("Content-Type", "application/fhir+json")
            .header("Prefer", "handling=lenient")
            .body(bundle.to_string())
            .send()
            .await
            .unwrap();
        let out: Value = resp.json().await.unwrap();
        let response = &out["entry"][0]["response"];
        assert!(
            response["status"].as_str().unwrap().starts_with("201"),
            "{out}"
        );
        assert_eq!(
            response["outcome"]["issue"][0]["severity"], "warning",
            "{out}"
        );
        assert_eq!(
            response["outcome"]["issue"][0]["expression"],
            json!(["Patient.bogus"]),
            "{out}"
        );
        assert_eq!(s.ids("Patient").await.len(), 2);
        s.stop().await;
    }
}

#[tokio::test]
async fn import_names_file_line_and_element_and_stores_nothing_of_the_line() {
    for b in backends() {
        let db = TestDb::new(&b).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("Patient.ndjson");
        std::fs::write(
            &file,
            concat!(
                r#"{"resourceType":"Patient","id":"i-a","birthDate":"1980-02-01"}"#,
                "\n",
                r#"{"resourceType":"Patient","id":"i-b","birthDate":"not-a-date"}"#,
                "\n",
                r#"{"resourceType":"Patient","id":"i-c","gender":"female"}"#,
                "\n",
            ),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pdex"))
            .args(["import", file.to_str().unwrap()])
            .env("PDEX_DATABASE_URL", &db.url)
            .env_remove("PDEX_CONFIG")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stdout} {stderr}");
        assert!(
            stderr.contains("Patient.ndjson:2: Patient.birthDate: "),
            "{stderr}"
        );
        assert!(stdout.contains("2 created"), "{stdout}");

        let s = TestServer::start_on(&db.url, |_| {}).await;
        let bundle = s.search("Patient").await;
        let mut ids = match_ids(&bundle);
        ids.sort();
        assert_eq!(ids, ["i-a", "i-c"]);
        s.stop().await;
        db.cleanup().await;
    }
}
