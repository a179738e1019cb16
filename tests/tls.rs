//! The listeners over real TLS: TLS 1.2 and 1.3 only on the public listener; the mTLS
//! listener refuses connections without a client certificate, with one from another CA,
//! a self-signed one (even when listed as an anchor), an expired one and a revoked one;
//! both listeners serve the same router and shut down together.

mod common;
#[path = "common/pki.rs"]
mod pki;

use pki::{Ca, TlsOptions, TlsServer, self_signed_client};
use reqwest::StatusCode;
use std::io::{Read, Write};

async fn metadata_status(
    client: &reqwest::Client,
    url: &str,
) -> Result<StatusCode, reqwest::Error> {
    client
        .get(url)
        .header("Accept", "application/fhir+json")
        .send()
        .await
        .map(|r| r.status())
}

/// A ClientHello by hand: `version` as client_version, no supported_versions extension, a
/// TLS 1.2 ECDHE cipher suite and the extensions a 1.2 server needs. rustls (like every
/// client library) cannot offer 1.0/1.1 any more, so the old versions are tested with raw
/// bytes.
fn client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut ext = Vec::new();
    // supported_groups: x25519, secp256r1
    ext.extend([0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]);
    // ec_point_formats: uncompressed
    ext.extend([0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    // signature_algorithms: rsa_pss_rsae_sha256, rsa_pkcs1_sha256
    ext.extend([0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x08, 0x04, 0x04, 0x01]);
    let mut body = Vec::new();
    body.extend(version);
    body.extend([7u8; 32]); // random
    body.push(0); // session id
    // ECDHE_RSA_WITH_AES_128_GCM_SHA256, ECDHE_RSA_WITH_AES_128_CBC_SHA, RSA_WITH_AES_128_CBC_SHA
    body.extend([0x00, 0x06, 0xc0, 0x2f, 0xc0, 0x13, 0x00, 0x2f]);
    body.extend([0x01, 0x00]); // null compression
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut hs = vec![0x01];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((hs.len() as u16).to_be_bytes());
    record.extend(hs);
    record
}

/// Sends a raw ClientHello and returns the first record's content type and, for a
/// handshake record, the handshake message type (2 = ServerHello).
fn first_server_record(port: u16, hello: &[u8]) -> Option<(u8, u8)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(hello).unwrap();
    let mut head = [0u8; 6];
    match s.read_exact(&mut head) {
        Ok(()) => Some((head[0], head[5])),
        Err(_) => None,
    }
}

#[tokio::test]
async fn public_listener_speaks_tls_1_2_and_1_3_only() {
    for backend in common::backends() {
        let server = TlsServer::start(&backend).await;
        let url = server.public_url("metadata");
        let tls12 = server
            .client_builder(None)
            .max_tls_version(reqwest::tls::Version::TLS_1_2)
            .build()
            .unwrap();
        assert_eq!(metadata_status(&tls12, &url).await.unwrap(), StatusCode::OK);
        let tls13 = server
            .client_builder(None)
            .min_tls_version(reqwest::tls::Version::TLS_1_3)
            .build()
            .unwrap();
        assert_eq!(metadata_status(&tls13, &url).await.unwrap(), StatusCode::OK);

        let port: u16 = url::Url::parse(&url).unwrap().port().unwrap();
        let (p, old) = (port, [0x03, 0x02]);
        let (v12, v11, v10) = tokio::task::spawn_blocking(move || {
            (
                first_server_record(p, &client_hello([0x03, 0x03])),
                first_server_record(p, &client_hello(old)),
                first_server_record(p, &client_hello([0x03, 0x01])),
            )
        })
        .await
        .unwrap();
        // the hand-made hello is good enough for TLS 1.2: a ServerHello comes back …
        assert_eq!(v12, Some((0x16, 0x02)), "TLS 1.2 ClientHello");
        // … and the same hello claiming TLS 1.1 or 1.0 gets an alert (or the connection
        // closed), never a ServerHello
        for (name, got) in [("TLS 1.1", v11), ("TLS 1.0", v10)] {
            assert!(
                matches!(got, None | Some((0x15, _))),
                "{name} must be refused, got {got:?}"
            );
        }
        // the public listener does not need a client certificate (Inferno connects without)
        let plain = server.client(None);
        assert_eq!(metadata_status(&plain, &url).await.unwrap(), StatusCode::OK);
        server.stop().await;
    }
}

#[tokio::test]
async fn mtls_listener_requires_a_certificate_of_the_trust_framework() {
    for backend in common::backends() {
        let self_signed = self_signed_client("https://self.example.org");
        // the self-signed certificate is even listed as an anchor: still refused
        let server = TlsServer::start_with(
            &backend,
            TlsOptions {
                extra_anchors: self_signed.cert_pem.clone(),
                ..Default::default()
            },
        )
        .await;
        let url = server.mtls_url("metadata");

        let good = server.ca.client("https://payer-a.example.org");
        let ok = server.client(Some(&good));
        assert_eq!(metadata_status(&ok, &url).await.unwrap(), StatusCode::OK);

        let none = server.client(None);
        assert!(
            metadata_status(&none, &url).await.is_err(),
            "no client certificate must be refused at the handshake"
        );

        let other_ca = Ca::new("some other CA");
        let stranger = other_ca.client("https://payer-a.example.org");
        assert!(
            metadata_status(&server.client(Some(&stranger)), &url)
                .await
                .is_err(),
            "a certificate from another CA must be refused"
        );

        assert!(
            metadata_status(&server.client(Some(&self_signed)), &url)
                .await
                .is_err(),
            "a self-signed certificate must be refused even when it is an anchor"
        );

        let expired = server.ca.client_with("https://payer-a.example.org", |p| {
            let now = time::OffsetDateTime::now_utc();
            p.not_before = now - time::Duration::days(30);
            p.not_after = now - time::Duration::days(1);
        });
        assert!(
            metadata_status(&server.client(Some(&expired)), &url)
                .await
                .is_err(),
            "an expired certificate must be refused"
        );

        // the public listener is unaffected and needs no certificate
        assert_eq!(
            metadata_status(&none, &server.public_url("metadata"))
                .await
                .unwrap(),
            StatusCode::OK
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn mtls_listener_refuses_revoked_certificates() {
    for backend in common::backends() {
        let revoked_serial = 4_000_000_001u64;
        let server = TlsServer::start_with(
            &backend,
            TlsOptions {
                revoked_serials: vec![revoked_serial],
                ..Default::default()
            },
        )
        .await;
        let url = server.mtls_url("metadata");
        let revoked = server.ca.client_with("https://payer-a.example.org", |p| {
            p.serial_number = Some(revoked_serial.into());
        });
        assert!(
            metadata_status(&server.client(Some(&revoked)), &url)
                .await
                .is_err(),
            "a revoked certificate must be refused"
        );
        let fine = server.ca.client("https://payer-b.example.org");
        assert_eq!(
            metadata_status(&server.client(Some(&fine)), &url)
                .await
                .unwrap(),
            StatusCode::OK
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn both_listeners_serve_the_same_router_and_stop_together() {
    for backend in common::backends() {
        let server = TlsServer::start(&backend).await;
        let cert = server.ca.client("https://payer-a.example.org");
        let client = server.client(Some(&cert));
        // same CapabilityStatement shape on both; each names its own base
        for base in [&server.public_base, &server.mtls_base] {
            let resp = client.get(format!("{base}/metadata")).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["resourceType"], "CapabilityStatement");
        }
        let ports: Vec<u16> = [&server.public_base, &server.mtls_base]
            .iter()
            .map(|b| url::Url::parse(b).unwrap().port().unwrap())
            .collect();
        server.shutdown().await.expect("clean shutdown");
        for port in ports {
            assert!(
                std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
                "port {port} still accepts connections after shutdown"
            );
        }
    }
}
