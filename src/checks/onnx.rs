//! The ONNX model check: the shipped (or configured) model's spam probability mapped to
//! `ML_*` hits. The model was validated and optimised at start; inference runs with the rest
//! of the scan on the blocking pool.

use super::{Check, HitDef, Hits, Input};
use crate::model::onnx::{OnnxModel, featurise};
use std::sync::Arc;

/// Default scores were chosen on tuning folds 1-3 (`corpus-tools evaluate --fold N --config`),
/// so that the combined score ranks better than the model and Bayes alone there.
pub(super) struct OnnxCheck {
    pub(super) model: Option<Arc<OnnxModel>>,
}

const HITS: &[HitDef] = &[
    HitDef {
        name: "ML_HAM_HIGH",
        default_score: -4.0,
        description: "model spam probability below 1%",
    },
    HitDef {
        name: "ML_HAM",
        default_score: -1.0,
        description: "model spam probability 1 to 10%",
    },
    HitDef {
        name: "ML_UNSURE",
        default_score: 1.0,
        description: "model spam probability 10 to 90%",
    },
    HitDef {
        name: "ML_SPAM",
        default_score: 3.0,
        description: "model spam probability 90 to 99%",
    },
    HitDef {
        name: "ML_SPAM_HIGH",
        default_score: 5.5,
        description: "model spam probability 99% or more",
    },
    HitDef {
        name: "ML_HAM_999",
        default_score: -2.0,
        description: "model spam probability below 0.1% (adds to ML_HAM_HIGH)",
    },
    HitDef {
        name: "ML_SPAM_999",
        default_score: 2.0,
        description: "model spam probability 99.9% or more (adds to ML_SPAM_HIGH)",
    },
    HitDef {
        name: "ML_SCORE",
        default_score: 4.0,
        description: "the model's confidence: the score times logit(p)/8, clipped to [-1, 1]",
    },
    HitDef {
        name: "ML_FAILED",
        default_score: 0.0,
        description: "the model could not score the message",
    },
];

/// The hits for a probability (the `_999` ones come on top, as SpamAssassin's BAYES_999).
pub(crate) fn hits_for(p: f32) -> &'static [&'static str] {
    match p {
        p if p >= 0.999 => &["ML_SPAM_HIGH", "ML_SPAM_999"],
        p if p >= 0.99 => &["ML_SPAM_HIGH"],
        p if p >= 0.90 => &["ML_SPAM"],
        p if p >= 0.10 => &["ML_UNSURE"],
        p if p >= 0.01 => &["ML_HAM"],
        p if p >= 0.001 => &["ML_HAM_HIGH"],
        _ => &["ML_HAM_HIGH", "ML_HAM_999"],
    }
}

impl Check for OnnxCheck {
    fn hits(&self) -> &'static [HitDef] {
        HITS
    }

    fn run(&self, input: &Input<'_>, hits: &mut Hits) {
        let f = input.features;
        let (Some(model), Some(tokens)) = (&self.model, &f.tokens) else {
            return;
        };
        match model.predict(&featurise(f.raw, tokens)) {
            Ok(p) => {
                for h in hits_for(p) {
                    hits.add(h);
                }
                let p = f64::from(p).clamp(1e-9, 1.0 - 1e-9);
                hits.add_scaled("ML_SCORE", (p / (1.0 - p)).ln() / 8.0);
            }
            Err(e) => {
                tracing::warn!("model check failed: {e}");
                hits.add("ML_FAILED");
            }
        }
    }
}
