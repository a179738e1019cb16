//! Our access tokens: JWTs signed with the server key (`keys`), carrying who the client is
//! (client id, kind, organization), the granted scopes, the patient of a member-scoped token,
//! the sensitivity allowance and, when issued over mTLS, the RFC 8705 `cnf.x5t#S256`
//! certificate binding. [`mint`] issues one; [`verify`] checks signature, issuer, audience and
//! expiry and gives the claims back; [`Claims::context`] turns them into the
//! [`AccessContext`] the rest of the server works with.

use crate::auth::server::{AuthFailure, AuthServer};
use crate::identity::{AccessContext, ClientKind, DataScope, GrantRef, OrgIdentifier, scopes};
use jsonwebtoken::{Header, Validation};
use serde_json::{Value, json};

/// What a token grants; the token endpoint builds one per grant type.
#[derive(Debug, Clone)]
pub struct Grant {
    pub client_id: String,
    pub kind: ClientKind,
    pub organization: Option<OrgIdentifier>,
    pub scopes: Vec<String>,
    /// Member-scoped tokens: the member's Patient id.
    pub patient: Option<String>,
    pub allow_sensitive: bool,
    /// Member-scoped tokens of a payer: the stored consent they stand on.
    pub consent_id: Option<String>,
    /// Tokens from the authorization-code flow: the member's authorization
    /// (`member_authorizations`) they stand on.
    pub authorization_id: Option<String>,
    /// `x5t#S256` of the client certificate of the token request's connection.
    pub cnf: Option<String>,
    /// Seconds.
    pub lifetime: u64,
}

/// An issued token.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: u64,
    pub jti: String,
}

/// The verified claims of one of our access tokens.
#[derive(Debug, Clone)]
pub struct Claims {
    pub client_id: String,
    pub kind: ClientKind,
    pub organization: Option<OrgIdentifier>,
    pub scopes: Vec<String>,
    pub patient: Option<String>,
    pub allow_sensitive: bool,
    /// `pdex_consent`: the stored consent a member-scoped token stands on.
    pub consent_id: Option<String>,
    /// `pdex_authorization`: the member's authorization an app's token stands on.
    pub authorization_id: Option<String>,
    pub cnf: Option<String>,
    pub jti: String,
    /// Epoch seconds.
    pub iat: i64,
    pub exp: i64,
    pub raw: Value,
}

/// Signs an access token for `grant`.
pub async fn mint(auth: &AuthServer, grant: &Grant) -> anyhow::Result<Issued> {
    let key = auth.keys.signing_key().await?;
    let now = chrono::Utc::now().timestamp();
    let jti = uuid::Uuid::new_v4().simple().to_string();
    let mut claims = json!({
        "iss": auth.settings.issuer(),
        "aud": auth.settings.fhir_base,
        "sub": grant.client_id,
        "client_id": grant.client_id,
        "iat": now,
        "exp": now + grant.lifetime as i64,
        "jti": jti,
        "scope": grant.scopes.join(" "),
        "pdex_kind": grant.kind.as_str(),
        "pdex_sensitive": grant.allow_sensitive,
    });
    if let Some(o) = &grant.organization {
        claims["pdex_org"] = json!(o.to_string());
    }
    if let Some(p) = &grant.patient {
        claims["patient"] = json!(p);
    }
    if let Some(c) = &grant.consent_id {
        claims["pdex_consent"] = json!(c);
    }
    if let Some(g) = &grant.authorization_id {
        claims["pdex_authorization"] = json!(g);
    }
    if let Some(t) = &grant.cnf {
        // RFC 8705 §3.1
        claims["cnf"] = json!({"x5t#S256": t});
    }
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    header.typ = Some("at+jwt".into());
    let access_token = jsonwebtoken::encode(&header, &claims, &key.encoding)?;
    // before the token leaves: its key must outlive it, even if retired meanwhile
    auth.keys
        .note_signed(&key.kid, (now + grant.lifetime as i64) * 1000)
        .await?;
    Ok(Issued {
        access_token,
        expires_in: grant.lifetime,
        jti,
    })
}

/// Checks one of our tokens: signature with a current server key, `iss`, `aud` = the FHIR
/// base, `exp`. Revocation and the client's state are the caller's next step
/// ([`AuthServer::check_live`]).
pub async fn verify(auth: &AuthServer, token: &str) -> Result<Claims, AuthFailure> {
    let invalid = |why: &str| AuthFailure::Invalid(why.to_owned());
    let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("not a JWT"))?;
    let kid = header
        .kid
        .as_deref()
        .ok_or_else(|| invalid("the token has no kid"))?;
    let key = auth
        .keys
        .verification_key(kid)
        .await
        .map_err(|e| {
            // the token may be fine: the keys could not be read (503 or 500, never 401)
            if crate::fhir::is_unavailable(&e) {
                tracing::warn!(target: "pdex::auth", error = %format!("{e:#}"), "cannot load signing keys: the database is unavailable");
                AuthFailure::Unavailable
            } else {
                tracing::error!(target: "pdex::auth", error = %e, "cannot load signing keys");
                AuthFailure::Internal
            }
        })?
        .ok_or_else(|| invalid("the token was not signed by a key of this server"))?;
    // access tokens are signed with the ES256 key only; the RS256 key signs id_tokens
    if header.alg != key.alg || key.alg != jsonwebtoken::Algorithm::ES256 {
        return Err(invalid("the token's alg does not match the server key"));
    }
    let mut v = Validation::new(key.alg);
    v.leeway = 5;
    v.set_audience(&[auth.settings.fhir_base.as_str()]);
    v.set_issuer(&[auth.settings.issuer()]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Value>(token, &key.decoding, &v).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        invalid(match e.kind() {
            ErrorKind::ExpiredSignature => "the token has expired",
            ErrorKind::InvalidAudience => "the token is for another audience",
            ErrorKind::InvalidIssuer => "the token is from another issuer",
            ErrorKind::InvalidSignature => "the token's signature does not verify",
            _ => "the token is not valid",
        })
    })?;
    claims_of(data.claims).map_err(AuthFailure::Invalid)
}

fn claims_of(raw: Value) -> Result<Claims, String> {
    let s = |k: &str| raw[k].as_str().map(str::to_owned);
    let bad = || "the token's claims are not ours".to_owned();
    let organization = s("pdex_org").and_then(|o| o.parse::<OrgIdentifier>().ok());
    Ok(Claims {
        client_id: s("client_id").ok_or_else(bad)?,
        kind: s("pdex_kind")
            .and_then(|k| ClientKind::parse(&k))
            .filter(|k| *k != ClientKind::Operator)
            .ok_or_else(bad)?,
        organization,
        scopes: scopes::split(&s("scope").unwrap_or_default()),
        patient: s("patient"),
        allow_sensitive: raw["pdex_sensitive"].as_bool().unwrap_or(false),
        consent_id: s("pdex_consent"),
        authorization_id: s("pdex_authorization"),
        cnf: raw["cnf"]["x5t#S256"].as_str().map(str::to_owned),
        jti: s("jti").ok_or_else(bad)?,
        iat: raw["iat"].as_i64().unwrap_or(0),
        exp: raw["exp"].as_i64().ok_or_else(bad)?,
        raw,
    })
}

impl Claims {
    /// The access context for this token (DESIGN.md §4, README "Who sees what"):
    /// - a member-scoped token sees its patient's compartment (plus shared resources);
    /// - an `admin` client's token sees everything, sensitive included, and may write when
    ///   its scopes allow;
    /// - any other client's token without a patient sees shared resources only (directory
    ///   data such as Organization and Practitioner); member data reaches payers and
    ///   providers through member-scoped tokens, their own Groups and exports.
    pub fn context(&self) -> AccessContext {
        let admin = self.kind == ClientKind::Admin;
        let scope = match (&self.patient, admin) {
            (Some(p), _) => DataScope::Patient(p.clone()),
            (None, true) => DataScope::All,
            (None, false) => DataScope::Patients(vec![]),
        };
        AccessContext {
            client_id: Some(self.client_id.clone()),
            kind: self.kind,
            organization: self.organization.clone(),
            scopes: self.scopes.clone(),
            scope,
            allow_sensitive: if self.patient.is_some() {
                self.allow_sensitive
            } else {
                admin
            },
            // the back office with write scopes; a member's own app with `patient/Consent.c`
            // (its writes limited to its member's compartment by `store::access::may_write`)
            can_write: scopes::any_write(&self.scopes)
                && ((admin && self.patient.is_none()) || self.authorization_id.is_some()),
            cert_thumbprint: self.cnf.clone(),
            grant: self.grant(),
        }
    }

    /// What this token's access stands on (`auth::liveness`): the token and, for a payer's
    /// member-scoped token, the stored consent it was issued on; for an app's token, the
    /// member's authorization.
    pub fn grant(&self) -> GrantRef {
        GrantRef {
            token_id: Some(self.jti.clone()),
            consent: self.patient.clone().zip(self.consent_id.clone()),
            authorization_id: self.authorization_id.clone(),
        }
    }
}
