//! Building `[content]` and `[clamd]`: the walk's limits, each policy's banned rules (its
//! exceptions first) and the clamd client, with every problem reported.

use super::raw::RawConfig;
use crate::content::banned::BannedRules;
use crate::content::clamd::{Clamd, ClamdAddr};
use crate::content::walk::Limits;
use crate::content::{Content, OnClamdError};
use crate::policy::Destiny;
use std::sync::Arc;
use std::time::Duration;

/// The banned rules of a policy with exceptions `allow` (the bank's) before the global
/// ones; `key` names the bank in problems.
pub(super) fn banned_rules(
    raw: &RawConfig,
    key: &str,
    allow: &[String],
    p: &mut Vec<String>,
) -> Arc<BannedRules> {
    let c = &raw.content;
    if !c.banned_check {
        return Arc::default();
    }
    let exceptions: Vec<String> = allow.iter().chain(&c.allow).cloned().collect();
    match BannedRules::new(&c.banned, &exceptions) {
        Ok(r) => Arc::new(r),
        Err(errors) => {
            p.extend(
                errors
                    .into_iter()
                    .map(|e| format!("{key}: banned rule {e}")),
            );
            Arc::default()
        }
    }
}

/// `[content] banned_destiny`/`virus_destiny`.
pub(super) fn content_destiny(key: &str, v: &str, p: &mut Vec<String>) -> Destiny {
    Destiny::parse(v).unwrap_or_else(|| {
        p.push(format!(
            "content.{key}: `{v}` is not pass, discard or reject"
        ));
        Destiny::Discard
    })
}

/// The walk's limits and clamd; `walk` when some policy has banned rules.
pub(super) fn build_content(raw: &RawConfig, walk: bool, p: &mut Vec<String>) -> Content {
    let c = &raw.content;
    for (k, v) in [
        ("max_depth", c.max_depth as u64),
        ("max_members", c.max_members as u64),
        ("max_member_mb", c.max_member_mb),
        ("max_total_mb", c.max_total_mb),
    ] {
        super::check::positive(&format!("content.{k}"), v, p);
    }
    let limits = Limits {
        max_depth: c.max_depth,
        max_members: c.max_members,
        max_member_bytes: c.max_member_mb.saturating_mul(1 << 20),
        max_total_bytes: c.max_total_mb.saturating_mul(1 << 20),
        max_message_bytes: c.max_walk_mb.saturating_mul(1 << 20),
    };
    let k = &raw.clamd;
    let addrs: Vec<ClamdAddr> = k
        .addresses
        .iter()
        .filter_map(|a| {
            ClamdAddr::parse(a).or_else(|| {
                p.push(format!(
                    "clamd.addresses: `{a}` is neither a socket path (/...) nor IP:port"
                ));
                None
            })
        })
        .collect();
    super::check::positive("clamd.timeout_ms", k.timeout_ms, p);
    let on_error = match k.on_error.as_str() {
        "tempfail" => OnClamdError::Tempfail,
        "pass" => OnClamdError::Pass,
        other => {
            p.push(format!("clamd.on_error: `{other}` is not tempfail or pass"));
            OnClamdError::Tempfail
        }
    };
    Content {
        limits,
        walk,
        clamd: (!addrs.is_empty()).then(|| Clamd {
            addrs,
            timeout: Duration::from_millis(k.timeout_ms),
        }),
        on_error: Some(on_error),
    }
}
