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
        };
        let store = Store::open(&config.database_url, labels, config.migrate).await?;
        // Fresh planner statistics: a database loaded by an older or interrupted import
        // may have none.
        store.db.analyze().await?;
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let base_url = if config.base_url.is_empty() {
            crate::config::default_base_url(&local_addr.to_string())
        } else {
            config.base_url.trim_end_matches('/').to_owned()
        };
        Ok(Server {
            listener,
            state: Arc::new(AppState { store, base_url }),
            local_addr,
        })
    }

    /// Serves until SIGINT/SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        let store = self.state.store.clone();
        crate::server::serve(self.listener, router(self.state)).await?;
        store.db.close().await;
        Ok(())
    }
}

/// `serve --demo`: loads the bundled demo data set (`fixtures/demo/`) into an empty store.
pub async fn load_demo(state: &AppState) -> anyhow::Result<()> {
    let rows = state
        .store
        .db
        .fetch("SELECT COUNT(*) FROM resources", &[])
        .await?;
    let count = rows
        .first()
        .and_then(|r| r.first())
        .and_then(|v| v.as_i64())
        .unwrap_or(0);
    if count > 0 {
        tracing::info!("store is not empty; demo data not loaded");
        return Ok(());
    }
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo");
    let dir = if dir.exists() {
        dir
    } else {
        std::path::PathBuf::from("fixtures/demo")
    };
    let summary = crate::import::import(
        &state.store,
        &[dir],
        crate::import::ImportOptions::default(),
    )
    .await?;
    eprintln!("demo data: {}", summary.line());
    Ok(())
}
