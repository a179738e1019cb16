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

/// Removes the files of completed exports past their expiry and marks them expired.
pub async fn sweep(engine: &Engine) -> anyhow::Result<()> {
    for id in engine.jobs.expired(now_ms()).await? {
        engine.remove_files(&id).await?;
        engine.jobs.finish_as(&id, state::EXPIRED).await?;
        tracing::info!(job = %id, "expired export removed");
    }
    Ok(())
}
