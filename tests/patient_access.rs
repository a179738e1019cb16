//! Patient Access (issue 20): the member signs in on pdex's own page and authorizes an app;
//! the app exchanges the code (PKCE) for an access, a refresh and an id token, which read
//! only that member's data with the sensitive-data choice applied. Every server-side check
//! of the SMART App Launch kit's standalone launch, refresh, OpenID Connect and
//! introspection groups (inferno-checks.md §3.1, §3.3–3.6) and every negative case of the
//! issue, over real HTTP, on every configured store; then the same flow in headless
//! Chromium, and a standalone launch by SMART's own `fhirclient` library.

mod common;
#[path = "support/member_flow.rs"]
mod member_flow;

use common::{TestKey, TestServer, backends};
use member_flow::{App, AppSpec, Request, SCOPES};
use pdex::identity::ClientKind;
use reqwest::StatusCode;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";
const SENSITIVE_LABEL: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

fn observation(id: &str, patient: &str, sensitive: bool) -> Value {
    let mut r = json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": "2024-05-01", "valueQuantity": {"value": 72, "unit": "/min"},
    });
    if sensitive {
        r["meta"] = json!({"security": [{"system": SENSITIVE_LABEL, "code": "PSY"}]});
    }
    r
}

/// Two members, each with an Observation; the first also with a sensitive one; a login for
/// each.
async fn members(s: &TestServer) {
    s.load(&[
        json!({"resourceType": "Patient", "id": "pa-1", "name": [{"family": "One", "given": ["Ada"]}], "birthDate": "1980-01-01"}),
        json!({"resourceType": "Patient", "id": "pa-2", "name": [{"family": "Two", "given": ["Bo"]}], "birthDate": "1990-01-01"}),
        observation("obs-1", "pa-1", false),
        observation("obs-1-psy", "pa-1", true),
        observation("obs-2", "pa-2", false),
    ])
    .await;
    member_flow::set_login(s, "ada", "pa-1", PASSWORD).await;
    member_flow::set_login(s, "bo", "pa-2", PASSWORD).await;
}

async fn start(
    b: &common::Backend,
    configure: impl FnOnce(&mut pdex::config::ServerConfig),
) -> TestServer {
    let s = TestServer::start_with(b, configure).await;
    members(&s).await;
    s
}

async fn oauth_error(resp: reqwest::Response, status: StatusCode, error: &str) -> Value {
    assert_eq!(resp.status(), status);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    body
}

fn bearer(token: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("Authorization", format!("Bearer {token}").parse().unwrap());
    reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap()
}

async fn status_of(s: &TestServer, token: &str, path: &str) -> StatusCode {
    bearer(token)
        .get(s.url(path))
        .send()
        .await
        .unwrap()
        .status()
}

async fn ids(s: &TestServer, token: &str, query: &str) -> Vec<String> {
    let body: Value = bearer(token)
        .get(s.url(query))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut v = common::match_ids(&body);
    v.sort();
    v
}

/// Decodes and verifies an id_token with the RSA key the JWKS publishes for its `kid`.
async fn verify_id_token(s: &TestServer, id_token: &str, client_id: &str) -> Value {
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let oidc: Value = reqwest::get(format!(
        "{}/.well-known/openid-configuration",
        s.state.auth.settings.issuer()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let jwks: Value = reqwest::get(oidc["jwks_uri"].as_str().unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"].as_str() == header.kid.as_deref())
        .expect("the id_token's kid is published");
    assert_eq!(key["kty"], "RSA");
    let decoding = jsonwebtoken::DecodingKey::from_rsa_components(
        key["n"].as_str().unwrap(),
        key["e"].as_str().unwrap(),
    )
    .unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[client_id]);
    v.set_issuer(&[oidc["issuer"].as_str().unwrap()]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(id_token, &decoding, &v)
        .expect("the id_token verifies")
        .claims
}

#[tokio::test]
async fn discovery_advertises_the_member_flow() {
    let b = &backends()[0];
    let s = TestServer::start(b).await;
    let conf: Value = reqwest::get(s.url(".well-known/smart-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        conf["authorization_endpoint"],
        s.state.auth.settings.authorize_url()
    );
    for g in ["authorization_code", "refresh_token", "client_credentials"] {
        assert!(
            conf["grant_types_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(g)),
            "{g}"
        );
    }
    assert_eq!(conf["response_types_supported"], json!(["code"]));
    assert_eq!(conf["code_challenge_methods_supported"], json!(["S256"]));
    let caps: Vec<&str> = conf["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for c in [
        "launch-standalone",
        "client-public",
        "client-confidential-symmetric",
        "client-confidential-asymmetric",
        "context-standalone-patient",
        "permission-offline",
        "permission-online",
        "permission-patient",
        "permission-v1",
        "permission-v2",
        "sso-openid-connect",
        "authorize-post",
    ] {
        assert!(caps.contains(&c), "{c}");
    }
    // sso-openid-connect: issuer and jwks_uri, and the issuer's OpenID configuration
    let issuer = conf["issuer"].as_str().unwrap();
    let resp = reqwest::get(format!("{issuer}/.well-known/openid-configuration"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let oidc: Value = resp.json().await.unwrap();
    assert_eq!(oidc["issuer"], issuer);
    for f in [
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "response_types_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
    ] {
        assert!(!oidc[f].is_null(), "{f}");
    }
    assert!(
        oidc["id_token_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("RS256"))
    );
    let jwks: Value = reqwest::get(oidc["jwks_uri"].as_str().unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kty"] == "RSA" && k["alg"] == "RS256")
    );
    s.stop().await;
}

#[tokio::test]
async fn a_member_authorizes_an_app_which_reads_only_their_data() {
    for b in backends() {
        let s = start(&b, |_| {}).await;
        let app = member_flow::register(&s, AppSpec::default()).await;

        // the pages: HTML, never cached, no CORS, a browser cookie with the right flags
        let req = Request::new(&s, &app, SCOPES);
        let signin = member_flow::get(&req.url(&s), None).await;
        assert_eq!(signin.status, StatusCode::OK);
        assert!(
            signin.content_type.starts_with("text/html"),
            "{}",
            signin.content_type
        );
        assert_eq!(signin.cache_control.as_deref(), Some("no-store"));
        assert!(
            signin.html.contains(r#"name="username""#)
                && signin.html.contains(r#"name="password""#)
        );
        let cookie = signin
            .set_cookie
            .iter()
            .find(|c| c.starts_with("pdex_browser="))
            .unwrap();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
        // plain HTTP on loopback: no Secure flag (the browser would drop the cookie)
        assert!(!cookie.contains("Secure"), "{cookie}");

        let session = member_flow::Session {
            cookie: signin.cookie().unwrap(),
            request: signin.input("request").unwrap(),
            csrf: signin.input("csrf").unwrap(),
        };
        let page = member_flow::sign_in(&s, &session, "ada", PASSWORD).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.html);
        // the authorization page names the app and what it asks, and offers the choice
        assert!(page.html.contains("Member app"));
        assert!(
            page.html
                .contains("See all of your health and claims records")
        );
        assert!(
            page.html
                .contains(r#"name="sensitive" value="withhold" checked"#),
            "{}",
            page.html
        );
        assert!(page.html.contains(r#"name="sensitive" value="share""#));
        assert!(page.html.contains(r#"name="decision" value="approve""#));
        assert!(page.html.contains(r#"name="decision" value="deny""#));
        let done = member_flow::decide(&s, &session, "withhold", "approve").await;
        assert_eq!(done.status, StatusCode::SEE_OTHER);
        assert!(done.location.as_deref().unwrap().starts_with(&app.redirect));
        assert_eq!(done.redirect_param("state"), req.state);
        let code = done.redirect_param("code").unwrap();

        // the token response (§3.3/3.4): 200, every field, no caching
        let resp = member_flow::exchange(&s, &app, &code, &req.verifier).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["cache-control"], "no-store");
        assert_eq!(resp.headers()["pragma"], "no-cache");
        let t: Value = resp.json().await.unwrap();
        assert_eq!(t["token_type"], "Bearer");
        assert!(t["expires_in"].is_u64());
        assert_eq!(t["patient"], "pa-1");
        for wanted in SCOPES.split(' ') {
            assert!(
                t["scope"].as_str().unwrap().split(' ').any(|g| g == wanted),
                "{wanted}: {t}"
            );
        }
        let access = t["access_token"].as_str().unwrap();
        let refresh = t["refresh_token"]
            .as_str()
            .expect("offline_access → a refresh token");

        // OpenID Connect (§3.5): RS256, iss, aud = client_id, sub, fhirUser readable
        let claims = verify_id_token(&s, t["id_token"].as_str().unwrap(), &app.client_id).await;
        assert_eq!(claims["fhirUser"], "Patient/pa-1");
        assert!(claims["sub"].as_str().unwrap().len() < 256);
        assert_eq!(status_of(&s, access, "Patient/pa-1").await, 200);

        // the member's data only, sensitive withheld
        assert_eq!(ids(&s, access, "Observation").await, vec!["obs-1"]);
        assert_eq!(status_of(&s, access, "Observation/obs-1-psy").await, 404);
        assert_eq!(status_of(&s, access, "Patient/pa-2").await, 404);
        assert_eq!(status_of(&s, access, "Observation/obs-2").await, 404);
        assert!(ids(&s, access, "Observation?patient=pa-2").await.is_empty());
        assert_eq!(ids(&s, access, "Patient").await, vec!["pa-1"]);
        // member tokens never write
        let resp = bearer(access)
            .put(s.url("Patient/pa-1"))
            .header("Content-Type", "application/fhir+json")
            .body(json!({"resourceType": "Patient", "id": "pa-1"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);

        // introspection (§3.6) with the app's own token as the caller
        let i: Value = bearer(access)
            .post(s.state.auth.settings.introspection_url())
            .form(&[("token", access)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(i["active"], true);
        assert_eq!(i["client_id"], app.client_id.as_str());
        assert_eq!(i["patient"], "pa-1");
        assert_eq!(i["scope"], t["scope"]);
        let i: Value = bearer(access)
            .post(s.state.auth.settings.introspection_url())
            .form(&[("token", "invalid_token_value")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(i["active"], false);

        // refresh (§3.4), without and with scope; rotated on every use
        let resp = member_flow::refresh(&s, &app, refresh, None).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let r1: Value = resp.json().await.unwrap();
        assert_eq!(r1["scope"], t["scope"]);
        assert_eq!(r1["patient"], "pa-1");
        let refresh2 = r1["refresh_token"].as_str().unwrap();
        assert_ne!(refresh2, refresh);
        let resp =
            member_flow::refresh(&s, &app, refresh2, Some("patient/*.rs offline_access")).await;
        assert_eq!(resp.status(), 200);
        let r2: Value = resp.json().await.unwrap();
        assert_eq!(r2["scope"], "patient/*.rs offline_access");
        let access2 = r2["access_token"].as_str().unwrap().to_owned();
        assert_eq!(ids(&s, &access2, "Observation").await, vec!["obs-1"]);
        // never wider than the grant
        let resp = member_flow::refresh(
            &s,
            &app,
            r2["refresh_token"].as_str().unwrap(),
            Some("patient/*.cruds"),
        )
        .await;
        oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_scope").await;
        // a rotated-out refresh token is dead, and replaying it revokes the authorization
        let resp = member_flow::refresh(&s, &app, refresh, None).await;
        oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_grant").await;
        assert_eq!(status_of(&s, &access2, "Patient/pa-1").await, 401);
        s.stop().await;
    }
}

#[tokio::test]
async fn the_sensitive_data_choice_and_a_denial() {
    for b in backends() {
        let s = start(&b, |_| {}).await;
        let app = member_flow::register(&s, AppSpec::default()).await;
        let t = member_flow::tokens(
            &s,
            &app,
            "launch/patient patient/*.read",
            "ada",
            PASSWORD,
            "share",
        )
        .await;
        assert_eq!(
            t["scope"], "launch/patient patient/*.read",
            "v1 answered in v1"
        );
        assert!(
            t.get("refresh_token").is_none(),
            "no offline_access, no refresh token"
        );
        assert!(t.get("id_token").is_none(), "no openid, no id_token");
        let access = t["access_token"].as_str().unwrap();
        assert_eq!(
            ids(&s, access, "Observation").await,
            vec!["obs-1", "obs-1-psy"]
        );
        assert_eq!(status_of(&s, access, "Observation/obs-1-psy").await, 200);
        let everything: Value = bearer(access)
            .get(s.url("Patient/pa-1/$everything"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let got = common::match_ids(&everything);
        assert!(
            got.contains(&"obs-1-psy".to_owned()) && !got.contains(&"obs-2".to_owned()),
            "{got:?}"
        );
        // another member's $everything
        assert_eq!(
            status_of(&s, access, "Patient/pa-2/$everything")
                .await
                .as_u16()
                / 100,
            4
        );

        // deny: back to the app with access_denied and the state
        let req = Request::new(&s, &app, SCOPES);
        let session = member_flow::open(&s, &req).await;
        member_flow::sign_in(&s, &session, "ada", PASSWORD).await;
        let p = member_flow::decide(&s, &session, "withhold", "deny").await;
        assert_eq!(p.status, StatusCode::SEE_OTHER);
        assert_eq!(p.redirect_param("error").as_deref(), Some("access_denied"));
        assert_eq!(p.redirect_param("state"), req.state);
        assert!(p.redirect_param("code").is_none());
        // the decided request is gone: its form cannot be posted again
        let p = member_flow::decide(&s, &session, "withhold", "approve").await;
        assert_eq!(p.status, StatusCode::FORBIDDEN);
        s.stop().await;
    }
}

#[tokio::test]
async fn authorize_requests_that_are_refused() {
    for b in backends() {
        let s = start(&b, |_| {}).await;
        let app = member_flow::register(&s, AppSpec::default()).await;
        let good = Request::new(&s, &app, SCOPES);

        // no redirect for an unknown client or an unregistered redirect URI: a 400 page
        for (why, req) in [
            (
                "unknown client",
                Request {
                    client_id: Some("nobody".into()),
                    ..good.clone()
                },
            ),
            (
                "no client",
                Request {
                    client_id: None,
                    ..good.clone()
                },
            ),
            (
                "wrong redirect",
                Request {
                    redirect_uri: Some("https://evil.example.org/cb".into()),
                    ..good.clone()
                },
            ),
            (
                "redirect prefix",
                Request {
                    redirect_uri: Some(format!("{}/more", app.redirect)),
                    ..good.clone()
                },
            ),
            (
                "no redirect",
                Request {
                    redirect_uri: None,
                    ..good.clone()
                },
            ),
        ] {
            let p = member_flow::get(&req.url(&s), None).await;
            assert_eq!(p.status, StatusCode::BAD_REQUEST, "{why}");
            assert!(p.location.is_none(), "{why}: no redirect");
            assert!(p.content_type.starts_with("text/html"), "{why}");
        }

        // everything else: a redirect with error and state
        for (why, req, error) in [
            (
                "response_type=token",
                Request {
                    response_type: Some("token".into()),
                    ..good.clone()
                },
                "unsupported_response_type",
            ),
            (
                "no PKCE",
                Request {
                    code_challenge: None,
                    code_challenge_method: None,
                    ..good.clone()
                },
                "invalid_request",
            ),
            (
                "plain PKCE",
                Request {
                    code_challenge_method: Some("plain".into()),
                    ..good.clone()
                },
                "invalid_request",
            ),
            (
                "no method",
                Request {
                    code_challenge_method: None,
                    ..good.clone()
                },
                "invalid_request",
            ),
            (
                "bad challenge",
                Request {
                    code_challenge: Some("short".into()),
                    ..good.clone()
                },
                "invalid_request",
            ),
            (
                "wrong aud",
                Request {
                    aud: Some("https://counterfeit.example.org/fhir".into()),
                    ..good.clone()
                },
                "invalid_request",
            ),
            (
                "no aud",
                Request {
                    aud: None,
                    ..good.clone()
                },
                "invalid_request",
            ),
            (
                "nothing grantable",
                Request {
                    scope: Some("system/*.rs".into()),
                    ..good.clone()
                },
                "invalid_scope",
            ),
        ] {
            let p = member_flow::get(&req.url(&s), None).await;
            assert_eq!(p.status, StatusCode::SEE_OTHER, "{why}: {}", p.html);
            assert!(
                p.location.as_deref().unwrap().starts_with(&app.redirect),
                "{why}"
            );
            assert_eq!(p.redirect_param("error").as_deref(), Some(error), "{why}");
            assert_eq!(p.redirect_param("state"), good.state, "{why}");
        }
        let p = member_flow::get(
            &Request {
                state: None,
                ..good.clone()
            }
            .url(&s),
            None,
        )
        .await;
        assert_eq!(
            p.redirect_param("error").as_deref(),
            Some("invalid_request")
        );
        // a repeated parameter
        let p = member_flow::get(&format!("{}&state=again", good.url(&s)), None).await;
        assert_eq!(p.status, StatusCode::BAD_REQUEST);
        // a provider client is not for this flow
        let provider = member_flow::register(
            &s,
            AppSpec {
                kind: ClientKind::Provider,
                scopes: "system/*.rs",
                ..AppSpec::default()
            },
        )
        .await;
        let p = member_flow::get(&Request::new(&s, &provider, SCOPES).url(&s), None).await;
        assert_eq!(
            p.redirect_param("error").as_deref(),
            Some("unauthorized_client")
        );

        // POST /oauth/authorize (authorize-post) answers the same sign-in page
        let form: Vec<(&str, String)> = good.pairs();
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let p = member_flow::post(&s.state.auth.settings.authorize_url(), None, &form).await;
        assert_eq!(p.status, StatusCode::OK, "{}", p.html);
        assert!(p.input("request").is_some());
        // a bare error on the pages is an HTML page, never JSON
        let resp = member_flow::browser()
            .delete(s.state.auth.settings.authorize_url())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(resp.headers().get("access-control-allow-origin").is_none());
        s.stop().await;
    }
}

#[tokio::test]
async fn sign_in_refusals_lockout_and_forged_forms() {
    let alert = regex::Regex::new(r#"role="alert">([^<]*)<"#).unwrap();
    for b in backends() {
        let s = start(&b, |c| c.patient_access.login_failure_limit = 3).await;
        let app = member_flow::register(&s, AppSpec::default()).await;
        let req = Request::new(&s, &app, SCOPES);
        let session = member_flow::open(&s, &req).await;
        // an unknown user and a wrong password: 401, the sign-in page, one message
        let unknown = member_flow::sign_in(&s, &session, "nobody", PASSWORD).await;
        let wrong = member_flow::sign_in(&s, &session, "ada", "not the password").await;
        for p in [&unknown, &wrong] {
            assert_eq!(p.status, StatusCode::UNAUTHORIZED);
            assert!(p.html.contains(r#"name="password""#));
            assert!(p.html.contains("The username or password is not right"));
        }
        let message = |p: &member_flow::Page| alert.captures(&p.html).unwrap()[1].to_owned();
        assert_eq!(message(&unknown), message(&wrong));
        // two more failures lock "ada": then even the right password is refused alike
        member_flow::sign_in(&s, &session, "ada", "still wrong").await;
        member_flow::sign_in(&s, &session, "ada", "wrong again").await;
        let locked = member_flow::sign_in(&s, &session, "ada", PASSWORD).await;
        assert_eq!(locked.status, StatusCode::UNAUTHORIZED);
        assert_eq!(message(&locked), message(&wrong));
        // another member is not locked
        let bo = member_flow::sign_in(&s, &session, "bo", PASSWORD).await;
        assert_eq!(bo.status, StatusCode::OK);

        // forged forms: no CSRF token, a wrong one, no cookie, another browser's cookie
        let fresh = member_flow::open(&s, &Request::new(&s, &app, SCOPES)).await;
        let signin = member_flow::signin_url(&s);
        for (why, cookie, form) in [
            (
                "no csrf",
                Some(fresh.cookie.as_str()),
                vec![
                    ("request", fresh.request.as_str()),
                    ("username", "bo"),
                    ("password", PASSWORD),
                ],
            ),
            (
                "wrong csrf",
                Some(fresh.cookie.as_str()),
                vec![
                    ("request", fresh.request.as_str()),
                    ("csrf", "forged"),
                    ("username", "bo"),
                    ("password", PASSWORD),
                ],
            ),
            (
                "no cookie",
                None,
                vec![
                    ("request", fresh.request.as_str()),
                    ("csrf", fresh.csrf.as_str()),
                    ("username", "bo"),
                    ("password", PASSWORD),
                ],
            ),
            (
                "other browser",
                Some(session.cookie.as_str()),
                vec![
                    ("request", fresh.request.as_str()),
                    ("csrf", fresh.csrf.as_str()),
                    ("username", "bo"),
                    ("password", PASSWORD),
                ],
            ),
        ] {
            let p = member_flow::post(&signin, cookie, &form).await;
            assert_eq!(p.status, StatusCode::FORBIDDEN, "{why}");
            assert!(p.content_type.starts_with("text/html"), "{why}");
        }
        // deciding without signing in
        let p = member_flow::decide(&s, &fresh, "withhold", "approve").await;
        assert_eq!(p.status, StatusCode::FORBIDDEN);
        s.stop().await;
    }
}

#[tokio::test]
async fn code_exchange_refusals() {
    for b in backends() {
        let s = start(&b, |c| c.patient_access.authorization_code_lifetime = 1).await;
        let app = member_flow::register(&s, AppSpec::default()).await;
        let other = member_flow::register(
            &s,
            AppSpec {
                name: "Other app",
                ..AppSpec::default()
            },
        )
        .await;

        // wrong verifier, missing verifier, wrong redirect URI, another client: invalid_grant
        for case in [
            "wrong verifier",
            "no verifier",
            "wrong redirect",
            "other client",
        ] {
            let (code, req) =
                member_flow::code(&s, &app, SCOPES, "ada", PASSWORD, "withhold").await;
            let resp = match case {
                "wrong verifier" => {
                    member_flow::exchange(&s, &app, &code, &member_flow::pkce().0).await
                }
                "no verifier" => reqwest::Client::new()
                    .post(s.token_url())
                    .form(&[
                        ("grant_type", "authorization_code"),
                        ("code", &code),
                        ("redirect_uri", &app.redirect),
                        ("client_id", &app.client_id),
                    ])
                    .send()
                    .await
                    .unwrap(),
                "wrong redirect" => {
                    let moved = App {
                        redirect: "https://app.example.org/other".into(),
                        ..app.clone()
                    };
                    member_flow::exchange(&s, &moved, &code, &req.verifier).await
                }
                _ => member_flow::exchange(&s, &other, &code, &req.verifier).await,
            };
            oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_grant").await;
        }

        // a reused code: refused, and the tokens issued from it stop working
        let (code, req) = member_flow::code(&s, &app, SCOPES, "ada", PASSWORD, "withhold").await;
        let first: Value = member_flow::exchange(&s, &app, &code, &req.verifier)
            .await
            .json()
            .await
            .unwrap();
        let access = first["access_token"].as_str().unwrap();
        assert_eq!(status_of(&s, access, "Patient/pa-1").await, 200);
        let resp = member_flow::exchange(&s, &app, &code, &req.verifier).await;
        oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_grant").await;
        assert_eq!(status_of(&s, access, "Patient/pa-1").await, 401);
        let resp =
            member_flow::refresh(&s, &app, first["refresh_token"].as_str().unwrap(), None).await;
        oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_grant").await;

        // a refresh token presented by another client
        let t = member_flow::tokens(&s, &app, SCOPES, "ada", PASSWORD, "withhold").await;
        let resp =
            member_flow::refresh(&s, &other, t["refresh_token"].as_str().unwrap(), None).await;
        oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_grant").await;
        // ... which did not spend it for its owner
        assert_eq!(
            member_flow::refresh(&s, &app, t["refresh_token"].as_str().unwrap(), None)
                .await
                .status(),
            200
        );

        // an expired code (lifetime 1 s)
        let (code, req) = member_flow::code(&s, &app, SCOPES, "ada", PASSWORD, "withhold").await;
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        let resp = member_flow::exchange(&s, &app, &code, &req.verifier).await;
        let body = oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_grant").await;
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("expired"),
            "{body}"
        );

        // a code that never was
        let resp = member_flow::exchange(&s, &app, "not-a-code", &req.verifier).await;
        oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_grant").await;
        s.stop().await;
    }
}

#[tokio::test]
async fn confidential_apps_authenticate_at_the_token_endpoint() {
    for b in backends() {
        let s = start(&b, |_| {}).await;
        // symmetric: client_secret_basic
        let sym = member_flow::register(
            &s,
            AppSpec {
                secret: true,
                ..AppSpec::default()
            },
        )
        .await;
        let t = member_flow::tokens(&s, &sym, SCOPES, "ada", PASSWORD, "withhold").await;
        assert_eq!(t["patient"], "pa-1");
        let resp = member_flow::refresh(&s, &sym, t["refresh_token"].as_str().unwrap(), None).await;
        assert_eq!(resp.status(), 200);
        // without its secret, as if public: invalid_client
        let (code, req) = member_flow::code(&s, &sym, SCOPES, "ada", PASSWORD, "withhold").await;
        let public = App {
            secret: None,
            ..sym.clone()
        };
        let resp = member_flow::exchange(&s, &public, &code, &req.verifier).await;
        oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_client").await;
        // a wrong secret: 401 with a Basic challenge
        let wrong = App {
            secret: Some("wrong".into()),
            ..sym.clone()
        };
        let resp = member_flow::exchange(&s, &wrong, &code, &req.verifier).await;
        assert_eq!(resp.status(), 401);

        // asymmetric: private_key_jwt
        let key = TestKey::generate(jsonwebtoken::Algorithm::RS384);
        let asym = member_flow::register(
            &s,
            AppSpec {
                jwks: Some(key.jwks()),
                ..AppSpec::default()
            },
        )
        .await;
        let (code, req) = member_flow::code(&s, &asym, SCOPES, "bo", PASSWORD, "withhold").await;
        let assertion = key.sign(&json!({
            "iss": asym.client_id, "sub": asym.client_id, "aud": s.token_url(),
            "exp": common::now() + 240, "jti": uuid::Uuid::new_v4().to_string(),
        }));
        let resp = reqwest::Client::new()
            .post(s.token_url())
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", asym.redirect.as_str()),
                ("code_verifier", req.verifier.as_str()),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let t: Value = resp.json().await.unwrap();
        assert_eq!(t["patient"], "pa-2");
        assert_eq!(
            ids(&s, t["access_token"].as_str().unwrap(), "Observation").await,
            vec!["obs-2"]
        );
        s.stop().await;
    }
}

/// `pdex member set-login` and `disable-login` against the server's database, as an operator
/// would run them beside a running server.
#[tokio::test]
async fn member_logins_from_the_cli() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let set_login = |db: &str, patient: &str, username: &str, password: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pdex"))
            .args(["member", "set-login", "--database-url", db])
            .args(["--patient", patient, "--username", username])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    for b in backends() {
        let s = start(&b, |_| {}).await;
        let out = set_login(&s.db.url, "pa-2", "bo-cli", "a fine password");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            said,
            json!({"username": "bo-cli", "patient": "pa-2", "fhirUser": "Patient/pa-2"})
        );
        // an unknown Patient is refused
        let out = set_login(&s.db.url, "no-such-patient", "ghost", "a fine password");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("no Patient"));
        // a too-short password is refused
        assert!(
            !set_login(&s.db.url, "pa-2", "bo-short", "short")
                .status
                .success()
        );

        // the CLI's login signs in on the running server
        let app = member_flow::register(&s, AppSpec::default()).await;
        let t =
            member_flow::tokens(&s, &app, SCOPES, "bo-cli", "a fine password", "withhold").await;
        assert_eq!(t["patient"], "pa-2");
        let access = t["access_token"].as_str().unwrap();
        assert_eq!(status_of(&s, access, "Patient/pa-2").await, 200);

        // disable-login: no more sign-in, and its app's token stops at once
        let out = Command::new(env!("CARGO_BIN_EXE_pdex"))
            .args([
                "member",
                "disable-login",
                "--database-url",
                &s.db.url,
                "--username",
                "bo-cli",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(status_of(&s, access, "Patient/pa-2").await, 401);
        let session = member_flow::open(&s, &Request::new(&s, &app, SCOPES)).await;
        let p = member_flow::sign_in(&s, &session, "bo-cli", "a fine password").await;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED);
        let out = Command::new(env!("CARGO_BIN_EXE_pdex"))
            .args([
                "member",
                "disable-login",
                "--database-url",
                &s.db.url,
                "--username",
                "nobody",
            ])
            .output()
            .unwrap();
        assert!(!out.status.success());
        s.stop().await;
    }
}

// ---------------------------------------------------------------------------------------
// A real browser (headless Chromium, driven by playwright-core from tests/browser/) and a
// real SMART client library (npm `fhirclient`). `.ci/run` installs both and sets
// PDEX_REQUIRE_BROWSER=1; elsewhere, without them, these tests say so and skip.

fn browser_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn harness_ready() -> bool {
    let chromium = std::env::var("PDEX_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ready = browser_dir().join("node_modules/playwright-core").is_dir()
        && browser_dir().join("node_modules/fhirclient").is_dir()
        && std::path::Path::new(&chromium).exists()
        && common::have_tools(&["node"]);
    if !ready {
        assert!(
            std::env::var("PDEX_REQUIRE_BROWSER").is_err(),
            "PDEX_REQUIRE_BROWSER is set but the browser harness is missing: run `npm ci` in tests/browser and install chromium"
        );
        eprintln!("skipped: the browser harness (tests/browser, chromium) is not installed");
    }
    ready
}

/// Runs a harness script with its JSON input; its one JSON line of output.
async fn run_script(script: &str, input: Value) -> Value {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(90),
        tokio::process::Command::new("node")
            .arg(script)
            .arg(input.to_string())
            .current_dir(browser_dir())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser script finished")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "{script}: no JSON output: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        out.status.success() && result.get("error").is_none(),
        "{script}: {result} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    result
}

/// Where a test keeps its screenshots (a CI artifact).
fn screenshot_dir(name: &str) -> String {
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| format!("{}/target", env!("CARGO_MANIFEST_DIR")));
    format!("{target}/browser-artifacts/{name}")
}

#[tokio::test]
async fn a_member_authorizes_an_app_in_a_real_browser() {
    if !harness_ready() {
        return;
    }
    for b in backends() {
        let s = start(&b, |_| {}).await;
        let app = member_flow::register(
            &s,
            AppSpec {
                redirect: "http://127.0.0.1:9/callback",
                ..AppSpec::default()
            },
        )
        .await;
        let req = Request::new(&s, &app, SCOPES);
        let name = if b.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        };
        let seen = run_script(
            "authorize.mjs",
            json!({
                "authorizeUrl": req.url(&s),
                "username": "ada",
                "password": PASSWORD,
                "wrongPasswordFirst": true,
                "sensitive": "withhold",
                "decision": "approve",
                "redirectPrefix": app.redirect,
                "screenshotDir": screenshot_dir(&format!("authorize-{name}")),
            }),
        )
        .await;
        assert_eq!(seen["signinStatus"], 200, "{seen}");
        assert_eq!(seen["failedSigninStatus"], 401, "{seen}");
        assert_eq!(seen["failedSigninHasForm"], true);
        assert_eq!(seen["withholdPreselected"], true);
        assert_eq!(
            seen["unlabelledInputs"],
            json!([]),
            "every input has a label"
        );
        assert!(
            seen["authorizePageText"]
                .as_str()
                .unwrap()
                .contains("Member app")
        );
        let cookie = seen["cookies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "pdex_browser")
            .unwrap();
        assert_eq!(cookie["httpOnly"], true);
        assert_eq!(cookie["sameSite"], "Lax");
        // the browser followed the redirect to the app's callback with a code and the state
        let callback = url::Url::parse(seen["callback"].as_str().unwrap()).unwrap();
        let q: std::collections::HashMap<_, _> = callback.query_pairs().into_owned().collect();
        assert_eq!(q.get("state"), req.state.as_ref());
        let code = q.get("code").expect("code");
        // the app exchanges it, reads the member's data, refreshes
        let resp = member_flow::exchange(&s, &app, code, &req.verifier).await;
        assert_eq!(resp.status(), 200);
        let t: Value = resp.json().await.unwrap();
        let access = t["access_token"].as_str().unwrap();
        assert_eq!(ids(&s, access, "Observation").await, vec!["obs-1"]);
        let resp = member_flow::refresh(&s, &app, t["refresh_token"].as_str().unwrap(), None).await;
        assert_eq!(resp.status(), 200);
        let r: Value = resp.json().await.unwrap();
        assert_eq!(
            ids(&s, r["access_token"].as_str().unwrap(), "Observation").await,
            vec!["obs-1"]
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn a_smart_client_library_completes_a_standalone_launch() {
    if !harness_ready() {
        return;
    }
    for b in backends() {
        let s = start(&b, |_| {}).await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let redirect = format!("http://127.0.0.1:{port}/callback");
        let app = member_flow::register(
            &s,
            AppSpec {
                redirect: &redirect,
                ..AppSpec::default()
            },
        )
        .await;
        let name = if b.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        };
        let seen = run_script(
            "smart-launch.mjs",
            json!({
                "fhirBase": s.base,
                "clientId": app.client_id,
                "appPort": port,
                "scope": SCOPES,
                "username": "ada",
                "password": PASSWORD,
                "sensitive": "share",
                "screenshotDir": screenshot_dir(&format!("smart-launch-{name}")),
            }),
        )
        .await;
        assert_eq!(seen["patientId"], "pa-1", "{seen}");
        assert_eq!(seen["patient"]["resourceType"], "Patient");
        assert_eq!(seen["patient"]["id"], "pa-1");
        assert_eq!(seen["tokenResponse"]["refresh_token"], true, "{seen}");
        assert_eq!(seen["tokenResponse"]["id_token"], true, "{seen}");
        assert_eq!(seen["refreshed"], true, "{seen}");
        s.stop().await;
    }
}
