//! The Bayes check: maps the classifier's spam probability to SpamAssassin's `BAYES_*` hits.
//! Silent until enough spam and ham were learned (`bayes.min_spam`, `bayes.min_ham`).

use super::{Check, HitDef, Hits, Input};
use crate::model::bayes::hits_for;
use crate::model::bayes_live::BayesLive;
use crate::model::bayes_redis::Lookup;
use std::sync::Arc;

pub(super) struct BayesCheck {
    pub(super) live: Option<Arc<BayesLive>>,
}

/// SpamAssassin's ranges and default scores.
const HITS: &[HitDef] = &[
    HitDef {
        name: "BAYES_00",
        default_score: -1.9,
        description: "Bayes spam probability is 0 to 1%",
    },
    HitDef {
        name: "BAYES_05",
        default_score: -0.5,
        description: "Bayes spam probability is 1 to 5%",
    },
    HitDef {
        name: "BAYES_20",
        default_score: -0.001,
        description: "Bayes spam probability is 5 to 20%",
    },
    HitDef {
        name: "BAYES_40",
        default_score: -0.001,
        description: "Bayes spam probability is 20 to 40%",
    },
    HitDef {
        name: "BAYES_50",
        default_score: 0.8,
        description: "Bayes spam probability is 40 to 60%",
    },
    HitDef {
        name: "BAYES_60",
        default_score: 1.5,
        description: "Bayes spam probability is 60 to 80%",
    },
    HitDef {
        name: "BAYES_80",
        default_score: 2.0,
        description: "Bayes spam probability is 80 to 95%",
    },
    HitDef {
        name: "BAYES_95",
        default_score: 3.0,
        description: "Bayes spam probability is 95 to 99%",
    },
    HitDef {
        name: "BAYES_99",
        default_score: 3.5,
        description: "Bayes spam probability is 99 to 100%",
    },
    HitDef {
        name: "BAYES_999",
        default_score: 0.2,
        description: "Bayes spam probability is 99.9 to 100% (adds to BAYES_99)",
    },
    HitDef {
        name: "BAYES_UNAVAILABLE",
        default_score: 0.0,
        description: "the shared Bayes store (redis) did not answer: Bayes abstained",
    },
];

impl Check for BayesCheck {
    fn hits(&self) -> &'static [HitDef] {
        HITS
    }

    fn run(&self, input: &Input<'_>, hits: &mut Hits) {
        match input.bayes {
            Some(Ok(Lookup::Scored(score))) => {
                for h in hits_for(score.prob) {
                    hits.add(h);
                }
                return;
            }
            Some(Ok(Lookup::NotReady)) => return,
            Some(Err(_)) => return hits.add("BAYES_UNAVAILABLE"),
            None => {}
        }
        let f = input.features;
        let (Some(live), Some(tokens)) = (&self.live, &f.tokens) else {
            return;
        };
        if let Some(score) = live.classify(tokens) {
            for h in hits_for(score.prob) {
                hits.add(h);
            }
        }
    }
}
