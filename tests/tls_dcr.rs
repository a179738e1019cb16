//! RFC 7591 dynamic registration over mTLS and certificate-bound tokens, end to end over
//! real TLS: a payer registers on the mTLS listener (the presenting certificate's SAN URI
//! and thumbprint are recorded), gets a token with a signed assertion, the token carries
//! `cnf.x5t#S256` of its certificate, and it is refused when replayed without the
//! certificate or with another payer's certificate. Registration on the public listener is
//! refused, and so are registrations that break the rules.

mod common;
#[path = "common/pki.rs"]
mod pki;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pki::{Leaf, TlsServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PAYER_A: &str = "https://payer-a.example.org";
const PAYER_B: &str = "https://payer-b.example.org";

async fn register(client: &reqwest::Client, url: &str, body: &Value) -> (StatusCode, Value) {
    let resp = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn jwks_of(leaf: &Leaf) -> Value {
    json!({"keys": [pdex::certs::rsa_jwk(&leaf.der, "k1", "RS256").unwrap()]})
}

fn assertion(leaf: &Leaf, client_id: &str, aud: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    leaf.sign_jwt_with_header(
        json!({"alg": "RS256", "typ": "JWT", "kid": "k1"}),
        &json!({
            "iss": client_id, "sub": client_id, "aud": aud,
            "exp": now + 240, "iat": now, "jti": uuid::Uuid::new_v4().to_string(),
        }),
    )
}

async fn token(client: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let resp = client.post(url).form(form).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn payer_registers_over_mtls_and_gets_certificate_bound_tokens() {
    for backend in common::backends() {
        let server = TlsServer::start(&backend).await;
        let cert_a = server.ca.client(PAYER_A);
        let cert_b = server.ca.client(PAYER_B);
        let a = server.client(Some(&cert_a));
        let b = server.client(Some(&cert_b));
        let register_url = server.oauth_url(true, "register");

        // unsigned registration on the public listener: refused
        let (status, body) = register(
            &server.client(None),
            &server.oauth_url(false, "register"),
            &json!({"token_endpoint_auth_method": "private_key_jwt", "jwks": jwks_of(&cert_a)}),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

        // payer A registers over mTLS with private_key_jwt; grant_types becomes
        // client_credentials
        let (status, reg) = register(
            &a,
            &register_url,
            &json!({
                "client_name": "Payer A",
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": jwks_of(&cert_a),
                "scope": "http://hl7.org/fhir/us/davinci-hrex/OperationDefinition/member-match system/*.*",
            }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{reg}");
        let client_id = reg["client_id"].as_str().unwrap().to_owned();
        assert_eq!(reg["grant_types"], json!(["client_credentials"]));
        assert_eq!(reg["token_endpoint_auth_method"], "private_key_jwt");
        assert_eq!(reg["tls_client_auth_san_uri"], PAYER_A);
        // the wide scope narrowed to what a payer may hold: reading and the operations
        assert_eq!(
            reg["scope"],
            "http://hl7.org/fhir/us/davinci-hrex/OperationDefinition/member-match system/*.read"
        );
        // the handler saw the presenting certificate: SAN URI and thumbprint recorded
        let stored = pdex::auth::clients::get(&server.state.store, &client_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.kind, pdex::identity::ClientKind::Payer);
        assert_eq!(stored.cert_san_uri.as_deref(), Some(PAYER_A));
        assert_eq!(
            stored.cert_thumbprint.as_deref(),
            Some(cert_a.thumbprint().as_str())
        );

        // a token with a signed assertion over mTLS carries cnf.x5t#S256
        let token_url = server.oauth_url(true, "token");
        let jwt = assertion(&cert_a, &client_id, &token_url);
        let (status, tok) = token(
            &a,
            &token_url,
            &[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &jwt),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{tok}");
        let access = tok["access_token"].as_str().unwrap().to_owned();
        assert_eq!(claims(&access)["cnf"]["x5t#S256"], cert_a.thumbprint());

        // the bound token with its certificate: accepted (a payer's system token reads, and
        // sees no member without a member token or a Group of its own) …
        let url = server.mtls_url("Patient");
        let with_a = a.get(&url).bearer_auth(&access).send().await.unwrap();
        assert_eq!(with_a.status(), StatusCode::OK);
        // … replayed with another payer's certificate or without one: 401 invalid_token
        let with_b = b.get(&url).bearer_auth(&access).send().await.unwrap();
        assert_eq!(with_b.status(), StatusCode::UNAUTHORIZED);
        assert!(
            with_b.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
        let without = server
            .client(None)
            .get(server.public_url("Patient"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        assert_eq!(without.status(), StatusCode::UNAUTHORIZED);

        // every URL handed out over mTLS is on the mTLS listener (issue 18): a search's
        // links, an export's polling URL and its manifest's file URLs, which the bound
        // token then follows with its certificate
        let bundle: Value = a
            .get(server.mtls_url("Organization"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mtls_base = server.mtls_url("");
        let mtls_base = mtls_base.trim_end_matches('/');
        for link in bundle["link"].as_array().unwrap() {
            assert!(
                link["url"].as_str().unwrap().starts_with(mtls_base),
                "{link}"
            );
        }
        let kickoff = a
            .get(server.mtls_url("$export?_type=Organization"))
            .bearer_auth(&access)
            .header("Prefer", "respond-async")
            .header("Accept", "application/fhir+json")
            .send()
            .await
            .unwrap();
        assert_eq!(kickoff.status(), StatusCode::ACCEPTED);
        let poll = kickoff.headers()["content-location"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(poll.starts_with(mtls_base), "{poll}");
        let mut manifest = Value::Null;
        for _ in 0..60 {
            let resp = a.get(&poll).bearer_auth(&access).send().await.unwrap();
            if resp.status() == StatusCode::OK {
                manifest = resp.json().await.unwrap();
                break;
            }
            // 202 in progress, or 429 polled too soon: wait as Retry-After says
            assert!(
                matches!(
                    resp.status(),
                    StatusCode::ACCEPTED | StatusCode::TOO_MANY_REQUESTS
                ),
                "{}",
                resp.status()
            );
            let wait = resp.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(wait.min(5))).await;
        }
        assert!(
            manifest["request"].as_str().unwrap().starts_with(mtls_base),
            "{manifest}"
        );
        for file in manifest["output"].as_array().unwrap() {
            let url = file["url"].as_str().unwrap();
            assert!(url.starts_with(mtls_base), "{url}");
            let got = a.get(url).bearer_auth(&access).send().await.unwrap();
            assert_eq!(got.status(), StatusCode::OK, "{url}");
        }

        // payer B cannot get a token for payer A's client, even with a valid assertion
        let jwt = assertion(&cert_a, &client_id, &token_url);
        let (status, err) = token(
            &b,
            &token_url,
            &[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &jwt),
            ],
        )
        .await;
        assert!(status.is_client_error(), "{status} {err}");
        assert_eq!(err["error"], "invalid_client");
        server.stop().await;
    }
}

#[tokio::test]
async fn tls_client_auth_registration_and_token() {
    for backend in common::backends() {
        let server = TlsServer::start(&backend).await;
        let cert_a = server.ca.client(PAYER_A);
        let cert_b = server.ca.client(PAYER_B);
        let a = server.client(Some(&cert_a));
        let b = server.client(Some(&cert_b));
        let register_url = server.oauth_url(true, "register");

        // the SAN URI must be one of the presenting certificate's
        let (status, err) = register(
            &b,
            &register_url,
            &json!({"token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_san_uri": PAYER_A}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(err["error"], "invalid_client_metadata");

        let (status, reg) = register(
            &a,
            &register_url,
            &json!({"token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_san_uri": PAYER_A, "grant_types": ["client_credentials"]}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{reg}");
        let client_id = reg["client_id"].as_str().unwrap().to_owned();

        let token_url = server.oauth_url(true, "token");
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
        ];
        let (status, tok) = token(&a, &token_url, &form).await;
        assert_eq!(status, StatusCode::OK, "{tok}");
        assert_eq!(
            claims(tok["access_token"].as_str().unwrap())["cnf"]["x5t#S256"],
            cert_a.thumbprint()
        );
        // another payer's certificate does not authenticate as this client
        let (status, err) = token(&b, &token_url, &form).await;
        assert!(status.is_client_error());
        assert_eq!(err["error"], "invalid_client");
        server.stop().await;
    }
}

#[tokio::test]
async fn unsigned_registration_rules() {
    for backend in common::backends() {
        let server = TlsServer::start(&backend).await;
        let cert = server.ca.client(PAYER_A);
        let a = server.client(Some(&cert));
        let url = server.oauth_url(true, "register");
        let jwks = jwks_of(&cert);
        for (why, body) in [
            (
                "authorization_code",
                json!({"token_endpoint_auth_method": "private_key_jwt", "jwks": jwks, "grant_types": ["authorization_code"]}),
            ),
            (
                "both jwks and jwks_uri",
                json!({"token_endpoint_auth_method": "private_key_jwt", "jwks": jwks, "jwks_uri": "https://payer-a.example.org/jwks"}),
            ),
            (
                "no keys",
                json!({"token_endpoint_auth_method": "private_key_jwt"}),
            ),
            (
                "no method (client_secret_basic default)",
                json!({"jwks": jwks}),
            ),
            (
                "secret method",
                json!({"token_endpoint_auth_method": "client_secret_basic"}),
            ),
            (
                "redirect uris",
                json!({"token_endpoint_auth_method": "private_key_jwt", "jwks": jwks, "redirect_uris": ["https://app.example/cb"]}),
            ),
            (
                "DN instead of URI",
                json!({"token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_subject_dn": "CN=x"}),
            ),
            (
                "bad jwks",
                json!({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "RSA"}]}}),
            ),
        ] {
            let (status, err) = register(&a, &url, &body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {err}");
            assert_eq!(err["error"], "invalid_client_metadata", "{why}");
        }
        let resp = a
            .post(&url)
            .header("Content-Type", "application/json")
            .body("not json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        // nothing was stored by the refused requests
        assert!(
            pdex::auth::clients::list(&server.state.store)
                .await
                .unwrap()
                .iter()
                .all(|c| c.kind != pdex::identity::ClientKind::Payer)
        );
        server.stop().await;
    }
}
