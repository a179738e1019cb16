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

/// Picks the first value that is set.
pub fn pick<T>(flag_or_env: Option<T>, file: Option<T>, default: impl FnOnce() -> T) -> T {
    flag_or_env.or(file).unwrap_or_else(default)
}

/// The default FHIR base for a listen address.
pub fn default_base_url(listen: &str) -> String {
    format!("http://{listen}/fhir")
}
