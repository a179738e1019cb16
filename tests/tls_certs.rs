//! `pdex certs dev` through the real binary, and the README's flow on top of it: `pdex
//! serve` with the dev server certificate on a TLS listener and an mTLS listener trusting
//! the dev CA; a dev payer certificate gets in, UDAP metadata is signed for the base URL
//! named in the server certificate, and the server stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn read(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[tokio::test]
async fn certs_dev_writes_a_working_development_pki() {
    let dir = tempfile::tempdir().unwrap();
    let (public_port, mtls_port) = (free_port(), free_port());
    let public_base = format!("https://localhost:{public_port}/fhir");
    let mtls_base = format!("https://localhost:{mtls_port}/fhir");
    let out = Command::new(env!("CARGO_BIN_EXE_pdex"))
        .args(["certs", "dev", "--out"])
        .arg(dir.path())
        .args(["--base-url", &public_base, "--base-url", &mtls_base])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "payer-a.pem",
        "payer-a.key",
        "payer-a.jwks.json",
        "payer-b.pem",
        "payer-b.key",
        "payer-b.jwks.json",
    ] {
        assert!(dir.path().join(f).exists(), "{f} written");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(f),
            "{f} listed in the output"
        );
    }

    // the payer certificates chain to the dev CA and carry different SAN URIs
    let anchors = pdex::auth::pki::TrustAnchors::load(&dir.path().join("ca.pem"), &[]).unwrap();
    let mut sans = Vec::new();
    for payer in ["payer-a", "payer-b"] {
        let certs = pdex::auth::pki::load_certs(&dir.path().join(format!("{payer}.pem"))).unwrap();
        anchors
            .verify_client_chain(&certs, rustls::pki_types::UnixTime::now())
            .unwrap_or_else(|e| panic!("{payer}: {e}"));
        let id = pdex::auth::pki::client_certificate(&certs[0]).unwrap();
        assert_eq!(id.san_uris.len(), 1);
        sans.push(id.san_uris[0].clone());
        // the JWKS holds the certificate's public key
        let jwks: serde_json::Value =
            serde_json::from_str(&read(dir.path(), &format!("{payer}.jwks.json"))).unwrap();
        assert_eq!(
            jwks["keys"][0],
            pdex::certs::rsa_jwk(&certs[0], &format!("{payer}-1"), "RS384").unwrap()
        );
    }
    assert_ne!(sans[0], sans[1], "two different payers");
    let server_certs = pdex::auth::pki::load_certs(&dir.path().join("server.pem")).unwrap();
    let server_id = pdex::auth::pki::client_certificate(&server_certs[0]).unwrap();
    assert_eq!(
        server_id.san_uris,
        vec![public_base.clone(), mtls_base.clone()]
    );

    // serve with them, as the README shows
    let p = |f: &str| dir.path().join(f).display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pdex"))
        .args(["serve", "--listen", &format!("127.0.0.1:{public_port}")])
        .args(["--base-url", &public_base])
        .args([
            "--tls-cert",
            &p("server.pem"),
            "--tls-key",
            &p("server.key"),
        ])
        .args(["--mtls-listen", &format!("127.0.0.1:{mtls_port}")])
        .args(["--mtls-base-url", &mtls_base])
        .args(["--trust-anchors", &p("ca.pem")])
        .env(
            "PDEX_DATABASE_URL",
            format!("sqlite://{}/pdex.db", dir.path().display()),
        )
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("server did not start: {seen:?}"));
        if line.starts_with("pdex serving FHIR R4 over mTLS at ") {
            assert!(line.ends_with(&mtls_base), "{line}");
            break;
        }
        seen.push(line);
    }

    let ca = reqwest::Certificate::from_pem(read(dir.path(), "ca.pem").as_bytes()).unwrap();
    let identity = reqwest::Identity::from_pem(
        format!(
            "{}{}",
            read(dir.path(), "payer-a.pem"),
            read(dir.path(), "payer-a.key")
        )
        .as_bytes(),
    )
    .unwrap();
    let payer = reqwest::Client::builder()
        .tls_certs_only([ca.clone()])
        .identity(identity)
        .build()
        .unwrap();
    let resp = payer
        .get(format!("{mtls_base}/metadata"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let anonymous = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    assert!(
        anonymous
            .get(format!("{mtls_base}/metadata"))
            .send()
            .await
            .is_err(),
        "the mTLS listener refuses a client without a certificate"
    );
    let udap: serde_json::Value = anonymous
        .get(format!("{public_base}/.well-known/udap"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(udap["signed_metadata"].is_string(), "{udap}");

    // (h2 graceful shutdown waits for the client to acknowledge; let the clients go)
    drop((payer, anonymous));
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status {exit:?}");
}
