//! Listeners: plain HTTP (development on loopback), TLS (`--tls-cert/--tls-key`), and the
//! mTLS listener (`--mtls-listen`, `--trust-anchors`, optional `--crl`) whose every
//! connection carries a verified client certificate. All of them serve the same router;
//! each request learns which listener it came on ([`ListenerInfo`]: kind and the FHIR base
//! as clients see it there) and, on the mTLS listener, the verified
//! [`ClientCertificate`] of its connection. They stop together on one shutdown signal and
//! drain in-flight requests.
//!
//! TLS versions: 1.2 and 1.3 only (NIST SP 800-52 as HRex sec-14 asks; Inferno's TLS test
//! fails a server that accepts 1.0/1.1 or refuses 1.2).
//!
//! The handshake runs in the connection's own task with a timeout, so one slow client
//! cannot stall the accept loop; request headers must arrive within the header read timeout
//! and the number of connections served at once is capped ([`ConnectionLimits`]). Plain
//! HTTP and TLS share one serving loop ([`serve`]).

use crate::auth::pki::{self, TrustAnchors};
use crate::identity::ClientCertificate;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// How long a client may take for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    verifier: Arc<dyn ClientCertVerifier>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        // TLS 1.2 and 1.3 only.
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| anyhow::anyhow!("the TLS certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// TLS for the public listener: server authentication only, no client certificate asked.
pub fn public_tls(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    server_config(chain, key, WebPkiClientVerifier::no_client_auth())
}

/// TLS for the mTLS listener: a client certificate is required, must chain to `anchors`,
/// must not be revoked by a configured CRL, and must not be its own issuer.
pub fn mtls(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    anchors: &TrustAnchors,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(anchors.roots.clone(), provider());
    if !anchors.crls.is_empty() {
        builder = builder
            .with_crls(anchors.crls.clone())
            .only_check_end_entity_revocation()
            // a CRL file covers the CAs it names; certificates of other anchors pass
            .allow_unknown_revocation_status();
    }
    let inner = builder
        .build()
        .map_err(|e| anyhow::anyhow!("cannot use the trust anchors: {e}"))?;
    server_config(chain, key, Arc::new(PkiClientVerifier { inner }))
}

/// The webpki client verifier plus the HRex "not self-signed" rule: webpki accepts a leaf
/// that is itself listed as an anchor, we do not.
#[derive(Debug)]
struct PkiClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for PkiClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // HRex sec-13: PKI mutual TLS, not self-signed certificates.
        if pki::is_self_issued(end_entity) {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A shutdown signal shared by all listeners: `true` once shutdown has begun.
pub type Shutdown = watch::Receiver<bool>;

async fn wait_for(mut shutdown: Shutdown) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// Bounds on what one connection may cost (issue 15 item 4: connections dribbling headers or
/// bodies were held open indefinitely).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A client must send a request's headers within this (hyper's `header_read_timeout`;
    /// the connection is closed otherwise).
    pub header_read_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
}

impl ConnectionLimits {
    pub fn of(limits: &crate::config::LimitsConfig) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(limits.header_read_timeout_seconds.max(1)),
            max_connections: limits.max_connections.max(1),
        }
    }
}

/// Serves `router` until `shutdown`, then drains: plain HTTP when `tls` is `None`, else TLS.
/// When the TLS configuration verifies client certificates, the leaf of each connection goes
/// into every request's extensions as a [`ClientCertificate`]. At most
/// `limits.max_connections` connections are served at once (the accept loop waits for a free
/// slot), and each must deliver request headers within `limits.header_read_timeout`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: ConnectionLimits,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let stop = wait_for(shutdown);
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = &mut stop => break,
        };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let Some(acceptor) = acceptor else {
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    router.clone().oneshot(req)
                });
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .into_owned();
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            };
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!("TLS handshake timed out");
                    return;
                }
            };
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|der| match pki::client_certificate(der) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::info!(error = %e, "verified client certificate unreadable");
                        None
                    }
                });
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                if let Some(cert) = &cert {
                    req.extensions_mut()
                        .insert::<ClientCertificate>(cert.clone());
                }
                router.clone().oneshot(req)
            });
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("in-flight connections did not finish in time");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::identity::{ListenerInfo, ListenerKind};

    #[test]
    fn oauth_urls_follow_the_listener_base() {
        let public = ListenerInfo {
            kind: ListenerKind::Public,
            base_url: "https://pdex.example/fhir".into(),
        };
        assert_eq!(
            public.oauth_url("token"),
            "https://pdex.example/oauth/token"
        );
        let other = ListenerInfo {
            kind: ListenerKind::Mtls,
            base_url: "https://mtls.example:9443/r4".into(),
        };
        assert_eq!(
            other.oauth_url("register"),
            "https://mtls.example:9443/r4/oauth/register"
        );
    }
}
