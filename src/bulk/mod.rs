//! The Bulk Data export engine: asynchronous export jobs persisted in the store (`job.rs`),
//! run by a worker pool inside the server under leases with heartbeats (`worker.rs`), which
//! streams stored JSON into size-split NDJSON parts (`ndjson.rs`), checkpointed per part so
//! a killed server resumes without duplicates or losses (`export.rs`), kept in a file
//! storage backend (`storage.rs`), described by the Bulk STU2 manifest (`manifest.rs`), and
//! removed after expiry. Kick-off parameters are validated in `request.rs`; the HTTP
//! handlers live in `ops::export`.
//!
//! Operations that reuse the engine (`$davinci-data-export`) plug in per-member checks run
//! when a job starts ([`MemberFilter`], e.g. consent re-evaluation), registered by name.
//! What of each row a job's owner receives (EOB views, the prior-authorization rule, the
//! look-back window) is the store's `access::View`, as on every read path.
//!
//! Depends on `store` (all reads go through its access-filtered export stream), `search`
//! (for `_typeFilter`), `auth` (the context type), `fhir`, `config`.

pub mod export;
pub mod job;
pub mod manifest;
pub mod ndjson;
pub mod object;
pub mod request;
pub mod storage;
pub mod worker;

use crate::config::BulkConfig;
use crate::identity::AccessContext;
use crate::store::Store;
use async_trait::async_trait;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// A check run once per job, when it starts executing, over the members it would export.
/// `$davinci-data-export` re-evaluates consent here (§pdex-167: "at the time of execution").
#[async_trait]
pub trait MemberFilter: Send + Sync {
    async fn admit(
        &self,
        store: &Store,
        ctx: &AccessContext,
        members: Vec<String>,
    ) -> anyhow::Result<Admission>;
}

/// What a [`MemberFilter`] decided for a job's members.
#[derive(Debug, Default)]
pub struct Admission {
    /// The members to export.
    pub members: Vec<String>,
    /// Those of `members` whose sensitive data may go out too (a `#sensitive` consent); the
    /// others are exported without it, whatever the job's own context allows.
    pub sensitive: Vec<String>,
    /// An OperationOutcome (for the error file) for each member left out.
    pub left_out: Vec<Value>,
}

/// A kind of job other than exports (e.g. `$bulk-member-match`), run by the same workers
/// under the same leases, its files recorded and served like an export's.
#[async_trait]
pub trait JobRunner: Send + Sync {
    /// Runs `job` to completion (recording its files and completing it); `Ok(false)` when
    /// the job stopped being this worker's (cancelled or taken over).
    async fn run(&self, engine: &Engine, job: &job::Job, worker: &str) -> anyhow::Result<bool>;
}

/// The engine shared by the handlers and the workers.
pub struct Engine {
    pub store: Store,
    pub config: BulkConfig,
    pub storage: Arc<dyn storage::FileStorage>,
    pub jobs: job::Jobs,
    member_filters: std::sync::RwLock<HashMap<String, Arc<dyn MemberFilter>>>,
    runners: std::sync::RwLock<HashMap<String, Arc<dyn JobRunner>>>,
    /// Wakes idle workers when a job is queued in this process.
    pub wake: tokio::sync::Notify,
    /// This process's worker id prefix (lease owner).
    pub instance: String,
}

impl Engine {
    pub fn new(store: Store, config: BulkConfig) -> anyhow::Result<Arc<Engine>> {
        let storage = storage::open(&config.storage, &config.export_dir)?;
        Ok(Arc::new(Engine {
            jobs: job::Jobs::new(store.clone()),
            store,
            config,
            storage,
            member_filters: Default::default(),
            runners: Default::default(),
            wake: tokio::sync::Notify::new(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
        }))
    }

    pub fn register_member_filter(&self, name: &str, filter: Arc<dyn MemberFilter>) {
        self.member_filters
            .write()
            .expect("lock")
            .insert(name.to_owned(), filter);
    }

    /// Registers the runner of jobs of `kind` (jobs of other kinds are exports).
    pub fn register_job_runner(&self, kind: &str, runner: Arc<dyn JobRunner>) {
        self.runners
            .write()
            .expect("lock")
            .insert(kind.to_owned(), runner);
    }

    pub fn job_runner(&self, kind: &str) -> Option<Arc<dyn JobRunner>> {
        self.runners.read().expect("lock").get(kind).cloned()
    }

    pub fn member_filter(&self, name: &str) -> Option<Arc<dyn MemberFilter>> {
        self.member_filters.read().expect("lock").get(name).cloned()
    }

    /// The spool folder of `job` (unfinished parts).
    pub fn spool_dir(&self, job: &str) -> std::path::PathBuf {
        self.config.export_dir.join("spool").join(job)
    }

    /// Removes a job's files and spool (after cancel or expiry).
    pub async fn remove_files(&self, job: &str) -> anyhow::Result<()> {
        self.storage.remove_job(job).await?;
        match tokio::fs::remove_dir_all(self.spool_dir(job)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
