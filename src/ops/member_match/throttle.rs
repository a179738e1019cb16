//! HRex mm-7 ("SHALL monitor and prevent brute-force attacks"): failed `$member-match`
//! attempts are counted per client and per demographics (the same person tried with varying
//! card data) in a sliding window; past the limit further attempts get 429 with
//! `Retry-After` until the oldest failure leaves the window. In memory, per server process.
//! The demographics key is kept only as a SHA-256 digest.

use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 100_000;

pub struct Throttle {
    limit: usize,
    window: Duration,
    failures: Mutex<HashMap<[u8; 32], VecDeque<Instant>>>,
}

/// The keys one attempt is counted under.
pub struct AttemptKeys {
    keys: [[u8; 32]; 2],
    /// Short hex of the demographics digest, for logs (no PHI).
    pub demographics_tag: String,
}

impl AttemptKeys {
    pub fn new(client: &str, demographics: &str) -> AttemptKeys {
        let c = digest("client", client);
        let d = digest("demographics", demographics);
        let demographics_tag = d[..6].iter().map(|b| format!("{b:02x}")).collect();
        AttemptKeys {
            keys: [c, d],
            demographics_tag,
        }
    }
}

fn digest(kind: &str, value: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(value.as_bytes());
    h.finalize().into()
}

impl Throttle {
    pub fn new(limit: u32, window_seconds: u64) -> Throttle {
        Throttle {
            limit: limit.max(1) as usize,
            window: Duration::from_secs(window_seconds.max(1)),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(retry_after)` when either key is over the limit.
    pub fn check(&self, keys: &AttemptKeys) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = None;
        for k in &keys.keys {
            if let Some(q) = map.get_mut(k) {
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    q.pop_front();
                }
                if q.len() >= self.limit
                    && let Some(oldest) = q.front()
                {
                    let w = self.window.saturating_sub(now.duration_since(*oldest));
                    wait = Some(wait.map_or(w, |x: Duration| x.max(w)));
                }
            }
        }
        wait
    }

    /// Counts a failed attempt under both keys.
    pub fn record_failure(&self, keys: &AttemptKeys) {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= SWEEP_AT {
            let window = self.window;
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        for k in &keys.keys {
            let q = map.entry(*k).or_default();
            q.push_back(now);
            while q.len() > self.limit {
                q.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_client_and_per_demographics() {
        let t = Throttle::new(2, 60);
        let a = AttemptKeys::new("client-a", "person|pat|1974-12-25");
        assert!(t.check(&a).is_none());
        t.record_failure(&a);
        t.record_failure(&a);
        assert!(t.check(&a).is_some());
        // same demographics from another client: still throttled (the person is the target)
        let b = AttemptKeys::new("client-b", "person|pat|1974-12-25");
        assert!(t.check(&b).is_some());
        // same client, other person: throttled (the client is the attacker)
        let c = AttemptKeys::new("client-a", "other|x|2000-01-01");
        assert!(t.check(&c).is_some());
        // unrelated client and person
        let d = AttemptKeys::new("client-d", "other|x|2000-01-01");
        assert!(t.check(&d).is_none());
        assert!(t.check(&a).unwrap() <= Duration::from_secs(60));
    }
}
