//! The Date header: missing, malformed, or far from when the message was received.
//!
//! "Received" is the date in the topmost Received header when it has one (as SpamAssassin
//! does), so old mail replayed through the filter, such as a training corpus, is judged
//! against its own delivery time; otherwise the scan time.

use super::{Check, HitDef, Hits, Input};
use crate::message::features::DateField;

pub(super) struct DateCheck {
    future_secs: i64,
    past_secs: i64,
}

impl Default for DateCheck {
    fn default() -> Self {
        DateCheck {
            future_secs: 12 * 3600,
            past_secs: 96 * 3600,
        }
    }
}

impl Check for DateCheck {
    fn hits(&self) -> &'static [HitDef] {
        &[
            HitDef {
                name: "MISSING_DATE",
                default_score: 1.4,
                description: "no Date header",
            },
            HitDef {
                name: "INVALID_DATE",
                default_score: 1.1,
                description: "Date header is not an RFC 5322 date",
            },
            HitDef {
                name: "DATE_IN_FUTURE",
                default_score: 1.5,
                description: "Date is more than 12 hours after receipt",
            },
            HitDef {
                name: "DATE_IN_PAST",
                default_score: 1.0,
                description: "Date is more than 96 hours before receipt",
            },
        ]
    }

    fn run(&self, input: &Input<'_>, hits: &mut Hits) {
        let f = input.features;
        match f.date {
            DateField::Missing => hits.add("MISSING_DATE"),
            DateField::Invalid => hits.add("INVALID_DATE"),
            DateField::At(t) => {
                let received = f.received_dates.first().copied().flatten().unwrap_or(f.now);
                if t - received > self.future_secs {
                    hits.add("DATE_IN_FUTURE");
                } else if received - t > self.past_secs {
                    hits.add("DATE_IN_PAST");
                }
            }
        }
    }
}
