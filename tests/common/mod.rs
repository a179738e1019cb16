//! Test harness: starts the real pdex server on an ephemeral port over real HTTP, on SQLite
//! (always) and on PostgreSQL (when `PDEX_TEST_POSTGRES_URL` is set, in a fresh database
//! per test), and gives tests a reqwest client and helpers.
#![allow(dead_code)]

use pdex::config::ServerConfig;
use reqwest::{Client, Response, StatusCode};
use serde_json::Value;

/// Which database a test run uses.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

/// SQLite always; Postgres too when `PDEX_TEST_POSTGRES_URL` is set.
pub fn backends() -> Vec<Backend> {
    let mut out = vec![Backend::Sqlite];
    if let Ok(url) = std::env::var("PDEX_TEST_POSTGRES_URL")
        && !url.is_empty()
    {
        out.push(Backend::Postgres(url));
    }
    out
}

/// A fresh, empty database for one test; dropped (Postgres) or deleted (SQLite) at the end.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_admin: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(backend: &Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}/pdex.db", dir.path().display());
                TestDb {
                    url,
                    _dir: Some(dir),
                    pg_admin: None,
                }
            }
            Backend::Postgres(admin_url) => {
                let name = format!("pdex_t_{}", uuid::Uuid::new_v4().simple());
                let pool = sqlx::PgPool::connect(admin_url)
                    .await
                    .expect("connect to Postgres");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&pool)
                    .await
                    .expect("create test database");
                pool.close().await;
                let mut url = url::Url::parse(admin_url).expect("PDEX_TEST_POSTGRES_URL is a URL");
                url.set_path(&format!("/{name}"));
                TestDb {
                    url: url.to_string(),
                    _dir: None,
                    pg_admin: Some((admin_url.clone(), name)),
                }
            }
        }
    }

    /// Drops a Postgres test database.
    pub async fn cleanup(&self) {
        if let Some((admin, name)) = &self.pg_admin
            && let Ok(pool) = sqlx::PgPool::connect(admin).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&pool)
                .await;
            pool.close().await;
        }
    }
}

/// A running server.
pub struct TestServer {
    pub base: String,
    pub client: Client,
    pub db: TestDb,
    pub state: std::sync::Arc<pdex::server::AppState>,
    /// Export files of this server (`[bulk] export_dir`).
    pub exports: tempfile::TempDir,
    handle: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(backend: &Backend) -> TestServer {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts a server whose configuration `configure` adjusts first (export files go to a
    /// fresh temporary folder, status polls are answered with `Retry-After: 1`).
    pub async fn start_with(
        backend: &Backend,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let db = TestDb::new(backend).await;
        let exports = tempfile::tempdir().expect("tempdir");
        let mut config = ServerConfig {
            database_url: db.url.clone(),
            listen: "127.0.0.1:0".into(),
            base_url: String::new(),
            migrate: true,
            sensitive_labels: vec![],
            demo: false,
            bulk: pdex::config::BulkConfig {
                export_dir: exports.path().to_owned(),
                poll_interval_seconds: 1,
                ..Default::default()
            },
            exchange: Default::default(),
        };
        configure(&mut config);
        let server = pdex::app::Server::bind(&config)
            .await
            .expect("server binds");
        let base = server.state.base_url.clone();
        let state = server.state.clone();
        let handle = tokio::spawn(async move {
            server.run().await.expect("server runs");
        });
        TestServer {
            base,
            client: Client::new(),
            db,
            state,
            exports,
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else if path.is_empty() {
            self.base.clone()
        } else {
            format!("{}/{}", self.base, path.trim_start_matches('/'))
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .header("Accept", "application/fhir+json")
            .send()
            .await
            .expect("request")
    }

    pub async fn send_json(&self, method: reqwest::Method, path: &str, body: &Value) -> Response {
        self.client
            .request(method, self.url(path))
            .header("Content-Type", "application/fhir+json;charset=utf-8")
            .header("Accept", "application/fhir+json")
            .body(body.to_string())
            .send()
            .await
            .expect("request")
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.send_json(reqwest::Method::POST, path, body).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Response {
        self.send_json(reqwest::Method::PUT, path, body).await
    }

    /// PUTs each resource under its own id; panics unless each is stored.
    pub async fn load(&self, resources: &[Value]) {
        for r in resources {
            let path = format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            );
            let resp = self.put(&path, r).await;
            assert!(
                resp.status().is_success(),
                "loading {path}: {} {}",
                resp.status(),
                resp.text().await.unwrap()
            );
        }
    }

    /// GET a search; asserts 200 and returns the Bundle.
    pub async fn search(&self, query: &str) -> Value {
        let resp = self.get(query).await;
        let status = resp.status();
        let body: Value = resp.json().await.expect("JSON body");
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        assert_eq!(body["resourceType"], "Bundle", "{query}");
        body
    }

    /// Ids of the `match` entries of a search, following every `next` link, sorted.
    pub async fn ids(&self, query: &str) -> Vec<String> {
        let mut ids = self.ids_in_order(query).await;
        ids.sort();
        ids
    }

    /// Ids of the `match` entries in the order the server returned them, across pages.
    pub async fn ids_in_order(&self, query: &str) -> Vec<String> {
        let mut ids = Vec::new();
        let mut url = self.url(query);
        for _ in 0..100 {
            let bundle = self.search(&url).await;
            ids.extend(match_ids(&bundle));
            match next_link(&bundle) {
                Some(next) => url = next,
                None => return ids,
            }
        }
        panic!("more than 100 pages for {query}");
    }

    pub async fn stop(self) {
        self.handle.abort();
        let _ = self.handle.await;
        self.state.store.db.close().await;
        self.db.cleanup().await;
    }
}

pub fn match_ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

pub fn entries_with_mode(bundle: &Value, mode: &str) -> Vec<(String, String)> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == mode)
        .map(|e| {
            (
                e["resource"]["resourceType"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e["resource"]["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

pub fn next_link(bundle: &Value) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")
        .and_then(|l| l["url"].as_str())
        .map(str::to_owned)
}

/// Asserts an error response: status and an OperationOutcome body.
pub async fn assert_outcome(resp: Response, status: StatusCode) -> Value {
    let got = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = resp.text().await.expect("body");
    assert_eq!(got, status, "body: {text}");
    assert!(ct.starts_with("application/fhir+json"), "content-type {ct}");
    let body: Value = serde_json::from_str(&text).expect("JSON OperationOutcome");
    assert_eq!(body["resourceType"], "OperationOutcome", "{text}");
    body
}

pub fn sorted(mut v: Vec<&str>) -> Vec<String> {
    v.sort();
    v.into_iter().map(str::to_owned).collect()
}
