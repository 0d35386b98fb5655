//! HTML without a plain-text alternative, typical of bulk and phishing mail.

use super::{Check, HitDef, Hits, Input};

pub(super) struct HtmlOnly;

impl Check for HtmlOnly {
    fn hits(&self) -> &'static [HitDef] {
        &[HitDef {
            name: "MIME_HTML_ONLY",
            default_score: 0.7,
            description: "the message has HTML bodies and no text/plain body",
        }]
    }

    fn run(&self, input: &Input<'_>, hits: &mut Hits) {
        let f = input.features;
        if f.mime.html_parts > 0 && f.mime.text_parts == 0 {
            hits.add("MIME_HTML_ONLY");
        }
    }
}
