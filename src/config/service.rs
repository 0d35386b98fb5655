//! Building `[local_domains]` (with what the Postfix beside us says), the state store of
//! the guard and greylist, and `[policy_service]`, with every problem reported.

use super::check::{addresses, networks, positive};
use super::raw::RawConfig;
use crate::model::bayes_redis::RedisBayes;
use crate::policy::LocalDomains;
use crate::policyd::allowlist::Allowlist;
use crate::policyd::greylist::GreylistSettings;
use crate::policyd::login::LoginMap;
use crate::policyd::spf::{SpfAct, SpfPolicy};
use crate::policyd::{LimitAction, PolicySettings};
use crate::state::{EmbeddedState, RedisStore, Store};
use ipnet::IpNet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The local domains, Postfix's `mynetworks`, and the start-up line saying where they
/// came from.
#[derive(Debug, Clone, Default)]
pub struct LocalSettings {
    /// Local domains (empty: unknown).
    pub domains: Arc<LocalDomains>,
    /// Postfix's `mynetworks`, when read.
    pub mynetworks: Vec<IpNet>,
    /// What was found, for the log.
    pub summary: String,
}

/// `[local_domains]`: configured domains plus, unless turned off, Postfix's. A failing
/// `postconf` is a problem only when `postfix_config_dir` was set.
pub(super) fn build_local(raw: &RawConfig, p: &mut Vec<String>) -> LocalSettings {
    let l = &raw.local_domains;
    let mut domains = l.domains.clone();
    let mut parts = vec![];
    if !l.domains.is_empty() {
        parts.push(format!("configured: {}", l.domains.join(", ")));
    }
    let mut mynetworks = vec![];
    if l.postconf {
        match super::postfix::ask(&l.postfix_config_dir) {
            Ok(says) => {
                domains.extend(says.domains);
                mynetworks = says.mynetworks;
                parts.push(format!("from Postfix: {}", says.summary.join("; ")));
            }
            Err(e) if !l.postfix_config_dir.is_empty() => {
                p.push(format!("local_domains.postfix_config_dir: {e}"));
            }
            Err(e) => parts.push(format!("not from Postfix ({e})")),
        }
    }
    let domains = LocalDomains::new(domains);
    let summary = if domains.known() {
        format!(
            "local domains: {} ({})",
            domains.patterns().join(", "),
            parts.join("; ")
        )
    } else {
        format!(
            "no local domains known ({}): the outbound guard counts originating mail only and cannot recognise relaying; set [local_domains] domains",
            parts.join("; ")
        )
    };
    LocalSettings {
        domains: Arc::new(domains),
        mynetworks,
        summary,
    }
}

/// The Redis server of `[shared]`, when a store uses it (nothing is connected yet).
pub(super) fn build_redis(raw: &RawConfig, p: &mut Vec<String>) -> Option<Arc<RedisStore>> {
    let s = &raw.shared;
    positive("shared.timeout_ms", s.timeout_ms, p);
    for (key, value) in [("shared.state", &s.state), ("shared.bayes", &s.bayes)] {
        if !matches!(value.as_str(), "embedded" | "redis") {
            p.push(format!("{key}: `{value}` is not one of embedded, redis"));
        }
    }
    let used = s.state == "redis" || s.bayes == "redis";
    if !used {
        return None;
    }
    if s.redis_url.is_empty() {
        p.push("shared: a store on \"redis\" needs shared.redis_url".into());
        return None;
    }
    let max_age = raw
        .policy_service
        .greylist
        .max_age_days
        .saturating_mul(86_400);
    let timeout = std::time::Duration::from_millis(s.timeout_ms.max(1));
    match RedisStore::new(&s.redis_url, &s.key_prefix, timeout, max_age) {
        Ok(r) => Some(Arc::new(r)),
        Err(e) => {
            p.push(format!("shared.redis_url: {e}"));
            None
        }
    }
}

/// The state store of the guard and greylist: `policy.state` in the state directory, or
/// Redis (`[shared] state = "redis"`).
pub(super) fn build_state(
    raw: &RawConfig,
    dir: &Path,
    redis: Option<&Arc<RedisStore>>,
    p: &mut Vec<String>,
) -> Store {
    if let (Some(r), "redis") = (redis, raw.shared.state.as_str()) {
        return Store::Redis(r.clone());
    }
    let g = &raw.policy_service.greylist;
    let max_age = g.max_age_days.saturating_mul(86_400);
    match EmbeddedState::open(&dir.join("policy.state"), g.max_entries, max_age) {
        Ok(s) => Store::Embedded(Arc::new(s)),
        Err(e) => {
            p.push(format!("state: {e}"));
            Store::Embedded(Arc::new(EmbeddedState::in_memory(g.max_entries, max_age)))
        }
    }
}

/// The Bayes store in Redis, when `[shared] bayes = "redis"` and Bayes is on.
pub(super) fn build_bayes_redis(
    raw: &RawConfig,
    redis: Option<&Arc<RedisStore>>,
    params: crate::model::bayes::BayesParams,
) -> Option<Arc<RedisBayes>> {
    let redis = redis.filter(|_| raw.shared.bayes == "redis" && raw.bayes.enabled)?;
    let ttl = raw.shared.bayes_token_ttl_days.saturating_mul(86_400);
    Some(Arc::new(RedisBayes::new(redis.clone(), params, ttl)))
}

/// `[policy_service]`, when enabled.
pub(super) fn build_policy_service(
    raw: &RawConfig,
    local: &LocalSettings,
    p: &mut Vec<String>,
) -> Option<PolicySettings> {
    let s = &raw.policy_service;
    if !s.enabled {
        return None;
    }
    let listen = addresses("policy_service.listen", &s.listen, p);
    if listen.is_empty() {
        p.push("policy_service.listen: no listen address".into());
    }
    positive(
        "policy_service.max_connections",
        s.max_connections as u64,
        p,
    );
    positive("policy_service.idle_timeout_secs", s.idle_timeout_secs, p);
    let mut exempt = networks("policy_service.exempt_networks", &s.exempt_networks, p);
    if s.exempt_networks.is_empty() {
        exempt = local.mynetworks.clone();
        if exempt.is_empty() {
            exempt = ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect();
        }
    }
    let spf = (s.spf.enabled).then(|| spf_policy(raw, p)).flatten();
    let mut notes = vec![];
    if s.spf.enabled && !raw.auth.enabled {
        notes.push("policy service: SPF at RCPT is off ([auth] enabled = false)".to_string());
    }
    let login = (!s.login.sender_login_map.is_empty())
        .then(|| login_map(raw, p))
        .flatten();
    let limits = match (s.limits.enabled, s.limits.action.as_str()) {
        (false, _) => None,
        (true, "defer") => Some(LimitAction::Defer),
        (true, "reject") => Some(LimitAction::Reject),
        (true, other) => {
            p.push(format!(
                "policy_service.limits.action: `{other}` is not defer or reject"
            ));
            None
        }
    };
    Some(PolicySettings {
        listen,
        max_connections: s.max_connections,
        idle_timeout: Duration::from_secs(s.idle_timeout_secs),
        exempt,
        greylist: s.greylist.enabled.then(|| greylist(raw, p)),
        spf,
        login,
        limits,
        notes,
    })
}

fn greylist(raw: &RawConfig, p: &mut Vec<String>) -> GreylistSettings {
    let g = &raw.policy_service.greylist;
    let key = "policy_service.greylist";
    positive(&format!("{key}.max_age_days"), g.max_age_days, p);
    positive(&format!("{key}.max_entries"), g.max_entries as u64, p);
    if g.ipv4_prefix > 32 || g.ipv6_prefix > 128 {
        p.push(format!(
            "{key}: ipv4_prefix is at most 32, ipv6_prefix at most 128"
        ));
    }
    let read = |files: &[String], clients: bool, p: &mut Vec<String>| {
        let mut all = Allowlist::default();
        for f in files {
            let parsed = std::fs::read_to_string(f)
                .map_err(|e| vec![format!("{f}: cannot read: {e}")])
                .and_then(|text| {
                    if clients {
                        Allowlist::parse_clients(&text, f)
                    } else {
                        Allowlist::parse_recipients(&text, f)
                    }
                });
            match parsed {
                Ok(list) => all.extend(list),
                Err(errors) => p.extend(errors.into_iter().map(|e| format!("{key}: {e}"))),
            }
        }
        all
    };
    GreylistSettings {
        delay: g.delay_secs,
        retry_window: g.retry_window_secs,
        max_age: g.max_age_days.saturating_mul(86_400),
        auto_allowlist_after: g.auto_allowlist_after,
        ipv4_prefix: g.ipv4_prefix,
        ipv6_prefix: g.ipv6_prefix,
        clients: read(&g.allow_clients_files, true, p),
        recipients: read(&g.allow_recipients_files, false, p),
        text: g.text.clone(),
        prepend_header: g.prepend_header,
    }
}

fn spf_policy(raw: &RawConfig, p: &mut Vec<String>) -> Option<SpfPolicy> {
    let s = &raw.policy_service.spf;
    if !raw.auth.enabled {
        return None;
    }
    let mut act = |name: &str, v: &str, allowed: &[&str]| match SpfAct::parse(v) {
        Some(a) if allowed.contains(&v) => a,
        _ => {
            p.push(format!(
                "policy_service.spf.{name}: `{v}` is not one of {}",
                allowed.join(", ")
            ));
            SpfAct::Prepend
        }
    };
    Some(SpfPolicy {
        helo: s.helo,
        fail: act("fail", &s.fail, &["reject", "prepend"]),
        softfail: act("softfail", &s.softfail, &["prepend", "defer", "reject"]),
        temperror: act("temperror", &s.temperror, &["prepend", "defer"]),
    })
}

fn login_map(raw: &RawConfig, p: &mut Vec<String>) -> Option<LoginMap> {
    let l = &raw.policy_service.login;
    let path = &l.sender_login_map;
    let text = std::fs::read_to_string(path)
        .map_err(|e| {
            p.push(format!(
                "policy_service.login.sender_login_map: {path}: cannot read: {e}"
            ))
        })
        .ok()?;
    LoginMap::parse(&text, path, &l.service_senders, l.allow_null_sender)
        .map_err(|errors| {
            p.extend(
                errors
                    .into_iter()
                    .map(|e| format!("policy_service.login: {e}")),
            );
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn config(extra: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(&format!(
            "[model]\nenabled = false\n[bayes]\nenabled = false\n[auth]\nenabled = false\n{extra}"
        ))
    }

    #[test]
    fn postgrey_allow_lists_are_read_and_their_errors_named_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("whitelist_clients");
        std::fs::write(&good, "# big senders\nmail.example.com\n192.0.2\n").unwrap();
        let bad = dir.path().join("bad_clients");
        std::fs::write(&bad, "ok.example\n/(unclosed/\n").unwrap();
        let c = config(&format!(
            "[local_domains]\npostconf = false\n[policy_service]\nenabled = true\n\
             [policy_service.greylist]\nallow_clients_files = [\"{}\"]\n",
            good.display()
        ))
        .unwrap();
        let g = c.policy_service.and_then(|p| p.greylist).unwrap();
        assert!(
            g.clients
                .client_allowed("192.0.2.77".parse().unwrap(), "unknown")
        );
        assert!(
            g.clients
                .client_allowed("198.51.100.1".parse().unwrap(), "out.mail.example.com")
        );
        assert!(
            !g.clients
                .client_allowed("198.51.100.1".parse().unwrap(), "unknown")
        );
        let e = config(&format!(
            "[local_domains]\npostconf = false\n[policy_service]\nenabled = true\nlisten = []\n\
             [policy_service.greylist]\nallow_clients_files = [\"{}\", \"/nonexistent/x\"]\n\
             [policy_service.limits]\naction = \"maybe\"\n",
            bad.display()
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("bad_clients:2:"), "{e}");
        assert!(e.contains("/nonexistent/x: cannot read"), "{e}");
        assert!(
            e.contains("policy_service.listen: no listen address"),
            "{e}"
        );
        assert!(e.contains("policy_service.limits.action: `maybe`"), "{e}");
    }

    #[test]
    fn without_auth_spf_at_rcpt_is_off_and_says_so() {
        let c = config("[local_domains]\npostconf = false\n[policy_service]\nenabled = true\n")
            .unwrap();
        let p = c.policy_service.unwrap();
        assert!(p.spf.is_none());
        assert!(
            p.notes.iter().any(|n| n.contains("SPF at RCPT is off")),
            "{:?}",
            p.notes
        );
        assert!(!c.local.domains.known());
        assert!(
            c.local.summary.starts_with("no local domains known"),
            "{}",
            c.local.summary
        );
    }

    #[test]
    fn shared_state_settings_are_checked_and_redis_is_not_needed_to_start() {
        let c =
            config("[shared]\nredis_url = \"redis://127.0.0.1:1/0\"\nstate = \"redis\"\n").unwrap();
        assert_eq!(c.state.describe(), "redis redis://127.0.0.1:1/0");
        assert!(c.state.embedded().is_none());
        let e = config("[shared]\nstate = \"redis\"\ntimeout_ms = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("shared: a store on \"redis\" needs shared.redis_url"),
            "{e}"
        );
        assert!(e.contains("shared.timeout_ms"), "{e}");
        let e = config("[shared]\nstate = \"memcached\"\nguard_on_error = \"maybe\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("[shared]") && e.contains("maybe"), "{e}");
        let e = config("[shared]\nstate = \"memcached\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("shared.state: `memcached` is not one of embedded, redis"),
            "{e}"
        );
        let e = config("[shared]\nredis_url = \"nonsense\"\nstate = \"redis\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("shared.redis_url: nonsense"), "{e}");
        let e = config("[shared]\nquarantine = \"postgresql\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs shared.postgresql_url"), "{e}");
        let e = config("[shared]\nquarantine = \"mysql\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("shared.quarantine: `mysql`"), "{e}");
        let pg = "[shared]\nquarantine = \"postgresql\"\npostgresql_url = \"postgresql://u:pw@127.0.0.1:1/q\"\n";
        let q = config(pg).unwrap().quarantine.unwrap().store;
        assert!(q.is_database());
        assert_eq!(
            q.dir().display().to_string(),
            "postgresql://***@127.0.0.1:1/q"
        );
    }
}
