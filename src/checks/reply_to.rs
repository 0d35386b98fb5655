//! Reply-To pointing at another domain than From: replies go somewhere the sender's domain
//! does not vouch for.

use super::{Check, HitDef, Hits, Input};
use crate::domain::related;

pub(super) struct ReplyToCheck;

impl Check for ReplyToCheck {
    fn hits(&self) -> &'static [HitDef] {
        &[HitDef {
            name: "REPLYTO_DIFF_DOMAIN",
            default_score: 0.3,
            description: "Reply-To domain differs from From domain",
        }]
    }

    fn run(&self, input: &Input<'_>, hits: &mut Hits) {
        let f = input.features;
        let from = f.from.as_ref().and_then(|a| a.domain());
        let reply_to = f.reply_to.as_ref().and_then(|a| a.domain());
        if let (Some(from), Some(reply_to)) = (from, reply_to)
            && !related(from, reply_to)
        {
            hits.add("REPLYTO_DIFF_DOMAIN");
        }
    }
}
