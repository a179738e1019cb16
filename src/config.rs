//! Typed configuration. Precedence, lowest first: built-in defaults < the TOML file
//! (`--config FILE`, else `config/pdex.toml` when present) < `PDEX_*` environment variables <
//! command-line flags. clap reads flags and environment together; the file fills what both
//! leave unset.

use anyhow::Context;
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_DATABASE_URL: &str = "sqlite://./pdex-data/pdex.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_CONFIG_FILE: &str = "config/pdex.toml";

/// The configuration file's keys (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub database_url: Option<String>,
    pub listen: Option<String>,
    pub base_url: Option<String>,
    pub log_format: Option<String>,
    pub migrate: Option<bool>,
    /// `system|code` meta.security labels that mark a resource sensitive.
    pub sensitive_labels: Option<Vec<String>>,
    /// TLS for the public listener (PEM).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The mTLS listener's address; with it, `trust_anchors` is required.
    pub mtls_listen: Option<String>,
    /// The FHIR base as clients see it on the mTLS listener.
    pub mtls_base_url: Option<String>,
    /// PEM bundle of the trust framework's CA certificates (mTLS and UDAP `x5c`).
    pub trust_anchors: Option<PathBuf>,
    /// CRL files (PEM or DER).
    pub crl: Option<Vec<PathBuf>>,
    /// UDAP signing certificate chain and key (default: the TLS certificate and key).
    pub udap_cert: Option<PathBuf>,
    pub udap_key: Option<PathBuf>,
    /// The UDAP trust community URI answered at `/.well-known/udap?community=`.
    pub udap_community: Option<String>,
    /// Access-token lifetime in seconds (default 300).
    pub token_lifetime: Option<u64>,
}

impl FileConfig {
    /// Reads `path`, or `config/pdex.toml` if no path was given and it exists.
    pub fn load(path: Option<&Path>) -> anyhow::Result<FileConfig> {
        let path: PathBuf = match path {
            Some(p) => p.to_owned(),
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_FILE);
                if !default.exists() {
                    return Ok(FileConfig::default());
                }
                default
            }
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("invalid configuration file {}", path.display()))
    }
}

/// The resolved server configuration.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    pub database_url: String,
    pub listen: String,
    /// FHIR base URL as clients see it, without a trailing slash.
    pub base_url: String,
    pub migrate: bool,
    pub sensitive_labels: Vec<String>,
    pub demo: bool,
    /// Access-token lifetime, seconds (`--token-lifetime`); 0 means the default (300).
    pub token_lifetime: u64,
}

/// Transport and trust framework settings (`serve --tls-cert …`, config keys of the same
/// names). All optional: with none of them the server speaks plain HTTP on one listener.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub mtls_listen: Option<String>,
    /// Default `https://MTLS_LISTEN/fhir` (the real port when listening on port 0).
    pub mtls_base_url: Option<String>,
    pub trust_anchors: Option<PathBuf>,
    pub crl: Vec<PathBuf>,
    pub udap_cert: Option<PathBuf>,
    pub udap_key: Option<PathBuf>,
    /// The UDAP trust community URI answered at `/.well-known/udap?community=`.
    pub udap_community: Option<String>,
}

/// Picks the first value that is set.
pub fn pick<T>(flag_or_env: Option<T>, file: Option<T>, default: impl FnOnce() -> T) -> T {
    flag_or_env.or(file).unwrap_or_else(default)
}

/// The default FHIR base for a listen address.
pub fn default_base_url(listen: &str) -> String {
    format!("http://{listen}/fhir")
}

/// The default FHIR base for a TLS listen address.
pub fn default_tls_base_url(listen: &str) -> String {
    format!("https://{listen}/fhir")
}
