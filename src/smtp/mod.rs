//! SMTP/LMTP: the sans-IO codec, replies, the envelope, the session state machine and the
//! relay client to the next hop. Knows nothing of checks, verdicts or policies: the filter
//! behind a session is reached through the contract in [`filter`].

pub mod budget;
pub mod codec;
pub mod connection;
pub mod envelope;
pub mod filter;
pub mod params;
pub mod relay;
pub mod reply;
pub mod rewrite;
pub mod session;
pub mod xtext;
