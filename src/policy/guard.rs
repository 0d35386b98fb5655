//! The outbound guard: rate limits on mail to recipients outside the local domains, per
//! SASL user, per envelope sender, per client IP and, for relayed mail (a client neither
//! authenticated nor in `[origin] networks`), per client class as a whole, so that a flood
//! through a tunnel that ends on loopback is counted however often it changes its sender.
//! Optionally a limit on all outbound mail together. Past a limit, messages are
//! quarantined (reason `ratelimit`) instead of relayed; one warning per key and window.
//!
//! The content filter counts ([`Guard::count`]); the policy service asks the same counters
//! before queueing ([`Guard::over`]). Counters are behind [`Counters`] so a shared store
//! can back them; time is [`crate::clock::tokio_unix`], so tests pause it.

use super::{LocalDomains, Policies};
use crate::auth::origin::{Origin, OriginPolicy};
use crate::smtp::envelope::Envelope;
use crate::state::Counters;
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

/// The guard: counters plus the once-per-window warning.
pub struct Guard {
    counters: Arc<dyn Counters>,
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
        Guard::new(Arc::new(crate::state::EmbeddedState::in_memory(
            100_000, 86_400,
        )))
    }
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
    pub fn new(counters: Arc<dyn Counters>) -> Self {
        let none = Arc::new(Policies { all: vec![] });
        Self::scoped(counters, Arc::default(), OriginPolicy::default(), none)
    }

    /// A guard over `counters` for `policies` that tells outbound from local recipients by
    /// `local` and relayed from our own clients by `origin`.
    pub fn scoped(
        counters: Arc<dyn Counters>,
        local: Arc<LocalDomains>,
        origin: OriginPolicy,
        policies: Arc<Policies>,
    ) -> Self {
        Guard {
            counters,
            warned: Mutex::new(HashMap::new()),
            local,
            origin,
            policies,
        }
    }

    /// Count the message of `env` from `origin` under the policies (from `chosen`, one per
    /// recipient; missing = the default) of its outbound recipients; returns the policies
    /// it is over, with the key. Relayed mail is recognised only with local domains known.
    pub fn count_message(
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
    }

    /// Without counting: the key already at its limit for mail from `origin` with
    /// `sender` to `recipient`, if it is outbound (the policy service asks this before
    /// queueing; the same rule as [`Guard::count_message`]).
    pub fn at_limit(&self, origin: &Origin, sender: &str, recipient: &str) -> Option<String> {
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
    }

    /// Count one message of policy `policy` from `sender` and say which key is over its
    /// limit, if any.
    pub fn check(
        &self,
        policy: &str,
        limit: &RateLimit,
        keys: &Keys,
        sender: &str,
    ) -> Option<String> {
        let now = crate::clock::tokio_unix();
        let window = limit.window.as_secs();
        let mut over = None;
        for (kind, value, max) in counted(limit, keys) {
            let key = format!("{policy}/{kind}/{value}");
            let c = self.counters.hit(&key, window, now, sender);
            if c.count > max && over.is_none() {
                over = Some(format!("{kind} {value}"));
                self.warn_once(&key, limit, max, &c, sender, now);
            }
        }
        over
    }

    /// Without counting: the key that is already at its limit for policy `policy`, if any
    /// (the policy service refuses the next message before it is queued).
    pub fn over(&self, policy: &str, limit: &RateLimit, keys: &Keys) -> Option<String> {
        let now = crate::clock::tokio_unix();
        let window = limit.window.as_secs();
        counted(limit, keys)
            .into_iter()
            .find_map(|(kind, value, max)| {
                let n = self
                    .counters
                    .peek(&format!("{policy}/{kind}/{value}"), window, now);
                (n >= max).then(|| format!("{kind} {value}"))
            })
    }

    /// Count one message once for each distinct policy in `chosen` (indices into
    /// `policies`) that has a limit; returns the policies it is over, with the key.
    pub fn count(
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
                && let Some(key) = self.check(&policy.name, limit, keys, sender)
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
        let check = |k: &Keys| g.check("p", &limit(), k, "");
        for _ in 0..3 {
            assert_eq!(check(&keys("a@x.test")), None);
        }
        assert_eq!(
            g.over("p", &limit(), &keys("a@x.test")).as_deref(),
            Some("sender a@x.test")
        );
        assert_eq!(check(&keys("a@x.test")).as_deref(), Some("sender a@x.test"));
        // A different sender from the same client is over through the client key.
        assert_eq!(
            check(&keys("b@x.test")).as_deref(),
            Some("client 192.0.2.1")
        );
        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(check(&keys("a@x.test")).is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(g.over("p", &limit(), &keys("a@x.test")), None);
        for _ in 0..3 {
            assert_eq!(check(&keys("a@x.test")), None);
        }
        assert!(check(&keys("a@x.test")).is_some());
        // Another policy counts apart.
        assert_eq!(g.check("q", &limit(), &keys("a@x.test"), ""), None);
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
            assert_eq!(g.check("p", &l, &keys("a@x.test"), ""), None);
        }
        let user = Keys {
            user: Some("bob".into()),
            ..Keys::default()
        };
        for _ in 0..3 {
            assert_eq!(g.check("p", &l, &user, ""), None);
        }
        assert_eq!(g.check("p", &l, &user, "").as_deref(), Some("user bob"));
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
        let over = (0..5)
            .map(|i| {
                let sender = format!("random{i}@made-up.test");
                g.check("p", &limit(), &Keys::of(&origin, &sender, true), &sender)
            })
            .collect::<Vec<_>>();
        assert_eq!(over[..3], [None, None, None]);
        assert_eq!(over[3].as_deref(), Some("client 127.0.0.1"));
        let by_class = RateLimit {
            per_client: false,
            ..limit()
        };
        assert_eq!(
            g.check("p", &by_class, &Keys::of(&origin, "new@x.test", true), "")
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
        assert_eq!(g.check("p", &l, &keys("a@x.test"), ""), None);
        assert_eq!(g.check("p", &l, &keys("b@y.test"), ""), None);
        assert_eq!(
            g.check("p", &l, &keys("c@z.test"), "").as_deref(),
            Some("total outbound")
        );
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
