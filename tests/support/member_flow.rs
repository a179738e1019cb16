//! The member's authorization-code flow driven over plain HTTP the way a browser would (no
//! redirects followed, the browser cookie kept by hand): register an app, set a login, open
//! the authorize URL, sign in, decide, exchange the code. Shared by the Patient Access tests
//! and the release matrix.
#![allow(dead_code)]

use super::common::TestServer;
use base64::Engine;
use pdex::identity::ClientKind;
use reqwest::{Client, StatusCode};
use serde_json::Value;
use sha2::Digest;

/// A registered client of the flow.
#[derive(Debug, Clone)]
pub struct App {
    pub client_id: String,
    pub secret: Option<String>,
    pub redirect: String,
}

/// What to register.
pub struct AppSpec<'a> {
    pub name: &'a str,
    pub kind: ClientKind,
    pub scopes: &'a str,
    pub secret: bool,
    pub jwks: Option<Value>,
    pub organization: Option<&'a str>,
    pub redirect: &'a str,
}

impl Default for AppSpec<'_> {
    fn default() -> Self {
        AppSpec {
            name: "Member app",
            kind: ClientKind::App,
            scopes: "",
            secret: false,
            jwks: None,
            organization: None,
            redirect: "https://app.example.org/callback",
        }
    }
}

/// Registers a client for the authorization-code flow (the API `pdex client add` uses).
pub async fn register(s: &TestServer, spec: AppSpec<'_>) -> App {
    let created = pdex::auth::clients::create(
        &s.state.store,
        pdex::auth::clients::NewClient {
            name: spec.name.into(),
            kind: Some(spec.kind),
            scopes: pdex::identity::scopes::split(spec.scopes),
            secret: spec.secret,
            jwks: spec.jwks,
            organization: spec
                .organization
                .map(|o| pdex::auth::clients::parse_organization(o).unwrap()),
            redirect_uris: vec![spec.redirect.into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    App {
        client_id: created.client.client_id,
        secret: created.secret,
        redirect: spec.redirect.into(),
    }
}

/// Sets a member login (the API `pdex member set-login` uses).
pub async fn set_login(s: &TestServer, username: &str, patient: &str, password: &str) {
    pdex::auth::logins::set_login(&s.state.store, username, patient, password)
        .await
        .unwrap();
}

/// A PKCE S256 pair (verifier, challenge).
pub fn pkce() -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The authorize request's parameters; `None` leaves one out.
#[derive(Debug, Clone)]
pub struct Request {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub aud: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub verifier: String,
}

/// The scopes Inferno's standalone launch asks for.
pub const SCOPES: &str = "launch/patient openid fhirUser offline_access patient/*.rs";

impl Request {
    pub fn new(s: &TestServer, app: &App, scope: &str) -> Request {
        let (verifier, challenge) = pkce();
        Request {
            response_type: Some("code".into()),
            client_id: Some(app.client_id.clone()),
            redirect_uri: Some(app.redirect.clone()),
            scope: Some(scope.into()),
            state: Some(uuid::Uuid::new_v4().to_string()),
            aud: Some(s.base.clone()),
            code_challenge: Some(challenge),
            code_challenge_method: Some("S256".into()),
            verifier,
        }
    }

    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("response_type", &self.response_type),
            ("client_id", &self.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("scope", &self.scope),
            ("state", &self.state),
            ("aud", &self.aud),
            ("code_challenge", &self.code_challenge),
            ("code_challenge_method", &self.code_challenge_method),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }

    pub fn url(&self, s: &TestServer) -> String {
        let mut url = url::Url::parse(&s.state.auth.settings.authorize_url()).unwrap();
        for (k, v) in self.pairs() {
            url.query_pairs_mut().append_pair(k, &v);
        }
        url.to_string()
    }
}

/// A browser that does not follow redirects (the test reads `Location`).
pub fn browser() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// One page load.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub html: String,
    pub content_type: String,
    pub set_cookie: Vec<String>,
    pub location: Option<String>,
    pub cache_control: Option<String>,
}

impl Page {
    /// The value of the input named `name`.
    pub fn input(&self, name: &str) -> Option<String> {
        let re = regex::Regex::new(&format!(
            r#"<input[^>]*name="{}"[^>]*value="([^"]*)""#,
            regex::escape(name)
        ))
        .unwrap();
        re.captures(&self.html).map(|c| c[1].to_owned())
    }

    /// The `pdex_browser` cookie it set, as a `Cookie` header value.
    pub fn cookie(&self) -> Option<String> {
        self.set_cookie
            .iter()
            .find(|c| c.starts_with("pdex_browser="))
            .map(|c| c.split(';').next().unwrap().to_owned())
    }

    /// A query parameter of the redirect.
    pub fn redirect_param(&self, key: &str) -> Option<String> {
        let url = url::Url::parse(self.location.as_deref()?).ok()?;
        url.query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

async fn page(resp: reqwest::Response) -> Page {
    let h = resp.headers().clone();
    let text = |k: &str| h.get(k).map(|v| v.to_str().unwrap().to_owned());
    Page {
        status: resp.status(),
        content_type: text("content-type").unwrap_or_default(),
        set_cookie: h
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect(),
        location: text("location"),
        cache_control: text("cache-control"),
        html: resp.text().await.unwrap(),
    }
}

pub async fn get(url: &str, cookie: Option<&str>) -> Page {
    let mut req = browser().get(url);
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    page(req.send().await.unwrap()).await
}

pub async fn post(url: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Page {
    let mut req = browser().post(url).form(form);
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    page(req.send().await.unwrap()).await
}

/// The pages' URLs.
pub fn signin_url(s: &TestServer) -> String {
    s.state.auth.settings.authorize_url() + "/signin"
}
pub fn decide_url(s: &TestServer) -> String {
    s.state.auth.settings.authorize_url() + "/decide"
}

/// A browser in the middle of the flow: its cookie and the current form's hidden fields.
pub struct Session {
    pub cookie: String,
    pub request: String,
    pub csrf: String,
}

/// Opens the authorize URL: 200 with the sign-in page and the browser cookie.
pub async fn open(s: &TestServer, req: &Request) -> Session {
    let p = get(&req.url(s), None).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.html);
    Session {
        cookie: p.cookie().expect("the browser cookie"),
        request: p.input("request").expect("request"),
        csrf: p.input("csrf").expect("csrf"),
    }
}

/// Signs in on the sign-in page.
pub async fn sign_in(s: &TestServer, session: &Session, username: &str, password: &str) -> Page {
    post(
        &signin_url(s),
        Some(&session.cookie),
        &[
            ("request", &session.request),
            ("csrf", &session.csrf),
            ("username", username),
            ("password", password),
        ],
    )
    .await
}

/// Decides on the authorization page.
pub async fn decide(s: &TestServer, session: &Session, sensitive: &str, decision: &str) -> Page {
    post(
        &decide_url(s),
        Some(&session.cookie),
        &[
            ("request", &session.request),
            ("csrf", &session.csrf),
            ("sensitive", sensitive),
            ("decision", decision),
        ],
    )
    .await
}

/// The whole flow up to the code: (code, the request).
pub async fn code(
    s: &TestServer,
    app: &App,
    scope: &str,
    username: &str,
    password: &str,
    sensitive: &str,
) -> (String, Request) {
    let req = Request::new(s, app, scope);
    let session = open(s, &req).await;
    let p = sign_in(s, &session, username, password).await;
    assert_eq!(p.status, StatusCode::OK, "sign-in: {}", p.html);
    let p = decide(s, &session, sensitive, "approve").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.html);
    assert_eq!(p.redirect_param("state"), req.state, "state echoed");
    (p.redirect_param("code").expect("code"), req)
}

/// The token request of the code (a public client's form, or Basic for a secret).
pub async fn exchange(s: &TestServer, app: &App, code: &str, verifier: &str) -> reqwest::Response {
    let mut req = Client::new().post(s.token_url());
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", app.redirect.as_str()),
        ("code_verifier", verifier),
    ];
    match &app.secret {
        Some(secret) => req = req.basic_auth(&app.client_id, Some(secret)),
        None => form.push(("client_id", &app.client_id)),
    }
    req.form(&form).send().await.unwrap()
}

/// A refresh request (public client: `client_id` in the form).
pub async fn refresh(
    s: &TestServer,
    app: &App,
    refresh_token: &str,
    scope: Option<&str>,
) -> reqwest::Response {
    let mut req = Client::new().post(s.token_url());
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    if let Some(sc) = scope {
        form.push(("scope", sc));
    }
    match &app.secret {
        Some(secret) => req = req.basic_auth(&app.client_id, Some(secret)),
        None => form.push(("client_id", &app.client_id)),
    }
    req.form(&form).send().await.unwrap()
}

/// The whole flow to the token response (asserting 200).
pub async fn tokens(
    s: &TestServer,
    app: &App,
    scope: &str,
    username: &str,
    password: &str,
    sensitive: &str,
) -> Value {
    let (code, req) = code(s, app, scope, username, password, sensitive).await;
    let resp = exchange(s, app, &code, &req.verifier).await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}
