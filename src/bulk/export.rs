//! Running one export job: resolve (once) the members it covers, then stream each resource
//! type's rows into NDJSON parts of the configured size, then the `deleted` Bundles (with
//! `_since`), then the error file. Each finished part is committed to storage and recorded
//! together with the position after it ([`Checkpoint`]); a job resumed after a crash starts
//! at that position and redoes only the unfinished part, so nothing is written twice or lost.
//!
//! All reads go through `Store::stream_export` with the job owner's rebuilt access context.

use super::Engine;
use super::job::{Job, JobFile, JobPayload, StoredAccess, now_ms};
use super::ndjson::PartWriter;
use super::request::{ExportParams, Level, parse_type_filter};
use crate::fhir::datetime::format_instant;
use crate::identity::{AccessContext, DataScope};
use crate::search::query::SearchRequest;
use crate::store::export::ExportSlice;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Members per export query of a Patient/Group-level job.
const MEMBER_CHUNK: usize = 500;

/// Where a job continues: the next task (one per type for output, then one per type for
/// deleted), the member chunk within it, the last row written before the checkpoint, and the
/// sequence number of the next part.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    pub task: usize,
    pub chunk: usize,
    pub after: Option<(i64, i64)>,
    pub seq: i64,
    /// Rows written in finished parts so far (progress).
    pub written: i64,
}

/// The members of a Patient/Group-level job, as stored with it once resolved, in two
/// disjoint sorted lists: those exported without their sensitive data, and those whose own
/// consent also releases it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobMembers {
    pub regular: Vec<String>,
    pub sensitive: Vec<String>,
}

/// One export query's share of the members, and the access it reads with.
struct MemberChunk<'m> {
    ids: Option<&'m [String]>,
    ctx: Arc<AccessContext>,
}

impl JobMembers {
    fn new(all: Vec<String>, mut sensitive: Vec<String>) -> JobMembers {
        sensitive.sort();
        sensitive.dedup();
        let mut regular: Vec<String> = all
            .into_iter()
            .filter(|m| sensitive.binary_search(m).is_err())
            .collect();
        regular.sort();
        regular.dedup();
        JobMembers { regular, sensitive }
    }

    /// The member chunks in a fixed order (a checkpoint names a chunk by its position):
    /// first the regular members, then those whose consent allows sensitive data
    /// (§pdex-203/207: the allowance is each member's own, never another's). Each chunk reads
    /// with the job's context narrowed to the chunk's members — never wider: a member outside
    /// the job's scope is dropped — and, for the second kind, widened to sensitive data. (The
    /// narrowing also keeps every query's access restriction to one chunk of ids instead of
    /// the whole Group.)
    fn chunks(&self, job_ctx: &AccessContext) -> Vec<MemberChunk<'_>> {
        let in_scope: Option<std::collections::HashSet<&str>> = job_ctx
            .scope
            .members()
            .map(|m| m.iter().map(String::as_str).collect());
        let narrowed = |ids: &[String], sensitive: bool| {
            let mut ctx = job_ctx.clone();
            ctx.allow_sensitive |= sensitive;
            if !matches!(ctx.scope, DataScope::Patient(_)) {
                let ids = ids
                    .iter()
                    .filter(|m| in_scope.as_ref().is_none_or(|s| s.contains(m.as_str())))
                    .cloned()
                    .collect();
                ctx.scope = DataScope::Patients(ids);
            }
            Arc::new(ctx)
        };
        let regular = self.regular.chunks(MEMBER_CHUNK).map(|c| MemberChunk {
            ids: Some(c),
            ctx: narrowed(c, false),
        });
        let sensitive = self.sensitive.chunks(MEMBER_CHUNK).map(|c| MemberChunk {
            ids: Some(c),
            ctx: narrowed(c, true),
        });
        regular.chain(sensitive).collect()
    }
}

/// Why a run stopped before completing.
#[derive(Debug)]
pub enum Stop {
    /// The job is no longer ours (cancelled, or its lease was taken over).
    Lost,
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Self {
        Stop::Failed(e)
    }
}

impl From<crate::fhir::FhirError> for Stop {
    fn from(e: crate::fhir::FhirError) -> Self {
        Stop::Failed(anyhow::anyhow!("{}", e.diagnostics))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Section {
    Output,
    Deleted,
}

struct Task {
    section: Section,
    rtype: String,
}

/// One running job and its worker's lease.
pub struct Run<'a> {
    engine: &'a Engine,
    job: &'a Job,
    worker: &'a str,
    ctx: AccessContext,
    params: ExportParams,
    /// The stored member list and its error outcomes, once resolved.
    payload: JobPayload,
    lease_ms: i64,
    last_beat: Instant,
    cp: Checkpoint,
}

impl<'a> Run<'a> {
    pub fn new(
        engine: &'a Engine,
        job: &'a Job,
        worker: &'a str,
        payload: JobPayload,
    ) -> anyhow::Result<Run<'a>> {
        let access: StoredAccess = serde_json::from_str(&job.access)?;
        let params: ExportParams = serde_json::from_str(&payload.params)?;
        let cp = match &job.checkpoint {
            Some(c) => serde_json::from_str(c)?,
            None => Checkpoint::default(),
        };
        Ok(Run {
            engine,
            job,
            worker,
            ctx: access.rebuild(),
            params,
            payload,
            lease_ms: engine.config.lease_seconds as i64 * 1000,
            last_beat: Instant::now(),
            cp,
        })
    }

    /// Runs the job to completion from its checkpoint.
    pub async fn execute(mut self) -> Result<(), Stop> {
        let members = self.members().await?;
        let chunks = members.as_ref().map(|m| m.chunks(&self.ctx));
        let until = self.params.until.map_or(self.job.transaction_time, |u| {
            u.min(self.job.transaction_time)
        });
        let mut tasks: Vec<Task> = self
            .params
            .types
            .iter()
            .map(|t| Task {
                section: Section::Output,
                rtype: t.clone(),
            })
            .collect();
        if self.params.since.is_some() {
            // Bulk STU2 "deleted": resources deleted after `_since`, as transaction Bundles.
            tasks.extend(self.params.types.iter().map(|t| Task {
                section: Section::Deleted,
                rtype: t.clone(),
            }));
        }
        let n_tasks = tasks.len();
        while self.cp.task < n_tasks {
            let task = &tasks[self.cp.task];
            self.run_task(task, chunks.as_deref(), until, n_tasks)
                .await?;
        }
        self.write_errors().await?;
        let expires = now_ms() + self.engine.config.expiry_seconds as i64 * 1000;
        if !self
            .engine
            .jobs
            .complete(&self.job.id, self.worker, expires)
            .await?
        {
            return Err(Stop::Lost);
        }
        Ok(())
    }

    /// The members a Patient/Group-level job covers (`None`: no member list, every member
    /// the caller may see). Resolved and filtered on the first run, then read back.
    async fn members(&mut self) -> Result<Option<JobMembers>, Stop> {
        if let Some(m) = &self.payload.members {
            return Ok(serde_json::from_str(m).map_err(anyhow::Error::from)?);
        }
        let filter = match &self.params.member_filter {
            Some(name) => Some(self.engine.member_filter(name).ok_or_else(|| {
                Stop::Failed(anyhow::anyhow!("member filter {name} is not registered"))
            })?),
            None => None,
        };
        let listed: Option<Vec<String>> = match (&self.params.level, &self.params.patients) {
            (Level::System, _) => return Ok(None),
            (_, Some(ids)) => Some(ids.clone()),
            (Level::Group(id), None) => Some(self.group_members(id).await?),
            (Level::Patient, None) if filter.is_some() => {
                let mut ids = Vec::new();
                let mut s = self.engine.store.stream_patient_ids(&self.ctx);
                while let Some(id) = s.next().await {
                    ids.push(id?);
                }
                Some(ids)
            }
            (Level::Patient, None) => None,
        };
        let mut errors: Vec<Value> = Vec::new();
        let admitted = match (listed, filter) {
            (Some(ids), Some(f)) => {
                let admission = f.admit(&self.engine.store, &self.ctx, ids).await?;
                errors = admission.left_out;
                Some(JobMembers::new(admission.members, admission.sensitive))
            }
            (ids, _) => ids.map(|ids| JobMembers::new(ids, vec![])),
        };
        let text = serde_json::to_string(&admitted).map_err(anyhow::Error::from)?;
        let errors = serde_json::to_string(&errors).map_err(anyhow::Error::from)?;
        if !self
            .engine
            .jobs
            .set_members(&self.job.id, self.worker, &text, &errors)
            .await?
        {
            return Err(Stop::Lost);
        }
        self.payload.errors = Some(errors);
        Ok(admitted)
    }

    /// Patient members of a Group (active ones), as the caller can see the Group.
    async fn group_members(&self, id: &str) -> Result<Vec<String>, Stop> {
        let group = self
            .engine
            .store
            .read(&self.ctx, "Group", id)
            .await?
            .filter(|g| !g.deleted)
            .ok_or_else(|| Stop::Failed(anyhow::anyhow!("Group/{id} is gone")))?;
        Ok(group_member_ids(&group.content))
    }

    async fn run_task(
        &mut self,
        task: &Task,
        member_chunks: Option<&[MemberChunk<'_>]>,
        until: i64,
        n_tasks: usize,
    ) -> Result<(), Stop> {
        let filters: Vec<SearchRequest> = if task.section == Section::Output {
            self.params
                .type_filters
                .get(&task.rtype)
                .into_iter()
                .flatten()
                .map(|q| {
                    parse_type_filter(&self.engine.store, &task.rtype, q, "")
                        .map_err(|e| Stop::Failed(anyhow::anyhow!("_typeFilter {q}: {e}")))
                })
                .collect::<Result<_, _>>()?
        } else {
            vec![]
        };
        let elements = self.params.elements_for(&task.rtype);
        let everyone = [MemberChunk {
            ids: None,
            ctx: Arc::new(self.ctx.clone()),
        }];
        let chunks = member_chunks.unwrap_or(&everyone);
        let engine: &'a Engine = self.engine;
        let split = engine.config.file_size_bytes.max(1);
        let mut part: Option<(PartWriter, i64)> = None;
        let mut last: Option<(i64, i64)> = None;
        while self.cp.chunk < chunks.len() {
            let chunk = &chunks[self.cp.chunk];
            let slice = ExportSlice {
                rtype: &task.rtype,
                since: self.params.since,
                until,
                patients: chunk.ids,
                compartment_only: self.params.is_member_level(),
                filters: &filters,
                after: if last.is_none() { self.cp.after } else { last },
                deleted: task.section == Section::Deleted,
            };
            let mut rows = engine.store.stream_export(&chunk.ctx, slice)?;
            while let Some(row) = rows.next().await {
                let row = row?;
                let line: Cow<'_, str> = match task.section {
                    Section::Output => {
                        // released by the store (`access::View`: EOB views, PA rule, window)
                        let mut c = Cow::Borrowed(row.content.as_str());
                        if let Some(el) = &elements {
                            c = Cow::Owned(crate::fhir::json::select_elements(&c, el));
                        }
                        one_line(c)
                    }
                    Section::Deleted => Cow::Owned(deleted_bundle(&task.rtype, &row.id)),
                };
                if part.is_none() {
                    let seq = self.cp.seq;
                    let name = file_name(task, seq);
                    let path = self.engine.spool_dir(&self.job.id).join(&name);
                    part = Some((PartWriter::create(&path).await?, seq));
                }
                let (w, _) = part.as_mut().expect("part open");
                w.write_line(&line).await?;
                last = Some((row.last_updated, row.pk));
                if w.bytes >= split {
                    drop(rows);
                    let (w, seq) = part.take().expect("part open");
                    let next = Checkpoint {
                        task: self.cp.task,
                        chunk: self.cp.chunk,
                        after: last,
                        seq: seq + 1,
                        written: self.cp.written + w.count as i64,
                    };
                    self.finish_part(task, w, seq, next, n_tasks).await?;
                    // continue this chunk after the row just written
                    rows = engine.store.stream_export(
                        &chunk.ctx,
                        ExportSlice {
                            after: last,
                            ..slice
                        },
                    )?;
                    continue;
                }
                self.beat_if_due(n_tasks).await?;
            }
            self.cp.chunk += 1;
            self.cp.after = None;
            last = None;
        }
        let next = Checkpoint {
            task: self.cp.task + 1,
            chunk: 0,
            after: None,
            seq: self.cp.seq + part.is_some() as i64,
            written: self.cp.written + part.as_ref().map_or(0, |(w, _)| w.count as i64),
        };
        match part.take() {
            Some((w, seq)) => self.finish_part(task, w, seq, next, n_tasks).await,
            None => {
                let progress = self.progress_text(&next, n_tasks);
                self.save(None, next, &progress).await
            }
        }
    }

    async fn finish_part(
        &mut self,
        task: &Task,
        w: PartWriter,
        seq: i64,
        next: Checkpoint,
        n_tasks: usize,
    ) -> Result<(), Stop> {
        let (spool, bytes, count) = w.finish().await?;
        let name = file_name(task, seq);
        self.engine
            .storage
            .commit(&self.job.id, &name, &spool)
            .await?;
        let file = JobFile {
            seq,
            section: match task.section {
                Section::Output => "output",
                Section::Deleted => "deleted",
            }
            .into(),
            rtype: match task.section {
                Section::Output => task.rtype.clone(),
                Section::Deleted => "Bundle".into(),
            },
            name,
            count: count as i64,
            bytes: bytes as i64,
        };
        let progress = self.progress_text(&next, n_tasks);
        self.save(Some(&file), next, &progress).await
    }

    async fn save(
        &mut self,
        file: Option<&JobFile>,
        next: Checkpoint,
        progress: &str,
    ) -> Result<(), Stop> {
        let text = serde_json::to_string(&next).map_err(anyhow::Error::from)?;
        if !self
            .engine
            .jobs
            .checkpoint(
                &self.job.id,
                self.worker,
                self.lease_ms,
                file,
                &text,
                progress,
            )
            .await?
        {
            return Err(Stop::Lost);
        }
        self.cp = next;
        self.last_beat = Instant::now();
        Ok(())
    }

    /// Extends the lease every third of it; stops when the job is no longer ours.
    async fn beat_if_due(&mut self, n_tasks: usize) -> Result<(), Stop> {
        if self.last_beat.elapsed() < Duration::from_millis(self.lease_ms as u64 / 3) {
            return Ok(());
        }
        let progress = self.progress_text(&self.cp, n_tasks);
        if !self
            .engine
            .jobs
            .heartbeat(&self.job.id, self.worker, self.lease_ms, &progress)
            .await?
        {
            return Err(Stop::Lost);
        }
        self.last_beat = Instant::now();
        Ok(())
    }

    fn progress_text(&self, cp: &Checkpoint, n_tasks: usize) -> String {
        format!(
            "{} resources in finished files; step {} of {}",
            cp.written,
            (cp.task + 1).min(n_tasks.max(1)),
            n_tasks.max(1)
        )
    }

    /// The error file: parameters ignored under lenient handling, members left out by the
    /// member filter.
    async fn write_errors(&mut self) -> Result<(), Stop> {
        let mut outcomes: Vec<Value> = self
            .params
            .warnings
            .iter()
            .map(|w| {
                json!({"resourceType": "OperationOutcome", "issue": [{
                    "severity": "warning", "code": "not-supported",
                    "diagnostics": format!("ignored (Prefer: handling=lenient): {w}")
                }]})
            })
            .collect();
        if let Some(e) = &self.payload.errors {
            let list: Vec<Value> = serde_json::from_str(e).map_err(anyhow::Error::from)?;
            outcomes.extend(list);
        }
        if outcomes.is_empty() {
            return Ok(());
        }
        let task = Task {
            section: Section::Output,
            rtype: "OperationOutcome".into(),
        };
        let seq = self.cp.seq;
        let name = format!("{seq:05}-errors.ndjson");
        let path = self.engine.spool_dir(&self.job.id).join(&name);
        let mut w = PartWriter::create(&path).await?;
        for o in &outcomes {
            w.write_line(&o.to_string()).await?;
        }
        let (spool, bytes, count) = w.finish().await?;
        self.engine
            .storage
            .commit(&self.job.id, &name, &spool)
            .await?;
        let file = JobFile {
            seq,
            section: "error".into(),
            rtype: task.rtype,
            name,
            count: count as i64,
            bytes: bytes as i64,
        };
        let next = Checkpoint {
            seq: seq + 1,
            ..self.cp.clone()
        };
        self.save(Some(&file), next, "writing the error file").await
    }
}

fn file_name(task: &Task, seq: i64) -> String {
    match task.section {
        Section::Output => format!("{seq:05}-{}.ndjson", task.rtype),
        Section::Deleted => format!("{seq:05}-{}-deleted.ndjson", task.rtype),
    }
}

/// NDJSON needs one resource per line. Stored JSON keeps nested values as received, which
/// may be pretty-printed; a raw line break can only be whitespace between tokens (inside
/// strings it is escaped), so dropping it keeps the JSON identical in meaning.
fn one_line(c: Cow<'_, str>) -> Cow<'_, str> {
    if c.bytes().any(|b| b == b'\n' || b == b'\r') {
        Cow::Owned(c.replace(['\n', '\r'], ""))
    } else {
        c
    }
}

/// Bulk STU2 "deleted": "a FHIR Bundle with a type of transaction… request.method SHALL be
/// set to DELETE".
fn deleted_bundle(rtype: &str, id: &str) -> String {
    json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": format!("{rtype}/{id}")}}]
    })
    .to_string()
}

/// Active Patient members of a Group resource (`member.entity` references `Patient/{id}`,
/// without `inactive: true`).
pub fn group_member_ids(content: &str) -> Vec<String> {
    let group: Value = serde_json::from_str(content).unwrap_or_default();
    let mut ids: Vec<String> = group["member"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["inactive"] != true)
        .filter_map(|m| m["entity"]["reference"].as_str())
        // relative references only: an absolute one names a Patient on another server
        .filter_map(|r| {
            let id = r.strip_prefix("Patient/")?;
            crate::fhir::is_valid_id(id).then(|| id.to_owned())
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// `transactionTime` as the manifest writes it.
pub fn instant(ms: i64) -> String {
    format_instant(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_printed_json_becomes_one_line_with_the_same_meaning() {
        let pretty = "{\r\n  \"resourceType\": \"Basic\",\n  \"note\": \"two\\nlines\"\n}";
        let line = one_line(Cow::Borrowed(pretty));
        assert!(!line.contains('\n') && !line.contains('\r'));
        let a: Value = serde_json::from_str(pretty).unwrap();
        let b: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(a, b);
        assert!(matches!(one_line(Cow::Borrowed("{}")), Cow::Borrowed(_)));
    }

    #[test]
    fn group_members_are_active_patient_references() {
        let g = r#"{"resourceType":"Group","member":[
            {"entity":{"reference":"Patient/b"}},
            {"entity":{"reference":"Patient/a"}},
            {"entity":{"reference":"http://other/fhir/Patient/z"}},
            {"entity":{"reference":"Patient/c"},"inactive":true},
            {"entity":{"reference":"Practitioner/d"}},
            {"entity":{"reference":"Patient/b"}}]}"#;
        assert_eq!(group_member_ids(g), vec!["a", "b"]);
    }
}
