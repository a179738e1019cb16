//! The authorization server as one value ([`AuthServer`]): its settings, the store, the
//! server keys, client key resolution and the counters; the OAuth routes ([`router`]); and the
//! resource server's side ([`AuthServer::authenticate`]: bearer token → [`AccessContext`]).

use super::access_token::{self, Claims};
use super::client_keys::ClientKeys;
use super::keys::KeyRing;
use super::metrics::AuthMetrics;
use crate::identity::{AccessContext, ClientCertificate};
use crate::store::Store;
use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use std::sync::Arc;

/// Where the authorization server lives and how long its tokens last.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// FHIR base URL (no trailing slash): the audience of access tokens.
    pub fhir_base: String,
    /// The OAuth endpoints' base, e.g. `http://127.0.0.1:8080/oauth`.
    pub oauth_base: String,
    /// Access-token lifetime, seconds.
    pub token_lifetime: u64,
    /// Further URLs of this token endpoint a client assertion may name as `aud` (the mTLS
    /// listener's alias of the token endpoint).
    pub extra_token_urls: Vec<String>,
    /// The trust framework's anchors (`--trust-anchors`): UDAP B2B re-validates each client
    /// assertion's `x5c` chain against them.
    pub trust: Option<super::pki::TrustAnchors>,
    /// UDAP signing identity; `None` when UDAP is off (`/.well-known/udap` is then 404).
    pub udap: Option<Arc<super::udap::UdapSigner>>,
    /// The UDAP trust community URI we answer `?community=` for (`--udap-community`).
    pub udap_community: Option<String>,
    /// Member sign-in lockout and the authorization-code lifetime.
    pub patient_access: crate::config::PatientAccessConfig,
}

impl AuthSettings {
    /// Settings for a server whose FHIR base is `fhir_base`: OAuth endpoints under `/oauth`
    /// next to `/fhir`.
    pub fn new(fhir_base: &str, token_lifetime: u64) -> Self {
        let fhir_base = fhir_base.trim_end_matches('/').to_owned();
        let root = fhir_base.strip_suffix("/fhir").unwrap_or(&fhir_base);
        AuthSettings {
            oauth_base: format!("{root}/oauth"),
            fhir_base,
            token_lifetime,
            extra_token_urls: Vec::new(),
            trust: None,
            udap: None,
            udap_community: None,
            patient_access: Default::default(),
        }
    }
    /// The `iss` of our access tokens.
    pub fn issuer(&self) -> &str {
        &self.oauth_base
    }
    pub fn token_url(&self) -> String {
        format!("{}/token", self.oauth_base)
    }
    pub fn introspection_url(&self) -> String {
        format!("{}/introspect", self.oauth_base)
    }
    pub fn revocation_url(&self) -> String {
        format!("{}/revoke", self.oauth_base)
    }
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.oauth_base)
    }
    pub fn authorize_url(&self) -> String {
        format!("{}/authorize", self.oauth_base)
    }
    /// The member's account page (SMART `management_endpoint`).
    pub fn account_url(&self) -> String {
        format!("{}/account", self.oauth_base)
    }
    /// May the member's pages set `Secure` cookies? Over https always; over plain HTTP (on
    /// loopback, in development) the flag would make the browser drop them.
    pub fn secure_cookies(&self) -> bool {
        self.oauth_base.starts_with("https://")
    }
    /// Every URL of the token endpoint (the `aud` a client assertion must carry).
    pub fn token_audiences(&self) -> Vec<String> {
        let mut v = vec![self.token_url()];
        v.extend(self.extra_token_urls.iter().cloned());
        v
    }
}

/// The authorization server.
pub struct AuthServer {
    pub store: Store,
    pub settings: AuthSettings,
    pub keys: KeyRing,
    pub client_keys: ClientKeys,
    pub metrics: AuthMetrics,
}

/// Why a request's bearer token was refused (→ 401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer` header (RFC 6750 §3.1: no error code).
    Missing,
    /// A token was presented but is not acceptable (`invalid_token`); the text says why.
    Invalid(String),
    /// The server could not check (an internal fault) → 500.
    Internal,
    /// The database that would tell is unavailable → 503 with `Retry-After`, never 401.
    Unavailable,
}

impl AuthServer {
    /// Makes sure a signing key exists, then returns the server.
    pub async fn start(store: Store, settings: AuthSettings) -> anyhow::Result<Arc<AuthServer>> {
        super::keys::ensure_signing_key(&store).await?;
        Ok(Arc::new(AuthServer {
            keys: KeyRing::new(store.clone(), settings.token_lifetime),
            store,
            settings,
            client_keys: ClientKeys::new(),
            metrics: AuthMetrics::default(),
        }))
    }

    /// Is a verified token still live: its client exists and is not disabled, it was not
    /// revoked, and the consent a member-scoped token stands on is still active
    /// ([`super::liveness`]: one query, no cache, so `pdex client disable`, revocation and
    /// `pdex consent revoke` apply at once).
    pub async fn check_live(&self, claims: &Claims) -> Result<(), AuthFailure> {
        let grant = claims.grant();
        super::liveness::check(&self.store, &claims.client_id, &grant)
            .await
            .map_err(|dead| match dead {
                super::liveness::Dead::Refused(why) => AuthFailure::Invalid(why),
                super::liveness::Dead::Unavailable(e) => {
                    tracing::warn!(target: "pdex::auth", error = %e, "cannot check a token: the database is unavailable");
                    AuthFailure::Unavailable
                }
                super::liveness::Dead::Internal(e) => {
                    tracing::error!(target: "pdex::auth", error = %e, "cannot check a token");
                    AuthFailure::Internal
                }
            })
    }

    /// Verifies a token completely (signature, audience, expiry, client, revocation).
    pub async fn inspect(&self, token: &str) -> Result<Claims, AuthFailure> {
        let claims = access_token::verify(self, token).await?;
        self.check_live(&claims).await?;
        Ok(claims)
    }

    /// The resource server's check on every FHIR request: the bearer token of `headers`,
    /// fully verified, and — for a certificate-bound token — the connection's client
    /// certificate must be the one it was bound to (RFC 8705 §3: otherwise 401
    /// `invalid_token`).
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        cert: Option<&ClientCertificate>,
    ) -> Result<AccessContext, AuthFailure> {
        AuthMetrics::inc(&self.metrics.requests);
        let result = async {
            let token = bearer_token(headers)?;
            let claims = self.inspect(token).await?;
            if let Some(bound) = &claims.cnf {
                match cert {
                    Some(c) if &c.thumbprint == bound => {}
                    Some(_) => {
                        return Err(AuthFailure::Invalid(
                            "the token is bound to another client certificate".into(),
                        ));
                    }
                    None => {
                        return Err(AuthFailure::Invalid(
                            "the token is bound to a client certificate; call over mTLS with it"
                                .into(),
                        ));
                    }
                }
            }
            Ok(claims.context())
        }
        .await;
        if let Err(e) = &result {
            AuthMetrics::inc(&self.metrics.unauthenticated);
            tracing::info!(target: "pdex::auth", reason = ?e, "request refused: no valid access token");
        }
        result
    }
}

/// The token of an `Authorization: Bearer …` header (scheme case-insensitive).
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthFailure> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(AuthFailure::Missing);
    };
    let value = value
        .to_str()
        .map_err(|_| AuthFailure::Invalid("the Authorization header is not text".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(AuthFailure::Invalid(
            "the Authorization header must be \"Bearer <access token>\"".into(),
        )),
    }
}

/// The OAuth endpoints and the SMART discovery document.
pub fn router<S: Clone + Send + Sync + 'static>(auth: Arc<AuthServer>) -> Router<S> {
    Router::new()
        .route("/oauth/token", post(super::token::token_endpoint))
        .route("/oauth/introspect", post(super::introspect::introspect))
        .route("/oauth/revoke", post(super::introspect::revoke))
        .route("/oauth/jwks", get(super::discovery::jwks))
        .route("/oauth/register", post(super::dcr::register))
        .route("/fhir/.well-known/udap", get(super::udap::discovery))
        .route(
            "/fhir/.well-known/smart-configuration",
            get(super::discovery::smart_configuration),
        )
        .route(
            "/oauth/.well-known/openid-configuration",
            get(super::discovery::openid_configuration),
        )
        .with_state(auth)
}

/// The member's pages: the authorization endpoint, sign-in and decision, the account page
/// (HTML; the router
/// gives them their own error layer and no CORS).
pub fn pages_router<S: Clone + Send + Sync + 'static>(auth: Arc<AuthServer>) -> Router<S> {
    use super::authorize;
    Router::new()
        .route(
            "/oauth/authorize",
            get(authorize::authorize_get).post(authorize::authorize_post),
        )
        .route(authorize::SIGN_IN_PATH, post(authorize::sign_in))
        .route(authorize::DECIDE_PATH, post(authorize::decide))
        .route(super::account::ACCOUNT_PATH, get(super::account::account))
        .route(super::account::SIGN_IN_PATH, post(super::account::sign_in))
        .route(super::account::REVOKE_PATH, post(super::account::revoke))
        .with_state(auth)
}
