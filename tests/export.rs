//! Bulk Data STU2 `$export` over real HTTP on every configured store: kick-off checks and
//! their OperationOutcomes, polling (202 + Retry-After + X-Progress, 429 when too frequent),
//! the manifest, downloads (NDJSON bytes equal to the stored resources, ranges, gzip), each
//! parameter's effect checked resource by resource, deleted entries, lenient handling,
//! cancellation, per-client limits, file splitting, expiry, and concurrent exports.

mod common;

use common::{Backend, TestServer, assert_outcome, backends};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn data() -> Vec<Value> {
    vec![
        json!({"resourceType":"Patient","id":"p1","name":[{"family":"One"}],"gender":"female"}),
        json!({"resourceType":"Patient","id":"p2","name":[{"family":"Two"}],"gender":"male"}),
        json!({"resourceType":"Patient","id":"p3","name":[{"family":"Three"}],"gender":"female"}),
        json!({"resourceType":"Practitioner","id":"doc","name":[{"family":"Shared"}]}),
        json!({"resourceType":"Observation","id":"o1","status":"final","code":{"text":"a"},"subject":{"reference":"Patient/p1"},"valueQuantity":{"value":1.50,"unit":"mg"}}),
        json!({"resourceType":"Observation","id":"o2","status":"preliminary","code":{"text":"b"},"subject":{"reference":"Patient/p1"}}),
        json!({"resourceType":"Observation","id":"o3","status":"final","code":{"text":"c"},"subject":{"reference":"Patient/p2"}}),
        // no subject: in the compartment of nobody, so only in system-level exports
        json!({"resourceType":"Observation","id":"o4","status":"final","code":{"text":"d"}}),
        json!({"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p2"},"code":{"text":"x"}}),
        json!({"resourceType":"Provenance","id":"prov1","target":[{"reference":"Observation/o1"}],"recorded":"2020-01-01T00:00:00Z","agent":[{"who":{"reference":"Practitioner/doc"}}]}),
        json!({"resourceType":"Group","id":"g1","type":"person","actual":true,"member":[{"entity":{"reference":"Patient/p1"}},{"entity":{"reference":"Patient/p2"}}]}),
    ]
}

async fn start(backend: &Backend) -> TestServer {
    let server = TestServer::start(backend).await;
    server.load(&data()).await;
    put_decimal_text(&server).await;
    server
}

/// Rewrites o1 from raw text, so that its decimal `1.50` is stored as written.
async fn put_decimal_text(server: &TestServer) {
    let resp = server
        .client
        .put(server.url("Observation/o1"))
        .header("Content-Type", "application/fhir+json")
        .body(r#"{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"a"},"subject":{"reference":"Patient/p1"},"valueQuantity":{"value":1.50,"unit":"mg"}}"#)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
}

/// Sends a kick-off with the recommended headers plus `extra`.
async fn kickoff(server: &TestServer, path: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut req = server
        .client
        .get(server.url(path))
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn kickoff_post(
    server: &TestServer,
    path: &str,
    params: Value,
    prefer: &str,
) -> reqwest::Response {
    server
        .client
        .post(server.url(path))
        .header("Accept", "application/fhir+json")
        .header("Prefer", prefer)
        .header("Content-Type", "application/fhir+json")
        .body(json!({"resourceType": "Parameters", "parameter": params}).to_string())
        .send()
        .await
        .unwrap()
}

/// Asserts a 202 kick-off and returns its absolute polling URL.
async fn accepted(resp: reqwest::Response) -> String {
    let status = resp.status();
    let loc = resp
        .headers()
        .get("content-location")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let loc = loc.expect("Content-Location");
    assert!(loc.starts_with("http://"), "absolute polling URL: {loc}");
    loc
}

/// Polls like a Bulk client (waiting Retry-After seconds) until done; returns the manifest
/// and the `Expires` header.
async fn wait(server: &TestServer, poll: &str) -> (Value, String) {
    for _ in 0..120 {
        let resp = server
            .client
            .get(poll)
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap();
        match resp.status() {
            StatusCode::ACCEPTED => {
                let secs: u64 = resp.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .expect("integer Retry-After");
                let progress = resp.headers()["x-progress"].to_str().unwrap().to_owned();
                assert!(progress.len() < 100, "{progress}");
                tokio::time::sleep(Duration::from_secs(secs)).await;
            }
            StatusCode::OK => {
                assert!(
                    resp.headers()["content-type"]
                        .to_str()
                        .unwrap()
                        .starts_with("application/json")
                );
                let expires = resp.headers()["expires"].to_str().unwrap().to_owned();
                let manifest: Value = resp.json().await.unwrap();
                for key in [
                    "transactionTime",
                    "request",
                    "requiresAccessToken",
                    "output",
                    "error",
                ] {
                    assert!(manifest.get(key).is_some(), "{key} in {manifest}");
                }
                assert_eq!(manifest["requiresAccessToken"], true);
                return (manifest, expires);
            }
            other => panic!("poll {poll}: {other} {}", resp.text().await.unwrap()),
        }
    }
    panic!("export {poll} did not finish");
}

async fn run(server: &TestServer, path: &str) -> Value {
    let poll = accepted(kickoff(server, path, &[]).await).await;
    wait(server, &poll).await.0
}

async fn download(server: &TestServer, url: &str) -> String {
    let resp = server
        .client
        .get(url)
        .header("Accept", "application/fhir+ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{url}");
    assert_eq!(resp.headers()["content-type"], "application/fhir+ndjson");
    resp.text().await.unwrap()
}

/// Every output line by manifest type: `type → [(id, line)]`, checking each line's
/// resourceType against its file's type.
async fn outputs(
    server: &TestServer,
    manifest: &Value,
    section: &str,
) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for item in manifest[section].as_array().unwrap() {
        let url = item["url"].as_str().unwrap();
        assert!(url.starts_with("http://"), "absolute file URL {url}");
        let rtype = item["type"].as_str().unwrap().to_owned();
        let text = download(server, url).await;
        let mut n = 0;
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("one JSON resource per line");
            assert_eq!(v["resourceType"], rtype.as_str(), "{line}");
            out.entry(rtype.clone()).or_default().push((
                v["id"].as_str().unwrap_or_default().to_owned(),
                line.to_owned(),
            ));
            n += 1;
        }
        assert_eq!(item["count"], n, "count of {url}");
    }
    out
}

/// `type → sorted ids` of an export's output.
fn ids(out: &BTreeMap<String, Vec<(String, String)>>) -> BTreeMap<String, Vec<String>> {
    out.iter()
        .map(|(t, rows)| {
            let mut ids: Vec<String> = rows.iter().map(|(id, _)| id.clone()).collect();
            ids.sort();
            (t.clone(), ids)
        })
        .collect()
}

fn expect(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(t, ids)| {
            let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
            v.sort();
            (t.to_string(), v)
        })
        .collect()
}

/// Every exported line is byte for byte the resource the store serves.
async fn assert_lines_are_stored_bytes(
    server: &TestServer,
    out: &BTreeMap<String, Vec<(String, String)>>,
) {
    for (rtype, rows) in out {
        for (id, line) in rows {
            let stored = server
                .get(&format!("{rtype}/{id}"))
                .await
                .text()
                .await
                .unwrap();
            assert_eq!(line, &stored, "{rtype}/{id}");
        }
    }
}

#[tokio::test]
async fn system_patient_and_group_levels_export_exactly_their_resources() {
    for backend in backends() {
        let server = start(&backend).await;

        let m = run(&server, "$export").await;
        assert_eq!(m["request"], server.url("$export"));
        assert_eq!(m["deleted"], json!([]));
        assert_eq!(m["error"], json!([]));
        let out = outputs(&server, &m, "output").await;
        assert_eq!(
            ids(&out),
            expect(&[
                ("Patient", &["p1", "p2", "p3"]),
                ("Practitioner", &["doc"]),
                ("Observation", &["o1", "o2", "o3", "o4"]),
                ("Condition", &["c1"]),
                ("Provenance", &["prov1"]),
                ("Group", &["g1"]),
            ]),
            "{backend:?}"
        );
        assert_lines_are_stored_bytes(&server, &out).await;
        // the decimal keeps its stored text
        assert!(out["Observation"].iter().any(|(_, l)| l.contains("1.50")));
        // Patient first
        assert_eq!(m["output"][0]["type"], "Patient");

        // Patient level: the members' compartments, Provenance included (Bulk STU2 SHALL)
        let m = run(&server, "Patient/$export").await;
        assert_eq!(
            ids(&outputs(&server, &m, "output").await),
            expect(&[
                ("Patient", &["p1", "p2", "p3"]),
                ("Observation", &["o1", "o2", "o3"]),
                ("Condition", &["c1"]),
                ("Provenance", &["prov1"]),
            ])
        );

        // Group level: only its members
        let m = run(&server, "Group/g1/$export").await;
        assert_eq!(m["request"], server.url("Group/g1/$export"));
        assert_eq!(
            ids(&outputs(&server, &m, "output").await),
            expect(&[
                ("Patient", &["p1", "p2"]),
                ("Observation", &["o1", "o2", "o3"]),
                ("Condition", &["c1"]),
                ("Provenance", &["prov1"]),
            ])
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn type_typefilter_elements_and_patient_parameters_filter_content() {
    for backend in backends() {
        let server = start(&backend).await;

        // _type, repeated parameters as one comma list
        let m = run(&server, "$export?_type=Observation&_type=Condition,Patient").await;
        assert_eq!(
            m["request"],
            server.url("$export?_type=Observation&_type=Condition,Patient")
        );
        assert_eq!(
            ids(&outputs(&server, &m, "output").await),
            expect(&[
                ("Patient", &["p1", "p2", "p3"]),
                ("Observation", &["o1", "o2", "o3", "o4"]),
                ("Condition", &["c1"]),
            ])
        );

        // _typeFilter: real searches, ORed per type; other types unfiltered
        let m = run(
            &server,
            "$export?_type=Observation,Patient&_typeFilter=Observation%3Fstatus%3Dfinal%26subject%3DPatient%2Fp1,Observation%3Fstatus%3Dpreliminary,Patient%3Fgender%3Dfemale",
        )
        .await;
        assert_eq!(
            ids(&outputs(&server, &m, "output").await),
            expect(&[("Patient", &["p1", "p3"]), ("Observation", &["o1", "o2"])])
        );

        // _elements: listed top-level elements only, marked SUBSETTED
        let m = run(
            &server,
            "$export?_type=Observation&_elements=Observation.status",
        )
        .await;
        let out = outputs(&server, &m, "output").await;
        for (_, line) in &out["Observation"] {
            let v: Value = serde_json::from_str(line).unwrap();
            let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                BTreeSet::from(["resourceType", "id", "meta", "status"]),
                "{line}"
            );
            assert!(line.contains("SUBSETTED"));
        }

        // patient (POST): only those members
        let poll = accepted(
            kickoff_post(
                &server,
                "Group/g1/$export",
                json!([{"name": "patient", "valueReference": {"reference": "Patient/p2"}}]),
                "respond-async",
            )
            .await,
        )
        .await;
        let (m, _) = wait(&server, &poll).await;
        assert_eq!(m["request"], server.url("Group/g1/$export"));
        assert_eq!(
            ids(&outputs(&server, &m, "output").await),
            expect(&[
                ("Patient", &["p2"]),
                ("Observation", &["o3"]),
                ("Condition", &["c1"]),
            ])
        );
        let poll = accepted(
            kickoff_post(
                &server,
                "Patient/$export",
                json!([
                    {"name": "patient", "valueReference": {"reference": "Patient/p1"}},
                    {"name": "_type", "valueString": "Patient,Observation"}
                ]),
                "respond-async",
            )
            .await,
        )
        .await;
        let (m, _) = wait(&server, &poll).await;
        assert_eq!(
            ids(&outputs(&server, &m, "output").await),
            expect(&[("Patient", &["p1"]), ("Observation", &["o1", "o2"])])
        );
        // includeAssociatedData=RelevantProvenanceResources adds Provenance to a _type list
        let m = run(
            &server,
            "Patient/$export?_type=Observation&includeAssociatedData=RelevantProvenanceResources",
        )
        .await;
        assert_eq!(
            ids(&outputs(&server, &m, "output").await),
            expect(&[
                ("Observation", &["o1", "o2", "o3"]),
                ("Provenance", &["prov1"])
            ])
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn since_exports_changes_and_lists_deletions_apart() {
    for backend in backends() {
        let server = start(&backend).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        tokio::time::sleep(Duration::from_millis(20)).await;
        server
            .load(&[
                json!({"resourceType":"Observation","id":"o2","status":"final","code":{"text":"b2"},"subject":{"reference":"Patient/p1"}}),
                json!({"resourceType":"Observation","id":"o5","status":"final","code":{"text":"e"},"subject":{"reference":"Patient/p3"}}),
            ])
            .await;
        let resp = server
            .client
            .delete(server.url("Observation/o3"))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        let resp = server
            .client
            .delete(server.url("Practitioner/doc"))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());

        let q = format!("$export?_since={}", urlencode(&since));
        let m = run(&server, &q).await;
        let out = outputs(&server, &m, "output").await;
        assert_eq!(ids(&out), expect(&[("Observation", &["o2", "o5"])]));
        assert_lines_are_stored_bytes(&server, &out).await;
        let deleted = deleted_urls(&server, &m).await;
        assert_eq!(deleted, vec!["Observation/o3", "Practitioner/doc"]);

        // Patient level: the shared Practitioner's deletion is not a member's
        let m = run(&server, &format!("Patient/{q}")).await;
        assert_eq!(
            ids(&outputs(&server, &m, "output").await),
            expect(&[("Observation", &["o2", "o5"])])
        );
        assert_eq!(deleted_urls(&server, &m).await, vec!["Observation/o3"]);

        // Group g1 (p1, p2): o5 belongs to p3
        let m = run(&server, &format!("Group/g1/{q}")).await;
        assert_eq!(
            ids(&outputs(&server, &m, "output").await),
            expect(&[("Observation", &["o2"])])
        );
        server.stop().await;
    }
}

/// The `request.url`s of the deleted Bundles, sorted (each line a transaction Bundle of
/// DELETE entries).
async fn deleted_urls(server: &TestServer, m: &Value) -> Vec<String> {
    let mut urls = Vec::new();
    for item in m["deleted"].as_array().unwrap() {
        assert_eq!(item["type"], "Bundle");
        for line in download(server, item["url"].as_str().unwrap())
            .await
            .lines()
        {
            let b: Value = serde_json::from_str(line).unwrap();
            assert_eq!(b["resourceType"], "Bundle");
            assert_eq!(b["type"], "transaction");
            for e in b["entry"].as_array().unwrap() {
                assert_eq!(e["request"]["method"], "DELETE");
                urls.push(e["request"]["url"].as_str().unwrap().to_owned());
            }
        }
    }
    urls.sort();
    urls
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn bad_kickoffs_get_operation_outcomes() {
    for backend in backends() {
        let server = start(&backend).await;
        // no Prefer: respond-async
        let resp = server
            .client
            .get(server.url("$export"))
            .header("Accept", "application/fhir+json")
            .send()
            .await
            .unwrap();
        assert_outcome(resp, StatusCode::BAD_REQUEST).await;
        let resp = server
            .client
            .get(server.url("$export"))
            .header("Accept", "text/csv")
            .header("Prefer", "respond-async")
            .send()
            .await
            .unwrap();
        assert_outcome(resp, StatusCode::NOT_ACCEPTABLE).await;
        for q in [
            "$export?_outputFormat=text%2Fcsv",
            "$export?_since=garbage",
            "$export?_since=2024-01-01",
            "$export?_type=NoSuchType",
            "$export?_elements=code.coding",
            "$export?unknown=1",
            "$export?_typeFilter=Observation%3Fno-such-param%3D1",
            "$export?_typeFilter=Observation%3Fstatus%3Dfinal%26_sort%3Ddate",
            "$export?includeAssociatedData=LatestProvenanceResources",
            "Patient/$export?_type=Practitioner",
            "Patient/$export?patient=Patient%2Fp1",
        ] {
            eprintln!("kick-off {q}");
            let resp = kickoff(&server, q, &[]).await;
            let oo = assert_outcome(resp, StatusCode::BAD_REQUEST).await;
            assert!(oo["issue"][0]["diagnostics"].is_string(), "{q}: {oo}");
        }
        // unknown Group
        assert_outcome(
            kickoff(&server, "Group/nope/$export", &[]).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        // POST: patient at system level; patients not in the Group / not known
        for (path, patient) in [
            ("$export", "Patient/p1"),
            ("Group/g1/$export", "Patient/p3"),
            ("Patient/$export", "Patient/nobody"),
        ] {
            let resp = kickoff_post(
                &server,
                path,
                json!([{"name": "patient", "valueReference": {"reference": patient}}]),
                "respond-async",
            )
            .await;
            assert_outcome(resp, StatusCode::BAD_REQUEST).await;
        }
        // a POST body that is not Parameters
        let resp = server
            .client
            .post(server.url("$export"))
            .header("Prefer", "respond-async")
            .header("Content-Type", "application/fhir+json")
            .body(r#"{"resourceType":"Patient"}"#)
            .send()
            .await
            .unwrap();
        assert_outcome(resp, StatusCode::BAD_REQUEST).await;
        // the accepted _outputFormat spellings (Bulk STU2 SHALL), each then cancelled
        for f in [
            "application%2Ffhir%2Bndjson",
            "application%2Fndjson",
            "ndjson",
        ] {
            let poll =
                accepted(kickoff(&server, &format!("$export?_outputFormat={f}"), &[]).await).await;
            let resp = server.client.delete(&poll).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::ACCEPTED);
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn lenient_handling_reports_ignored_parameters_in_the_error_file() {
    for backend in backends() {
        let server = start(&backend).await;
        let resp = kickoff(
            &server,
            "$export?_type=Patient,Observation,NoSuchType&_typeFilter=Observation%3Fno-such-param%3D1&bogus=1",
            &[("Prefer", "handling=lenient")],
        )
        .await;
        let poll = accepted(resp).await;
        let (m, _) = wait(&server, &poll).await;
        // the unsupported filter is not replaced by unfiltered data: no Observation at all
        assert_eq!(
            ids(&outputs(&server, &m, "output").await),
            expect(&[("Patient", &["p1", "p2", "p3"])])
        );
        let errors = outputs(&server, &m, "error").await;
        let text: Vec<&str> = errors["OperationOutcome"]
            .iter()
            .map(|(_, l)| l.as_str())
            .collect();
        assert_eq!(text.len(), 3, "{text:?}");
        for needle in ["NoSuchType", "no-such-param", "bogus"] {
            assert!(
                text.iter().any(|l| l.contains(needle)),
                "{needle}: {text:?}"
            );
        }
        // lenient patient list: the unknown one is reported, the known one exported
        let poll = accepted(
            kickoff_post(
                &server,
                "Group/g1/$export",
                json!([
                    {"name": "patient", "valueReference": {"reference": "Patient/p1"}},
                    {"name": "patient", "valueReference": {"reference": "Patient/p3"}},
                    {"name": "_type", "valueString": "Patient"}
                ]),
                "respond-async, handling=lenient",
            )
            .await,
        )
        .await;
        let (m, _) = wait(&server, &poll).await;
        assert_eq!(
            ids(&outputs(&server, &m, "output").await),
            expect(&[("Patient", &["p1"])])
        );
        let errors = outputs(&server, &m, "error").await;
        assert!(errors["OperationOutcome"][0].1.contains("Patient/p3"));
        server.stop().await;
    }
}

#[tokio::test]
async fn cancel_then_404_and_too_frequent_polls_get_429() {
    for backend in backends() {
        // no workers: jobs stay queued, so the in-progress answers can be checked at leisure
        let server = TestServer::start_with(&backend, |c| c.bulk.workers = 0).await;
        server.load(&data()).await;
        let poll = accepted(kickoff(&server, "$export", &[]).await).await;
        let resp = server.client.get(&poll).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        assert_eq!(resp.headers()["retry-after"], "1");
        assert!(resp.headers().contains_key("x-progress"));
        // at once again: too frequent
        let resp = server.client.get(&poll).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()["retry-after"], "1");
        assert_outcome(resp, StatusCode::TOO_MANY_REQUESTS).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let resp = server.client.get(&poll).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);

        let resp = server.client.delete(&poll).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let oo = assert_outcome(
            server.client.get(&poll).send().await.unwrap(),
            StatusCode::NOT_FOUND,
        )
        .await;
        assert!(
            oo["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains("cancelled")
        );
        assert_outcome(
            server.client.delete(&poll).send().await.unwrap(),
            StatusCode::NOT_FOUND,
        )
        .await;
        // an id that never existed
        assert_outcome(
            server
                .client
                .get(server.url("_export/0000"))
                .send()
                .await
                .unwrap(),
            StatusCode::NOT_FOUND,
        )
        .await;
        server.stop().await;
    }
}

#[tokio::test]
async fn a_client_over_its_export_limit_gets_429_with_retry_after() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |c| {
            c.bulk.workers = 0;
            c.bulk.max_jobs_per_client = 2;
        })
        .await;
        let a = accepted(kickoff(&server, "$export", &[]).await).await;
        let _b = accepted(kickoff(&server, "Patient/$export", &[]).await).await;
        let resp = kickoff(&server, "$export", &[]).await;
        assert_eq!(resp.headers()["retry-after"], "1");
        assert_outcome(resp, StatusCode::TOO_MANY_REQUESTS).await;
        // cancelling one frees a slot
        assert_eq!(
            server.client.delete(&a).send().await.unwrap().status(),
            StatusCode::ACCEPTED
        );
        accepted(kickoff(&server, "$export", &[]).await).await;
        server.stop().await;
    }
}

#[tokio::test]
async fn parts_split_at_the_configured_size_ranges_and_gzip() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |c| c.bulk.file_size_bytes = 300).await;
        let mut many = Vec::new();
        for i in 0..40 {
            many.push(json!({"resourceType":"Observation","id":format!("x{i:02}"),"status":"final","code":{"text":"t"},"subject":{"reference":"Patient/p1"}}));
        }
        server.load(&data()).await;
        server.load(&many).await;
        let m = run(&server, "$export?_type=Observation").await;
        let files = m["output"].as_array().unwrap();
        assert!(files.len() > 5, "split into parts: {m}");
        let out = outputs(&server, &m, "output").await;
        let got: Vec<String> = out["Observation"]
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        let unique: BTreeSet<&String> = got.iter().collect();
        assert_eq!(got.len(), 44, "every resource once");
        assert_eq!(unique.len(), 44);

        let url = files[0]["url"].as_str().unwrap();
        let full = download(&server, url).await;
        // a byte range
        let resp = server
            .client
            .get(url)
            .header("Range", "bytes=5-14")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            resp.headers()["content-range"],
            format!("bytes 5-14/{}", full.len()).as_str()
        );
        assert_eq!(resp.text().await.unwrap(), &full[5..15]);
        let resp = server
            .client
            .get(url)
            .header("Range", "bytes=100000-")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        // gzip when asked (reqwest here does not decode, so the bytes are checked by hand)
        let resp = server
            .client
            .get(url)
            .header("Accept-Encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-encoding"], "gzip");
        let gz = resp.bytes().await.unwrap();
        let mut plain = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain)
            .unwrap();
        assert_eq!(plain, full);
        // a name the job did not write
        let bad = url.rsplit_once('/').unwrap().0.to_owned() + "/..%2F..%2Fpdex.db";
        assert_eq!(
            server.client.get(&bad).send().await.unwrap().status(),
            StatusCode::NOT_FOUND
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn expired_and_cancelled_exports_lose_their_files() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |c| c.bulk.expiry_seconds = 1).await;
        server.load(&data()).await;
        let poll = accepted(kickoff(&server, "$export", &[]).await).await;
        let (m, expires) = wait(&server, &poll).await;
        assert!(expires.ends_with("GMT"), "{expires}");
        let url = m["output"][0]["url"].as_str().unwrap().to_owned();
        let job = poll.rsplit('/').next().unwrap().to_owned();
        let dir = server.exports.path().join("files").join(&job);
        assert!(dir.exists());
        let mut gone = false;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if !dir.exists() {
                gone = true;
                break;
            }
        }
        assert!(gone, "expired files removed");
        let oo = assert_outcome(
            server.client.get(&poll).send().await.unwrap(),
            StatusCode::NOT_FOUND,
        )
        .await;
        assert!(
            oo["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains("expired")
        );
        assert_outcome(
            server.client.get(&url).send().await.unwrap(),
            StatusCode::NOT_FOUND,
        )
        .await;

        // DELETE after completion releases the files at once
        let server2 = TestServer::start_with(&backend, |_| {}).await;
        server2.load(&data()).await;
        let poll = accepted(kickoff(&server2, "$export", &[]).await).await;
        let (m, _) = wait(&server2, &poll).await;
        let url = m["output"][0]["url"].as_str().unwrap().to_owned();
        let job = poll.rsplit('/').next().unwrap().to_owned();
        assert_eq!(
            server2.client.delete(&poll).send().await.unwrap().status(),
            StatusCode::ACCEPTED
        );
        assert!(!server2.exports.path().join("files").join(&job).exists());
        assert_outcome(
            server2.client.get(&url).send().await.unwrap(),
            StatusCode::NOT_FOUND,
        )
        .await;
        server.stop().await;
        server2.stop().await;
    }
}

#[tokio::test]
async fn concurrent_exports_each_get_complete_content() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |c| {
            c.bulk.max_jobs_per_client = 4;
            c.bulk.workers = 3;
        })
        .await;
        server.load(&data()).await;
        let polls = futures::future::join_all(
            [
                "$export",
                "Patient/$export",
                "Group/g1/$export",
                "$export?_type=Patient",
            ]
            .into_iter()
            .map(|p| async { accepted(kickoff(&server, p, &[]).await).await }),
        )
        .await;
        let manifests = futures::future::join_all(polls.iter().map(|p| wait(&server, p))).await;
        let counts: Vec<usize> = {
            let mut v = Vec::new();
            for (m, _) in &manifests {
                let out = outputs(&server, m, "output").await;
                v.push(out.values().map(Vec::len).sum());
            }
            v
        };
        assert_eq!(counts, vec![11, 8, 7, 3]);
        server.stop().await;
    }
}

#[tokio::test]
async fn capability_statement_declares_the_export_operations() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let cs: Value = server.get("metadata").await.json().await.unwrap();
        assert_eq!(
            cs["instantiates"][0],
            "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
        );
        assert_eq!(
            cs["rest"][0]["operation"][0]["definition"],
            "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
        );
        let res = cs["rest"][0]["resource"].as_array().unwrap();
        for (t, def) in [("Patient", "patient-export"), ("Group", "group-export")] {
            let r = res.iter().find(|r| r["type"] == t).unwrap();
            let ops = r["operation"].as_array().unwrap();
            let export = ops.iter().find(|o| o["name"] == "export").unwrap();
            assert_eq!(
                export["definition"],
                format!("http://hl7.org/fhir/uv/bulkdata/OperationDefinition/{def}").as_str()
            );
        }
        server.stop().await;
    }
}
