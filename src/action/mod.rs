//! Actions on a scanned message: tagging (byte-level header edits) and the quarantine
//! store. Discard and reject are carried out by the session (they are replies).

pub mod quarantine;
pub mod tag;
