//! The `jobs` and `job_files` tables: creating jobs, claiming them under a lease (several
//! processes on one Postgres share the queue with `FOR UPDATE SKIP LOCKED`; SQLite has one
//! writer, so the same statement is atomic there), heartbeats, per-part checkpoints, and the
//! terminal states. Every state change by a worker is guarded by its lease, so a worker that
//! lost its job (lease expired and taken over, or the job was cancelled) cannot write to it.

use crate::identity::{AccessContext, ClientKind, DataScope, OrgIdentifier};
use crate::store::db::{Database, Row, SqlValue};
use crate::store::{Dialect, Store};
use serde::{Deserialize, Serialize};

/// Job states as stored.
pub mod state {
    pub const QUEUED: &str = "queued";
    pub const RUNNING: &str = "running";
    pub const COMPLETED: &str = "completed";
    pub const FAILED: &str = "failed";
    /// Stopped before it ran because the access it was started with ended (client
    /// disabled, token revoked, consent revoked: `auth::liveness`).
    pub const REFUSED: &str = "refused";
    pub const CANCELLED: &str = "cancelled";
    pub const EXPIRED: &str = "expired";
}

/// The parts of an [`AccessContext`] a worker needs to rebuild it (stored as JSON in the job).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredAccess {
    pub client_id: Option<String>,
    pub kind: String,
    pub organization: Option<(String, String)>,
    pub scopes: Vec<String>,
    /// `None` for every member (`DataScope::All`).
    pub patients: Option<Vec<String>>,
    /// A patient-scoped token's member (`DataScope::Patient`); `patients` is then that one.
    #[serde(default)]
    pub patient_token: bool,
    pub allow_sensitive: bool,
    pub cert_thumbprint: Option<String>,
    /// The token that started the job, and the consent a member-scoped token stood on:
    /// re-checked whenever the job starts or resumes (`auth::liveness`).
    #[serde(default)]
    pub token_id: Option<String>,
    #[serde(default)]
    pub consent: Option<(String, String)>,
    /// The member's authorization an app's token stood on (Patient Access).
    #[serde(default)]
    pub authorization_id: Option<String>,
}

impl StoredAccess {
    pub fn of(ctx: &AccessContext) -> Self {
        StoredAccess {
            client_id: ctx.client_id.clone(),
            kind: ctx.kind.as_str().to_owned(),
            organization: ctx
                .organization
                .as_ref()
                .map(|o| (o.system.clone(), o.value.clone())),
            scopes: ctx.scopes.clone(),
            patients: ctx.scope.members().map(<[String]>::to_vec),
            patient_token: matches!(ctx.scope, DataScope::Patient(_)),
            allow_sensitive: ctx.allow_sensitive,
            cert_thumbprint: ctx.cert_thumbprint.clone(),
            token_id: ctx.grant.token_id.clone(),
            consent: ctx.grant.consent.clone(),
            authorization_id: ctx.grant.authorization_id.clone(),
        }
    }

    /// The context the job reads with: the caller's, never wider (and never able to write).
    pub fn rebuild(&self) -> AccessContext {
        AccessContext {
            client_id: self.client_id.clone(),
            // An unknown kind cannot come from `of`; fall back to the narrowest one.
            kind: ClientKind::parse(&self.kind).unwrap_or(ClientKind::App),
            organization: self
                .organization
                .clone()
                .map(|(system, value)| OrgIdentifier { system, value }),
            scopes: self.scopes.clone(),
            scope: match (&self.patients, self.patient_token) {
                (None, _) => DataScope::All,
                (Some(ids), true) if ids.len() == 1 => DataScope::Patient(ids[0].clone()),
                (Some(ids), _) => DataScope::Patients(ids.clone()),
            },
            allow_sensitive: self.allow_sensitive,
            can_write: false,
            cert_thumbprint: self.cert_thumbprint.clone(),
            grant: crate::identity::GrantRef {
                token_id: self.token_id.clone(),
                consent: self.consent.clone(),
                authorization_id: self.authorization_id.clone(),
            },
        }
    }
}

/// The owner key of a context: its client id, or `""` for the operator.
pub fn owner_of(ctx: &AccessContext) -> String {
    ctx.client_id.clone().unwrap_or_default()
}

/// A job row.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub kind: String,
    pub owner_client: String,
    pub owner_cert: Option<String>,
    pub request_url: String,
    pub access: String,
    pub state: String,
    pub transaction_time: i64,
    pub created_at: i64,
    pub progress: Option<String>,
    pub checkpoint: Option<String>,
    pub failure: Option<String>,
    pub completed_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub last_polled_at: Option<i64>,
}

const JOB_COLUMNS: &str = "id, kind, owner_client, owner_cert, request_url, access, state, \
     transaction_time, created_at, progress, checkpoint, failure, completed_at, expires_at, \
     last_polled_at";

fn job_from_row(row: Row) -> anyhow::Result<Job> {
    // columns in `JOB_COLUMNS` order
    Ok(Job {
        id: row.text(0)?,
        kind: row.text(1)?,
        owner_client: row.text(2)?,
        owner_cert: row.opt_text(3)?,
        request_url: row.text(4)?,
        access: row.text(5)?,
        state: row.text(6)?,
        transaction_time: row.int(7)?,
        created_at: row.int(8)?,
        progress: row.opt_text(9)?,
        checkpoint: row.opt_text(10)?,
        failure: row.opt_text(11)?,
        completed_at: row.opt_int(12)?,
        expires_at: row.opt_int(13)?,
        last_polled_at: row.opt_int(14)?,
    })
}

/// A job's large, write-once parts (table `job_payloads`), read by its runner only: the
/// status poll, heartbeats and checkpoints never touch them.
#[derive(Debug, Clone, Default)]
pub struct JobPayload {
    /// The validated request, JSON.
    pub params: String,
    /// The members of a Patient/Group export, fixed when it first runs.
    pub members: Option<String>,
    /// OperationOutcomes for the error file, recorded with `members`.
    pub errors: Option<String>,
}

/// A finished file part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFile {
    pub seq: i64,
    /// `output`, `deleted` or `error`.
    pub section: String,
    /// The manifest `type`.
    pub rtype: String,
    pub name: String,
    pub count: i64,
    pub bytes: i64,
}

/// What a kick-off stores.
pub struct NewJob<'a> {
    pub kind: &'a str,
    pub ctx: &'a AccessContext,
    pub request_url: &'a str,
    pub params: String,
    pub transaction_time: i64,
    /// Workers start it no earlier than this (lets in-flight writes commit first).
    pub not_before: i64,
}

/// Job table access over a store's database.
#[derive(Clone)]
pub struct Jobs {
    store: Store,
}

impl Jobs {
    pub fn new(store: Store) -> Self {
        Jobs { store }
    }

    fn db(&self) -> &dyn Database {
        self.store.db.as_ref()
    }

    /// Queues a job unless its owner already has `limit` queued or running jobs; `None` then.
    /// The count and the insert run in one write transaction, so concurrent kick-offs of one
    /// client cannot both slip under the limit.
    pub async fn create(&self, job: NewJob<'_>, limit: usize) -> anyhow::Result<Option<String>> {
        let owner = owner_of(job.ctx);
        let mut tx = self.store.db.begin().await?;
        if self.store.db.dialect() == Dialect::Postgres {
            // serialise kick-offs of one owner (SQLite's write transaction already does)
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext(?))",
                vec![SqlValue::from(format!("pdex-jobs:{owner}"))],
            )
            .await?;
        }
        let active = tx
            .fetch(
                "SELECT COUNT(*) FROM jobs WHERE owner_client = ? AND state IN ('queued', 'running')",
                vec![SqlValue::from(&owner)],
            )
            .await?
            .first()
            .ok_or_else(|| anyhow::anyhow!("COUNT(*) returned no row"))?
            .int(0)?;
        if active as usize >= limit {
            return Ok(None);
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let access = serde_json::to_string(&StoredAccess::of(job.ctx))?;
        tx.execute(
            "INSERT INTO jobs (id, kind, owner_client, owner_cert, request_url, access, state, \
             transaction_time, created_at, not_before) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
            vec![
                SqlValue::from(&id),
                SqlValue::from(job.kind),
                SqlValue::from(owner),
                SqlValue::from(job.ctx.cert_thumbprint.clone()),
                SqlValue::from(job.request_url),
                SqlValue::from(access),
                SqlValue::Int(job.transaction_time),
                SqlValue::Int(now_ms()),
                SqlValue::Int(job.not_before),
            ],
        )
        .await?;
        tx.execute(
            "INSERT INTO job_payloads (job_id, params) VALUES (?, ?)",
            vec![SqlValue::from(&id), SqlValue::from(job.params)],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    /// The job's request and member list, for its runner.
    pub async fn payload(&self, id: &str) -> anyhow::Result<JobPayload> {
        let rows = self
            .db()
            .fetch(
                "SELECT params, members, errors FROM job_payloads WHERE job_id = ?",
                &[SqlValue::from(id)],
            )
            .await?;
        let row = rows
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("job {id} has no stored request"))?;
        Ok(JobPayload {
            params: row.text(0)?,
            members: row.opt_text(1)?,
            errors: row.opt_text(2)?,
        })
    }

    pub async fn get(&self, id: &str) -> anyhow::Result<Option<Job>> {
        let rows = self
            .db()
            .fetch(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"),
                &[SqlValue::from(id)],
            )
            .await?;
        rows.into_iter().next().map(job_from_row).transpose()
    }

    /// Takes the oldest runnable job — queued and due, or running with an expired lease (its
    /// worker died) — for `worker`, leased until now + `lease_ms`.
    pub async fn claim(&self, worker: &str, lease_ms: i64) -> anyhow::Result<Option<Job>> {
        let now = now_ms();
        let lock = if self.store.db.dialect() == Dialect::Postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let mut tx = self.store.db.begin().await?;
        let picked = tx
            .fetch(
                &format!(
                    "SELECT id FROM jobs WHERE (state = 'queued' AND not_before <= ?) \
                     OR (state = 'running' AND lease_until < ?) ORDER BY created_at LIMIT 1{lock}"
                ),
                vec![SqlValue::Int(now), SqlValue::Int(now)],
            )
            .await?;
        let Some(id) = picked.first().map(|r| r.text(0)).transpose()? else {
            return Ok(None);
        };
        tx.execute(
            "UPDATE jobs SET state = 'running', lease_owner = ?, lease_until = ?, heartbeat_at = ? WHERE id = ?",
            vec![
                SqlValue::from(worker),
                SqlValue::Int(now + lease_ms),
                SqlValue::Int(now),
                SqlValue::from(&id),
            ],
        )
        .await?;
        tx.commit().await?;
        self.get(&id).await
    }

    /// Extends `worker`'s lease and records progress; `false` when the job is no longer this
    /// worker's to run (cancelled, or taken over), and the worker must stop.
    pub async fn heartbeat(
        &self,
        id: &str,
        worker: &str,
        lease_ms: i64,
        progress: &str,
    ) -> anyhow::Result<bool> {
        let now = now_ms();
        let mut tx = self.store.db.begin().await?;
        let n = tx
            .execute(
                "UPDATE jobs SET lease_until = ?, heartbeat_at = ?, progress = ? \
                 WHERE id = ? AND lease_owner = ? AND state = 'running'",
                vec![
                    SqlValue::Int(now + lease_ms),
                    SqlValue::Int(now),
                    SqlValue::from(progress),
                    SqlValue::from(id),
                    SqlValue::from(worker),
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Records a finished part (if any) and the checkpoint after it, atomically; `false` when
    /// the job is no longer this worker's.
    pub async fn checkpoint(
        &self,
        id: &str,
        worker: &str,
        lease_ms: i64,
        file: Option<&JobFile>,
        checkpoint: &str,
        progress: &str,
    ) -> anyhow::Result<bool> {
        let now = now_ms();
        let mut tx = self.store.db.begin().await?;
        let n = tx
            .execute(
                "UPDATE jobs SET checkpoint = ?, progress = ?, lease_until = ?, heartbeat_at = ? \
                 WHERE id = ? AND lease_owner = ? AND state = 'running'",
                vec![
                    SqlValue::from(checkpoint),
                    SqlValue::from(progress),
                    SqlValue::Int(now + lease_ms),
                    SqlValue::Int(now),
                    SqlValue::from(id),
                    SqlValue::from(worker),
                ],
            )
            .await?;
        if n != 1 {
            return Ok(false);
        }
        if let Some(f) = file {
            // A part redone after a restart replaces the row its first attempt may have left.
            tx.execute(
                "DELETE FROM job_files WHERE job_id = ? AND seq = ?",
                vec![SqlValue::from(id), SqlValue::Int(f.seq)],
            )
            .await?;
            tx.execute(
                "INSERT INTO job_files (job_id, seq, section, rtype, name, count, bytes) VALUES (?, ?, ?, ?, ?, ?, ?)",
                vec![
                    SqlValue::from(id),
                    SqlValue::Int(f.seq),
                    SqlValue::from(&f.section),
                    SqlValue::from(&f.rtype),
                    SqlValue::from(&f.name),
                    SqlValue::Int(f.count),
                    SqlValue::Int(f.bytes),
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Stores the members a Patient- or Group-level job exports (resolved and filtered once,
    /// when it first runs, so that a resumed job iterates exactly the same list).
    pub async fn set_members(
        &self,
        id: &str,
        worker: &str,
        members: &str,
        errors: &str,
    ) -> anyhow::Result<bool> {
        self.guarded_update(
            "UPDATE job_payloads SET members = ?, errors = ? WHERE job_id = ? AND EXISTS \
             (SELECT 1 FROM jobs WHERE id = ? AND lease_owner = ? AND state = 'running')",
            vec![
                SqlValue::from(members),
                SqlValue::from(errors),
                SqlValue::from(id),
                SqlValue::from(id),
                SqlValue::from(worker),
            ],
        )
        .await
    }

    pub async fn complete(&self, id: &str, worker: &str, expires_at: i64) -> anyhow::Result<bool> {
        let now = now_ms();
        self.guarded_update(
            "UPDATE jobs SET state = 'completed', completed_at = ?, expires_at = ?, progress = 'complete', \
             lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ? AND state = 'running'",
            vec![SqlValue::Int(now), SqlValue::Int(expires_at), SqlValue::from(id), SqlValue::from(worker)],
        )
        .await
    }

    pub async fn fail(&self, id: &str, worker: &str, why: &str) -> anyhow::Result<bool> {
        self.end_run(id, worker, state::FAILED, why).await
    }

    /// Marks a running job `refused` with the reason for its owner (see [`state::REFUSED`]).
    pub async fn refuse(&self, id: &str, worker: &str, why: &str) -> anyhow::Result<bool> {
        self.end_run(id, worker, state::REFUSED, why).await
    }

    /// Ends `worker`'s run of a running job in the terminal `new_state` with `why`.
    async fn end_run(
        &self,
        id: &str,
        worker: &str,
        new_state: &str,
        why: &str,
    ) -> anyhow::Result<bool> {
        self.guarded_update(
            "UPDATE jobs SET state = ?, failure = ?, completed_at = ?, lease_owner = NULL, lease_until = NULL \
             WHERE id = ? AND lease_owner = ? AND state = 'running'",
            vec![
                SqlValue::from(new_state),
                SqlValue::from(why),
                SqlValue::Int(now_ms()),
                SqlValue::from(id),
                SqlValue::from(worker),
            ],
        )
        .await
    }

    /// Moves a job to `cancelled` (from any live state) or `expired` (from completed);
    /// `false` if it was already gone.
    pub async fn finish_as(&self, id: &str, new_state: &str) -> anyhow::Result<bool> {
        let from = if new_state == state::EXPIRED {
            "('completed', 'failed', 'refused')"
        } else {
            "('queued', 'running', 'completed', 'failed', 'refused')"
        };
        self.guarded_update(
            &format!(
                "UPDATE jobs SET state = ?, lease_owner = NULL, lease_until = NULL WHERE id = ? AND state IN {from}"
            ),
            vec![SqlValue::from(new_state), SqlValue::from(id)],
        )
        .await
    }

    /// Records a status poll; returns the previous poll time.
    pub async fn touch_poll(&self, id: &str) -> anyhow::Result<Option<i64>> {
        let prev = self
            .db()
            .fetch(
                "SELECT last_polled_at FROM jobs WHERE id = ?",
                &[SqlValue::from(id)],
            )
            .await?
            .first()
            .map(|r| r.opt_int(0))
            .transpose()?
            .flatten();
        self.guarded_update(
            "UPDATE jobs SET last_polled_at = ? WHERE id = ?",
            vec![SqlValue::Int(now_ms()), SqlValue::from(id)],
        )
        .await?;
        Ok(prev)
    }

    pub async fn files(&self, id: &str) -> anyhow::Result<Vec<JobFile>> {
        let rows = self
            .db()
            .fetch(
                "SELECT seq, section, rtype, name, count, bytes FROM job_files WHERE job_id = ? ORDER BY seq",
                &[SqlValue::from(id)],
            )
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(JobFile {
                    seq: row.int(0)?,
                    section: row.text(1)?,
                    rtype: row.text(2)?,
                    name: row.text(3)?,
                    count: row.int(4)?,
                    bytes: row.int(5)?,
                })
            })
            .collect()
    }

    /// Completed jobs whose files have passed their expiry.
    pub async fn expired(&self, now: i64) -> anyhow::Result<Vec<String>> {
        let rows = self
            .db()
            .fetch(
                "SELECT id FROM jobs WHERE state IN ('completed', 'failed') AND expires_at IS NOT NULL AND expires_at < ?",
                &[SqlValue::Int(now)],
            )
            .await?;
        rows.iter().map(|r| r.text(0)).collect()
    }

    async fn guarded_update(&self, sql: &str, params: Vec<SqlValue>) -> anyhow::Result<bool> {
        let mut tx = self.store.db.begin().await?;
        let n = tx.execute(sql, params).await?;
        tx.commit().await?;
        Ok(n >= 1)
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
