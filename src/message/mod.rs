//! The message as checks see it: the raw header block split at the byte level, and the
//! features extracted once per message from mail-parser's view of it.

pub mod features;
pub mod headers;
pub mod tokenize;

pub use features::Features;
pub use headers::{HeaderBlock, RawHeader};
