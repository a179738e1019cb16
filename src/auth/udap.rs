//! UDAP Security (FAST) STU2: server metadata at `{base}/.well-known/udap` with
//! `signed_metadata`, and the checks behind UDAP dynamic client registration (signed
//! software statements) and B2B `client_credentials` (`x5c` client assertions with the
//! `hl7-b2b` extension). Trust comes from the configured anchors (`auth::pki`), never from
//! the certificates a request carries about itself.
//!
//! The server signs its metadata with the UDAP certificate and key (`--udap-cert/--udap-key`,
//! default the TLS certificate and key); it must be RSA (RS256 is mandatory for
//! `signed_metadata`) and carry the FHIR base as a SAN URI. Without a signing identity or
//! trust anchors UDAP is off, and discovery answers 404 as UDAP discovery.md requires.

use super::pki::{self, TrustAnchors};
use super::server::AuthServer;
use crate::identity::ClientCertificate;
use crate::identity::{ListenerInfo, ListenerKind};
use anyhow::anyhow;
use aws_lc_rs::signature::{self as sig, RsaKeyPair};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use x509_parser::prelude::*;

/// Lifetime of `signed_metadata` (UDAP discovery: `exp` at most one year after `iat`).
const METADATA_LIFETIME_SECS: i64 = 24 * 3600;
/// Software statements and B2B assertions: `exp - iat` at most 300 s (UDAP registration.md,
/// b2b.md).
pub const MAX_JWT_LIFETIME_SECS: i64 = 300;
/// Clock skew we tolerate on `iat` / `exp`.
const SKEW_SECS: i64 = 60;
/// Signature algorithms accepted on software statements and client assertions (UDAP
/// general.md §7.1.3: RS256 SHALL, ES256 SHOULD, RS384/ES384 MAY).
pub const ALGORITHMS: [&str; 4] = ["RS256", "RS384", "ES256", "ES384"];
/// The authorization extension we require on B2B token requests.
pub const HL7_B2B: &str = "hl7-b2b";

// ---------------------------------------------------------------------------------------
// JWS (compact serialization) with x5c
// ---------------------------------------------------------------------------------------

/// A compact JWS split into its parts; the signature is not verified yet.
pub struct Jws {
    pub header: Value,
    pub claims: Value,
    signing_input: String,
    signature: Vec<u8>,
}

impl Jws {
    pub fn parse(token: &str) -> Result<Jws, String> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a compact JWS (three base64url parts separated by dots)".into());
        };
        let decode = |part: &str, what: &str| {
            URL_SAFE_NO_PAD
                .decode(part.trim_end_matches('='))
                .map_err(|_| format!("the JWS {what} is not base64url"))
        };
        let header: Value = serde_json::from_slice(&decode(h, "header")?)
            .map_err(|_| "the JWS header is not JSON".to_owned())?;
        let claims: Value = serde_json::from_slice(&decode(c, "payload")?)
            .map_err(|_| "the JWS payload is not JSON".to_owned())?;
        if !header.is_object() || !claims.is_object() {
            return Err("the JWS header and payload must be JSON objects".into());
        }
        Ok(Jws {
            header,
            claims,
            signing_input: format!("{h}.{c}"),
            signature: decode(s, "signature")?,
        })
    }

    /// The `x5c` header: certificates, leaf first (standard base64 DER, RFC 7515 §4.1.6).
    pub fn x5c(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        let list = self.header["x5c"]
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| "the JWS header has no x5c certificate chain".to_owned())?;
        list.iter()
            .map(|v| {
                v.as_str()
                    .and_then(|s| STANDARD.decode(s).ok())
                    .map(CertificateDer::from)
                    .ok_or_else(|| "an x5c entry is not base64 DER".to_owned())
            })
            .collect()
    }

    /// Verifies the signature with the public key of `cert` (DER) under the header `alg`.
    pub fn verify_with_certificate(&self, cert: &[u8]) -> Result<(), String> {
        let alg = self.header["alg"].as_str().unwrap_or_default();
        let algorithm: &'static dyn sig::VerificationAlgorithm = match alg {
            "RS256" => &sig::RSA_PKCS1_2048_8192_SHA256,
            "RS384" => &sig::RSA_PKCS1_2048_8192_SHA384,
            "ES256" => &sig::ECDSA_P256_SHA256_FIXED,
            "ES384" => &sig::ECDSA_P384_SHA384_FIXED,
            other => {
                return Err(format!(
                    "unsupported JWS alg {other:?}; use one of {}",
                    ALGORITHMS.join(", ")
                ));
            }
        };
        let (_, parsed) = X509Certificate::from_der(cert)
            .map_err(|_| "the x5c leaf certificate is unreadable".to_owned())?;
        let key = parsed.public_key().subject_public_key.data.as_ref();
        sig::UnparsedPublicKey::new(algorithm, key)
            .verify(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| {
                "the JWS signature does not verify with the x5c leaf certificate's key".to_owned()
            })
    }
}

/// Signs `claims` as an RS256 JWS whose header carries `x5c` = `chain`.
pub fn sign_rs256(key: &RsaKeyPair, chain: &[CertificateDer<'_>], claims: &Value) -> String {
    let header = json!({
        "alg": "RS256",
        "typ": "JWT",
        "x5c": chain.iter().map(|c| STANDARD.encode(c)).collect::<Vec<_>>(),
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0u8; key.public_modulus_len()];
    key.sign(
        &sig::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .expect("RSA signing with a loaded key does not fail");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// Reads an RSA private key (PKCS#8 or PKCS#1). `None` for other key types.
pub fn rsa_key(key: &PrivateKeyDer<'_>) -> Option<RsaKeyPair> {
    match key {
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()).ok(),
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()).ok(),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------------------

/// The server's UDAP signing identity.
pub struct UdapSigner {
    chain: Vec<CertificateDer<'static>>,
    key: RsaKeyPair,
    /// SAN URIs of the signing certificate: the FHIR bases we may sign metadata for.
    pub san_uris: Vec<String>,
}

impl std::fmt::Debug for UdapSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the key
        f.debug_struct("UdapSigner")
            .field("san_uris", &self.san_uris)
            .finish_non_exhaustive()
    }
}

impl UdapSigner {
    /// `None` (UDAP off, with a warning) when the key is not RSA or does not match the
    /// certificate.
    pub fn load(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> anyhow::Result<Option<UdapSigner>> {
        let leaf = chain
            .first()
            .ok_or_else(|| anyhow!("empty UDAP certificate file"))?;
        let identity = pki::client_certificate(leaf)?;
        let Some(key) = rsa_key(&key) else {
            tracing::warn!(
                "UDAP is off: signed_metadata must be RS256, and the UDAP/TLS key is not RSA (use --udap-cert/--udap-key with an RSA key)"
            );
            return Ok(None);
        };
        // The key must belong to the certificate: sign and verify once.
        let probe = sign_rs256(&key, &chain, &json!({"probe": true}));
        let jws = Jws::parse(&probe).map_err(|e| anyhow!(e))?;
        if jws.verify_with_certificate(leaf).is_err() {
            anyhow::bail!("the UDAP private key does not belong to the UDAP certificate");
        }
        if identity.san_uris.is_empty() {
            tracing::warn!(
                "the UDAP certificate has no SAN URI; /.well-known/udap needs one equal to the FHIR base"
            );
        }
        Ok(Some(UdapSigner {
            chain,
            key,
            san_uris: identity.san_uris,
        }))
    }

    pub fn sign(&self, claims: &Value) -> String {
        sign_rs256(&self.key, &self.chain, claims)
    }
}

/// The scopes UDAP clients may request (UDAP general.md: `scopes_supported` lists every
/// supported scope, wildcards included).
pub const SCOPES_SUPPORTED: [&str; 6] = [
    "system/*.read",
    "system/*.rs",
    crate::identity::scopes::MEMBER_MATCH,
    crate::identity::scopes::BULK_MEMBER_MATCH_2_1,
    crate::identity::scopes::BULK_MEMBER_MATCH,
    crate::identity::scopes::GROUP_EXPORT,
];

/// The unsigned metadata for the listener `listener`.
pub fn metadata(listener: &ListenerInfo) -> Value {
    json!({
        "udap_versions_supported": ["1"],
        "udap_profiles_supported": ["udap_dcr", "udap_authn", "udap_authz"],
        "udap_authorization_extensions_supported": [HL7_B2B],
        "udap_authorization_extensions_required": [HL7_B2B],
        "udap_certifications_supported": [],
        "udap_certifications_required": [],
        // B2B for payers; authorization_code for members' apps (UDAP consumer-facing)
        "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
        "authorization_endpoint": listener.oauth_url("authorize"),
        "scopes_supported": SCOPES_SUPPORTED,
        "token_endpoint": listener.oauth_url("token"),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ALGORITHMS,
        "registration_endpoint": listener.oauth_url("register"),
        "registration_endpoint_jwt_signing_alg_values_supported": ALGORITHMS,
    })
}

/// `GET {base}/.well-known/udap[?community=URI]` (UDAP discovery.md §2).
pub async fn discovery(
    State(state): State<Arc<AuthServer>>,
    listener: Option<axum::Extension<ListenerInfo>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let listener = listener.map(|e| e.0).unwrap_or_else(|| ListenerInfo {
        kind: ListenerKind::Public,
        base_url: state.settings.fhir_base.clone(),
    });
    let Some(signer) = state.settings.udap.as_ref() else {
        return crate::fhir::FhirError::not_found(
            "UDAP is not enabled on this server (it needs --trust-anchors and an RSA --udap-cert/--udap-key or TLS certificate)",
        )
        .into_response();
    };
    // "Servers SHALL support the community parameter": we serve one trust community, the
    // configured anchors; any other community is unknown → 204 (discovery.md §2.2).
    if let Some(community) = query.get("community")
        && state.settings.udap_community.as_deref() != Some(community.as_str())
    {
        return StatusCode::NO_CONTENT.into_response();
    }
    // iss SHALL equal the base URL and SHALL be a SAN URI of the x5c certificate.
    if !signer.san_uris.iter().any(|u| u == &listener.base_url) {
        tracing::warn!(base = %listener.base_url, "UDAP certificate has no SAN URI for this FHIR base");
        return crate::fhir::FhirError::not_found(
            "UDAP metadata cannot be signed for this FHIR base: the UDAP certificate has no SAN URI equal to it",
        )
        .into_response();
    }
    let mut body = metadata(&listener);
    let now = chrono::Utc::now().timestamp();
    let signed = signer.sign(&json!({
        "iss": listener.base_url,
        "sub": listener.base_url,
        "iat": now,
        "exp": now + METADATA_LIFETIME_SECS,
        "jti": uuid::Uuid::new_v4().to_string(),
        "authorization_endpoint": body["authorization_endpoint"],
        "token_endpoint": body["token_endpoint"],
        "registration_endpoint": body["registration_endpoint"],
    }));
    body["signed_metadata"] = Value::String(signed);
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Json(body),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Shared JWT claim checks
// ---------------------------------------------------------------------------------------

/// The x5c leaf, verified: signature, chain to the anchors, and the identity it presents.
fn verified_x5c(
    jws: &Jws,
    anchors: &TrustAnchors,
    now: i64,
) -> Result<ClientCertificate, X5cError> {
    let chain = jws.x5c().map_err(X5cError::Invalid)?;
    jws.verify_with_certificate(&chain[0])
        .map_err(X5cError::Invalid)?;
    anchors
        .verify_client_chain(
            &chain,
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.max(0) as u64)),
        )
        .map_err(X5cError::Untrusted)?;
    pki::client_certificate(&chain[0]).map_err(|e| X5cError::Invalid(e.to_string()))
}

enum X5cError {
    /// The JWS or its certificate is malformed, or the signature does not verify.
    Invalid(String),
    /// The certificate chain does not lead to a trust anchor (or is expired / revoked).
    Untrusted(String),
}

fn str_claim<'a>(claims: &'a Value, name: &str) -> Result<&'a str, String> {
    claims[name]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("the `{name}` claim is missing or not a string"))
}

fn num_claim(claims: &Value, name: &str) -> Result<i64, String> {
    claims[name]
        .as_i64()
        .or_else(|| claims[name].as_f64().map(|f| f as i64))
        .ok_or_else(|| format!("the `{name}` claim is missing or not a number"))
}

/// `aud` equal to `expected` (a string, or an array containing it). URI values are compared
/// as case-sensitive strings with no transformation (UDAP general.md).
fn audience_is(claims: &Value, expected: &str) -> bool {
    match &claims["aud"] {
        Value::String(s) => s == expected,
        Value::Array(a) => a.iter().any(|v| v.as_str() == Some(expected)),
        _ => false,
    }
}

/// `iss`, `sub`, `aud`, `iat`, `exp` (at most 300 s after `iat`, not passed) and `jti`.
fn check_lifetime(claims: &Value, now: i64) -> Result<(i64, i64), String> {
    let iat = num_claim(claims, "iat")?;
    let exp = num_claim(claims, "exp")?;
    if exp <= now - SKEW_SECS {
        return Err("the JWT has expired (`exp` is in the past)".into());
    }
    if iat > now + SKEW_SECS {
        return Err("the JWT was issued in the future (`iat`)".into());
    }
    if exp - iat > MAX_JWT_LIFETIME_SECS {
        return Err(format!(
            "`exp` is more than {MAX_JWT_LIFETIME_SECS} s after `iat`"
        ));
    }
    if exp <= iat {
        return Err("`exp` is not after `iat`".into());
    }
    Ok((iat, exp))
}

// ---------------------------------------------------------------------------------------
// Dynamic client registration (software statements)
// ---------------------------------------------------------------------------------------

/// A registration error (UDAP DCR §5.2 / RFC 7591 §3.2.2): HTTP 400 with
/// `{"error", "error_description"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationError {
    pub code: &'static str,
    pub description: String,
}

impl RegistrationError {
    pub fn invalid_statement(d: impl Into<String>) -> Self {
        RegistrationError {
            code: "invalid_software_statement",
            description: d.into(),
        }
    }
    pub fn unapproved(d: impl Into<String>) -> Self {
        RegistrationError {
            code: "unapproved_software_statement",
            description: d.into(),
        }
    }
    pub fn invalid_metadata(d: impl Into<String>) -> Self {
        RegistrationError {
            code: "invalid_client_metadata",
            description: d.into(),
        }
    }
}

impl IntoResponse for RegistrationError {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            Json(json!({"error": self.code, "error_description": self.description})),
        )
            .into_response()
    }
}

/// A software statement that passed every check.
#[derive(Debug, Clone)]
pub struct SoftwareStatement {
    /// The app's identity: a SAN URI of its certificate, the key of its registration.
    pub iss: String,
    pub jti: String,
    pub exp: i64,
    pub client_name: String,
    /// Empty means: cancel the registration of `iss`.
    pub grant_types: Vec<String>,
    /// A member app's (`authorization_code`) registered redirect URIs.
    pub redirect_uris: Vec<String>,
    pub scope: String,
    pub token_endpoint_auth_method: String,
    pub contacts: Vec<String>,
    pub logo_uri: Option<String>,
    /// The presenting certificate (x5c leaf).
    pub certificate: ClientCertificate,
    /// The statement as submitted (echoed verbatim in the response).
    pub raw: String,
}

impl SoftwareStatement {
    pub fn cancels(&self) -> bool {
        self.grant_types.is_empty()
    }
}

/// Validates a UDAP registration request body `{software_statement, certifications, udap}`
/// (UDAP registration.md §3, in the order of UDAP DCR §4): JWS and signature with the x5c
/// leaf, chain to the anchors (expiry, CRLs), `iss` a SAN URI of the leaf and `sub == iss`,
/// `aud` = this registration endpoint, `exp`/`iat` within 300 s, `jti` present, then the
/// registration parameters. Replay of `jti` is the caller's check (it needs the store).
pub fn validate_registration(
    body: &Value,
    anchors: &TrustAnchors,
    registration_url: &str,
    now: i64,
) -> Result<SoftwareStatement, RegistrationError> {
    let raw = body["software_statement"].as_str().ok_or_else(|| {
        RegistrationError::invalid_statement("`software_statement` is missing or not a string")
    })?;
    if let Some(udap) = body.get("udap")
        && udap.as_str() != Some("1")
    {
        return Err(RegistrationError::invalid_metadata("`udap` must be \"1\""));
    }
    let jws = Jws::parse(raw).map_err(RegistrationError::invalid_statement)?;
    let certificate = verified_x5c(&jws, anchors, now).map_err(|e| match e {
        X5cError::Invalid(d) => RegistrationError::invalid_statement(d),
        X5cError::Untrusted(d) => RegistrationError::unapproved(d),
    })?;
    let c = &jws.claims;
    let iss = str_claim(c, "iss").map_err(RegistrationError::invalid_statement)?;
    if !certificate.san_uris.iter().any(|u| u == iss) {
        return Err(RegistrationError::invalid_statement(format!(
            "`iss` {iss:?} is not a SAN URI of the x5c certificate"
        )));
    }
    if str_claim(c, "sub").map_err(RegistrationError::invalid_statement)? != iss {
        return Err(RegistrationError::invalid_statement(
            "`sub` must equal `iss`",
        ));
    }
    if !audience_is(c, registration_url) {
        return Err(RegistrationError::invalid_statement(format!(
            "`aud` must be this registration endpoint, {registration_url}"
        )));
    }
    let (_, exp) = check_lifetime(c, now).map_err(RegistrationError::invalid_statement)?;
    let jti = str_claim(c, "jti")
        .map_err(RegistrationError::invalid_statement)?
        .to_owned();

    let grant_types: Vec<String> = match &c["grant_types"] {
        Value::Array(a) => a
            .iter()
            .map(|g| g.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                RegistrationError::invalid_metadata("`grant_types` must be an array of strings")
            })?,
        Value::Null => {
            return Err(RegistrationError::invalid_metadata(
                "`grant_types` is required",
            ));
        }
        _ => {
            return Err(RegistrationError::invalid_metadata(
                "`grant_types` must be an array of strings",
            ));
        }
    };
    let statement =
        |grant_types, redirect_uris, client_name: String, scope: String, contacts, logo_uri| {
            SoftwareStatement {
                iss: iss.to_owned(),
                jti: jti.clone(),
                exp,
                client_name,
                grant_types,
                redirect_uris,
                scope,
                token_endpoint_auth_method: "private_key_jwt".into(),
                contacts,
                logo_uri,
                certificate: certificate.clone(),
                raw: raw.to_owned(),
            }
        };
    // An empty grant_types cancels the registration (UDAP registration.md §3.4); the rest
    // of the metadata does not matter then.
    if grant_types.is_empty() {
        return Ok(statement(
            Vec::new(),
            Vec::new(),
            String::new(),
            String::new(),
            Vec::new(),
            None,
        ));
    }
    let has = |g: &str| grant_types.iter().any(|x| x == g);
    if has("authorization_code") && has("client_credentials") {
        return Err(RegistrationError::invalid_metadata(
            "`grant_types` must include either authorization_code or client_credentials, not both",
        ));
    }
    if has("refresh_token") && !has("authorization_code") {
        return Err(RegistrationError::invalid_metadata(
            "`refresh_token` is only allowed with authorization_code",
        ));
    }
    if let Some(g) = grant_types.iter().find(|g| {
        !matches!(
            g.as_str(),
            "client_credentials" | "authorization_code" | "refresh_token"
        )
    }) {
        return Err(RegistrationError::invalid_metadata(format!(
            "unknown grant type {g:?}"
        )));
    }
    let redirect_uris = if has("authorization_code") {
        // UDAP registration.md §3.1: redirect_uris required for authorization_code, each an
        // absolute https URI; response_types fixed to ["code"]; logo_uri required
        let uris: Vec<String> = c["redirect_uris"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| u.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if uris.is_empty() || c["redirect_uris"].as_array().map(Vec::len) != Some(uris.len()) {
            return Err(RegistrationError::invalid_metadata(
                "`redirect_uris` (an array of URIs) is required with authorization_code",
            ));
        }
        for u in &uris {
            let ok = url::Url::parse(u).is_ok_and(|url| {
                url.scheme() == "https"
                    || (url.scheme() == "http"
                        && matches!(url.host_str(), Some("localhost" | "127.0.0.1")))
            });
            if !ok {
                return Err(RegistrationError::invalid_metadata(format!(
                    "redirect URI {u:?} must be an absolute https URI"
                )));
            }
        }
        if c["response_types"] != serde_json::json!(["code"]) {
            return Err(RegistrationError::invalid_metadata(
                "`response_types` must be [\"code\"] with authorization_code",
            ));
        }
        if c["logo_uri"].as_str().is_none() {
            return Err(RegistrationError::invalid_metadata(
                "`logo_uri` is required with authorization_code",
            ));
        }
        uris
    } else {
        if c.get("redirect_uris").is_some() || c.get("response_types").is_some() {
            return Err(RegistrationError::invalid_metadata(
                "`redirect_uris` and `response_types` are only for authorization_code",
            ));
        }
        Vec::new()
    };
    match c["token_endpoint_auth_method"].as_str() {
        Some("private_key_jwt") => {}
        _ => {
            return Err(RegistrationError::invalid_metadata(
                "`token_endpoint_auth_method` must be private_key_jwt",
            ));
        }
    }
    let client_name = str_claim(c, "client_name")
        .map_err(RegistrationError::invalid_metadata)?
        .to_owned();
    let scope = str_claim(c, "scope")
        .map_err(RegistrationError::invalid_metadata)?
        .to_owned();
    let contacts: Vec<String> = c["contacts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if !contacts.iter().any(|m| m.starts_with("mailto:")) {
        return Err(RegistrationError::invalid_metadata(
            "`contacts` must hold at least one mailto: URI",
        ));
    }
    let logo_uri = c["logo_uri"].as_str().map(str::to_owned);
    if let Some(logo) = &logo_uri
        && !logo.starts_with("https://")
    {
        return Err(RegistrationError::invalid_metadata(
            "`logo_uri` must be an https URL",
        ));
    }
    Ok(statement(
        grant_types,
        redirect_uris,
        client_name,
        scope,
        contacts,
        logo_uri,
    ))
}

// ---------------------------------------------------------------------------------------
// B2B client_credentials
// ---------------------------------------------------------------------------------------

/// An RFC 6749 §5.2 token error: `invalid_client` for authentication and certificate
/// failures, `invalid_grant` for an unacceptable authorization extension (protocols.md §4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub code: &'static str,
    pub description: String,
}

impl TokenError {
    fn client(d: impl Into<String>) -> Self {
        TokenError {
            code: "invalid_client",
            description: d.into(),
        }
    }
    fn grant(d: impl Into<String>) -> Self {
        TokenError {
            code: "invalid_grant",
            description: d.into(),
        }
    }
}

/// The `hl7-b2b` authorization extension (UDAP b2b.md §5.2.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hl7B2b {
    pub organization_id: String,
    pub organization_name: Option<String>,
    pub purpose_of_use: Vec<String>,
    pub subject_id: Option<String>,
    pub subject_name: Option<String>,
    pub subject_role: Option<String>,
    pub consent_policy: Vec<String>,
    pub consent_reference: Vec<String>,
}

/// A B2B client assertion that passed every check.
#[derive(Debug, Clone)]
pub struct B2bAssertion {
    pub client_id: String,
    pub jti: String,
    pub exp: i64,
    /// The `hl7-b2b` extension (required for B2B `client_credentials`; a member app's
    /// `authorization_code` exchange carries none).
    pub b2b: Option<Hl7B2b>,
    /// The x5c leaf the assertion was signed with (re-validated on this request).
    pub certificate: ClientCertificate,
}

/// The `iss` of a client assertion without verifying anything: to look up the client.
pub fn assertion_issuer(assertion: &str) -> Option<String> {
    Jws::parse(assertion)
        .ok()
        .and_then(|j| j.claims["iss"].as_str().map(str::to_owned))
}

/// Does this client assertion carry an `x5c` header (a UDAP assertion)?
pub fn is_x5c_assertion(assertion: &str) -> bool {
    Jws::parse(assertion).is_ok_and(|j| j.header.get("x5c").is_some())
}

/// Validates a UDAP B2B client assertion (UDAP b2b.md §5.2, UDAP JWT client auth §6–7) for
/// the client `client_id`, registered with the certificate SAN URI `registered_san`: the
/// x5c chain re-validated to the anchors on this request, the signature with its leaf, the
/// leaf's SAN URI equal to the registered one, `iss == sub == client_id`, `aud` = a URL of
/// the token endpoint, `exp - iat` ≤ 300 s, `jti`, and `extensions.hl7-b2b` with
/// `organization_id` (a URI) and `purpose_of_use` (an array) when `require_b2b` (the B2B
/// grant; UDAP consumer-facing apps exchanging a code send no extension). `jti` replay is
/// the caller's check.
pub fn validate_b2b_assertion(
    assertion: &str,
    anchors: &TrustAnchors,
    client_id: &str,
    registered_san: &str,
    token_urls: &[String],
    now: i64,
    require_b2b: bool,
) -> Result<B2bAssertion, TokenError> {
    let jws = Jws::parse(assertion).map_err(TokenError::client)?;
    let certificate = verified_x5c(&jws, anchors, now).map_err(|e| match e {
        X5cError::Invalid(d) | X5cError::Untrusted(d) => TokenError::client(d),
    })?;
    if !certificate.san_uris.iter().any(|u| u == registered_san) {
        return Err(TokenError::client(
            "the x5c certificate is not the one registered for this client (SAN URI differs)",
        ));
    }
    let c = &jws.claims;
    let iss = str_claim(c, "iss").map_err(TokenError::client)?;
    let sub = str_claim(c, "sub").map_err(TokenError::client)?;
    if iss != client_id || sub != client_id {
        return Err(TokenError::client(
            "`iss` and `sub` must both be the client_id",
        ));
    }
    if !token_urls.iter().any(|u| audience_is(c, u)) {
        return Err(TokenError::client(format!(
            "`aud` must be the token endpoint, {}",
            token_urls.first().map(String::as_str).unwrap_or_default()
        )));
    }
    let (_, exp) = check_lifetime(c, now).map_err(TokenError::client)?;
    let jti = str_claim(c, "jti").map_err(TokenError::client)?.to_owned();
    let ext = &c["extensions"][HL7_B2B];
    let b2b = if require_b2b || !ext.is_null() {
        Some(hl7_b2b(ext).map_err(TokenError::grant)?)
    } else {
        None
    };
    Ok(B2bAssertion {
        client_id: client_id.to_owned(),
        jti,
        exp,
        b2b,
        certificate,
    })
}

fn hl7_b2b(ext: &Value) -> Result<Hl7B2b, String> {
    if !ext.is_object() {
        return Err(format!(
            "the `{HL7_B2B}` authorization extension is required (extensions.{HL7_B2B})"
        ));
    }
    if ext["version"].as_str() != Some("1") {
        return Err(format!("`{HL7_B2B}.version` must be \"1\""));
    }
    let organization_id = ext["organization_id"]
        .as_str()
        .filter(|s| url::Url::parse(s).is_ok())
        .ok_or_else(|| format!("`{HL7_B2B}.organization_id` is required and must be a URI"))?
        .to_owned();
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array()?
            .iter()
            .map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let purpose_of_use = strings(&ext["purpose_of_use"])
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            format!("`{HL7_B2B}.purpose_of_use` is required: a non-empty array of strings")
        })?;
    let opt = |name: &str| ext[name].as_str().map(str::to_owned);
    let consent_policy = strings(&ext["consent_policy"]).unwrap_or_default();
    let consent_reference = strings(&ext["consent_reference"]).unwrap_or_default();
    if !consent_reference.is_empty() && consent_policy.is_empty() {
        return Err(format!(
            "`{HL7_B2B}.consent_reference` is only allowed with consent_policy"
        ));
    }
    Ok(Hl7B2b {
        organization_id,
        organization_name: opt("organization_name"),
        purpose_of_use,
        subject_id: opt("subject_id"),
        subject_name: opt("subject_name"),
        subject_role: opt("subject_role"),
        consent_policy,
        consent_reference,
    })
}
