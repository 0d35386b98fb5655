//! Actions on a scanned message. Today: tagging (byte-level header edits). Quarantine,
//! discard and reject slot in here.

pub mod tag;
