//! Registered OAuth clients: the `auth_clients` table and the one Rust API that creates,
//! updates, lists and disables them. `pdex client add`, RFC 7591 registration over mTLS and
//! UDAP registration all go through [`create`] / [`update`], so the validation rules live
//! here once.
//!
//! Nothing is cached: the token endpoint and the resource server read the row on every use,
//! so a `pdex client disable` in another process takes effect at once.

use crate::identity::{ClientKind, OrgIdentifier, scopes};
use crate::store::{SqlValue, Store};
use anyhow::Context;
use base64::Engine;
use serde_json::{Value, json};

/// A registered client.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    pub kind: ClientKind,
    /// Inline JWK Set (`{"keys": [...]}`), public keys only.
    pub jwks: Option<Value>,
    pub jwks_uri: Option<String>,
    pub organization: Option<OrgIdentifier>,
    /// Scopes the client may be granted.
    pub scopes: Vec<String>,
    /// RFC 8705 `tls_client_auth_san_uri`: the SAN URI its client certificate must carry.
    pub cert_san_uri: Option<String>,
    /// `x5t#S256` of the certificate recorded at registration, if one was.
    pub cert_thumbprint: Option<String>,
    /// SHA-256 (hex) of the client secret, for confidential-symmetric app clients.
    pub secret_hash: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    /// The registrant's own identity for this client (UDAP: the software statement `iss`).
    pub external_id: Option<String>,
    /// Registration metadata as received (RFC 7591 / UDAP), for echoing back.
    pub metadata: Option<Value>,
    pub disabled: bool,
    /// Epoch milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
}

impl Client {
    /// Does the client have a certificate binding (SAN URI or thumbprint)?
    pub fn cert_bound(&self) -> bool {
        self.cert_san_uri.is_some() || self.cert_thumbprint.is_some()
    }

    /// The token endpoint authentication methods this client can use.
    pub fn auth_methods(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.jwks.is_some() || self.jwks_uri.is_some() {
            m.push("private_key_jwt");
        }
        if self.cert_san_uri.is_some() {
            m.push("tls_client_auth");
        }
        if self.secret_hash.is_some() {
            m.push("client_secret_basic");
        }
        m
    }

    /// The client as `pdex client list` / `add` print it (no secret material).
    pub fn to_json(&self) -> Value {
        json!({
            "client_id": self.client_id,
            "name": self.name,
            "kind": self.kind.as_str(),
            "scope": self.scopes.join(" "),
            "organization": self.organization.as_ref().map(ToString::to_string),
            "jwks_uri": self.jwks_uri,
            "jwks": self.jwks,
            "cert_san_uri": self.cert_san_uri,
            "cert_thumbprint": self.cert_thumbprint,
            "token_endpoint_auth_methods": self.auth_methods(),
            "has_secret": self.secret_hash.is_some(),
            "redirect_uris": self.redirect_uris,
            "grant_types": self.grant_types,
            "disabled": self.disabled,
            "created_at": crate::fhir::datetime::format_instant(self.created_at),
        })
    }
}

/// What a registrar supplies to create a client.
#[derive(Debug, Clone, Default)]
pub struct NewClient {
    /// A fixed client id (the demo clients, whose ids the banner and README name); by
    /// default a random one.
    pub client_id: Option<String>,
    pub name: String,
    pub kind: Option<ClientKind>,
    pub jwks: Option<Value>,
    pub jwks_uri: Option<String>,
    pub organization: Option<OrgIdentifier>,
    pub scopes: Vec<String>,
    pub cert_san_uri: Option<String>,
    pub cert_thumbprint: Option<String>,
    /// Generate a client secret (returned once in [`Created::secret`]).
    pub secret: bool,
    pub redirect_uris: Vec<String>,
    /// Defaults to `["client_credentials"]`, plus `authorization_code` when redirect URIs
    /// are given.
    pub grant_types: Vec<String>,
    pub external_id: Option<String>,
    pub metadata: Option<Value>,
}

/// A newly created client and its secret in clear (shown once, stored hashed).
#[derive(Debug, Clone)]
pub struct Created {
    pub client: Client,
    pub secret: Option<String>,
}

/// Registration data that is not acceptable; the message says what to fix. DCR answers it
/// as `invalid_client_metadata`, the CLI prints it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

fn invalid(msg: impl Into<String>) -> ClientError {
    ClientError::Invalid(msg.into())
}

/// Parses `SYSTEM|VALUE`.
pub fn parse_organization(s: &str) -> Result<OrgIdentifier, ClientError> {
    s.parse().map_err(|_| {
        invalid(format!(
            "organization {s:?} must be SYSTEM|VALUE, e.g. http://hl7.org/fhir/sid/us-npi|1234567893"
        ))
    })
}

/// Checks a JWK Set: an object with a `keys` array of public asymmetric keys, each with
/// `kty` and a unique `kid`, RSA keys with `n` and `e`, EC keys with `crv`, `x`, `y`
/// (SMART Backend Services §registration). Private key members are refused.
pub fn validate_jwks(jwks: &Value) -> Result<(), ClientError> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("a JWK Set is an object with a \"keys\" array"))?;
    if keys.is_empty() {
        return Err(invalid("the JWK Set has no keys"));
    }
    let mut kids = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let kid = k
            .get("kid")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid(format!("JWK {i} has no \"kid\"")))?;
        if kids.contains(&kid) {
            return Err(invalid(format!("kid {kid:?} appears twice in the JWK Set")));
        }
        kids.push(kid);
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            if k.get(private).is_some() {
                return Err(invalid(format!(
                    "JWK {kid:?} contains private key material ({private:?}); register the public key only"
                )));
            }
        }
        let has = |f: &str| {
            k.get(f)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        };
        match k.get("kty").and_then(Value::as_str) {
            Some("RSA") if has("n") && has("e") => {}
            Some("EC") if has("crv") && has("x") && has("y") => {}
            Some("RSA") => return Err(invalid(format!("RSA JWK {kid:?} needs \"n\" and \"e\""))),
            Some("EC") => {
                return Err(invalid(format!(
                    "EC JWK {kid:?} needs \"crv\", \"x\" and \"y\""
                )));
            }
            other => {
                return Err(invalid(format!(
                    "JWK {kid:?} has kty {other:?}; only RSA and EC keys are accepted"
                )));
            }
        }
    }
    Ok(())
}

/// A `jwks_uri` must be https (http is accepted for loopback hosts, for development).
pub fn validate_jwks_uri(uri: &str) -> Result<(), ClientError> {
    let u = url::Url::parse(uri).map_err(|e| invalid(format!("jwks_uri {uri:?}: {e}")))?;
    let loopback = matches!(
        u.host(),
        Some(url::Host::Domain("localhost"))
            | Some(url::Host::Ipv4(std::net::Ipv4Addr::LOCALHOST))
            | Some(url::Host::Ipv6(std::net::Ipv6Addr::LOCALHOST))
    );
    match u.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(invalid(format!(
            "jwks_uri {uri:?} must be an https URL (SMART: accessible via TLS)"
        ))),
    }
}

fn validate_scopes(list: &[String]) -> Result<(), ClientError> {
    for s in list {
        if scopes::parse(s).is_none() {
            return Err(invalid(format!(
                "{s:?} is not a valid scope (SMART v1 system/Type.read or v2 system/Type.cruds, or an operation URL)"
            )));
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates a client after checking its registration data.
pub async fn create(store: &Store, new: NewClient) -> Result<Created, ClientError> {
    let name = new.name.trim().to_owned();
    if name.is_empty() {
        return Err(invalid("a client needs a name"));
    }
    let kind = new.kind.ok_or_else(|| invalid("a client needs a kind"))?;
    if kind == ClientKind::Operator {
        return Err(invalid(
            "kind must be payer, provider, app or admin (operator is the CLI itself)",
        ));
    }
    if new.jwks.is_some() && new.jwks_uri.is_some() {
        // RFC 7591 §2: "MUST NOT both be present"
        return Err(invalid("give either a JWK Set or a jwks_uri, not both"));
    }
    if let Some(j) = &new.jwks {
        validate_jwks(j)?;
    }
    if let Some(u) = &new.jwks_uri {
        validate_jwks_uri(u)?;
    }
    if let Some(u) = &new.cert_san_uri {
        url::Url::parse(u).map_err(|e| invalid(format!("certificate SAN URI {u:?}: {e}")))?;
    }
    for u in &new.redirect_uris {
        url::Url::parse(u).map_err(|e| invalid(format!("redirect URI {u:?}: {e}")))?;
    }
    validate_scopes(&new.scopes)?;
    if new.jwks.is_none()
        && new.jwks_uri.is_none()
        && new.cert_san_uri.is_none()
        && !new.secret
        && new.redirect_uris.is_empty()
    {
        return Err(invalid(
            "a client needs a way to authenticate: a JWK Set, a jwks_uri, a certificate SAN URI or a secret",
        ));
    }
    let secret = new.secret.then(|| {
        let bytes: [u8; 32] = rand::random();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    });
    let grant_types = if new.grant_types.is_empty() {
        let mut g = vec!["client_credentials".to_owned()];
        if !new.redirect_uris.is_empty() {
            g.push("authorization_code".to_owned());
        }
        g
    } else {
        new.grant_types.clone()
    };
    let now = now_ms();
    let client = Client {
        client_id: new
            .client_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
        name,
        kind,
        jwks: new.jwks,
        jwks_uri: new.jwks_uri,
        organization: new.organization,
        scopes: new.scopes,
        cert_san_uri: new.cert_san_uri,
        cert_thumbprint: new.cert_thumbprint,
        secret_hash: secret.as_deref().map(sha256_hex),
        redirect_uris: new.redirect_uris,
        grant_types,
        external_id: new.external_id,
        metadata: new.metadata,
        disabled: false,
        created_at: now,
        updated_at: now,
    };
    let mut tx = store.db.begin().await?;
    tx.execute(
        &format!(
            "INSERT INTO auth_clients ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
        ),
        row_values(&client),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(target: "pdex::auth", client_id = %client.client_id, kind = kind.as_str(), "client registered");
    Ok(Created { client, secret })
}

/// Replaces a client's registration (RFC 7591 / UDAP re-registration): everything but its
/// id, creation time and disabled flag. Validated like [`create`].
pub async fn update(store: &Store, client: &Client) -> Result<Client, ClientError> {
    if let Some(j) = &client.jwks {
        validate_jwks(j)?;
    }
    if let Some(u) = &client.jwks_uri {
        validate_jwks_uri(u)?;
    }
    if client.jwks.is_some() && client.jwks_uri.is_some() {
        return Err(invalid("give either a JWK Set or a jwks_uri, not both"));
    }
    validate_scopes(&client.scopes)?;
    let mut updated = client.clone();
    updated.updated_at = now_ms();
    let mut tx = store.db.begin().await?;
    let mut params = row_values(&updated);
    // client_id first in the row; it goes to the WHERE clause instead
    let id = params.remove(0);
    let sets: Vec<String> = COLUMNS
        .split(", ")
        .skip(1)
        .map(|c| format!("{c} = ?"))
        .collect();
    params.push(id);
    let n = tx
        .execute(
            &format!(
                "UPDATE auth_clients SET {} WHERE client_id = ?",
                sets.join(", ")
            ),
            params,
        )
        .await?;
    tx.commit().await?;
    if n == 0 {
        return Err(invalid(format!("no client {:?}", client.client_id)));
    }
    Ok(updated)
}

/// Sets or clears the disabled flag; false when there is no such client.
pub async fn set_disabled(store: &Store, client_id: &str, disabled: bool) -> anyhow::Result<bool> {
    let mut tx = store.db.begin().await?;
    let n = tx
        .execute(
            "UPDATE auth_clients SET disabled = ?, updated_at = ? WHERE client_id = ?",
            vec![
                SqlValue::from(disabled),
                SqlValue::from(now_ms()),
                SqlValue::from(client_id),
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(n > 0)
}

/// Records the certificate a client registered with (SAN URI and thumbprint).
pub async fn bind_certificate(
    store: &Store,
    client_id: &str,
    san_uri: Option<&str>,
    thumbprint: Option<&str>,
) -> anyhow::Result<bool> {
    let mut tx = store.db.begin().await?;
    let n = tx
        .execute(
            "UPDATE auth_clients SET cert_san_uri = ?, cert_thumbprint = ?, updated_at = ? WHERE client_id = ?",
            vec![
                SqlValue::from(san_uri),
                SqlValue::from(thumbprint),
                SqlValue::from(now_ms()),
                SqlValue::from(client_id),
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(n > 0)
}

/// One client by id.
pub async fn get(store: &Store, client_id: &str) -> anyhow::Result<Option<Client>> {
    let rows = store
        .db
        .fetch(
            &format!("SELECT {COLUMNS} FROM auth_clients WHERE client_id = ?"),
            &[SqlValue::from(client_id)],
        )
        .await?;
    rows.into_iter().next().map(from_row).transpose()
}

/// The client registered under `external_id` (UDAP re-registration by the same `iss`).
pub async fn find_by_external_id(
    store: &Store,
    external_id: &str,
) -> anyhow::Result<Option<Client>> {
    let rows = store
        .db
        .fetch(
            &format!(
                "SELECT {COLUMNS} FROM auth_clients WHERE external_id = ? ORDER BY created_at DESC"
            ),
            &[SqlValue::from(external_id)],
        )
        .await?;
    rows.into_iter().next().map(from_row).transpose()
}

/// Every client, oldest first.
pub async fn list(store: &Store) -> anyhow::Result<Vec<Client>> {
    let rows = store
        .db
        .fetch(
            &format!("SELECT {COLUMNS} FROM auth_clients ORDER BY created_at, client_id"),
            &[],
        )
        .await?;
    rows.into_iter().map(from_row).collect()
}

/// Checks a client secret against the stored hash.
pub fn secret_matches(client: &Client, secret: &str) -> bool {
    client.secret_hash.as_deref().is_some_and(|h| {
        let got = sha256_hex(secret);
        // constant-time comparison of two equal-length hex strings
        h.len() == got.len()
            && h.bytes()
                .zip(got.bytes())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0
    })
}

const COLUMNS: &str = "client_id, name, kind, jwks, jwks_uri, org_system, org_value, scopes, cert_san_uri, cert_thumbprint, secret_hash, redirect_uris, grant_types, external_id, metadata, disabled, created_at, updated_at";

fn row_values(c: &Client) -> Vec<SqlValue> {
    vec![
        SqlValue::from(&c.client_id),
        SqlValue::from(&c.name),
        SqlValue::from(c.kind.as_str()),
        SqlValue::from(c.jwks.as_ref().map(Value::to_string)),
        SqlValue::from(c.jwks_uri.clone()),
        SqlValue::from(c.organization.as_ref().map(|o| o.system.clone())),
        SqlValue::from(c.organization.as_ref().map(|o| o.value.clone())),
        SqlValue::from(c.scopes.join(" ")),
        SqlValue::from(c.cert_san_uri.clone()),
        SqlValue::from(c.cert_thumbprint.clone()),
        SqlValue::from(c.secret_hash.clone()),
        SqlValue::from(Value::from(c.redirect_uris.clone()).to_string()),
        SqlValue::from(Value::from(c.grant_types.clone()).to_string()),
        SqlValue::from(c.external_id.clone()),
        SqlValue::from(c.metadata.as_ref().map(Value::to_string)),
        SqlValue::from(c.disabled),
        SqlValue::from(c.created_at),
        SqlValue::from(c.updated_at),
    ]
}

fn from_row(row: crate::store::db::Row) -> anyhow::Result<Client> {
    // columns in `COLUMNS` order; every decode error is an error (issue 12: a `disabled`
    // that failed to decode must never read as enabled)
    let json_of = |v: Option<String>| -> anyhow::Result<Option<Value>> {
        v.map(|s| serde_json::from_str(&s).map_err(anyhow::Error::from))
            .transpose()
    };
    let list_of = |s: String| -> anyhow::Result<Vec<String>> {
        serde_json::from_str(&s).map_err(anyhow::Error::from)
    };
    let client_id = row.text(0)?;
    let context = |what: &str| format!("client {client_id}: {what}");
    let kind_text = row.text(2)?;
    let kind = ClientKind::parse(&kind_text)
        .ok_or_else(|| anyhow::anyhow!("client {client_id} has unknown kind {kind_text:?}"))?;
    let organization = match (row.opt_text(5)?, row.opt_text(6)?) {
        (Some(system), Some(value)) => Some(OrgIdentifier { system, value }),
        _ => None,
    };
    Ok(Client {
        name: row.text(1)?,
        kind,
        jwks: json_of(row.opt_text(3)?).with_context(|| context("jwks"))?,
        jwks_uri: row.opt_text(4)?,
        organization,
        scopes: scopes::split(&row.text(7)?),
        cert_san_uri: row.opt_text(8)?,
        cert_thumbprint: row.opt_text(9)?,
        secret_hash: row.opt_text(10)?,
        redirect_uris: list_of(row.text(11)?).with_context(|| context("redirect_uris"))?,
        grant_types: list_of(row.text(12)?).with_context(|| context("grant_types"))?,
        external_id: row.opt_text(13)?,
        metadata: json_of(row.opt_text(14)?).with_context(|| context("metadata"))?,
        disabled: row.flag(15)?,
        created_at: row.int(16)?,
        updated_at: row.int(17)?,
        client_id,
    })
}
