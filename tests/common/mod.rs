//! Test harness: starts the real pdex server on an ephemeral port over real HTTP, on SQLite
//! (always) and on PostgreSQL (when `PDEX_TEST_POSTGRES_URL` is set, in a fresh database
//! per test), and gives tests a reqwest client and helpers.
#![allow(dead_code)]

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pdex::config::ServerConfig;
use pdex::identity::ClientKind;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use std::io::BufRead;

/// Which database a test run uses.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Backend::Postgres(_))
    }
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
    /// Sends the admin client's bearer token (see [`TestServer::admin`]).
    pub client: Client,
    /// An `admin` client (the plan's back office: all data, every scope) registered at start.
    pub admin: TestClient,
    pub db: TestDb,
    pub state: std::sync::Arc<pdex::web::AppState>,
    /// Export files of this server (`[bulk] export_dir`).
    pub exports: tempfile::TempDir,
    handle: tokio::task::JoinHandle<()>,
}

/// Scopes of the harness's admin client: everything, operations included.
pub const ADMIN_SCOPES: &str = "system/*.cruds http://hl7.org/fhir/us/davinci-hrex/OperationDefinition/member-match http://hl7.org/fhir/us/davinci-pdex/OperationDefinition/BulkMemberMatch system/Group.u?code=http://hl7.org/fhir/us/davinci-pdex/ValueSet/PDexMultiMemberMatchResultVS|match";

impl TestServer {
    /// Starts a server with the harness defaults (tokens live an hour so that long suites
    /// keep their admin token); `client` carries an admin token.
    pub async fn start(backend: &Backend) -> TestServer {
        Self::start_with(backend, |_| {}).await
    }

    /// Like [`TestServer::start`], with a chance to change the configuration first (export
    /// files go to a fresh temporary folder, status polls are answered with `Retry-After: 1`).
    pub async fn start_with(
        backend: &Backend,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let db = TestDb::new(backend).await;
        Self::start_on_db(db, configure).await
    }

    /// A server on a database the test manages itself (e.g. a private PostgreSQL cluster);
    /// nothing is dropped at [`TestServer::stop`].
    pub async fn start_on(
        database_url: &str,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let db = TestDb {
            url: database_url.to_owned(),
            _dir: None,
            pg_admin: None,
        };
        Self::start_on_db(db, configure).await
    }

    async fn start_on_db(db: TestDb, configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let exports = tempfile::tempdir().expect("tempdir");
        let mut config = ServerConfig {
            database_url: db.url.clone(),
            listen: "127.0.0.1:0".into(),
            migrate: true,
            token_lifetime: 3600,
            bulk: pdex::config::BulkConfig {
                export_dir: exports.path().to_owned(),
                poll_interval_seconds: 1,
                ..Default::default()
            },
            ..ServerConfig::default()
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
        let admin = register(
            &state.store,
            ClientSpec {
                name: "harness admin".into(),
                kind: ClientKind::Admin,
                scopes: ADMIN_SCOPES.into(),
                ..ClientSpec::default()
            },
        )
        .await;
        let mut server = TestServer {
            base,
            client: Client::new(),
            admin,
            db,
            state,
            exports,
            handle,
        };
        let token = server.admin.token(&server).await;
        server.client = server.http(&token);
        server
    }

    /// The token endpoint URL (the `aud` of client assertions).
    pub fn token_url(&self) -> String {
        self.state.auth.settings.token_url()
    }

    /// Registers a client with a freshly generated key pair (through the same API that
    /// `pdex client add` uses).
    pub async fn register_client(&self, spec: ClientSpec) -> TestClient {
        register(&self.state.store, spec).await
    }

    /// A reqwest client that sends `token` as its bearer token.
    pub fn http(&self, token: &str) -> Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        Client::builder().default_headers(headers).build().unwrap()
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

// ---------------------------------------------------------------------------------------
// OAuth clients and keys for tests: real key pairs (aws-lc-rs, the crate the server verifies
// with), real signed assertions, real token requests over HTTP.

/// A client key pair: the private key signs assertions, `jwk` is the public half.
#[derive(Clone)]
pub struct TestKey {
    pub alg: Algorithm,
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: Value,
}

impl TestKey {
    /// A new key for `alg` (RS256/RS384: RSA 2048; ES256: P-256; ES384: P-384).
    pub fn generate(alg: Algorithm) -> TestKey {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
        };
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let encoding = match alg {
            Algorithm::RS256 | Algorithm::RS384 => {
                let pair =
                    aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
                let der = pair.as_der().unwrap();
                EncodingKey::from_rsa_pem(pem("PRIVATE KEY", der.as_ref()).as_bytes()).unwrap()
            }
            Algorithm::ES256 => EncodingKey::from_ec_der(
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .unwrap()
                    .as_ref(),
            ),
            Algorithm::ES384 => EncodingKey::from_ec_der(
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
                    .unwrap()
                    .as_ref(),
            ),
            other => panic!("no test keys for {other:?}"),
        };
        let kid = format!("k-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut jwk = serde_json::to_value(
            jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, alg).unwrap(),
        )
        .unwrap();
        jwk["kid"] = json!(kid);
        TestKey {
            alg,
            kid,
            encoding,
            jwk,
        }
    }

    /// `{"keys": [jwk]}`.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.jwk]})
    }

    /// Signs `claims` with this key (header `alg`, `kid`, `typ: JWT`).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// What to register.
#[derive(Clone)]
pub struct ClientSpec {
    pub name: String,
    pub kind: ClientKind,
    /// `SYSTEM|VALUE`.
    pub organization: Option<String>,
    /// Space-separated registered scopes.
    pub scopes: String,
    pub alg: Algorithm,
    /// Register the key by URL instead of inline (the test serves it).
    pub jwks_uri: Option<String>,
    pub cert_san_uri: Option<String>,
}

impl Default for ClientSpec {
    fn default() -> Self {
        ClientSpec {
            name: "test client".into(),
            kind: ClientKind::Payer,
            organization: None,
            scopes: "system/*.rs".into(),
            alg: Algorithm::ES384,
            jwks_uri: None,
            cert_san_uri: None,
        }
    }
}

/// A registered client and its private key.
#[derive(Clone)]
pub struct TestClient {
    pub client_id: String,
    pub key: TestKey,
    pub kind: ClientKind,
    pub organization: Option<String>,
}

async fn register(store: &pdex::store::Store, spec: ClientSpec) -> TestClient {
    let key = TestKey::generate(spec.alg);
    let organization = spec
        .organization
        .as_deref()
        .map(|o| pdex::auth::clients::parse_organization(o).unwrap());
    let created = pdex::auth::clients::create(
        store,
        pdex::auth::clients::NewClient {
            name: spec.name,
            kind: Some(spec.kind),
            jwks: spec.jwks_uri.is_none().then(|| key.jwks()),
            jwks_uri: spec.jwks_uri,
            organization,
            scopes: pdex::identity::scopes::split(&spec.scopes),
            cert_san_uri: spec.cert_san_uri,
            ..Default::default()
        },
    )
    .await
    .expect("client registered");
    TestClient {
        client_id: created.client.client_id,
        key,
        kind: spec.kind,
        organization: spec.organization,
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl TestClient {
    /// Claims of a valid client assertion for `aud` (SMART Backend Services §2.3).
    pub fn assertion_claims(&self, aud: &str) -> Value {
        json!({
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": aud,
            "exp": now() + 240,
            "jti": uuid::Uuid::new_v4().to_string(),
        })
    }

    /// A valid signed client assertion for the server's token endpoint.
    pub fn assertion(&self, server: &TestServer) -> String {
        self.key.sign(&self.assertion_claims(&server.token_url()))
    }

    /// POSTs a form to the token endpoint.
    pub async fn post_token(&self, server: &TestServer, form: &[(&str, &str)]) -> Response {
        Client::new()
            .post(server.token_url())
            .header("Accept", "application/json")
            .form(form)
            .send()
            .await
            .expect("token request")
    }

    /// A `client_credentials` request with a fresh assertion and `scope` (none if `None`);
    /// returns the raw response.
    pub async fn request_token(&self, server: &TestServer, scope: Option<&str>) -> Response {
        let assertion = self.assertion(server);
        let mut form = vec![
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
        ];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        self.post_token(server, &form).await
    }

    /// A `client_credentials` token for `scope`; panics unless the server grants one.
    /// Returns the whole token response.
    pub async fn token_response(&self, server: &TestServer, scope: Option<&str>) -> Value {
        let resp = self.request_token(server, scope).await;
        let status = resp.status();
        let body: Value = resp.json().await.expect("JSON token response");
        assert_eq!(status, StatusCode::OK, "token request refused: {body}");
        body
    }

    /// A `client_credentials` access token with every registered scope (a real
    /// `private_key_jwt` token).
    pub async fn token(&self, server: &TestServer) -> String {
        self.token_response(server, None).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The RFC 7523 JWT-bearer grant for member `sub` (`Patient/ID` or the UMB); raw response.
    pub async fn request_member_token(&self, server: &TestServer, sub: &str) -> Response {
        let client_assertion = self.assertion(server);
        let mut claims = self.assertion_claims(&server.token_url());
        claims["sub"] = json!(sub);
        let assertion = self.key.sign(&claims);
        self.post_token(
            server,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", client_assertion.as_str()),
            ],
        )
        .await
    }

    /// A member-scoped access token for `sub`; panics unless the server grants one (it needs
    /// a consent naming this client's organization).
    pub async fn member_token(&self, server: &TestServer, sub: &str) -> String {
        let resp = self.request_member_token(server, sub).await;
        let status = resp.status();
        let body: Value = resp.json().await.expect("JSON token response");
        assert_eq!(status, StatusCode::OK, "member token refused: {body}");
        body["access_token"].as_str().unwrap().to_owned()
    }
}

/// A client registered with `pdex client add` on a database that `pdex serve` processes use:
/// tests of the real binary get tokens from whichever process they talk to.
pub struct CliClient {
    pub client_id: String,
    pub key: TestKey,
}

impl CliClient {
    /// Registers an `admin` client with `scope` through the CLI.
    pub fn register(db: &str, scope: &str) -> CliClient {
        Self::register_as(db, "admin", None, scope)
    }

    /// Registers a client of `kind` (`payer`, `provider`, `app`, `admin`), with the
    /// organization `SYSTEM|VALUE` when given, through the CLI.
    pub fn register_as(db: &str, kind: &str, organization: Option<&str>, scope: &str) -> CliClient {
        let key = TestKey::generate(Algorithm::ES384);
        let dir = tempfile::tempdir().expect("tempdir");
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, key.jwks().to_string()).unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pdex"));
        command
            .args(["client", "add", "--database-url", db])
            .args(["--name", &format!("test {kind}")])
            .args(["--kind", kind, "--scope", scope, "--jwks"])
            .arg(&jwks);
        if let Some(org) = organization {
            command.args(["--organization", org]);
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let added: Value = serde_json::from_slice(&out.stdout).unwrap();
        CliClient {
            client_id: added["client_id"].as_str().unwrap().to_owned(),
            key,
        }
    }

    /// A reqwest client with a fresh token from the server at FHIR base `base`.
    pub async fn http(&self, base: &str) -> Client {
        let token_url = format!("{}/oauth/token", base.strip_suffix("/fhir").unwrap_or(base));
        let assertion = self.key.sign(&json!({
            "iss": self.client_id, "sub": self.client_id, "aud": token_url,
            "exp": now() + 120, "jti": uuid::Uuid::new_v4().to_string(),
        }));
        let resp = Client::new()
            .post(&token_url)
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
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", body["access_token"].as_str().unwrap())
                .parse()
                .unwrap(),
        );
        Client::builder().default_headers(headers).build().unwrap()
    }
}

/// The bundled demo plan (`fixtures/demo`): its data files and `members.json`.
pub fn demo_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo")
}

/// The demo plan's member list (`members.json`: ids, identifiers, demographics).
pub fn demo_members() -> Vec<Value> {
    serde_json::from_str(&std::fs::read_to_string(demo_dir().join("members.json")).unwrap())
        .unwrap()
}

/// One demo member by Patient id.
pub fn demo_member(id: &str) -> Value {
    demo_members()
        .into_iter()
        .find(|m| m["patient_id"] == id)
        .unwrap_or_else(|| panic!("no demo member {id}"))
}

impl TestServer {
    /// A server (configured by `configure`) holding the demo plan's data.
    pub async fn start_demo(
        backend: &Backend,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let s = Self::start_with(backend, configure).await;
        let r = pdex::import::import(&s.state.store, &[demo_dir()], Default::default())
            .await
            .unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        s
    }
}

/// Starts `pdex serve` and waits for its "serving" line: returns the child, the FHIR base
/// URL, the stderr lines printed before it, and a receiver for the later ones.
pub fn start_serve(
    cmd: &mut std::process::Command,
) -> (
    std::process::Child,
    String,
    Vec<String>,
    std::sync::mpsc::Receiver<String>,
) {
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    loop {
        let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(120)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server did not start: {lines:?}");
        };
        if let Some(url) = line.strip_prefix("pdex serving FHIR R4 at ") {
            return (child, url.to_owned(), lines, rx);
        }
        lines.push(line);
    }
}

/// Are these programs on the PATH? Tests that run the README's or the banner's shell commands
/// need `bash`, `curl` and `jq`; `.ci/run` installs them, and on a machine without them (where
/// `cargo test` must still pass with nothing but Rust) those parts are skipped with a note.
pub fn have_tools(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !std::process::Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if !missing.is_empty() {
        eprintln!("skipped: needs {missing:?} on the PATH (.ci/run installs them)");
    }
    missing.is_empty()
}

/// `pdex consent revoke` on the server's database; returns how many consents it revoked.
pub fn revoke_consent_with_cli(s: &TestServer, patient: &str, organization: &str) -> i64 {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pdex"))
        .args(["consent", "revoke", "--database-url", &s.db.url])
        .args(["--patient", patient, "--organization", organization])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["patient"], patient);
    said["revoked"].as_i64().unwrap()
}
