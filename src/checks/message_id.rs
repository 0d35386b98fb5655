//! The Message-ID header: missing, or not of the `<left@right>` form.

use super::{Check, HitDef, Hits, Input};

pub(super) struct MessageIdCheck;

impl Check for MessageIdCheck {
    fn hits(&self) -> &'static [HitDef] {
        &[
            HitDef {
                name: "MISSING_MID",
                default_score: 0.5,
                description: "no Message-ID header",
            },
            HitDef {
                name: "INVALID_MSGID",
                default_score: 1.0,
                description: "Message-ID is not <left@right>",
            },
        ]
    }

    fn run(&self, input: &Input<'_>, hits: &mut Hits) {
        let f = input.features;
        match &f.message_id {
            None => hits.add("MISSING_MID"),
            Some(id) => {
                let ok = id
                    .strip_prefix('<')
                    .and_then(|s| s.strip_suffix('>'))
                    .and_then(|s| s.split_once('@'))
                    .is_some_and(|(l, r)| {
                        !l.is_empty() && !r.is_empty() && !id.contains(char::is_whitespace)
                    });
                if !ok {
                    hits.add("INVALID_MSGID");
                }
            }
        }
    }
}
