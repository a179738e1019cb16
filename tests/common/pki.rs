//! Test PKI and TLS servers: rcgen-made CAs, server and client certificates generated in
//! the test, a pdex server with its public listener on TLS and an mTLS listener, and
//! reqwest (rustls) clients that present a chosen certificate. Include it from a test crate
//! with `mod common; #[path = "common/pki.rs"] mod pki;`.
#![allow(dead_code)]

use crate::common::{Backend, TestDb};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};

static SERIAL: AtomicU64 = AtomicU64::new(1000);

fn next_serial() -> SerialNumber {
    SerialNumber::from(SERIAL.fetch_add(1, Ordering::Relaxed))
}

fn rsa_key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key")
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn valid_now(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(30);
}

/// A certificate authority of a trust framework (or an unrelated one).
pub struct Ca {
    pub pem: String,
    pub der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate with its private key (RSA 2048).
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
    /// PEM of the issuing CA ("" for self-signed).
    pub ca_pem: String,
    pub ca_der: Vec<u8>,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = rsa_key();
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(next_serial());
        valid_now(&mut params);
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    fn sign(&self, mut params: CertificateParams) -> Leaf {
        let key = rsa_key();
        if params.serial_number.is_none() {
            params.serial_number = Some(next_serial());
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
            ca_pem: self.pem.clone(),
            ca_der: self.der.clone(),
            key,
        }
    }

    /// A server certificate for localhost / 127.0.0.1 whose SAN URIs are `base_urls`.
    pub fn server(&self, base_urls: &[&str]) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        for u in base_urls {
            params
                .subject_alt_names
                .push(SanType::URI((*u).try_into().unwrap()));
        }
        params.distinguished_name = dn("localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        valid_now(&mut params);
        self.sign(params)
    }

    /// A client certificate with one SAN URI.
    pub fn client(&self, san_uri: &str) -> Leaf {
        self.client_with(san_uri, |_| {})
    }

    /// A client certificate, adjusted by `f` before signing (validity, serial, …).
    pub fn client_with(&self, san_uri: &str, f: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&format!("client {san_uri}"));
        params.subject_alt_names = vec![SanType::URI(san_uri.try_into().unwrap())];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        valid_now(&mut params);
        f(&mut params);
        self.sign(params)
    }

    /// A CRL revoking the certificates with these serial numbers.
    pub fn crl(&self, revoked_serials: &[u64]) -> String {
        let now = time::OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update: now + time::Duration::days(7),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked_serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now - time::Duration::minutes(5),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).expect("CRL").pem().unwrap()
    }
}

/// A self-signed client certificate (its own issuer) with a SAN URI.
pub fn self_signed_client(san_uri: &str) -> Leaf {
    let key = rsa_key();
    let mut params = CertificateParams::default();
    params.distinguished_name = dn("self-signed client");
    params.subject_alt_names = vec![SanType::URI(san_uri.try_into().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    valid_now(&mut params);
    let cert = params.self_signed(&key).unwrap();
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
        ca_pem: String::new(),
        ca_der: Vec::new(),
        key,
    }
}

impl Leaf {
    /// reqwest identity: certificate (and issuer) plus key.
    pub fn identity(&self) -> reqwest::Identity {
        let pem = format!("{}{}{}", self.cert_pem, self.ca_pem, self.key_pem);
        reqwest::Identity::from_pem(pem.as_bytes()).expect("identity PEM")
    }

    /// base64url SHA-256 of the DER (RFC 8705 x5t#S256), computed here independently.
    pub fn thumbprint(&self) -> String {
        use sha2::Digest;
        URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&self.der))
    }

    /// `x5c` for a JWS header: leaf, then the CA (standard base64 DER).
    pub fn x5c(&self) -> Vec<String> {
        let mut out = vec![STANDARD.encode(&self.der)];
        if !self.ca_der.is_empty() {
            out.push(STANDARD.encode(&self.ca_der));
        }
        out
    }

    /// Signs `claims` RS256 with this certificate's key, header `{alg, typ, x5c}` (+ `extra`).
    pub fn sign_jwt(&self, claims: &Value) -> String {
        self.sign_jwt_with_header(
            serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": self.x5c()}),
            claims,
        )
    }

    pub fn sign_jwt_with_header(&self, header: Value, claims: &Value) -> String {
        sign_rs256_pkcs8(&self.key.serialize_der(), &header, claims)
    }

    /// The private key as PKCS#8 DER.
    pub fn key_der(&self) -> Vec<u8> {
        self.key.serialize_der()
    }
}

/// RS256 compact JWS with an RSA PKCS#8 key (aws-lc-rs directly; not the server's code).
pub fn sign_rs256_pkcs8(pkcs8: &[u8], header: &Value, claims: &Value) -> String {
    use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
    let key = RsaKeyPair::from_pkcs8(pkcs8).expect("RSA PKCS#8 key");
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// A free TCP port on 127.0.0.1 (bound and released; the server binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the TLS test server is started with.
#[derive(Default)]
pub struct TlsOptions {
    /// Extra PEM appended to the trust-anchor file (e.g. a self-signed client certificate).
    pub extra_anchors: String,
    /// Serial numbers the CA revokes in a CRL given to the server (`--crl`).
    pub revoked_serials: Vec<u64>,
    pub udap_community: Option<String>,
}

/// A pdex server with a public TLS listener and an mTLS listener, trusting `ca`.
pub struct TlsServer {
    /// FHIR base on the public listener, `https://localhost:PORT/fhir`.
    pub public_base: String,
    /// FHIR base on the mTLS listener.
    pub mtls_base: String,
    pub ca: Ca,
    pub server_cert: Leaf,
    pub state: std::sync::Arc<pdex::web::AppState>,
    pub db: TestDb,
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    pub async fn start(backend: &Backend) -> TlsServer {
        Self::start_with(backend, TlsOptions::default()).await
    }

    pub async fn start_with(backend: &Backend, opts: TlsOptions) -> TlsServer {
        let db = TestDb::new(backend).await;
        let ca = Ca::new("test trust framework CA");
        let (public_port, mtls_port) = (free_port(), free_port());
        let public_base = format!("https://localhost:{public_port}/fhir");
        let mtls_base = format!("https://localhost:{mtls_port}/fhir");
        let server_cert = ca.server(&[&public_base, &mtls_base]);
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let tls = pdex::config::TlsConfig {
            tls_cert: Some(path(
                "server.pem",
                &format!("{}{}", server_cert.cert_pem, ca.pem),
            )),
            tls_key: Some(path("server.key", &server_cert.key_pem)),
            mtls_listen: Some(format!("127.0.0.1:{mtls_port}")),
            mtls_base_url: Some(mtls_base.clone()),
            trust_anchors: Some(path(
                "anchors.pem",
                &format!("{}{}", ca.pem, opts.extra_anchors),
            )),
            crl: if opts.revoked_serials.is_empty() {
                Vec::new()
            } else {
                vec![path("ca.crl.pem", &ca.crl(&opts.revoked_serials))]
            },
            udap_cert: None,
            udap_key: None,
            udap_community: opts.udap_community.clone(),
        };
        let config = pdex::config::ServerConfig {
            database_url: db.url.clone(),
            listen: format!("127.0.0.1:{public_port}"),
            base_url: public_base.clone(),
            migrate: true,
            token_lifetime: 3600,
            ..Default::default()
        };
        let server = pdex::app::Server::bind_tls(&config, &tls)
            .await
            .expect("TLS server binds");
        let state = server.state.clone();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let handle = tokio::spawn(server.run_until(rx));
        TlsServer {
            public_base,
            mtls_base,
            ca,
            server_cert,
            state,
            db,
            stop,
            handle,
            _dir: dir,
        }
    }

    /// A reqwest client trusting only the test CA, presenting `identity` if given.
    pub fn client(&self, identity: Option<&Leaf>) -> reqwest::Client {
        self.client_builder(identity).build().unwrap()
    }

    pub fn client_builder(&self, identity: Option<&Leaf>) -> reqwest::ClientBuilder {
        let mut b = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca.pem.as_bytes()).unwrap()])
            .https_only(true);
        if let Some(leaf) = identity {
            b = b.identity(leaf.identity());
        }
        b
    }

    pub fn public_url(&self, path: &str) -> String {
        format!("{}/{}", self.public_base, path.trim_start_matches('/'))
    }

    pub fn mtls_url(&self, path: &str) -> String {
        format!("{}/{}", self.mtls_base, path.trim_start_matches('/'))
    }

    /// An OAuth endpoint URL on the public (`mtls == false`) or mTLS listener.
    pub fn oauth_url(&self, mtls: bool, endpoint: &str) -> String {
        let base = if mtls {
            &self.mtls_base
        } else {
            &self.public_base
        };
        format!("{}/oauth/{endpoint}", base.trim_end_matches("/fhir"))
    }

    /// Signals shutdown and waits until every listener has drained.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let result = self.handle.await.expect("server task");
        self.db.cleanup().await;
        result
    }

    pub async fn stop(self) {
        self.shutdown().await.expect("clean shutdown");
    }
}
