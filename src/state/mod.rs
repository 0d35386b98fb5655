//! State the outbound guard and the policy service keep between messages: rate-limit
//! counters and greylist triplets. One small trait for each, so a shared store (Redis, a
//! later part) can replace the embedded one ([`embedded::EmbeddedState`]: in memory, saved
//! to a snapshot file under the state directory, bounded).

pub mod embedded;

pub use embedded::{EmbeddedState, StateError};

/// One count: how many in this window, and the envelope sender of the window's first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    /// Messages counted in the current window, this one included.
    pub count: u64,
    /// The sender of the window's first message (empty for `<>` or unknown).
    pub first_sender: String,
}

/// Rate-limit counters in fixed windows that start at a key's first message.
pub trait Counters: Send + Sync {
    /// Count one message from `sender` under `key` at `now` (Unix seconds).
    fn hit(&self, key: &str, window_secs: u64, now: u64, sender: &str) -> Count;
    /// The count under `key` in its current window, without counting.
    fn peek(&self, key: &str, window_secs: u64, now: u64) -> u64;
}

/// A greylist triplet's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Triplet {
    /// First attempt (Unix seconds).
    pub first: u64,
    /// Last attempt.
    pub last: u64,
    /// It passed the delay once.
    pub passed: bool,
}

/// Greylist triplets and the clients that passed often enough to be allow-listed.
pub trait Greylist: Send + Sync {
    /// The record of `triplet`.
    fn get(&self, triplet: &str) -> Option<Triplet>;
    /// Store the record of `triplet`.
    fn put(&self, triplet: &str, record: Triplet);
    /// How many triplets of client network `client` passed after a delay.
    fn passes(&self, client: &str) -> u64;
    /// Count one more pass of `client` at `now`; returns the new count.
    fn add_pass(&self, client: &str, now: u64) -> u64;
}
