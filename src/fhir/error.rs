//! Errors as FHIR OperationOutcome responses. Every failure a client can cause becomes a
//! 4xx with an OperationOutcome that says what was wrong; server faults become a 500 whose
//! body says nothing about internals (details go to the log).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// OperationOutcome.issue.code values we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueType {
    Invalid,
    Structure,
    Required,
    Value,
    /// A code outside a required binding's value set.
    CodeInvalid,
    NotFound,
    Deleted,
    NotSupported,
    Conflict,
    Duplicate,
    Forbidden,
    Login,
    TooCostly,
    Throttled,
    Processing,
    BusinessRule,
    Exception,
    /// A transient failure: retry later (503).
    Transient,
    /// The client took too long (408).
    Timeout,
    Informational,
}

impl IssueType {
    pub fn code(self) -> &'static str {
        match self {
            IssueType::Invalid => "invalid",
            IssueType::Structure => "structure",
            IssueType::Required => "required",
            IssueType::Value => "value",
            IssueType::CodeInvalid => "code-invalid",
            IssueType::NotFound => "not-found",
            IssueType::Deleted => "deleted",
            IssueType::NotSupported => "not-supported",
            IssueType::Conflict => "conflict",
            IssueType::Duplicate => "duplicate",
            IssueType::Forbidden => "forbidden",
            IssueType::Login => "login",
            IssueType::TooCostly => "too-costly",
            IssueType::Throttled => "throttled",
            IssueType::Processing => "processing",
            IssueType::BusinessRule => "business-rule",
            IssueType::Exception => "exception",
            IssueType::Transient => "transient",
            IssueType::Timeout => "timeout",
            IssueType::Informational => "informational",
        }
    }
}

/// Seconds a client is told to wait (`Retry-After`) when a backing service is unavailable.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// Marks an error as "the database is unavailable" (unreachable, restarting, or no pooled
/// connection within the acquire timeout): clients are answered 503 with `Retry-After`,
/// never a 500 or — at the token check — a 401 (issue 15). The store wraps such errors.
#[derive(Debug)]
pub struct Unavailable(pub Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the database is unavailable: {}", self.0)
    }
}

impl std::error::Error for Unavailable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// Marks a query stopped because it ran longer than its bound (`search_timeout_seconds`):
/// 503 with `Retry-After` (issue 15), never a 500.
#[derive(Debug)]
pub struct TimedOut(pub String);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimedOut {}

/// Is `err`, or anything it was caused by, an [`Unavailable`]?
pub fn is_unavailable(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.is::<Unavailable>())
}

/// A failure to report as an OperationOutcome with an HTTP status.
#[derive(Debug, Clone)]
pub struct FhirError {
    pub status: StatusCode,
    pub issue: IssueType,
    pub diagnostics: String,
    /// The element the issue is about, as a FHIRPath (`Patient.name[0].given[1]`):
    /// `OperationOutcome.issue.expression` (R4 operationoutcome.html).
    pub expression: Option<String>,
    /// Further issues of the same failure (validation reports every problem it finds).
    pub more: Vec<Issue>,
}

/// One `OperationOutcome.issue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// `error` or `warning`.
    pub severity: &'static str,
    pub code: IssueType,
    pub diagnostics: String,
    pub expression: Option<String>,
}

impl Issue {
    /// The issue as OperationOutcome JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = json!({
            "severity": self.severity,
            "code": self.code.code(),
            "diagnostics": self.diagnostics,
        });
        if let Some(e) = &self.expression {
            v["expression"] = json!([e]);
        }
        v
    }
}

impl FhirError {
    pub fn new(status: StatusCode, issue: IssueType, diagnostics: impl Into<String>) -> Self {
        FhirError {
            status,
            issue,
            diagnostics: diagnostics.into(),
            expression: None,
            more: Vec::new(),
        }
    }
    /// 422 for the issues of a resource that failed validation (at least one): the first
    /// becomes the error's own, its diagnostics prefixed with its path so that a log line
    /// or `pdex import`'s `FILE:LINE:` message names the element.
    pub fn invalid_resource(mut issues: Vec<Issue>) -> Self {
        let first = issues.remove(0);
        let diagnostics = match &first.expression {
            Some(e) => format!("{e}: {}", first.diagnostics),
            None => first.diagnostics.clone(),
        };
        FhirError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            issue: first.code,
            diagnostics,
            expression: first.expression,
            more: issues,
        }
    }
    /// The same error with `prefix` before its diagnostics (e.g. `entry 3: `).
    pub fn prefixed(mut self, prefix: &str) -> Self {
        self.diagnostics = format!("{prefix}{}", self.diagnostics);
        self
    }
    /// 400: the request itself is malformed.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, IssueType::Invalid, msg)
    }
    /// 404.
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, IssueType::NotFound, msg)
    }
    /// 410: the resource was deleted.
    pub fn gone(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, IssueType::Deleted, msg)
    }
    /// 422: the resource is not acceptable.
    pub fn unprocessable(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, IssueType::Invalid, msg)
    }
    /// 409.
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, IssueType::Conflict, msg)
    }
    /// 412: an If-Match precondition failed.
    pub fn precondition_failed(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, IssueType::Conflict, msg)
    }
    /// 403.
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, IssueType::Forbidden, msg)
    }
    /// 503 with `Retry-After`: a backing service is unavailable; the request may succeed later.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            IssueType::Transient,
            format!(
                "the database is unavailable right now; retry after {RETRY_AFTER_SECONDS} seconds"
            ),
        )
    }
    /// 500: logs the cause, tells the client only that it was our fault.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            IssueType::Exception,
            "internal server error; the details are in the server log",
        )
    }

    /// The OperationOutcome body.
    pub fn outcome(&self) -> serde_json::Value {
        let mut oo = operation_outcome(
            if self.status.is_server_error() {
                "fatal"
            } else {
                "error"
            },
            self.issue,
            &self.diagnostics,
        );
        if let Some(e) = &self.expression {
            oo["issue"][0]["expression"] = json!([e]);
        }
        if let Some(issues) = oo["issue"].as_array_mut() {
            issues.extend(self.more.iter().map(Issue::to_json));
        }
        oo
    }
}

impl std::fmt::Display for FhirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.diagnostics)
    }
}

impl std::error::Error for FhirError {}

impl From<anyhow::Error> for FhirError {
    fn from(err: anyhow::Error) -> Self {
        match err.downcast::<FhirError>() {
            Ok(e) => e,
            Err(err) if err.chain().any(|c| c.is::<TimedOut>()) => {
                tracing::warn!(error = %format!("{err:#}"), "query cancelled");
                FhirError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    IssueType::TooCostly,
                    format!(
                        "{err}; narrow the search, or retry after {RETRY_AFTER_SECONDS} seconds"
                    ),
                )
            }
            Err(err) if is_unavailable(&err) => {
                tracing::warn!(error = %format!("{err:#}"), "database unavailable");
                FhirError::unavailable()
            }
            Err(err) => FhirError::internal(format!("{err:#}")),
        }
    }
}

/// An OperationOutcome with one issue.
pub fn operation_outcome(severity: &str, issue: IssueType, diagnostics: &str) -> serde_json::Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": severity,
            "code": issue.code(),
            "diagnostics": diagnostics,
        }]
    })
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        let body = self.outcome().to_string();
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(super::FHIR_JSON),
        );
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        resp
    }
}
