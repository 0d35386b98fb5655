//! The outbound guard: rate limits on originating mail per SASL user, per envelope sender
//! and per client IP, so a compromised account or an abused relay cannot push thousands of
//! messages out before anyone notices. Past a limit, messages are quarantined (reason
//! `ratelimit`) instead of relayed; one warning per key per window.
//!
//! Fixed windows, counted in memory behind the [`Counters`] trait so a shared store (redis)
//! can back them later. Time is tokio's clock, so tests run it paused.

use super::Policies;
use crate::auth::origin::Origin;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// One limit: at most `messages` per `window` for each key kind that is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages allowed per window and key.
    pub messages: u64,
    /// The window.
    pub window: Duration,
    /// Count per SASL user.
    pub per_user: bool,
    /// Count per envelope sender.
    pub per_sender: bool,
    /// Count per client IP.
    pub per_client: bool,
}

/// What one message is counted under.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// SASL login.
    pub user: Option<String>,
    /// Envelope sender (lower case; none for `<>`).
    pub sender: Option<String>,
    /// Client IP (none for local pickup).
    pub client: Option<String>,
}

impl Keys {
    /// The keys of a message from `origin` with envelope `sender`; a local pickup has no
    /// client key.
    pub fn of(origin: &Origin, sender: &str) -> Self {
        Keys {
            user: origin.sasl_user.clone(),
            sender: (!sender.is_empty()).then(|| sender.to_ascii_lowercase()),
            client: origin.ip.filter(|_| !origin.local).map(|ip| ip.to_string()),
        }
    }
}

/// Counter storage: add one to a key's count in the current window.
pub(crate) trait Counters: Send + Sync {
    /// Count one message under `key` and return (count in this window, first in window).
    fn hit(&self, key: &str, window: Duration, now: Instant) -> (u64, bool);
}

/// In-memory fixed windows; keys whose window ended are dropped as the map grows.
#[derive(Debug, Default)]
pub(crate) struct MemoryCounters {
    map: Mutex<HashMap<String, (Instant, u64, bool)>>,
}

impl Counters for MemoryCounters {
    fn hit(&self, key: &str, window: Duration, now: Instant) -> (u64, bool) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (start, _, _)| now.duration_since(*start) < window);
        }
        let slot = map.entry(key.to_string()).or_insert((now, 0, false));
        if now.duration_since(slot.0) >= window {
            *slot = (now, 0, false);
        }
        slot.1 += 1;
        (slot.1, slot.1 == 1)
    }
}

/// The guard: counters plus the once-per-window warning.
pub struct Guard {
    counters: Box<dyn Counters>,
    warned: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guard")
    }
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            counters: Box::new(MemoryCounters::default()),
            warned: Mutex::new(HashMap::new()),
        }
    }
}

impl Guard {
    /// Count one message of policy `policy` and say which key is over its limit, if any.
    pub fn check(&self, policy: &str, limit: &RateLimit, keys: &Keys) -> Option<String> {
        let now = Instant::now();
        let mut over = None;
        for (on, kind, value) in [
            (limit.per_user, "user", &keys.user),
            (limit.per_sender, "sender", &keys.sender),
            (limit.per_client, "client", &keys.client),
        ] {
            let Some(value) = value.as_deref().filter(|_| on) else {
                continue;
            };
            let key = format!("{policy}/{kind}/{value}");
            let (n, _) = self.counters.hit(&key, limit.window, now);
            if n > limit.messages && over.is_none() {
                over = Some(format!("{kind} {value}"));
                self.warn_once(&key, limit, n, now);
            }
        }
        over
    }

    /// Count one message once for each distinct policy in `chosen` (indices into
    /// `policies`) that has a limit; returns the policies it is over, with the key.
    pub fn count(
        &self,
        policies: &Policies,
        chosen: &[usize],
        keys: &Keys,
    ) -> Vec<(usize, String)> {
        let mut seen = vec![];
        let mut over = vec![];
        for &p in chosen {
            if seen.contains(&p) {
                continue;
            }
            seen.push(p);
            let policy = &policies.all[p];
            if let Some(limit) = &policy.rate_limit
                && let Some(key) = self.check(&policy.name, limit, keys)
            {
                over.push((p, key));
            }
        }
        over
    }

    fn warn_once(&self, key: &str, limit: &RateLimit, n: u64, now: Instant) {
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.len() > 10_000 {
            warned.retain(|_, at| now.duration_since(*at) < limit.window);
        }
        let fresh = warned
            .get(key)
            .is_none_or(|at| now.duration_since(*at) >= limit.window);
        if fresh {
            warned.insert(key.to_string(), now);
            tracing::warn!(
                key,
                count = n,
                limit = limit.messages,
                window_secs = limit.window.as_secs(),
                "outbound rate limit exceeded: further messages are quarantined (reason ratelimit) until the window ends"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit() -> RateLimit {
        RateLimit {
            messages: 3,
            window: Duration::from_secs(600),
            per_user: true,
            per_sender: true,
            per_client: true,
        }
    }

    fn keys(sender: &str) -> Keys {
        Keys {
            user: None,
            sender: Some(sender.into()),
            client: Some("192.0.2.1".into()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn trips_exactly_at_the_limit_and_resets_after_the_window() {
        let g = Guard::default();
        for _ in 0..3 {
            assert_eq!(g.check("p", &limit(), &keys("a@x.test")), None);
        }
        assert_eq!(
            g.check("p", &limit(), &keys("a@x.test")).as_deref(),
            Some("sender a@x.test")
        );
        // A different sender from the same client is over through the client key.
        assert_eq!(
            g.check("p", &limit(), &keys("b@x.test")).as_deref(),
            Some("client 192.0.2.1")
        );
        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(g.check("p", &limit(), &keys("a@x.test")).is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..3 {
            assert_eq!(g.check("p", &limit(), &keys("a@x.test")), None);
        }
        assert!(g.check("p", &limit(), &keys("a@x.test")).is_some());
        // Another policy counts apart.
        assert_eq!(g.check("q", &limit(), &keys("a@x.test")), None);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_that_are_off_or_absent_do_not_count() {
        let g = Guard::default();
        let l = RateLimit {
            per_client: false,
            per_sender: false,
            ..limit()
        };
        for _ in 0..10 {
            assert_eq!(g.check("p", &l, &keys("a@x.test")), None);
        }
        let user = Keys {
            user: Some("bob".into()),
            ..Keys::default()
        };
        for _ in 0..3 {
            assert_eq!(g.check("p", &l, &user), None);
        }
        assert_eq!(g.check("p", &l, &user).as_deref(), Some("user bob"));
    }
}
