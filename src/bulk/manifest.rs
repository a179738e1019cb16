//! The Bulk Data STU2 completion manifest (a JSON document, not a FHIR resource): built from
//! the job row and its recorded file parts.

use super::job::{Job, JobFile};
use crate::fhir::datetime::format_instant;
use serde_json::{Value, json};

/// The download URL of a file of `job`.
pub fn file_url(base_url: &str, job: &str, name: &str) -> String {
    format!("{base_url}/_export/{job}/{name}")
}

/// The manifest of a completed job.
pub fn manifest(base_url: &str, job: &Job, files: &[JobFile]) -> Value {
    let items = |section: &str| -> Vec<Value> {
        files
            .iter()
            .filter(|f| f.section == section)
            .map(|f| json!({"type": f.rtype, "url": file_url(base_url, &job.id, &f.name), "count": f.count}))
            .collect()
    };
    json!({
        // Bulk STU2: nothing modified after it is included, everything up to it is.
        "transactionTime": format_instant(job.transaction_time),
        // "The full URL of the original Bulk Data kick-off request"
        "request": job.request_url,
        // files are served behind the same OAuth bearer tokens as the FHIR API
        "requiresAccessToken": true,
        "output": items("output"),
        "deleted": items("deleted"),
        "error": items("error"),
    })
}
