//! UDAP over real TLS: discovery with `signed_metadata` checked independently (webpki
//! signature check with the x5c leaf, chain to the CA, `iss` = base = SAN URI), the
//! `community` parameter, and UDAP off (404) without a signing identity.

mod common;
#[path = "common/pki.rs"]
mod pki;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use pki::{TlsOptions, TlsServer};
use reqwest::StatusCode;
use serde_json::Value;

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Verifies an RS256 JWS with the leaf of its x5c header (webpki, not the server's code);
/// returns (header, claims, x5c DER certificates).
fn verify_x5c_jws(jwt: &str) -> (Value, Value, Vec<Vec<u8>>) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "compact JWS");
    let header = decode_part(parts[0]);
    let claims = decode_part(parts[1]);
    assert_eq!(header["alg"], "RS256");
    let x5c: Vec<Vec<u8>> = header["x5c"]
        .as_array()
        .expect("x5c")
        .iter()
        .map(|c| STANDARD.decode(c.as_str().unwrap()).unwrap())
        .collect();
    let leaf_der = rustls::pki_types::CertificateDer::from(x5c[0].clone());
    let leaf = webpki::EndEntityCert::try_from(&leaf_der).unwrap();
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    leaf.verify_signature(
        webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
        format!("{}.{}", parts[0], parts[1]).as_bytes(),
        &signature,
    )
    .expect("signed_metadata verifies with the x5c leaf");
    (header, claims, x5c)
}

fn san_uris(der: &[u8]) -> Vec<String> {
    pdex::auth::pki::client_certificate(der).unwrap().san_uris
}

async fn udap_metadata(server: &TlsServer, base: &str, query: &str) -> reqwest::Response {
    let cert = server.ca.client("https://payer-a.example.org");
    server
        .client(Some(&cert))
        .get(format!("{base}/.well-known/udap{query}"))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn udap_discovery_serves_signed_metadata_for_each_listener() {
    for backend in common::backends() {
        let server = TlsServer::start(&backend).await;
        for (mtls, base) in [
            (false, server.public_base.clone()),
            (true, server.mtls_base.clone()),
        ] {
            let resp = udap_metadata(&server, &base, "").await;
            assert_eq!(resp.status(), StatusCode::OK);
            assert!(
                resp.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("application/json")
            );
            let m: Value = resp.json().await.unwrap();
            // UDAP discovery.md §2 / Inferno udap discovery checks
            assert_eq!(m["udap_versions_supported"], serde_json::json!(["1"]));
            for p in ["udap_dcr", "udap_authn", "udap_authz"] {
                assert!(
                    m["udap_profiles_supported"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|v| v == p),
                    "{p}"
                );
            }
            assert_eq!(
                m["udap_authorization_extensions_supported"],
                serde_json::json!(["hl7-b2b"])
            );
            assert!(m["udap_authorization_extensions_required"].is_array());
            assert!(m["udap_certifications_supported"].is_array());
            assert_eq!(
                m["grant_types_supported"],
                serde_json::json!(["client_credentials"])
            );
            assert!(!m["scopes_supported"].as_array().unwrap().is_empty());
            assert_eq!(
                m["token_endpoint_auth_methods_supported"],
                serde_json::json!(["private_key_jwt"])
            );
            assert!(
                m["token_endpoint_auth_signing_alg_values_supported"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v == "RS256")
            );
            assert_eq!(m["token_endpoint"], server.oauth_url(mtls, "token"));
            assert_eq!(
                m["registration_endpoint"],
                server.oauth_url(mtls, "register")
            );

            let (_header, claims, x5c) = verify_x5c_jws(m["signed_metadata"].as_str().unwrap());
            assert_eq!(
                claims["iss"],
                base.as_str(),
                "iss = this listener's base URL"
            );
            assert_eq!(claims["sub"], claims["iss"]);
            assert!(
                san_uris(&x5c[0]).iter().any(|u| u == &base),
                "iss is a SAN URI of the x5c leaf"
            );
            let (iat, exp) = (
                claims["iat"].as_i64().unwrap(),
                claims["exp"].as_i64().unwrap(),
            );
            assert!(exp > iat && exp - iat <= 365 * 24 * 3600);
            assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
            assert_eq!(claims["token_endpoint"], m["token_endpoint"]);
            assert_eq!(claims["registration_endpoint"], m["registration_endpoint"]);
            // x5c is the server's chain: its certificate, then the trust framework CA
            assert_eq!(x5c[0], server.server_cert.der);
            assert_eq!(x5c.last().unwrap(), &server.ca.der);
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn udap_community_parameter() {
    for backend in common::backends() {
        let community = "urn:oid:2.16.840.1.113883.3.7204.1.5";
        let server = TlsServer::start_with(
            &backend,
            TlsOptions {
                udap_community: Some(community.into()),
                ..Default::default()
            },
        )
        .await;
        let base = server.public_base.clone();
        let known = udap_metadata(&server, &base, &format!("?community={community}")).await;
        assert_eq!(known.status(), StatusCode::OK);
        let m: Value = known.json().await.unwrap();
        assert!(m["signed_metadata"].is_string());
        // an unknown community: 204 (UDAP discovery.md §2.2)
        let unknown = udap_metadata(&server, &base, "?community=urn:example:other").await;
        assert_eq!(unknown.status(), StatusCode::NO_CONTENT);
        // no community: the default one
        assert_eq!(
            udap_metadata(&server, &base, "").await.status(),
            StatusCode::OK
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn udap_is_off_without_a_signing_identity() {
    for backend in common::backends() {
        // plain HTTP, no certificates: "If no UDAP workflows are supported, the server SHALL
        // return a 404 Not Found"
        let server = common::TestServer::start(&backend).await;
        let resp = server.get(".well-known/udap").await;
        common::assert_outcome(resp, StatusCode::NOT_FOUND).await;
        server.stop().await;
    }
}
