//! FHIR REST interactions over real HTTP, on every configured store: metadata, CRUD,
//! versions and history, conditional headers, Prefer, errors, transaction and batch Bundles.

mod common;

use common::{Backend, TestServer, assert_outcome, backends};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn each_backend<F, Fut>(f: F)
where
    F: Fn(Backend) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for b in backends() {
        f(b).await;
    }
}

fn patient(id: &str, family: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "name": [{"family": family, "given": ["Ann"]}], "gender": "female", "birthDate": "1980-02-03"})
}

#[tokio::test]
async fn metadata_is_public_and_describes_what_we_serve() {
    each_backend(|b| async move {
        let s = TestServer::start(&b).await;
        let resp = s.client.get(s.url("metadata")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/fhir+json")
        );
        let cs: Value = resp.json().await.unwrap();
        assert_eq!(cs["resourceType"], "CapabilityStatement");
        assert_eq!(cs["fhirVersion"], "4.0.1");
        assert!(
            cs["format"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "application/fhir+json")
        );
        let rest = cs["rest"].as_array().unwrap();
        assert_eq!(rest.len(), 1);
        let patient = rest[0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "Patient")
            .expect("Patient listed");
        let params: Vec<&str> = patient["searchParam"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for p in ["_id", "identifier", "name", "family", "birthdate", "gender"] {
            assert!(
                params.contains(&p),
                "Patient search parameter {p} missing: {params:?}"
            );
        }
        let eob = rest[0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "ExplanationOfBenefit")
            .unwrap();
        let eob_params: Vec<&str> = eob["searchParam"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for p in [
            "patient",
            "service-date",
            "type",
            "identifier",
            "insurer",
            "billable-period-start",
            "service-start-date",
        ] {
            assert!(eob_params.contains(&p), "EOB parameter {p} missing");
        }
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn create_read_update_vread_history_delete() {
    each_backend(|b| async move {
        let s = TestServer::start(&b).await;
        // create: server assigns the id; decimals keep their precision
        let obs = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
            "valueQuantity": {"value": 1.50, "unit": "mg/dL"}});
        let resp = s.client.post(s.url("Observation")).header("Content-Type", "application/fhir+json").body(obs.to_string().replace("1.5,", "1.50,")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        assert_eq!(resp.headers()["etag"], "W/\"1\"");
        assert!(resp.headers().contains_key("last-modified"));
        let created_text = resp.text().await.unwrap();
        assert!(created_text.contains("1.50"), "decimal precision lost: {created_text}");
        let created: Value = serde_json::from_str(&created_text).unwrap();
        let id = created["id"].as_str().unwrap().to_owned();
        assert!(location.starts_with(&s.url(&format!("Observation/{id}/_history/1"))), "{location}");
        assert_eq!(created["meta"]["versionId"], "1");

        let read = s.get(&format!("Observation/{id}")).await;
        assert_eq!(read.status(), 200);
        assert_eq!(read.headers()["etag"], "W/\"1\"");
        let text = read.text().await.unwrap();
        assert!(text.contains("1.50"));

        // update with the right If-Match → version 2
        let mut changed: Value = serde_json::from_str(&text).unwrap();
        changed["status"] = json!("amended");
        let resp = s.client.put(s.url(&format!("Observation/{id}"))).header("Content-Type", "application/fhir+json").header("If-Match", "W/\"1\"").body(changed.to_string()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["etag"], "W/\"2\"");
        // a stale If-Match → 412, nothing changes
        let resp = s.client.put(s.url(&format!("Observation/{id}"))).header("Content-Type", "application/fhir+json").header("If-Match", "W/\"1\"").body(changed.to_string()).send().await.unwrap();
        assert_outcome(resp, StatusCode::PRECONDITION_FAILED).await;
        let v: Value = s.get(&format!("Observation/{id}")).await.json().await.unwrap();
        assert_eq!(v["meta"]["versionId"], "2");
        assert_eq!(v["status"], "amended");

        // vread both versions
        let v1: Value = s.get(&format!("Observation/{id}/_history/1")).await.json().await.unwrap();
        assert_eq!(v1["status"], "final");
        assert_outcome(s.get(&format!("Observation/{id}/_history/9")).await, StatusCode::NOT_FOUND).await;

        // delete → 410 on read, history keeps all versions
        let resp = s.client.delete(s.url(&format!("Observation/{id}"))).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_outcome(s.get(&format!("Observation/{id}")).await, StatusCode::GONE).await;
        let hist: Value = s.get(&format!("Observation/{id}/_history")).await.json().await.unwrap();
        assert_eq!(hist["type"], "history");
        let entries = hist["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0]["request"]["method"], "DELETE");
        assert_eq!(entries[2]["resource"]["status"], "final");
        // the deleted resource is not found by search
        assert!(s.ids("Observation?code=2339-0").await.is_empty());
        // deleting again is a no-op
        let resp = s.client.delete(s.url(&format!("Observation/{id}"))).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        // update-as-create with a client id → 201; re-creating a deleted id works
        let resp = s.put("Patient/pat-1", &patient("pat-1", "Doe")).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(resp.headers()["location"].to_str().unwrap(), s.url("Patient/pat-1/_history/1"));
        let resp = s.put(&format!("Observation/{id}"), &json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "x"}})).await;
        assert!(resp.status().is_success());
        assert_eq!(resp.headers()["etag"], "W/\"4\"");
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn prefer_return_shapes_the_response() {
    each_backend(|b| async move {
        let s = TestServer::start(&b).await;
        let body = patient("x", "Roe").to_string();
        let resp = s
            .client
            .post(s.url("Patient"))
            .header("Content-Type", "application/fhir+json")
            .header("Prefer", "return=minimal")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        assert!(resp.headers().contains_key("location"));
        assert!(resp.text().await.unwrap().is_empty());
        let resp = s
            .client
            .post(s.url("Patient"))
            .header("Content-Type", "application/fhir+json")
            .header("Prefer", "return=OperationOutcome")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let oo: Value = resp.json().await.unwrap();
        assert_eq!(oo["resourceType"], "OperationOutcome");
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_input_gets_a_4xx_operation_outcome_and_changes_nothing() {
    each_backend(|b| async move {
        let s = TestServer::start(&b).await;
        let send = |method: Method, path: &str, ct: &str, body: String| {
            s.client
                .request(method, s.url(path))
                .header("Content-Type", ct)
                .body(body)
                .send()
        };
        let json_ct = "application/fhir+json";
        assert_outcome(
            send(Method::POST, "Patient", json_ct, "{not json".into())
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_outcome(
            send(Method::POST, "Patient", json_ct, "[1,2]".into())
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_outcome(
            send(
                Method::POST,
                "Patient",
                json_ct,
                r#"{"resourceType":"Observation","status":"final"}"#.into(),
            )
            .await
            .unwrap(),
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_outcome(
            send(
                Method::POST,
                "Patient",
                json_ct,
                r#"{"resourceType":"Patient","gender":null}"#.into(),
            )
            .await
            .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_outcome(
            send(
                Method::POST,
                "Patient",
                json_ct,
                r#"{"resourceType":"Patient","name":[]}"#.into(),
            )
            .await
            .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_outcome(
            send(Method::POST, "Patient", "text/plain", "{}".into())
                .await
                .unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .await;
        assert_outcome(
            send(
                Method::POST,
                "NotAType",
                json_ct,
                r#"{"resourceType":"NotAType"}"#.into(),
            )
            .await
            .unwrap(),
            StatusCode::NOT_FOUND,
        )
        .await;
        assert_outcome(
            send(
                Method::PUT,
                "Patient/a",
                json_ct,
                patient("b", "X").to_string(),
            )
            .await
            .unwrap(),
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_outcome(
            send(
                Method::PUT,
                "Patient/bad$id",
                json_ct,
                patient("a", "X").to_string(),
            )
            .await
            .unwrap(),
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_outcome(
            send(Method::PATCH, "Patient/a", json_ct, "{}".into())
                .await
                .unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
        )
        .await;
        assert_outcome(s.get("Patient/nope").await, StatusCode::NOT_FOUND).await;
        assert_outcome(
            s.get("Patient?_format=xml").await,
            StatusCode::NOT_ACCEPTABLE,
        )
        .await;
        assert_outcome(
            s.client
                .get(s.url("Patient"))
                .header("Accept", "application/fhir+xml")
                .send()
                .await
                .unwrap(),
            StatusCode::NOT_ACCEPTABLE,
        )
        .await;
        assert_outcome(s.get("Patient/a/_history/x").await, StatusCode::BAD_REQUEST).await;
        assert_outcome(
            s.client
                .get(format!("{}/nothing-here", s.base.trim_end_matches("/fhir")))
                .send()
                .await
                .unwrap(),
            StatusCode::NOT_FOUND,
        )
        .await;
        // nothing was stored by any of the above
        let count: Value = s.search("Patient?_summary=count").await;
        assert_eq!(count["total"], 0);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn transaction_is_atomic_and_rewrites_urn_uuid_references() {
    each_backend(|b| async move {
        let s = TestServer::start(&b).await;
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:0f6b4e4c-1111-4d2a-9a64-000000000001",
             "resource": {"resourceType": "Patient", "name": [{"family": "Tx"}]},
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "t"},
                          "subject": {"reference": "urn:uuid:0f6b4e4c-1111-4d2a-9a64-000000000001"}},
             "request": {"method": "POST", "url": "Observation"}},
            {"resource": {"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Who"}]},
             "request": {"method": "PUT", "url": "Practitioner/dr1"}}
        ]});
        let resp = s.post("", &tx).await;
        assert_eq!(resp.status(), 200);
        let out: Value = resp.json().await.unwrap();
        assert_eq!(out["type"], "transaction-response");
        let entries = out["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 3);
        assert!(entries[0]["response"]["status"].as_str().unwrap().starts_with("201"));
        let patient_loc = entries[0]["response"]["location"].as_str().unwrap();
        let patient_id = patient_loc.split('/').nth(1).unwrap().to_owned();
        let obs = s.search(&format!("Observation?subject=Patient/{patient_id}")).await;
        assert_eq!(common::match_ids(&obs).len(), 1, "reference was rewritten to the new id");
        let subject = obs["entry"][0]["resource"]["subject"]["reference"].as_str().unwrap();
        assert_eq!(subject, format!("Patient/{patient_id}"));

        // a transaction with one bad entry stores nothing
        let bad = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": "ok1"}, "request": {"method": "PUT", "url": "Patient/ok1"}},
            {"resource": {"resourceType": "Patient", "id": "bad", "gender": null}, "request": {"method": "PUT", "url": "Patient/bad"}}
        ]});
        assert_outcome(s.post("", &bad).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_outcome(s.get("Patient/ok1").await, StatusCode::NOT_FOUND).await;
        // an If-Match conflict in the middle also rolls back the rest
        let conflict = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": "ok2"}, "request": {"method": "PUT", "url": "Patient/ok2"}},
            {"resource": {"resourceType": "Practitioner", "id": "dr1"}, "request": {"method": "PUT", "url": "Practitioner/dr1", "ifMatch": "W/\"7\""}}
        ]});
        assert_outcome(s.post("", &conflict).await, StatusCode::PRECONDITION_FAILED).await;
        assert_outcome(s.get("Patient/ok2").await, StatusCode::NOT_FOUND).await;

        // a batch runs entries independently
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": {"resourceType": "Patient", "id": "b1"}, "request": {"method": "PUT", "url": "Patient/b1"}},
            {"resource": {"resourceType": "Patient", "id": "b2", "gender": null}, "request": {"method": "PUT", "url": "Patient/b2"}},
            {"request": {"method": "GET", "url": "Patient/b1"}}
        ]});
        let out: Value = s.post("", &batch).await.json().await.unwrap();
        assert_eq!(out["type"], "batch-response");
        assert!(out["entry"][0]["response"]["status"].as_str().unwrap().starts_with("201"));
        assert_eq!(out["entry"][1]["response"]["status"], "422");
        assert_eq!(out["entry"][1]["response"]["outcome"]["resourceType"], "OperationOutcome");
        assert_eq!(out["entry"][2]["resource"]["id"], "b1");
        assert_eq!(s.get("Patient/b1").await.status(), 200);
        // not a Bundle / wrong type
        assert_outcome(s.post("", &json!({"resourceType": "Bundle", "type": "collection"})).await, StatusCode::BAD_REQUEST).await;
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn values_postgres_cannot_index_or_store_are_handled_not_500() {
    each_backend(|b| async move {
        let s = TestServer::start(&b).await;
        // NUL cannot live in a Postgres text column; FHIR strings forbid it anyway
        let resp = s
            .client
            .post(s.url("Patient"))
            .header("Content-Type", "application/fhir+json")
            .body(r#"{"resourceType":"Patient","name":[{"family":"a\u0000b"}]}"#)
            .send()
            .await
            .unwrap();
        assert_outcome(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
        // a value longer than a b-tree entry may be is stored and still found
        let long_family = format!("Long{}", "x".repeat(5000));
        let long_code = "c".repeat(4000);
        let resp = s
            .put(
                "Patient/long",
                &json!({"resourceType": "Patient", "id": "long", "name": [{"family": long_family}],
                        "identifier": [{"system": "urn:s", "value": long_code}]}),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(s.ids("Patient?family=long").await, vec!["long"]);
        assert_eq!(
            s.ids(&format!("Patient?family={long_family}")).await,
            vec!["long"]
        );
        assert_eq!(
            s.ids(&format!("Patient?identifier=urn:s|{long_code}"))
                .await,
            vec!["long"]
        );
        // more OR values than we bind in one statement: refused, not a database error
        let many: Vec<String> = (0..40_000).map(|i| format!("i{i}")).collect();
        let resp = s
            .client
            .post(s.url("Patient/_search"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("_id={}", many.join(",")))
            .send()
            .await
            .unwrap();
        assert_outcome(resp, StatusCode::BAD_REQUEST).await;
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn concurrent_updates_of_one_resource_get_consecutive_versions() {
    each_backend(|b| async move {
        let s = TestServer::start(&b).await;
        assert!(
            s.put("Patient/race", &patient("race", "R0"))
                .await
                .status()
                .is_success()
        );
        let updates = (1..=20).map(|i| {
            let body = patient("race", &format!("R{i}"));
            let s = &s;
            async move { s.put("Patient/race", &body).await.status() }
        });
        let statuses = futures::future::join_all(updates).await;
        assert!(
            statuses.iter().all(|st| *st == StatusCode::OK),
            "{statuses:?}"
        );
        let current: Value = s.get("Patient/race").await.json().await.unwrap();
        assert_eq!(current["meta"]["versionId"], "21");
        let hist: Value = s.get("Patient/race/_history").await.json().await.unwrap();
        assert_eq!(hist["entry"].as_array().unwrap().len(), 21);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bodies_up_to_the_limit_are_read_and_larger_ones_get_413() {
    each_backend(|b| async move {
        let s = TestServer::start(&b).await;
        // a transaction of 3,000 Patients (≈ 5 MB: above the 2 MB default of axum's extractors)
        let entries: Vec<Value> = (0..3000)
            .map(|i| {
                let mut p = patient(&format!("big{i}"), "Large");
                p["text"] = json!({"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{}</div>", "x".repeat(1500))});
                json!({"resource": p, "request": {"method": "PUT", "url": format!("Patient/big{i}")}})
            })
            .collect();
        let body = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}).to_string();
        assert!(body.len() > 4 * 1024 * 1024, "{}", body.len());
        let resp = s.client.post(s.url("")).header("Content-Type", "application/fhir+json").body(body).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let counted = s.search("Patient?family=Large&_summary=count").await;
        assert_eq!(counted["total"], 3000, "{counted}");
        let r = s.get("Patient/big2999").await;
        assert_eq!(r.status(), StatusCode::OK);
        // above 64 MiB: 413 with an OperationOutcome, nothing stored
        let huge = format!("{{\"resourceType\":\"Patient\",\"id\":\"huge\",\"text\":{{\"status\":\"generated\",\"div\":\"{}\"}}}}", "x".repeat(65 * 1024 * 1024));
        let resp = s.client.put(s.url("Patient/huge")).header("Content-Type", "application/fhir+json").body(huge).send().await;
        match resp {
            Ok(resp) => {
                assert_outcome(resp, StatusCode::PAYLOAD_TOO_LARGE).await;
            }
            // the server may close the connection before the client has sent it all
            Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
        }
        assert_eq!(s.get("Patient/huge").await.status(), StatusCode::NOT_FOUND);
        // errors turned into OperationOutcomes keep the CORS headers browser apps need
        let resp = s.client.get(s.url("no/such/route")).header("Origin", "https://app.example").send().await.unwrap();
        assert_eq!(resp.headers()["access-control-allow-origin"], "*");
        assert_outcome(resp, StatusCode::NOT_FOUND).await;
        s.stop().await;
    })
    .await;
}

/// A read with `If-None-Match` naming the current version is 304 without a body (weak or
/// strong form, in a list, or `*`), with the ETag; an older version or another tag gets the
/// resource.
#[tokio::test]
async fn if_none_match_with_the_current_etag_is_304() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        let p = json!({"resourceType": "Patient", "id": "cached", "name": [{"family": "Cache"}]});
        s.load(std::slice::from_ref(&p)).await;
        let mut changed = p.clone();
        changed["name"][0]["family"] = json!("Changed");
        s.load(&[changed]).await;
        let read = |tag: &'static str| {
            s.client
                .get(s.url("Patient/cached"))
                .header("If-None-Match", tag)
                .send()
        };
        for tag in ["W/\"2\"", "\"2\"", "W/\"1\", W/\"2\"", "*"] {
            let resp = read(tag).await.unwrap();
            assert_eq!(resp.status(), StatusCode::NOT_MODIFIED, "{tag}");
            assert_eq!(resp.headers()["etag"], "W/\"2\"");
            assert!(resp.text().await.unwrap().is_empty());
        }
        for tag in ["W/\"1\"", "W/\"x\""] {
            let resp = read(tag).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{tag}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["name"][0]["family"], "Changed");
        }
        s.stop().await;
    }
}
