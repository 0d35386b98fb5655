//! The outbound guard: rate limits on mail to recipients outside the local domains, per
//! SASL user, per envelope sender, per client IP and, for relayed mail (a client neither
//! authenticated nor in `[origin] networks`), per client class as a whole, so that a flood
//! through a tunnel that ends on loopback is counted however often it changes its sender.
//! Optionally a limit on all outbound mail together. Past a limit, messages are
//! quarantined (reason `ratelimit`) instead of relayed; one warning per key and window.
//!
//! The content filter counts ([`Guard::count`]); the policy service asks the same counters
//! before queueing ([`Guard::over`]). Counters are in a [`Store`], this host's or Redis
//! shared by several (all of a message's keys in one request); when the shared one cannot
//! answer, the guard fails open (mail passes uncounted, an error line a minute) or closed
//! (outbound mail is held) as `[shared] guard_on_error` says. Time is
//! [`crate::clock::tokio_unix`], so tests pause it.

use super::{LocalDomains, Policies};
use crate::auth::origin::{Origin, OriginPolicy};
use crate::smtp::envelope::Envelope;
use crate::state::Store;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// Count relayed mail per client class.
    pub per_relay: bool,
    /// All outbound mail together per window; 0 = no such limit.
    pub total: u64,
}

/// What one message is counted under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    /// SASL login.
    pub user: Option<String>,
    /// Envelope sender (lower case; none for `<>`).
    pub sender: Option<String>,
    /// Client IP.
    pub client: Option<String>,
    /// The client class of relayed mail (`loopback`, `pickup`, `private`, `public`,
    /// `unknown`); none for mail of authenticated or `[origin] networks` clients.
    pub relay: Option<&'static str>,
}

impl Keys {
    /// The keys of an outbound message from `origin` with envelope `sender`; `relay` when
    /// the client is neither authenticated nor in `[origin] networks`. A loopback or
    /// pickup client of ours has no client key (every webmail user would share it); a
    /// relaying one has.
    pub fn of(origin: &Origin, sender: &str, relay: bool) -> Self {
        Keys {
            user: origin.sasl_user.clone(),
            sender: (!sender.is_empty()).then(|| sender.to_ascii_lowercase()),
            client: origin
                .ip
                .filter(|_| relay || !origin.local)
                .map(|ip| ip.to_string()),
            relay: relay.then(|| client_class(origin.ip, origin.local)),
        }
    }
}

/// The class relayed mail is counted under as a whole.
pub fn client_class(ip: Option<IpAddr>, local: bool) -> &'static str {
    let Some(ip) = ip else {
        return if local { "pickup" } else { "unknown" };
    };
    let private = match ip {
        IpAddr::V4(a) => {
            a.is_private()
                || a.is_link_local()
                || (a.octets()[0] == 100 && a.octets()[1] & 0xc0 == 64)
        }
        IpAddr::V6(a) => {
            let s = a.segments()[0];
            s & 0xfe00 == 0xfc00 || s & 0xffc0 == 0xfe80
        }
    };
    if ip.is_loopback() {
        "loopback"
    } else if private {
        "private"
    } else {
        "public"
    }
}

/// What the guard does when its store cannot answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Mail passes uncounted; an error line a minute.
    #[default]
    Open,
    /// Outbound mail is treated as over its limit (held).
    Closed,
}

/// The key reported when the store cannot answer and the guard fails closed.
pub const UNAVAILABLE_KEY: &str = "state store unavailable";

/// The guard: counters plus the once-per-window warning.
pub struct Guard {
    counters: Store,
    on_error: OnError,
    /// When the last "store unavailable" line was written.
    complained: Mutex<Option<u64>>,
    warned: Mutex<HashMap<String, u64>>,
    local: Arc<LocalDomains>,
    origin: OriginPolicy,
    policies: Arc<Policies>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guard")
    }
}

impl Default for Guard {
    fn default() -> Self {
        Guard::new(Store::default())
    }
}

/// The store's key of each counted (kind, value, limit) of policy `policy`.
fn key_names(policy: &str, counted: &[(&str, &str, u64)]) -> Vec<String> {
    counted
        .iter()
        .map(|(kind, value, _)| format!("{policy}/{kind}/{value}"))
        .collect()
}

/// The counted keys of `keys` under `limit`: (kind, value, limit).
fn counted<'a>(limit: &RateLimit, keys: &'a Keys) -> Vec<(&'static str, &'a str, u64)> {
    let mut out = vec![];
    for (on, kind, value) in [
        (limit.per_user, "user", keys.user.as_deref()),
        (limit.per_sender, "sender", keys.sender.as_deref()),
        (limit.per_client, "client", keys.client.as_deref()),
        (limit.per_relay, "relay", keys.relay),
    ] {
        if let Some(v) = value.filter(|_| on && limit.messages > 0) {
            out.push((kind, v, limit.messages));
        }
    }
    if limit.total > 0 {
        out.push(("total", "outbound", limit.total));
    }
    out
}

impl Guard {
    /// A guard over `counters`, with no local domains known.
    pub fn new(counters: Store) -> Self {
        let none = Arc::new(Policies { all: vec![] });
        Self::scoped(counters, Arc::default(), OriginPolicy::default(), none)
    }

    /// A guard over `counters` for `policies` that tells outbound from local recipients by
    /// `local` and relayed from our own clients by `origin`.
    pub fn scoped(
        counters: Store,
        local: Arc<LocalDomains>,
        origin: OriginPolicy,
        policies: Arc<Policies>,
    ) -> Self {
        Guard {
            counters,
            on_error: OnError::default(),
            complained: Mutex::new(None),
            warned: Mutex::new(HashMap::new()),
            local,
            origin,
            policies,
        }
    }

    /// What to do when the store cannot answer.
    pub fn with_on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// Count the message of `env` from `origin` under the policies (from `chosen`, one per
    /// recipient; missing = the default) of its outbound recipients; returns the policies
    /// it is over, with the key. Relayed mail is recognised only with local domains known.
    pub async fn count_message(
        &self,
        env: &Envelope,
        origin: &Origin,
        originating: bool,
        chosen: &[usize],
    ) -> Vec<(usize, String)> {
        let rcpts = env.recipients.iter().map(|r| r.address.as_str());
        let default = self.policies.default_index();
        let outbound = self.local.outbound(rcpts, chosen, originating, default);
        if outbound.is_empty() {
            return vec![];
        }
        let relay = self.local.known() && self.origin.is_relay(origin);
        let keys = Keys::of(origin, &env.sender, relay);
        self.count(&self.policies, &outbound, &keys, &env.sender)
            .await
    }

    /// Without counting: the key already at its limit for mail from `origin` with
    /// `sender` to `recipient`, if it is outbound (the policy service asks this before
    /// queueing; the same rule as [`Guard::count_message`]).
    pub async fn at_limit(&self, origin: &Origin, sender: &str, recipient: &str) -> Option<String> {
        let originating = self.origin.is_originating(origin);
        let default = self.policies.default_index();
        let rcpt = std::iter::once(recipient);
        let chosen = [self.policies.select(recipient, origin.ip, originating)];
        let p = *self
            .local
            .outbound(rcpt, &chosen, originating, default)
            .first()?;
        let relay = self.local.known() && self.origin.is_relay(origin);
        let policy = &self.policies.all[p];
        let limit = policy.rate_limit.as_ref()?;
        self.over(&policy.name, limit, &Keys::of(origin, sender, relay))
            .await
    }

    /// Count one message of policy `policy` from `sender` and say which key is over its
    /// limit, if any.
    pub async fn check(
        &self,
        policy: &str,
        limit: &RateLimit,
        keys: &Keys,
        sender: &str,
    ) -> Option<String> {
        let now = crate::clock::tokio_unix();
        let window = limit.window.as_secs();
        let counted = counted(limit, keys);
        let names = key_names(policy, &counted);
        let counts = match self.counters.hit_all(&names, window, now, sender).await {
            Ok(c) => c,
            Err(e) => return self.unavailable(&e, now),
        };
        let mut over = None;
        for ((kind, value, max), (key, c)) in counted.iter().zip(names.iter().zip(&counts)) {
            if c.count > *max && over.is_none() {
                over = Some(format!("{kind} {value}"));
                self.warn_once(key, limit, *max, c, sender, now);
            }
        }
        over
    }

    /// Without counting: the key that is already at its limit for policy `policy`, if any
    /// (the policy service refuses the next message before it is queued).
    pub async fn over(&self, policy: &str, limit: &RateLimit, keys: &Keys) -> Option<String> {
        let now = crate::clock::tokio_unix();
        let window = limit.window.as_secs();
        let counted = counted(limit, keys);
        let names = key_names(policy, &counted);
        let counts = match self.counters.peek_all(&names, window, now).await {
            Ok(c) => c,
            Err(e) => return self.unavailable(&e, now),
        };
        counted
            .iter()
            .zip(counts)
            .find_map(|((kind, value, max), n)| (n >= *max).then(|| format!("{kind} {value}")))
    }

    /// The store did not answer: nothing is over (open) or everything is (closed), with an
    /// error line at most once a minute.
    fn unavailable(&self, e: &crate::state::Unavailable, now: u64) -> Option<String> {
        let mut last = self.complained.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|at| now.saturating_sub(at) >= 60) {
            *last = Some(now);
            let effect = match self.on_error {
                OnError::Open => "outbound mail passes uncounted",
                OnError::Closed => "outbound mail is held (reason ratelimit)",
            };
            tracing::error!(error = %e, on_error = ?self.on_error, "outbound guard cannot count: {effect}");
        }
        (self.on_error == OnError::Closed).then(|| UNAVAILABLE_KEY.to_string())
    }

    /// Count one message once for each distinct policy in `chosen` (indices into
    /// `policies`) that has a limit; returns the policies it is over, with the key.
    pub async fn count(
        &self,
        policies: &Policies,
        chosen: &[usize],
        keys: &Keys,
        sender: &str,
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
                && let Some(key) = self.check(&policy.name, limit, keys, sender).await
            {
                over.push((p, key));
            }
        }
        over
    }

    fn warn_once(
        &self,
        key: &str,
        limit: &RateLimit,
        max: u64,
        c: &crate::state::Count,
        sender: &str,
        now: u64,
    ) {
        let window = limit.window.as_secs();
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.len() > 10_000 {
            warned.retain(|_, at| now.saturating_sub(*at) < window);
        }
        if warned
            .get(key)
            .is_none_or(|at| now.saturating_sub(*at) >= window)
        {
            warned.insert(key.to_string(), now);
            tracing::warn!(
                key,
                count = c.count,
                limit = max,
                window_secs = window,
                first_sender = %c.first_sender,
                last_sender = %sender,
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
            per_relay: true,
            total: 0,
        }
    }

    fn keys(sender: &str) -> Keys {
        Keys {
            user: None,
            sender: Some(sender.into()),
            client: Some("192.0.2.1".into()),
            relay: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn trips_exactly_at_the_limit_and_resets_after_the_window() {
        let g = Guard::default();
        let check = |k: Keys| {
            let g = &g;
            async move { g.check("p", &limit(), &k, "").await }
        };
        for _ in 0..3 {
            assert_eq!(check(keys("a@x.test")).await, None);
        }
        assert_eq!(
            g.over("p", &limit(), &keys("a@x.test")).await.as_deref(),
            Some("sender a@x.test")
        );
        assert_eq!(
            check(keys("a@x.test")).await.as_deref(),
            Some("sender a@x.test")
        );
        // A different sender from the same client is over through the client key.
        assert_eq!(
            check(keys("b@x.test")).await.as_deref(),
            Some("client 192.0.2.1")
        );
        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(check(keys("a@x.test")).await.is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(g.over("p", &limit(), &keys("a@x.test")).await, None);
        for _ in 0..3 {
            assert_eq!(check(keys("a@x.test")).await, None);
        }
        assert!(check(keys("a@x.test")).await.is_some());
        // Another policy counts apart.
        assert_eq!(g.check("q", &limit(), &keys("a@x.test"), "").await, None);
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
            assert_eq!(g.check("p", &l, &keys("a@x.test"), "").await, None);
        }
        let user = Keys {
            user: Some("bob".into()),
            ..Keys::default()
        };
        for _ in 0..3 {
            assert_eq!(g.check("p", &l, &user, "").await, None);
        }
        assert_eq!(
            g.check("p", &l, &user, "").await.as_deref(),
            Some("user bob")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_sender_per_message_through_loopback_is_counted_as_relay() {
        let g = Guard::default();
        let origin = Origin {
            ip: Some("127.0.0.1".parse().unwrap()),
            local: true,
            ..Origin::default()
        };
        let ours = Keys::of(&origin, "a@x.test", false);
        assert_eq!((ours.client.as_deref(), ours.relay), (None, None));
        let mut over = vec![];
        for i in 0..5 {
            let sender = format!("random{i}@made-up.test");
            let keys = Keys::of(&origin, &sender, true);
            over.push(g.check("p", &limit(), &keys, &sender).await);
        }
        assert_eq!(over[..3], [None, None, None]);
        assert_eq!(over[3].as_deref(), Some("client 127.0.0.1"));
        let by_class = RateLimit {
            per_client: false,
            ..limit()
        };
        assert_eq!(
            g.check("p", &by_class, &Keys::of(&origin, "new@x.test", true), "")
                .await
                .as_deref(),
            Some("relay loopback")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_total_counts_everything_together() {
        let g = Guard::default();
        let l = RateLimit {
            messages: 100,
            total: 2,
            ..limit()
        };
        assert_eq!(g.check("p", &l, &keys("a@x.test"), "").await, None);
        assert_eq!(g.check("p", &l, &keys("b@y.test"), "").await, None);
        assert_eq!(
            g.check("p", &l, &keys("c@z.test"), "").await.as_deref(),
            Some("total outbound")
        );
    }

    #[tokio::test]
    async fn an_unreachable_store_fails_open_or_closed_as_configured() {
        let dead = || Store::Redis(Arc::new(crate::state::redis::dead_store()));
        let open = Guard::new(dead());
        for _ in 0..5 {
            assert_eq!(open.check("p", &limit(), &keys("a@x.test"), "").await, None);
        }
        assert_eq!(open.over("p", &limit(), &keys("a@x.test")).await, None);
        let closed = Guard::new(dead()).with_on_error(OnError::Closed);
        let held = closed.check("p", &limit(), &keys("a@x.test"), "").await;
        assert_eq!(held.as_deref(), Some(UNAVAILABLE_KEY));
        let refused = closed.over("p", &limit(), &keys("a@x.test")).await;
        assert_eq!(refused.as_deref(), Some(UNAVAILABLE_KEY));
    }

    #[test]
    fn client_classes() {
        for (ip, local, want) in [
            (None, true, "pickup"),
            (None, false, "unknown"),
            (Some("127.0.0.1"), true, "loopback"),
            (Some("::1"), false, "loopback"),
            (Some("10.1.2.3"), false, "private"),
            (Some("100.64.0.1"), false, "private"),
            (Some("fd00::1"), false, "private"),
            (Some("192.0.2.1"), false, "public"),
            (Some("2001:db8::1"), false, "public"),
        ] {
            let ip = ip.map(|s| s.parse().unwrap());
            assert_eq!(client_class(ip, local), want, "{ip:?}");
        }
    }
}
