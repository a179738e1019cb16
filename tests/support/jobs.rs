//! Waiting for a job on the test server's own workers and reading its files back from the
//! engine's storage (in-process; the HTTP status and download endpoints are the bulk
//! engine's and are tested in `export*.rs`).
#![allow(dead_code)]

use futures::StreamExt;
use serde_json::Value;
use std::time::Duration;

/// A finished job's files: (section, type, parsed lines).
pub type Files = Vec<(String, String, Vec<Value>)>;

/// The job id at the end of a kick-off's `Content-Location`.
pub fn job_id(resp: &axum::response::Response) -> String {
    let location = resp.headers()["content-location"].to_str().unwrap();
    location.rsplit('/').next().unwrap().to_owned()
}

/// Waits for `job_id` to complete and returns its files.
pub async fn files(state: &pdex::server::AppState, job_id: &str) -> Files {
    let engine = &state.bulk;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let job = engine.jobs.get(job_id).await.unwrap().unwrap();
        match job.state.as_str() {
            "completed" => break,
            "failed" => panic!("job failed: {:?}", job.failure),
            _ => {}
        }
        assert!(std::time::Instant::now() < deadline, "job did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut out = Vec::new();
    for f in engine.jobs.files(job_id).await.unwrap() {
        let size = engine.storage.size(job_id, &f.name).await.unwrap().unwrap();
        let mut stream = engine.storage.read(job_id, &f.name, 0, size).await.unwrap();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        let lines: Vec<Value> = String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len() as i64, f.count);
        out.push((f.section, f.rtype, lines));
    }
    out
}
