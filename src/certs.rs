//! `pdex certs dev --out DIR`: a development PKI for trying TLS, mTLS, dynamic registration
//! and UDAP on one machine — a CA (the trust anchor), a server certificate for
//! localhost/127.0.0.1 whose SAN URIs are the FHIR bases (UDAP `iss` = base URL = a SAN URI),
//! and two client certificates for two different payers, each with a SAN URI (HRex: "Signing
//! options will use URIs"), their private keys and their public keys as a JWKS (for
//! `private_key_jwt`). All keys are RSA 2048 so that UDAP's mandatory RS256 works
//! everywhere. For development only: the private keys are written unencrypted.

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::json;
use std::path::{Path, PathBuf};

/// The FHIR bases the dev server certificate names by default: the README's public TLS
/// listener (8443) and mTLS listener (9443), as `localhost` and as `127.0.0.1`.
pub const DEFAULT_BASE_URLS: [&str; 4] = [
    "https://localhost:8443/fhir",
    "https://127.0.0.1:8443/fhir",
    "https://localhost:9443/fhir",
    "https://127.0.0.1:9443/fhir",
];

/// The two development payers: file stem, organization name, SAN URI.
pub const DEV_PAYERS: [(&str, &str, &str); 2] = [
    (
        "payer-a",
        "Payer A Health Plan",
        "https://payer-a.example.org",
    ),
    (
        "payer-b",
        "Payer B Health Plan",
        "https://payer-b.example.org",
    ),
];

/// What was written, for the command's output.
#[derive(Debug)]
pub struct DevCerts {
    pub files: Vec<PathBuf>,
}

fn rsa_key() -> anyhow::Result<KeyPair> {
    KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).context("cannot generate an RSA key")
}

fn name(cn: &str, org: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, org);
    dn
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// The public key of an RSA certificate as a JWK (`kty`, `n`, `e`, `kid`, `alg`, `use`).
pub fn rsa_jwk(cert_der: &[u8], kid: &str, alg: &str) -> anyhow::Result<serde_json::Value> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(cert_der).context("unreadable certificate")?;
    let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = cert.public_key().parsed() else {
        anyhow::bail!("not an RSA certificate");
    };
    let strip = |b: &[u8]| -> Vec<u8> {
        let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
        b[start..].to_vec()
    };
    Ok(json!({
        "kty": "RSA",
        "kid": kid,
        "alg": alg,
        "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(strip(rsa.modulus)),
        "e": URL_SAFE_NO_PAD.encode(strip(rsa.exponent)),
    }))
}

/// Writes the development PKI into `out` (created if missing). `base_urls` become the
/// server certificate's SAN URIs.
pub fn write_dev_certs(out: &Path, base_urls: &[String]) -> anyhow::Result<DevCerts> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut files = Vec::new();
    let mut write = |file: &str, text: &str| -> anyhow::Result<()> {
        let path = out.join(file);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        files.push(path);
        Ok(())
    };

    let ca_key = rsa_key()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = name("pdex development CA", "pdex development trust framework");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca, 3650);
    let ca_cert = ca.self_signed(&ca_key)?;
    write("ca.pem", &ca_cert.pem())?;
    write("ca.key", &ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca, ca_key);

    let server_key = rsa_key()?;
    let mut server = CertificateParams::new(vec!["localhost".to_owned()])?;
    server
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    for url in base_urls {
        server
            .subject_alt_names
            .push(SanType::URI(url.as_str().try_into()?));
    }
    server.distinguished_name = name("localhost", "pdex development server");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    validity(&mut server, 825);
    let server_cert = server.signed_by(&server_key, &issuer)?;
    // The chain: leaf then CA (also the UDAP x5c).
    write(
        "server.pem",
        &format!("{}{}", server_cert.pem(), ca_cert.pem()),
    )?;
    write("server.key", &server_key.serialize_pem())?;

    for (stem, org, san) in DEV_PAYERS {
        let key = rsa_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(org, org);
        params.subject_alt_names = vec![SanType::URI(san.try_into()?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, 825);
        let cert = params.signed_by(&key, &issuer)?;
        write(&format!("{stem}.pem"), &cert.pem())?;
        write(&format!("{stem}.key"), &key.serialize_pem())?;
        let jwks = json!({"keys": [rsa_jwk(cert.der(), &format!("{stem}-1"), "RS384")?]});
        write(
            &format!("{stem}.jwks.json"),
            &serde_json::to_string_pretty(&jwks)?,
        )?;
    }
    Ok(DevCerts { files })
}
