//! MIME structure: unparseable messages, multiparts without a usable boundary, MIME headers
//! without MIME-Version, and undecodable transfer encodings. Such mail is still relayed.

use super::{Check, HitDef, Hits, Input};

pub(super) struct MimeCheck;

impl Check for MimeCheck {
    fn hits(&self) -> &'static [HitDef] {
        &[
            HitDef {
                name: "MIME_UNPARSEABLE",
                default_score: 2.0,
                description: "the message could not be parsed as RFC 5322/MIME",
            },
            HitDef {
                name: "MIME_MISSING_BOUNDARY",
                default_score: 1.0,
                description: "a multipart has no boundary or its boundary never occurs",
            },
            HitDef {
                name: "MIME_NO_VERSION",
                default_score: 0.5,
                description: "multipart Content-Type without MIME-Version",
            },
            HitDef {
                name: "MIME_BAD_ENCODING",
                default_score: 0.5,
                description: "a part's transfer encoding could not be decoded",
            },
        ]
    }

    fn run(&self, input: &Input<'_>, hits: &mut Hits) {
        let f = input.features;
        if !f.parsed {
            hits.add("MIME_UNPARSEABLE");
            return;
        }
        if f.mime.missing_boundary {
            hits.add("MIME_MISSING_BOUNDARY");
        }
        if f.mime.multipart && !f.mime.has_mime_version {
            hits.add("MIME_NO_VERSION");
        }
        if f.mime.bad_encoding {
            hits.add("MIME_BAD_ENCODING");
        }
    }
}
