//! The Received chain: none at all, absurdly long (a loop or padding), or dates that run
//! backwards down the chain by more than clock skew explains (forged lower hops).

use super::{Check, HitDef, Hits, Input};

pub(super) struct ReceivedCheck {
    too_many: usize,
    skew_secs: i64,
}

impl Default for ReceivedCheck {
    fn default() -> Self {
        ReceivedCheck {
            too_many: 25,
            skew_secs: 24 * 3600,
        }
    }
}

impl Check for ReceivedCheck {
    fn hits(&self) -> &'static [HitDef] {
        &[
            HitDef {
                name: "RCVD_NONE",
                default_score: 1.0,
                description: "no Received header at all",
            },
            HitDef {
                name: "RCVD_TOO_MANY",
                default_score: 1.0,
                description: "more than 25 Received headers",
            },
            HitDef {
                name: "RCVD_DATE_DISORDER",
                default_score: 1.0,
                description: "an older hop is dated more than a day after a newer one",
            },
        ]
    }

    fn run(&self, input: &Input<'_>, hits: &mut Hits) {
        let f = input.features;
        let dates = &f.received_dates;
        if dates.is_empty() {
            hits.add("RCVD_NONE");
            return;
        }
        if dates.len() > self.too_many {
            hits.add("RCVD_TOO_MANY");
        }
        // Topmost is newest: each lower (older) hop should not be much later than the one above.
        let known: Vec<i64> = dates.iter().flatten().copied().collect();
        if known.windows(2).any(|w| w[1] - w[0] > self.skew_secs) {
            hits.add("RCVD_DATE_DISORDER");
        }
    }
}
