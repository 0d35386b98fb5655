//! Building the policies (`[levels]`, `[actions]`, `[lists]`, `[ratelimit]` and each
//! `[[policy]]` bank) and the quarantine settings, with every problem reported.

use super::check::networks;
use super::raw::{RawConfig, RawLists, RawPolicy, RawRateLimit};
use crate::action::quarantine::{PgQuarantine, Quarantine};
use crate::checks::Registry;
use crate::model::bayes_store::default_state_dir;
use crate::policy::{Destiny, Direction, Lists, Policies, Policy, RateLimit};
use crate::verdict::Levels;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

/// The quarantine store and its retention.
#[derive(Debug, Clone)]
pub struct QuarantineSettings {
    /// The store.
    pub store: Quarantine,
    /// Entries older than this are deleted.
    pub max_age: Option<Duration>,
    /// The oldest entries are deleted while the messages take more bytes.
    pub max_bytes: Option<u64>,
}

/// The quarantine store the configuration names: its directory, or PostgreSQL with
/// `[shared] quarantine = "postgresql"` (also for `filterq`); rows are marked as written by
/// `hostname`.
pub fn quarantine_store(raw: &RawConfig, hostname: &str) -> Result<Quarantine, String> {
    let s = &raw.shared;
    match s.quarantine.as_str() {
        "directory" => Ok(Quarantine::at(&quarantine_dir(raw))),
        "postgresql" if s.postgresql_url.is_empty() => {
            Err("shared.quarantine = \"postgresql\" needs shared.postgresql_url".into())
        }
        "postgresql" => {
            let timeout = Duration::from_millis(s.postgresql_timeout_ms.max(1));
            PgQuarantine::new(&s.postgresql_url, hostname, timeout)
                .map(Quarantine::postgres)
                .map_err(|e| format!("shared.postgresql_url: {e}"))
        }
        other => Err(format!(
            "shared.quarantine: `{other}` is not one of directory, postgresql"
        )),
    }
}

/// The quarantine directory the configuration names (also for `filterq`).
pub fn quarantine_dir(raw: &RawConfig) -> PathBuf {
    if !raw.quarantine.dir.is_empty() {
        PathBuf::from(&raw.quarantine.dir)
    } else if !raw.bayes.state_dir.is_empty() {
        PathBuf::from(&raw.bayes.state_dir).join("quarantine")
    } else {
        default_state_dir().join("quarantine")
    }
}

/// The default policy and the banks.
pub(super) fn build_policies(raw: &RawConfig, p: &mut Vec<String>) -> Policies {
    let registry = Registry::default();
    let default = default_policy(raw, p);
    let mut all = vec![];
    let mut names = HashSet::new();
    for (i, b) in raw.policy.iter().enumerate() {
        let key = format!("policy[{i}] ({})", b.name);
        if b.name.is_empty() || b.name == "default" {
            p.push(format!(
                "policy[{i}].name: give each bank a name other than `default`"
            ));
        } else if !names.insert(b.name.clone()) {
            p.push(format!("{key}: the name is used twice"));
        }
        all.push(bank(raw, &key, b, &default, &registry, p));
    }
    all.push(default);
    Policies { all }
}

/// `[levels]`, `[actions]`, `[lists]` and `[ratelimit]`: the default policy.
fn default_policy(raw: &RawConfig, p: &mut Vec<String>) -> Policy {
    let l = &raw.levels;
    let levels = Levels {
        tag: l.tag_level,
        tag2: l.tag2_level,
        kill: l.kill_level,
    };
    check_levels(
        "levels",
        levels,
        l.quarantine_cutoff_level,
        l.discard_cutoff_level,
        p,
    );
    let a = &raw.actions;
    Policy {
        name: "default".into(),
        recipient_domains: vec![],
        client_networks: vec![],
        direction: Direction::Any,
        levels,
        quarantine_cutoff: l.quarantine_cutoff_level,
        discard_cutoff: l.discard_cutoff_level,
        spam_destiny: destiny("actions.spam_destiny", &a.spam_destiny, p),
        spam_quarantine: a.spam_quarantine,
        subject_tag: a.subject_tag.clone(),
        dmarc_reject: dmarc_action("actions.dmarc_reject", &a.dmarc_reject, p),
        dmarc_quarantine: dmarc_action("actions.dmarc_quarantine", &a.dmarc_quarantine, p),
        skip_checks: vec![],
        skipped_hits: HashSet::new(),
        lists: lists("lists", &raw.lists, p),
        rate_limit: rate_limit("ratelimit", &raw.ratelimit, p),
        banned: super::content::banned_rules(raw, "content", &[], p),
        banned_destiny: super::content::content_destiny(
            "banned_destiny",
            &raw.content.banned_destiny,
            p,
        ),
        banned_quarantine: raw.content.banned_quarantine,
        virus_destiny: super::content::content_destiny(
            "virus_destiny",
            &raw.content.virus_destiny,
            p,
        ),
        virus_quarantine: raw.content.virus_quarantine,
    }
}

/// One `[[policy]]` bank (`key` names it in problems): its selectors, and its overrides of
/// the default policy.
fn bank(
    raw: &RawConfig,
    key: &str,
    b: &RawPolicy,
    default: &Policy,
    registry: &Registry,
    p: &mut Vec<String>,
) -> Policy {
    if b.recipient_domains.is_empty() && b.client_networks.is_empty() && b.origin.is_none() {
        p.push(format!(
            "{key}: no selector (recipient_domains, client_networks, origin): it would apply to all mail; change the defaults instead"
        ));
    }
    for d in &b.recipient_domains {
        let bare = d.strip_prefix('.').unwrap_or(d);
        if bare.is_empty() || bare.contains('@') || bare.contains(char::is_whitespace) {
            p.push(format!("{key}.recipient_domains: `{d}` is not a domain"));
        }
    }
    let direction = match b.origin.as_deref() {
        None => Direction::Any,
        Some(o) => Direction::parse(o).unwrap_or_else(|| {
            p.push(format!(
                "{key}.origin: `{o}` is not any, inbound or originating"
            ));
            Direction::Any
        }),
    };
    let levels = Levels {
        tag: b.tag_level.unwrap_or(default.levels.tag),
        tag2: b.tag2_level.unwrap_or(default.levels.tag2),
        kill: b.kill_level.unwrap_or(default.levels.kill),
    };
    let quarantine_cutoff = b.quarantine_cutoff_level.or(default.quarantine_cutoff);
    let discard_cutoff = b.discard_cutoff_level.or(default.discard_cutoff);
    check_levels(key, levels, quarantine_cutoff, discard_cutoff, p);
    let mut skipped_hits = HashSet::new();
    for c in &b.skip_checks {
        match registry.hits_of(c) {
            Some(h) => skipped_hits.extend(h),
            None if c == "rules" => {}
            None => p.push(format!(
                "{key}.skip_checks: no check is called `{c}` (known: {}, rules)",
                registry.check_names().collect::<Vec<_>>().join(", ")
            )),
        }
    }
    let choice = |field: &str, v: &Option<String>, d: bool, p: &mut Vec<String>| {
        v.as_ref()
            .map_or(d, |x| dmarc_action(&format!("{key}.{field}"), x, p))
    };
    Policy {
        name: b.name.clone(),
        recipient_domains: b
            .recipient_domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect(),
        client_networks: networks(&format!("{key}.client_networks"), &b.client_networks, p),
        direction,
        levels,
        quarantine_cutoff,
        discard_cutoff,
        spam_destiny: b.spam_destiny.as_ref().map_or(default.spam_destiny, |d| {
            destiny(&format!("{key}.spam_destiny"), d, p)
        }),
        spam_quarantine: b.spam_quarantine.unwrap_or(default.spam_quarantine),
        subject_tag: b
            .subject_tag
            .clone()
            .unwrap_or_else(|| default.subject_tag.clone()),
        dmarc_reject: choice("dmarc_reject", &b.dmarc_reject, default.dmarc_reject, p),
        dmarc_quarantine: choice(
            "dmarc_quarantine",
            &b.dmarc_quarantine,
            default.dmarc_quarantine,
            p,
        ),
        skip_checks: b.skip_checks.clone(),
        skipped_hits,
        lists: b.lists.as_ref().map_or_else(
            || default.lists.clone(),
            |l| lists(&format!("{key}.lists"), l, p),
        ),
        rate_limit: b.ratelimit.as_ref().map_or(default.rate_limit, |r| {
            rate_limit(&format!("{key}.ratelimit"), r, p)
        }),
        banned: match b.allow_banned.is_empty() {
            true => default.banned.clone(),
            false => super::content::banned_rules(raw, key, &b.allow_banned, p),
        },
        ..default.clone()
    }
}

/// The quarantine, when some policy can put mail there (created and checked writable by
/// the server at start, and by `--check-config`).
pub(super) fn build_quarantine(
    raw: &RawConfig,
    policies: &Policies,
    hostname: &str,
    p: &mut Vec<String>,
) -> Option<QuarantineSettings> {
    let used = policies.all.iter().any(|x| {
        x.spam_quarantine || x.rate_limit.is_some() || x.banned_quarantine || x.virus_quarantine
    });
    let store = quarantine_store(raw, hostname)
        .map_err(|e| p.push(e))
        .ok()?;
    used.then(|| QuarantineSettings {
        store,
        max_age: (raw.quarantine.max_age_days > 0)
            .then(|| Duration::from_secs(raw.quarantine.max_age_days * 86_400)),
        max_bytes: (raw.quarantine.max_size_mb > 0)
            .then(|| raw.quarantine.max_size_mb.saturating_mul(1024 * 1024)),
    })
}

fn check_levels(
    key: &str,
    l: Levels,
    quarantine_cutoff: Option<f64>,
    discard_cutoff: Option<f64>,
    p: &mut Vec<String>,
) {
    for (k, v) in [
        ("tag_level", Some(l.tag)),
        ("tag2_level", Some(l.tag2)),
        ("kill_level", Some(l.kill)),
        ("quarantine_cutoff_level", quarantine_cutoff),
        ("discard_cutoff_level", discard_cutoff),
    ] {
        if v.is_some_and(|v| !v.is_finite()) {
            p.push(format!("{key}.{k}: must be a finite number"));
        }
    }
    if l.tag2 > l.kill {
        p.push(format!(
            "{key}: tag2_level ({}) is above kill_level ({}): mail would be blocked before it is called spam",
            l.tag2, l.kill
        ));
    }
    for (k, v) in [
        ("quarantine_cutoff_level", quarantine_cutoff),
        ("discard_cutoff_level", discard_cutoff),
    ] {
        if let Some(v) = v
            && v < l.kill
        {
            p.push(format!(
                "{key}.{k} ({v}) is below kill_level ({}): cutoffs apply to blocked mail only",
                l.kill
            ));
        }
    }
}

fn destiny(key: &str, s: &str, p: &mut Vec<String>) -> Destiny {
    Destiny::parse(s).unwrap_or_else(|| {
        p.push(format!("{key}: `{s}` is not pass, discard or reject"));
        Destiny::Pass
    })
}

/// `score` (false) or `quarantine` (true).
fn dmarc_action(key: &str, s: &str, p: &mut Vec<String>) -> bool {
    match s {
        "score" => false,
        "quarantine" => true,
        _ => {
            p.push(format!("{key}: `{s}` is not score or quarantine"));
            false
        }
    }
}

fn lists(key: &str, l: &RawLists, p: &mut Vec<String>) -> Lists {
    let mut check = |field: &str, list: &[String]| {
        for e in list {
            if e.is_empty() || e.contains(char::is_whitespace) || e.starts_with('<') {
                p.push(format!(
                    "{key}.{field}: `{e}` is not an address or domain (forms: user@example.com, @example.com, example.com, .example.com)"
                ));
            }
        }
        list.iter().map(|e| e.to_ascii_lowercase()).collect()
    };
    let allow_senders = check("allow_senders", &l.allow_senders);
    let block_senders = check("block_senders", &l.block_senders);
    let allow_from = check("allow_from", &l.allow_from);
    let block_from = check("block_from", &l.block_from);
    Lists {
        allow_senders,
        block_senders,
        allow_from,
        block_from,
        allow_clients: networks(&format!("{key}.allow_clients"), &l.allow_clients, p),
        block_clients: networks(&format!("{key}.block_clients"), &l.block_clients, p),
    }
}

fn rate_limit(key: &str, r: &RawRateLimit, p: &mut Vec<String>) -> Option<RateLimit> {
    let mut limit = RateLimit {
        messages: r.messages,
        window: Duration::from_secs(r.window_secs),
        per_user: false,
        per_sender: false,
        per_client: false,
        per_relay: false,
        total: r.total_messages,
    };
    for k in &r.per {
        match k.as_str() {
            "user" => limit.per_user = true,
            "sender" => limit.per_sender = true,
            "client" => limit.per_client = true,
            "relay" => limit.per_relay = true,
            _ => p.push(format!(
                "{key}.per: `{k}` is not user, sender, client or relay"
            )),
        }
    }
    if (r.messages > 0 || r.total_messages > 0) && r.window_secs == 0 {
        p.push(format!("{key}.window_secs: must be greater than 0"));
    }
    ((r.messages > 0 && !r.per.is_empty()) || r.total_messages > 0).then_some(limit)
}
