//! The byte-level edit a filter asks for: new header lines to prepend and the ranges of the
//! original message to keep, in order. The message itself is never re-serialised, so
//! everything outside the dropped header lines arrives byte-identical.

use std::ops::Range;

/// Prepend `prefix`, then emit `keep` ranges of the original message in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// Header lines to add at the top, CRLF-terminated.
    pub prefix: Vec<u8>,
    /// Ranges of the original message to keep (all of it when nothing is removed).
    pub keep: Vec<Range<usize>>,
}

impl Rewrite {
    /// The pieces to send, in order.
    pub fn parts<'a>(&'a self, message: &'a [u8]) -> Vec<&'a [u8]> {
        let mut parts = Vec::with_capacity(self.keep.len() + 1);
        parts.push(self.prefix.as_slice());
        for r in &self.keep {
            if let Some(p) = message.get(r.clone()) {
                parts.push(p);
            }
        }
        parts
    }

    /// The size of the rewritten message.
    pub fn len(&self) -> usize {
        self.prefix.len() + self.keep.iter().map(|r| r.len()).sum::<usize>()
    }

    /// True when the rewritten message is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
