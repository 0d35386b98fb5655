//! State the outbound guard and the policy service keep between messages: rate-limit
//! counters and greylist triplets, in a [`Store`]: the embedded one
//! ([`embedded::EmbeddedState`]: in memory, saved to a snapshot file under the state
//! directory, bounded) or Redis ([`redis::RedisStore`], shared by several filterd hosts).

pub mod embedded;
pub mod redis;

pub use embedded::{EmbeddedState, StateError};
pub use redis::{RedisStore, Unavailable};
use std::sync::Arc;

/// Where the counters and triplets live. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Store {
    /// This host's memory and snapshot file.
    Embedded(Arc<EmbeddedState>),
    /// Redis, shared by every host that points at it.
    Redis(Arc<RedisStore>),
}

impl Default for Store {
    fn default() -> Self {
        Store::Embedded(Arc::new(EmbeddedState::in_memory(100_000, 86_400)))
    }
}

impl Store {
    /// The embedded store, if this is it (it is saved to its file; Redis keeps its own).
    pub fn embedded(&self) -> Option<&Arc<EmbeddedState>> {
        match self {
            Store::Embedded(s) => Some(s),
            Store::Redis(_) => None,
        }
    }

    /// What it is, for the start-up line.
    pub fn describe(&self) -> String {
        match self {
            Store::Embedded(_) => "embedded".into(),
            Store::Redis(r) => format!("redis {}", r.label()),
        }
    }

    /// Count one message from `sender` under each of `keys` at `now` (Unix seconds), in
    /// windows of `window_secs` that start at a key's first message.
    pub async fn hit_all(
        &self,
        keys: &[String],
        window_secs: u64,
        now: u64,
        sender: &str,
    ) -> Result<Vec<Count>, Unavailable> {
        match self {
            Store::Embedded(s) => Ok(keys
                .iter()
                .map(|k| s.hit(k, window_secs, now, sender))
                .collect()),
            Store::Redis(r) => r.hit_all(keys, window_secs, sender).await,
        }
    }

    /// The counts under `keys` in their current windows, without counting.
    pub async fn peek_all(
        &self,
        keys: &[String],
        window_secs: u64,
        now: u64,
    ) -> Result<Vec<u64>, Unavailable> {
        match self {
            Store::Embedded(s) => Ok(keys.iter().map(|k| s.peek(k, window_secs, now)).collect()),
            Store::Redis(r) => r.peek_all(keys).await,
        }
    }

    /// The record of a greylist triplet.
    pub async fn get(&self, triplet: &str) -> Result<Option<Triplet>, Unavailable> {
        match self {
            Store::Embedded(s) => Ok(Greylist::get(s.as_ref(), triplet)),
            Store::Redis(r) => r.get(triplet).await,
        }
    }

    /// Store the record of a greylist triplet.
    pub async fn put(&self, triplet: &str, record: Triplet) -> Result<(), Unavailable> {
        match self {
            Store::Embedded(s) => {
                Greylist::put(s.as_ref(), triplet, record);
                Ok(())
            }
            Store::Redis(r) => r.put(triplet, record).await,
        }
    }

    /// How many triplets of client network `client` passed after a delay.
    pub async fn passes(&self, client: &str) -> Result<u64, Unavailable> {
        match self {
            Store::Embedded(s) => Ok(Greylist::passes(s.as_ref(), client)),
            Store::Redis(r) => r.passes(client).await,
        }
    }

    /// Count one more pass of `client` at `now`; returns the new count.
    pub async fn add_pass(&self, client: &str, now: u64) -> Result<u64, Unavailable> {
        match self {
            Store::Embedded(s) => Ok(Greylist::add_pass(s.as_ref(), client, now)),
            Store::Redis(r) => r.add_pass(client).await,
        }
    }
}

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
