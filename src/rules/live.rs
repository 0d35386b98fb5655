//! The rule set in use and the scores that go with it, swapped whole on SIGHUP: a reload
//! that fails (a file with a mistake) is logged with every problem and the previous set
//! stays in use.

use super::{RuleError, RuleSet, Sources};
use crate::checks::Registry;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// A compiled rule set with the score of every hit name (built-in and rule).
#[derive(Debug)]
pub struct Scoring {
    /// The rules.
    pub rules: RuleSet,
    /// Every hit name's score: built-in defaults, then rule files, then `[scores]`.
    pub scores: BTreeMap<&'static str, f64>,
}

impl Scoring {
    /// Add the block lists' hits (`listed`) and, when `run`, the rules' to `hits` (the
    /// built-in checks' hits, which meta rules read).
    pub fn apply(
        &self,
        features: &crate::message::Features<'_>,
        hits: &mut crate::checks::Hits,
        auth: Option<&crate::auth::AuthVerdict>,
        listed: &[&'static str],
        run: bool,
    ) {
        for h in listed {
            hits.add(h);
        }
        if run {
            let view = super::View::new(features, hits, auth);
            let mut fired = crate::checks::Hits::default();
            self.rules.run(&view, &mut fired);
            hits.extend(&fired);
        }
    }
}

/// The rules in use, reloadable.
#[derive(Debug)]
pub struct LiveRules {
    sources: Sources,
    overrides: BTreeMap<String, f64>,
    extra: Vec<(&'static str, f64)>,
    current: RwLock<Arc<Scoring>>,
}

impl LiveRules {
    /// Load the rules of `sources`; `extra` are hits beside the built-in checks' (the
    /// block lists') with their scores, `overrides` is `[scores]`. Every problem is listed:
    /// those of the rule files with file and line, then names `[scores]` does not know.
    pub fn load(
        sources: Sources,
        overrides: BTreeMap<String, f64>,
        extra: Vec<(&'static str, f64)>,
    ) -> Result<Self, Vec<String>> {
        let scoring = scoring(&sources, &overrides, &extra)?;
        Ok(LiveRules {
            sources,
            overrides,
            extra,
            current: RwLock::new(Arc::new(scoring)),
        })
    }

    /// The set in use.
    pub fn current(&self) -> Arc<Scoring> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Read and compile the rule files again; on success the new set is used from the
    /// next message on. Returns how many rules it has.
    pub fn reload(&self) -> Result<usize, Vec<String>> {
        let s = Arc::new(scoring(&self.sources, &self.overrides, &self.extra)?);
        let n = s.rules.len();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = s;
        Ok(n)
    }

    /// Where the rules come from.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }
}

fn scoring(
    sources: &Sources,
    overrides: &BTreeMap<String, f64>,
    extra: &[(&'static str, f64)],
) -> Result<Scoring, Vec<String>> {
    let mut builtin: Vec<&'static str> = Registry::default().hit_defs().map(|h| h.name).collect();
    builtin.extend(extra.iter().map(|e| e.0));
    let rules = super::load(sources, &builtin).map_err(|e| strings(&e))?;
    let mut scores = Registry::default_scores();
    scores.extend(extra.iter().copied());
    scores.extend(rules.scores());
    let mut problems = vec![];
    for (name, score) in overrides {
        match scores.keys().find(|k| **k == name.as_str()).copied() {
            Some(k) if score.is_finite() => {
                scores.insert(k, *score);
            }
            Some(_) => problems.push(format!("scores.{name}: must be a finite number")),
            None => problems.push(format!(
                "scores.{name}: no check or rule emits a hit of this name (a rule with score 0 is off)"
            )),
        }
    }
    if problems.is_empty() {
        Ok(Scoring { rules, scores })
    } else {
        Err(problems)
    }
}

fn strings(e: &[RuleError]) -> Vec<String> {
    e.iter().map(|e| format!("rules: {e}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_reload_keeps_the_previous_set() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("local.cf");
        std::fs::write(&site, "body SITE_RULE /x/\nscore SITE_RULE 2\n").unwrap();
        let sources = Sources {
            shipped: false,
            dirs: vec![dir.path().to_path_buf()],
        };
        let mut over = BTreeMap::new();
        over.insert("SITE_RULE".to_string(), 3.0);
        let live = LiveRules::load(sources, over, vec![]).unwrap();
        assert_eq!(live.current().scores["SITE_RULE"], 3.0);
        std::fs::write(&site, "body SITE_RULE /(/\n").unwrap();
        let e = live.reload().unwrap_err();
        assert!(e[0].contains("local.cf:1"), "{e:?}");
        assert_eq!(live.current().rules.len(), 1);
        std::fs::write(&site, "body SITE_RULE /x/\nbody SITE_TWO /y/\n").unwrap();
        assert_eq!(live.reload(), Ok(2));
    }
}
