//! `pdex import` and the other commands, run as the real binary against both stores, and the
//! import library on bad input.

mod common;

use common::{TestDb, backends};
use std::process::Command;

fn pdex(db_url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pdex"))
        .args(args)
        .env("PDEX_DATABASE_URL", db_url)
        .env_remove("PDEX_CONFIG")
        .output()
        .expect("run pdex")
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test]
async fn import_reports_bad_lines_keeps_good_ones_and_is_idempotent() {
    for b in backends() {
        let db = TestDb::new(&b).await;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        write(
            &data,
            "Patient.ndjson",
            concat!(
                r#"{"resourceType":"Patient","id":"a","name":[{"family":"Able"}]}"#,
                "\n",
                r#"{"resourceType":"Patient","id":"b","gender":null}"#,
                "\n",
                "not json\n",
                r#"{"resourceType":"Patient","id":"c","name":[{"family":"Cole"}]}"#,
                "\n",
            ),
        );
        write(
            &data,
            "bundle.json",
            r#"{"resourceType":"Bundle","type":"transaction","entry":[
                {"fullUrl":"urn:uuid:7c7a3f4e-0000-4000-8000-000000000001","resource":{"resourceType":"Patient","id":"d"},"request":{"method":"PUT","url":"Patient/d"}},
                {"resource":{"resourceType":"Observation","id":"obs-d","status":"final","code":{"text":"x"},"valueQuantity":{"value":2.50},
                  "subject":{"reference":"urn:uuid:7c7a3f4e-0000-4000-8000-000000000001"}},"request":{"method":"PUT","url":"Observation/obs-d"}}]}"#,
        );
        let out = pdex(&db.url, &["import", data.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "bad lines give exit code 2: {stdout} {stderr}"
        );
        assert!(stdout.contains("4 created"), "{stdout}");
        assert!(stdout.contains("2 errors"), "{stdout}");
        assert!(
            stderr.contains("Patient.ndjson:2:"),
            "line number of the null: {stderr}"
        );
        assert!(
            stderr.contains("Patient.ndjson:3:"),
            "line number of the bad JSON: {stderr}"
        );

        // the same files again: nothing changes
        let out = pdex(&db.url, &["import", data.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("0 created, 0 updated, 4 unchanged"),
            "{stdout}"
        );

        // strict: the first bad line stops the import and nothing is written
        let strict_dir = dir.path().join("strict");
        std::fs::create_dir(&strict_dir).unwrap();
        write(
            &strict_dir,
            "x.ndjson",
            concat!(
                r#"{"resourceType":"Patient","id":"s1"}"#,
                "\n",
                r#"{"resourceType":"Patient","id":"s2","name":[]}"#,
                "\n",
            ),
        );
        let out = pdex(
            &db.url,
            &["import", "--strict", strict_dir.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(1));

        // check through the server what is stored
        let config = pdex::config::ServerConfig {
            database_url: db.url.clone(),
            listen: "127.0.0.1:0".into(),
            base_url: String::new(),
            migrate: true,
            sensitive_labels: vec![],
            demo: false,
            ..Default::default()
        };
        let server = pdex::app::Server::bind(&config).await.unwrap();
        let store = server.state.store.clone();
        let ctx = pdex::identity::AccessContext::operator();
        assert!(store.read(&ctx, "Patient", "a").await.unwrap().is_some());
        assert!(store.read(&ctx, "Patient", "c").await.unwrap().is_some());
        assert!(store.read(&ctx, "Patient", "b").await.unwrap().is_none());
        assert!(
            store.read(&ctx, "Patient", "s1").await.unwrap().is_none(),
            "strict import wrote nothing"
        );
        let obs = store
            .read(&ctx, "Observation", "obs-d")
            .await
            .unwrap()
            .unwrap();
        assert!(
            obs.content.contains(r#""reference":"Patient/d""#),
            "{}",
            obs.content
        );
        assert!(
            obs.content.contains("2.50"),
            "decimal precision kept: {}",
            obs.content
        );
        assert_eq!(obs.version, 1);
        store.db.close().await;
        drop(server);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn migrate_and_usage_errors() {
    for b in backends() {
        let db = TestDb::new(&b).await;
        let out = pdex(&db.url, &["migrate"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // twice is fine
        assert!(pdex(&db.url, &["migrate"]).status.success());
        db.cleanup().await;
    }
    let out = pdex("mysql://nope", &["migrate"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported database URL"));
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/x.db", dir.path().display());
    let out = pdex(&url, &["import", "/definitely/not/here"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

/// Issue 16 item 2: every resource's owner is the same whatever the batch timing — on
/// PostgreSQL two batches commit concurrently, and a Provenance and its target landing in
/// different batches left the Provenance ownerless in some runs. The demo plan is imported
/// with `pdex import` into fresh databases several times, on every store; every run gives
/// the same owner for every resource, and no Provenance is ownerless while a target of it
/// has an owner.
#[tokio::test]
async fn owners_are_identical_in_every_run_on_every_store() {
    let mut first: Option<Vec<(String, String, Option<String>)>> = None;
    for b in backends() {
        for run in 0..4 {
            let db = TestDb::new(&b).await;
            let out = pdex(&db.url, &["import", common::demo_dir().to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let store = pdex::store::Store::open(&db.url, Default::default(), false)
                .await
                .unwrap();
            let rows = store
                .db
                .fetch(
                    "SELECT rtype, id, patient_id FROM resources ORDER BY rtype, id",
                    &[],
                )
                .await
                .unwrap();
            let owners: Vec<(String, String, Option<String>)> = rows
                .into_iter()
                .map(|r| {
                    (
                        r.text(0).unwrap(),
                        r.text(1).unwrap(),
                        r.opt_text(2).unwrap(),
                    )
                })
                .collect();
            let stranded = store
                .db
                .fetch(
                    "SELECT p.id FROM resources p JOIN idx_reference x ON x.res_pk = p.pk AND x.param = 'target' \
                     JOIN resources t ON t.rtype = x.target_type AND t.id = x.target_id \
                     WHERE p.rtype = 'Provenance' AND p.patient_id IS NULL AND t.patient_id IS NOT NULL",
                    &[],
                )
                .await
                .unwrap();
            assert!(
                stranded.is_empty(),
                "run {run}: ownerless Provenance {stranded:?}"
            );
            match &first {
                None => first = Some(owners),
                Some(f) => assert!(f == &owners, "run {run}: owners differ from the first run"),
            }
            store.db.close().await;
            db.cleanup().await;
        }
    }
}
