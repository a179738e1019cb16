//! HRex mm-7 ("SHALL monitor and prevent brute-force attacks"): failed `$member-match`
//! attempts are counted per requesting client and per (client, demographics) — the same
//! person tried with varying card data by one client — in a sliding window; past the limit
//! further attempts get 429 with `Retry-After` until the oldest counted failure leaves the
//! window. The demographics pair allows `limit` failures; a client as a whole (many people
//! tried) `CLIENT_FACTOR` times as many. Never per person alone: one payer's failures must
//! not lock a member out for the other payers. The counts live in the database
//! (`match_failures`), so every pdex instance behind a load balancer sees them; keys are
//! SHA-256 digests (no PHI stored).
//!
//! The same table counts failed member sign-ins per username ([`login_key`]): past
//! `--login-failure-limit` within `--login-lockout-seconds` the login is locked until the
//! oldest counted failure leaves the window.

use crate::store::Store;
use crate::store::db::SqlValue;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// How many more failures a client may have across all the people it tries than for one.
pub const CLIENT_FACTOR: u32 = 10;

pub struct Throttle {
    store: Store,
    /// Failures allowed per (client, demographics) within the window.
    limit: u32,
    window_ms: i64,
}

/// The keys one attempt is counted under, each with its limit.
pub struct AttemptKeys {
    client: String,
    pair: String,
    /// Short hex of the demographics digest, for logs (no PHI).
    pub demographics_tag: String,
}

impl AttemptKeys {
    pub fn new(client: &str, demographics: &str) -> AttemptKeys {
        let d = digest(&[b"demographics", demographics.as_bytes()]);
        AttemptKeys {
            client: hex(&digest(&[b"client", client.as_bytes()])),
            pair: hex(&digest(&[
                b"client+demographics",
                client.as_bytes(),
                d.as_slice(),
            ])),
            demographics_tag: hex(&d[..6]),
        }
    }
}

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0]);
    }
    h.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Throttle {
    pub fn new(store: Store, limit: u32, window_seconds: u64) -> Throttle {
        Throttle {
            store,
            limit: limit.max(1),
            window_ms: window_seconds.max(1) as i64 * 1000,
        }
    }

    /// `Some(retry_after)` when either key is at its limit within the window.
    pub async fn check(&self, keys: &AttemptKeys) -> anyhow::Result<Option<Duration>> {
        self.wait_for(&[
            (&keys.client, self.limit.saturating_mul(CLIENT_FACTOR)),
            (&keys.pair, self.limit),
        ])
        .await
    }

    /// Counts a failed attempt under both keys, and forgets failures older than the window.
    pub async fn record_failure(&self, keys: &AttemptKeys) -> anyhow::Result<()> {
        self.record(&[&keys.client, &keys.pair]).await
    }

    /// Member sign-in lockout (`--login-failure-limit` within `--login-lockout-seconds`):
    /// `Some(wait)` while the login `key` ([`login_key`]) is locked.
    pub async fn login_locked(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        self.wait_for(&[(key, self.limit)]).await
    }

    /// Counts a failed sign-in of `key`.
    pub async fn record_login_failure(&self, key: &str) -> anyhow::Result<()> {
        self.record(&[key]).await
    }

    /// Forgets the failures of `key` (a successful sign-in).
    pub async fn clear(&self, key: &str) -> anyhow::Result<()> {
        let mut tx = self.store.db.begin().await?;
        tx.execute(
            "DELETE FROM match_failures WHERE key = ?",
            vec![SqlValue::from(key)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The longest wait among `keys` at their limits within the window.
    async fn wait_for(&self, keys: &[(&str, u32)]) -> anyhow::Result<Option<Duration>> {
        let now = now_ms();
        let marks = vec!["?"; keys.len()].join(", ");
        let mut params: Vec<SqlValue> = keys.iter().map(|(k, _)| SqlValue::from(*k)).collect();
        params.push(SqlValue::Int(now - self.window_ms));
        let rows = self
            .store
            .db
            .fetch(
                &format!(
                    "SELECT key, COUNT(*), MIN(at) FROM match_failures WHERE key IN ({marks}) AND at > ? GROUP BY key"
                ),
                &params,
            )
            .await?;
        let mut wait: Option<Duration> = None;
        for row in rows {
            let key = row.text(0)?;
            let count = row.int(1)?;
            let oldest = row.int(2)?;
            let limit = keys
                .iter()
                .find(|(k, _)| *k == key)
                .map_or(self.limit, |(_, l)| *l);
            if count >= i64::from(limit) {
                let w = Duration::from_millis((oldest + self.window_ms - now).max(1000) as u64);
                wait = Some(wait.map_or(w, |x| x.max(w)));
            }
        }
        Ok(wait)
    }

    /// Counts a failure under each key, and forgets failures older than the window.
    async fn record(&self, keys: &[&str]) -> anyhow::Result<()> {
        let now = now_ms();
        let mut tx = self.store.db.begin().await?;
        tx.execute(
            "DELETE FROM match_failures WHERE at <= ?",
            vec![SqlValue::Int(now - self.window_ms)],
        )
        .await?;
        let rows = vec!["(?, ?)"; keys.len()].join(", ");
        let params = keys
            .iter()
            .flat_map(|k| [SqlValue::from(*k), SqlValue::Int(now)])
            .collect();
        tx.execute(
            &format!("INSERT INTO match_failures (key, at) VALUES {rows}"),
            params,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The throttle key of a member login: a digest of the username (no names stored).
pub fn login_key(username: &str) -> String {
    hex(&digest(&[b"member-login", username.as_bytes()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_per_client_and_per_client_and_demographics() {
        let a = AttemptKeys::new("client-a", "person|pat|1974-12-25");
        let b = AttemptKeys::new("client-b", "person|pat|1974-12-25");
        let c = AttemptKeys::new("client-a", "other|x|2000-01-01");
        // the same person tried by another client shares no key
        assert_ne!(a.pair, b.pair);
        assert_ne!(a.client, b.client);
        // the same client trying another person shares the client key only
        assert_eq!(a.client, c.client);
        assert_ne!(a.pair, c.pair);
        assert_eq!(a.demographics_tag, b.demographics_tag);
    }
}
