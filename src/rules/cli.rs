//! `filterd rules lint` and `filterd rules test FILE.eml`: what a rule author runs.
//! `lint` compiles the configured files and lists every problem with file and line (and
//! what is worth a look: rules without a description, rules replaced by a later file);
//! `test` scores one message as the filter would (built-in checks, the configured model
//! and Bayes store, the rules; no DNS) and says which rules fired and on what text.

use super::live::LiveRules;
use super::parse::{HeaderTest, Test};
use super::set::Rule;
use super::view::View;
use crate::checks::{Hits, Input, Registry};
use crate::message::Features;
use crate::model::bayes_live::BayesLive;
use crate::model::onnx::OnnxModel;
use crate::verdict::Levels;
use crate::verdict::Verdict;
use std::fmt::Write as _;
use std::sync::Arc;

/// Lint the rule files of `live` (read again): `Ok(report)` when they compile, else every
/// problem.
pub fn lint(live: &LiveRules) -> Result<String, Vec<String>> {
    let n = live.reload()?;
    let scoring = live.current();
    let mut out = String::new();
    let mut files: Vec<(&str, usize)> = vec![];
    for r in scoring.rules.rules() {
        match files.last_mut() {
            Some((f, c)) if *f == r.at.file => *c += 1,
            _ => files.push((&r.at.file, 1)),
        }
    }
    let _ = writeln!(out, "filterd rules: {n} rules compiled");
    for (f, c) in files {
        let _ = writeln!(out, "  {f}: {c}");
    }
    for r in scoring.rules.rules() {
        if r.reported() && r.describe.is_empty() {
            let _ = writeln!(out, "note: {}: {} has no `describe` line", r.at, r.name);
        }
    }
    let _ = writeln!(out, "eval: tests:");
    for (name, what) in super::eval::Eval::catalogue() {
        let _ = writeln!(out, "  {name}: {what}");
    }
    Ok(out)
}

/// What `filterd rules test` scores with (the configuration's parts).
pub struct Scorer<'a> {
    /// The rules.
    pub rules: &'a LiveRules,
    /// The Bayes store, when on.
    pub bayes: Option<Arc<BayesLive>>,
    /// The model, when on.
    pub model: Option<Arc<OnnxModel>>,
    /// The default policy's levels.
    pub levels: Levels,
}

/// Score `raw` as of `now` and explain each hit.
pub fn test(scorer: &Scorer<'_>, raw: &[u8], now: i64) -> String {
    let features = Features::extract_with(raw, now, true);
    let registry = Registry::new(scorer.bayes.clone(), scorer.model.clone());
    let hits = registry.run(&Input::of(&features));
    let scoring = scorer.rules.current();
    let view = View::new(&features, &hits, None);
    let mut fired_hits = Hits::default();
    let fired = scoring.rules.run(&view, &mut fired_hits);
    let verdict = {
        let mut all = hits.clone();
        all.extend(&fired_hits);
        Verdict::new(&all, &scoring.scores, scorer.levels)
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "score {:.3} ({}; tag2_level {}, kill_level {})",
        verdict.score,
        verdict.category().as_str(),
        scorer.levels.tag2,
        scorer.levels.kill
    );
    for (name, score) in &verdict.hits {
        let why = scoring
            .rules
            .rules()
            .iter()
            .find(|r| r.name == *name)
            .map_or_else(|| "built-in check".to_string(), |r| explain(r, &view));
        let _ = writeln!(out, "  {score:>7.3} {name:<26} {why}");
    }
    let parts: Vec<&str> = scoring
        .rules
        .rules()
        .iter()
        .zip(&fired.0)
        .filter(|(r, f)| **f && !r.reported())
        .map(|(r, _)| r.name)
        .collect();
    if !parts.is_empty() {
        let _ = writeln!(out, "  parts fired: {}", parts.join(" "));
    }
    let _ = writeln!(
        out,
        "  ({} URLs seen; {} rules loaded)",
        view.uris.len(),
        scoring.rules.len()
    );
    out
}

/// Why rule `r` fired: its kind, where it is, and the text its pattern matched.
fn explain(r: &Rule, view: &View<'_>) -> String {
    let found = |p: &super::parse::Pattern, hays: &[&[u8]]| -> String {
        let Ok(re) = regex::bytes::Regex::new(&p.compiled_source()) else {
            return String::new();
        };
        for h in hays {
            if let Some(m) = re.find(h) {
                return format!(" matched \"{}\"", snippet(m.as_bytes()));
            }
        }
        String::new()
    };
    let what = match &r.test {
        Test::Body(p) => format!("body{}", found(p, &[view.body.as_bytes()])),
        Test::RawBody(p) => format!("rawbody{}", found(p, &[view.rawbody().as_bytes()])),
        Test::Full(p) => format!("full{}", found(p, &[view.features.raw])),
        Test::Uri(p) => {
            let uris: Vec<&[u8]> = view.uris.iter().map(|u| u.as_bytes()).collect();
            format!("uri{}", found(p, &uris))
        }
        Test::Header(HeaderTest::Exists(h)) => format!("header exists:{h}"),
        Test::Header(HeaderTest::Match {
            name,
            part,
            negated,
            pattern,
        }) => {
            let values = view.header_values(name, *part);
            let hays: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
            match negated {
                true => format!("header {name} !~ /{}/", pattern.source),
                false => format!("header {name}{}", found(pattern, &hays)),
            }
        }
        Test::Meta(e) => format!("meta {e}"),
        Test::Eval(f, a) => format!("eval:{f}({})", a.join(", ")),
    };
    format!("{what} [{}] {}", r.at, r.describe)
}

fn snippet(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let mut out: String = s.chars().take(60).collect();
    if s.chars().count() > 60 {
        out.push_str("...");
    }
    out.escape_debug().to_string()
}
