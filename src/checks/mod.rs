//! Checks: one per file behind the small [`Check`] trait. A check reads its [`Input`] (the
//! message's [`Features`], extracted once, and what sender authentication found) and adds
//! named hits; scores live in config. The [`Registry`] fixes their order and knows every
//! hit name any check can emit, so config can refuse unknown names.

mod auth;
mod bayes;
mod date;
mod from;
mod gtube;
mod html_only;
mod message_id;
mod mime;
mod onnx;
mod received;
mod recipients;
mod reply_to;
mod subject;
mod virus;

use crate::auth::AuthVerdict;
use crate::message::Features;
use crate::model::bayes_live::BayesLive;
use crate::model::onnx::OnnxModel;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A hit a check can emit, with its default score and what it means.
#[derive(Debug, Clone, Copy)]
pub struct HitDef {
    /// The rule name, as in `tests=[...]`.
    pub name: &'static str,
    /// Score when `[scores]` does not say otherwise.
    pub default_score: f64,
    /// One line for humans.
    pub description: &'static str,
}

/// The hits of one message, in the order found (duplicates ignored).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hits(Vec<&'static str>, Vec<f64>);

impl Hits {
    /// Record a hit.
    pub fn add(&mut self, name: &'static str) {
        self.add_scaled(name, 1.0);
    }

    /// Record a hit whose configured score is scaled by `factor` (in [-1, 1]): for checks
    /// whose evidence is a continuous strength, such as a model's confidence.
    pub(crate) fn add_scaled(&mut self, name: &'static str, factor: f64) {
        if !self.0.contains(&name) {
            self.0.push(name);
            self.1.push(factor.clamp(-1.0, 1.0));
        }
    }

    /// Record every hit of `other` after these.
    pub fn extend(&mut self, other: &Hits) {
        for (n, f) in other.scaled() {
            self.add_scaled(n, f);
        }
    }

    /// The names recorded.
    pub fn names(&self) -> &[&'static str] {
        &self.0
    }

    /// The names with their factors.
    pub(crate) fn scaled(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        self.0.iter().copied().zip(self.1.iter().copied())
    }
}

/// What a check reads about one message.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The features, extracted once.
    pub features: &'a Features<'a>,
    /// Sender authentication, when it ran (computed before the checks, under its DNS
    /// budget; checks never touch the network).
    pub auth: Option<&'a AuthVerdict>,
    /// No clamd answered and the message goes on unscanned (`[clamd] on_error = "pass"`).
    pub virus_unchecked: bool,
    /// The Bayes store in Redis answered (or not) before the checks.
    pub bayes: Option<&'a Result<crate::model::bayes_redis::Lookup, String>>,
}

impl<'a> Input<'a> {
    /// The input of a message without sender authentication.
    pub fn of(features: &'a Features<'a>) -> Self {
        Input {
            features,
            auth: None,
            virus_unchecked: false,
            bayes: None,
        }
    }
}

/// One check: synchronous and pure.
pub trait Check: Send + Sync {
    /// Every hit this check can emit.
    fn hits(&self) -> &'static [HitDef];
    /// Look at one message.
    fn run(&self, input: &Input<'_>, hits: &mut Hits);
}

/// The checks in the order they run.
pub struct Registry {
    checks: Vec<(&'static str, Box<dyn Check>)>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new(None, None)
    }
}

impl Registry {
    /// All built-in checks; Bayes votes when a store is given and has learned enough, the
    /// model check when a model is given.
    pub fn new(bayes: Option<Arc<BayesLive>>, model: Option<Arc<OnnxModel>>) -> Self {
        Registry {
            checks: vec![
                ("gtube", Box::new(gtube::Gtube)),
                ("auth", Box::new(auth::AuthCheck)),
                ("date", Box::new(date::DateCheck::default())),
                ("message_id", Box::new(message_id::MessageIdCheck)),
                ("from", Box::new(from::FromCheck)),
                ("reply_to", Box::new(reply_to::ReplyToCheck)),
                ("subject", Box::new(subject::SubjectCheck)),
                (
                    "recipients",
                    Box::new(recipients::RecipientsCheck::default()),
                ),
                ("html_only", Box::new(html_only::HtmlOnly)),
                ("mime", Box::new(mime::MimeCheck)),
                ("received", Box::new(received::ReceivedCheck::default())),
                ("bayes", Box::new(bayes::BayesCheck { live: bayes })),
                ("model", Box::new(onnx::OnnxCheck { model })),
                ("virus", Box::new(virus::VirusCheck)),
            ],
        }
    }

    /// The check names, in order (what a policy's `skip_checks` names).
    pub fn check_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.checks.iter().map(|(n, _)| *n)
    }

    /// The hit names of one check, when it exists.
    pub fn hits_of(&self, check: &str) -> Option<Vec<&'static str>> {
        self.checks
            .iter()
            .find(|(n, _)| *n == check)
            .map(|(_, c)| c.hits().iter().map(|h| h.name).collect())
    }

    /// Every hit of every check.
    pub fn hit_defs(&self) -> impl Iterator<Item = &HitDef> {
        self.checks.iter().flat_map(|(_, c)| c.hits().iter())
    }

    /// Every hit name with its default score.
    pub fn default_scores() -> BTreeMap<&'static str, f64> {
        Registry::default()
            .hit_defs()
            .map(|h| (h.name, h.default_score))
            .collect()
    }

    /// Run every check on one message.
    pub fn run(&self, input: &Input<'_>) -> Hits {
        self.run_except(input, |_| false)
    }

    /// Run the checks `skip` does not name (checks no policy of the message wants).
    pub(crate) fn run_except(&self, input: &Input<'_>, skip: impl Fn(&str) -> bool) -> Hits {
        let mut hits = Hits::default();
        for (name, check) in &self.checks {
            if !skip(name) {
                check.run(input, &mut hits);
            }
        }
        debug_assert!(
            hits.names()
                .iter()
                .all(|n| self.hit_defs().any(|d| d.name == *n)),
            "a check emitted an undeclared hit"
        );
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_names_are_unique_and_well_formed() {
        let r = Registry::default();
        let names: Vec<_> = r.hit_defs().map(|h| h.name).collect();
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(names.len(), unique.len());
        assert!(names.len() >= 12);
        for n in names {
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "{n}"
            );
        }
    }
}
