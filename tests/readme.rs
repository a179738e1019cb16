//! The README is a claim: its Commands block lists every command and flag that `pdex --help`
//! has (and nothing else), and its Examples block runs as written — in bash, against
//! `pdex serve --demo` started from the binary, with the demo admin's token from `pdex token`
//! — each search finding something in the demo data.

mod common;

use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// The first fenced block after the heading `heading`.
fn block_after(text: &str, heading: &str, fence: &str) -> String {
    let from = text.find(heading).unwrap_or_else(|| panic!("no {heading}"));
    let start = text[from..].find(fence).unwrap() + from + fence.len();
    let end = text[start..].find("\n```").unwrap() + start;
    text[start..end].trim_start_matches('\n').to_owned()
}

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pdex"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommand names a `--help` lists under "Commands:".
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

/// The long flags of a `--help`'s Options.
fn flags(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("-h, ").unwrap_or(l);
            let l = l.strip_prefix("-V, ").unwrap_or(l);
            l.strip_prefix("--")
        })
        .map(|l| l.split([' ', '=']).next().unwrap().to_owned())
        .collect()
}

const EVERY_COMMAND: [&str; 5] = ["help", "version", "config", "database-url", "log-format"];

#[test]
fn the_commands_block_lists_every_command_and_flag_of_help() {
    let text = readme();
    let block = block_after(&text, "## Commands", "```\n");
    // entries: a line starting with `pdex ` and its continuation lines
    let mut entries: Vec<String> = Vec::new();
    for line in block.lines() {
        if line.starts_with("pdex ") {
            entries.push(line.to_owned());
        } else if let Some(last) = entries.last_mut() {
            last.push(' ');
            last.push_str(line);
        }
    }
    let mut leaves: Vec<Vec<String>> = Vec::new();
    for top in subcommands(&help(&[])) {
        let subs = subcommands(&help(&[&top]));
        if subs.is_empty() {
            leaves.push(vec![top]);
        } else {
            leaves.extend(subs.into_iter().map(|s| vec![top.clone(), s]));
        }
    }
    assert!(leaves.len() >= 12, "{leaves:?}");
    for path in &leaves {
        let name = format!("pdex {}", path.join(" "));
        let entry = entries
            .iter()
            .find(|e| {
                e.strip_prefix(&name)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
            })
            .unwrap_or_else(|| panic!("the README's Commands block has no {name:?}"));
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let known = flags(&help(&args));
        for flag in &known {
            if !EVERY_COMMAND.contains(&flag.as_str()) {
                assert!(
                    entry.contains(&format!("--{flag} ")) || entry.contains(&format!("--{flag}]")),
                    "{name}: --{flag} is missing from the README: {entry}"
                );
            }
        }
        // and nothing the binary does not have
        for word in entry.split(|c: char| c.is_whitespace() || c == '[' || c == '|') {
            if let Some(flag) = word.strip_prefix("--") {
                let flag = flag.trim_end_matches(']');
                assert!(
                    known.iter().any(|k| k == flag),
                    "{name}: the README names --{flag}, which --help does not have"
                );
            }
        }
    }
    for flag in EVERY_COMMAND.iter().skip(2) {
        assert!(
            text.contains(&format!("--{flag}")),
            "--{flag} is not documented"
        );
    }
}

/// Runs `script` in bash in `dir` with this build's `pdex` on the PATH; returns stdout.
fn bash(dir: &Path, script: &str) -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_pdex")).parent().unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(dir)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script}\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_examples_block_runs_as_written_against_the_demo() {
    if !common::have_tools(&["bash", "curl", "jq"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"),
        dir.path().join("examples"),
    )
    .unwrap();
    let (mut child, base, _, _rx) = common::start_serve(
        Command::new(env!("CARGO_BIN_EXE_pdex"))
            .current_dir(dir.path())
            .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
            .env_remove("PDEX_CONFIG")
            .env_remove("PDEX_DATABASE_URL")
            .env_remove("PDEX_EXPORT_DIR"),
    );
    let root = base.strip_suffix("/fhir").unwrap();
    let block =
        block_after(&readme(), "## Examples", "```sh\n").replace("http://127.0.0.1:8080", root);
    // the set-up lines (variables, the token, the curl function), then each command on its
    // own, in order, so that each answer can be checked
    let (setup, commands): (Vec<&str>, Vec<&str>) = block
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .partition(|l| !l.starts_with("curl "));
    let setup = setup.join("\n");
    assert!(commands.len() >= 12, "{block}");
    for command in commands {
        let out = bash(dir.path(), &format!("{setup}\n{command}"));
        let body = out.lines().last().unwrap_or_default();
        if command.contains("If-None-Match") {
            assert!(out.starts_with("HTTP/1.1 304"), "{command}: {out}");
        } else if command.contains('?') || command.contains("_search") {
            let bundle: Value = serde_json::from_str(body).unwrap();
            assert!(
                bundle["entry"].as_array().is_some_and(|e| !e.is_empty()),
                "{command} found nothing: {body}"
            );
        } else if command.contains("-i ") {
            assert!(out.starts_with("HTTP/1.1 20"), "{command}: {out}");
        } else {
            let resource: Value = serde_json::from_str(body).unwrap();
            assert!(resource["resourceType"].is_string(), "{command}: {body}");
        }
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}
