//! Export jobs survive the server: the real `pdex serve` binary is killed with SIGKILL in the
//! middle of an export, started again on the same database and export folder, and the job
//! completes with every resource exactly once. On Postgres, two server processes share one
//! job queue. On every configured store.

mod common;

use common::{Backend, TestDb, backends};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A `pdex serve` process; its stderr lines are collected.
struct Serve {
    child: Child,
    base: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    fn start(db: &str, exports: &Path, workers: usize) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pdex"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("PDEX_DATABASE_URL", db)
            .env("PDEX_EXPORT_DIR", exports)
            // a part per few resources: many checkpoints, so the kill lands between them
            .env("PDEX_EXPORT_FILE_SIZE_BYTES", "4000")
            .env("PDEX_EXPORT_LEASE_SECONDS", "2")
            .env("PDEX_EXPORT_POLL_INTERVAL_SECONDS", "1")
            .env("PDEX_EXPORT_WORKERS", workers.to_string())
            .env("PDEX_EXPORT_MAX_JOBS_PER_CLIENT", "10")
            .env_remove("PDEX_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("pdex serving FHIR R4 at ") {
                    let _ = tx.send(url.to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("server did not start: {:?}", lines.lock().unwrap()));
        Serve { child, base, lines }
    }

    fn started_jobs(&self) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("export job started"))
            .count()
    }

    fn kill(mut self) {
        self.child.kill().unwrap(); // SIGKILL: no chance to clean up
        self.child.wait().unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes and imports a synthetic data set; returns `type → count` of what was written.
fn load(db: &str, dir: &Path, members: u64) -> BTreeMap<String, usize> {
    let data = dir.join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_pdex"))
        .args(["synth", "--members", &members.to_string(), "--out"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pdex"))
        .args(["import", "--database-url", db])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut counts = BTreeMap::new();
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ndjson") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                *counts
                    .entry(v["resourceType"].as_str().unwrap().to_owned())
                    .or_insert(0) += 1;
            }
        }
    }
    counts
}

async fn kickoff(client: &reqwest::Client, base: &str, path: &str) -> String {
    let resp = client
        .get(format!("{base}/{path}"))
        .header("Prefer", "respond-async")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    resp.headers()["content-location"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Polls until the manifest is there.
async fn wait(client: &reqwest::Client, poll: &str) -> Value {
    for _ in 0..300 {
        let resp = client.get(poll).send().await.unwrap();
        match resp.status().as_u16() {
            // 429: polled too soon after the previous process's last poll
            202 | 429 => tokio::time::sleep(Duration::from_millis(1000)).await,
            200 => return resp.json().await.unwrap(),
            s => panic!("poll: {s} {}", resp.text().await.unwrap()),
        }
    }
    panic!("export did not finish");
}

/// `type → [id]` over every output file, and the number of lines.
async fn exported(client: &reqwest::Client, manifest: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in manifest["output"].as_array().unwrap() {
        let text = client
            .get(item["url"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            out.entry(item["type"].as_str().unwrap().to_owned())
                .or_default()
                .push(v["id"].as_str().unwrap().to_owned());
        }
    }
    out
}

/// Each type's ids exactly once, and as many as were loaded.
fn assert_complete(out: &BTreeMap<String, Vec<String>>, expected: &BTreeMap<String, usize>) {
    let counts: BTreeMap<String, usize> =
        out.iter().map(|(t, ids)| (t.clone(), ids.len())).collect();
    assert_eq!(&counts, expected, "every resource exported");
    for (t, ids) in out {
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "no {t} twice");
    }
}

#[tokio::test]
async fn a_server_killed_mid_export_finishes_the_job_after_restart() {
    for backend in backends() {
        let db = TestDb::new(&backend).await;
        let dir = tempfile::tempdir().unwrap();
        let exports = dir.path().join("exports");
        let expected = load(&db.url, dir.path(), 60);
        let client = reqwest::Client::new();

        let first = Serve::start(&db.url, &exports, 1);
        let poll = kickoff(&client, &first.base, "$export").await;
        let job = poll.rsplit('/').next().unwrap().to_owned();
        // wait until some parts are recorded, then kill -9
        let mut progress = String::new();
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(600)).await;
            let resp = client.get(&poll).send().await.unwrap();
            assert_eq!(
                resp.status(),
                202,
                "the export finished before the kill; {backend:?}"
            );
            progress = resp.headers()["x-progress"].to_str().unwrap().to_owned();
            let written: u64 = progress.split(' ').next().unwrap().parse().unwrap_or(0);
            if written > 0 {
                break;
            }
        }
        assert!(
            !progress.starts_with("0 "),
            "no progress before the kill: {progress}"
        );
        first.kill();

        let second = Serve::start(&db.url, &exports, 1);
        let manifest = wait(&client, &format!("{}/_export/{job}", second.base)).await;
        assert_eq!(second.started_jobs(), 1, "resumed by the new process");
        assert!(
            manifest["output"].as_array().unwrap().len() > 10,
            "many parts"
        );
        assert_complete(&exported(&client, &manifest).await, &expected);
        // no leftover partial files
        let spool = exports.join("spool").join(&job);
        let left: Vec<_> = std::fs::read_dir(&spool)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "spool leftovers {left:?}");
        drop(second);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn server_processes_on_one_postgres_share_the_export_queue() {
    let Some(backend) = backends()
        .into_iter()
        .find(|b| matches!(b, Backend::Postgres(_)))
    else {
        return; // needs PDEX_TEST_POSTGRES_URL
    };
    let db = TestDb::new(&backend).await;
    let dir = tempfile::tempdir().unwrap();
    let exports = dir.path().join("exports");
    let expected = load(&db.url, dir.path(), 20);
    let client = reqwest::Client::new();
    // one process queues and does not run jobs; two others each run one at a time
    let front = Serve::start(&db.url, &exports, 0);
    let a = Serve::start(&db.url, &exports, 1);
    let b = Serve::start(&db.url, &exports, 1);
    let mut polls = Vec::new();
    for _ in 0..4 {
        polls.push(kickoff(&client, &front.base, "$export").await);
    }
    for poll in &polls {
        let manifest = wait(&client, poll).await;
        assert_complete(&exported(&client, &manifest).await, &expected);
    }
    assert_eq!(front.started_jobs(), 0);
    assert_eq!(a.started_jobs() + b.started_jobs(), 4, "each job run once");
    assert!(
        a.started_jobs() > 0 && b.started_jobs() > 0,
        "both processes worked"
    );
    drop((front, a, b));
    db.cleanup().await;
}
