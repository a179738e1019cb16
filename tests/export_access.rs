//! Exports see only what their owner may see: a job started for a member-scoped context
//! (its context stored in the job and rebuilt by the worker) exports that member's
//! compartment and shared resources only, without sensitive resources unless allowed; and a
//! job belongs to its client — anyone else polling, downloading or cancelling it is told it
//! does not exist. On every configured store.

mod common;

use common::{TestServer, assert_outcome, backends};
use pdex::bulk::request::{self, Level, ParseOptions};
use pdex::fhir::parameters::Parameter as RawParam;
use pdex::identity::{AccessContext, ClientKind};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const PSY: &str = r#"{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"PSY"}"#;

async fn load(server: &TestServer) {
    server
        .load(&[
            json!({"resourceType":"Patient","id":"alice"}),
            json!({"resourceType":"Patient","id":"bob"}),
            json!({"resourceType":"Practitioner","id":"doc"}),
            json!({"resourceType":"Observation","id":"a1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/alice"}}),
            json!({"resourceType":"Observation","id":"a2","meta":{"security":[serde_json::from_str::<Value>(PSY).unwrap()]},"status":"final","code":{"text":"x"},"subject":{"reference":"Patient/alice"}}),
            json!({"resourceType":"Observation","id":"b1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/bob"}}),
            json!({"resourceType":"Group","id":"g","type":"person","actual":true,"member":[{"entity":{"reference":"Patient/bob"}}]}),
        ])
        .await;
}

/// Starts an export for `ctx` the way the kick-off handler does; returns the polling URL.
async fn start_for(
    server: &TestServer,
    ctx: &AccessContext,
    level: Level,
    query: &[(&str, &str)],
) -> String {
    let raw: Vec<RawParam> = query
        .iter()
        .map(|(k, v)| RawParam {
            name: k.to_string(),
            value: v.to_string(),
        })
        .collect();
    let opts = ParseOptions {
        level,
        post: false,
        lenient: false,
        allow_until: false,
        extra: &[],
        base_url: &server.base,
    };
    let params = request::parse(&server.state.store, ctx, raw, &opts)
        .unwrap()
        .params;
    let resp = pdex::ops::export::start_job(
        &server.state,
        ctx,
        "export",
        params,
        &server.url("$export"),
        &server.base,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 202);
    resp.headers()["content-location"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Polls until the job's manifest.
async fn manifest(server: &TestServer, poll: &str) -> Value {
    loop {
        let resp = server.client.get(poll).send().await.unwrap();
        match resp.status() {
            StatusCode::ACCEPTED => tokio::time::sleep(Duration::from_secs(1)).await,
            StatusCode::OK => return resp.json().await.unwrap(),
            s => panic!("{s}"),
        }
    }
}

async fn exported(server: &TestServer, poll: &str) -> BTreeSet<String> {
    let manifest = manifest(server, poll).await;
    let mut out = BTreeSet::new();
    for item in manifest["output"].as_array().unwrap() {
        let text = server
            .client
            .get(item["url"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            out.insert(format!(
                "{}/{}",
                v["resourceType"].as_str().unwrap(),
                v["id"].as_str().unwrap()
            ));
        }
    }
    out
}

/// The `DELETE` entries of a finished job's `deleted` files.
async fn deleted(server: &TestServer, poll: &str) -> BTreeSet<String> {
    let manifest = manifest(server, poll).await;
    let mut out = BTreeSet::new();
    for item in manifest["deleted"].as_array().into_iter().flatten() {
        let resp = server
            .client
            .get(item["url"].as_str().unwrap())
            .send()
            .await;
        for line in resp.unwrap().text().await.unwrap().lines() {
            let bundle: Value = serde_json::from_str(line).unwrap();
            out.insert(
                bundle["entry"][0]["request"]["url"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn a_member_scoped_export_gets_only_that_member_and_shared_data() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        load(&server).await;

        // started for the harness's admin client, which then polls with its own token
        let mut alice = AccessContext::member("alice", false);
        alice.client_id = Some(server.admin.client_id.clone());
        let poll = start_for(&server, &alice, Level::System, &[]).await;
        assert_eq!(
            exported(&server, &poll).await,
            set(&["Patient/alice", "Observation/a1", "Practitioner/doc"]),
            "{backend:?}"
        );
        let poll = start_for(&server, &alice, Level::Patient, &[]).await;
        assert_eq!(
            exported(&server, &poll).await,
            set(&["Patient/alice", "Observation/a1"])
        );

        // with the sensitive allowance, the labelled Observation too
        let mut alice_all = AccessContext::member("alice", true);
        alice_all.client_id = Some(server.admin.client_id.clone());
        let poll = start_for(
            &server,
            &alice_all,
            Level::Patient,
            &[("_type", "Observation")],
        )
        .await;
        assert_eq!(
            exported(&server, &poll).await,
            set(&["Observation/a1", "Observation/a2"])
        );

        // a typeFilter naming another member still cannot reach them
        let poll = start_for(
            &server,
            &alice,
            Level::System,
            &[
                ("_type", "Observation"),
                ("_typeFilter", "Observation?subject=Patient/bob"),
            ],
        )
        .await;
        assert_eq!(exported(&server, &poll).await, set(&[]));
        server.stop().await;
    }
}

#[tokio::test]
async fn a_deleted_sensitive_resource_stays_hidden_without_the_allowance() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        load(&server).await;
        let before = "2000-01-01T00:00:00Z";
        for id in ["a1", "a2"] {
            let resp = server
                .client
                .delete(server.url(&format!("Observation/{id}")))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
        }
        for (allow_sensitive, expected) in [
            (false, set(&["Observation/a1"])),
            (true, set(&["Observation/a1", "Observation/a2"])),
        ] {
            let mut alice = AccessContext::member("alice", allow_sensitive);
            alice.client_id = Some(server.admin.client_id.clone());
            let poll = start_for(
                &server,
                &alice,
                Level::Patient,
                &[("_type", "Observation"), ("_since", before)],
            )
            .await;
            assert_eq!(deleted(&server, &poll).await, expected, "{backend:?}");
        }
        // nor does a read say it was there: 404, not 410
        let mut alice = AccessContext::member("alice", false);
        alice.client_id = Some(server.admin.client_id.clone());
        let store = &server.state.store;
        assert!(
            store
                .read(&alice, "Observation", "a2")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .read(&alice, "Observation", "a1")
                .await
                .unwrap()
                .unwrap()
                .deleted
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn only_the_owning_client_may_poll_download_or_cancel() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        load(&server).await;
        // this job belongs to another registered client (a job's owner must still be a live
        // client when the job runs: `auth::liveness`)
        let b = server
            .register_client(common::ClientSpec {
                name: "client b".into(),
                kind: ClientKind::Admin,
                ..Default::default()
            })
            .await;
        let mut other = AccessContext::operator();
        other.client_id = Some(b.client_id.clone());
        other.kind = ClientKind::Admin;
        let poll = start_for(&server, &other, Level::System, &[("_type", "Patient")]).await;
        let id = poll.rsplit('/').next().unwrap().to_owned();
        // let it complete
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let job = server.state.bulk.jobs.get(&id).await.unwrap().unwrap();
            if job.state == "completed" {
                break;
            }
        }
        let files = server.state.bulk.jobs.files(&id).await.unwrap();
        assert!(!files.is_empty());
        let url = pdex::bulk::manifest::file_url(&server.base, &id, &files[0].name);

        assert_outcome(
            server.client.get(&poll).send().await.unwrap(),
            StatusCode::NOT_FOUND,
        )
        .await;
        assert_outcome(
            server.client.get(&url).send().await.unwrap(),
            StatusCode::NOT_FOUND,
        )
        .await;
        assert_outcome(
            server.client.delete(&poll).send().await.unwrap(),
            StatusCode::NOT_FOUND,
        )
        .await;
        // still there for its owner
        assert_eq!(
            server
                .state
                .bulk
                .jobs
                .get(&id)
                .await
                .unwrap()
                .unwrap()
                .state,
            "completed"
        );

        // a job bound to a certificate: the same client id with another certificate is refused
        let mut bound = AccessContext::operator();
        bound.cert_thumbprint = Some("thumbprint-of-another-certificate".into());
        let poll = start_for(&server, &bound, Level::System, &[("_type", "Patient")]).await;
        assert_outcome(
            server.client.get(&poll).send().await.unwrap(),
            StatusCode::NOT_FOUND,
        )
        .await;
        server.stop().await;
    }
}
