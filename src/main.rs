//! The `pdex` command line: parses arguments and calls into the library, nothing else.

use clap::{Args, Parser, Subcommand};
use pdex::config::{self, FileConfig, ServerConfig, pick};
use std::io::Write;
use std::path::PathBuf;

// Imports and searches allocate many small strings; mimalloc handles that far better than
// the system allocator (measured in BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "pdex",
    version,
    about = "A health plan's FHIR R4 server for the Da Vinci PDex exchanges"
)]
struct Cli {
    /// Configuration file (default: config/pdex.toml when it exists).
    #[arg(long, global = true, env = "PDEX_CONFIG")]
    config: Option<PathBuf>,
    /// Database: sqlite://PATH (default sqlite://./pdex-data/pdex.db) or postgres://…
    #[arg(long, global = true, env = "PDEX_DATABASE_URL")]
    database_url: Option<String>,
    /// Log format: text or json.
    #[arg(long, global = true, env = "PDEX_LOG_FORMAT")]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of `serve`'s arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the FHIR server.
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit.
    Migrate,
    /// Load NDJSON files, Bundle JSON files, or folders of them.
    Import(ImportArgs),
    /// Write a deterministic synthetic payer data set as NDJSON.
    Synth(SynthArgs),
    /// Register, list and disable OAuth clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Get an access token as a registered client: signs a private_key_jwt assertion with
    /// its key, asks the token endpoint and prints the token response JSON.
    Token(TokenArgs),
    /// The server's token-signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Stored payer-to-payer consents.
    #[command(subcommand)]
    Consent(ConsentCommand),
    /// Member logins for Patient Access (the member's own sign-in page).
    #[command(subcommand)]
    Member(MemberCommand),
    /// Certificates for development and tests.
    #[command(subcommand)]
    Certs(CertsCommand),
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register a client; prints JSON with its client_id (and its secret, once).
    Add(ClientAddArgs),
    /// List registered clients as JSON.
    List,
    /// Disable a client: its tokens stop working at once.
    Disable {
        /// The client to disable.
        client_id: String,
    },
    /// Enable a disabled client again.
    Enable {
        /// The client to enable.
        client_id: String,
    },
    /// Change a client's registered scopes or organization (e.g. a payer registered by DCR).
    Update {
        /// The client to change.
        client_id: String,
        /// The scopes it may be granted, space-separated (replaces the registered ones).
        #[arg(long)]
        scope: Option<String>,
        /// Its organization, SYSTEM|VALUE (consent recipients and Group owners match it).
        #[arg(long)]
        organization: Option<String>,
    },
}

#[derive(Args)]
struct ClientAddArgs {
    /// Display name.
    #[arg(long)]
    name: String,
    /// payer, provider, app or admin (admin: the plan's own back office; sees all data).
    #[arg(long)]
    kind: String,
    /// A JWK Set file with the client's public keys (private_key_jwt).
    #[arg(long, conflicts_with = "jwks_uri")]
    jwks: Option<PathBuf>,
    /// The URL of the client's JWK Set (private_key_jwt; preferred by SMART).
    #[arg(long)]
    jwks_uri: Option<String>,
    /// Issue a client secret (printed once).
    #[arg(long)]
    secret: bool,
    /// Redirect URI for the authorization code grant (repeatable).
    #[arg(long = "redirect-uri")]
    redirect_uris: Vec<String>,
    /// Space-separated scopes the client may be granted.
    #[arg(long, default_value = "")]
    scope: String,
    /// Organization identifier SYSTEM|VALUE (consent recipients, Group ownership).
    #[arg(long)]
    organization: Option<String>,
    /// SAN URI the client's certificate must carry (tls_client_auth, certificate binding).
    #[arg(long)]
    cert_san_uri: Option<String>,
}

#[derive(Args)]
struct TokenArgs {
    /// The client id.
    #[arg(long)]
    client: String,
    /// The client's private key: PEM, PKCS#8 EC P-384 (ES384) or P-256 (ES256), or RSA (RS384).
    #[arg(long)]
    key: PathBuf,
    /// Space-separated scopes to ask for (default: every registered scope).
    #[arg(long)]
    scope: Option<String>,
    /// The token endpoint (default: that of the configured base URL,
    /// http://127.0.0.1:8080/oauth/token without configuration).
    #[arg(long)]
    token_url: Option<String>,
    /// The key's `kid` in the client's registered JWK Set (default: the key's RFC 7638
    /// thumbprint, which the demo clients' JWK Sets use).
    #[arg(long)]
    kid: Option<String>,
    /// A member-scoped token (RFC 7523 JWT-bearer grant) for this member, `Patient/ID` or the
    /// member's UMB; a payer client whose organization the member's consent names.
    #[arg(long)]
    member: Option<String>,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a new signing key; the old ones stay published until their tokens expire.
    Rotate,
    /// List the signing keys.
    List,
}

#[derive(Subcommand)]
enum MemberCommand {
    /// Create or replace a member's login, or an authorized representative's; reads the
    /// password from stdin (one line).
    SetLogin {
        /// The member's Patient id (it must exist in the store).
        #[arg(
            long,
            required_unless_present = "related_person",
            conflicts_with = "related_person"
        )]
        patient: Option<String>,
        /// A representative's RelatedPerson id: its relationship (POWATT, DPOWATT, HPOWATT or
        /// GUARD) and patient decide whom the login may act for.
        #[arg(long)]
        related_person: Option<String>,
        /// The username the member signs in with.
        #[arg(long)]
        username: String,
    },
    /// Disable a login: it can no longer sign in, and the apps it authorized lose access.
    DisableLogin {
        #[arg(long)]
        username: String,
    },
}

#[derive(Subcommand)]
enum ConsentCommand {
    /// Revoke a member's consents for one requesting organization (the member withdrew it):
    /// member-scoped tokens and export jobs stop releasing their data.
    Revoke {
        /// Our Patient id of the member.
        #[arg(long)]
        patient: String,
        /// The requesting payer, SYSTEM|VALUE (e.g. http://hl7.org/fhir/sid/us-npi|0123456789).
        #[arg(long)]
        organization: String,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Write a development CA, a server certificate for localhost and two payer client
    /// certificates (with SAN URIs, keys and JWKS) into a folder.
    Dev {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// FHIR base URLs to put into the server certificate as SAN URIs (UDAP `iss`);
        /// repeatable (default: https://localhost:8443/fhir, https://localhost:9443/fhir and
        /// the same with 127.0.0.1).
        #[arg(long = "base-url")]
        base_urls: Vec<String>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, env = "PDEX_LISTEN")]
    listen: Option<String>,
    /// FHIR base URL as clients see it (default http://LISTEN/fhir).
    #[arg(long, env = "PDEX_BASE_URL")]
    base_url: Option<String>,
    /// Do not apply migrations on start.
    #[arg(long, env = "PDEX_NO_MIGRATE")]
    no_migrate: bool,
    /// Load the bundled demo data set into an empty store.
    #[arg(long)]
    demo: bool,
    /// Access-token lifetime in seconds (default 300).
    #[arg(long, env = "PDEX_TOKEN_LIFETIME")]
    token_lifetime: Option<u64>,
    /// We cannot segment sensitive data: a `#regular` (non-sensitive only) consent is then
    /// refused for members who have sensitive data.
    #[arg(long, env = "PDEX_NO_SEGMENTATION")]
    no_segmentation: bool,
    /// `$member-match` response profile: hrex-1.1 (MemberIdentifier + MemberId, default) or
    /// hrex-1.0 (MemberIdentifier only).
    #[arg(long, env = "PDEX_MEMBER_MATCH_PROFILE")]
    member_match_profile: Option<String>,
    /// Evaluate a payer's `$member-match` that carries no Consent instead of refusing it.
    #[arg(long, env = "PDEX_NO_CONSENT_REQUIRED")]
    no_consent_required: bool,
    /// `$everything` look-back window in years (default 5).
    #[arg(long, env = "PDEX_LOOKBACK_YEARS")]
    lookback_years: Option<u32>,
    /// Failed `$member-match` attempts allowed per client and per demographics in the window
    /// before 429 (default 10).
    #[arg(long, env = "PDEX_MATCH_FAILURE_LIMIT")]
    match_failure_limit: Option<u32>,
    /// The failed-match throttling window in seconds (default 900).
    #[arg(long, env = "PDEX_MATCH_FAILURE_WINDOW")]
    match_failure_window: Option<u64>,
    /// This plan's organization identifier, SYSTEM|VALUE (repeatable): the consent source and
    /// the CoverageToMatch payor we answer for.
    #[arg(
        long = "payer-identifier",
        env = "PDEX_PAYER_IDENTIFIERS",
        value_delimiter = ','
    )]
    payer_identifiers: Vec<String>,
    /// PDex rules where 2.1.0 and 2.2.0 differ: `2.1` (default; `$davinci-data-export`
    /// moves a `_since` older than five years up to five years, `$bulk-member-match` also
    /// writes the Parameters envelope) or `2.2` (`_since` never rewritten, Group files only).
    #[arg(long, env = "PDEX_PDEX_VERSION")]
    pdex_version: Option<String>,
    /// An origin browser apps may call the FHIR API and the OAuth endpoints from, e.g.
    /// `https://app.example.org` (repeatable; default: any origin, without credentials).
    #[arg(long = "cors-origin", env = "PDEX_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,
    #[command(flatten)]
    bulk: BulkArgs,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    patient_access: PatientAccessArgs,
}

/// Member sign-in and the authorization-code flow (each also a config key of the same name
/// with `_`).
#[derive(Args)]
struct PatientAccessArgs {
    /// Failed sign-ins of one username that lock it (default 5).
    #[arg(long, env = "PDEX_LOGIN_FAILURE_LIMIT")]
    login_failure_limit: Option<u32>,
    /// Seconds failed sign-ins count, and a locked login stays locked (default 900).
    #[arg(long, env = "PDEX_LOGIN_LOCKOUT_SECONDS")]
    login_lockout_seconds: Option<u64>,
    /// Authorization-code lifetime in seconds (default 60).
    #[arg(long, env = "PDEX_AUTHORIZATION_CODE_LIFETIME")]
    authorization_code_lifetime: Option<u64>,
}

impl PatientAccessArgs {
    fn resolve(self, file: &FileConfig) -> anyhow::Result<config::PatientAccessConfig> {
        let d = config::PatientAccessConfig::default();
        let resolved = config::PatientAccessConfig {
            login_failure_limit: pick(self.login_failure_limit, file.login_failure_limit, || {
                d.login_failure_limit
            }),
            login_lockout_seconds: pick(
                self.login_lockout_seconds,
                file.login_lockout_seconds,
                || d.login_lockout_seconds,
            ),
            authorization_code_lifetime: pick(
                self.authorization_code_lifetime,
                file.authorization_code_lifetime,
                || d.authorization_code_lifetime,
            ),
        };
        anyhow::ensure!(
            resolved.login_failure_limit >= 1,
            "--login-failure-limit must be at least 1"
        );
        anyhow::ensure!(
            resolved.login_lockout_seconds >= 1 && resolved.authorization_code_lifetime >= 1,
            "--login-lockout-seconds and --authorization-code-lifetime must be at least 1 second"
        );
        Ok(resolved)
    }
}

/// Bulk Data export settings (each also a `[bulk]` key in the configuration file).
#[derive(Args)]
struct BulkArgs {
    /// Folder for export files and spooled parts (default ./pdex-data/exports).
    #[arg(long, env = "PDEX_EXPORT_DIR")]
    export_dir: Option<PathBuf>,
    /// Close an export file part once it holds this many bytes (default 67108864).
    #[arg(long, env = "PDEX_EXPORT_FILE_SIZE_BYTES")]
    export_file_size_bytes: Option<u64>,
    /// Export jobs this process runs at once (default 2; 0 runs none).
    #[arg(long, env = "PDEX_EXPORT_WORKERS")]
    export_workers: Option<usize>,
    /// Seconds a completed export stays downloadable (default 3600).
    #[arg(long, env = "PDEX_EXPORT_EXPIRY_SECONDS")]
    export_expiry_seconds: Option<u64>,
    /// Queued or running exports per client before kick-offs get 429 (default 2).
    #[arg(long, env = "PDEX_EXPORT_MAX_JOBS_PER_CLIENT")]
    export_max_jobs_per_client: Option<usize>,
    /// Retry-After seconds for status polls (default 2).
    #[arg(long, env = "PDEX_EXPORT_POLL_INTERVAL_SECONDS")]
    export_poll_interval_seconds: Option<u64>,
    /// Seconds a running job's lease lasts before another worker may resume it (default 30).
    #[arg(long, env = "PDEX_EXPORT_LEASE_SECONDS")]
    export_lease_seconds: Option<u64>,
    /// File storage: `local` (default) or `s3://bucket/prefix`.
    #[arg(long, env = "PDEX_EXPORT_STORAGE")]
    export_storage: Option<String>,
}

impl BulkArgs {
    fn resolve(self, file: Option<&config::BulkFileConfig>) -> config::BulkConfig {
        let base = config::BulkConfig::from_file(file);
        config::BulkConfig {
            export_dir: self.export_dir.unwrap_or(base.export_dir),
            file_size_bytes: self.export_file_size_bytes.unwrap_or(base.file_size_bytes),
            workers: self.export_workers.unwrap_or(base.workers),
            expiry_seconds: self.export_expiry_seconds.unwrap_or(base.expiry_seconds),
            max_jobs_per_client: self
                .export_max_jobs_per_client
                .unwrap_or(base.max_jobs_per_client),
            poll_interval_seconds: self
                .export_poll_interval_seconds
                .unwrap_or(base.poll_interval_seconds),
            lease_seconds: self.export_lease_seconds.unwrap_or(base.lease_seconds),
            storage: self.export_storage.unwrap_or(base.storage),
        }
    }
}

/// Bounds on waits and costs (each also a config key of the same name with `_`, `_seconds`
/// for the timeouts).
#[derive(Args)]
struct LimitArgs {
    /// Longest wait for a pooled database connection, seconds, then 503 (default 5).
    #[arg(long, env = "PDEX_DB_ACQUIRE_TIMEOUT")]
    db_acquire_timeout: Option<u64>,
    /// Query parameters a search may carry (default 64); beyond, 400 too-costly.
    #[arg(long, env = "PDEX_SEARCH_MAX_PARAMETERS")]
    search_max_parameters: Option<usize>,
    /// `_sort` keys a search may carry (default 8); beyond, 400 too-costly.
    #[arg(long, env = "PDEX_SEARCH_MAX_SORT_KEYS")]
    search_max_sort_keys: Option<usize>,
    /// Longest a search may run, seconds (default 10); then 503.
    #[arg(long, env = "PDEX_SEARCH_TIMEOUT")]
    search_timeout: Option<u64>,
    /// Seconds a client has to send its request headers (default 10).
    #[arg(long, env = "PDEX_HEADER_READ_TIMEOUT")]
    header_read_timeout: Option<u64>,
    /// Seconds a client has to send its request body (default 60).
    #[arg(long, env = "PDEX_BODY_READ_TIMEOUT")]
    body_read_timeout: Option<u64>,
    /// Connections served at once per listener (default 10000).
    #[arg(long, env = "PDEX_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
}

impl LimitArgs {
    fn resolve(self, file: &FileConfig) -> config::LimitsConfig {
        let base = config::LimitsConfig::from_file(file);
        config::LimitsConfig {
            db_acquire_timeout_seconds: self
                .db_acquire_timeout
                .unwrap_or(base.db_acquire_timeout_seconds),
            search_max_parameters: self
                .search_max_parameters
                .unwrap_or(base.search_max_parameters),
            search_max_sort_keys: self
                .search_max_sort_keys
                .unwrap_or(base.search_max_sort_keys),
            search_timeout_seconds: self.search_timeout.unwrap_or(base.search_timeout_seconds),
            header_read_timeout_seconds: self
                .header_read_timeout
                .unwrap_or(base.header_read_timeout_seconds),
            body_read_timeout_seconds: self
                .body_read_timeout
                .unwrap_or(base.body_read_timeout_seconds),
            max_connections: self.max_connections.unwrap_or(base.max_connections),
        }
    }
}

/// TLS, the mTLS listener and UDAP (each also a config key of the same name with `_`).
#[derive(Args)]
struct TlsArgs {
    /// Serve the public listener over TLS with this certificate chain (PEM).
    #[arg(long, env = "PDEX_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "PDEX_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Also listen for mutual TLS on this address (client certificate required).
    #[arg(long, env = "PDEX_MTLS_LISTEN")]
    mtls_listen: Option<String>,
    /// FHIR base URL as clients see it on the mTLS listener (default https://MTLS_LISTEN/fhir).
    #[arg(long, env = "PDEX_MTLS_BASE_URL")]
    mtls_base_url: Option<String>,
    /// The trust framework's CA certificates (PEM bundle): client certificates and UDAP x5c
    /// chains must lead to one of them.
    #[arg(long, env = "PDEX_TRUST_ANCHORS")]
    trust_anchors: Option<PathBuf>,
    /// Certificate revocation list (PEM or DER); repeatable.
    #[arg(long)]
    crl: Vec<PathBuf>,
    /// UDAP signing certificate chain (PEM, RSA; default --tls-cert).
    #[arg(long, env = "PDEX_UDAP_CERT")]
    udap_cert: Option<PathBuf>,
    /// The private key of --udap-cert (default --tls-key).
    #[arg(long, env = "PDEX_UDAP_KEY")]
    udap_key: Option<PathBuf>,
    /// The UDAP trust community URI answered at /.well-known/udap?community=.
    #[arg(long, env = "PDEX_UDAP_COMMUNITY")]
    udap_community: Option<String>,
}

impl TlsArgs {
    fn resolve(self, file: &FileConfig) -> config::TlsConfig {
        config::TlsConfig {
            tls_cert: self.tls_cert.or(file.tls_cert.clone()),
            tls_key: self.tls_key.or(file.tls_key.clone()),
            mtls_listen: self.mtls_listen.or(file.mtls_listen.clone()),
            mtls_base_url: self.mtls_base_url.or(file.mtls_base_url.clone()),
            trust_anchors: self.trust_anchors.or(file.trust_anchors.clone()),
            crl: if self.crl.is_empty() {
                file.crl.clone().unwrap_or_default()
            } else {
                self.crl
            },
            udap_cert: self.udap_cert.or(file.udap_cert.clone()),
            udap_key: self.udap_key.or(file.udap_key.clone()),
            udap_community: self.udap_community.or(file.udap_community.clone()),
        }
    }
}

#[derive(Args)]
struct ImportArgs {
    /// Files or folders.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Stop at the first bad line and write nothing.
    #[arg(long)]
    strict: bool,
}

#[derive(Args)]
struct SynthArgs {
    /// Number of members.
    #[arg(long)]
    members: u64,
    /// Random seed (same seed, same files).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// First year of clinical history.
    #[arg(long, default_value_t = 2016)]
    start_year: i32,
    /// Share of members with sensitive data (0.0–1.0).
    #[arg(long, default_value_t = 0.1)]
    sensitive_share: f64,
}

fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("PDEX_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // ANSI colour only when stderr is a terminal: logs sent to a file or a collector stay
    // plain text.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pdex: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let file = FileConfig::load(cli.config.as_deref())?;
    let log_format = pick(cli.log_format.clone(), file.log_format.clone(), || {
        "text".into()
    });
    if !matches!(log_format.as_str(), "text" | "json") {
        anyhow::bail!("--log-format must be text or json, not {log_format:?}");
    }
    init_logging(&log_format);
    let database_url = pick(cli.database_url.clone(), file.database_url.clone(), || {
        config::DEFAULT_DATABASE_URL.into()
    });
    let labels = file.sensitive_labels.clone().unwrap_or_default();
    match cli.command {
        Command::Serve(args) => {
            let args = *args;
            let exchange = exchange_config(&args, &file)?;
            let listen = pick(args.listen, file.listen.clone(), || {
                config::DEFAULT_LISTEN.into()
            });
            let config = ServerConfig {
                database_url,
                base_url: pick(args.base_url, file.base_url.clone(), String::new),
                listen,
                migrate: !args.no_migrate && file.migrate.unwrap_or(true),
                sensitive_labels: labels,
                demo: args.demo,
                token_lifetime: pick(args.token_lifetime, file.token_lifetime, || {
                    pdex::config::DEFAULT_TOKEN_LIFETIME
                }),
                bulk: args.bulk.resolve(file.bulk.as_ref()),
                exchange,
                limits: args.limits.resolve(&file),
                patient_access: args.patient_access.resolve(&file)?,
                cors_origins: if args.cors_origins.is_empty() {
                    file.cors_origins.clone().unwrap_or_default()
                } else {
                    args.cors_origins
                },
            };
            if config.token_lifetime == 0 {
                anyhow::bail!("--token-lifetime must be at least 1 second");
            }
            let tls = args.tls.resolve(&file);
            let server = pdex::app::Server::bind_tls(&config, &tls).await?;
            if config.demo {
                pdex::demo::load(&server.state).await?;
            }
            tracing::info!(
                listen = %server.local_addr,
                base_url = %server.state.base_url,
                database = %redact(&config.database_url),
                "pdex serving"
            );
            eprintln!("pdex serving FHIR R4 at {}", server.state.base_url);
            if let Some(mtls) = &server.mtls {
                tracing::info!(listen = %mtls.local_addr, base_url = %mtls.base_url, "mTLS listener");
                eprintln!("pdex serving FHIR R4 over mTLS at {}", mtls.base_url);
            }
            server.run().await?;
        }
        Command::Consent(ConsentCommand::Revoke {
            patient,
            organization,
        }) => {
            let org = organization
                .parse::<pdex::identity::OrgIdentifier>()
                .map_err(|_| {
                    anyhow::anyhow!("--organization must be SYSTEM|VALUE, not {organization:?}")
                })?;
            let store = pdex::store::Store::open(&database_url, Default::default(), true).await?;
            let n = pdex::consent::stored::revoke(&store, &patient, &org).await?;
            store.db.close().await;
            println!("{}", serde_json::json!({"patient": patient, "revoked": n}));
        }
        Command::Migrate => {
            let store = pdex::store::Store::open(&database_url, Default::default(), true).await?;
            store.db.close().await;
            eprintln!("migrations applied to {}", redact(&database_url));
        }
        Command::Import(args) => {
            let sensitivity = if labels.is_empty() {
                Default::default()
            } else {
                pdex::store::sensitivity::SensitivityLabels::parse(
                    labels.iter().map(String::as_str),
                )?
            };
            let store = pdex::store::Store::open(&database_url, sensitivity, true).await?;
            let summary = pdex::import::import(
                &store,
                &args.paths,
                pdex::import::ImportOptions {
                    strict: args.strict,
                    progress: true,
                },
            )
            .await?;
            store.db.close().await;
            let _ = writeln!(std::io::stdout(), "{}", summary.line());
            if !summary.errors.is_empty() {
                return Ok(std::process::ExitCode::from(if args.strict {
                    1
                } else {
                    2
                }));
            }
        }
        Command::Certs(CertsCommand::Dev { out, base_urls }) => {
            let base_urls = if base_urls.is_empty() {
                pdex::certs::DEFAULT_BASE_URLS.map(str::to_owned).to_vec()
            } else {
                base_urls
            };
            let written = pdex::certs::write_dev_certs(&out, &base_urls)?;
            let mut stdout = std::io::stdout().lock();
            for f in written.files {
                let _ = writeln!(stdout, "{}", f.display());
            }
        }
        Command::Synth(args) => {
            let opts = pdex::synth::SynthOptions {
                members: args.members,
                seed: args.seed,
                out: args.out,
                start_year: args.start_year,
                sensitive_share: args.sensitive_share,
            };
            let started = std::time::Instant::now();
            let summary = tokio::task::spawn_blocking(move || pdex::synth::run(&opts)).await??;
            let total: u64 = summary.counts.iter().map(|(_, n)| n).sum();
            // Output may go to a closed pipe (`| head`); that is not an error worth a panic.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "wrote {total} resources for {} members in {:.1}s",
                args.members,
                started.elapsed().as_secs_f64()
            );
            for (rtype, n) in summary.counts {
                let _ = writeln!(out, "  {rtype:<28} {n}");
            }
        }
        Command::Client(cmd) => {
            let store = pdex::store::Store::open(&database_url, Default::default(), true).await?;
            let result = client_command(&store, cmd).await;
            store.db.close().await;
            return result;
        }
        Command::Token(args) => return token_command(args, &file).await,
        Command::Member(cmd) => {
            let store = pdex::store::Store::open(&database_url, Default::default(), true).await?;
            let result = member_command(&store, cmd).await;
            store.db.close().await;
            return result;
        }
        Command::Keys(cmd) => {
            let store = pdex::store::Store::open(&database_url, Default::default(), true).await?;
            let mut out = std::io::stdout().lock();
            match cmd {
                KeysCommand::Rotate => {
                    let kid = pdex::auth::keys::rotate(&store).await?;
                    let _ = writeln!(out, "{}", serde_json::json!({"kid": kid}));
                }
                KeysCommand::List => {
                    let keys: Vec<serde_json::Value> = pdex::auth::keys::list(&store)
                        .await?
                        .into_iter()
                        .map(|k| {
                            serde_json::json!({
                                "kid": k.kid, "alg": k.alg,
                                "created_at": pdex::fhir::datetime::format_instant(k.created_at),
                                "retired_at": k.retired_at.map(pdex::fhir::datetime::format_instant),
                            })
                        })
                        .collect();
                    let _ = writeln!(out, "{}", serde_json::Value::from(keys));
                }
            }
            store.db.close().await;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `pdex member …`: logins are read on every sign-in and every request of the apps they
/// authorized, so a change applies at once to a running server.
async fn member_command(
    store: &pdex::store::Store,
    cmd: MemberCommand,
) -> anyhow::Result<std::process::ExitCode> {
    use pdex::auth::logins;
    match cmd {
        MemberCommand::SetLogin {
            patient,
            related_person,
            username,
        } => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .map_err(|e| anyhow::anyhow!("cannot read the password from stdin: {e}"))?;
            let password = password.trim_end_matches(['\r', '\n']);
            let result = match (&patient, &related_person) {
                (Some(p), _) => logins::set_login(store, &username, p, password).await,
                (None, Some(rp)) => {
                    logins::set_representative_login(store, &username, rp, password).await
                }
                (None, None) => Err(logins::LoginError::Invalid(
                    "give --patient ID or --related-person ID".into(),
                )),
            };
            match result {
                Ok(login) => println!(
                    "{}",
                    serde_json::json!({"username": login.username, "patient": login.patient_id, "fhirUser": login.fhir_user})
                ),
                Err(logins::LoginError::Invalid(why)) => {
                    eprintln!("{why}");
                    return Ok(std::process::ExitCode::FAILURE);
                }
                Err(logins::LoginError::Store(e)) => return Err(e),
            }
        }
        MemberCommand::DisableLogin { username } => {
            if !logins::set_disabled(store, &username, true).await? {
                eprintln!("no login {username:?}");
                return Ok(std::process::ExitCode::FAILURE);
            }
            println!(
                "{}",
                serde_json::json!({"username": username.trim(), "disabled": true})
            );
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `pdex client …`: operator commands on the client registry (they work while `serve` runs
/// on the same database; the server reads clients on every use).
async fn client_command(
    store: &pdex::store::Store,
    cmd: ClientCommand,
) -> anyhow::Result<std::process::ExitCode> {
    use pdex::auth::clients;
    let mut out = std::io::stdout().lock();
    match cmd {
        ClientCommand::Add(a) => {
            let kind = pdex::identity::ClientKind::parse(&a.kind)
                .filter(|k| *k != pdex::identity::ClientKind::Operator)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--kind must be payer, provider, app or admin, not {:?}",
                        a.kind
                    )
                })?;
            let jwks = match &a.jwks {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                    Some(
                        serde_json::from_str(&text)
                            .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", path.display()))?,
                    )
                }
                None => None,
            };
            let organization = a
                .organization
                .as_deref()
                .map(clients::parse_organization)
                .transpose()?;
            let created = clients::create(
                store,
                clients::NewClient {
                    name: a.name,
                    kind: Some(kind),
                    jwks,
                    jwks_uri: a.jwks_uri,
                    organization,
                    scopes: pdex::identity::scopes::split(&a.scope),
                    cert_san_uri: a.cert_san_uri,
                    secret: a.secret,
                    redirect_uris: a.redirect_uris,
                    ..Default::default()
                },
            )
            .await?;
            let mut json = created.client.to_json();
            if let Some(secret) = created.secret {
                json["client_secret"] = serde_json::json!(secret);
            }
            let _ = writeln!(out, "{json}");
        }
        ClientCommand::List => {
            let list: Vec<serde_json::Value> = clients::list(store)
                .await?
                .iter()
                .map(clients::Client::to_json)
                .collect();
            let _ = writeln!(out, "{}", serde_json::Value::from(list));
        }
        ClientCommand::Disable { client_id } => {
            drop(out);
            return set_client_disabled(store, &client_id, true).await;
        }
        ClientCommand::Enable { client_id } => {
            drop(out);
            return set_client_disabled(store, &client_id, false).await;
        }
        ClientCommand::Update {
            client_id,
            scope,
            organization,
        } => {
            let Some(mut client) = clients::get(store, &client_id).await? else {
                eprintln!("pdex: no client {client_id:?}");
                return Ok(std::process::ExitCode::FAILURE);
            };
            if let Some(s) = scope {
                client.scopes = pdex::identity::scopes::split(&s);
            }
            if let Some(o) = organization {
                match clients::parse_organization(&o) {
                    Ok(org) => client.organization = Some(org),
                    Err(e) => {
                        eprintln!("pdex: {e}");
                        return Ok(std::process::ExitCode::FAILURE);
                    }
                }
            }
            match clients::update(store, &client).await {
                Ok(updated) => {
                    let _ = writeln!(out, "{}", updated.to_json());
                }
                Err(clients::ClientError::Invalid(e)) => {
                    eprintln!("pdex: {e}");
                    return Ok(std::process::ExitCode::FAILURE);
                }
                Err(clients::ClientError::Store(e)) => return Err(e),
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `pdex client disable|enable CLIENT_ID`: takes effect on the next request of any process
/// on the database.
async fn set_client_disabled(
    store: &pdex::store::Store,
    client_id: &str,
    disabled: bool,
) -> anyhow::Result<std::process::ExitCode> {
    if !pdex::auth::clients::set_disabled(store, client_id, disabled).await? {
        eprintln!("pdex: no client {client_id:?}");
        return Ok(std::process::ExitCode::FAILURE);
    }
    println!(
        "{}",
        serde_json::json!({"client_id": client_id, "disabled": disabled})
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// `pdex token`: one token request over HTTP; the response JSON goes to stdout either way,
/// and a refusal is exit code 1.
async fn token_command(
    args: TokenArgs,
    file: &FileConfig,
) -> anyhow::Result<std::process::ExitCode> {
    let token_url = match args.token_url {
        Some(u) => u,
        None => {
            let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            let listen = pick(env("PDEX_LISTEN"), file.listen.clone(), || {
                config::DEFAULT_LISTEN.into()
            });
            let base = pick(env("PDEX_BASE_URL"), file.base_url.clone(), || {
                config::default_base_url(&listen)
            });
            pdex::auth::AuthSettings::new(&base, 0).token_url()
        }
    };
    let key = pdex::auth::assertion::SigningKey::from_file(&args.key, args.kid.as_deref())?;
    let form = pdex::auth::assertion::token_form(
        &key,
        &args.client,
        &token_url,
        args.scope.as_deref(),
        args.member.as_deref(),
    )?;
    let resp = reqwest::Client::new()
        .post(&token_url)
        .header("Accept", "application/json")
        .form(&form)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the token endpoint {token_url}: {e}"))?;
    let status = resp.status();
    let body = resp.text().await?;
    let _ = writeln!(std::io::stdout(), "{}", body.trim_end());
    if status.is_success() {
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        eprintln!("pdex: the token endpoint {token_url} answered {status}");
        Ok(std::process::ExitCode::FAILURE)
    }
}

/// Payer-to-payer settings from flags, environment and the file.
fn exchange_config(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<config::ExchangeConfig> {
    let d = config::ExchangeConfig::default();
    let profile = pick(
        args.member_match_profile.clone(),
        file.member_match_profile.clone(),
        || "hrex-1.1".into(),
    );
    let payer_identifiers = if !args.payer_identifiers.is_empty() {
        args.payer_identifiers.clone()
    } else {
        file.payer_identifiers
            .clone()
            .unwrap_or(d.payer_identifiers)
    };
    for id in &payer_identifiers {
        if !id.contains('|') {
            anyhow::bail!("--payer-identifier {id:?} is not SYSTEM|VALUE");
        }
    }
    Ok(config::ExchangeConfig {
        segmentation: !args.no_segmentation && file.segmentation.unwrap_or(true),
        member_match_profile: config::MemberMatchProfile::parse(&profile)?,
        consent_required: !args.no_consent_required && file.consent_required.unwrap_or(true),
        lookback_years: pick(args.lookback_years, file.lookback_years, || {
            d.lookback_years
        }),
        match_failure_limit: pick(args.match_failure_limit, file.match_failure_limit, || {
            d.match_failure_limit
        }),
        match_failure_window_seconds: pick(
            args.match_failure_window,
            file.match_failure_window_seconds,
            || d.match_failure_window_seconds,
        ),
        payer_identifiers,
        pdex_version: match args.pdex_version.clone().or(file.pdex_version.clone()) {
            Some(v) => config::PdexVersion::parse(&v)?,
            None => d.pdex_version,
        },
    })
}

/// A database URL without its password, for logs.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}
