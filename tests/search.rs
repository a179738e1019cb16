//! FHIR search over real HTTP, on every configured store, against expectations computed by
//! hand from FHIR's rules (not from the server's own output).

mod common;

use common::{TestServer, backends, entries_with_mode, match_ids, next_link, sorted};
use reqwest::StatusCode;
use serde_json::{Value, json};

const LOINC: &str = "http://loinc.org";
const CAT: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

fn fixture() -> Vec<Value> {
    vec![
        json!({"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1970-05-01",
            "name": [{"family": "Smith", "given": ["John", "Q"]}],
            "identifier": [{"system": "http://plan.example/mb", "value": "MB100"}],
            "address": [{"city": "Boston", "state": "MA"}]}),
        json!({"resourceType": "Patient", "id": "p2", "gender": "female", "birthDate": "1985-11-20",
            "name": [{"family": "Smíth-Jones", "given": ["Ána"]}],
            "identifier": [{"system": "http://plan.example/mb", "value": "MB200"}]}),
        json!({"resourceType": "Patient", "id": "p3", "gender": "female", "birthDate": "1985",
            "name": [{"family": "Brown", "given": ["Smithy"]}],
            "identifier": [{"system": "http://other.example", "value": "MB100"}]}),
        json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "category": [{"coding": [{"system": CAT, "code": "laboratory"}]}],
            "code": {"coding": [{"system": LOINC, "code": "2339-0", "display": "Glucose"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2020-03-15T10:00:00Z",
            "valueQuantity": {"value": 95, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"}}),
        json!({"resourceType": "Observation", "id": "o2", "status": "preliminary",
            "category": [{"coding": [{"system": CAT, "code": "vital-signs"}]}],
            "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
            "subject": {"reference": "Patient/p1"},
            "effectivePeriod": {"start": "2021-01-01", "end": "2021-01-31"},
            "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}}),
        json!({"resourceType": "Observation", "id": "o3", "status": "final",
            "category": [{"coding": [{"system": CAT, "code": "laboratory"}]}],
            "code": {"coding": [{"system": LOINC, "code": "2339-0"}, {"system": "http://example.org/local", "code": "GLU"}]},
            "subject": {"reference": "Patient/p2"}, "effectiveDateTime": "2020-03",
            "valueQuantity": {"value": 100.5, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"}}),
        json!({"resourceType": "Observation", "id": "o4", "status": "amended",
            "code": {"text": "Free text note"},
            "subject": {"reference": "Patient/p2"}, "effectiveDateTime": "2022-06-01T23:30:00-05:00",
            "performer": [{"identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}}]}),
        json!({"resourceType": "Encounter", "id": "e1", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "Patient/p1"},
            "period": {"start": "2019-01-01T08:00:00Z", "end": "2019-01-03T12:00:00Z"}}),
        json!({"resourceType": "Encounter", "id": "e2", "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": "Patient/p2"}, "period": {"start": "2023-05-05"}}),
        json!({"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Welby"}]}),
        json!({"resourceType": "Organization", "id": "org1", "name": "Acme Health"}),
        json!({"resourceType": "Provenance", "id": "prov1", "target": [{"reference": "Observation/o1"}],
            "recorded": "2020-03-15T11:00:00Z", "agent": [{"who": {"reference": "Practitioner/dr1"}}]}),
        json!({"resourceType": "Provenance", "id": "prov2", "target": [{"reference": "Patient/p1"}],
            "recorded": "2020-03-15T11:00:00Z", "agent": [{"who": {"reference": "Organization/org1"}}]}),
        json!({"resourceType": "Medication", "id": "med1", "code": {"text": "metformin"}}),
        json!({"resourceType": "MedicationRequest", "id": "mr1", "status": "active", "intent": "order",
            "medicationReference": {"reference": "Medication/med1"}, "subject": {"reference": "Patient/p1"},
            "authoredOn": "2020-04-01"}),
        json!({"resourceType": "ExplanationOfBenefit", "id": "eob1", "status": "active", "use": "claim",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
            "identifier": [{"system": "http://plan.example/claim", "value": "EOB1"}],
            "patient": {"reference": "Patient/p1"}, "created": "2020-02-10T00:00:00Z",
            "insurer": {"reference": "Organization/org1"}, "provider": {"reference": "Organization/org1"},
            "billablePeriod": {"start": "2020-02-01", "end": "2020-02-05"}, "outcome": "complete",
            "insurance": [{"focal": true, "coverage": {"display": "plan"}}],
            "item": [{"sequence": 1, "servicedDate": "2020-02-03", "productOrService": {"text": "visit"}}]}),
    ]
}

/// (query, expected ids) pairs, each worked out from the fixture by hand.
fn cases(base: &str) -> Vec<(String, Vec<&'static str>)> {
    let c = |q: &str, ids: Vec<&'static str>| (q.to_owned(), ids);
    vec![
        // token
        c("Observation?code=2339-0", vec!["o1", "o3"]),
        c("Observation?code=http://loinc.org|2339-0", vec!["o1", "o3"]),
        c(
            "Observation?code=http%3A%2F%2Fexample.org%2Flocal%7CGLU",
            vec!["o3"],
        ),
        c("Observation?code=http://loinc.org|", vec!["o1", "o2", "o3"]),
        c("Observation?code=|2339-0", vec![]),
        c("Observation?code=2339-0,8867-4", vec!["o1", "o2", "o3"]),
        c(
            "Observation?category=laboratory&status=final",
            vec!["o1", "o3"],
        ),
        c(
            "Observation?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
            vec!["o1", "o3"],
        ),
        c("Observation?status:not=final", vec!["o2", "o4"]),
        c("Observation?category:missing=true", vec!["o4"]),
        c("Observation?category:missing=false", vec!["o1", "o2", "o3"]),
        c("Observation?code:text=free", vec!["o4"]),
        c("Patient?identifier=MB100", vec!["p1", "p3"]),
        c(
            "Patient?identifier=http://plan.example/mb|MB100",
            vec!["p1"],
        ),
        c("Patient?gender=female", vec!["p2", "p3"]),
        c("Patient?gender=female&identifier=MB100", vec!["p3"]),
        // string: case-insensitive, accent-insensitive starts-with
        c("Patient?name=smi", vec!["p1", "p2", "p3"]),
        c("Patient?family=smith", vec!["p1", "p2"]),
        c("Patient?family=SMITH", vec!["p1", "p2"]),
        c("Patient?family:exact=Smith", vec!["p1"]),
        c("Patient?family:contains=jones", vec!["p2"]),
        c("Patient?name=ana", vec!["p2"]),
        c("Patient?address-city=boston", vec!["p1"]),
        c("Patient?given=john&family=smith", vec!["p1"]),
        // dates: partial precision and range semantics
        c("Patient?birthdate=1985", vec!["p2", "p3"]),
        c("Patient?birthdate=1985-11-20", vec!["p2"]),
        c("Patient?birthdate=ge1985-01-01", vec!["p2", "p3"]),
        c("Patient?birthdate=lt1980", vec!["p1"]),
        c("Patient?birthdate=ne1985", vec!["p1"]),
        c("Observation?date=2020-03", vec!["o1", "o3"]),
        c("Observation?date=2020-03-15", vec!["o1"]),
        c("Observation?date=gt2020-12-31", vec!["o2", "o4"]),
        c("Observation?date=lt2020-03-15T10:00:00%2B00:00", vec!["o3"]),
        // a raw '+' in the offset arrives as a space
        c("Observation?date=lt2020-03-15T12:00:00+02:00", vec!["o3"]),
        c("Observation?date=ge2022-06-02", vec!["o4"]),
        c("Observation?date=le2022-06-01", vec!["o1", "o2", "o3"]),
        c("Observation?date=ge2022-06-01T23:30:00-05:00", vec!["o4"]),
        c(
            "Observation?date=ge2020-01-01&date=lt2021-01-01",
            vec!["o1", "o3"],
        ),
        c("Encounter?date=2019-01", vec!["e1"]),
        c("Encounter?date=2019-01-02", vec![]),
        c("Encounter?date=ge2023-06-01", vec!["e2"]),
        c("Encounter?date=lt2019-01-02", vec!["e1"]),
        c("Encounter?date=sa2019-01-03", vec!["e2"]),
        c("Encounter?date=eb2023-01-01", vec!["e1"]),
        c("ExplanationOfBenefit?service-date=2020-02-03", vec!["eob1"]),
        c(
            "ExplanationOfBenefit?service-date=gt2020-01-31",
            vec!["eob1"],
        ),
        c(
            "ExplanationOfBenefit?billable-period-start=2020-02-01",
            vec!["eob1"],
        ),
        c(
            "ExplanationOfBenefit?billable-period-start=2020-02-02",
            vec![],
        ),
        // numbers and quantities, with implicit precision
        c("Observation?value-quantity=95", vec!["o1"]),
        c("Observation?value-quantity=gt96", vec!["o3"]),
        c(
            "Observation?value-quantity=100.5|http://unitsofmeasure.org|mg/dL",
            vec!["o3"],
        ),
        c("Observation?value-quantity=lt100||/min", vec!["o2"]),
        c(
            "Observation?value-quantity=ge72&value-quantity=le95",
            vec!["o1", "o2"],
        ),
        // references
        c("Observation?subject=p1", vec!["o1", "o2"]),
        c("Observation?subject=Patient/p1", vec!["o1", "o2"]),
        // absolute URL on our own base
        (
            format!("Observation?subject={base}/Patient/p1"),
            vec!["o1", "o2"],
        ),
        c("Observation?patient=p2", vec!["o3", "o4"]),
        c("Observation?subject:Patient=p1", vec!["o1", "o2"]),
        c(
            "Observation?subject:Patient.birthdate=1970",
            vec!["o1", "o2"],
        ),
        c(
            "Observation?patient.identifier=http://plan.example/mb|MB200",
            vec!["o3", "o4"],
        ),
        c("Observation?subject:Patient.family=brown", vec![]),
        c(
            "Observation?performer:identifier=http://hl7.org/fhir/sid/us-npi|1234567893",
            vec!["o4"],
        ),
        c(
            "ExplanationOfBenefit?insurer=Organization/org1",
            vec!["eob1"],
        ),
        c(
            "ExplanationOfBenefit?patient=p1&type=professional",
            vec!["eob1"],
        ),
        c(
            "ExplanationOfBenefit?identifier=http://plan.example/claim|EOB1",
            vec!["eob1"],
        ),
        c(
            "MedicationRequest?patient=p1&intent=order&status=active,on-hold",
            vec!["mr1"],
        ),
        c("Provenance?target=Observation/o1", vec!["prov1"]),
        // ids and metadata
        c("Observation?_id=o1,o3", vec!["o1", "o3"]),
        c(
            "Observation?_lastUpdated=gt2000-01-01",
            vec!["o1", "o2", "o3", "o4"],
        ),
        c("Observation?_lastUpdated=lt2000-01-01", vec![]),
    ]
}

#[tokio::test]
async fn search_returns_exactly_what_fhir_rules_say() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        s.load(&fixture()).await;
        for (query, expected) in cases(&s.base) {
            assert_eq!(s.ids(&query).await, sorted(expected), "{query} on {b:?}");
        }
        // POST _search gives what GET gives
        let resp = s
            .client
            .post(s.url("Observation/_search"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("patient=p1&code=http%3A%2F%2Floinc.org%7C2339-0")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let bundle: Value = resp.json().await.unwrap();
        assert_eq!(match_ids(&bundle), vec!["o1"]);
        s.stop().await;
    }
}

#[tokio::test]
async fn last_updated_matches_the_exact_instant() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        s.load(&fixture()).await;
        let o1: Value = s.get("Observation/o1").await.json().await.unwrap();
        let instant = o1["meta"]["lastUpdated"].as_str().unwrap().to_owned();
        let q = format!("Observation?_lastUpdated={}", instant.replace('+', "%2B"));
        let bundle = s.search(&q).await;
        let ids = match_ids(&bundle);
        assert!(ids.contains(&"o1".to_owned()), "{q}: {ids:?}");
        for e in bundle["entry"].as_array().unwrap() {
            assert_eq!(e["resource"]["meta"]["lastUpdated"], instant.as_str());
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn sorting_paging_counts_and_elements() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        s.load(&fixture()).await;
        assert_eq!(
            s.ids_in_order("Observation?_sort=date").await,
            vec!["o3", "o1", "o2", "o4"]
        );
        assert_eq!(
            s.ids_in_order("Observation?_sort=-date").await,
            vec!["o4", "o2", "o3", "o1"]
        );
        // the same order when paged one or two at a time, through absolute next links
        assert_eq!(
            s.ids_in_order("Observation?_sort=-date&_count=1").await,
            vec!["o4", "o2", "o3", "o1"]
        );
        assert_eq!(
            s.ids_in_order("Observation?_sort=date&_count=2").await,
            vec!["o3", "o1", "o2", "o4"]
        );
        let by_update = s.ids_in_order("Observation?_sort=_lastUpdated").await;
        assert_eq!(
            by_update,
            vec!["o1", "o2", "o3", "o4"],
            "loaded in this order"
        );
        let rev = s
            .ids_in_order("Observation?_sort=-_lastUpdated&_count=3")
            .await;
        assert_eq!(rev, vec!["o4", "o3", "o2", "o1"]);

        // keyset paging: rows inserted after page 1 neither shift nor duplicate results
        let first = s.search("Patient?_count=2").await;
        assert_eq!(match_ids(&first), vec!["p1", "p2"]);
        let next = next_link(&first).expect("a next link");
        assert!(next.starts_with("http://"), "absolute next link: {next}");
        s.load(&[json!({"resourceType": "Patient", "id": "p0", "name": [{"family": "Late"}]})])
            .await;
        let second = s.search(&next).await;
        assert_eq!(match_ids(&second), vec!["p3", "p0"]);
        assert!(next_link(&second).is_none());

        // totals
        let count = s.search("Observation?_summary=count").await;
        assert_eq!(count["total"], 4);
        assert!(count.get("entry").is_none());
        let total = s.search("Observation?_count=1&_total=accurate").await;
        assert_eq!(total["total"], 4);
        assert_eq!(match_ids(&total).len(), 1);
        let zero = s.search("Observation?_count=0&_total=accurate").await;
        assert_eq!(zero["total"], 4);
        assert!(match_ids(&zero).is_empty());

        // _elements
        let el = s.search("Observation?_id=o1&_elements=status").await;
        let r = &el["entry"][0]["resource"];
        assert_eq!(r["status"], "final");
        assert!(r.get("code").is_none());
        assert!(
            r["meta"]["tag"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["code"] == "SUBSETTED")
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn include_and_revinclude() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        s.load(&fixture()).await;
        let bundle = s
            .search(
                "MedicationRequest?patient=p1&intent=order&_include=MedicationRequest:medication",
            )
            .await;
        assert_eq!(match_ids(&bundle), vec!["mr1"]);
        assert_eq!(
            entries_with_mode(&bundle, "include"),
            vec![("Medication".to_owned(), "med1".to_owned())]
        );

        let bundle = s
            .search("Observation?patient=p1&_revinclude=Provenance:target")
            .await;
        assert_eq!(
            common::sorted(match_ids(&bundle).iter().map(String::as_str).collect()),
            vec!["o1", "o2"]
        );
        assert_eq!(
            entries_with_mode(&bundle, "include"),
            vec![("Provenance".to_owned(), "prov1".to_owned())]
        );
        let bundle = s
            .search("Patient?_id=p1&_revinclude=Provenance:target")
            .await;
        assert_eq!(
            entries_with_mode(&bundle, "include"),
            vec![("Provenance".to_owned(), "prov2".to_owned())]
        );

        let bundle = s
            .search("ExplanationOfBenefit?_id=eob1&_include=ExplanationOfBenefit:insurer")
            .await;
        assert_eq!(
            entries_with_mode(&bundle, "include"),
            vec![("Organization".to_owned(), "org1".to_owned())]
        );
        let bundle = s
            .search("ExplanationOfBenefit?_id=eob1&_include=ExplanationOfBenefit:*")
            .await;
        let mut inc = entries_with_mode(&bundle, "include");
        inc.sort();
        assert_eq!(
            inc,
            vec![
                ("Organization".to_owned(), "org1".to_owned()),
                ("Patient".to_owned(), "p1".to_owned())
            ]
        );

        let bundle = s.search("Provenance?_id=prov1&_include=Provenance:target&_include:iterate=Observation:subject").await;
        let mut inc = entries_with_mode(&bundle, "include");
        inc.sort();
        assert_eq!(
            inc,
            vec![
                ("Observation".to_owned(), "o1".to_owned()),
                ("Patient".to_owned(), "p1".to_owned())
            ]
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn bad_searches_are_refused_with_an_operation_outcome() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        s.load(&fixture()).await;
        for q in [
            "Observation?foo=bar",
            "Observation?date=2020-13",
            "Observation?date=garbage",
            "Observation?code:exact=x",
            "Observation?_count=abc",
            "Observation?value-quantity=abc",
            "Observation?subject:Patient.nothing=1",
            "Observation?_sort=nothing",
            "Observation?_include=Nope:x",
            "Observation?_cursor=not-a-cursor",
            "Observation?_summary=true",
            "Observation?subject.name.family=x",
        ] {
            let resp = s.get(q).await;
            common::assert_outcome(resp, StatusCode::BAD_REQUEST).await;
        }
        // lenient handling ignores what it does not know, and says so
        let resp = s
            .client
            .get(s.url("Observation?foo=bar&code=2339-0"))
            .header("Prefer", "handling=lenient")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let bundle: Value = resp.json().await.unwrap();
        assert_eq!(
            common::sorted(match_ids(&bundle).iter().map(String::as_str).collect()),
            vec!["o1", "o3"]
        );
        assert_eq!(entries_with_mode(&bundle, "outcome").len(), 1);
        s.stop().await;
    }
}
