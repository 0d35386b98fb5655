//! `[rules]` and `[dnsbl]`: the rule engine's files and the DNS block lists, whose hits
//! join the built-in ones (meta rules may read them, `[scores]` may set them).

use super::check::is_hostname;
use super::raw::RawConfig;
use crate::auth::AuthConfig;
use crate::dns::{Code, Dnsbl, List, ListKind, parse_code};
use crate::rules::live::LiveRules;
use std::sync::Arc;

/// The block lists (none when off, or when sender authentication, whose resolver they use,
/// is off) and the score of each of their hits.
pub(super) fn build_dnsbl(
    raw: &RawConfig,
    auth: &AuthConfig,
    p: &mut Vec<String>,
) -> (Option<Dnsbl>, Vec<(&'static str, f64)>) {
    let d = &raw.dnsbl;
    let mut lists = vec![];
    let mut scores: Vec<(&'static str, f64)> = vec![];
    for (i, l) in d.lists.iter().enumerate() {
        let key = format!("dnsbl.lists[{i}]");
        if !is_hostname(&l.zone) {
            p.push(format!("{key}.zone: `{}` is not a DNS zone", l.zone));
        }
        let kind = match l.kind.as_str() {
            "ip" => ListKind::Ip,
            "domain" => ListKind::Domain,
            other => {
                p.push(format!("{key}.kind: `ip` or `domain`, not `{other}`"));
                ListKind::Ip
            }
        };
        let mut codes = vec![];
        for (j, r) in l.returns.iter().enumerate() {
            let at = format!("{key}.returns[{j}]");
            if !crate::rules::parse::valid_name(&r.hit) || r.hit.starts_with("__") {
                p.push(format!(
                    "{at}.hit: `{}` is not a hit name (A-Z, 0-9, _)",
                    r.hit
                ));
                continue;
            }
            if !r.score.is_finite() {
                p.push(format!("{at}.score: must be a finite number"));
                continue;
            }
            match parse_code(&r.code) {
                Ok((from, to)) => {
                    let hit = crate::rules::intern(&r.hit);
                    scores.retain(|(n, _)| *n != hit);
                    scores.push((hit, r.score));
                    codes.push(Code {
                        from,
                        to,
                        hit,
                        score: r.score,
                    });
                }
                Err(e) => p.push(format!("{at}.code: {e}")),
            }
        }
        lists.push(List {
            zone: l.zone.trim_end_matches('.').to_ascii_lowercase(),
            kind,
            codes,
        });
    }
    let dnsbl = match &auth.verifier {
        Some(v) if d.enabled && !lists.is_empty() => Some(Dnsbl::new(lists, v.clone())),
        _ => None,
    };
    (dnsbl, scores)
}

/// The rule set (shipped and site files) and every hit name's score: the defaults, the
/// block lists', the rule files' `score` lines, then `[scores]`; a name nothing emits is a
/// problem, not a silent zero, and so is every mistake in a rule file (with file and line).
pub(super) fn build_rules(
    raw: &RawConfig,
    extra: Vec<(&'static str, f64)>,
    p: &mut Vec<String>,
) -> Option<Arc<LiveRules>> {
    let sources = crate::rules::Sources {
        shipped: raw.rules.shipped,
        dirs: raw.rules.dirs.clone(),
    };
    match LiveRules::load(sources, raw.scores.clone(), extra) {
        Ok(l) => Some(Arc::new(l)),
        Err(e) => {
            p.extend(e);
            None
        }
    }
}
