//! Counters of requests and authentication outcomes, for the audit work (CMS-0057 metrics)
//! to read, plus `tracing` events under the `pdex::auth` target. Counts only: no client
//! input, no tokens, no PHI.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide authorization counters (since start).
#[derive(Debug, Default)]
pub struct AuthMetrics {
    /// FHIR requests that reached the resource server's token check.
    pub requests: AtomicU64,
    /// … of which were refused with 401 (missing, invalid, expired, revoked, unbound token).
    pub unauthenticated: AtomicU64,
    /// FHIR responses 403 (insufficient scope).
    pub forbidden: AtomicU64,
    /// Access tokens issued.
    pub tokens_issued: AtomicU64,
    /// Token requests refused (any OAuth error).
    pub token_failures: AtomicU64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    pub requests: u64,
    pub unauthenticated: u64,
    pub forbidden: u64,
    pub tokens_issued: u64,
    pub token_failures: u64,
}

impl AuthMetrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            requests: get(&self.requests),
            unauthenticated: get(&self.unauthenticated),
            forbidden: get(&self.forbidden),
            tokens_issued: get(&self.tokens_issued),
            token_failures: get(&self.token_failures),
        }
    }
}
