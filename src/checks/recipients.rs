//! Visible recipients: none at all in To/Cc, or an excessive list (bulk mail sent with
//! everyone exposed).

use super::{Check, HitDef, Hits, Input};

pub(super) struct RecipientsCheck {
    excessive: usize,
}

impl Default for RecipientsCheck {
    fn default() -> Self {
        RecipientsCheck { excessive: 25 }
    }
}

impl Check for RecipientsCheck {
    fn hits(&self) -> &'static [HitDef] {
        &[
            HitDef {
                name: "MISSING_HEADERS",
                default_score: 1.0,
                description: "no To or Cc header",
            },
            HitDef {
                name: "TO_CC_EXCESSIVE",
                default_score: 1.0,
                description: "more than 25 addresses in To and Cc",
            },
        ]
    }

    fn run(&self, input: &Input<'_>, hits: &mut Hits) {
        let f = input.features;
        if !f.has_to_or_cc {
            hits.add("MISSING_HEADERS");
        } else if f.to_cc_count > self.excessive {
            hits.add("TO_CC_EXCESSIVE");
        }
    }
}
