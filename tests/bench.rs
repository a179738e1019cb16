//! Load generators for BENCHMARKS.md, run against a live `pdex serve` (measurements, not timed
//! assertions; each is `#[ignore]` and run explicitly in release by the `bench/*.sh` scripts).
//! Every one registers its own clients with `pdex client add` on the server's database and
//! calls the server with real tokens, as a payer or the plan's back office would.
//!
//! Common environment: `PDEX_BENCH_URL` (FHIR base of the server), `PDEX_BENCH_DATABASE_URL`
//! (its database, for the client registration), `PDEX_BENCH_MEMBERS` (the `members.json` of the
//! `pdex synth` set that was imported).
//!
//! - `member_match`: `$member-match` throughput and latency, every request a different member,
//!   shaped like the HRex example; `PDEX_BENCH_CONSENT=1` adds a current Consent that is
//!   evaluated and stored on every match. `PDEX_BENCH_CONCURRENCY` (16), `PDEX_BENCH_SECONDS` (20).
//! - `system_export`: one system-level `$export` by an admin client, kick-off to manifest.
//! - `bulk_member_match`: `$bulk-member-match` of `PDEX_BENCH_MATCH_COUNT` (10,000) members with
//!   consents, kick-off to manifest, then (unless `PDEX_BENCH_DATA_EXPORT=0`)
//!   `$davinci-data-export` of the Matched Group.

mod common;
#[path = "support/jobs.rs"]
mod jobs;

use common::CliClient;
use reqwest::Client;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const NPI: &str = "http://hl7.org/fhir/sid/us-npi";
/// The requesting (new) payer of every benchmark; the server is the default old payer.
const NEW_PAYER: &str = "http://hl7.org/fhir/sid/us-npi|0123456789";
const MEMBER_MATCH: &str = "http://hl7.org/fhir/us/davinci-hrex/OperationDefinition/member-match";
const BULK_MEMBER_MATCH: &str =
    "http://hl7.org/fhir/us/davinci-pdex/OperationDefinition/BulkMemberMatch";
const DATA_EXPORT: &str =
    "http://hl7.org/fhir/us/davinci-atr/OperationDefinition/davinci-data-export";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn required(name: &str) -> String {
    env(name).unwrap_or_else(|| panic!("set {name}"))
}

fn members() -> Vec<Value> {
    let path = required("PDEX_BENCH_MEMBERS");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn coding(system: &str, code: &str) -> Value {
    json!({"coding": [{"system": system, "code": code}]})
}

/// The HRex member-match inputs for synthetic member `m`, with the submitted Patient as
/// `Patient/{pid}`: MemberPatient, CoverageToMatch, CoverageToLink and, with `consent`, a
/// `#sensitive` Consent current today from us (NPI 9876543210) to the new payer.
fn match_parts(m: &Value, pid: &str, consent: bool) -> Vec<Value> {
    let today = chrono::Utc::now().date_naive();
    let patient = json!({"reference": format!("Patient/{pid}")});
    let mb = coding("http://terminology.hl7.org/CodeSystem/v2-0203", "MB");
    let selfrel = coding(
        "http://terminology.hl7.org/CodeSystem/subscriber-relationship",
        "self",
    );
    let mut parts = vec![
        json!({"name": "MemberPatient", "resource": {"resourceType": "Patient", "id": pid,
            "name": [{"family": m["family"], "given": m["given"]}],
            "gender": m["gender"], "birthDate": m["birthDate"]}}),
        json!({"name": "CoverageToMatch", "resource": {"resourceType": "Coverage", "status": "active",
            "identifier": [{"type": mb, "value": m["member_id"]}],
            "subscriberId": m["subscriber_id"], "relationship": selfrel, "beneficiary": patient,
            "payor": [{"identifier": {"system": NPI, "value": "9876543210"}}]}}),
        json!({"name": "CoverageToLink", "resource": {"resourceType": "Coverage", "status": "active",
            "identifier": [{"type": mb, "system": "http://example.org/new-payer/identifiers/coverage",
                "value": format!("NP-{pid}")}],
            "relationship": selfrel, "beneficiary": patient,
            "payor": [{"identifier": {"system": NPI, "value": "0123456789"}}]}}),
    ];
    if consent {
        parts.push(json!({"name": "Consent", "resource": {"resourceType": "Consent", "status": "active",
            "scope": coding("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy"),
            "category": [coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "IDSCL")],
            "patient": patient, "performer": [patient],
            "sourceReference": {"reference": "http://example.org/DocumentReference/c1"},
            "policy": [{"uri": "http://hl7.org/fhir/us/davinci-hrex/StructureDefinition-hrex-consent.html#sensitive"}],
            "provision": {"type": "permit",
                "period": {"start": (today - chrono::Duration::days(1)).to_string(),
                    "end": (today + chrono::Duration::days(90)).to_string()},
                "action": [coding("http://terminology.hl7.org/CodeSystem/consentaction", "disclose")],
                "actor": [
                    {"role": coding("http://terminology.hl7.org/CodeSystem/provenance-participant-type", "performer"),
                     "reference": {"identifier": {"system": NPI, "value": "9876543210"}}},
                    {"role": coding("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP"),
                     "reference": {"identifier": {"system": NPI, "value": "0123456789"}}}]}}}));
    }
    parts
}

/// A fresh token for `client` on every call (runs outlive a token's lifetime).
async fn http(client: &CliClient) -> Client {
    client.http(&required("PDEX_BENCH_URL")).await
}

/// Kicks off with `request` (a 202 with `Content-Location`), polls until the manifest, and
/// returns it with the seconds from kick-off to manifest.
async fn run_job(client: &CliClient, request: reqwest::RequestBuilder) -> (Value, f64) {
    let started = Instant::now();
    let resp = request
        .header("Prefer", "respond-async")
        .send()
        .await
        .unwrap();
    let poll = jobs::accepted(resp).await;
    // Polled every 250 ms (not as Retry-After says): a completed job's manifest is answered
    // at once, so the time measured is the server's, not the poll interval's.
    loop {
        let resp = http(client).await.get(&poll).send().await.unwrap();
        match resp.status().as_u16() {
            200 => {
                let manifest: Value = resp.json().await.unwrap();
                return (manifest, started.elapsed().as_secs_f64());
            }
            202 | 429 => tokio::time::sleep(Duration::from_millis(250)).await,
            other => panic!("poll: {other} {}", resp.text().await.unwrap()),
        }
    }
}

fn output_count(manifest: &Value) -> i64 {
    manifest["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["count"].as_i64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement against a running server; run explicitly in release"]
async fn member_match() {
    let base = required("PDEX_BENCH_URL");
    let consent = env("PDEX_BENCH_CONSENT").is_some();
    let payer = CliClient::register_as(
        &required("PDEX_BENCH_DATABASE_URL"),
        "payer",
        Some(NEW_PAYER),
        &format!("system/*.rs {MEMBER_MATCH}"),
    );
    let bodies: Arc<Vec<String>> = Arc::new(
        members()
            .iter()
            .map(|m| {
                let parts = match_parts(m, "1", consent);
                json!({"resourceType": "Parameters", "parameter": parts}).to_string()
            })
            .collect(),
    );
    let concurrency: usize = env("PDEX_BENCH_CONCURRENCY").map_or(16, |v| v.parse().unwrap());
    let seconds: u64 = env("PDEX_BENCH_SECONDS").map_or(20, |v| v.parse().unwrap());
    let client = http(&payer).await;
    let url = format!("{}/Patient/$member-match", base.trim_end_matches('/'));
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, bodies, next) =
            (client.clone(), url.clone(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0usize;
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed) % bodies.len();
                let t0 = Instant::now();
                let resp = client
                    .post(&url)
                    .header("Content-Type", "application/fhir+json")
                    .body(bodies[i].clone())
                    .send()
                    .await
                    .unwrap();
                let ok = resp.status() == 200;
                let _ = resp.bytes().await;
                latencies.push(t0.elapsed());
                failed += usize::from(!ok);
            }
            (latencies, failed)
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await.unwrap();
        all.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "members={} consent={consent} concurrency={concurrency} requests={} non_200={failed} seconds={elapsed:.1} matches_per_second={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        bodies.len(),
        all.len(),
        (all.len() - failed) as f64 / elapsed,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    ); // a figure that counts refusals is no figure: any non-200 answer fails the run
    assert_eq!(failed, 0, "{failed} $member-match answers were not 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement against a running server; run explicitly in release"]
async fn system_export() {
    let base = required("PDEX_BENCH_URL");
    let admin = CliClient::register(&required("PDEX_BENCH_DATABASE_URL"), "system/*.rs");
    let kickoff = http(&admin).await.get(format!("{base}/$export"));
    let (manifest, seconds) = run_job(&admin, kickoff).await;
    let count = output_count(&manifest);
    println!(
        "export resources={count} files={} seconds={seconds:.1} resources_per_second={:.0}",
        manifest["output"].as_array().unwrap().len(),
        count as f64 / seconds
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement against a running server; run explicitly in release"]
async fn bulk_member_match() {
    let base = required("PDEX_BENCH_URL");
    let count: usize = env("PDEX_BENCH_MATCH_COUNT").map_or(10_000, |v| v.parse().unwrap());
    let payer = CliClient::register_as(
        &required("PDEX_BENCH_DATABASE_URL"),
        "payer",
        Some(NEW_PAYER),
        &format!("system/*.rs {BULK_MEMBER_MATCH} {DATA_EXPORT}"),
    );
    // Spread evenly over the set, so the request reaches the whole store.
    let all = members();
    let step = (all.len() / count).max(1);
    let bundles: Vec<Value> = all
        .iter()
        .step_by(step)
        .take(count)
        .enumerate()
        .map(|(i, m)| json!({"name": "MemberBundle", "part": match_parts(m, &format!("p{i}"), true)}))
        .collect();
    let sent = bundles.len();
    let body = json!({"resourceType": "Parameters", "parameter": bundles}).to_string();
    let kickoff = http(&payer)
        .await
        .post(format!("{base}/Group/$bulk-member-match"))
        .header("Content-Type", "application/fhir+json")
        .body(body);
    let (manifest, match_seconds) = run_job(&payer, kickoff).await;

    // The Matched Group: the Group line whose code is `match`.
    let files = jobs::download(&http(&payer).await, &manifest).await;
    let matched = files
        .into_iter()
        .filter(|(section, rtype, _)| section == "output" && rtype == "Group")
        .flat_map(|(_, _, lines)| lines)
        .find(|g| g["code"]["coding"][0]["code"] == "match")
        .expect("a Matched Group in the manifest");
    let group_size = matched["quantity"]
        .as_u64()
        .unwrap_or(matched["member"].as_array().map_or(0, |m| m.len() as u64));
    println!(
        "bulk_member_match sent={sent} matched={group_size} seconds_to_manifest={match_seconds:.1} members_per_second={:.0}",
        sent as f64 / match_seconds
    );

    if env("PDEX_BENCH_DATA_EXPORT").as_deref() == Some("0") {
        return;
    }
    let id = matched["id"].as_str().unwrap();
    let kickoff = http(&payer)
        .await
        .get(format!("{base}/Group/{id}/$davinci-data-export"));
    let (manifest, seconds) = run_job(&payer, kickoff).await;
    let exported = output_count(&manifest);
    println!(
        "davinci_data_export members={group_size} resources={exported} files={} seconds={seconds:.1} resources_per_second={:.0}",
        manifest["output"].as_array().unwrap().len(),
        exported as f64 / seconds
    );
}
