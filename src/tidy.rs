//! The `tidy` test (the rust-analyzer habit): checks on the source tree that keep
//! `ARCHITECTURE.md` true. It fails when
//!
//! - a top-level module imports another that its row of the module table in `ARCHITECTURE.md`
//!   does not list under "may depend on" (or the table lists a dependency the code does not
//!   have, or a module has no row, or the listed dependencies form a cycle);
//! - SQL over the resource, history, index or Group-ownership tables appears outside
//!   `src/store/`;
//! - a source file lacks its `//!` module doc comment.
//!
//! Test-only (`#[cfg(test)]` in `lib.rs`); it reads the files, it does not build them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .expect("under the root")
        .to_string_lossy()
        .replace('\\', "/")
}

/// The top-level module a file under `src/` belongs to (`src/store/db.rs` → `store`,
/// `src/app.rs` → `app`).
fn top_module(rel: &str) -> String {
    let rest = rel.strip_prefix("src/").expect("under src/");
    match rest.split_once('/') {
        Some((dir, _)) => dir.to_owned(),
        None => rest.trim_end_matches(".rs").to_owned(),
    }
}

/// The code of a line without its comment (a `//` outside string literals, roughly: lines
/// that are comments as a whole, and trailing comments after code).
fn code_of(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with("//") {
        return "";
    }
    let mut in_string = false;
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

/// The modules of ours a top-level module uses: `crate::X` paths (and `pdex::X` in the
/// binary), comments excluded.
fn actual_dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let crate_path = regex::Regex::new(r"\bcrate::([a-z_][a-z0-9_]*)").expect("regex");
    // the binary names the library by its crate name (and log targets such as
    // "pdex::audit" are strings, not paths, so only main.rs is read for these)
    let library_path = regex::Regex::new(r"\bpdex::([a-z_][a-z0-9_]*)").expect("regex");
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&root().join("src")) {
        let rel = relative(&file);
        let module = top_module(&rel);
        let entry = deps.entry(module.clone()).or_default();
        let text = std::fs::read_to_string(&file).expect("read");
        // the test modules of a file may reach anywhere
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        let path_re = if module == "main" {
            &library_path
        } else {
            &crate_path
        };
        for line in text.lines() {
            for cap in path_re.captures_iter(code_of(line)) {
                let dep = cap[1].to_owned();
                if dep != module {
                    entry.insert(dep);
                }
            }
        }
    }
    deps.remove("lib");
    deps.remove("tidy");
    deps
}

/// The module table of `ARCHITECTURE.md`: module → the modules its "may depend on" column
/// names (`None`: "everything").
fn declared_dependencies() -> BTreeMap<String, Option<BTreeSet<String>>> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let word = regex::Regex::new(r"^[a-z_][a-z0-9_]*").expect("regex");
    // "server (state, http helpers)": what is in parentheses explains, it names no module
    let parenthetical = regex::Regex::new(r"\([^)]*\)").expect("regex");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split(" | ").collect();
        if !line.starts_with("| `src/") || cells.len() < 3 {
            continue;
        }
        let path = cells[0].trim_start_matches("| ").trim_matches('`');
        let Some(rest) = path.strip_prefix("src/") else {
            continue;
        };
        let module = rest.trim_end_matches('/').trim_end_matches(".rs");
        if module.contains('/') {
            continue; // a row for a part of a module (e.g. `src/server/tls.rs`)
        }
        let column = cells[cells.len() - 1].trim_end_matches(" |").trim();
        let declared = match column {
            "everything" => None,
            "—" | "nothing of ours" => Some(BTreeSet::new()),
            list => Some(
                parenthetical
                    .replace_all(list, "")
                    .split(',')
                    .filter_map(|item| word.find(item.trim()).map(|m| m.as_str().to_owned()))
                    .collect(),
            ),
        };
        out.insert(module.to_owned(), declared);
    }
    out
}

/// Architecture invariant: every import follows the "may depend on" column, the column says
/// nothing the code does not do, and the columns form no cycle.
#[test]
fn modules_depend_only_as_architecture_md_allows() {
    let actual = actual_dependencies();
    let declared = declared_dependencies();
    let mut problems = Vec::new();
    for (module, uses) in &actual {
        let Some(allowed) = declared.get(module) else {
            problems.push(format!(
                "src/{module} has no row in ARCHITECTURE.md's module table"
            ));
            continue;
        };
        let Some(allowed) = allowed else { continue };
        for dep in uses.difference(allowed) {
            problems.push(format!(
                "{module} imports {dep}, which ARCHITECTURE.md does not allow it to depend on"
            ));
        }
        for dep in allowed.difference(uses) {
            problems.push(format!(
                "ARCHITECTURE.md says {module} may depend on {dep}, but it does not: drop it from the row"
            ));
        }
    }
    for module in declared.keys() {
        if !actual.contains_key(module) {
            problems.push(format!(
                "ARCHITECTURE.md has a row for src/{module}, which does not exist"
            ));
        }
    }
    // no cycle among the declared edges (modules that may use everything are the top)
    let edges: BTreeMap<&str, Vec<&str>> = declared
        .iter()
        .filter_map(|(m, d)| {
            d.as_ref()
                .map(|d| (m.as_str(), d.iter().map(String::as_str).collect()))
        })
        .collect();
    fn visit<'a>(
        m: &'a str,
        edges: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        problems: &mut Vec<String>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(at) = path.iter().position(|p| *p == m) {
            problems.push(format!("module cycle: {} → {m}", path[at..].join(" → ")));
            return;
        }
        path.push(m);
        for d in edges.get(m).into_iter().flatten() {
            visit(d, edges, path, done, problems);
        }
        path.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        visit(m, &edges, &mut Vec::new(), &mut done, &mut problems);
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// Architecture invariant: SQL over `resources`, `resource_history`, the `idx_*` index tables
/// and `group_owners` lives in `src/store/` only (other modules keep the SQL of their own
/// tables: clients, keys, jobs, consents); resources reach everything else through the
/// store's access layer.
#[test]
fn resource_sql_lives_in_the_store() {
    let sql = regex::Regex::new(
        r"(?i)\b(from|join|into|update|table)\s+(resources|resource_history|idx_[a-z_]+|group_owners)\b",
    )
    .expect("regex");
    let mut offenders = Vec::new();
    for file in rust_files(&root().join("src")) {
        let rel = relative(&file);
        if rel.starts_with("src/store/") || rel == "src/tidy.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read");
        for (n, line) in text.lines().enumerate() {
            if sql.is_match(code_of(line)) {
                offenders.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "SQL over resource tables outside src/store/ (add a Store method):\n{}",
        offenders.join("\n")
    );
}

/// Every source file says what it owns in a `//!` doc comment at its top.
#[test]
fn every_module_has_its_doc_comment() {
    let missing: Vec<String> = rust_files(&root().join("src"))
        .into_iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).expect("read");
            !text.trim_start().starts_with("//!")
        })
        .map(|f| relative(&f))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! module doc comment: {missing:?}"
    );
}

/// The checks themselves catch what they are for (a tidy test that cannot fail is no test).
#[test]
fn the_checks_catch_what_they_are_for() {
    assert_eq!(top_module("src/store/db.rs"), "store");
    assert_eq!(top_module("src/app.rs"), "app");
    assert_eq!(code_of("    // use crate::server;"), "");
    assert_eq!(
        code_of(r#"let s = "a // b"; // c"#),
        r#"let s = "a // b"; "#
    );
    let sql = regex::Regex::new(
        r"(?i)\b(from|join|into|update|table)\s+(resources|resource_history|idx_[a-z_]+|group_owners)\b",
    )
    .expect("regex");
    assert!(sql.is_match(r#""SELECT id FROM resources WHERE""#));
    assert!(sql.is_match("INSERT INTO group_owners (group_id)"));
    assert!(sql.is_match(" JOIN idx_token t ON"));
    assert!(!sql.is_match("SqlValue::from(resources)"));
    assert!(!sql.is_match("FROM member_consents"));
}
