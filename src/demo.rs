//! `serve --demo`: the demo plan, embedded in the binary so that an installed `pdex` runs it
//! without the source checkout — the 30-member synthetic data set (`fixtures/demo/`), the
//! demo clients' private keys (`fixtures/demo-clients/`) and the ready-to-send requests
//! (`examples/`).
//!
//! On start it loads the data into an empty store, registers the demo clients (a payer — the
//! HRex example's requesting "New Health Plan", a provider organization and a write-capable
//! admin, each with a fixed client id and the public half of its shipped key), writes the
//! keys and examples to `{export_dir}/demo/` and prints a banner whose commands work as
//! printed. The keys are public: `--demo` is for a demo database only.
//!
//! For Patient Access it registers a public app (`demo-app`, PKCE only) and sets member
//! logins for the first demo members (password [`DEMO_PASSWORD`]); the banner prints them
//! with an authorize URL whose PKCE verifier it also prints.

use crate::auth::assertion::SigningKey;
use crate::auth::clients;
use crate::identity::{ClientKind, scopes};
use crate::import::{ImportOptions, InputFile};
use crate::web::AppState;
use anyhow::Context;
use include_dir::{Dir, include_dir};
use serde_json::Value;
use std::path::{Path, PathBuf};

static DATA: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/fixtures/demo");
static CLIENT_KEYS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/fixtures/demo-clients");
static EXAMPLES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/examples");

/// The demo payer's organization: the HRex `$member-match` example's requesting payer.
pub const PAYER_ORGANIZATION: &str = "http://hl7.org/fhir/sid/us-npi|0123456789";
/// The demo provider organization (Lakeside Family Medicine in the demo data).
pub const PROVIDER_ORGANIZATION: &str = "http://hl7.org/fhir/sid/us-npi|2080237292";

/// The demo member-app: a public client (PKCE only) for the Patient Access walk-through.
pub const DEMO_APP_ID: &str = "demo-app";
/// Its redirect URI (nothing listens there: the browser shows the code in the address bar).
pub const DEMO_APP_REDIRECT: &str = "http://127.0.0.1:8099/callback";
/// The password of the demo member logins (public: demo databases only).
pub const DEMO_PASSWORD: &str = "demo-password";
/// How many demo members get a login (`member1`, `member2`, …).
pub const DEMO_LOGINS: usize = 3;
/// The demo authorized representatives (username, RelatedPerson id): a mother and guardian
/// of two minors in one household, and a durable power of attorney for an adult.
pub const DEMO_REPRESENTATIVES: [(&str, &str); 2] = [
    ("guardian1", "rp-m000001-m000003"),
    ("poa1", "rp-m000008-m000007"),
];
/// The PKCE verifier of the banner's authorize URL.
const DEMO_VERIFIER: &str = "pdex-demo-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";

/// A demo client: fixed id, what it is, and the file name of its key in the demo kit.
#[derive(Debug, Clone)]
pub struct DemoClient {
    pub client_id: &'static str,
    pub name: &'static str,
    pub kind: ClientKind,
    pub organization: Option<&'static str>,
    pub scopes: String,
    /// `payer.pem`, `provider.pem`, `admin.pem`.
    pub key_file: &'static str,
}

impl DemoClient {
    /// The client's signing key (embedded).
    pub fn key(&self) -> anyhow::Result<SigningKey> {
        let pem = CLIENT_KEYS
            .get_file(self.key_file)
            .with_context(|| format!("the demo key {} is not embedded", self.key_file))?;
        SigningKey::from_pem(pem.contents(), None)
    }
}

/// The three demo clients.
pub fn clients() -> Vec<DemoClient> {
    vec![
        DemoClient {
            client_id: "demo-payer",
            name: "New Health Plan (demo payer)",
            kind: ClientKind::Payer,
            organization: Some(PAYER_ORGANIZATION),
            scopes: format!(
                "system/*.rs {} {} {}",
                crate::ops::MEMBER_MATCH.canonical,
                crate::ops::BULK_MEMBER_MATCH.canonical,
                crate::ops::DAVINCI_DATA_EXPORT.canonical
            ),
            key_file: "payer.pem",
        },
        DemoClient {
            client_id: "demo-provider",
            name: "Lakeside Family Medicine (demo provider)",
            kind: ClientKind::Provider,
            organization: Some(PROVIDER_ORGANIZATION),
            scopes: format!("system/*.rs {}", crate::ops::MEMBER_MATCH.canonical),
            key_file: "provider.pem",
        },
        DemoClient {
            client_id: "demo-admin",
            name: "demo back office (read and write)",
            kind: ClientKind::Admin,
            organization: None,
            scopes: "system/*.cruds".into(),
            key_file: "admin.pem",
        },
    ]
}

/// The demo data files as import inputs (NDJSON, in name order; `members.json` is not FHIR).
fn data_files() -> Vec<InputFile> {
    let mut files: Vec<InputFile> = DATA
        .files()
        .filter(|f| f.path().extension().is_some_and(|e| e == "ndjson"))
        .map(|f| InputFile {
            path: Path::new("fixtures/demo").join(f.path()),
            found_in_folder: true,
            contents: Some(f.contents()),
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// The demo plan's member list (`members.json`: ids, identifiers, demographics).
pub fn members() -> Vec<Value> {
    DATA.get_file("members.json")
        .and_then(|f| serde_json::from_slice(f.contents()).ok())
        .unwrap_or_default()
}

/// Registers the demo clients that are not registered yet (by their fixed ids).
pub async fn register_clients(store: &crate::store::Store) -> anyhow::Result<()> {
    for c in clients() {
        if clients::get(store, c.client_id).await?.is_some() {
            continue;
        }
        let organization = c
            .organization
            .map(clients::parse_organization)
            .transpose()?;
        clients::create(
            store,
            clients::NewClient {
                client_id: Some(c.client_id.into()),
                name: c.name.into(),
                kind: Some(c.kind),
                jwks: Some(c.key()?.jwks()),
                organization,
                scopes: scopes::split(&c.scopes),
                ..Default::default()
            },
        )
        .await?;
    }
    Ok(())
}

/// Registers the demo member-app and sets the demo member logins (`member1` … for the first
/// [`DEMO_LOGINS`] demo members, and the [`DEMO_REPRESENTATIVES`]), each only if it is not
/// there yet. Returns (username, whom it signs in as) of each login.
pub async fn register_patient_access(
    store: &crate::store::Store,
) -> anyhow::Result<Vec<(String, String)>> {
    if clients::get(store, DEMO_APP_ID).await?.is_none() {
        clients::create(
            store,
            clients::NewClient {
                client_id: Some(DEMO_APP_ID.into()),
                name: "Demo member app".into(),
                kind: Some(ClientKind::App),
                redirect_uris: vec![DEMO_APP_REDIRECT.into()],
                grant_types: vec!["authorization_code".into()],
                ..Default::default()
            },
        )
        .await?;
    }
    let mut logins = Vec::new();
    for (i, m) in members().iter().take(DEMO_LOGINS).enumerate() {
        let Some(patient) = m["patient_id"].as_str() else {
            continue;
        };
        let username = format!("member{}", i + 1);
        if crate::auth::logins::get(store, &username).await?.is_none() {
            crate::auth::logins::set_login(store, &username, patient, DEMO_PASSWORD)
                .await
                .map_err(|e| anyhow::anyhow!("demo login {username}: {e}"))?;
        }
        logins.push((username, patient.to_owned()));
    }
    for (username, related_person) in DEMO_REPRESENTATIVES {
        if crate::auth::logins::get(store, username).await?.is_none() {
            crate::auth::logins::set_representative_login(
                store,
                username,
                related_person,
                DEMO_PASSWORD,
            )
            .await
            .map_err(|e| anyhow::anyhow!("demo login {username}: {e}"))?;
        }
        logins.push((
            username.to_owned(),
            format!("RelatedPerson/{related_person}"),
        ));
    }
    Ok(logins)
}

/// Writes the demo kit — the clients' private keys and the example requests — into `dir`
/// (created if needed; the keys readable by their owner only).
pub fn write_kit(dir: &Path) -> anyhow::Result<()> {
    let examples = dir.join("examples");
    std::fs::create_dir_all(&examples)
        .with_context(|| format!("cannot create the demo kit folder {}", examples.display()))?;
    for f in CLIENT_KEYS.files() {
        let path = dir.join(f.path());
        std::fs::write(&path, f.contents())
            .with_context(|| format!("cannot write {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    for f in EXAMPLES.files() {
        let path = examples.join(f.path());
        std::fs::write(&path, f.contents())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// `serve --demo`: loads the demo data into an empty store, registers the demo clients and
/// the read-only back-office client of the banner's token, writes the kit to
/// `{export_dir}/demo/` and prints the banner on stderr.
pub async fn load(state: &AppState) -> anyhow::Result<()> {
    if state.store.is_empty().await? {
        let summary =
            crate::import::import_files(&state.store, data_files(), ImportOptions::default())
                .await?;
        eprintln!("demo data: {}", summary.line());
    } else {
        eprintln!("demo data: the store already holds data; nothing loaded");
    }
    register_clients(&state.store).await?;
    let logins = register_patient_access(&state.store).await?;
    let kit = kit_dir(&state.bulk.config.export_dir);
    write_kit(&kit)?;
    let token = back_office_token(state).await?;
    eprintln!(
        "{}",
        banner(
            &state.base_url,
            &state.auth.settings.token_url(),
            &kit,
            &token
        )
    );
    eprintln!(
        "{}",
        patient_access_banner(
            &state.base_url,
            &state.auth.settings.authorize_url(),
            &state.auth.settings.token_url(),
            &logins
        )
    );
    Ok(())
}

/// Where `serve --demo` writes its kit: `demo/` in the export folder (a folder the server
/// must be able to write anyway), as an absolute path for the banner.
pub fn kit_dir(export_dir: &Path) -> PathBuf {
    let dir = export_dir.join("demo");
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Demo only: a read-only `admin` client ("demo back office") and a token for it that lasts
/// the demo session (8 hours), so the banner's curl commands can be pasted as they are.
async fn back_office_token(state: &AppState) -> anyhow::Result<String> {
    const DEMO_ID: &str = "pdex-demo-back-office";
    let client = match clients::find_by_external_id(&state.store, DEMO_ID).await? {
        Some(c) => c,
        None => {
            clients::create(
                &state.store,
                clients::NewClient {
                    name: "demo back office (read only)".into(),
                    kind: Some(ClientKind::Admin),
                    scopes: vec!["system/*.rs".into()],
                    // no keys and a secret nobody learns: the client cannot authenticate
                    // itself; it gets tokens only from this banner
                    secret: true,
                    external_id: Some(DEMO_ID.into()),
                    ..Default::default()
                },
            )
            .await?
            .client
        }
    };
    let issued = crate::auth::access_token::mint(
        &state.auth,
        &crate::auth::access_token::Grant {
            client_id: client.client_id.clone(),
            kind: client.kind,
            organization: None,
            scopes: client.scopes.clone(),
            patient: None,
            allow_sensitive: true,
            consent_id: None,
            authorization_id: None,
            cnf: None,
            lifetime: 8 * 3600,
        },
    )
    .await?;
    Ok(issued.access_token)
}

/// Ready-to-paste commands: reads for the first demo member (the HRex `$member-match`
/// example), a token command for each demo client, and the payer-to-payer requests.
pub fn banner(base: &str, token_url: &str, kit: &Path, token: &str) -> String {
    let first = members().into_iter().next().unwrap_or_default();
    let id = first["patient_id"].as_str().unwrap_or("m000000");
    let member_id = first["member_id"].as_str().unwrap_or("DH10001235");
    let family = first["family"].as_str().unwrap_or("Person");
    let kit = kit.display();
    let mut tokens = String::new();
    for c in clients() {
        tokens.push_str(&format!(
            "    pdex token --client {} --key {kit}/{} --token-url {token_url}\n",
            c.client_id, c.key_file
        ));
    }
    format!(
        r#"
  pdex demo — FHIR R4 at {base}
  A read-only back-office token for the demo (8 hours):
    export TOKEN={token}
  Try:
    curl -s {base}/metadata | head -c 400
    curl -s -H "Authorization: Bearer $TOKEN" '{base}/Patient?identifier={member_id}'
    curl -s -H "Authorization: Bearer $TOKEN" '{base}/Patient?family={family}&_count=5'
    curl -s -H "Authorization: Bearer $TOKEN" '{base}/Observation?patient={id}&category=laboratory&_sort=-date&_count=5'
    curl -s -H "Authorization: Bearer $TOKEN" '{base}/ExplanationOfBenefit?patient={id}&_include=ExplanationOfBenefit:*'
    curl -s -H "Authorization: Bearer $TOKEN" '{base}/Condition?patient={id}&_revinclude=Provenance:target'
    curl -s -H "Authorization: Bearer $TOKEN" '{base}/Coverage?beneficiary=Patient/{id}'
  Demo clients: demo-payer (New Health Plan, {PAYER_ORGANIZATION}), demo-provider,
  demo-admin (read and write). Their keys and the example requests are in {kit}
  (the keys are public: use --demo on a demo database only). A token for each:
{tokens}  Payer to payer as demo-payer: $member-match, then a member token and $everything:
    export P=$(pdex token --client demo-payer --key {kit}/payer.pem --token-url {token_url} | jq -r .access_token)
    curl -s -H "Authorization: Bearer $P" -H 'Content-Type: application/fhir+json' -d @{kit}/examples/member-match.json '{base}/Patient/$member-match'
    export M=$(pdex token --client demo-payer --key {kit}/payer.pem --token-url {token_url} --member Patient/{id} | jq -r .access_token)
    curl -s -H "Authorization: Bearer $M" '{base}/Patient/{id}/$everything?_count=5'
"#
    )
}

/// The banner's Patient Access part: the demo logins, an authorize URL to open in a browser,
/// and the curl command that exchanges the code it ends with.
pub fn patient_access_banner(
    base: &str,
    authorize_url: &str,
    token_url: &str,
    logins: &[(String, String)],
) -> String {
    use base64::Engine;
    use sha2::Digest;
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(DEMO_VERIFIER.as_bytes()));
    let mut url = url::Url::parse(authorize_url).expect("the authorize URL is a URL");
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", DEMO_APP_ID)
        .append_pair("redirect_uri", DEMO_APP_REDIRECT)
        .append_pair(
            "scope",
            "launch/patient openid fhirUser offline_access patient/*.rs",
        )
        .append_pair("state", "demo-state")
        .append_pair("aud", base)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let who: Vec<String> = logins
        .iter()
        .map(|(u, p)| {
            if p.contains('/') {
                format!("{u} ({p})")
            } else {
                format!("{u} (Patient/{p})")
            }
        })
        .collect();
    format!(
        r#"  Patient Access: a member signs in on our own page and authorizes the demo app.
    Logins: {} — password {DEMO_PASSWORD}
    Open in a browser, sign in, choose, Allow; the browser then goes to {DEMO_APP_REDIRECT}?code=…
    {url}
    The member's account page (what they allowed, and a button to stop each): {account}
    Exchange the code (within a minute) for the member's tokens:
    curl -s -d grant_type=authorization_code -d client_id={DEMO_APP_ID} -d redirect_uri={DEMO_APP_REDIRECT} -d code_verifier={DEMO_VERIFIER} -d code=CODE {token_url}
"#,
        who.join(", "),
        account = authorize_url.replace("/authorize", "/account"),
    )
}
