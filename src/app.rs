//! Starting the server from a resolved configuration: open the store, bind the listener,
//! serve until shutdown. Shared by `pdex serve` and the integration tests, so that tests
//! run exactly what operators run.

use crate::config::ServerConfig;
use crate::server::{AppState, router};

use crate::store::Store;
use crate::store::sensitivity::SensitivityLabels;
use std::net::SocketAddr;
use std::sync::Arc;

/// A bound, ready-to-serve server.
pub struct Server {
    pub listener: tokio::net::TcpListener,
    pub state: Arc<AppState>,
    pub local_addr: SocketAddr,
}

impl Server {
    /// Opens the store and binds `config.listen` (port 0 picks a free port; the base URL
    /// then follows the real port unless one was configured).
    pub async fn bind(config: &ServerConfig) -> anyhow::Result<Server> {
        let labels = if config.sensitive_labels.is_empty() {
            SensitivityLabels::default()
        } else {
            SensitivityLabels::parse(config.sensitive_labels.iter().map(String::as_str))?
        }
        .with_segmentation(config.exchange.segmentation);
        let store = Store::open(&config.database_url, labels, config.migrate).await?;
        // Fresh planner statistics for SQLite: a file loaded by an older or interrupted
        // import may have none (Postgres has autovacuum for this).
        if store.db.dialect() == crate::store::Dialect::Sqlite {
            store.db.analyze().await?;
        }
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let base_url = if config.base_url.is_empty() {
            crate::config::default_base_url(&local_addr.to_string())
        } else {
            config.base_url.trim_end_matches('/').to_owned()
        };
        let lifetime = match config.token_lifetime {
            0 => crate::auth::server::DEFAULT_TOKEN_LIFETIME,
            n => n,
        };
        let auth = crate::auth::AuthServer::start(
            store.clone(),
            crate::auth::AuthSettings::new(&base_url, lifetime),
        )
        .await?;
        let bulk = crate::bulk::Engine::new(store.clone(), config.bulk.clone())?;
        let state = Arc::new(
            AppState::new(store, base_url, bulk, auth).with_exchange(config.exchange.clone())?,
        );
        crate::ops::bulk_match_job::BulkMatchRunner::register(
            &state.bulk,
            state.store.clone(),
            state.payer_identifiers(),
            state.store.sensitivity.segmentation(),
        );
        crate::ops::davinci_data_export::register(&state.bulk);
        Ok(Server {
            listener,
            state,
            local_addr,
        })
    }

    /// Serves until SIGINT/SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        let store = self.state.store.clone();
        crate::bulk::worker::start(self.state.bulk.clone());
        crate::server::serve(self.listener, router(self.state)).await?;
        store.db.close().await;
        Ok(())
    }
}

/// `serve --demo`: loads the bundled demo data set (`fixtures/demo/`) into an empty store,
/// registers the demo back-office client, and prints a banner with commands that work
/// against it (including a demo access token).
pub async fn load_demo(state: &AppState) -> anyhow::Result<()> {
    let dir = demo_dir();
    if state.store.is_empty().await? {
        let summary = crate::import::import(
            &state.store,
            std::slice::from_ref(&dir),
            crate::import::ImportOptions::default(),
        )
        .await?;
        eprintln!("demo data: {}", summary.line());
    } else {
        eprintln!("demo data: the store already holds data; nothing loaded");
    }
    let token = demo_token(state).await?;
    eprintln!("{}", demo_banner(&state.base_url, &dir, &token));
    Ok(())
}

/// Demo only: a read-only `admin` client ("demo back office") and a token for it that lasts
/// the demo session (8 hours), so the banner's curl commands can be pasted as they are.
async fn demo_token(state: &AppState) -> anyhow::Result<String> {
    use crate::auth::{ClientKind, clients};
    const DEMO_ID: &str = "pdex-demo-back-office";
    let client = match clients::find_by_external_id(&state.store, DEMO_ID).await? {
        Some(c) => c,
        None => {
            clients::create(
                &state.store,
                clients::NewClient {
                    name: "demo back office".into(),
                    kind: Some(ClientKind::Admin),
                    scopes: vec!["system/*.rs".into()],
                    // no keys and a secret nobody learns: the client cannot authenticate
                    // itself; it gets tokens only from this banner
                    secret: true,
                    external_id: Some(DEMO_ID.into()),
                    ..Default::default()
                },
            )
            .await?
            .client
        }
    };
    let issued = crate::auth::access_token::mint(
        &state.auth,
        &crate::auth::access_token::Grant {
            client_id: client.client_id.clone(),
            kind: client.kind,
            organization: None,
            scopes: client.scopes.clone(),
            patient: None,
            allow_sensitive: true,
            cnf: None,
            lifetime: 8 * 3600,
        },
    )
    .await?;
    Ok(issued.access_token)
}

fn demo_dir() -> std::path::PathBuf {
    let built = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo");
    if built.exists() {
        built
    } else {
        std::path::PathBuf::from("fixtures/demo")
    }
}

/// Ready-to-paste commands for the first demo member (the HRex `$member-match` example).
pub fn demo_banner(base: &str, dir: &std::path::Path, token: &str) -> String {
    let first: serde_json::Value = std::fs::read_to_string(dir.join("members.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Vec<serde_json::Value>>(&t).ok())
        .and_then(|v| v.into_iter().next())
        .unwrap_or_default();
    let id = first["patient_id"].as_str().unwrap_or("m000000");
    let member_id = first["member_id"].as_str().unwrap_or("DH10001235");
    let family = first["family"].as_str().unwrap_or("Person");
    format!(
        r#"
  pdex demo — FHIR R4 at {base}
  A read-only back-office token for the demo (8 hours):
    export TOKEN={token}
  Try:
    curl -s {base}/metadata | head -c 400
    curl -s -H "Authorization: Bearer $TOKEN" '{base}/Patient?identifier={member_id}'
    curl -s -H "Authorization: Bearer $TOKEN" '{base}/Patient?family={family}&_count=5'
    curl -s -H "Authorization: Bearer $TOKEN" '{base}/Observation?patient={id}&category=laboratory&_sort=-date&_count=5'
    curl -s -H "Authorization: Bearer $TOKEN" '{base}/ExplanationOfBenefit?patient={id}&_include=ExplanationOfBenefit:*'
    curl -s -H "Authorization: Bearer $TOKEN" '{base}/Condition?patient={id}&_revinclude=Provenance:target'
    curl -s -H "Authorization: Bearer $TOKEN" '{base}/Coverage?beneficiary=Patient/{id}'
"#
    )
}
