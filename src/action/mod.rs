//! Actions on a scanned message: tagging the copy that is relayed (byte-level headers, our
//! Received line, the DKIM signature of outbound mail), the quarantine store and its
//! entries, and autolearning. Discard and reject are carried out by the session (they are
//! replies).

pub mod autolearn;
pub mod quarantine;
pub mod tag;
