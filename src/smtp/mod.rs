//! SMTP/LMTP: the sans-IO codec, replies, the envelope, the session state machine and the
//! relay client to the next hop. Knows nothing of checks or verdicts.

pub mod codec;
pub mod envelope;
pub mod relay;
pub mod reply;
pub mod rewrite;
pub mod session;
