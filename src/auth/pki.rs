//! X.509 for the trust framework: reading PEM files, the client identity of a certificate
//! (subject, SAN URIs, RFC 8705 thumbprint), and chain validation against the configured
//! trust anchors (with optional CRLs). The mTLS listener (`server::tls`) and UDAP
//! (`auth::udap`, `x5c` chains) use the same [`TrustAnchors`], so a certificate accepted at the
//! TLS handshake is accepted in a software statement and the other way round.
//!
//! HRex sec-13: "PKI-Mutual TLS (i.e. not self-signed certificates)": a leaf that is its own
//! issuer is refused everywhere, even if the very same certificate is listed as an anchor.

use crate::identity::ClientCertificate;
use anyhow::{Context, anyhow};
use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, SignatureVerificationAlgorithm,
    UnixTime,
};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use x509_parser::prelude::*;

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("invalid PEM certificate in {}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// Reads the private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("cannot read a PEM private key from {}", path.display()))
}

/// Reads every CRL of the given PEM (or DER) files.
pub fn load_crls(
    paths: &[std::path::PathBuf],
) -> anyhow::Result<Vec<CertificateRevocationListDer<'static>>> {
    let mut out = Vec::new();
    for path in paths {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the CRL file {}", path.display()))?;
        let pem: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .with_context(|| format!("invalid PEM CRL in {}", path.display()))?;
        if pem.is_empty() {
            out.push(CertificateRevocationListDer::from(bytes));
        } else {
            out.extend(pem);
        }
    }
    Ok(out)
}

/// base64url (no padding) SHA-256 of a DER certificate: RFC 8705 §3.1 `x5t#S256`.
pub fn thumbprint(der: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

/// The identity a certificate presents: subject, SAN URIs and thumbprint.
pub fn client_certificate(der: &[u8]) -> anyhow::Result<ClientCertificate> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| anyhow!("unreadable certificate: {e}"))?;
    Ok(ClientCertificate {
        der: der.to_vec(),
        subject: cert.subject().to_string(),
        san_uris: san_uris(&cert),
        thumbprint: thumbprint(der),
    })
}

/// `uniformResourceIdentifier` subject alternative names of a parsed certificate.
pub fn san_uris(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect()
}

/// Is this certificate its own issuer (issuer name equal to subject name)? Such a leaf is
/// self-signed or self-issued: HRex requires PKI, so we refuse it.
pub fn is_self_issued(der: &[u8]) -> bool {
    match X509Certificate::from_der(der) {
        Ok((_, cert)) => cert.issuer().as_raw() == cert.subject().as_raw(),
        // unreadable: the chain check fails on it anyway; treat as not acceptable
        Err(_) => true,
    }
}

/// The signature algorithms we verify certificate chains with (aws-lc-rs, the one crypto
/// provider compiled in).
pub fn signature_algorithms() -> &'static [&'static dyn SignatureVerificationAlgorithm] {
    rustls::crypto::aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all
}

/// The trust framework's anchors (PEM bundle) and optional CRLs.
#[derive(Clone)]
pub struct TrustAnchors {
    pub roots: Arc<rustls::RootCertStore>,
    pub crls: Vec<CertificateRevocationListDer<'static>>,
}

impl std::fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustAnchors")
            .field("anchors", &self.roots.len())
            .field("crls", &self.crls.len())
            .finish()
    }
}

impl TrustAnchors {
    /// Loads the anchor bundle and CRL files.
    pub fn load(anchors: &Path, crls: &[std::path::PathBuf]) -> anyhow::Result<TrustAnchors> {
        let certs = load_certs(anchors)?;
        Self::from_parts(certs, load_crls(crls)?)
    }

    pub fn from_parts(
        anchors: Vec<CertificateDer<'static>>,
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> anyhow::Result<TrustAnchors> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in anchors {
            roots
                .add(cert)
                .map_err(|e| anyhow!("a trust anchor is not a usable certificate: {e}"))?;
        }
        // Parse once here so that a bad CRL stops the start, not a later handshake.
        for crl in &crls {
            webpki::OwnedCertRevocationList::from_der(crl)
                .map_err(|e| anyhow!("invalid CRL: {e}"))?;
        }
        Ok(TrustAnchors {
            roots: Arc::new(roots),
            crls,
        })
    }

    /// Validates `chain` (leaf first, then intermediates, as in a TLS `Certificate`
    /// message or a JWS `x5c` header) for client authentication: a path to an anchor, every
    /// certificate within its validity period at `now`, not revoked by a configured CRL, and
    /// a leaf that is not its own issuer. Returns a reason when it is refused.
    pub fn verify_client_chain(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), String> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| "no certificate".to_owned())?;
        if is_self_issued(leaf) {
            return Err("the certificate is self-signed (its own issuer); HRex requires a certificate issued by the trust framework".into());
        }
        let ee = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| format!("unreadable certificate: {e}"))?;
        let crls: Vec<webpki::CertRevocationList<'static>> = self
            .crls
            .iter()
            .filter_map(|c| webpki::OwnedCertRevocationList::from_der(c).ok())
            .map(Into::into)
            .collect();
        let crl_refs: Vec<&webpki::CertRevocationList<'_>> = crls.iter().collect();
        let revocation = if crl_refs.is_empty() {
            None
        } else {
            webpki::RevocationOptionsBuilder::new(&crl_refs)
                .ok()
                .map(|b| {
                    b.with_depth(webpki::RevocationCheckDepth::EndEntity)
                        .with_status_policy(webpki::UnknownStatusPolicy::Allow)
                        .build()
                })
        };
        ee.verify_for_usage(
            signature_algorithms(),
            &self.roots.roots,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
            revocation,
            None,
        )
        .map(|_| ())
        .map_err(|e| match e {
            webpki::Error::UnknownIssuer => {
                "the certificate does not chain to a trust anchor of this server".to_owned()
            }
            webpki::Error::CertRevoked => "the certificate is revoked".to_owned(),
            webpki::Error::CertExpired { .. } => "the certificate has expired".to_owned(),
            webpki::Error::CertNotValidYet { .. } => "the certificate is not valid yet".to_owned(),
            other => format!("the certificate chain is not valid: {other:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_is_base64url_sha256_without_padding() {
        // SHA-256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 b00361a3 96177a9c b410ff61 f20015ad
        assert_eq!(
            thumbprint(b"abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(client_certificate(b"not a certificate").is_err());
        assert!(is_self_issued(b"junk"));
    }
}
