//! Who is calling and how they came in: the identity and access types every layer shares.
//!
//! [`AccessContext`] (which client, which members' data, the scopes granted, the sensitive
//! allowance, what its access stands on), [`DataScope`], [`ClientKind`], [`OrgIdentifier`],
//! [`Interaction`], the verified mTLS [`ClientCertificate`], the [`ListenerInfo`] a request
//! arrived on, and the SMART scope grammar (`scopes`). Only the authorization server (`auth`)
//! *builds* an [`AccessContext`] from a token; `store`, `consent`, `bulk` and the operations
//! read it.
//!
//! A leaf: depends on nothing of ours, so every layer may use it.

pub mod scopes;

/// Which members' data a caller may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataScope {
    /// Every resource (the plan's own back office).
    All,
    /// A patient-scoped token (a member token, later a SMART patient launch): that member's
    /// compartment plus shared resources, read under the token's `patient/` scopes.
    Patient(String),
    /// A system client narrowed to these members (a payer's Group export, a job's share of
    /// its members): their compartments plus shared resources, read under the client's
    /// `system/` scopes however many members the list holds.
    Patients(Vec<String>),
}

impl DataScope {
    /// The members whose compartments are in reach; `None` for every member.
    pub fn members(&self) -> Option<&[String]> {
        match self {
            DataScope::All => None,
            DataScope::Patient(id) => Some(std::slice::from_ref(id)),
            DataScope::Patients(ids) => Some(ids),
        }
    }
}

/// What kind of client is calling (DESIGN.md §5 `pdex client add --kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKind {
    /// Another health plan (payer-to-payer).
    Payer,
    /// A provider or its EHR (provider access).
    Provider,
    /// A member's app (patient access).
    App,
    /// The plan's own back-office systems: system scopes over all data, sensitive included.
    Admin,
    /// In-process callers: CLI commands and jobs acting for the operator.
    Operator,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Payer => "payer",
            ClientKind::Provider => "provider",
            ClientKind::App => "app",
            ClientKind::Admin => "admin",
            ClientKind::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<ClientKind> {
        Some(match s {
            "payer" => ClientKind::Payer,
            "provider" => ClientKind::Provider,
            "app" => ClientKind::App,
            "admin" => ClientKind::Admin,
            "operator" => ClientKind::Operator,
            _ => return None,
        })
    }
}

/// An organization identifier (`system|value`), e.g. a payer's NPI or NAIC code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrgIdentifier {
    pub system: String,
    pub value: String,
}

/// `SYSTEM|VALUE`, the token-search form used in configuration, CLI flags and Group
/// ownership keys. Both parts must be non-empty; the value may itself contain `|`.
impl std::str::FromStr for OrgIdentifier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('|') {
            Some((system, value)) if !system.is_empty() && !value.is_empty() => Ok(OrgIdentifier {
                system: system.to_owned(),
                value: value.to_owned(),
            }),
            _ => Err(format!(
                "expected an organization identifier as SYSTEM|VALUE, got {s:?}"
            )),
        }
    }
}

impl std::fmt::Display for OrgIdentifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}|{}", self.system, self.value)
    }
}

/// A FHIR interaction a scope may allow (SMART v2 `c r u d s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

/// What a context's access stands on, re-checked on every request and whenever a job that
/// runs with it starts or resumes (`auth::liveness`): the token, and for a member-scoped
/// token the stored consent that authorized it. Empty for in-process contexts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantRef {
    /// The access token's `jti`.
    pub token_id: Option<String>,
    /// `(patient_id, consent id)` in `member_consents` (a payer's member-scoped token).
    pub consent: Option<(String, String)>,
    /// The member's authorization in `member_authorizations` (a token from the authorization-code
    /// flow: Patient Access).
    pub authorization_id: Option<String>,
}

/// What the current caller may read and write. Built once per request; the store turns it
/// into SQL restrictions in exactly one place (`store::access`).
#[derive(Debug, Clone)]
pub struct AccessContext {
    /// The authenticated client (`None` for in-process operator work).
    pub client_id: Option<String>,
    pub kind: ClientKind,
    /// The client's organization (consent recipients and Group ownership are checked
    /// against it).
    pub organization: Option<OrgIdentifier>,
    /// The scopes granted to the token, as strings (`system/*.rs`, operation URLs, …).
    pub scopes: Vec<String>,
    pub scope: DataScope,
    /// May resources labelled sensitive be returned?
    pub allow_sensitive: bool,
    pub can_write: bool,
    /// SHA-256 thumbprint (base64url, no padding) of the client certificate the token is
    /// bound to, when it was issued over mTLS.
    pub cert_thumbprint: Option<String>,
    /// What must stay live for this access to last (client, token, consent).
    pub grant: GrantRef,
}

impl AccessContext {
    /// The operator: everything, sensitive included (CLI commands and in-process work).
    pub fn operator() -> Self {
        AccessContext {
            client_id: None,
            kind: ClientKind::Operator,
            organization: None,
            scopes: vec!["system/*.*".into()],
            scope: DataScope::All,
            allow_sensitive: true,
            can_write: true,
            cert_thumbprint: None,
            grant: GrantRef::default(),
        }
    }

    /// A read-only context limited to one member's compartment.
    pub fn member(patient_id: &str, allow_sensitive: bool) -> Self {
        AccessContext {
            client_id: None,
            kind: ClientKind::Operator,
            organization: None,
            scopes: vec!["patient/*.rs".into()],
            scope: DataScope::Patient(patient_id.to_owned()),
            allow_sensitive,
            can_write: false,
            cert_thumbprint: None,
            grant: GrantRef::default(),
        }
    }

    /// The one patient this context is limited to, if it is patient-scoped.
    pub fn patient(&self) -> Option<&str> {
        match &self.scope {
            DataScope::Patient(id) => Some(id),
            _ => None,
        }
    }

    /// The scope contexts that count for this caller: `patient/` (and `user/`) scopes for a
    /// patient-scoped token, `system/` (and `user/`) scopes otherwise.
    fn scope_contexts(&self) -> &'static [scopes::Context] {
        if self.patient().is_some() {
            &[scopes::Context::Patient, scopes::Context::User]
        } else {
            &[scopes::Context::System, scopes::Context::User]
        }
    }

    /// Does a granted scope allow `interaction` on `rtype` (SMART v1 `.read`/`.write`/`.*`,
    /// v2 `.cruds`)? Operator contexts allow all; every other kind, admin included, only
    /// what its token's scopes say.
    pub fn allows(&self, rtype: &str, interaction: Interaction) -> bool {
        if self.kind == ClientKind::Operator {
            return true;
        }
        let perm = match interaction {
            Interaction::Create => scopes::C,
            Interaction::Read => scopes::R,
            Interaction::Update => scopes::U,
            Interaction::Delete => scopes::D,
            Interaction::Search => scopes::S,
        };
        scopes::allows(&self.scopes, self.scope_contexts(), rtype, perm)
    }

    /// The resource types this caller may read or search; `None` means all. `store::access`
    /// turns it into SQL, so `_include`d and exported resources obey it too.
    pub fn readable_types(&self) -> Option<Vec<String>> {
        if self.kind == ClientKind::Operator {
            return None;
        }
        scopes::readable_types(&self.scopes, self.scope_contexts())
    }

    /// The types this caller reads only through granular scopes, with their queries
    /// (`scopes::granular_reads`); `store::access` turns them into row conditions.
    pub fn granular_reads(&self) -> Vec<(String, Vec<String>)> {
        if self.kind == ClientKind::Operator {
            return Vec::new();
        }
        scopes::granular_reads(&self.scopes, self.scope_contexts())
    }

    /// Was the operation scope `canonical` (e.g. [`scopes::MEMBER_MATCH`]) granted? Both
    /// bulk-member-match spellings and PDex's `system.Group.u?…` form are accepted.
    /// Operator contexts have every operation.
    pub fn has_operation(&self, canonical: &str) -> bool {
        self.kind == ClientKind::Operator || scopes::has_operation(&self.scopes, canonical)
    }
}

/// The verified TLS client certificate of the connection a request came on (mTLS listener
/// only). The listener puts it into each request's extensions; the token endpoint, dynamic
/// registration and the resource server's certificate-binding check read it from there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The leaf certificate, DER.
    pub der: Vec<u8>,
    /// Subject distinguished name, RFC 4514 text.
    pub subject: String,
    /// `uniformResourceIdentifier` subject alternative names.
    pub san_uris: Vec<String>,
    /// base64url (no padding) SHA-256 of `der`: the RFC 8705 `x5t#S256` value.
    pub thumbprint: String,
}

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// The public listener (plain HTTP or server-authenticated TLS).
    Public,
    /// The mTLS listener: every request carries a verified [`ClientCertificate`].
    Mtls,
}

/// Put into every request's extensions by the listener it came on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerInfo {
    pub kind: ListenerKind,
    /// The FHIR base URL as clients see it on this listener, without a trailing slash.
    pub base_url: String,
}

impl ListenerInfo {
    /// The URL of an OAuth endpoint (`token`, `register`, …) as clients see it on this
    /// listener: the FHIR base with its last `/fhir` segment replaced by `/oauth/{endpoint}`
    /// (DESIGN.md §5: OAuth endpoints under `/oauth/`). A client assertion's `aud` must be
    /// the token URL of the listener the request came on (SMART backend services, RFC 7523
    /// §3).
    pub fn oauth_url(&self, endpoint: &str) -> String {
        let root = self
            .base_url
            .strip_suffix("/fhir")
            .unwrap_or(&self.base_url);
        format!("{root}/oauth/{endpoint}")
    }
}
