//! `Patient/{id}/$everything` over HTTP on the demo plan: the Patient first, the member's
//! whole compartment plus the shared resources it references, nothing of other members,
//! stable keyset paging (also while data is added), `_type`, `start`/`end`, `_since`, POST with
//! Parameters, and clear errors.

mod common;

use common::{TestServer, assert_outcome, backends, next_link};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Every entry across all pages, as `Type/id`, in order; and the number of pages.
async fn all_pages(s: &TestServer, first: &str) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut url = s.url(first);
    for page in 1..=500 {
        let bundle = s.search(&url).await;
        assert_eq!(bundle["type"], "searchset");
        out.extend(refs(&bundle));
        match next_link(&bundle) {
            Some(n) => url = n,
            None => return (out, page),
        }
    }
    panic!("too many pages");
}

fn refs(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap(),
                e["resource"]["id"].as_str().unwrap()
            )
        })
        .collect()
}

/// What `$everything` should return for `patient`, computed from the store directly.
async fn expected(s: &TestServer, patient: &str) -> BTreeSet<String> {
    let db = &s.state.store.db;
    let mut out: BTreeSet<String> = db
        .fetch(
            "SELECT rtype, id FROM resources WHERE patient_id = ? AND deleted = 0",
            &[patient.into()],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| format!("{}/{}", r.text(0).unwrap(), r.text(1).unwrap()))
        .collect();
    let shared = db
        .fetch(
            "SELECT DISTINCT x.target_type, x.target_id FROM idx_reference x JOIN resources m ON m.pk = x.res_pk \
             JOIN resources t ON t.rtype = x.target_type AND t.id = x.target_id AND t.deleted = 0 \
             WHERE m.patient_id = ? AND x.target_type IN ('Practitioner','PractitionerRole','Organization','Location','Medication')",
            &[patient.into()],
        )
        .await
        .unwrap();
    out.extend(
        shared
            .into_iter()
            .map(|r| format!("{}/{}", r.text(0).unwrap(), r.text(1).unwrap())),
    );
    out
}

#[tokio::test]
async fn everything_returns_the_compartment_and_its_references_across_stable_pages() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |_| {}).await;
        let want = expected(&s, "m000001").await;
        assert!(
            want.len() > 40,
            "a member with real history: {}",
            want.len()
        );
        assert!(want.iter().any(|r| r.starts_with("Practitioner/")));
        assert!(want.iter().any(|r| r.starts_with("Provenance/")));

        // one page
        let one = s.search("Patient/m000001/$everything?_count=10000").await;
        let got = refs(&one);
        assert_eq!(got[0], "Patient/m000001", "the Patient comes first");
        assert_eq!(one["total"], json!(got.len()));
        let set: BTreeSet<String> = got.iter().cloned().collect();
        assert_eq!(set.len(), got.len(), "no duplicates");
        assert_eq!(set, want);

        // small pages: the same, each once, in the same order
        let (paged, pages) = all_pages(&s, "Patient/m000001/$everything?_count=7").await;
        assert!(pages > 5);
        assert_eq!(paged, got);

        // nothing of another member
        let other = expected(&s, "m000002").await;
        for r in &got {
            if !r.starts_with("Practitioner")
                && !r.starts_with("Organization")
                && !r.starts_with("Location")
                && !r.starts_with("Medication/")
                && !r.starts_with("PractitionerRole")
            {
                assert!(!other.contains(r), "{r} belongs to m000002");
            }
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn paging_is_stable_while_data_is_added() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |_| {}).await;
        let first = s.search("Patient/m000001/$everything?_count=20").await;
        let mut seen = refs(&first);
        // a new record lands between page requests, before the cursor in (type, pk) order
        s.load(&[
            json!({"resourceType": "AllergyIntolerance", "id": "late-allergy",
            "patient": {"reference": "Patient/m000001"}, "code": {"text": "penicillin"}}),
        ])
        .await;
        let mut url = next_link(&first).unwrap();
        loop {
            let page = s.search(&url).await;
            seen.extend(refs(&page));
            match next_link(&page) {
                Some(n) => url = n,
                None => break,
            }
        }
        let set: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(set.len(), seen.len(), "no entry twice");
        let mut before = expected(&s, "m000001").await;
        before.remove("AllergyIntolerance/late-allergy");
        for r in &before {
            assert!(set.contains(r), "{r} skipped");
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn type_dates_since_and_post() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |_| {}).await;
        let (got, _) = all_pages(
            &s,
            "Patient/m000001/$everything?_type=Observation,Patient&_count=50",
        )
        .await;
        assert!(got.len() > 5);
        assert!(
            got.iter()
                .all(|r| r.starts_with("Observation/") || r == "Patient/m000001")
        );

        // start/end: observations with a care date in 2024 (and resources without care dates)
        let bundle = s
            .search("Patient/m000001/$everything?_type=Observation&start=2024-01-01&end=2024-12-31&_count=10000")
            .await;
        let obs: Vec<&Value> = bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| &e["resource"])
            .collect();
        let all_obs = s
            .search("Patient/m000001/$everything?_type=Observation&_count=10000")
            .await;
        assert!(obs.len() < all_obs["entry"].as_array().unwrap().len());
        for o in &obs {
            let when = o["effectiveDateTime"]
                .as_str()
                .or(o["effectivePeriod"]["start"].as_str())
                .or(o["issued"].as_str())
                .unwrap_or("2024");
            assert!(when.starts_with("2024"), "{when} outside 2024: {}", o["id"]);
        }

        // _since in the future: only the Patient
        let bundle = s
            .search("Patient/m000001/$everything?_since=2999-01-01")
            .await;
        assert_eq!(refs(&bundle), vec!["Patient/m000001"]);

        // POST with Parameters, same answer as GET
        let resp = s
            .post(
                "Patient/m000001/$everything",
                &json!({"resourceType": "Parameters", "parameter": [
                    {"name": "_type", "valueString": "Condition"},
                    {"name": "_count", "valueInteger": 1000}]}),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let posted: Value = resp.json().await.unwrap();
        let get = s
            .search("Patient/m000001/$everything?_type=Condition&_count=1000")
            .await;
        assert_eq!(refs(&posted), refs(&get));
        assert!(refs(&get).iter().all(|r| r.starts_with("Condition/")));
        s.stop().await;
    }
}

#[tokio::test]
async fn bad_requests_are_clear() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |_| {}).await;
        for (q, status) in [
            ("Patient/nobody/$everything", StatusCode::NOT_FOUND),
            (
                "Patient/m000001/$everything?_type=NotAType",
                StatusCode::BAD_REQUEST,
            ),
            (
                "Patient/m000001/$everything?start=yesterday",
                StatusCode::BAD_REQUEST,
            ),
            (
                "Patient/m000001/$everything?_count=-1",
                StatusCode::BAD_REQUEST,
            ),
            (
                "Patient/m000001/$everything?_cursor=garbage",
                StatusCode::BAD_REQUEST,
            ),
            (
                "Patient/m000001/$everything?color=blue",
                StatusCode::BAD_REQUEST,
            ),
            (
                "Patient/m000001/$everything?start=2024-01-01&end=2023-01-01",
                StatusCode::BAD_REQUEST,
            ),
        ] {
            assert_outcome(s.get(q).await, status).await;
        }
        // the ordinary REST routes next to it still work
        assert_eq!(s.get("Patient/m000001").await.status(), StatusCode::OK);
        assert_eq!(
            s.get("Patient/m000001/_history").await.status(),
            StatusCode::OK
        );
        s.stop().await;
    }
}
