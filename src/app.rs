//! Starting the server from a resolved configuration: open the store, bind the listeners
//! (public, and mTLS when configured), serve until shutdown (the demo plan is `crate::demo`). Shared by `pdex serve` and the integration tests, so that tests
//! run exactly what operators run.

use crate::auth::pki::{self, TrustAnchors};
use crate::auth::udap::UdapSigner;
use crate::config::{ServerConfig, TlsConfig};
use crate::identity::{ListenerInfo, ListenerKind};
use crate::server::router;
use crate::server::tls::{self, Shutdown};
use crate::web::AppState;
use axum::Extension;

use crate::store::Store;
use crate::store::sensitivity::SensitivityLabels;
use std::net::SocketAddr;
use std::sync::Arc;

/// A bound, ready-to-serve server: the public listener and, when configured, the mTLS one.
pub struct Server {
    pub listener: tokio::net::TcpListener,
    pub state: Arc<AppState>,
    pub local_addr: SocketAddr,
    public_tls: Option<Arc<rustls::ServerConfig>>,
    pub mtls: Option<MtlsListener>,
}

/// The bound mTLS listener.
pub struct MtlsListener {
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    pub local_addr: SocketAddr,
    /// The FHIR base as clients see it on this listener.
    pub base_url: String,
}

impl Server {
    /// Opens the store and binds `config.listen` over plain HTTP (port 0 picks a free port;
    /// the base URL then follows the real port unless one was configured).
    pub async fn bind(config: &ServerConfig) -> anyhow::Result<Server> {
        Self::bind_tls(config, &TlsConfig::default()).await
    }

    /// As [`Server::bind`], with TLS on the public listener and/or an mTLS listener.
    pub async fn bind_tls(config: &ServerConfig, tls: &TlsConfig) -> anyhow::Result<Server> {
        // Check the TLS files before touching the database.
        let public_tls = match (&tls.tls_cert, &tls.tls_key) {
            (Some(cert), Some(key)) => Some(crate::server::tls::public_tls(
                pki::load_certs(cert)?,
                pki::load_key(key)?,
            )?),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        let trust = match &tls.trust_anchors {
            Some(path) => Some(TrustAnchors::load(path, &tls.crl)?),
            None if !tls.crl.is_empty() => anyhow::bail!("--crl needs --trust-anchors"),
            None => None,
        };
        let mtls_tls = match &tls.mtls_listen {
            None => None,
            Some(_) => {
                let (Some(cert), Some(key)) = (&tls.tls_cert, &tls.tls_key) else {
                    anyhow::bail!(
                        "--mtls-listen needs a server certificate: --tls-cert and --tls-key"
                    );
                };
                let Some(anchors) = &trust else {
                    anyhow::bail!(
                        "--mtls-listen needs --trust-anchors (the trust framework's CA certificates)"
                    );
                };
                Some(crate::server::tls::mtls(
                    pki::load_certs(cert)?,
                    pki::load_key(key)?,
                    anchors,
                )?)
            }
        };
        let udap_files = match (&tls.udap_cert, &tls.udap_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => tls.tls_cert.as_ref().zip(tls.tls_key.as_ref()),
            _ => anyhow::bail!("--udap-cert and --udap-key go together"),
        };
        let udap = match (udap_files, &trust) {
            (Some((cert, key)), Some(_)) => {
                UdapSigner::load(pki::load_certs(cert)?, pki::load_key(key)?)?.map(Arc::new)
            }
            _ => None,
        };

        let labels = if config.sensitive_labels.is_empty() {
            SensitivityLabels::default()
        } else {
            SensitivityLabels::parse(config.sensitive_labels.iter().map(String::as_str))?
        }
        .with_segmentation(config.exchange.segmentation);
        let db_options = crate::store::DbOptions {
            acquire_timeout: std::time::Duration::from_secs(
                config.limits.db_acquire_timeout_seconds.max(1),
            ),
            search_timeout: Some(std::time::Duration::from_secs(
                config.limits.search_timeout_seconds.max(1),
            )),
        };
        let mut store =
            Store::open_with(&config.database_url, labels, config.migrate, db_options).await?;
        store.release = crate::store::ReleaseSettings {
            lookback_years: config.exchange.lookback_years,
            // PDex 2.2.0 §pdex-176: five years is a floor, not a cap
            lookback_is_cap: config.exchange.pdex_version == crate::config::PdexVersion::V21,
        };
        // Fresh planner statistics for SQLite: a file loaded by an older or interrupted
        // import may have none (Postgres has autovacuum for this).
        if store.db.dialect() == crate::store::Dialect::Sqlite {
            store.db.analyze().await?;
        }
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let base_url = if !config.base_url.is_empty() {
            config.base_url.trim_end_matches('/').to_owned()
        } else if public_tls.is_some() {
            crate::config::default_tls_base_url(&local_addr.to_string())
        } else {
            crate::config::default_base_url(&local_addr.to_string())
        };
        let mtls = match (mtls_tls, &tls.mtls_listen) {
            (Some(tls_config), Some(addr)) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (mTLS): {e}"))?;
                let local_addr = listener.local_addr()?;
                let base_url = match &tls.mtls_base_url {
                    Some(u) if !u.is_empty() => u.trim_end_matches('/').to_owned(),
                    _ => crate::config::default_tls_base_url(&local_addr.to_string()),
                };
                Some(MtlsListener {
                    listener,
                    tls: tls_config,
                    local_addr,
                    base_url,
                })
            }
            _ => None,
        };
        let lifetime = match config.token_lifetime {
            0 => crate::config::DEFAULT_TOKEN_LIFETIME,
            n => n,
        };
        let mut settings = crate::auth::AuthSettings::new(&base_url, lifetime);
        if let Some(m) = &mtls {
            // The token endpoint as clients see it on the mTLS listener.
            settings.extra_token_urls.push(
                ListenerInfo {
                    kind: ListenerKind::Mtls,
                    base_url: m.base_url.clone(),
                }
                .oauth_url("token"),
            );
        }
        settings.trust = trust;
        settings.udap = udap;
        settings.udap_community = tls.udap_community.clone();
        settings.patient_access = config.patient_access;
        let auth = crate::auth::AuthServer::start(store.clone(), settings).await?;
        let bulk = crate::bulk::Engine::new(store.clone(), config.bulk.clone())?;
        let capability = crate::server::capability::capability_statement(
            &store.registry,
            &base_url,
            &auth.settings,
        )
        .to_string();
        let mut state = AppState::new(
            store,
            base_url,
            bulk,
            auth,
            config.exchange.clone(),
            capability,
        )?;
        state.limits = config.limits;
        state.cors_origins = crate::server::parse_cors_origins(&config.cors_origins)?;
        let state = Arc::new(state);
        // each operation's job hooks, from the one table that declares it
        for op in crate::ops::OPERATIONS {
            if let Some(register) = op.register {
                register(&state);
            }
        }
        Ok(Server {
            listener,
            state,
            local_addr,
            public_tls,
            mtls,
        })
    }

    /// Serves until SIGINT/SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            crate::server::shutdown_signal().await;
            let _ = tx.send(true);
        });
        self.run_until(rx).await
    }

    /// Serves every listener until `shutdown` turns true, then drains them together.
    pub async fn run_until(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let store = self.state.store.clone();
        crate::bulk::worker::start(self.state.bulk.clone());
        let public_router = router(self.state.clone()).layer(Extension(ListenerInfo {
            kind: ListenerKind::Public,
            base_url: self.state.base_url.clone(),
        }));
        let limits = tls::ConnectionLimits::of(&self.state.limits);
        let public = tls::serve(
            self.listener,
            self.public_tls,
            public_router,
            limits,
            shutdown.clone(),
        );
        let mtls = async {
            match self.mtls {
                Some(m) => {
                    let mtls_router = router(self.state.clone()).layer(Extension(ListenerInfo {
                        kind: ListenerKind::Mtls,
                        base_url: m.base_url.clone(),
                    }));
                    tls::serve(
                        m.listener,
                        Some(m.tls),
                        mtls_router,
                        limits,
                        shutdown.clone(),
                    )
                    .await
                }
                None => Ok(()),
            }
        };
        let result = tokio::try_join!(public, mtls);
        store.db.close().await;
        result.map(|_| ())
    }
}
