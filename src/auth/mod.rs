//! Authorization: who is calling and what they may see. For now this module holds the
//! [`AccessContext`] every handler receives; the authorization server (tokens, clients,
//! SMART/UDAP) lands here with the authorization issue and will produce it from a token.

/// Which members' data a caller may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataScope {
    /// Every resource (the plan's own back office).
    All,
    /// Only resources in these patients' compartments, plus shared resources (those with no
    /// compartment owner, such as Practitioner and Organization).
    Patients(Vec<String>),
}

/// What the current caller may read and write. Built once per request; the store turns it
/// into SQL restrictions in exactly one place (`store::access`).
#[derive(Debug, Clone)]
pub struct AccessContext {
    pub client_id: Option<String>,
    pub scope: DataScope,
    /// May resources labelled sensitive be returned?
    pub allow_sensitive: bool,
    pub can_write: bool,
}

impl AccessContext {
    /// The operator: everything, sensitive included (CLI commands and, until the
    /// authorization server lands, the HTTP API).
    pub fn operator() -> Self {
        AccessContext {
            client_id: None,
            scope: DataScope::All,
            allow_sensitive: true,
            can_write: true,
        }
    }

    /// A read-only context limited to one member's compartment.
    pub fn member(patient_id: &str, allow_sensitive: bool) -> Self {
        AccessContext {
            client_id: None,
            scope: DataScope::Patients(vec![patient_id.to_owned()]),
            allow_sensitive,
            can_write: false,
        }
    }
}
