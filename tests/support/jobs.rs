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
pub async fn files(state: &pdex::web::AppState, job_id: &str) -> Files {
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

/// Over HTTP: the polling URL of a kick-off that must have been accepted (202).
pub async fn accepted(resp: reqwest::Response) -> String {
    let status = resp.status();
    let location = resp
        .headers()
        .get("content-location")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.text().await.unwrap();
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
    location.expect("Content-Location on a 202 kick-off")
}

/// Over HTTP: polls `url` as the server asks (`Retry-After`) until the job's manifest; a
/// failed job panics with the failure the server recorded.
pub async fn manifest(state: &pdex::web::AppState, http: &reqwest::Client, url: &str) -> Value {
    let job = url.rsplit('/').next().unwrap();
    match tokio::time::timeout(Duration::from_secs(120), poll(http, url)).await {
        Ok(Ok(m)) => m,
        Ok(Err(why)) => {
            let failure = state
                .bulk
                .jobs
                .get(job)
                .await
                .unwrap()
                .and_then(|j| j.failure);
            panic!("{why}; the job's failure: {failure:?}")
        }
        Err(_) => panic!("job {job} did not finish"),
    }
}

async fn poll(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    loop {
        let resp = http.get(url).send().await.unwrap();
        let status = resp.status().as_u16();
        let wait = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(1);
        match status {
            200 => return Ok(resp.json().await.unwrap()),
            202 | 429 => {}
            _ => {
                return Err(format!(
                    "status poll: {status} {}",
                    resp.text().await.unwrap()
                ));
            }
        }
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

/// Over HTTP: every file a manifest lists (`output`, `error`, `deleted`), downloaded with
/// `http` and parsed.
pub async fn download(http: &reqwest::Client, manifest: &Value) -> Files {
    let mut out = Vec::new();
    for section in ["output", "error", "deleted"] {
        for entry in manifest[section].as_array().into_iter().flatten() {
            let resp = http
                .get(entry["url"].as_str().unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{entry}");
            let lines: Vec<Value> = resp
                .text()
                .await
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            out.push((
                section.to_owned(),
                entry["type"].as_str().unwrap_or_default().to_owned(),
                lines,
            ));
        }
    }
    out
}
