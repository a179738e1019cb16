//! `$member-match` throughput and latency against a running server (a measurement for
//! BENCHMARKS.md, not a timed assertion). Each request is a different member of a synthetic
//! data set, shaped like the HRex example (card member id, subscriber id, demographics,
//! CoverageToLink; with `PDEX_BENCH_CONSENT=1` also a current Consent, which is evaluated and
//! stored on every match). Run in release:
//!
//! ```sh
//! PDEX_BENCH_URL=http://127.0.0.1:8080/fhir PDEX_BENCH_MEMBERS=/path/members.json \
//!   [PDEX_BENCH_TOKEN=…] [PDEX_BENCH_CONCURRENCY=16] [PDEX_BENCH_SECONDS=20] [PDEX_BENCH_CONSENT=1] \
//!   cargo test --release --test member_match_bench -- --ignored --nocapture
//! ```

use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn request(m: &Value, consent: bool) -> String {
    let today = chrono::Utc::now().date_naive();
    let mut parameter = vec![
        json!({"name": "MemberPatient", "resource": {"resourceType": "Patient", "id": "1",
            "name": [{"family": m["family"], "given": m["given"]}],
            "gender": m["gender"], "birthDate": m["birthDate"]}}),
        json!({"name": "CoverageToMatch", "resource": {"resourceType": "Coverage", "status": "active",
            "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB"}]}, "value": m["member_id"]}],
            "subscriberId": m["subscriber_id"],
            "relationship": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship", "code": "self"}]},
            "beneficiary": {"reference": "Patient/1"},
            "payor": [{"identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "9876543210"}}]}}),
        json!({"name": "CoverageToLink", "resource": {"resourceType": "Coverage", "status": "active",
            "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB"}]}, "system": "http://example.org/new-payer/identifiers/coverage", "value": "NP-1"}],
            "relationship": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship", "code": "self"}]},
            "beneficiary": {"reference": "Patient/1"},
            "payor": [{"identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "0123456789"}}]}}),
    ];
    if consent {
        parameter.push(json!({"name": "Consent", "resource": {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IDSCL"}]}],
            "patient": {"reference": "Patient/1"}, "performer": [{"reference": "Patient/1"}],
            "sourceReference": {"reference": "http://example.org/DocumentReference/c1"},
            "policy": [{"uri": "http://hl7.org/fhir/us/davinci-hrex/StructureDefinition-hrex-consent.html#sensitive"}],
            "provision": {"type": "permit",
                "period": {"start": (today - chrono::Duration::days(1)).to_string(), "end": (today + chrono::Duration::days(90)).to_string()},
                "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "disclose"}]}],
                "actor": [
                    {"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "performer"}]},
                     "reference": {"identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "9876543210"}}},
                    {"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
                     "reference": {"identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "0123456789"}}}]}}}));
    }
    json!({"resourceType": "Parameters", "parameter": parameter}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement against a running server; run explicitly in release"]
async fn measure_member_match() {
    let (Some(base), Some(members)) = (env("PDEX_BENCH_URL"), env("PDEX_BENCH_MEMBERS")) else {
        panic!("set PDEX_BENCH_URL and PDEX_BENCH_MEMBERS");
    };
    let consent = env("PDEX_BENCH_CONSENT").is_some();
    let members: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(members).unwrap()).unwrap();
    let bodies: Arc<Vec<String>> = Arc::new(members.iter().map(|m| request(m, consent)).collect());
    let concurrency: usize = env("PDEX_BENCH_CONCURRENCY").map_or(16, |v| v.parse().unwrap());
    let seconds: u64 = env("PDEX_BENCH_SECONDS").map_or(20, |v| v.parse().unwrap());
    let token = env("PDEX_BENCH_TOKEN");
    let url = format!("{}/Patient/$member-match", base.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, bodies, next, token) = (
            client.clone(),
            url.clone(),
            bodies.clone(),
            next.clone(),
            token.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut bad = 0usize;
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed) % bodies.len();
                let mut req = client
                    .post(&url)
                    .header("Content-Type", "application/fhir+json")
                    .body(bodies[i].clone());
                if let Some(t) = &token {
                    req = req.bearer_auth(t);
                }
                let t0 = Instant::now();
                let resp = req.send().await.unwrap();
                let ok = resp.status() == 200;
                let _ = resp.bytes().await;
                lat.push(t0.elapsed());
                if !ok {
                    bad += 1;
                }
            }
            (lat, bad)
        }));
    }
    let mut all = Vec::new();
    let mut bad = 0;
    for t in tasks {
        let (l, b) = t.await.unwrap();
        all.extend(l);
        bad += b;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "members={} consent={consent} concurrency={concurrency} requests={} non_200={bad} seconds={elapsed:.1} matches_per_second={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        bodies.len(),
        all.len(),
        (all.len() - bad) as f64 / elapsed,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
}
