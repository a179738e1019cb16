//! Authorization: the authorization server, which turns a bearer token into the
//! [`crate::identity::AccessContext`] every handler receives (the context type and the scope
//! grammar live in `identity`, so the layers below may read them without depending on this
//! module; only this module builds one from a token).
//!
//! The authorization server: `clients` (registered clients), `keys` (the server's signing
//! keys and JWKS), `client_keys` (client JWK Sets and assertion checks), `token` (the token endpoint and its
//! grants), `access_token` (minting and verifying our JWT access tokens into an
//! `AccessContext`),
//! `introspect` (RFC 7662 / RFC 7009), `discovery` (SMART configuration, JWKS), `metrics`
//! (request and failure counters), `server` (the shared [`server::AuthServer`] and its routes);
//! `assertion` is the client side (signing `private_key_jwt` assertions for `pdex token`).
//!
//! Depends on `store` and `consent` (the member-scoped token's consent check); never on
//! `server` (the HTTP router depends on this module, not the other way round).

pub mod access_token;
pub mod account;
pub mod app_tokens;
pub mod assertion;
pub mod authorizations;
pub mod authorize;
pub mod browser;
pub mod client_keys;
pub mod clients;
pub mod discovery;
pub mod id_token;
pub mod introspect;
pub mod keys;
pub mod liveness;
pub mod logins;
pub mod metrics;
pub mod pages;
pub mod server;
pub mod throttle;
pub mod token;

pub use server::{AuthServer, AuthSettings};

pub mod dcr;
pub mod pki;
pub mod udap;
