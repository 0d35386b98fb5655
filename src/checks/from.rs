//! The From header: missing, or a display name that shows a different mailbox than the real
//! one (`"service@paypal.com" <x@evil.example>`), the classic phishing disguise.

use super::{Check, HitDef, Hits, Input};
use crate::domain::related;

pub(super) struct FromCheck;

impl Check for FromCheck {
    fn hits(&self) -> &'static [HitDef] {
        &[
            HitDef {
                name: "MISSING_FROM",
                default_score: 1.0,
                description: "no From header or no address in it",
            },
            HitDef {
                name: "FROM_DISPLAY_SPOOF",
                default_score: 2.5,
                description: "From display name shows an address in another domain",
            },
        ]
    }

    fn run(&self, input: &Input<'_>, hits: &mut Hits) {
        let f = input.features;
        let Some(from) = f.from.as_ref().filter(|a| a.address.is_some()) else {
            // Without a parse we cannot tell; an unparseable message has its own hit.
            if f.parsed {
                hits.add("MISSING_FROM");
            }
            return;
        };
        let (Some(name), Some(domain)) = (&from.name, from.domain()) else {
            return;
        };
        let shown = name
            .split(|c: char| c.is_whitespace() || "<>()\"'[],;".contains(c))
            .filter_map(|w| w.rsplit_once('@'))
            .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
            .find(|d| d.contains('.'));
        if let Some(shown) = shown
            && !related(&shown, domain)
        {
            hits.add("FROM_DISPLAY_SPOOF");
        }
    }
}
