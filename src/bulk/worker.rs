//! The worker pool inside the server: `workers` tasks that claim runnable jobs (queued, or
//! running under an expired lease — their process died), run them, and record the result;
//! plus a sweeper that removes expired exports. Idle workers wake when a job is queued in
//! this process and otherwise poll the table (jobs queued by other processes sharing the
//! database).

use super::Engine;
use super::export::{Run, Stop};
use super::job::{now_ms, state};
use std::sync::Arc;
use std::time::Duration;

/// How often idle workers look for jobs queued elsewhere, and the sweeper for expired files.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// Starts the worker pool and the expiry sweeper.
pub fn start(engine: Arc<Engine>) {
    for n in 0..engine.config.workers {
        let engine = engine.clone();
        tokio::spawn(async move {
            let worker = format!("{}-{n}", engine.instance);
            loop {
                match engine.jobs.claim(&worker, lease_ms(&engine)).await {
                    Ok(Some(job)) => run_one(&engine, &worker, job).await,
                    Ok(None) => {
                        let _ = tokio::time::timeout(IDLE_POLL, engine.wake.notified()).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming an export job failed");
                        tokio::time::sleep(IDLE_POLL).await;
                    }
                }
            }
        });
    }
    tokio::spawn(async move {
        loop {
            if let Err(e) = sweep(&engine).await {
                tracing::warn!(error = %e, "removing expired exports failed");
            }
            tokio::time::sleep(IDLE_POLL * 2).await;
        }
    });
}

fn lease_ms(engine: &Engine) -> i64 {
    engine.config.lease_seconds as i64 * 1000
}

async fn run_one(engine: &Engine, worker: &str, job: super::job::Job) {
    let started = std::time::Instant::now();
    tracing::info!(job = %job.id, kind = %job.kind, "export job started");
    match owner_still_live(engine, &job).await {
        Ok(true) => {}
        // the store could not say: leave the job to be claimed again when its lease ends
        Ok(false) => return,
        Err(why) => {
            tracing::info!(job = %job.id, reason = %why, "job refused: its owner's access ended");
            let _ = engine.jobs.refuse(&job.id, worker, &why).await;
            let _ = engine.remove_files(&job.id).await;
            return;
        }
    }
    let result = match engine.job_runner(&job.kind) {
        Some(runner) => match runner.run(engine, &job, worker).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Stop::Lost),
            Err(e) => Err(Stop::Failed(e)),
        },
        None => match engine.jobs.payload(&job.id).await {
            Ok(payload) => match Run::new(engine, &job, worker, payload) {
                Ok(run) => run.execute().await,
                Err(e) => Err(Stop::Failed(e)),
            },
            Err(e) => Err(Stop::Failed(e)),
        },
    };
    match result {
        Ok(()) => tracing::info!(
            job = %job.id,
            seconds = started.elapsed().as_secs_f64(),
            "export job completed"
        ),
        Err(Stop::Lost) => {
            tracing::info!(job = %job.id, "export job stopped: cancelled or taken over");
            // a cancelled job's files go now; a taken-over one keeps them for its new worker
            if let Ok(Some(j)) = engine.jobs.get(&job.id).await
                && j.state == state::CANCELLED
            {
                let _ = engine.remove_files(&job.id).await;
            }
        }
        Err(Stop::Failed(e)) => {
            tracing::error!(job = %job.id, error = %format!("{e:#}"), "export job failed");
            let _ = engine
                .jobs
                .fail(
                    &job.id,
                    worker,
                    "the export failed on the server; see its log",
                )
                .await;
            let _ = engine.remove_files(&job.id).await;
        }
    }
}

/// Every run of a job — its first and each resume after a restart or a lost lease — first
/// checks that the access it was started with is still live (`auth::liveness`: client
/// enabled, token not revoked, a member token's consent still active; issue 14: a
/// `Patient/$export` queued before `pdex consent revoke` must not export the member).
/// In-process jobs (no client) have nothing to check. `Ok(false)`: the store could not answer
/// (fail closed: this run does not start). `Err` carries the reason for the client.
async fn owner_still_live(engine: &Engine, job: &super::job::Job) -> Result<bool, String> {
    let access: super::job::StoredAccess = serde_json::from_str(&job.access)
        .map_err(|e| format!("the job's stored access cannot be read: {e}"))?;
    let Some(client) = &access.client_id else {
        return Ok(true);
    };
    let ctx = access.rebuild();
    match crate::auth::liveness::check(&engine.store, client, &ctx.grant).await {
        Ok(()) => Ok(true),
        Err(crate::auth::liveness::Dead::Refused(why)) => Err(format!(
            "the access this job was started with has ended ({why}); nothing was exported"
        )),
        Err(
            crate::auth::liveness::Dead::Unavailable(e) | crate::auth::liveness::Dead::Internal(e),
        ) => {
            tracing::warn!(job = %job.id, error = %e, "cannot check the job owner's access now");
            Ok(false)
        }
    }
}

/// Removes the files of completed exports past their expiry and marks them expired.
pub async fn sweep(engine: &Engine) -> anyhow::Result<()> {
    for id in engine.jobs.expired(now_ms()).await? {
        engine.remove_files(&id).await?;
        engine.jobs.finish_as(&id, state::EXPIRED).await?;
        tracing::info!(job = %id, "expired export removed");
    }
    Ok(())
}
