//! The Subject header: missing, empty, shouting, or raw 8-bit bytes without RFC 2047
//! encoding.

use super::{Check, HitDef, Hits, Input};

pub(super) struct SubjectCheck;

impl Check for SubjectCheck {
    fn hits(&self) -> &'static [HitDef] {
        &[
            HitDef {
                name: "MISSING_SUBJECT",
                default_score: 1.8,
                description: "no Subject header",
            },
            HitDef {
                name: "EMPTY_SUBJECT",
                default_score: 0.3,
                description: "Subject header is empty",
            },
            HitDef {
                name: "SUBJ_ALL_CAPS",
                default_score: 0.5,
                description: "Subject is all capitals",
            },
            HitDef {
                name: "SUBJ_ILLEGAL_CHARS",
                default_score: 1.5,
                description: "Subject has 8-bit bytes without RFC 2047 encoding",
            },
        ]
    }

    fn run(&self, input: &Input<'_>, hits: &mut Hits) {
        let f = input.features;
        let Some(raw) = f.headers.first(f.raw, "Subject") else {
            hits.add("MISSING_SUBJECT");
            return;
        };
        if raw.iter().any(|&b| b >= 0x80) {
            hits.add("SUBJ_ILLEGAL_CHARS");
        }
        let subject = f
            .subject
            .clone()
            .unwrap_or_else(|| String::from_utf8_lossy(raw).into_owned());
        let subject = subject.trim();
        if subject.is_empty() {
            hits.add("EMPTY_SUBJECT");
            return;
        }
        let letters: Vec<char> = subject.chars().filter(|c| c.is_alphabetic()).collect();
        let words = subject
            .split_whitespace()
            .filter(|w| w.chars().any(char::is_alphabetic))
            .count();
        if letters.len() >= 10 && words >= 2 && letters.iter().all(|c| c.is_uppercase()) {
            hits.add("SUBJ_ALL_CAPS");
        }
    }
}
