//! The operator contract, driven through the real binary: `pdex serve` reads its config file
//! (with environment overriding it), logs JSON without PHI, serves HTTP, sees what a
//! concurrent `pdex import` writes, and shuts down cleanly on SIGTERM.

mod common;

use common::start_serve;
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test]
async fn serve_with_config_file_concurrent_import_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/pdex.db", dir.path().display());
    let config = dir.path().join("pdex.toml");
    // the file asks for a port that is taken; the environment overrides it
    std::fs::write(
        &config,
        format!("database_url = \"{db}\"\nlisten = \"127.0.0.1:1\"\nlog_format = \"json\"\n"),
    )
    .unwrap();
    let (mut child, base, lines, rx) = start_serve(
        Command::new(env!("CARGO_BIN_EXE_pdex"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("PDEX_LISTEN", "127.0.0.1:0")
            .env("PDEX_EXPORT_DIR", dir.path().join("exports"))
            .env_remove("PDEX_DATABASE_URL"),
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with('{') && l.contains("\"message\":\"pdex serving\"")),
        "JSON logs: {lines:?}"
    );
    let resp = reqwest::Client::new()
        .get(format!("{base}/metadata"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // register a client with the CLI while the server runs, and use its token
    let (client, client_id) = cli_client_token(&db, &base, dir.path()).await;

    // import into the same database while the server runs
    let data = dir.path().join("p.ndjson");
    std::fs::write(
        &data,
        r#"{"resourceType":"Patient","id":"concurrent","name":[{"family":"Secretname"}]}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pdex"))
        .args(["import", "--database-url", &db, data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle: serde_json::Value = client
        .get(format!("{base}/Patient?family=secretname"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bundle["total"], 1, "the server sees the import at once");

    // the client registry, also while the server runs: list, then disable → 401 at once
    let out = Command::new(env!("CARGO_BIN_EXE_pdex"))
        .args(["client", "list", "--database-url", &db])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["client_id"], client_id.as_str());
    assert_eq!(list[0]["kind"], "admin");
    assert_eq!(list[0]["disabled"], false);
    let out = Command::new(env!("CARGO_BIN_EXE_pdex"))
        .args(["client", "disable", "--database-url", &db, &client_id])
        .output()
        .unwrap();
    assert!(out.status.success());
    let resp = client.get(format!("{base}/Patient")).send().await.unwrap();
    assert_eq!(
        resp.status(),
        401,
        "a disabled client's token stops working"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pdex"))
        .args(["client", "disable", "--database-url", &db, "no-such-client"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // bad registrations are refused with a message, nothing stored
    let out = Command::new(env!("CARGO_BIN_EXE_pdex"))
        .args([
            "client",
            "add",
            "--database-url",
            &db,
            "--name",
            "x",
            "--kind",
            "payer",
        ])
        .args(["--jwks-uri", "http://example.org/jwks"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("https"));
    let out = Command::new(env!("CARGO_BIN_EXE_pdex"))
        .args([
            "client",
            "add",
            "--database-url",
            &db,
            "--name",
            "x",
            "--kind",
            "superuser",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // key rotation from the CLI
    let out = Command::new(env!("CARGO_BIN_EXE_pdex"))
        .args(["keys", "rotate", "--database-url", &db])
        .output()
        .unwrap();
    assert!(out.status.success());
    let rotated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let jwks: serde_json::Value = reqwest::get(format!(
        "{}/oauth/jwks",
        base.strip_suffix("/fhir").unwrap()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    // the access-token (EC) keys; each rotation also renews the id_token (RSA) key
    let ec: Vec<&serde_json::Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kty"] == "EC")
        .collect();
    assert_eq!(
        ec[0]["kid"], rotated["kid"],
        "the new key is published first"
    );
    assert_eq!(ec.len(), 2, "the old key stays until its tokens expire");
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 4, "{jwks}");

    // SIGTERM: clean exit
    let status = Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit:?}");
    // no PHI in the logs: the family name searched for never appears
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        !lines
            .iter()
            .chain(rest.iter())
            .any(|l| l.to_lowercase().contains("secretname")),
        "PHI in logs: {rest:?}"
    );
}

/// `serve --demo` from a copy of the binary in a folder of its own (the demo set is embedded:
/// no source checkout needed), logging to a pipe (no colour codes): the banner's read commands find data with its token, its
/// `pdex token` commands get each demo client a token with the key the demo wrote out, and
/// its payer-to-payer block, run by bash as printed, matches the member with the shipped
/// example and reads their `$everything` with a member token.
#[tokio::test]
async fn demo_mode_loads_the_bundled_data_and_its_banner_commands_work() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let pdex = bin.join("pdex");
    std::fs::copy(env!("CARGO_BIN_EXE_pdex"), &pdex).unwrap();
    let db = format!("sqlite://{}/demo.db", dir.path().display());
    let (mut child, base, seen, _rx) = start_serve(
        Command::new(&pdex)
            .current_dir(dir.path())
            .args([
                "serve",
                "--demo",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                &db,
            ])
            .env_remove("PDEX_CONFIG")
            .env_remove("PDEX_EXPORT_DIR"),
    );
    // stderr is a pipe here, not a terminal: text logs without ANSI colour codes
    assert!(
        seen.iter().any(|l| l.contains("pdex serving"))
            && !seen.iter().any(|l| l.contains('\u{1b}')),
        "plain text logs: {seen:?}"
    );
    let lines: Vec<&str> = seen.iter().map(|l| l.trim()).collect();
    let section = |from: &str, to: &str| -> Vec<&str> {
        lines
            .iter()
            .skip_while(|l| !l.starts_with(from))
            .skip(1)
            .take_while(|l| !l.starts_with(to) && !l.is_empty())
            .copied()
            .collect()
    };
    let banner_urls: Vec<String> = section("Try:", "Demo clients")
        .iter()
        .filter_map(|l| l.strip_prefix("curl -s "))
        .map(|c| {
            let c = c.split(" | ").next().unwrap();
            c.split_whitespace()
                .last()
                .unwrap()
                .trim_matches('\'')
                .to_owned()
        })
        .collect();
    assert!(banner_urls.len() >= 5, "banner: {seen:?}");
    let token = lines
        .iter()
        .find_map(|l| l.strip_prefix("export TOKEN="))
        .expect("the banner prints a token")
        .to_owned();
    let client = reqwest::Client::new();
    for url in &banner_urls {
        assert!(url.starts_with(&base), "{url}");
        let resp = client.get(url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        let body: serde_json::Value = resp.json().await.unwrap();
        if body["resourceType"] == "Bundle" {
            assert!(
                body["entry"].as_array().is_some_and(|e| !e.is_empty()),
                "{url} found nothing"
            );
        }
    }

    // one `pdex token` command per demo client, each answered with a token
    let token_commands: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("pdex token --client demo-") && !l.contains("--member"))
        .copied()
        .collect();
    assert_eq!(token_commands.len(), 3, "banner: {seen:?}");
    for command in &token_commands {
        let args: Vec<&str> = command.split_whitespace().skip(1).collect();
        let out = Command::new(&pdex).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(body["token_type"], "Bearer", "{command}");
        let resp = client
            .get(format!("{base}/Organization?_count=1"))
            .bearer_auth(body["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{command}");
    }
    // the wrong key for a client: refused, the OAuth error printed, exit code 1
    let wrong: Vec<String> = token_commands[0]
        .split_whitespace()
        .skip(1)
        .map(|a| a.replace("payer.pem", "admin.pem"))
        .collect();
    let out = Command::new(&pdex).args(&wrong).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["error"], "invalid_client");

    // the Patient Access block: its authorize URL, signed in with a printed login, approved,
    // and the printed exchange with the code (the browser's part done over HTTP)
    let authorize = lines
        .iter()
        .find(|l| l.contains("/oauth/authorize?"))
        .expect("the banner prints an authorize URL")
        .to_string();
    let logins = lines
        .iter()
        .find_map(|l| l.strip_prefix("Logins: "))
        .expect("the banner prints the demo logins");
    let username = logins.split_whitespace().next().unwrap().to_owned();
    let password = logins.rsplit("password ").next().unwrap().trim().to_owned();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = browser.get(&authorize).send().await.unwrap();
    assert_eq!(page.status(), 200, "{authorize}");
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    let input = |html: &str, name: &str| {
        regex::Regex::new(&format!(r#"name="{name}" value="([^"]*)""#))
            .unwrap()
            .captures(html)
            .unwrap()[1]
            .to_owned()
    };
    let (request, csrf) = (input(&html, "request"), input(&html, "csrf"));
    let oauth = authorize.split("/authorize?").next().unwrap().to_owned();
    let page = browser
        .post(format!("{oauth}/authorize/signin"))
        .header("Cookie", &cookie)
        .form(&[
            ("request", request.as_str()),
            ("csrf", csrf.as_str()),
            ("username", username.as_str()),
            ("password", password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "the printed login signs in");
    let page = browser
        .post(format!("{oauth}/authorize/decide"))
        .header("Cookie", &cookie)
        .form(&[
            ("request", request.as_str()),
            ("csrf", csrf.as_str()),
            ("sensitive", "withhold"),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    let location = url::Url::parse(page.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let exchange = lines
        .iter()
        .find(|l| l.starts_with("curl -s -d grant_type=authorization_code"))
        .expect("the banner prints the code exchange");
    let words: Vec<&str> = exchange.split_whitespace().collect();
    let form: Vec<(String, String)> = words
        .windows(2)
        .filter(|w| w[0] == "-d")
        .map(|w| {
            let (k, v) = w[1].split_once('=').unwrap();
            (
                k.to_owned(),
                if v == "CODE" {
                    code.clone()
                } else {
                    v.to_owned()
                },
            )
        })
        .collect();
    let resp = client
        .post(*words.last().unwrap())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{exchange}");
    let t: serde_json::Value = resp.json().await.unwrap();
    let patient = t["patient"].as_str().unwrap();
    assert!(
        logins.contains(&format!("{username} (Patient/{patient})")),
        "{t}"
    );
    let resp = client
        .get(format!("{base}/Patient/{patient}"))
        .bearer_auth(t["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // the demo guardian (a printed login) may act for the two minors of the household
    let guardian = logins
        .split(", ")
        .find(|l| l.contains("RelatedPerson/"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the banner prints a representative's login")
        .to_owned();
    let page = browser.get(&authorize).send().await.unwrap();
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    let signed = browser
        .post(format!("{oauth}/authorize/signin"))
        .header("Cookie", &cookie)
        .form(&[
            ("request", input(&html, "request").as_str()),
            ("csrf", input(&html, "csrf").as_str()),
            ("username", guardian.as_str()),
            ("password", password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 200);
    let html = signed.text().await.unwrap();
    for child in ["m000003", "m000004"] {
        assert!(
            html.contains(&format!(r#"name="patient" value="{child}""#)),
            "{html}"
        );
    }

    // the payer-to-payer block, as printed, in bash with this pdex on the PATH
    let block = section("Payer to payer", "\u{0}");
    assert_eq!(block.len(), 4, "banner: {seen:?}");
    if !common::have_tools(&["bash", "curl", "jq"]) {
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let _ = child.wait();
        return;
    }
    let script = format!(
        "set -euo pipefail\ncurl() {{ command curl --fail-with-body \"$@\"; echo; }}\n{}\n",
        block.join("\n")
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        answers[0]["parameter"][1]["valueReference"]["reference"],
        "Patient/m000000"
    );
    assert_eq!(answers[1]["resourceType"], "Bundle");
    assert!(
        answers[1]["entry"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    );
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

/// `pdex client add` (on the database a server is using), then a real token for it from
/// that server: a reqwest client sending it.
async fn cli_client_token(
    db: &str,
    base: &str,
    dir: &std::path::Path,
) -> (reqwest::Client, String) {
    let key = common::TestKey::generate(jsonwebtoken::Algorithm::ES384);
    let jwks = dir.join("client-jwks.json");
    std::fs::write(&jwks, key.jwks().to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pdex"))
        .args([
            "client",
            "add",
            "--database-url",
            db,
            "--name",
            "ops",
            "--kind",
            "admin",
        ])
        .args(["--jwks", jwks.to_str().unwrap(), "--scope", "system/*.rs"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let client_id = added["client_id"].as_str().unwrap().to_owned();
    let token_url = format!("{}/oauth/token", base.strip_suffix("/fhir").unwrap());
    let assertion = key.sign(&serde_json::json!({
        "iss": client_id, "sub": client_id, "aud": token_url,
        "exp": common::now() + 120, "jti": uuid::Uuid::new_v4().to_string(),
    }));
    let resp = reqwest::Client::new()
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.rs"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &assertion),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", body["access_token"].as_str().unwrap())
            .parse()
            .unwrap(),
    );
    (
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap(),
        client_id,
    )
}

/// `pdex client disable`, `enable` and `update` (DESIGN §5) on the database a server is
/// using: each takes effect at the server's next token request.
#[tokio::test]
async fn client_enable_and_update_from_the_cli() {
    for b in common::backends() {
        let s = common::TestServer::start(&b).await;
        let db = s.db.url.clone();
        let c = common::CliClient::register_as(
            &db,
            "payer",
            Some("http://hl7.org/fhir/sid/us-npi|1111111111"),
            "system/*.rs",
        );
        let token = || {
            let assertion = c.key.sign(&serde_json::json!({
                "iss": c.client_id, "sub": c.client_id, "aud": s.token_url(),
                "exp": common::now() + 120, "jti": uuid::Uuid::new_v4().to_string(),
            }));
            let url = s.token_url();
            async move {
                let resp = reqwest::Client::new()
                    .post(url)
                    .form(&[
                        ("grant_type", "client_credentials"),
                        (
                            "client_assertion_type",
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        ),
                        ("client_assertion", assertion.as_str()),
                    ])
                    .send()
                    .await
                    .unwrap();
                let status = resp.status();
                (status, resp.json::<serde_json::Value>().await.unwrap())
            }
        };
        let pdex = |args: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_pdex"))
                .args(["client"])
                .args(args)
                .args(["--database-url", &db])
                .output()
                .unwrap()
        };
        assert_eq!(token().await.0, 200);
        assert!(pdex(&["disable", &c.client_id]).status.success());
        let (status, err) = token().await;
        assert_eq!(
            (status.as_u16(), err["error"].as_str()),
            (400, Some("invalid_client"))
        );
        let out = pdex(&["enable", &c.client_id]);
        assert!(out.status.success());
        let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(said["disabled"], false);
        assert_eq!(token().await.0, 200);
        let out = pdex(&[
            "update",
            &c.client_id,
            "--scope",
            "system/Organization.rs",
            "--organization",
            "http://hl7.org/fhir/sid/us-npi|2222222222",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let updated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(updated["scope"], "system/Organization.rs");
        assert_eq!(
            updated["organization"],
            "http://hl7.org/fhir/sid/us-npi|2222222222"
        );
        let (status, t) = token().await;
        assert_eq!(status, 200);
        assert_eq!(t["scope"], "system/Organization.rs");
        // refused: an unknown client, a bad scope, a bad organization
        assert!(!pdex(&["enable", "nobody"]).status.success());
        assert!(
            !pdex(&["update", &c.client_id, "--scope", "system/*.dus"])
                .status
                .success()
        );
        assert!(
            !pdex(&["update", &c.client_id, "--organization", "no-bar"])
                .status
                .success()
        );
        s.stop().await;
    }
}
