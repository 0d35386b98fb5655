//! The virus scan as a hit: mail that no clamd could scan and that `[clamd] on_error =
//! "pass"` lets through says so (`VIRUS_UNCHECKED`, beside its `X-Amavis-Alert:
//! UNCHECKED` header). Infected mail is not scored: it is held (`Hold::Virus`).

use super::{Check, HitDef, Hits, Input};

pub(super) struct VirusCheck;

impl Check for VirusCheck {
    fn hits(&self) -> &'static [HitDef] {
        &[HitDef {
            name: "VIRUS_UNCHECKED",
            default_score: 0.0,
            description: "no virus scanner answered and the message was passed unscanned",
        }]
    }

    fn run(&self, input: &Input<'_>, hits: &mut Hits) {
        if input.virus_unchecked {
            hits.add("VIRUS_UNCHECKED");
        }
    }
}
