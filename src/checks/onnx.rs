//! The ONNX model check: the shipped (or configured) model's spam probability mapped to
//! `ML_*` hits. The model was validated and optimised at start; inference runs with the rest
//! of the scan on the blocking pool.

use super::{Check, HitDef, Hits};
use crate::message::Features;
use crate::model::onnx::OnnxModel;
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
        name: "ML_FAILED",
        default_score: 0.0,
        description: "the model could not score the message",
    },
];

/// The hit for a probability.
pub fn hit_for(p: f32) -> &'static str {
    match p {
        p if p >= 0.99 => "ML_SPAM_HIGH",
        p if p >= 0.90 => "ML_SPAM",
        p if p >= 0.10 => "ML_UNSURE",
        p if p >= 0.01 => "ML_HAM",
        _ => "ML_HAM_HIGH",
    }
}

impl Check for OnnxCheck {
    fn hits(&self) -> &'static [HitDef] {
        HITS
    }

    fn run(&self, f: &Features<'_>, hits: &mut Hits) {
        let (Some(model), Some(input)) = (&self.model, &f.model_input) else {
            return;
        };
        match model.predict(input) {
            Ok(p) => hits.add(hit_for(p)),
            Err(e) => {
                tracing::warn!("model check failed: {e}");
                hits.add("ML_FAILED");
            }
        }
    }
}
