//! Typed configuration. Precedence, lowest first: built-in defaults < the TOML file
//! (`--config FILE`, else `config/pdex.toml` when present) < `PDEX_*` environment variables <
//! command-line flags. clap reads flags and environment together; the file fills what both
//! leave unset.

use anyhow::Context;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Default access-token lifetime, seconds (SMART Backend Services: `expires_in` SHOULD NOT
/// exceed 300).
pub const DEFAULT_TOKEN_LIFETIME: u64 = 300;
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./pdex-data/pdex.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_CONFIG_FILE: &str = "config/pdex.toml";
pub const DEFAULT_EXPORT_DIR: &str = "./pdex-data/exports";

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
    // Payer-to-payer settings (`$member-match`, consent, `$everything`; see ExchangeConfig).
    /// `false` = we cannot segment sensitive data (`--no-segmentation`).
    pub segmentation: Option<bool>,
    /// `hrex-1.0` or `hrex-1.1` (`--member-match-profile`).
    pub member_match_profile: Option<String>,
    /// `false` = a payer's `$member-match` without Consent is evaluated without one.
    pub consent_required: Option<bool>,
    /// `$everything` look-back window in years (`--lookback-years`).
    pub lookback_years: Option<u32>,
    /// Failed matches allowed per client, and per demographics, within the window.
    pub match_failure_limit: Option<u32>,
    pub match_failure_window_seconds: Option<u64>,
    /// This plan's organization identifiers, `system|value` (consent source, CoverageToMatch payor).
    pub payer_identifiers: Option<Vec<String>>,
    /// `2.1` (default) or `2.2` (`--pdex-version`).
    pub pdex_version: Option<String>,
    /// Bounds on waits and costs (`LimitsConfig`; each a top-level key of the same name).
    pub db_acquire_timeout_seconds: Option<u64>,
    pub search_max_parameters: Option<usize>,
    pub search_max_sort_keys: Option<usize>,
    pub search_timeout_seconds: Option<u64>,
    pub header_read_timeout_seconds: Option<u64>,
    pub body_read_timeout_seconds: Option<u64>,
    pub max_connections: Option<usize>,
    /// Origins browser apps may call the API from (empty or absent: any origin).
    pub cors_origins: Option<Vec<String>>,
    /// Member sign-in (`PatientAccessConfig`; each a top-level key of the same name).
    pub login_failure_limit: Option<u32>,
    pub login_lockout_seconds: Option<u64>,
    pub authorization_code_lifetime: Option<u64>,
    /// Bulk Data export engine settings (`[bulk]` table).
    pub bulk: Option<BulkFileConfig>,
}

/// The `[bulk]` table of the configuration file; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkFileConfig {
    pub export_dir: Option<PathBuf>,
    pub file_size_bytes: Option<u64>,
    pub workers: Option<usize>,
    pub expiry_seconds: Option<u64>,
    pub max_jobs_per_client: Option<usize>,
    pub poll_interval_seconds: Option<u64>,
    pub lease_seconds: Option<u64>,
    pub storage: Option<String>,
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
#[derive(Debug, Clone)]
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
    pub bulk: BulkConfig,
    pub exchange: ExchangeConfig,
    pub limits: LimitsConfig,
    /// Origins browser apps may call the FHIR API and the OAuth endpoints from
    /// (`--cors-origin`); empty: any origin, without credentials (`server::cors`).
    pub cors_origins: Vec<String>,
    pub patient_access: PatientAccessConfig,
}

/// Patient Access: the member's sign-in and the authorization-code flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatientAccessConfig {
    /// Failed sign-ins of one username within `login_lockout_seconds` that lock it
    /// (`--login-failure-limit`, default 5).
    pub login_failure_limit: u32,
    /// How long failures count, and so how long a locked login stays locked
    /// (`--login-lockout-seconds`, default 900).
    pub login_lockout_seconds: u64,
    /// Authorization-code lifetime in seconds (`--authorization-code-lifetime`, default 60;
    /// SMART: "short-lived, usually expiring within around one minute").
    pub authorization_code_lifetime: u64,
}

impl Default for PatientAccessConfig {
    fn default() -> Self {
        PatientAccessConfig {
            login_failure_limit: 5,
            login_lockout_seconds: 900,
            authorization_code_lifetime: 60,
        }
    }
}

/// Every wait and every cost a client can cause is bounded (issue 15): pooled connections,
/// search size and time, slow clients, connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Longest wait for a pooled database connection; then 503 (`db_acquire_timeout_seconds`).
    pub db_acquire_timeout_seconds: u64,
    /// Query parameters a search may carry; beyond, 400 `too-costly`.
    pub search_max_parameters: usize,
    /// `_sort` keys a search may carry; beyond, 400 `too-costly`.
    pub search_max_sort_keys: usize,
    /// Longest a search may run; then it is cancelled and answered 503.
    pub search_timeout_seconds: u64,
    /// A client must send its request headers within this many seconds.
    pub header_read_timeout_seconds: u64,
    /// ... and its request body within this many.
    pub body_read_timeout_seconds: u64,
    /// Open connections served at once per listener; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            db_acquire_timeout_seconds: 5,
            search_max_parameters: 64,
            search_max_sort_keys: 8,
            search_timeout_seconds: 10,
            header_read_timeout_seconds: 10,
            body_read_timeout_seconds: 60,
            max_connections: 10_000,
        }
    }
}

impl LimitsConfig {
    /// The file's values over the defaults.
    pub fn from_file(file: &FileConfig) -> LimitsConfig {
        let d = LimitsConfig::default();
        LimitsConfig {
            db_acquire_timeout_seconds: file
                .db_acquire_timeout_seconds
                .unwrap_or(d.db_acquire_timeout_seconds),
            search_max_parameters: file
                .search_max_parameters
                .unwrap_or(d.search_max_parameters),
            search_max_sort_keys: file.search_max_sort_keys.unwrap_or(d.search_max_sort_keys),
            search_timeout_seconds: file
                .search_timeout_seconds
                .unwrap_or(d.search_timeout_seconds),
            header_read_timeout_seconds: file
                .header_read_timeout_seconds
                .unwrap_or(d.header_read_timeout_seconds),
            body_read_timeout_seconds: file
                .body_read_timeout_seconds
                .unwrap_or(d.body_read_timeout_seconds),
            max_connections: file.max_connections.unwrap_or(d.max_connections),
        }
    }
}

/// Resolved settings of the Bulk Data export engine (the `bulk` module).
#[derive(Debug, Clone)]
pub struct BulkConfig {
    /// Where finished export files are kept (local storage) and parts are spooled.
    pub export_dir: PathBuf,
    /// A file part is closed once it holds at least this many bytes.
    pub file_size_bytes: u64,
    /// Export jobs run at once in this process (0: this process runs none).
    pub workers: usize,
    /// How long a completed export's files stay downloadable.
    pub expiry_seconds: u64,
    /// Queued or running exports one client may have; the next kick-off gets 429.
    pub max_jobs_per_client: usize,
    /// `Retry-After` for status polls; a poll sooner than half of it gets 429.
    pub poll_interval_seconds: u64,
    /// A running job's lease; a job whose lease runs out (its process died) is resumed by
    /// another worker.
    pub lease_seconds: u64,
    /// `local` (default) or an object store URL such as `s3://bucket/prefix`.
    pub storage: String,
}

impl Default for BulkConfig {
    fn default() -> Self {
        BulkConfig {
            export_dir: PathBuf::from(DEFAULT_EXPORT_DIR),
            file_size_bytes: 64 * 1024 * 1024,
            workers: 2,
            expiry_seconds: 3600,
            max_jobs_per_client: 2,
            poll_interval_seconds: 2,
            lease_seconds: 30,
            storage: "local".into(),
        }
    }
}

impl BulkConfig {
    /// Settings from the file's `[bulk]` table over the defaults.
    pub fn from_file(file: Option<&BulkFileConfig>) -> BulkConfig {
        let d = BulkConfig::default();
        let Some(f) = file else { return d };
        BulkConfig {
            export_dir: f.export_dir.clone().unwrap_or(d.export_dir),
            file_size_bytes: f.file_size_bytes.unwrap_or(d.file_size_bytes),
            workers: f.workers.unwrap_or(d.workers),
            expiry_seconds: f.expiry_seconds.unwrap_or(d.expiry_seconds),
            max_jobs_per_client: f.max_jobs_per_client.unwrap_or(d.max_jobs_per_client),
            poll_interval_seconds: f.poll_interval_seconds.unwrap_or(d.poll_interval_seconds),
            lease_seconds: f.lease_seconds.unwrap_or(d.lease_seconds),
            storage: f.storage.clone().unwrap_or(d.storage),
        }
    }
}

/// Which HRex `$member-match` response profile to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberMatchProfile {
    /// HRex 1.0.0 (the Inferno PDex test kit): `MemberIdentifier` only.
    Hrex10,
    /// HRex 1.1.0 / 1.2.0: `MemberIdentifier` and `MemberId` (§pdex-198/199).
    Hrex11,
}

impl MemberMatchProfile {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "hrex-1.0" => Ok(MemberMatchProfile::Hrex10),
            "hrex-1.1" => Ok(MemberMatchProfile::Hrex11),
            other => {
                anyhow::bail!("--member-match-profile must be hrex-1.0 or hrex-1.1, not {other:?}")
            }
        }
    }
}

/// Which PDex release's rules to follow where they differ (`--pdex-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PdexVersion {
    /// PDex 2.1.0 (STU2, the seed pages): `_since` clamped to five years.
    #[default]
    V21,
    /// PDex 2.2.0: `_since` never rewritten.
    V22,
}

impl PdexVersion {
    pub fn parse(s: &str) -> anyhow::Result<PdexVersion> {
        match s {
            "2.1" | "2.1.0" => Ok(PdexVersion::V21),
            "2.2" | "2.2.0" => Ok(PdexVersion::V22),
            other => anyhow::bail!("--pdex-version must be 2.1 or 2.2, not {other:?}"),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            PdexVersion::V21 => "2.1",
            PdexVersion::V22 => "2.2",
        }
    }
}

/// The default identity of "us" when none is configured: the NPI of the synthetic and demo
/// data sets' plan (Old Health Plan, also the old payer of the HRex examples).
pub const DEFAULT_PAYER_IDENTIFIER: &str = "http://hl7.org/fhir/sid/us-npi|9876543210";

/// Payer-to-payer behaviour: `$member-match`, consent evaluation, `$everything`.
#[derive(Debug, Clone)]
pub struct ExchangeConfig {
    /// Can we separate sensitive data (meta.security labels)? When not, a `#regular`
    /// consent cannot be complied with for a member who has sensitive data (PDex decision flow).
    pub segmentation: bool,
    pub member_match_profile: MemberMatchProfile,
    /// Refuse a payer's `$member-match` without a Consent ("consent required", §pdex-138/140).
    pub consent_required: bool,
    pub lookback_years: u32,
    /// HRex mm-7: failed matches allowed per client / per demographics within the window.
    pub match_failure_limit: u32,
    pub match_failure_window_seconds: u64,
    /// This plan's organization identifiers (`system|value`).
    pub payer_identifiers: Vec<String>,
    /// `--pdex-version`: the `$davinci-data-export` `_since` rule and whether
    /// `$bulk-member-match` also writes the 2.1.0 Parameters envelope.
    pub pdex_version: PdexVersion,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        ExchangeConfig {
            segmentation: true,
            member_match_profile: MemberMatchProfile::Hrex11,
            consent_required: true,
            lookback_years: 5,
            match_failure_limit: 10,
            match_failure_window_seconds: 900,
            payer_identifiers: vec![DEFAULT_PAYER_IDENTIFIER.to_owned()],
            pdex_version: PdexVersion::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            listen: DEFAULT_LISTEN.to_owned(),
            base_url: String::new(),
            migrate: true,
            sensitive_labels: vec![],
            demo: false,
            bulk: BulkConfig::default(),
            exchange: ExchangeConfig::default(),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            limits: LimitsConfig::default(),
            cors_origins: Vec::new(),
            patient_access: PatientAccessConfig::default(),
        }
    }
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
