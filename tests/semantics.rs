//! HTTP and FHIR semantics that clients and Inferno-style kits rely on (issue 17), over real
//! HTTP on every configured store: hostile values are 400s, LIKE patterns are literal,
//! conditional create, If-Match, Range, content negotiation, counts, paging links,
//! discovery of profiles.

mod common;

use base64::Engine;
use common::{TestServer, assert_outcome, backends, match_ids, next_link, sorted};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

fn patient(id: &str, family: &str, birth: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "birthDate": birth,
        "name": [{"family": family}],
        "identifier": [{"system": "http://plan.example/mb", "value": format!("MB-{id}")}]})
}

fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == relation)
        .and_then(|l| l["url"].as_str())
        .map(str::to_owned)
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

// ---- 1: NUL bytes and forged cursors are 400 OperationOutcomes, never 500 ------------------

#[tokio::test]
async fn nul_bytes_and_wrong_typed_cursors_are_400_operation_outcomes() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        s.load(&[patient("p1", "Smith", "1970-01-01")]).await;
        // a NUL in every parameter type, in _typeFilter and in a POST _search form
        for q in [
            "Patient?identifier=%00",
            "Patient?identifier=http://plan.example/mb|%00",
            "Patient?name=%00",
            "Patient?family:exact=a%00",
            "Patient?name:contains=%00",
            "Patient?_id=%00",
            "Patient?birthdate=%00",
            "Observation?subject=Patient/%00",
            "Observation?value-quantity=5|%00|mg",
            "Patient?gender:text=%00",
            "Patient?ident%00ifier=x",
            "Patient?_sort=family&_cursor=%00",
        ] {
            assert_outcome(s.get(q).await, StatusCode::BAD_REQUEST).await;
        }
        let resp = s
            .client
            .post(s.url("Patient/_search"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("identifier=%00")
            .send()
            .await
            .unwrap();
        assert_outcome(resp, StatusCode::BAD_REQUEST).await;
        let resp = s
            .client
            .get(s.url("$export?_type=Patient&_typeFilter=Patient%3Fidentifier%3D%2500"))
            .header("Accept", "application/fhir+json")
            .header("Prefer", "respond-async")
            .send()
            .await
            .unwrap();
        assert_outcome(resp, StatusCode::BAD_REQUEST).await;

        // cursors whose values have the wrong types: the old array shape, a text pk, a
        // number where the sort key is text
        for cursor in [
            json!([{"S": "x"}]),
            json!({"b": false, "v": [{"S": "x"}]}),
            json!({"b": false, "v": [{"I": 1}, {"I": 1}]}),
            json!({"b": true, "v": [{"F": 1.5}]}),
        ] {
            let q = format!("Patient?_sort=family&_cursor={}", b64(&cursor));
            assert_outcome(s.get(&q).await, StatusCode::BAD_REQUEST).await;
            let q = format!("Patient?_cursor={}", b64(&cursor));
            assert_outcome(s.get(&q).await, StatusCode::BAD_REQUEST).await;
        }

        // a NUL in a $member-match identifier (the operation's Parameters body)
        let mut mm: Value =
            serde_json::from_str(include_str!("fixtures/member-match-in.json")).unwrap();
        for p in mm["parameter"].as_array_mut().unwrap() {
            if p["name"] == "MemberPatient" {
                p["resource"]["identifier"] =
                    json!([{"system": "http://plan.example/mb", "value": "MB\u{0}1"}]);
            }
        }
        let resp = s.post("Patient/$member-match", &mm).await;
        assert_outcome(resp, StatusCode::BAD_REQUEST).await;

        // a NUL in text.div is refused (XHTML cannot hold it), like control characters in
        // any other string of a resource: 422 saying where
        let mut with_div = patient("p2", "Jones", "1980-01-01");
        for c in ["\u{0}", "\u{1}"] {
            with_div["text"] = json!({"status": "generated",
                "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">a{c}b</div>")});
            let resp = s.post("Patient", &with_div).await;
            let out = assert_outcome(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
            let text = out["issue"][0]["diagnostics"].as_str().unwrap();
            assert!(text.contains("Patient.text.div"), "{text}");
            let resp = s.put("Patient/p2", &with_div).await;
            assert_outcome(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": with_div, "request": {"method": "POST", "url": "Patient"}}]});
            assert_outcome(s.post("", &bundle).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        }
        // nothing was stored
        assert_eq!(s.ids("Patient").await, sorted(vec!["p1"]));
        s.stop().await;
    }
}

// ---- 2: `%` and `_` are literal in string, uri and token searches -------------------------

#[tokio::test]
async fn like_wildcards_in_search_values_match_literally() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        s.load(&[
            patient("smith", "Smith", "1970-01-01"),
            patient("pct", "Percent%Sign", "1971-01-01"),
            patient("under", "_Under", "1972-01-01"),
            json!({"resourceType": "Questionnaire", "id": "q1", "status": "active",
                "url": "http://example.org/q_1"}),
            json!({"resourceType": "Questionnaire", "id": "q2", "status": "active",
                "url": "http://example.org/qX1"}),
        ])
        .await;
        let cases: &[(&str, &[&str])] = &[
            ("Patient?name:contains=%25", &["pct"]),
            ("Patient?name:contains=_", &["under"]),
            ("Patient?family=_", &["under"]),
            ("Patient?family=%25", &[]),
            ("Patient?family=%25%25", &[]),
            ("Patient?family:exact=_Under", &["under"]),
            ("Patient?family:exact=%25", &[]),
            ("Patient?family=Sm", &["smith"]),
            ("Patient?name:contains=cent", &["pct"]),
            ("Patient?identifier=%25", &[]),
            ("Patient?identifier=_", &[]),
            ("Questionnaire?url:below=http://example.org/q_", &["q1"]),
            ("Questionnaire?url:below=http://example.org/q%25", &[]),
            ("Questionnaire?url=http://example.org/q_1", &["q1"]),
            ("Questionnaire?url=http://example.org/q%251", &[]),
        ];
        for (q, want) in cases {
            assert_eq!(s.ids(q).await, sorted(want.to_vec()), "{q}");
        }
        s.stop().await;
    }
}

// ---- 4: a malformed If-Match is 400 -----------------------------------------------------------

#[tokio::test]
async fn malformed_if_match_is_400() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        s.load(&[patient("p1", "Smith", "1970-01-01")]).await;
        for bad in [r#"W/"1"#, r#""1"#, "1", r#"W/"one""#, r#"W/"""#] {
            let resp = s
                .client
                .put(s.url("Patient/p1"))
                .header("Content-Type", "application/fhir+json")
                .header("If-Match", bad)
                .body(patient("p1", "Smyth", "1970-01-01").to_string())
                .send()
                .await
                .unwrap();
            assert_outcome(resp, StatusCode::BAD_REQUEST).await;
            let resp = s
                .client
                .delete(s.url("Patient/p1"))
                .header("If-Match", bad)
                .send()
                .await
                .unwrap();
            assert_outcome(resp, StatusCode::BAD_REQUEST).await;
            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": patient("p1", "Smyth", "1970-01-01"),
                 "request": {"method": "PUT", "url": "Patient/p1", "ifMatch": bad}}]});
            assert_outcome(s.post("", &bundle).await, StatusCode::BAD_REQUEST).await;
        }
        // still version 1, and a well-formed If-Match works
        let resp = s.get("Patient/p1").await;
        assert_eq!(resp.headers()["etag"], r#"W/"1""#);
        let resp = s
            .client
            .put(s.url("Patient/p1"))
            .header("Content-Type", "application/fhir+json")
            .header("If-Match", r#"W/"1""#)
            .body(patient("p1", "Smyth", "1970-01-01").to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        s.stop().await;
    }
}

// ---- 5: overflowing Range headers on export downloads --------------------------------------

/// Runs a system export of Patients and returns the URL of its first file.
async fn exported_file(s: &TestServer) -> String {
    let resp = s
        .client
        .get(s.url("$export?_type=Patient"))
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let poll = resp.headers()["content-location"]
        .to_str()
        .unwrap()
        .to_owned();
    for _ in 0..120 {
        let resp = s.client.get(&poll).send().await.unwrap();
        match resp.status() {
            // too early polls get 429; either way wait as Retry-After says (1 s in tests)
            StatusCode::ACCEPTED | StatusCode::TOO_MANY_REQUESTS => {
                tokio::time::sleep(Duration::from_secs(1)).await
            }
            StatusCode::OK => {
                let manifest: Value = resp.json().await.unwrap();
                return manifest["output"][0]["url"].as_str().unwrap().to_owned();
            }
            other => panic!("poll: {other}"),
        }
    }
    panic!("the export did not finish");
}

#[tokio::test]
async fn overflowing_ranges_get_416_or_the_clamped_range() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        s.load(&[patient("p1", "Smith", "1970-01-01")]).await;
        let url = exported_file(&s).await;
        let whole = s.client.get(&url).send().await.unwrap();
        assert_eq!(whole.status(), StatusCode::OK);
        let size = whole.bytes().await.unwrap().len();
        let range = |r: &'static str| s.client.get(&url).header("Range", r).send();
        // a first position beyond u64 is beyond the file: 416 with the size (RFC 7233 §4.4)
        for r in [
            "bytes=99999999999999999999999-",
            "bytes=18446744073709551616-18446744073709551617",
        ] {
            let resp = range(r).await.unwrap();
            assert_eq!(
                resp.headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok()),
                Some(format!("bytes */{size}").as_str()),
                "{r}"
            );
            assert_outcome(resp, StatusCode::RANGE_NOT_SATISFIABLE).await;
        }
        // a last position past the end means "to the end" (RFC 7233 §2.1), however large
        for r in [
            "bytes=0-18446744073709551615",
            "bytes=0-99999999999999999999999",
            "bytes=-99999999999999999999999",
        ] {
            let resp = range(r).await.unwrap();
            assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{r}");
            assert_eq!(
                resp.headers()["content-range"].to_str().unwrap(),
                format!("bytes 0-{}/{size}", size - 1),
                "{r}"
            );
            assert_eq!(resp.bytes().await.unwrap().len(), size, "{r}");
        }
        s.stop().await;
    }
}

// ---- 6: content negotiation -----------------------------------------------------------------

#[tokio::test]
async fn xml_and_other_fhir_versions_get_406_and_a_raw_plus_in_format_works() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        let send = |method: reqwest::Method, path: &str, accept: &str| {
            let mut req = s
                .client
                .request(method.clone(), s.url(path))
                .header("Accept", accept);
            if method == reqwest::Method::POST {
                req = req
                    .header("Content-Type", "application/fhir+json")
                    .body(patient("x", "Xml", "1970-01-01").to_string());
            }
            req.send()
        };
        use reqwest::Method;
        for (method, path, accept) in [
            (Method::POST, "Patient", "application/fhir+xml"),
            (Method::GET, "metadata", "application/fhir+xml"),
            (Method::GET, "metadata?_format=xml", "application/fhir+json"),
            (Method::POST, "Patient?_format=xml", "application/fhir+json"),
            (
                Method::GET,
                "Patient",
                "application/fhir+json; fhirVersion=3.0",
            ),
            (
                Method::GET,
                "metadata",
                "application/fhir+json; fhirVersion=3.0",
            ),
            (Method::GET, "Patient", "application/fhir+json;q=0"),
        ] {
            let resp = send(method.clone(), path, accept).await.unwrap();
            assert_outcome(resp, StatusCode::NOT_ACCEPTABLE).await;
        }
        // nothing was created by the refused POSTs
        assert!(s.ids("Patient").await.is_empty());
        for (path, accept) in [
            (
                "Patient?_format=application/fhir+json",
                "application/fhir+json",
            ),
            (
                "Patient?_format=application/fhir%2Bjson",
                "application/fhir+json",
            ),
            ("metadata?_format=application/fhir+json", "*/*"),
            ("Patient", "application/fhir+json; fhirVersion=4.0"),
            (
                "Patient",
                "application/fhir+xml;q=1, application/fhir+json;q=0.5",
            ),
        ] {
            let resp = send(Method::GET, path, accept).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{path} {accept}");
        }
        s.stop().await;
    }
}

// ---- 7: `_count=0` and `_totalMethod` ------------------------------------------------------

#[tokio::test]
async fn count_zero_gives_the_true_total_and_total_method_is_accepted() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        s.load(&[
            patient("a", "Smith", "1970-01-01"),
            patient("b", "Smith", "1971-01-01"),
            patient("c", "Jones", "1972-01-01"),
        ])
        .await;
        for (q, total) in [
            ("Patient?_count=0", 3),
            ("Patient?family=Smith&_count=0", 2),
            ("Patient?_count=0&_totalMethod=count", 3),
            ("Patient?_summary=count&_totalMethod=count", 3),
        ] {
            let bundle = s.search(q).await;
            assert_eq!(bundle["total"], total, "{q}");
            assert!(match_ids(&bundle).is_empty(), "{q}");
            assert!(next_link(&bundle).is_none(), "{q}");
        }
        let bundle = s.search("Patient?_totalMethod=count").await;
        assert_eq!(match_ids(&bundle).len(), 3);
        s.stop().await;
    }
}

// ---- 9: previous and first links ----------------------------------------------------------

#[tokio::test]
async fn later_pages_link_to_the_previous_and_first_pages() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        let ps: Vec<Value> = (0..7)
            .map(|i| {
                patient(
                    &format!("p{i}"),
                    "Smith",
                    &format!("19{}0-01-01", 7 - i % 3),
                )
            })
            .collect();
        s.load(&ps).await;
        for q in [
            "Patient?_count=2",
            "Patient?_count=2&_sort=-birthdate",
            "Patient?_count=3&family=Smith&_sort=birthdate,-_id",
        ] {
            // walk forward, remembering each page
            let mut pages: Vec<(Vec<String>, Value)> = Vec::new();
            let mut url = s.url(q);
            loop {
                let bundle = s.search(&url).await;
                let next = next_link(&bundle);
                pages.push((match_ids(&bundle), bundle));
                match next {
                    Some(n) => url = n,
                    None => break,
                }
            }
            assert!(pages.len() >= 3, "{q}");
            let all: Vec<String> = pages.iter().flat_map(|(ids, _)| ids.clone()).collect();
            assert_eq!(all.len(), 7, "{q}");
            assert!(link(&pages[0].1, "previous").is_none(), "{q}");
            for i in 1..pages.len() {
                let bundle = &pages[i].1;
                let prev = link(bundle, "previous").expect("previous link");
                let first = link(bundle, "first").expect("first link");
                assert!(prev.starts_with("http://") && first.starts_with("http://"));
                // previous gives exactly the page before, and links on from there
                let back = s.search(&prev).await;
                assert_eq!(match_ids(&back), pages[i - 1].0, "{q} page {i}");
                assert_eq!(
                    link(&back, "previous").is_some(),
                    i > 1,
                    "{q}: the page before page {i}"
                );
                let fwd = s
                    .search(&next_link(&back).expect("next from previous"))
                    .await;
                assert_eq!(match_ids(&fwd), pages[i].0, "{q} page {i} again");
                let first_page = s.search(&first).await;
                assert_eq!(match_ids(&first_page), pages[0].0, "{q}");
            }
        }
        s.stop().await;
    }
}

// ---- 12: a retired key lives as long as the longest-lived token it signed -----------------

/// Runs one statement on the test's database.
async fn sql(s: &TestServer, text: &str, params: Vec<pdex::store::db::SqlValue>) {
    let mut tx = s.state.store.db.begin().await.unwrap();
    tx.execute(text, params).await.unwrap();
    tx.commit().await.unwrap();
}

/// The published access-token (EC) keys; the RSA keys sign id_tokens.
async fn jwks_kids(s: &TestServer) -> Vec<String> {
    let url = s.base.trim_end_matches("/fhir").to_owned() + "/oauth/jwks";
    let jwks: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kty"] == "EC")
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_rotated_key_keeps_verifying_the_longest_lived_token_it_signed() {
    for b in backends() {
        // this process issues 60-second tokens; the demo's 8-hour token is signed too
        let s = TestServer::start_with(&b, |c| c.token_lifetime = 60).await;
        let issued = pdex::auth::access_token::mint(
            &s.state.auth,
            &pdex::auth::access_token::Grant {
                client_id: s.admin.client_id.clone(),
                kind: pdex::identity::ClientKind::Admin,
                organization: None,
                scopes: pdex::identity::scopes::split(common::ADMIN_SCOPES),
                patient: None,
                allow_sensitive: true,
                consent_id: None,
                authorization_id: None,
                cnf: None,
                lifetime: 8 * 3600,
            },
        )
        .await
        .unwrap();
        let old_kid = jwks_kids(&s).await.remove(0);
        let new_kid = pdex::auth::keys::rotate(&s.state.store).await.unwrap();
        // the rotation was ten minutes ago: far past this process's token lifetime + skew,
        // well within the 8-hour token's life
        sql(
            &s,
            "UPDATE auth_signing_keys SET retired_at = retired_at - 600000 WHERE kid = ?",
            vec![old_kid.as_str().into()],
        )
        .await;
        // (reading the JWKS also refreshes the verifier's copy of the key table)
        let kids = jwks_kids(&s).await;
        assert!(
            kids.contains(&old_kid) && kids.contains(&new_kid),
            "{kids:?}"
        );
        let long = s.http(&issued.access_token);
        let resp = long.get(s.url("Patient")).send().await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{}",
            resp.text().await.unwrap()
        );
        // once every token it signed has expired, the retired key is no longer published
        sql(
            &s,
            "UPDATE auth_signing_keys SET signed_until = ? WHERE kid = ?",
            vec![
                (chrono::Utc::now().timestamp_millis() - 120_000).into(),
                old_kid.as_str().into(),
            ],
        )
        .await;
        assert_eq!(jwks_kids(&s).await, vec![new_kid.clone()]);
        s.stop().await;
    }
}

// ---- 11: the failed-match throttle: per client and per (client, demographics), shared ----

const MEMBER_MATCH: &str = "http://hl7.org/fhir/us/davinci-hrex/OperationDefinition/member-match";
const NPI: &str = "http://hl7.org/fhir/sid/us-npi";

fn mm_param<'a>(p: &'a mut Value, name: &str) -> &'a mut Value {
    p["parameter"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|x| x["name"] == name)
        .map(|x| &mut x["resource"])
        .unwrap()
}

/// The HRex example request aimed at demo member `id`, with a current consent naming the
/// HRex example's new payer (NPI 0123456789); `card` replaces the card's member id.
fn match_request(id: &str, card: Option<&str>) -> Value {
    let m = common::demo_member(id);
    let mut p: Value = serde_json::from_str(include_str!("fixtures/member-match-in.json")).unwrap();
    let patient = mm_param(&mut p, "MemberPatient");
    patient["name"] = json!([{"family": m["family"], "given": m["given"]}]);
    patient["birthDate"] = m["birthDate"].clone();
    patient["gender"] = m["gender"].clone();
    let cov = mm_param(&mut p, "CoverageToMatch");
    let member_id = card.map_or(m["member_id"].clone(), |c| json!(c));
    cov["identifier"] = json!([{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB"}]}, "value": member_id}]);
    cov["subscriberId"] = card.map_or(m["subscriber_id"].clone(), |c| json!(c));
    let day = |d: i64| {
        (chrono::Utc::now().date_naive() + chrono::Duration::days(d))
            .format("%Y-%m-%d")
            .to_string()
    };
    mm_param(&mut p, "Consent")["provision"]["period"] = json!({"start": day(-10), "end": day(80)});
    p
}

async fn payer(s: &TestServer, npi: &str) -> common::TestClient {
    s.register_client(common::ClientSpec {
        name: format!("payer {npi}"),
        kind: pdex::identity::ClientKind::Payer,
        organization: Some(format!("{NPI}|{npi}")),
        scopes: format!("system/*.rs {MEMBER_MATCH}"),
        ..common::ClientSpec::default()
    })
    .await
}

/// A `$member-match` token of `client` from the token endpoint at `token_url`.
async fn match_token_at(client: &common::TestClient, token_url: &str) -> String {
    let assertion = client.key.sign(&client.assertion_claims(token_url));
    let resp = reqwest::Client::new()
        .post(token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
            ("scope", MEMBER_MATCH),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn member_match_at(base: &str, token: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/Patient/$member-match"))
        .bearer_auth(token)
        .header("Content-Type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn failed_matches_throttle_the_client_not_the_member_and_every_instance_sees_them() {
    for b in backends() {
        let limit = 3;
        let s = TestServer::start_demo(&b, |c| c.exchange.match_failure_limit = limit).await;
        // a second pdex instance on the same database, as behind a load balancer
        let exports = tempfile::tempdir().unwrap();
        let config = pdex::config::ServerConfig {
            database_url: s.db.url.clone(),
            listen: "127.0.0.1:0".into(),
            migrate: true,
            token_lifetime: 3600,
            bulk: pdex::config::BulkConfig {
                export_dir: exports.path().to_owned(),
                ..Default::default()
            },
            exchange: pdex::config::ExchangeConfig {
                match_failure_limit: limit,
                ..s.state.exchange.clone()
            },
            ..pdex::config::ServerConfig::default()
        };
        let other = pdex::app::Server::bind(&config).await.unwrap();
        let other_base = other.state.base_url.clone();
        let other_token_url = other.state.auth.settings.token_url();
        let handle = tokio::spawn(async move { other.run().await.unwrap() });

        let attacker = payer(&s, "1234567893").await;
        let new_payer = payer(&s, "0123456789").await;
        let attacker_token = match_token_at(&attacker, &s.token_url()).await;
        for attempt in 0..limit {
            let body = match_request("m000001", Some(&format!("GUESS{attempt}")));
            let resp = member_match_at(&s.base, &attacker_token, &body).await;
            assert_outcome(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
        }
        // the attacker is throttled for this person, on this instance and on the other
        let body = match_request("m000001", Some("GUESS9"));
        let resp = member_match_at(&s.base, &attacker_token, &body).await;
        assert!(resp.headers().contains_key("retry-after"));
        assert_outcome(resp, StatusCode::TOO_MANY_REQUESTS).await;
        let other_attacker_token = match_token_at(&attacker, &other_token_url).await;
        let resp = member_match_at(&other_base, &other_attacker_token, &body).await;
        assert_outcome(resp, StatusCode::TOO_MANY_REQUESTS).await;
        // ...but not for another person (a client's budget across people is larger)
        let resp = member_match_at(
            &s.base,
            &attacker_token,
            &match_request("m000002", Some("X")),
        )
        .await;
        assert_outcome(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
        // the member's consented new payer still matches, on either instance
        let right = match_request("m000001", None);
        let token = match_token_at(&new_payer, &s.token_url()).await;
        let resp = member_match_at(&s.base, &token, &right).await;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{}",
            resp.text().await.unwrap()
        );
        let token = match_token_at(&new_payer, &other_token_url).await;
        let resp = member_match_at(&other_base, &token, &right).await;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{}",
            resp.text().await.unwrap()
        );
        handle.abort();
        let _ = handle.await;
        s.stop().await;
    }
}

// ---- 3: conditional create ----------------------------------------------------------------

const MB: &str = "http://plan.example/mb";

async fn conditional_post(s: &TestServer, body: &Value, criteria: &str) -> (StatusCode, Value) {
    let resp = s
        .client
        .post(s.url("Patient"))
        .header("Content-Type", "application/fhir+json")
        .header("If-None-Exist", criteria)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn conditional_create_makes_exactly_one_resource_under_concurrency() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        // 20 concurrent creates with the same If-None-Exist: one 201, nineteen 200 with it
        let body = json!({"resourceType": "Patient", "name": [{"family": "Once"}],
            "identifier": [{"system": MB, "value": "ONCE-1"}]});
        let criteria = format!("identifier={MB}|ONCE-1");
        let results =
            futures::future::join_all((0..20).map(|_| conditional_post(&s, &body, &criteria)))
                .await;
        let created: Vec<&Value> = results
            .iter()
            .filter(|(st, _)| *st == StatusCode::CREATED)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(created.len(), 1, "{results:?}");
        let id = created[0]["id"].as_str().unwrap();
        for (status, v) in &results {
            assert!(
                *status == StatusCode::CREATED || *status == StatusCode::OK,
                "{status} {v}"
            );
            assert_eq!(v["id"], id);
        }
        assert_eq!(
            s.ids(&format!("Patient?identifier={MB}|ONCE-1")).await,
            vec![id.to_owned()]
        );
        // the criteria may come as a search URL's query, with `?` or `Type?` before it
        for c in [format!("?{criteria}"), format!("Patient?{criteria}")] {
            let (status, v) = conditional_post(&s, &body, &c).await;
            assert_eq!(
                (status, v["id"].as_str()),
                (StatusCode::OK, Some(id)),
                "{c}"
            );
        }
        // more than one match: 412, nothing created
        s.load(&[
            patient("d1", "Dup", "1970-01-01"),
            patient("d2", "Dup", "1971-01-01"),
        ])
        .await;
        let (status, v) = conditional_post(&s, &body, "family=Dup").await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{v}");
        assert_eq!(v["resourceType"], "OperationOutcome");
        // criteria that are no search: 400
        let (status, _) = conditional_post(&s, &body, "no-such-param=1").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(s.ids("Patient").await.len(), 3);

        // transaction Bundles (Synthea's shared Practitioners): ifNoneExist, concurrently;
        // references to the entry's fullUrl point at the one Practitioner
        let bundle = |n: usize| {
            json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"fullUrl": "urn:uuid:5f1b0c1e-0000-4000-8000-000000000001",
                 "resource": {"resourceType": "Practitioner", "name": [{"family": "Shared"}],
                    "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}]},
                 "request": {"method": "POST", "url": "Practitioner",
                    "ifNoneExist": "identifier=http://hl7.org/fhir/sid/us-npi|1234567893"}},
                {"fullUrl": format!("urn:uuid:5f1b0c1e-0000-4000-8000-1000000000{n:02}"),
                 "resource": {"resourceType": "Patient", "name": [{"family": format!("Member{n}")}],
                    "generalPractitioner": [{"reference": "urn:uuid:5f1b0c1e-0000-4000-8000-000000000001"}]},
                 "request": {"method": "POST", "url": "Patient"}}
            ]})
        };
        let bundles: Vec<Value> = (0..8).map(bundle).collect();
        let responses = futures::future::join_all(bundles.iter().map(|b| s.post("", b))).await;
        let mut statuses = Vec::new();
        for resp in responses {
            assert_eq!(resp.status(), StatusCode::OK);
            let out: Value = resp.json().await.unwrap();
            statuses.push(
                out["entry"][0]["response"]["status"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        statuses.sort();
        assert_eq!(
            statuses.iter().filter(|s| s.starts_with("201")).count(),
            1,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| s.starts_with("200")).count(),
            7,
            "{statuses:?}"
        );
        let practitioners = s.ids("Practitioner").await;
        assert_eq!(practitioners.len(), 1);
        let members = s.search("Patient?family=Member&_count=100").await;
        let refs: Vec<&str> = members["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e["resource"]["generalPractitioner"][0]["reference"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(refs.len(), 8);
        let want = format!("Practitioner/{}", practitioners[0]);
        assert!(refs.iter().all(|r| *r == want), "{refs:?}");
        // a batch entry too
        let mut batch = bundle(99);
        batch["type"] = json!("batch");
        batch["entry"].as_array_mut().unwrap().truncate(1);
        let out: Value = s.post("", &batch).await.json().await.unwrap();
        assert_eq!(out["entry"][0]["response"]["status"], "200 OK", "{out}");
        assert_eq!(s.ids("Practitioner").await.len(), 1);

        // declared in the CapabilityStatement
        let cs: Value = s.get("metadata").await.json().await.unwrap();
        for r in cs["rest"][0]["resource"].as_array().unwrap() {
            assert_eq!(r["conditionalCreate"], true, "{}", r["type"]);
        }
        s.stop().await;
    }
}

// ---- 8: supportedProfile per type ----------------------------------------------------------

#[tokio::test]
async fn the_capability_statement_declares_every_profile_the_demo_plan_serves() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        let cs: Value = reqwest::get(s.url("metadata"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let declared = |t: &str| -> Vec<String> {
            cs["rest"][0]["resource"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["type"] == t)
                .and_then(|r| r["supportedProfile"].as_array())
                .map(|a| a.iter().map(|p| p.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default()
        };
        // every meta.profile of the synthetic plan is declared for its type
        let mut seen = std::collections::BTreeSet::new();
        for f in std::fs::read_dir(common::demo_dir()).unwrap() {
            let path = f.unwrap().path();
            if path.extension().is_none_or(|e| e != "ndjson") {
                continue;
            }
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let r: Value = serde_json::from_str(line).unwrap();
                let t = r["resourceType"].as_str().unwrap().to_owned();
                for p in r["meta"]["profile"].as_array().into_iter().flatten() {
                    seen.insert((t.clone(), p.as_str().unwrap().to_owned()));
                }
            }
        }
        assert!(seen.len() > 20, "{seen:?}");
        for (t, p) in &seen {
            assert!(declared(t).contains(p), "{t}: {p} not declared");
        }
        // and what payers and providers receive or request beyond that
        let eob = declared("ExplanationOfBenefit");
        for p in [
            "http://hl7.org/fhir/us/carin-bb/StructureDefinition/C4BB-ExplanationOfBenefit-Professional-NonClinician-Basis",
            "http://hl7.org/fhir/us/carin-bb/StructureDefinition/C4BB-ExplanationOfBenefit-Inpatient-Institutional-Basis",
            "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/pdex-priorauthorization",
        ] {
            assert!(eob.contains(&p.to_owned()), "{p}");
        }
        for (t, p) in [
            (
                "Patient",
                "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient",
            ),
            (
                "Coverage",
                "http://hl7.org/fhir/us/davinci-hrex/StructureDefinition/hrex-coverage",
            ),
            (
                "Provenance",
                "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/pdex-provenance",
            ),
            (
                "Group",
                "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/pdex-member-match-group",
            ),
            (
                "Group",
                "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/pdex-member-no-match-group",
            ),
        ] {
            assert!(declared(t).contains(&p.to_owned()), "{t}: {p}");
        }
        s.stop().await;
    }
}

// ---- 10: synthetic data with data-absent-reason -------------------------------------------

/// Every resource a search returns, across pages.
async fn all(s: &TestServer, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut url = s.url(query);
    loop {
        let bundle = s.search(&url).await;
        for e in bundle["entry"].as_array().into_iter().flatten() {
            if e["search"]["mode"] == "match" {
                out.push(e["resource"].clone());
            }
        }
        match next_link(&bundle) {
            Some(n) => url = n,
            None => return out,
        }
    }
}

#[tokio::test]
async fn the_demo_plan_expresses_missing_data_with_data_absent_reason() {
    const DAR_EXT: &str = "http://hl7.org/fhir/StructureDefinition/data-absent-reason";
    const DAR: &str = "http://terminology.hl7.org/CodeSystem/data-absent-reason";
    for b in backends() {
        let s = TestServer::start_demo(&b, |_| {}).await;
        // US Core Missing Data: the extension on an element whose value is unknown...
        let patients = all(&s, "Patient?_count=100").await;
        let absent: Vec<&Value> = patients
            .iter()
            .filter(|p| {
                p["communication"][0]["language"]["extension"][0]
                    == json!({"url": DAR_EXT, "valueCode": "unknown"})
            })
            .collect();
        assert!(
            !absent.is_empty() && absent.len() < patients.len() / 3,
            "{} of {}",
            absent.len(),
            patients.len()
        );
        for p in &absent {
            assert!(p["communication"][0]["language"].get("coding").is_none());
        }
        // (the HRex example member, whose data the demo reproduces, is left as it is)
        assert!(absent.iter().all(|p| p["id"] != "m000000"));
        // ...and the dataAbsentReason element with the code `unknown` on results
        let labs = all(&s, "Observation?category=laboratory&_count=1000").await;
        let unknown: Vec<&Value> = labs
            .iter()
            .filter(|o| o["dataAbsentReason"]["coding"][0]["system"] == DAR)
            .filter(|o| o["dataAbsentReason"]["coding"][0]["code"] == "unknown")
            .collect();
        assert!(!unknown.is_empty() && unknown.len() < labs.len() / 10);
        assert!(unknown.iter().all(|o| o.get("valueQuantity").is_none()));
        s.stop().await;
    }
}

// ---- 1 (OAuth): a NUL in a client assertion's iss is invalid_client, not a 500 ------------

#[tokio::test]
async fn a_nul_in_a_client_assertion_issuer_is_invalid_client() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        let claims = json!({"iss": "a\u{0}b", "sub": "a\u{0}b", "aud": s.token_url(),
            "exp": common::now() + 60, "jti": uuid::Uuid::new_v4().to_string()});
        // signed by a key of no registered client: the issuer is looked up first
        let assertion = common::TestKey::generate(jsonwebtoken::Algorithm::ES384).sign(&claims);
        let resp = reqwest::Client::new()
            .post(s.token_url())
            .form(&[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.as_str()),
            ])
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::UNAUTHORIZED,
            "{status} {body}"
        );
        assert_eq!(body["error"], "invalid_client", "{body}");
        s.stop().await;
    }
}

/// Issue 12 item 5, the CORS invariant: the FHIR API and the OAuth endpoints (token,
/// introspection, JWKS, SMART discovery) answer browser apps from any origin with
/// `Access-Control-Allow-Origin: *` and never with credentials; `cors_origins` narrows the
/// list to exactly the configured origins; routes outside those two groups (`/health` today,
/// the cookie-setting member pages next) send no CORS headers.
#[tokio::test]
async fn cors_is_open_on_the_api_and_oauth_never_with_credentials_and_narrowed_by_cors_origins() {
    let anon = reqwest::Client::new();
    for b in backends() {
        let server = TestServer::start(&b).await;
        let root = server.base.trim_end_matches("/fhir").to_owned();
        let origin = "https://app.example.org";
        for (method, url) in [
            (reqwest::Method::GET, server.url("metadata")),
            (
                reqwest::Method::GET,
                server.url(".well-known/smart-configuration"),
            ),
            (reqwest::Method::GET, format!("{root}/oauth/jwks")),
            (reqwest::Method::POST, format!("{root}/oauth/token")),
            (reqwest::Method::POST, format!("{root}/oauth/introspect")),
            (reqwest::Method::GET, server.url("Patient")),
        ] {
            let resp = anon
                .request(method.clone(), &url)
                .header("Origin", origin)
                .send()
                .await
                .unwrap();
            let h = resp.headers();
            assert_eq!(h["access-control-allow-origin"], "*", "{method} {url}");
            assert!(!h.contains_key("access-control-allow-credentials"), "{url}");
            // the browser's preflight for a bearer-token request
            let resp = anon
                .request(reqwest::Method::OPTIONS, &url)
                .header("Origin", origin)
                .header("Access-Control-Request-Method", method.as_str())
                .header("Access-Control-Request-Headers", "authorization")
                .send()
                .await
                .unwrap();
            assert!(
                resp.status().is_success(),
                "preflight {url}: {}",
                resp.status()
            );
            assert_eq!(resp.headers()["access-control-allow-origin"], "*", "{url}");
            assert!(
                !resp
                    .headers()
                    .contains_key("access-control-allow-credentials")
            );
        }
        let resp = anon
            .get(format!("{root}/health"))
            .header("Origin", origin)
            .send()
            .await
            .unwrap();
        assert!(!resp.headers().contains_key("access-control-allow-origin"));
        server.stop().await;

        let server = TestServer::start_with(&b, |c| {
            c.cors_origins = vec![origin.into()];
        })
        .await;
        for (from, allowed) in [(origin, true), ("https://evil.example.com", false)] {
            let resp = anon
                .get(server.url("metadata"))
                .header("Origin", from)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let acao = resp.headers().get("access-control-allow-origin");
            if allowed {
                assert_eq!(acao.unwrap(), origin);
            } else {
                assert!(acao.is_none(), "{from} must not be allowed");
            }
        }
        server.stop().await;
    }
}

/// Issue 12 item 5, the error middleware's scope: a bare error on a FHIR route becomes an
/// OperationOutcome, on an OAuth endpoint RFC 6749 JSON (`{"error": …}`) — never a FHIR
/// OperationOutcome to an OAuth client.
#[tokio::test]
async fn bare_errors_are_operation_outcomes_on_fhir_routes_and_rfc6749_json_on_oauth_routes() {
    let anon = reqwest::Client::new();
    for b in backends() {
        let server = TestServer::start(&b).await;
        let root = server.base.trim_end_matches("/fhir").to_owned();
        let resp = anon.delete(server.url("metadata")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("application/fhir+json"), "{ct}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["resourceType"], "OperationOutcome");
        for path in ["/oauth/token", "/oauth/introspect", "/oauth/revoke"] {
            let resp = anon.get(format!("{root}{path}")).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
            let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
            assert!(ct.starts_with("application/json"), "{path}: {ct}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"], "invalid_request", "{path}: {body}");
            assert!(body.get("resourceType").is_none(), "{path}: {body}");
        }
        server.stop().await;
    }
}
