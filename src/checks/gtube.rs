//! GTUBE: the Generic Test for Unsolicited Bulk Email, so admins can test their setup end to
//! end. Scored 1000 as SpamAssassin and rspamd do.

use super::{Check, HitDef, Hits, Input};

const GTUBE: &[u8] = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

pub(super) struct Gtube;

impl Check for Gtube {
    fn hits(&self) -> &'static [HitDef] {
        &[HitDef {
            name: "GTUBE",
            default_score: 1000.0,
            description: "the GTUBE test string is in the body",
        }]
    }

    fn run(&self, input: &Input<'_>, hits: &mut Hits) {
        let f = input.features;
        let body = &f.raw[f.headers.end.min(f.raw.len())..];
        if memchr::memmem::find(body, GTUBE).is_some()
            || memchr::memmem::find(f.body_text.as_bytes(), GTUBE).is_some()
        {
            hits.add("GTUBE");
        }
    }
}
