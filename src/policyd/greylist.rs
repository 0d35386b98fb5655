//! Greylisting with postgrey's behaviour: a new triplet (client network, sender,
//! recipient) is deferred; a retry after the delay passes, and from then on the triplet
//! passes while it is seen within `max_age`; a first retry after the retry window starts
//! over; a client network whose mail passed after a delay `auto_allowlist_after` times is
//! no longer greylisted. Senders are normalised as postgrey does (lower case, no `+ext`,
//! digit runs as `#`, so VERP and SRS senders keep one triplet).

use super::allowlist::Allowlist;
use crate::state::{Store, Triplet, Unavailable};
use std::net::IpAddr;

/// The settings.
#[derive(Debug, Clone)]
pub struct GreylistSettings {
    /// Seconds before a retry passes.
    pub delay: u64,
    /// A first retry later than this (seconds after the first attempt) starts over.
    pub retry_window: u64,
    /// Seconds a triplet is remembered after it was last seen.
    pub max_age: u64,
    /// Passes after which a client network is allow-listed; 0 = never.
    pub auto_allowlist_after: u64,
    /// IPv4 grouping prefix.
    pub ipv4_prefix: u8,
    /// IPv6 grouping prefix.
    pub ipv6_prefix: u8,
    /// postgrey `whitelist_clients`.
    pub clients: Allowlist,
    /// postgrey `whitelist_recipients`.
    pub recipients: Allowlist,
    /// Deferral text (`%r` recipient domain, `%s` seconds left).
    pub text: String,
    /// Prepend `X-Greylist:` after a delay.
    pub prepend_header: bool,
}

/// What greylisting says of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grey {
    /// Not greylisted: an allow-list or the auto-allowlist (which one).
    Allowed(&'static str),
    /// Passed; `Some(seconds)` when this is the retry that passed after a delay.
    Pass(Option<u64>),
    /// Deferred; seconds until a retry passes.
    Defer(u64),
}

/// The client network of `ip` as a key (postgrey: `192.0.2` for a /24).
pub fn network(ip: IpAddr, v4: u8, v6: u8) -> String {
    match ip {
        IpAddr::V4(a) => {
            let net = ipnet::Ipv4Net::new(a, v4.min(32)).map_or(a, |n| n.network());
            if v4 == 24 {
                let o = net.octets();
                format!("{}.{}.{}", o[0], o[1], o[2])
            } else {
                format!("{net}/{v4}")
            }
        }
        IpAddr::V6(a) => {
            let net = ipnet::Ipv6Net::new(a, v6.min(128)).map_or(a, |n| n.network());
            format!("{net}/{v6}")
        }
    }
}

/// postgrey's sender normalisation.
pub fn normalise_sender(sender: &str) -> String {
    let sender = sender.to_ascii_lowercase();
    let (local, domain) = sender.rsplit_once('@').unwrap_or((sender.as_str(), ""));
    let local = local.split('+').next().unwrap_or(local);
    let mut out = String::with_capacity(sender.len());
    let mut in_digits = false;
    for c in local.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    if !domain.is_empty() {
        out.push('@');
        out.push_str(domain);
    }
    out
}

impl GreylistSettings {
    /// Greylist one recipient at `now` (Unix seconds). A store that cannot answer (Redis
    /// down) lets the mail pass: greylisting is a delay, never a reason to lose mail.
    pub async fn check(
        &self,
        store: &Store,
        ip: IpAddr,
        client_name: &str,
        sender: &str,
        recipient: &str,
        now: u64,
    ) -> Grey {
        if self.clients.client_allowed(ip, client_name) {
            return Grey::Allowed("client allow-list");
        }
        if self.recipients.recipient_allowed(recipient) {
            return Grey::Allowed("recipient allow-list");
        }
        match self.triplet(store, ip, sender, recipient, now).await {
            Ok(g) => g,
            Err(e) => {
                tracing::debug!(error = %e, "greylist store unavailable: passing");
                Grey::Allowed("store-unavailable")
            }
        }
    }

    async fn triplet(
        &self,
        store: &Store,
        ip: IpAddr,
        sender: &str,
        recipient: &str,
        now: u64,
    ) -> Result<Grey, Unavailable> {
        let net = network(ip, self.ipv4_prefix, self.ipv6_prefix);
        if self.auto_allowlist_after > 0 && store.passes(&net).await? >= self.auto_allowlist_after {
            return Ok(Grey::Allowed("auto-allowlist"));
        }
        let key = format!(
            "{net}/{}/{}",
            normalise_sender(sender),
            recipient.to_ascii_lowercase()
        );
        let fresh = Triplet {
            first: now,
            last: now,
            passed: false,
        };
        let record = store.get(&key).await?.filter(|t| {
            now.saturating_sub(t.last) <= self.max_age
                && (t.passed || now.saturating_sub(t.first) <= self.retry_window)
        });
        let Some(t) = record else {
            store.put(&key, fresh).await?;
            return Ok(Grey::Defer(self.delay));
        };
        let waited = now.saturating_sub(t.first);
        if !t.passed && waited < self.delay {
            store.put(&key, Triplet { last: now, ..t }).await?;
            return Ok(Grey::Defer(self.delay - waited));
        }
        let passed = Triplet {
            last: now,
            passed: true,
            ..t
        };
        store.put(&key, passed).await?;
        if t.passed {
            Ok(Grey::Pass(None))
        } else {
            store.add_pass(&net, now).await?;
            Ok(Grey::Pass(Some(waited)))
        }
    }

    /// The deferral text for `recipient` with `left` seconds to wait.
    pub fn defer_text(&self, recipient: &str, left: u64) -> String {
        let domain = recipient.rsplit_once('@').map_or("", |(_, d)| d);
        self.text
            .replace("%r", domain)
            .replace("%s", &left.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{EmbeddedState, Store};
    use std::sync::Arc;

    fn settings() -> GreylistSettings {
        GreylistSettings {
            delay: 300,
            retry_window: 2 * 86_400,
            max_age: 35 * 86_400,
            auto_allowlist_after: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            clients: Allowlist::default(),
            recipients: Allowlist::default(),
            text: "Greylisted for %s seconds at %r".into(),
            prepend_header: false,
        }
    }

    #[test]
    fn postgrey_keys() {
        assert_eq!(network("192.0.2.77".parse().unwrap(), 24, 64), "192.0.2");
        assert_eq!(
            network("2001:db8:1:2:3::9".parse().unwrap(), 24, 64),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            normalise_sender("Bounce+12345-abc99x@Lists.Example"),
            "bounce@lists.example"
        );
        assert_eq!(
            normalise_sender("srs0=ab12=cd@x.test"),
            "srs#=ab#=cd@x.test"
        );
        assert_eq!(normalise_sender(""), "");
    }

    #[tokio::test(start_paused = true)]
    async fn defer_then_pass_after_the_delay_then_auto_allowlist() {
        let s = settings();
        let store = Store::Embedded(Arc::new(EmbeddedState::in_memory(1000, s.max_age)));
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let other: IpAddr = "192.0.2.200".parse().unwrap();
        let now = || crate::clock::tokio_unix();
        let t0 = now();
        let check = |ip, rcpt: &'static str| {
            let (s, store) = (&s, &store);
            async move { s.check(store, ip, "unknown", "a@x.test", rcpt, now()).await }
        };
        assert_eq!(check(ip, "u1@y.test").await, Grey::Defer(300));
        tokio::time::advance(std::time::Duration::from_secs(100)).await;
        assert_eq!(
            check(other, "u1@y.test").await,
            Grey::Defer(200),
            "the same /24"
        );
        tokio::time::advance(std::time::Duration::from_secs(200)).await;
        assert_eq!(now() - t0, 300);
        assert_eq!(check(ip, "u1@y.test").await, Grey::Pass(Some(300)));
        assert_eq!(check(ip, "u1@y.test").await, Grey::Pass(None));
        assert_eq!(check(ip, "u2@y.test").await, Grey::Defer(300));
        tokio::time::advance(std::time::Duration::from_secs(300)).await;
        assert_eq!(check(ip, "u2@y.test").await, Grey::Pass(Some(300)));
        assert_eq!(
            check(ip, "u3@y.test").await,
            Grey::Allowed("auto-allowlist")
        );
        assert_eq!(
            s.defer_text("u@y.test", 42),
            "Greylisted for 42 seconds at y.test"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_the_window_or_the_max_age_starts_over() {
        let s = settings();
        let store = Store::Embedded(Arc::new(EmbeddedState::in_memory(1000, s.max_age)));
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let check = || async {
            s.check(
                &store,
                ip,
                "unknown",
                "a@x.test",
                "u@y.test",
                crate::clock::tokio_unix(),
            )
            .await
        };
        assert_eq!(check().await, Grey::Defer(300));
        tokio::time::advance(std::time::Duration::from_secs(3 * 86_400)).await;
        assert_eq!(check().await, Grey::Defer(300), "past the retry window");
        tokio::time::advance(std::time::Duration::from_secs(300)).await;
        assert_eq!(check().await, Grey::Pass(Some(300)));
        tokio::time::advance(std::time::Duration::from_secs(36 * 86_400)).await;
        assert_eq!(check().await, Grey::Defer(300), "forgotten after max_age");
    }

    #[tokio::test]
    async fn an_unreachable_store_lets_mail_pass() {
        let store = Store::Redis(Arc::new(crate::state::redis::dead_store()));
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        for _ in 0..2 {
            let g = settings()
                .check(&store, ip, "unknown", "a@x.test", "u@y.test", 1)
                .await;
            assert_eq!(g, Grey::Allowed("store-unavailable"));
        }
    }
}
