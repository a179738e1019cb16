//! `pdex import`: streams NDJSON files, Bundle JSON files and folders of them into the
//! store. Parsing and indexing run on a blocking thread while the previous batch is being
//! written, batches are written in one transaction each (or the whole import in one, with
//! `--strict`), a bad line is reported with its file and line number, and re-importing the
//! same files changes nothing (same ids update in place; identical content is skipped).

use crate::fhir::json::{RawResource, replace_string_literal};
use crate::store::{Dialect, IdRule, Store, WriteKind, WriteOp, WriteOutcome};
use anyhow::Context;
use futures::{FutureExt, StreamExt};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Resources per write transaction.
pub const BATCH: usize = 1000;

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Stop at the first bad line, and write nothing at all if any line is bad.
    pub strict: bool,
    /// Draw a progress bar (when stderr is a terminal).
    pub progress: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ImportSummary {
    pub files: usize,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
    /// `file:line: message` for every rejected line.
    pub errors: Vec<String>,
    pub seconds: f64,
}

impl ImportSummary {
    pub fn written(&self) -> u64 {
        self.created + self.updated + self.unchanged + self.deleted
    }
    /// One line for logs and non-interactive runs.
    pub fn line(&self) -> String {
        let n = self.written();
        format!(
            "imported {n} resources from {} files in {:.1}s ({:.0}/s): {} created, {} updated, {} unchanged, {} deleted, {} errors",
            self.files,
            self.seconds,
            n as f64 / self.seconds.max(1e-9),
            self.created,
            self.updated,
            self.unchanged,
            self.deleted,
            self.errors.len()
        )
    }
}

/// A batch of write operations, or the errors found while preparing it.
struct Batch {
    ops: Vec<WriteOp>,
    errors: Vec<String>,
}

/// A file to import; `found_in_folder` files that turn out not to be FHIR JSON (such as the
/// `members.json` that `pdex synth` writes beside its NDJSON) are skipped, not errors.
#[derive(Debug, Clone)]
pub struct InputFile {
    pub path: PathBuf,
    pub found_in_folder: bool,
    /// The file's bytes when they are in memory (the demo set embedded in the binary);
    /// `None` reads `path`.
    pub contents: Option<&'static [u8]>,
}

/// Lists the files under `paths` (folders recursively, `.ndjson` and `.json`), sorted.
pub fn list_files(paths: &[PathBuf]) -> anyhow::Result<Vec<InputFile>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found)?;
            found.sort();
            out.extend(found.into_iter().map(|path| InputFile {
                path,
                found_in_folder: true,
                contents: None,
            }));
        } else if p.is_file() {
            out.push(InputFile {
                path: p.clone(),
                found_in_folder: false,
                contents: None,
            });
        } else {
            anyhow::bail!("{} does not exist", p.display());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("ndjson") | Some("json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// Imports `paths` into `store`.
pub async fn import(
    store: &Store,
    paths: &[PathBuf],
    opts: ImportOptions,
) -> anyhow::Result<ImportSummary> {
    import_files(store, list_files(paths)?, opts).await
}

/// Imports `files` (from disk or memory) into `store`, in their order.
pub async fn import_files(
    store: &Store,
    files: Vec<InputFile>,
    opts: ImportOptions,
) -> anyhow::Result<ImportSummary> {
    let started = Instant::now();
    let mut summary = ImportSummary {
        files: files.len(),
        ..Default::default()
    };
    let bar = progress_bar(opts.progress);

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(2);
    let producer_store = store.clone();
    let producer = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        for file in files {
            read_file(&producer_store, &file, &tx)?;
        }
        Ok(())
    });

    let mut strict_tx = if opts.strict {
        Some(store.db.begin().await?)
    } else {
        None
    };
    let mut failed = false;
    let mut batches: u64 = 0;
    let mut statistics = Statistics::default();
    // Postgres takes two batches at once (each in its own transaction) so that both cores
    // work; SQLite has a single writer, and a strict import is one transaction.
    let writers = if opts.strict || store.db.dialect() == Dialect::Sqlite {
        1
    } else {
        2
    };
    let batches_in =
        futures::stream::unfold(
            &mut rx,
            |rx| async move { rx.recv().await.map(|b| (b, rx)) },
        );
    let strict_cell = tokio::sync::Mutex::new(strict_tx.take());
    let mut written = Box::pin(
        batches_in
            .map(|batch| {
                let strict_cell = &strict_cell;
                async move {
                    let result = if batch.ops.is_empty() {
                        Ok(vec![])
                    } else {
                        let mut strict = strict_cell.lock().await;
                        match strict.as_mut() {
                            Some(t) => store.write_in(t.as_mut(), batch.ops).await,
                            None => {
                                drop(strict);
                                store.write(batch.ops).await
                            }
                        }
                    };
                    (batch.errors, result)
                }
            })
            .buffer_unordered(writers),
    );
    while let Some((errors, result)) = written.next().await {
        for e in &errors {
            bar.suspend(|| eprintln!("error: {e}"));
        }
        let bad_lines = !errors.is_empty();
        summary.errors.extend(errors);
        match result {
            Ok(results) => {
                for r in &results {
                    match r.outcome {
                        WriteOutcome::Created => summary.created += 1,
                        WriteOutcome::Updated => summary.updated += 1,
                        WriteOutcome::Unchanged => summary.unchanged += 1,
                        WriteOutcome::Deleted | WriteOutcome::NoOp => summary.deleted += 1,
                    }
                }
            }
            Err(e) => {
                let msg = format!("a batch was not written: {}", e.diagnostics);
                bar.suspend(|| eprintln!("error: {msg}"));
                summary.errors.push(msg);
                failed = true;
            }
        }
        if opts.strict && (bad_lines || failed) {
            failed = true;
            break;
        }
        // Statistics after the 1st, 10th, 100th… batch: plans made for an empty table (a
        // sequential scan for the id lookup) would otherwise stay in use as it grows.
        //
        // Issue 15 item 1: with two writers the refresh runs on a task of its own and is
        // never awaited here. While this loop body awaits, `written` is not polled, so the
        // other batch in flight sits in its open transaction with a pooled connection, its
        // next statement unsent ("idle in transaction" right after `INSERT INTO
        // resources`); anything awaited here that needs the database can wait on that very
        // batch, which only this loop can move on.
        batches += 1;
        if !opts.strict && (batches as f64).log10().fract() == 0.0 {
            if writers == 1 {
                // One writer: no batch is in flight while the loop body runs (the stream
                // starts the next one when polled), and SQLite's refresh needs that writer,
                // so it runs here, alone, as before.
                store.db.analyze().await?;
            } else {
                statistics.refresh(store);
            }
        }
        let n = summary.written();
        bar.set_position(n);
        bar.set_message(format!(
            "{:.0}/s, {} errors",
            n as f64 / started.elapsed().as_secs_f64().max(1e-9),
            summary.errors.len()
        ));
    }
    drop(written);
    // every write has finished: a refresh still running has nothing left to wait on
    statistics.finish().await?;
    let strict_tx = strict_cell.into_inner();
    drop(rx);
    let produced = producer.await?;
    if let Err(e) = produced {
        failed = true;
        summary.errors.push(format!("{e:#}"));
    }
    if let Some(t) = strict_tx {
        if failed {
            drop(t); // rolls back: a strict import that fails leaves nothing behind
            summary.created = 0;
            summary.updated = 0;
            summary.unchanged = 0;
            summary.deleted = 0;
        } else {
            t.commit().await?;
        }
    }
    if summary.written() > 0 {
        store.db.analyze().await?;
    }
    bar.finish_and_clear();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Planner statistics refreshed while an import with several writers runs (PostgreSQL), one
/// refresh at a time, each on a task of its own (its own pooled connection) so that the
/// import loop goes on polling the batch writes in flight (issue 15 item 1: awaiting the
/// refresh inside the loop hung `pdex import` on PostgreSQL).
#[derive(Default)]
struct Statistics {
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The first refresh that failed, reported by [`Statistics::finish`].
    failure: Option<anyhow::Error>,
}

impl Statistics {
    /// Starts a refresh, unless one is still running (the next one will see these rows).
    fn refresh(&mut self, store: &Store) {
        if self.running.as_ref().is_some_and(|r| !r.is_finished()) {
            return;
        }
        if let Some(done) = self.running.take() {
            // finished: this poll returns at once
            self.record(done.now_or_never());
        }
        let db = store.db.clone();
        self.running = Some(tokio::spawn(async move { db.analyze().await }));
    }

    fn record(&mut self, outcome: Option<Result<anyhow::Result<()>, tokio::task::JoinError>>) {
        let error = match outcome {
            Some(Ok(Ok(()))) | None => return,
            Some(Ok(Err(e))) => e,
            Some(Err(e)) => anyhow::anyhow!("statistics refresh failed: {e}"),
        };
        self.failure.get_or_insert(error);
    }

    /// Waits for the refresh still running (call it once no write is in flight) and reports
    /// the first failure.
    async fn finish(mut self) -> anyhow::Result<()> {
        if let Some(running) = self.running.take() {
            self.record(Some(running.await));
        }
        self.failure.map_or(Ok(()), Err)
    }
}

fn progress_bar(enabled: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !enabled || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} resources  {msg}  [{elapsed}]")
            .expect("valid template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// Reads one file and sends its batches. Returns Err only when the channel is gone or the
/// file cannot be read at all.
fn read_file(
    store: &Store,
    input: &InputFile,
    tx: &tokio::sync::mpsc::Sender<Batch>,
) -> anyhow::Result<()> {
    let file = input.path.as_path();
    let name = file.display().to_string();
    let is_ndjson = file.extension().and_then(|e| e.to_str()) == Some("ndjson");
    let send = |b: Batch| {
        tx.blocking_send(b)
            .map_err(|_| anyhow::anyhow!("import stopped"))
    };
    if is_ndjson {
        let reader: Box<dyn BufRead> = match input.contents {
            Some(bytes) => Box::new(bytes),
            None => Box::new(std::io::BufReader::with_capacity(
                1 << 20,
                std::fs::File::open(file).with_context(|| format!("cannot open {name}"))?,
            )),
        };
        let mut batch = Batch {
            ops: Vec::with_capacity(BATCH),
            errors: vec![],
        };
        for (n, line) in reader.lines().enumerate() {
            let line = line.with_context(|| format!("{name}:{}: cannot read", n + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            match store.prepare(&line, None, IdRule::FromBody) {
                Ok(p) => batch.ops.push(WriteOp::put(WriteKind::Import, p)),
                Err(e) => batch
                    .errors
                    .push(format!("{name}:{}: {}", n + 1, e.diagnostics)),
            }
            if batch.ops.len() >= BATCH || !batch.errors.is_empty() && batch.ops.is_empty() {
                send(std::mem::replace(
                    &mut batch,
                    Batch {
                        ops: Vec::with_capacity(BATCH),
                        errors: vec![],
                    },
                ))?;
            }
        }
        if !batch.ops.is_empty() || !batch.errors.is_empty() {
            send(batch)?;
        }
        return Ok(());
    }
    let text = match input.contents {
        Some(bytes) => {
            String::from_utf8(bytes.to_vec()).with_context(|| format!("{name} is not UTF-8"))?
        }
        None => std::fs::read_to_string(file).with_context(|| format!("cannot read {name}"))?,
    };
    if input.found_in_folder && !looks_like_fhir(&text) {
        tracing::info!(file = %name, "skipped: not a FHIR resource or Bundle");
        return Ok(());
    }
    send(json_file_batch(store, &name, &text))
}

/// A JSON object with a `resourceType` member (checked without parsing the whole file).
fn looks_like_fhir(text: &str) -> bool {
    text.trim_start().starts_with('{') && text.contains("\"resourceType\"")
}

/// A `.json` file: one resource, or a Bundle (collection, searchset, transaction, batch)
/// whose entries are imported with their ids; `urn:uuid:` references are rewritten.
/// Entry resources are kept as raw JSON, so decimals keep their precision.
fn json_file_batch(store: &Store, name: &str, text: &str) -> Batch {
    #[derive(serde::Deserialize)]
    struct BundleHead {
        #[serde(rename = "resourceType")]
        resource_type: Option<String>,
        #[serde(default)]
        entry: Vec<EntryRaw>,
    }
    #[derive(serde::Deserialize)]
    struct EntryRaw {
        #[serde(rename = "fullUrl")]
        full_url: Option<String>,
        resource: Option<Box<serde_json::value::RawValue>>,
        request: Option<serde_json::Value>,
    }
    let mut batch = Batch {
        ops: vec![],
        errors: vec![],
    };
    let head: BundleHead = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            batch
                .errors
                .push(format!("{name}:{}: invalid JSON: {e}", e.line()));
            return batch;
        }
    };
    if head.resource_type.as_deref() != Some("Bundle") {
        match store.prepare(text, None, IdRule::FromBody) {
            Ok(p) => batch.ops.push(WriteOp::put(WriteKind::Import, p)),
            Err(e) => batch.errors.push(format!("{name}: {}", e.diagnostics)),
        }
        return batch;
    }
    // Ids for entries: their own, or a new one; urn: fullUrls map to Type/id.
    let mut rewrites = Vec::new();
    let mut resources = Vec::new();
    for (i, e) in head.entry.iter().enumerate() {
        let method = e
            .request
            .as_ref()
            .and_then(|r| r["method"].as_str())
            .unwrap_or("PUT");
        if method == "DELETE" {
            let url = e
                .request
                .as_ref()
                .and_then(|r| r["url"].as_str())
                .unwrap_or_default();
            match url.split_once('/') {
                Some((t, rid)) => batch.ops.push(WriteOp::delete(t, rid, None)),
                None => batch
                    .errors
                    .push(format!("{name}: entry {i}: DELETE needs Type/id")),
            }
            continue;
        }
        if method == "GET" || method == "HEAD" {
            continue;
        }
        let Some(raw) = &e.resource else {
            batch
                .errors
                .push(format!("{name}: entry {i} has no resource"));
            continue;
        };
        let mut resource = match RawResource::parse(raw.get()) {
            Ok(r) => r,
            Err(err) => {
                batch.errors.push(format!("{name}: entry {i}: {err}"));
                continue;
            }
        };
        let id = resource
            .id()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        resource.set_id(&id);
        if let (Some(full), Some(rt)) = (&e.full_url, resource.resource_type())
            && full.starts_with("urn:")
        {
            rewrites.push((full.clone(), format!("{rt}/{id}")));
        }
        resources.push((i, resource.to_json()));
    }
    for (i, mut text) in resources {
        for (from, to) in &rewrites {
            text = replace_string_literal(&text, from, to);
        }
        match store.prepare(&text, None, IdRule::FromBody) {
            Ok(p) => batch.ops.push(WriteOp::put(WriteKind::Import, p)),
            Err(err) => batch
                .errors
                .push(format!("{name}: entry {i}: {}", err.diagnostics)),
        }
    }
    batch
}
