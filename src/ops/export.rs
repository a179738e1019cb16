//! Bulk Data STU2 `$export` over HTTP: kick-off (`GET`/`POST` at system, Patient and Group
//! level), status polling, cancellation and file download. The jobs themselves run in
//! `crate::bulk`.
//!
//! Choices the spec leaves open (also in the README, "Bulk export"):
//! - `Prefer: respond-async` is required on kick-off: without it, 400 with an
//!   OperationOutcome (Bulk STU2 lets the server reject or default; PDex makes the header a
//!   SHALL on its bulk operations). `Accept`, when sent, must allow `application/fhir+json`
//!   (else 406); absent, it is treated as `application/fhir+json`.
//! - A job belongs to the client that started it (client id, plus the certificate thumbprint
//!   when its token was certificate-bound, Bulk STU2 "MAY additionally restrict… to the
//!   client that originated the export"); for anyone else its URLs answer 404, as if it did
//!   not exist.
//! - Polling sooner than half the `Retry-After` interval since the previous poll gets 429.
//! - `Accept-Encoding: gzip` on a download without `Range` gets a gzip-encoded body; ranges
//!   are served from the uncompressed file.

use crate::bulk::job::{Job, NewJob, now_ms, owner_of, state};
use crate::bulk::manifest;
use crate::bulk::request::{self, ExportParams, Level, ParseOptions};
use crate::fhir::{FhirError, IssueType};
use crate::identity::AccessContext;
use crate::web::http::{http_date, prefer};
use crate::web::kickoff::KickOff;
use crate::web::{Access, SharedState};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

/// Kick-off to first run: lets writes that started before `transactionTime` commit first
/// (a write stamps `lastUpdated` when it starts), so "everything up to it" holds.
const SETTLE_MS: i64 = 1000;

/// The job kind of Bulk Data exports (the bulk engine's own runner).
pub const JOB_KIND: &str = "export";

/// The NDJSON media type of export files.
pub const FHIR_NDJSON: &str = "application/fhir+ndjson";

/// `GET|POST [base]/$export`.
pub async fn system(State(state): State<SharedState>, k: KickOff) -> Result<Response, FhirError> {
    kickoff(&state, &k, Level::System).await
}

/// `GET|POST [base]/Patient/$export`.
pub async fn patient(State(state): State<SharedState>, k: KickOff) -> Result<Response, FhirError> {
    kickoff(&state, &k, Level::Patient).await
}

/// `GET|POST [base]/Group/{id}/$export`.
pub async fn group(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    k: KickOff,
) -> Result<Response, FhirError> {
    refuse_member_token(&k.ctx)?;
    if k.ctx.kind == crate::identity::ClientKind::Payer {
        // a payer's Group export follows the payer-to-payer rules (consent, _since, EOBs)
        return crate::ops::davinci_data_export::kickoff(&state, &k, &id).await;
    }
    kickoff(&state, &k, Level::Group(id)).await
}

/// A member-scoped token reads one member's data; a Group export is a system-level request
/// (Bulk STU2 Group export: "system/" scopes), so such a token is refused at kick-off rather
/// than queued for a job that could never run (issue 14 item 6).
pub fn refuse_member_token(ctx: &AccessContext) -> Result<(), FhirError> {
    match ctx.patient() {
        Some(_) => Err(FhirError::forbidden(
            "a member-scoped access token cannot export a Group; use Patient/$export or Patient/{id}/$everything",
        )),
        None => Ok(()),
    }
}

async fn kickoff(state: &SharedState, k: &KickOff, level: Level) -> Result<Response, FhirError> {
    k.check_headers()?;
    let ctx = &k.ctx;
    let lenient = prefer(&k.headers).lenient;
    let opts = ParseOptions {
        level: level.clone(),
        post: k.is_post(),
        lenient,
        allow_until: false,
        extra: &[],
        base_url: &state.base_url,
    };
    let mut params = request::parse(&state.store, ctx, k.params()?, &opts)?.params;
    check_patients(state, ctx, &mut params, lenient).await?;
    start_job(state, ctx, JOB_KIND, params, &k.request_url(), &k.base).await
}

/// Checks the `patient` list against the store (Patient level: Patients the caller can see;
/// Group level: members of the Group, which must itself be visible). Unknown ones are a 400
/// (Bulk STU2 "SHOULD return an error"), or warnings under lenient handling.
pub async fn check_patients(
    state: &SharedState,
    ctx: &AccessContext,
    params: &mut ExportParams,
    lenient: bool,
) -> Result<(), FhirError> {
    let members = match &params.level {
        Level::Group(id) => {
            let group = state
                .store
                .read(ctx, "Group", id)
                .await?
                .filter(|g| !g.deleted)
                .ok_or_else(|| FhirError::not_found(format!("Group/{id} is not known")))?;
            Some(crate::bulk::export::group_member_ids(&group.content))
        }
        _ => None,
    };
    let Some(asked) = params.patients.take() else {
        return Ok(());
    };
    let mut kept = Vec::new();
    for id in asked {
        let ok = match &members {
            Some(m) => m.binary_search(&id).is_ok(),
            None => state
                .store
                .read(ctx, "Patient", &id)
                .await?
                .is_some_and(|p| !p.deleted),
        };
        if ok {
            kept.push(id);
        } else {
            let msg = match &members {
                Some(_) => format!("Patient/{id} is not a member of the Group"),
                None => format!("Patient/{id} is not known"),
            };
            if lenient {
                params.warnings.push(msg);
            } else {
                return Err(FhirError::bad_request(msg));
            }
        }
    }
    params.patients = Some(kept);
    Ok(())
}

/// Queues a validated export for `ctx` and answers the kick-off: 202 with the absolute
/// polling URL in `Content-Location`, or 429 when the client already runs its limit of
/// exports. `$davinci-data-export` calls this after its own checks.
pub async fn start_job(
    state: &SharedState,
    ctx: &AccessContext,
    kind: &str,
    params: ExportParams,
    request_url: &str,
    base: &str,
) -> Result<Response, FhirError> {
    let params = serde_json::to_string(&params).map_err(FhirError::internal)?;
    start_job_with(state, ctx, kind, params, request_url, base, SETTLE_MS).await
}

/// [`start_job`] for any job kind, with its parameters already serialised (the runner of
/// `kind` reads them back), first run no sooner than `settle_ms` after the kick-off (exports
/// wait [`SETTLE_MS`]; a job that reads nothing "as of" its `transactionTime` need not).
pub async fn start_job_with(
    state: &SharedState,
    ctx: &AccessContext,
    kind: &str,
    params: String,
    request_url: &str,
    base: &str,
    settle_ms: i64,
) -> Result<Response, FhirError> {
    let engine = &state.bulk;
    let now = now_ms();
    let created = engine
        .jobs
        .create(
            NewJob {
                kind,
                ctx,
                request_url,
                params,
                transaction_time: now,
                not_before: now + settle_ms,
            },
            engine.config.max_jobs_per_client,
        )
        .await?;
    let Some(id) = created else {
        // Bulk STU2: "SHOULD respond with a 429 Too Many Requests status and a Retry-After"
        let mut resp = FhirError::new(
            StatusCode::TOO_MANY_REQUESTS,
            IssueType::Throttled,
            format!(
                "this client already has {} exports in progress; wait for one to finish or cancel it",
                engine.config.max_jobs_per_client
            ),
        )
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, retry_after(state));
        return Ok(resp);
    };
    engine.wake.notify_waiters();
    // on the listener the kick-off came in on (issue 18)
    let poll = status_url(base, &id);
    let mut resp = crate::web::http::fhir_json(
        StatusCode::ACCEPTED,
        crate::fhir::error::operation_outcome(
            "information",
            IssueType::Informational,
            &format!("export queued; poll {poll}"),
        )
        .to_string(),
    );
    resp.headers_mut().insert(
        header::CONTENT_LOCATION,
        HeaderValue::from_str(&poll).map_err(FhirError::internal)?,
    );
    Ok(resp)
}

/// The kick-off URL for the manifest's `request` (a POST's without its parameters).
pub fn status_url(base_url: &str, id: &str) -> String {
    format!("{base_url}/_export/{id}")
}

fn retry_after(state: &SharedState) -> HeaderValue {
    HeaderValue::from(state.bulk.config.poll_interval_seconds.max(1))
}

/// The job `id` if it is `ctx`'s: same client, and the same certificate when the job's
/// token was bound to one. Anyone else is told it does not exist.
async fn own_job(state: &SharedState, ctx: &AccessContext, id: &str) -> Result<Job, FhirError> {
    let missing = || FhirError::not_found(format!("no export job {id} for this client"));
    let job = state.bulk.jobs.get(id).await?.ok_or_else(missing)?;
    let same_client = job.owner_client == owner_of(ctx);
    let same_cert = job
        .owner_cert
        .as_deref()
        .is_none_or(|c| ctx.cert_thumbprint.as_deref() == Some(c));
    if !(same_client && same_cert) {
        return Err(missing());
    }
    match job.state.as_str() {
        // Bulk STU2: after a DELETE "the server SHALL return a 404 Not Found error and an
        // associated FHIR OperationOutcome"
        state::CANCELLED => Err(FhirError::not_found(format!(
            "export job {id} was cancelled"
        ))),
        // Past its expiry a job is gone even before the sweeper has removed its files.
        state::COMPLETED
            if job
                .expires_at
                .is_some_and(|e| e <= crate::bulk::job::now_ms()) =>
        {
            Err(FhirError::not_found(format!(
                "export job {id} has expired and its files were removed"
            )))
        }
        state::EXPIRED => Err(FhirError::not_found(format!(
            "export job {id} has expired and its files were removed"
        ))),
        _ => Ok(job),
    }
}

/// `GET` on the polling URL.
pub async fn status(
    State(state): State<SharedState>,
    Access(ctx): Access,
    crate::web::Base(base): crate::web::Base,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let job = own_job(&state, &ctx, &id).await?;
    match job.state.as_str() {
        state::COMPLETED => {
            let files = state.bulk.jobs.files(&id).await?;
            // the file URLs on the listener the poll came in on (issue 18)
            let body = manifest::manifest(&base, &job, &files).to_string();
            let mut resp = (StatusCode::OK, body).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Some(exp) = job.expires_at {
                h.insert(header::EXPIRES, http_date(exp));
            }
            Ok(resp)
        }
        // Bulk STU2: a job that did not complete answers 4XX or 5XX with an OperationOutcome
        state::REFUSED => Err(FhirError::forbidden(job.failure.unwrap_or_else(|| {
            "the access this export was started with has ended".to_owned()
        }))),
        state::FAILED => Err(FhirError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            IssueType::Exception,
            job.failure
                .unwrap_or_else(|| "the export failed".to_owned()),
        )),
        _ => {
            let interval_ms = state.bulk.config.poll_interval_seconds.max(1) as i64 * 1000;
            let previous = state.bulk.jobs.touch_poll(&id).await?;
            let mut resp = if previous.is_some_and(|p| now_ms() - p < interval_ms / 2) {
                // Bulk STU2: "if a client is polling too frequently, the server SHOULD respond
                // with a 429 Too Many Requests status code in addition to a Retry-After"
                FhirError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    IssueType::Throttled,
                    "polling too often: wait for Retry-After seconds between polls",
                )
                .into_response()
            } else {
                StatusCode::ACCEPTED.into_response()
            };
            let h = resp.headers_mut();
            h.insert(header::RETRY_AFTER, retry_after(&state));
            let progress = job.progress.unwrap_or_else(|| job.state.clone());
            let progress: String = progress.chars().take(99).collect();
            if let Ok(v) = HeaderValue::from_str(&progress) {
                h.insert("x-progress", v);
            }
            Ok(resp)
        }
    }
}

/// `DELETE` on the polling URL: cancels a running export or releases a finished one.
pub async fn cancel(
    State(state): State<SharedState>,
    Access(ctx): Access,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    own_job(&state, &ctx, &id).await?;
    if !state.bulk.jobs.finish_as(&id, state::CANCELLED).await? {
        return Err(FhirError::not_found(format!(
            "export job {id} was cancelled"
        )));
    }
    state.bulk.remove_files(&id).await?;
    Ok(crate::web::http::fhir_json(
        StatusCode::ACCEPTED,
        crate::fhir::error::operation_outcome(
            "information",
            IssueType::Informational,
            &format!("export job {id} cancelled; its files are removed"),
        )
        .to_string(),
    ))
}

/// `GET` of an output file: NDJSON, with single byte ranges and optional gzip.
pub async fn download(
    State(state): State<SharedState>,
    Access(ctx): Access,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, FhirError> {
    let job = own_job(&state, &ctx, &id).await?;
    let missing = || FhirError::not_found(format!("export job {id} has no file {name}"));
    if job.state != state::COMPLETED {
        return Err(missing());
    }
    // only names the job recorded: nothing else of the storage is reachable
    let files = state.bulk.jobs.files(&id).await?;
    if !files.iter().any(|f| f.name == name) {
        return Err(missing());
    }
    let storage = &state.bulk.storage;
    let size = storage.size(&id, &name).await?.ok_or_else(missing)?;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| parse_range(r, size));
    let (status, start, end) = match range {
        Some(Ok((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e),
        Some(Err(())) => {
            let mut resp = FhirError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                IssueType::Invalid,
                format!("the file has {size} bytes"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
        None => (StatusCode::OK, 0, size),
    };
    let stream = storage.read(&id, &name, start, end).await?;
    let gzip = status == StatusCode::OK && accepts_gzip(&headers);
    let body = if gzip {
        let reader = tokio_util::io::StreamReader::new(stream);
        let encoder = async_compression::tokio::bufread::GzipEncoder::new(
            tokio::io::BufReader::with_capacity(64 * 1024, reader),
        );
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            encoder,
            64 * 1024,
        ))
    } else {
        Body::from_stream(stream.map(|r| r.map_err(std::io::Error::other)))
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_NDJSON));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    } else {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(resp)
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| {
            let mut it = part.split(';');
            let coding = it.next().unwrap_or_default().trim();
            let q_zero = it.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    == Some(0.0)
            });
            coding.eq_ignore_ascii_case("gzip") && !q_zero
        })
}

/// A single `bytes=` range as `start..end` (end exclusive); `None` to serve the whole file
/// (no or unusable Range: several ranges, other units, not digits), `Err` when unsatisfiable.
/// RFC 7233 §2.1: positions are `1*DIGIT` of any length (an overflowing number is simply
/// beyond the file, so it saturates); a last position past the end means "to the end"; a
/// first position at or past the end, a zero-length suffix or any suffix of an empty file
/// is unsatisfiable (§4.4: 416 with `Content-Range: bytes */SIZE`).
fn parse_range(header: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n = position(b)?;
        if n == 0 || size == 0 {
            return Some(Err(()));
        }
        (size.saturating_sub(n), size)
    } else {
        let start = position(a)?;
        let end = if b.is_empty() {
            size
        } else {
            let last = position(b)?;
            if last < start {
                return None;
            }
            last.saturating_add(1).min(size)
        };
        if start >= size {
            return Some(Err(()));
        }
        (start, end)
    };
    Some(Ok(range))
}

/// A byte position: `1*DIGIT`, saturating at `u64::MAX`.
fn position(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 10))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 100))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 100))));
        assert_eq!(parse_range("bytes=95-200", 100), Some(Ok((95, 100))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        // overflowing positions (RFC 7233 §2.1)
        assert_eq!(
            parse_range("bytes=0-18446744073709551615", 100),
            Some(Ok((0, 100)))
        );
        assert_eq!(
            parse_range("bytes=99999999999999999999999-", 100),
            Some(Err(()))
        );
        assert_eq!(
            parse_range("bytes=-99999999999999999999999", 100),
            Some(Ok((0, 100)))
        );
        assert_eq!(parse_range("bytes=-5", 0), Some(Err(())));
        assert_eq!(parse_range("bytes=+1-2", 100), None);
    }
}
