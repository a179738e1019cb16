//! The authorization server and the resource server's token checks, over real HTTP with real
//! keys and signed JWTs: SMART Backend Services `client_credentials` with `private_key_jwt`
//! (RS256, RS384, ES256, ES384), the negative matrix of assertion rules, scope negotiation,
//! bearer-token enforcement on FHIR routes (401 / 403), patient-scoped tokens, the member
//! token's consent gate, introspection, revocation, key rotation, `jwks_uri` clients and
//! `client_secret_basic` for clients registered with `pdex client add --secret`.

mod common;

use common::{ClientSpec, TestClient, TestServer, backends, now};
use jsonwebtoken::Algorithm;
use pdex::auth::access_token::{self, Grant};
use pdex::identity::ClientKind;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Loads two members' data and shared directory data with the admin token.
async fn load(server: &TestServer) {
    server
        .load(&[
            json!({"resourceType": "Patient", "id": "alice", "name": [{"family": "Alpha"}]}),
            json!({"resourceType": "Patient", "id": "bob", "name": [{"family": "Beta"}]}),
            json!({"resourceType": "Practitioner", "id": "doc", "name": [{"family": "Shared"}]}),
            json!({"resourceType": "Observation", "id": "a1", "status": "final", "code": {"text": "x"},
                   "subject": {"reference": "Patient/alice"}, "performer": [{"reference": "Practitioner/doc"}]}),
            json!({"resourceType": "Observation", "id": "a2", "status": "final", "code": {"text": "x"},
                   "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]},
                   "subject": {"reference": "Patient/alice"}}),
            json!({"resourceType": "Observation", "id": "b1", "status": "final", "code": {"text": "x"},
                   "subject": {"reference": "Patient/bob"}}),
        ])
        .await;
}

/// Asserts an RFC 6749 error: status, `error` code, JSON, no-store.
async fn assert_oauth_error(resp: reqwest::Response, status: StatusCode, error: &str) -> Value {
    let got = resp.status();
    let cc = resp
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    let body: Value = serde_json::from_str(&text).expect("JSON error body");
    assert_eq!(body["error"], error, "{text}");
    assert!(body["error_description"].is_string(), "{text}");
    assert_eq!(cc.as_deref(), Some("no-store"));
    body
}

async fn get(client: &reqwest::Client, url: &str) -> reqwest::Response {
    client
        .get(url)
        .header("Accept", "application/fhir+json")
        .send()
        .await
        .unwrap()
}

/// A token signed with the server's own current key but with claims of our choosing (what an
/// attacker cannot make, but a second resource server of the same issuer could receive).
async fn forge_with_server_key(server: &TestServer, claims: &Value) -> String {
    let key = server.state.auth.keys.signing_key().await.unwrap();
    let mut header = jsonwebtoken::Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

fn grant(client: &TestClient, scopes: &str, patient: Option<&str>) -> Grant {
    Grant {
        client_id: client.client_id.clone(),
        kind: client.kind,
        organization: None,
        scopes: pdex::identity::scopes::split(scopes),
        patient: patient.map(str::to_owned),
        allow_sensitive: false,
        consent_id: None,
        authorization_id: None,
        cnf: None,
        lifetime: 300,
    }
}

#[tokio::test]
async fn discovery_and_metadata_are_public_with_cors() {
    for b in backends() {
        let server = TestServer::start(&b).await;
        let anon = reqwest::Client::new();
        let resp = anon
            .get(server.url(".well-known/smart-configuration"))
            .header("Accept", "application/fhir+json")
            .header("Origin", "https://app.example.org")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("application/json"), "{ct}");
        let acao = resp.headers()["access-control-allow-origin"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(acao == "*" || acao == "https://app.example.org");
        let conf: Value = resp.json().await.unwrap();
        assert_eq!(conf["token_endpoint"], server.token_url());
        for url_field in [
            "token_endpoint",
            "jwks_uri",
            "introspection_endpoint",
            "revocation_endpoint",
        ] {
            assert!(
                conf[url_field]
                    .as_str()
                    .unwrap()
                    .starts_with("http://127.0.0.1:"),
                "{url_field}"
            );
        }
        for field in [
            "capabilities",
            "grant_types_supported",
            "code_challenge_methods_supported",
        ] {
            assert!(
                conf[field].as_array().is_some_and(|a| !a.is_empty()),
                "{field}"
            );
        }
        let pkce = conf["code_challenge_methods_supported"].as_array().unwrap();
        assert!(pkce.contains(&json!("S256")) && !pkce.contains(&json!("plain")));
        let methods = conf["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap();
        assert!(methods.contains(&json!("private_key_jwt")));
        assert!(methods.contains(&json!("client_secret_basic")));
        // the member's authorization endpoint: code flow only
        assert_eq!(conf["response_types_supported"], json!(["code"]), "{conf}");
        let algs = conf["token_endpoint_auth_signing_alg_values_supported"]
            .as_array()
            .unwrap();
        assert!(algs.contains(&json!("RS384")) && algs.contains(&json!("ES384")));
        assert!(
            conf["grant_types_supported"]
                .as_array()
                .unwrap()
                .contains(&json!("client_credentials"))
        );

        // the JWKS verifies our tokens and is public
        let jwks: Value = anon
            .get(conf["jwks_uri"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // one access-token key (ES256) and one id_token key (RS256)
        let kinds: Vec<(&str, &str)> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| (k["kty"].as_str().unwrap(), k["alg"].as_str().unwrap()))
            .collect();
        assert_eq!(kinds.len(), 2, "{jwks}");
        assert!(kinds.contains(&("EC", "ES256")) && kinds.contains(&("RSA", "RS256")));
        for k in jwks["keys"].as_array().unwrap() {
            for private in ["d", "p", "q", "dp", "dq", "qi"] {
                assert!(k.get(private).is_none(), "no private key material");
            }
        }

        // /metadata: public, CORS, rest.security with SMART service and oauth-uris
        let resp = anon
            .get(server.url("metadata"))
            .header("Origin", "https://app.example.org")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().contains_key("access-control-allow-origin"));
        let cs: Value = resp.json().await.unwrap();
        let sec = &cs["rest"][0]["security"];
        assert_eq!(sec["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
        let ext = &sec["extension"][0];
        assert_eq!(
            ext["url"],
            "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
        );
        assert!(
            ext["extension"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["url"] == "token" && e["valueUri"] == server.token_url())
        );
        assert!(ext["extension"].as_array().unwrap().iter().any(|e| {
            e["url"] == "authorize" && e["valueUri"] == server.state.auth.settings.authorize_url()
        }));
        server.stop().await;
    }
}

#[tokio::test]
async fn backend_services_tokens_for_every_algorithm() {
    for b in backends() {
        let server = TestServer::start_with(&b, |c| c.token_lifetime = 0).await;
        load(&server).await;
        for alg in [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::ES256,
            Algorithm::ES384,
        ] {
            let client = server
                .register_client(ClientSpec {
                    kind: ClientKind::Admin,
                    scopes: "system/*.read".into(),
                    alg,
                    ..ClientSpec::default()
                })
                .await;
            let resp = client.request_token(&server, Some("system/*.read")).await;
            assert_eq!(resp.status(), 200, "{alg:?}");
            assert_eq!(resp.headers()["cache-control"], "no-store");
            assert_eq!(resp.headers()["pragma"], "no-cache");
            assert!(
                resp.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("application/json")
            );
            let body: Value = resp.json().await.unwrap();
            assert!(
                body["token_type"]
                    .as_str()
                    .unwrap()
                    .eq_ignore_ascii_case("bearer")
            );
            // default lifetime
            assert_eq!(body["expires_in"], 300, "{alg:?}");
            assert_eq!(body["scope"], "system/*.read");
            let http = server.http(body["access_token"].as_str().unwrap());
            let resp = get(&http, &server.url("Observation/a2")).await;
            assert_eq!(resp.status(), 200, "admin sees sensitive data, {alg:?}");
            // read-only scopes: no writes
            let resp = http
                .put(server.url("Patient/alice"))
                .header("Content-Type", "application/fhir+json")
                .body(json!({"resourceType": "Patient", "id": "alice"}).to_string())
                .send()
                .await
                .unwrap();
            common::assert_outcome(resp, StatusCode::FORBIDDEN).await;
        }
        server.stop().await;
    }
}

/// Every way of getting a token without the right assertion fails with the RFC 6749 error.
#[tokio::test]
async fn client_assertion_negative_matrix() {
    for b in backends() {
        let server = TestServer::start(&b).await;
        let client = server.register_client(ClientSpec::default()).await;
        let token_url = server.token_url();
        let post = |assertion: String| {
            let client = client.clone();
            let server = &server;
            async move {
                client
                    .post_token(
                        server,
                        &[
                            ("grant_type", "client_credentials"),
                            ("scope", "system/*.rs"),
                            ("client_assertion_type", ASSERTION_TYPE),
                            ("client_assertion", &assertion),
                        ],
                    )
                    .await
            }
        };
        let valid = client.assertion_claims(&token_url);
        let with = |k: &str, v: Value| {
            let mut c = valid.clone();
            c[k] = v;
            c["jti"] = json!(uuid::Uuid::new_v4().to_string());
            c
        };

        // the valid one works
        assert_eq!(post(client.key.sign(&valid)).await.status(), 200);
        // replayed jti
        assert_oauth_error(
            post(client.key.sign(&valid)).await,
            StatusCode::BAD_REQUEST,
            "invalid_client",
        )
        .await;
        // wrong key (same kid, other key pair)
        let mut other = common::TestKey::generate(Algorithm::ES384);
        other.kid = client.key.kid.clone();
        assert_oauth_error(
            post(other.sign(&with("exp", json!(now() + 200)))).await,
            StatusCode::BAD_REQUEST,
            "invalid_client",
        )
        .await;
        // unknown kid
        let stranger = common::TestKey::generate(Algorithm::ES384);
        assert_oauth_error(
            post(stranger.sign(&with("exp", json!(now() + 200)))).await,
            StatusCode::BAD_REQUEST,
            "invalid_client",
        )
        .await;
        // wrong aud: the FHIR base, and a near miss of the token URL
        for aud in [server.base.clone(), format!("{token_url}/")] {
            assert_oauth_error(
                post(client.key.sign(&with("aud", json!(aud)))).await,
                StatusCode::BAD_REQUEST,
                "invalid_client",
            )
            .await;
        }
        // expired
        assert_oauth_error(
            post(client.key.sign(&with("exp", json!(now() - 120)))).await,
            StatusCode::BAD_REQUEST,
            "invalid_client",
        )
        .await;
        // exp more than five minutes ahead
        let body = assert_oauth_error(
            post(client.key.sign(&with("exp", json!(now() + 900)))).await,
            StatusCode::BAD_REQUEST,
            "invalid_client",
        )
        .await;
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("five minutes"),
            "{body}"
        );
        // iss != sub
        assert_oauth_error(
            post(client.key.sign(&with("sub", json!("someone-else")))).await,
            StatusCode::BAD_REQUEST,
            "invalid_client",
        )
        .await;
        // no jti
        let mut no_jti = valid.clone();
        no_jti.as_object_mut().unwrap().remove("jti");
        assert_oauth_error(
            post(client.key.sign(&no_jti)).await,
            StatusCode::BAD_REQUEST,
            "invalid_client",
        )
        .await;
        // unknown client
        let unknown = with("iss", json!("no-such-client"));
        let mut unknown = unknown;
        unknown["sub"] = json!("no-such-client");
        assert_oauth_error(
            post(client.key.sign(&unknown)).await,
            StatusCode::BAD_REQUEST,
            "invalid_client",
        )
        .await;
        // a jku that is not the registered jwks_uri
        let mut header = jsonwebtoken::Header::new(Algorithm::ES384);
        header.kid = Some(client.key.kid.clone());
        header.jku = Some("https://attacker.example/jwks".into());
        let jku = jsonwebtoken::encode(
            &header,
            &with("exp", json!(now() + 200)),
            &client.key.encoding,
        )
        .unwrap();
        assert_oauth_error(post(jku).await, StatusCode::BAD_REQUEST, "invalid_client").await;
        // unsigned (alg none) and HMAC assertions
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT", "kid": client.key.kid})),
            b64(&with("exp", json!(now() + 200)))
        );
        assert_oauth_error(post(none).await, StatusCode::BAD_REQUEST, "invalid_client").await;
        let mut hs = jsonwebtoken::Header::new(Algorithm::HS256);
        hs.kid = Some(client.key.kid.clone());
        let hmac = jsonwebtoken::encode(
            &hs,
            &with("exp", json!(now() + 200)),
            &jsonwebtoken::EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert_oauth_error(post(hmac).await, StatusCode::BAD_REQUEST, "invalid_client").await;

        // disabled client: refused at the token endpoint, and its live tokens stop working
        let token = client.token(&server).await;
        let http = server.http(&token);
        assert_eq!(
            get(&http, &server.url("Practitioner?_count=1"))
                .await
                .status(),
            200
        );
        assert!(
            pdex::auth::clients::set_disabled(&server.state.store, &client.client_id, true)
                .await
                .unwrap()
        );
        assert_oauth_error(
            client.request_token(&server, None).await,
            StatusCode::BAD_REQUEST,
            "invalid_client",
        )
        .await;
        let resp = get(&http, &server.url("Practitioner?_count=1")).await;
        assert_eq!(resp.status(), 401);

        // wrong grant type: exactly 400 unsupported_grant_type
        let assertion = server.admin.assertion(&server);
        let resp = server
            .admin
            .post_token(
                &server,
                &[
                    ("grant_type", "not_a_grant_type"),
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", &assertion),
                ],
            )
            .await;
        assert_oauth_error(resp, StatusCode::BAD_REQUEST, "unsupported_grant_type").await;
        // wrong client_assertion_type
        let assertion = server.admin.assertion(&server);
        let resp = server
            .admin
            .post_token(
                &server,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", "not_an_assertion_type"),
                    ("client_assertion", &assertion),
                ],
            )
            .await;
        assert_oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_client").await;
        // no client authentication at all
        let resp = server
            .admin
            .post_token(&server, &[("grant_type", "client_credentials")])
            .await;
        assert_oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_client").await;
        // not a form body
        let resp = reqwest::Client::new()
            .post(server.token_url())
            .json(&json!({"grant_type": "client_credentials"}))
            .send()
            .await
            .unwrap();
        assert_oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        // a repeated parameter
        let resp = reqwest::Client::new()
            .post(server.token_url())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials&grant_type=client_credentials")
            .send()
            .await
            .unwrap();
        assert_oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        server.stop().await;
    }
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn scopes_are_never_wider_than_registered() {
    for b in backends() {
        let server = TestServer::start(&b).await;
        let member_match = pdex::identity::scopes::MEMBER_MATCH;
        let client = server
            .register_client(ClientSpec {
                scopes: format!("system/Patient.rs system/Practitioner.rs {member_match}"),
                ..ClientSpec::default()
            })
            .await;
        // escalation is narrowed to what is registered
        let body = client.token_response(&server, Some("system/*.cruds")).await;
        assert_eq!(body["scope"], "system/Patient.rs system/Practitioner.rs");
        // v1 answered in v1; operations only when registered
        let bulk = pdex::identity::scopes::BULK_MEMBER_MATCH;
        let body = client
            .token_response(
                &server,
                Some(&format!("system/Patient.read {member_match} {bulk}")),
            )
            .await;
        assert_eq!(body["scope"], format!("system/Patient.read {member_match}"));
        // no scope requested: everything registered
        let body = client.token_response(&server, None).await;
        assert_eq!(
            body["scope"],
            format!("system/Patient.rs system/Practitioner.rs {member_match}")
        );
        // nothing grantable: invalid_scope; patient/ scopes are not for client_credentials;
        // granular scopes are not granted (not enforced as search restrictions)
        for scope in [
            "system/Observation.rs",
            "patient/*.rs",
            "system/Patient.rs?name=x",
            "system/*.dus",
        ] {
            let resp = client.request_token(&server, Some(scope)).await;
            assert_oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_scope").await;
        }
        // the granted scope is what the resource server enforces: Practitioner yes, Observation no
        let body = client
            .token_response(&server, Some("system/Practitioner.rs"))
            .await;
        let http = server.http(body["access_token"].as_str().unwrap());
        assert_eq!(get(&http, &server.url("Practitioner")).await.status(), 200);
        common::assert_outcome(
            get(&http, &server.url("Patient")).await,
            StatusCode::FORBIDDEN,
        )
        .await;
        common::assert_outcome(
            get(&http, &server.url("Observation?patient=alice")).await,
            StatusCode::FORBIDDEN,
        )
        .await;
        server.stop().await;
    }
}

#[tokio::test]
async fn fhir_routes_require_a_valid_bearer_token() {
    for b in backends() {
        let server = TestServer::start(&b).await;
        load(&server).await;
        let anon = reqwest::Client::new();
        // no token: 401, Bearer challenge without an error code, OperationOutcome
        for path in [
            "Patient/alice",
            "Observation?patient=alice",
            "Patient/alice/_history",
        ] {
            let resp = get(&anon, &server.url(path)).await;
            let challenge = resp.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(challenge.starts_with("Bearer"), "{challenge}");
            common::assert_outcome(resp, StatusCode::UNAUTHORIZED).await;
        }
        let resp = anon
            .post(server.url(""))
            .header("Content-Type", "application/fhir+json")
            .body(json!({"resourceType": "Bundle", "type": "batch", "entry": []}).to_string())
            .send()
            .await
            .unwrap();
        common::assert_outcome(resp, StatusCode::UNAUTHORIZED).await;

        let admin = server.admin.clone();
        let live = access_token::mint(&server.state.auth, &grant(&admin, "system/*.rs", None))
            .await
            .unwrap()
            .access_token;
        assert_eq!(
            get(&server.http(&live), &server.url("Patient/alice"))
                .await
                .status(),
            200
        );

        let claims = |aud: &str, exp: i64| {
            json!({
                "iss": server.state.auth.settings.issuer(), "aud": aud, "sub": admin.client_id,
                "client_id": admin.client_id, "iat": now() - 10, "exp": exp,
                "jti": uuid::Uuid::new_v4().to_string(), "scope": "system/*.rs", "pdex_kind": "admin",
            })
        };
        let expired = forge_with_server_key(&server, &claims(&server.base, now() - 60)).await;
        let other_audience =
            forge_with_server_key(&server, &claims("https://other.example/fhir", now() + 60)).await;
        let own_key = admin.key.sign(&claims(&server.base, now() + 60));
        let bound = access_token::mint(
            &server.state.auth,
            &Grant {
                cnf: Some("x".repeat(43)),
                ..grant(&admin, "system/*.rs", None)
            },
        )
        .await
        .unwrap()
        .access_token;
        for (what, token) in [
            ("garbage", "not-a-token".to_owned()),
            ("expired", expired),
            ("another audience", other_audience),
            ("signed by a client key", own_key),
            ("certificate-bound, no certificate", bound),
        ] {
            let resp = get(&server.http(&token), &server.url("Patient/alice")).await;
            let challenge = resp.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(
                challenge.contains(r#"error="invalid_token""#),
                "{what}: {challenge}"
            );
            common::assert_outcome(resp, StatusCode::UNAUTHORIZED).await;
        }
        // a malformed Authorization header
        let resp = anon
            .get(server.url("Patient/alice"))
            .header("Authorization", "Basic Zm9vOmJhcg==")
            .send()
            .await
            .unwrap();
        common::assert_outcome(resp, StatusCode::UNAUTHORIZED).await;
        let counters = server.state.auth.metrics.snapshot();
        assert!(counters.unauthenticated >= 10, "{counters:?}");
        server.stop().await;
    }
}

/// Who sees what: admin everything; a payer's system token directory data only; a
/// patient-scoped token its member's compartment, without sensitive data unless allowed.
#[tokio::test]
async fn access_by_client_kind_and_patient_scope() {
    for b in backends() {
        let server = TestServer::start(&b).await;
        load(&server).await;
        let payer = server
            .register_client(ClientSpec {
                organization: Some("http://hl7.org/fhir/sid/us-npi|1234567893".into()),
                scopes: "system/*.rs".into(),
                ..ClientSpec::default()
            })
            .await;
        let http = server.http(&payer.token(&server).await);
        // directory data: yes
        assert_eq!(
            get(&http, &server.url("Practitioner/doc")).await.status(),
            200
        );
        // member data through a system token: not visible (404 on read, nothing in searches)
        common::assert_outcome(
            get(&http, &server.url("Patient/alice")).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        let bundle: Value = get(&http, &server.url("Observation"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(common::match_ids(&bundle), Vec::<String>::new());
        // writes: never for a payer
        let resp = http
            .put(server.url("Practitioner/doc"))
            .header("Content-Type", "application/fhir+json")
            .body(json!({"resourceType": "Practitioner", "id": "doc"}).to_string())
            .send()
            .await
            .unwrap();
        common::assert_outcome(resp, StatusCode::FORBIDDEN).await;

        // a patient-scoped token for alice (what the JWT-bearer grant issues)
        let alice = access_token::mint(
            &server.state.auth,
            &grant(&payer, "patient/*.rs", Some("alice")),
        )
        .await
        .unwrap()
        .access_token;
        let http = server.http(&alice);
        assert_eq!(get(&http, &server.url("Patient/alice")).await.status(), 200);
        common::assert_outcome(
            get(&http, &server.url("Patient/bob")).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        common::assert_outcome(
            get(&http, &server.url("Observation/b1")).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        let bundle: Value = get(&http, &server.url("Observation?patient=bob"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(common::match_ids(&bundle), Vec::<String>::new());
        let bundle: Value = get(
            &http,
            &server.url("Observation?_include=Observation:performer"),
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(
            common::match_ids(&bundle),
            vec!["a1".to_owned()],
            "no sensitive a2, no bob"
        );
        assert_eq!(
            common::entries_with_mode(&bundle, "include"),
            vec![("Practitioner".to_owned(), "doc".to_owned())]
        );
        // a narrower patient token: its types only, includes of other types left out
        let narrow = access_token::mint(
            &server.state.auth,
            &grant(&payer, "patient/Observation.rs", Some("alice")),
        )
        .await
        .unwrap()
        .access_token;
        let http = server.http(&narrow);
        common::assert_outcome(
            get(&http, &server.url("Patient/alice")).await,
            StatusCode::FORBIDDEN,
        )
        .await;
        let bundle: Value = get(
            &http,
            &server.url("Observation?_include=Observation:performer"),
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(common::match_ids(&bundle), vec!["a1".to_owned()]);
        assert!(
            common::entries_with_mode(&bundle, "include").is_empty(),
            "{bundle}"
        );
        // with the sensitive allowance
        let sensitive = access_token::mint(
            &server.state.auth,
            &Grant {
                allow_sensitive: true,
                ..grant(&payer, "patient/*.rs", Some("alice"))
            },
        )
        .await
        .unwrap()
        .access_token;
        let bundle: Value = get(&server.http(&sensitive), &server.url("Observation"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            common::sorted(
                common::match_ids(&bundle)
                    .iter()
                    .map(String::as_str)
                    .collect()
            ),
            vec!["a1", "a2"]
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn member_token_requires_consent_a_payer_and_a_valid_assertion() {
    for b in backends() {
        let server = TestServer::start(&b).await;
        load(&server).await;
        let payer = server
            .register_client(ClientSpec {
                organization: Some("http://hl7.org/fhir/sid/us-npi|1234567893".into()),
                ..ClientSpec::default()
            })
            .await;
        // no stored consent names this payer: invalid_grant
        let resp = payer.request_member_token(&server, "Patient/alice").await;
        assert_oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_grant").await;
        // a provider may not use the grant
        let provider = server
            .register_client(ClientSpec {
                kind: ClientKind::Provider,
                ..ClientSpec::default()
            })
            .await;
        let resp = provider
            .request_member_token(&server, "Patient/alice")
            .await;
        assert_oauth_error(resp, StatusCode::BAD_REQUEST, "unauthorized_client").await;
        // the assertion must be signed by the client and name the token URL
        let client_assertion = payer.assertion(&server);
        let mut claims = payer.assertion_claims(&server.base);
        claims["sub"] = json!("Patient/alice");
        let bad = payer.key.sign(&claims);
        let resp = payer
            .post_token(
                &server,
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", &bad),
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", &client_assertion),
                ],
            )
            .await;
        assert_oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_grant").await;
        // missing assertion
        let client_assertion = payer.assertion(&server);
        let resp = payer
            .post_token(
                &server,
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", &client_assertion),
                ],
            )
            .await;
        assert_oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        server.stop().await;
    }
}

#[tokio::test]
async fn introspection_and_revocation() {
    for b in backends() {
        let server = TestServer::start(&b).await;
        let client = server.register_client(ClientSpec::default()).await;
        let other = server.register_client(ClientSpec::default()).await;
        let body = client.token_response(&server, Some("system/*.rs")).await;
        let token = body["access_token"].as_str().unwrap().to_owned();
        let introspect_url = server.state.auth.settings.introspection_url();
        let introspect = |caller: reqwest::Client, t: String| {
            let url = introspect_url.clone();
            async move {
                caller
                    .post(url)
                    .header("Accept", "application/json")
                    .form(&[("token", t.as_str())])
                    .send()
                    .await
                    .unwrap()
            }
        };
        // its own token, authenticated with a bearer token
        let resp = introspect(server.http(&token), token.clone()).await;
        assert_eq!(resp.status(), 200);
        let info: Value = resp.json().await.unwrap();
        assert_eq!(info["active"], true, "{info}");
        assert_eq!(info["client_id"], client.client_id);
        assert_eq!(info["scope"], "system/*.rs");
        assert!(info["exp"].as_i64().unwrap() > now());
        // garbage → inactive
        let info: Value = introspect(server.http(&token), "invalid_token_value".into())
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(info, json!({"active": false}));
        // another client's token → inactive for a non-admin caller, active for admin
        let other_token = other.token(&server).await;
        let info: Value = introspect(server.http(&token), other_token.clone())
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(info["active"], false);
        let info: Value = introspect(server.client.clone(), other_token.clone())
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(info["active"], true);
        // unauthenticated → 401
        let resp = introspect(reqwest::Client::new(), token.clone()).await;
        assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;
        // introspection with client authentication (a private_key_jwt assertion)
        let mut claims = client.assertion_claims(&introspect_url);
        claims["jti"] = json!(uuid::Uuid::new_v4().to_string());
        let assertion = client.key.sign(&claims);
        let info: Value = reqwest::Client::new()
            .post(&introspect_url)
            .form(&[
                ("token", token.as_str()),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &assertion),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(info["active"], true, "{info}");

        // revocation: another client cannot revoke it
        let revoke_url = server.state.auth.settings.revocation_url();
        let revoke = |by: &TestClient, t: &str| {
            let assertion = by.assertion(&server);
            let url = revoke_url.clone();
            let t = t.to_owned();
            async move {
                reqwest::Client::new()
                    .post(url)
                    .form(&[
                        ("token", t.as_str()),
                        ("client_assertion_type", ASSERTION_TYPE),
                        ("client_assertion", &assertion),
                    ])
                    .send()
                    .await
                    .unwrap()
            }
        };
        assert_eq!(revoke(&other, &token).await.status(), 200);
        assert_eq!(
            get(&server.http(&token), &server.url("Practitioner"))
                .await
                .status(),
            200
        );
        // its own client can
        assert_eq!(revoke(&client, &token).await.status(), 200);
        let resp = get(&server.http(&token), &server.url("Practitioner")).await;
        assert!(
            resp.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
        common::assert_outcome(resp, StatusCode::UNAUTHORIZED).await;
        let info: Value = introspect(server.client.clone(), token.clone())
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(info["active"], false);
        // revoking garbage is fine; revoking without client authentication is not
        assert_eq!(revoke(&client, "garbage").await.status(), 200);
        let resp = reqwest::Client::new()
            .post(&revoke_url)
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
        assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;
        server.stop().await;
    }
}

#[tokio::test]
async fn signing_keys_rotate_without_breaking_live_tokens() {
    for b in backends() {
        let server = TestServer::start(&b).await;
        let client = server.register_client(ClientSpec::default()).await;
        let before = client.token(&server).await;
        let kid_before = jsonwebtoken::decode_header(&before).unwrap().kid.unwrap();
        let new_kid = pdex::auth::keys::rotate(&server.state.store).await.unwrap();
        assert_ne!(new_kid, kid_before);
        let after = client.token(&server).await;
        assert_eq!(
            jsonwebtoken::decode_header(&after).unwrap().kid.unwrap(),
            new_kid
        );
        for t in [&before, &after] {
            assert_eq!(
                get(&server.http(t), &server.url("Practitioner"))
                    .await
                    .status(),
                200
            );
        }
        let jwks: Value = reqwest::get(server.state.auth.settings.jwks_url())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["kty"] == "EC")
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, vec![new_kid.as_str(), kid_before.as_str()]);
        server.stop().await;
    }
}

#[tokio::test]
async fn certificate_bound_clients_need_their_certificate() {
    for b in backends() {
        let server = TestServer::start(&b).await;
        let client = server
            .register_client(ClientSpec {
                cert_san_uri: Some("https://payer.example.org/client".into()),
                ..ClientSpec::default()
            })
            .await;
        // on a connection without a client certificate neither method works
        assert_oauth_error(
            client.request_token(&server, None).await,
            StatusCode::BAD_REQUEST,
            "invalid_client",
        )
        .await;
        let resp = client
            .post_token(
                &server,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &client.client_id),
                ],
            )
            .await;
        assert_oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_client").await;
        server.stop().await;
    }
}

/// A client's `jwks_uri`, served by the test: the key set, its Cache-Control, and a count of
/// fetches.
struct JwksHost {
    url: String,
    keys: std::sync::Arc<std::sync::Mutex<(Value, &'static str)>>,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn jwks_host() -> JwksHost {
    use axum::extract::State;
    use std::sync::atomic::Ordering;
    type Shared = (
        std::sync::Arc<std::sync::Mutex<(Value, &'static str)>>,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    );
    let keys = std::sync::Arc::new(std::sync::Mutex::new((json!({"keys": []}), "no-store")));
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/jwks",
            axum::routing::get(|State((keys, hits)): State<Shared>| async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let (set, cc) = keys.lock().unwrap().clone();
                (
                    [("cache-control", cc), ("content-type", "application/json")],
                    set.to_string(),
                )
            }),
        )
        .with_state((keys.clone(), hits.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    JwksHost { url, keys, hits }
}

#[tokio::test]
async fn jwks_uri_clients_and_cache_control() {
    use std::sync::atomic::Ordering;
    for b in backends() {
        let server = TestServer::start(&b).await;
        let host = jwks_host().await;
        let mut client = server
            .register_client(ClientSpec {
                jwks_uri: Some(host.url.clone()),
                ..ClientSpec::default()
            })
            .await;
        // cacheable for 5 minutes: one fetch for two tokens
        *host.keys.lock().unwrap() = (client.key.jwks(), "public, max-age=300");
        client.token(&server).await;
        client.token(&server).await;
        assert_eq!(host.hits.load(Ordering::SeqCst), 1);
        // the client rotates its key (and now says no-store): the unknown kid makes the
        // server fetch again despite its cached copy
        let new_key = common::TestKey::generate(Algorithm::ES384);
        *host.keys.lock().unwrap() = (new_key.jwks(), "no-store");
        client.key = new_key;
        client.token(&server).await;
        assert_eq!(host.hits.load(Ordering::SeqCst), 2);
        // no-store: fetched for every assertion
        client.token(&server).await;
        client.token(&server).await;
        assert_eq!(host.hits.load(Ordering::SeqCst), 4);
        // a jku equal to the registered jwks_uri is fine
        let mut header = jsonwebtoken::Header::new(Algorithm::ES384);
        header.kid = Some(client.key.kid.clone());
        header.jku = Some(host.url.clone());
        let assertion = jsonwebtoken::encode(
            &header,
            &client.assertion_claims(&server.token_url()),
            &client.key.encoding,
        )
        .unwrap();
        let resp = client
            .post_token(
                &server,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", &assertion),
                ],
            )
            .await;
        assert_eq!(resp.status(), 200);
        // the key is withdrawn from the set: refused
        *host.keys.lock().unwrap() = (json!({"keys": []}), "no-store");
        assert_oauth_error(
            client.request_token(&server, None).await,
            StatusCode::BAD_REQUEST,
            "invalid_client",
        )
        .await;
        server.stop().await;
    }
}

#[tokio::test]
async fn token_lifetime_is_configurable() {
    for b in backends() {
        let server = TestServer::start_with(&b, |c| c.token_lifetime = 120).await;
        let client = server.register_client(ClientSpec::default()).await;
        let body = client.token_response(&server, None).await;
        assert_eq!(body["expires_in"], 120);
        let claims: Value = jsonwebtoken::dangerous::insecure_decode::<Value>(
            body["access_token"].as_str().unwrap(),
        )
        .unwrap()
        .claims;
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            120
        );
        assert_eq!(claims["client_id"], client.client_id);
        assert_eq!(claims["aud"], server.base);
        server.stop().await;
    }
}

/// Two server processes on one database: a `jti` used at one is refused at the other, and a
/// token revoked at one stops working at the other.
#[tokio::test]
async fn replay_and_revocation_hold_across_servers_on_one_database() {
    for b in backends() {
        let server = TestServer::start(&b).await;
        let config = pdex::config::ServerConfig {
            database_url: server.db.url.clone(),
            listen: "127.0.0.1:0".into(),
            migrate: true,
            ..Default::default()
        };
        let second = pdex::app::Server::bind(&config).await.unwrap();
        let second_token_url = second.state.auth.settings.token_url();
        let second_base = second.state.base_url.clone();
        let second_state = second.state.clone();
        let handle = tokio::spawn(async move { second.run().await.unwrap() });
        let client = server.register_client(ClientSpec::default()).await;

        let mut claims = client.assertion_claims(&server.token_url());
        claims["aud"] = json!([server.token_url(), second_token_url]);
        let assertion = client.key.sign(&claims);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion.as_str()),
        ];
        let first = reqwest::Client::new()
            .post(server.token_url())
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(first.status(), 200);
        let token: Value = first.json().await.unwrap();
        let replay = reqwest::Client::new()
            .post(&second_token_url)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_oauth_error(replay, StatusCode::BAD_REQUEST, "invalid_client").await;

        // a token of the first server, revoked there, is refused by a server with the same base
        let token = token["access_token"].as_str().unwrap();
        let assertion = client.assertion(&server);
        let resp = reqwest::Client::new()
            .post(server.state.auth.settings.revocation_url())
            .form(&[
                ("token", token),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &assertion),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        // the second server (same database, same keys) sees the revocation at once
        let claims = access_token::verify(&server.state.auth, token)
            .await
            .unwrap();
        assert_eq!(
            second_state.auth.check_live(&claims).await,
            Err(pdex::auth::server::AuthFailure::Invalid(
                "the token was revoked".into()
            ))
        );
        // and a token for the first server's audience is no good at the second
        let fresh = client.token(&server).await;
        let resp = get(&server.http(&fresh), &format!("{second_base}/Practitioner")).await;
        assert_eq!(resp.status(), 401);
        handle.abort();
        second_state.store.db.close().await;
        server.stop().await;
    }
}

#[tokio::test]
async fn bundle_entries_obey_scopes() {
    for b in backends() {
        let server = TestServer::start(&b).await;
        load(&server).await;
        // an admin token that may read Patients only
        let reader = server
            .register_client(ClientSpec {
                kind: ClientKind::Admin,
                scopes: "system/Patient.rs".into(),
                ..ClientSpec::default()
            })
            .await;
        let http = server.http(&reader.token(&server).await);
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": "Patient/alice"}},
            {"request": {"method": "GET", "url": "Observation/a1"}},
            {"request": {"method": "GET", "url": "Observation?patient=alice"}},
        ]});
        let resp = http
            .post(server.url(""))
            .header("Content-Type", "application/fhir+json")
            .body(batch.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let out: Value = resp.json().await.unwrap();
        let statuses: Vec<&str> = out["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["response"]["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, vec!["200", "403", "403"], "{out}");
        // a transaction that writes, with a token that may only read: refused, nothing written
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": "carol"}, "request": {"method": "PUT", "url": "Patient/carol"}},
        ]});
        let resp = http
            .post(server.url(""))
            .header("Content-Type", "application/fhir+json")
            .body(tx.to_string())
            .send()
            .await
            .unwrap();
        common::assert_outcome(resp, StatusCode::FORBIDDEN).await;
        // an admin writer for Patient only may not slip an Observation into a transaction
        let writer = server
            .register_client(ClientSpec {
                kind: ClientKind::Admin,
                scopes: "system/Patient.cruds".into(),
                ..ClientSpec::default()
            })
            .await;
        let http = server.http(&writer.token(&server).await);
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": "carol"}, "request": {"method": "PUT", "url": "Patient/carol"}},
            {"resource": {"resourceType": "Observation", "id": "c1", "status": "final", "code": {"text": "x"}}, "request": {"method": "PUT", "url": "Observation/c1"}},
        ]});
        let resp = http
            .post(server.url(""))
            .header("Content-Type", "application/fhir+json")
            .body(tx.to_string())
            .send()
            .await
            .unwrap();
        common::assert_outcome(resp, StatusCode::FORBIDDEN).await;
        common::assert_outcome(server.get("Patient/carol").await, StatusCode::NOT_FOUND).await;
        server.stop().await;
    }
}

/// `pdex client add --secret` on the server's database, then RFC 6749 §2.3.1
/// `client_secret_basic` at the token endpoint: the secret in an `Authorization: Basic`
/// header gets a token that reads; a wrong secret, an unknown client or a header that is not
/// Basic credentials is 401 `invalid_client` with a `WWW-Authenticate: Basic` challenge; two
/// authentication methods at once are refused.
#[tokio::test]
async fn secret_clients_authenticate_with_client_secret_basic() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        load(&s).await;
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pdex"))
            .args(["client", "add", "--database-url", &s.db.url])
            .args(["--name", "back office job", "--kind", "admin", "--secret"])
            .args(["--scope", "system/Patient.rs"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let added: Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = added["client_id"].as_str().unwrap();
        let secret = added["client_secret"].as_str().unwrap();
        assert_eq!(
            added["token_endpoint_auth_methods"],
            json!(["client_secret_basic"])
        );
        let http = reqwest::Client::new();
        let ask = |user: &str, password: Option<&str>| {
            http.post(s.token_url())
                .basic_auth(user, password)
                .form(&[("grant_type", "client_credentials")])
                .send()
        };
        let resp = ask(id, Some(secret)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["scope"], "system/Patient.rs");
        let token = body["access_token"].as_str().unwrap();
        let resp = get(&s.http(token), &s.url("Patient/alice")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        // the same authentication at introspection (RFC 7662 §2.1)
        let resp = http
            .post(s.state.auth.settings.introspection_url())
            .basic_auth(id, Some(secret))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let said: Value = resp.json().await.unwrap();
        assert_eq!(said["active"], true, "{said}");
        assert_eq!(said["client_id"], id);

        for (user, password) in [
            (id, Some("wrong")),
            ("no-such-client", Some(secret)),
            (id, None),
        ] {
            let resp = ask(user, password).await.unwrap();
            assert_eq!(
                resp.headers()["www-authenticate"].to_str().unwrap(),
                "Basic realm=\"pdex\""
            );
            assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;
        }
        let resp = http
            .post(s.token_url())
            .header("Authorization", "Basic !!!")
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;
        // a key client has no secret to send
        let keyed = s.register_client(ClientSpec::default()).await;
        let resp = ask(&keyed.client_id, Some("guess")).await.unwrap();
        assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;
        // Basic and an assertion together: one method per request (RFC 6749 §2.3)
        let assertion = keyed.assertion(&s);
        let resp = http
            .post(s.token_url())
            .basic_auth(id, Some(secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", assertion.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        s.stop().await;
    }
}

/// Issue 12 item 3: a client row whose `disabled` flag does not decode is an error, never
/// "enabled" — the token endpoint and the bearer check both refuse (500), where the old
/// positional decoding defaulted the flag to 0. SQLite only: PostgreSQL's INTEGER column
/// cannot hold anything but an integer, so the fault cannot be staged there.
#[tokio::test]
async fn a_client_flag_that_does_not_decode_refuses_instead_of_defaulting() {
    for b in backends().into_iter().filter(|b| !b.is_postgres()) {
        let server = TestServer::start(&b).await;
        let client = server
            .register_client(ClientSpec {
                scopes: "system/Patient.rs".into(),
                ..ClientSpec::default()
            })
            .await;
        let token = client.token(&server).await;
        let http = server.http(&token);
        let ok = http.get(server.url("Patient")).send().await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        let mut tx = server.state.store.db.begin().await.unwrap();
        tx.execute(
            "UPDATE auth_clients SET disabled = 'no' WHERE client_id = ?",
            vec![client.client_id.as_str().into()],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let resp = http.get(server.url("Patient")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let resp = client
            .request_token(&server, Some("system/Patient.rs"))
            .await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        server.stop().await;
    }
}
