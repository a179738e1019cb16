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
            // B2B for payers, the authorization code for members' apps
            assert_eq!(
                m["grant_types_supported"],
                serde_json::json!(["client_credentials", "authorization_code", "refresh_token"])
            );
            assert!(m["authorization_endpoint"].is_string());
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
            assert_eq!(
                claims["authorization_endpoint"],
                m["authorization_endpoint"]
            );
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

const APP: &str = "https://payer-a.example.org/udap-client";

fn statement_claims(server: &TlsServer, iss: &str, mtls: bool) -> Value {
    let now = chrono::Utc::now().timestamp();
    serde_json::json!({
        "iss": iss, "sub": iss, "aud": server.oauth_url(mtls, "register"),
        "exp": now + 300, "iat": now, "jti": uuid::Uuid::new_v4().to_string(),
        "client_name": "Payer A UDAP client",
        "contacts": ["mailto:ops@payer-a.example.org"],
        "logo_uri": "https://payer-a.example.org/logo.png",
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "private_key_jwt",
        "scope": "system/*.read",
    })
}

async fn udap_register(server: &TlsServer, statement: &str) -> (StatusCode, Value) {
    let resp = server
        .client(None)
        .post(server.oauth_url(false, "register"))
        .header("Content-Type", "application/json")
        .body(
            serde_json::json!({"software_statement": statement, "certifications": [], "udap": "1"})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn b2b_assertion(leaf: &pki::Leaf, client_id: &str, aud: &str, b2b: Option<Value>) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut claims = serde_json::json!({
        "iss": client_id, "sub": client_id, "aud": aud,
        "exp": now + 300, "iat": now, "jti": uuid::Uuid::new_v4().to_string(),
    });
    if let Some(ext) = b2b {
        claims["extensions"] = serde_json::json!({"hl7-b2b": ext});
    }
    leaf.sign_jwt(&claims)
}

fn b2b_ext() -> Value {
    serde_json::json!({
        "version": "1", "subject_name": "Jane Requester", "subject_id": "urn:oid:2.16.840.1.113883.4.6#1234567893",
        "organization_name": "Payer A", "organization_id": "https://payer-a.example.org",
        "purpose_of_use": ["urn:oid:2.16.840.1.113883.5.8#HPAYMT"],
    })
}

async fn udap_token(
    server: &TlsServer,
    assertion: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let resp = server
        .client(None)
        .post(server.oauth_url(false, "token"))
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
            ("udap", "1"),
        ])
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn udap_registration_new_update_errors_and_cancel() {
    for backend in common::backends() {
        let server = TlsServer::start(&backend).await;
        let leaf = server.ca.client(APP);

        // new registration: 201, the statement echoed verbatim
        let jwt = leaf.sign_jwt(&statement_claims(&server, APP, false));
        let (status, reg) = udap_register(&server, &jwt).await;
        assert_eq!(status, StatusCode::CREATED, "{reg}");
        let client_id = reg["client_id"].as_str().unwrap().to_owned();
        assert_eq!(reg["software_statement"], jwt.as_str());
        assert_eq!(
            reg["grant_types"],
            serde_json::json!(["client_credentials"])
        );
        assert_eq!(reg["token_endpoint_auth_method"], "private_key_jwt");
        assert!(reg["scope"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(reg["client_name"].as_str().is_some_and(|s| !s.is_empty()));

        // the same statement again: its jti is spent
        let (status, err) = udap_register(&server, &jwt).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(err["error"], "invalid_software_statement");

        // the same iss with a fresh statement: an update, same client_id, 200
        let (status, again) = udap_register(
            &server,
            &leaf.sign_jwt(&statement_claims(&server, APP, false)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["client_id"], client_id.as_str());

        // the error cases
        let other_ca = pki::Ca::new("not our trust framework");
        let stranger = other_ca.client(APP);
        let wrong_key = server.ca.client(APP);
        let mut cases: Vec<(&str, String, &str)> = Vec::new();
        cases.push((
            "iss not a SAN URI",
            leaf.sign_jwt(&statement_claims(
                &server,
                "https://invalid.example/iss",
                false,
            )),
            "invalid_software_statement",
        ));
        cases.push((
            "untrusted CA",
            stranger.sign_jwt(&statement_claims(&server, APP, false)),
            "unapproved_software_statement",
        ));
        // signed by another key than the x5c leaf's
        cases.push((
            "bad signature",
            wrong_key.sign_jwt_with_header(
                serde_json::json!({"alg": "RS256", "x5c": leaf.x5c()}),
                &statement_claims(&server, APP, false),
            ),
            "invalid_software_statement",
        ));
        cases.push((
            "no x5c",
            leaf.sign_jwt_with_header(
                serde_json::json!({"alg": "RS256"}),
                &statement_claims(&server, APP, false),
            ),
            "invalid_software_statement",
        ));
        let mut c = statement_claims(&server, APP, false);
        c["aud"] = "https://elsewhere.example/register".into();
        cases.push(("aud", leaf.sign_jwt(&c), "invalid_software_statement"));
        let mut c = statement_claims(&server, APP, false);
        c["exp"] = (c["iat"].as_i64().unwrap() + 600).into();
        cases.push((
            "exp - iat > 300",
            leaf.sign_jwt(&c),
            "invalid_software_statement",
        ));
        let mut c = statement_claims(&server, APP, false);
        c["iat"] = (c["iat"].as_i64().unwrap() - 900).into();
        c["exp"] = (c["iat"].as_i64().unwrap() + 200).into();
        cases.push(("expired", leaf.sign_jwt(&c), "invalid_software_statement"));
        let mut c = statement_claims(&server, APP, false);
        c["grant_types"] = serde_json::json!(["client_credentials", "authorization_code"]);
        cases.push((
            "both grant types",
            leaf.sign_jwt(&c),
            "invalid_client_metadata",
        ));
        let mut c = statement_claims(&server, APP, false);
        c["contacts"] = serde_json::json!(["ops@payer-a.example.org"]);
        cases.push((
            "no mailto contact",
            leaf.sign_jwt(&c),
            "invalid_client_metadata",
        ));
        for (why, statement, code) in cases {
            let (status, err) = udap_register(&server, &statement).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {err}");
            assert_eq!(err["error"], code, "{why}: {err}");
        }

        // B2B token with the registered certificate
        let token_url = server.oauth_url(false, "token");
        let (status, headers, tok) = udap_token(
            &server,
            &b2b_assertion(&leaf, &client_id, &token_url, Some(b2b_ext())),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{tok}");
        assert!(tok["access_token"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(
            tok["token_type"]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case("bearer")
        );
        assert!(tok["expires_in"].as_u64().unwrap() <= 3600);
        assert!(
            headers["cache-control"]
                .to_str()
                .unwrap()
                .contains("no-store")
        );
        assert!(headers["pragma"].to_str().unwrap().contains("no-cache"));

        // replayed assertion
        let a = b2b_assertion(&leaf, &client_id, &token_url, Some(b2b_ext()));
        assert_eq!(udap_token(&server, &a).await.0, StatusCode::OK);
        let (status, _, err) = udap_token(&server, &a).await;
        assert!(status.is_client_error());
        assert_eq!(err["error"], "invalid_client", "replayed jti");
        // hl7-b2b missing, or without organization_id / purpose_of_use
        let mut no_org = b2b_ext();
        no_org.as_object_mut().unwrap().remove("organization_id");
        let mut no_pou = b2b_ext();
        no_pou.as_object_mut().unwrap().remove("purpose_of_use");
        for (why, ext) in [
            ("no hl7-b2b", None),
            ("no organization_id", Some(no_org)),
            ("no purpose_of_use", Some(no_pou)),
        ] {
            let (status, _, err) =
                udap_token(&server, &b2b_assertion(&leaf, &client_id, &token_url, ext)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{why}");
            assert_eq!(err["error"], "invalid_grant", "{why}");
        }
        // a certificate of the framework with another SAN URI is not this client's
        let other = server.ca.client("https://payer-b.example.org/udap-client");
        let (_, _, err) = udap_token(
            &server,
            &b2b_assertion(&other, &client_id, &token_url, Some(b2b_ext())),
        )
        .await;
        assert_eq!(err["error"], "invalid_client");
        // a certificate from another CA with the same SAN URI: x5c re-validated, refused
        let (_, _, err) = udap_token(
            &server,
            &b2b_assertion(&stranger, &client_id, &token_url, Some(b2b_ext())),
        )
        .await;
        assert_eq!(err["error"], "invalid_client");

        // empty grant_types cancels; the client's assertions then fail
        let mut c = statement_claims(&server, APP, false);
        c["grant_types"] = serde_json::json!([]);
        let (status, cancelled) = udap_register(&server, &leaf.sign_jwt(&c)).await;
        assert_eq!(status, StatusCode::OK, "{cancelled}");
        assert_eq!(cancelled["grant_types"], serde_json::json!([]));
        let (_, _, err) = udap_token(
            &server,
            &b2b_assertion(&leaf, &client_id, &token_url, Some(b2b_ext())),
        )
        .await;
        assert_eq!(err["error"], "invalid_client");
        server.stop().await;
    }
}

/// UDAP for members' apps (issue 21 item 4; UDAP consumer-facing): a statement with
/// `authorization_code` registers an `app` with its redirect URIs (the same redirect-URI
/// and PKCE rules as every app), the member authorizes it on pdex's pages over TLS, and the
/// app exchanges the code with its x5c client assertion (`udap=1`, no hl7-b2b extension).
#[tokio::test]
async fn udap_registers_member_apps_for_the_authorization_code_flow() {
    const MEMBER_APP: &str = "https://app.example.org/udap-app";
    const CALLBACK: &str = "https://app.example.org/callback";
    for backend in common::backends() {
        let server = TlsServer::start(&backend).await;
        let leaf = server.ca.client(MEMBER_APP);
        let app_claims = || {
            let mut c = statement_claims(&server, MEMBER_APP, false);
            c["client_name"] = "Member app (UDAP)".into();
            c["grant_types"] = serde_json::json!(["authorization_code", "refresh_token"]);
            c["response_types"] = serde_json::json!(["code"]);
            c["redirect_uris"] = serde_json::json!([CALLBACK]);
            c["scope"] = "launch/patient openid fhirUser offline_access patient/*.rs".into();
            c
        };
        // what an authorization_code registration needs
        for (why, change) in [
            (
                "no redirect_uris",
                serde_json::json!({"redirect_uris": null}),
            ),
            (
                "http redirect",
                serde_json::json!({"redirect_uris": ["http://app.example.org/cb"]}),
            ),
            (
                "no response_types",
                serde_json::json!({"response_types": null}),
            ),
            (
                "token response type",
                serde_json::json!({"response_types": ["token"]}),
            ),
            ("no logo", serde_json::json!({"logo_uri": null})),
        ] {
            let mut c = app_claims();
            for (k, v) in change.as_object().unwrap() {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
            let (status, err) = udap_register(&server, &leaf.sign_jwt(&c)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {err}");
            assert_eq!(err["error"], "invalid_client_metadata", "{why}: {err}");
        }
        let (status, reg) = udap_register(&server, &leaf.sign_jwt(&app_claims())).await;
        assert_eq!(status, StatusCode::CREATED, "{reg}");
        let client_id = reg["client_id"].as_str().unwrap().to_owned();
        assert_eq!(
            reg["grant_types"],
            serde_json::json!(["authorization_code", "refresh_token"])
        );
        let client = pdex::auth::clients::get(&server.state.store, &client_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(client.kind, pdex::identity::ClientKind::App);
        assert_eq!(client.redirect_uris, vec![CALLBACK.to_owned()]);

        // a member and a login
        let store = &server.state.store;
        let patient = store
            .prepare(
                r#"{"resourceType":"Patient","id":"udap-m1","name":[{"family":"Member"}]}"#,
                Some("Patient"),
                pdex::store::IdRule::FromBody,
            )
            .unwrap();
        store
            .write(vec![pdex::store::WriteOp::put(
                pdex::store::WriteKind::Update { if_match: None },
                patient,
            )])
            .await
            .unwrap();
        pdex::auth::logins::set_login(store, "udap-member", "udap-m1", "correct horse battery")
            .await
            .unwrap();

        // the authorization over TLS (no redirects followed; the cookie is Secure over https)
        let browser = server
            .client_builder(None)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let verifier = "udap-app-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";
        let challenge =
            URL_SAFE_NO_PAD.encode(<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()));
        let mut authorize = url::Url::parse(&server.oauth_url(false, "authorize")).unwrap();
        authorize
            .query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &client_id)
            .append_pair("redirect_uri", CALLBACK)
            .append_pair(
                "scope",
                "launch/patient openid fhirUser offline_access patient/*.rs",
            )
            .append_pair("state", "s-1")
            .append_pair("aud", &server.public_base)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let page = browser.get(authorize.as_str()).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let set_cookie = page.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            set_cookie.contains("; Secure") && set_cookie.contains("HttpOnly"),
            "{set_cookie}"
        );
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        let html = page.text().await.unwrap();
        let input = |html: &str, name: &str| {
            regex::Regex::new(&format!(r#"name="{name}" value="([^"]*)""#))
                .unwrap()
                .captures(html)
                .unwrap()[1]
                .to_owned()
        };
        let (request, csrf) = (input(&html, "request"), input(&html, "csrf"));
        let pages = server.oauth_url(false, "authorize");
        let signed = browser
            .post(format!("{pages}/signin"))
            .header("Cookie", &cookie)
            .form(&[
                ("request", request.as_str()),
                ("csrf", csrf.as_str()),
                ("username", "udap-member"),
                ("password", "correct horse battery"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(signed.status(), 200);
        let decided = browser
            .post(format!("{pages}/decide"))
            .header("Cookie", &cookie)
            .form(&[
                ("request", request.as_str()),
                ("csrf", csrf.as_str()),
                ("sensitive", "withhold"),
                ("decision", "approve"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(decided.status(), 303);
        let location = url::Url::parse(decided.headers()["location"].to_str().unwrap()).unwrap();
        let code = location
            .query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned();

        // the exchange: the app's x5c assertion, udap=1
        let token_url = server.oauth_url(false, "token");
        let exchange = |assertion: String, code: String| {
            let client = server.client(None);
            let token_url = token_url.clone();
            async move {
                client
                    .post(token_url)
                    .form(&[
                        ("grant_type", "authorization_code"),
                        ("code", code.as_str()),
                        ("redirect_uri", CALLBACK),
                        ("code_verifier", verifier),
                        (
                            "client_assertion_type",
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        ),
                        ("client_assertion", assertion.as_str()),
                        ("udap", "1"),
                    ])
                    .send()
                    .await
                    .unwrap()
            }
        };
        // another certificate (another SAN) is not this app
        let stranger = server.ca.client("https://elsewhere.example.org/app");
        let resp = exchange(
            b2b_assertion(&stranger, &client_id, &token_url, None),
            code.clone(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"], "invalid_client", "{err}");
        // that attempt spent the code? no: client authentication fails before the code is read
        let resp = exchange(b2b_assertion(&leaf, &client_id, &token_url, None), code).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let t: Value = resp.json().await.unwrap();
        assert_eq!(t["patient"], "udap-m1", "{t}");
        assert!(t["refresh_token"].is_string() && t["id_token"].is_string());
        let read = server
            .client(None)
            .get(server.public_url("Patient/udap-m1"))
            .bearer_auth(t["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200);

        // discovery says so
        let meta: Value = udap_metadata(&server, &server.public_base, "")
            .await
            .json()
            .await
            .unwrap();
        let grants = meta["grant_types_supported"].as_array().unwrap();
        assert!(
            grants.contains(&"authorization_code".into())
                && grants.contains(&"client_credentials".into())
        );
        assert_eq!(
            meta["authorization_endpoint"],
            server.oauth_url(false, "authorize")
        );
        server.stop().await;
    }
}
