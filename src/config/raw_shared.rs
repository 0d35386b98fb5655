//! `[shared]`: state shared by several filterd hosts (README "Scale-out").

use serde::Deserialize;

/// `[shared]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawShared {
    /// The Redis server of the shared stores: `redis://[user:password@]host:port/db` or
    /// `unix:///path/to/redis.sock`; empty = none.
    pub redis_url: String,
    /// Where the outbound guard's counters and the greylist triplets live: `embedded` (this
    /// host's memory and `policy.state`) or `redis`.
    pub state: String,
    /// Where the Bayes store lives: `embedded` (`bayes.db` in the state directory) or
    /// `redis` (learned by `filtertrain --config` on any host, read by every host).
    pub bayes: String,
    /// Redis Bayes: a token expires this many days after it was last learned; 0 = never.
    pub bayes_token_ttl_days: u64,
    /// Where held mail is kept: `directory` (`[quarantine] dir`) or `postgresql`.
    pub quarantine: String,
    /// The PostgreSQL database of the quarantine: `postgresql://user:password@host:port/db`
    /// (or the `host=... dbname=...` form).
    pub postgresql_url: String,
    /// Each PostgreSQL statement's (and connection's) time limit, milliseconds.
    pub postgresql_timeout_ms: u64,
    /// Prefix of every key filterd writes in Redis (several sites can share one server).
    pub key_prefix: String,
    /// Each Redis request's time limit, milliseconds; a slower answer counts as Redis down.
    pub timeout_ms: u64,
    /// When Redis is down: `open` (outbound mail passes uncounted, an error line a minute)
    /// or `closed` (outbound mail is held in the quarantine, reason ratelimit).
    pub guard_on_error: crate::policy::guard::OnError,
}

impl Default for RawShared {
    fn default() -> Self {
        RawShared {
            redis_url: String::new(),
            state: "embedded".into(),
            bayes: "embedded".into(),
            bayes_token_ttl_days: 90,
            quarantine: "directory".into(),
            postgresql_url: String::new(),
            postgresql_timeout_ms: 5000,
            key_prefix: "filterd:".into(),
            timeout_ms: 250,
            guard_on_error: crate::policy::guard::OnError::Open,
        }
    }
}
