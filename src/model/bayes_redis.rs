//! The Bayes store in Redis (`[shared] bayes = "redis"`), shared by every filterd host and
//! `filtertrain` run pointing at it, as SpamAssassin's and rspamd's Redis backends are.
//!
//! Keys (under `[shared] key_prefix`):
//! - `bayes`: hash `spam`, `ham` (messages learned), `tokver` (the tokenizer's version),
//!   `last_expire`, `last_expire_reduction`, `last_expire_delta`;
//! - `bt:{token, 16 hex digits}`: hash `s`, `h` (spam and ham messages with the token), `a`
//!   (when it was last learned, Unix seconds); it expires `bayes_token_ttl_days` after its
//!   last learning (expiry by atime; 0 = never);
//! - `bseen`: hash of learned messages, `{id, 32 hex digits}` -> `s` or `h`.
//!
//! Learning a message is one script call, atomic (the seen check, moving a message learned
//! as the other class, every token and the counts), and calls are pipelined, so several
//! hosts and `filtertrain` can learn at once. Classifying a message reads the counts and all
//! its tokens in one pipelined round trip.

use crate::message::tokenize::{TOKENIZER_VERSION, Tokens};
use crate::model::bayes::{BayesParams, BayesScore, classify};
use crate::model::bayes_store::{Class, Learned, Store, TokenCounts};
use crate::state::{RedisStore, Unavailable};
use std::sync::Arc;

/// Learn (`ARGV[2]` = `s` or `h`) or forget (`ARGV[2]` = `-`) one message.
/// KEYS: bayes, bseen. ARGV: id, class, atime, ttl, token key prefix, tokver, tokens...
/// Returns 0 (skipped / not learned), 1 (new / forgotten), 2 (moved).
const LEARN: &str = r"
local prev = redis.call('HGET', KEYS[2], ARGV[1])
local class = ARGV[2]
if prev == class or (class == '-' and not prev) then return 0 end
local ver = redis.call('HGET', KEYS[1], 'tokver')
if ver and ver ~= ARGV[6] then
  return redis.error_reply('Bayes store learned with tokenizer version ' .. ver .. ', this filterd uses ' .. ARGV[6] .. ': relearn')
end
redis.call('HSET', KEYS[1], 'tokver', ARGV[6])
local names = {s = 'spam', h = 'ham'}
local out = 1
if prev then
  for i = 7, #ARGV do
    local k = ARGV[5] .. ARGV[i]
    if redis.call('EXISTS', k) == 1 then
      if redis.call('HINCRBY', k, prev, -1) < 0 then redis.call('HSET', k, prev, 0) end
      local s = tonumber(redis.call('HGET', k, 's') or '0')
      local h = tonumber(redis.call('HGET', k, 'h') or '0')
      if s <= 0 and h <= 0 then redis.call('DEL', k) end
    end
  end
  if redis.call('HINCRBY', KEYS[1], names[prev], -1) < 0 then redis.call('HSET', KEYS[1], names[prev], 0) end
  redis.call('HDEL', KEYS[2], ARGV[1])
  if class == '-' then return 1 end
  out = 2
end
local atime = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
for i = 7, #ARGV do
  local k = ARGV[5] .. ARGV[i]
  redis.call('HINCRBY', k, class, 1)
  if atime > tonumber(redis.call('HGET', k, 'a') or '0') then redis.call('HSET', k, 'a', atime) end
  if ttl > 0 then redis.call('EXPIRE', k, ttl) end
end
redis.call('HINCRBY', KEYS[1], names[class], 1)
redis.call('HSET', KEYS[2], ARGV[1], class)
return out
";

/// Autolearned messages written per round trip: a few hundred tokens each, well inside the
/// request time limit (`[shared] timeout_ms`) even after an outage queued thousands.
const LEARN_BATCH: usize = 50;

/// The shared Bayes store.
#[derive(Debug)]
pub struct RedisBayes {
    redis: Arc<RedisStore>,
    params: BayesParams,
    ttl_secs: u64,
    learn: redis::Script,
    /// Autolearned messages not yet written.
    pending: crate::model::learn_queue::LearnQueue,
}

/// What one message's lookup found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lookup {
    /// Not enough learned yet for Bayes to vote.
    NotReady,
    /// The classifier's answer.
    Scored(BayesScore),
}

fn class_code(c: Class) -> &'static str {
    match c {
        Class::Spam => "s",
        Class::Ham => "h",
    }
}

fn num(v: Option<&redis::Value>) -> u64 {
    match v {
        Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
        Some(redis::Value::BulkString(b)) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .map_or(0, |n| u64::try_from(n).unwrap_or(0)),
        _ => 0,
    }
}

fn values(v: &redis::Value) -> &[redis::Value] {
    match v {
        redis::Value::Array(items) => items,
        _ => &[],
    }
}

fn counts(row: &redis::Value) -> Option<TokenCounts> {
    let r = values(row);
    let c = TokenCounts {
        spam: num(r.first()).min(u64::from(u32::MAX)) as u32,
        ham: num(r.get(1)).min(u64::from(u32::MAX)) as u32,
        atime: num(r.get(2)).min(u64::from(u32::MAX)) as u32,
    };
    (c.spam > 0 || c.ham > 0).then_some(c)
}

impl RedisBayes {
    /// The store in `redis`; tokens expire `ttl_secs` after they were last learned.
    pub fn new(redis: Arc<RedisStore>, params: BayesParams, ttl_secs: u64) -> Self {
        RedisBayes {
            redis,
            params,
            ttl_secs,
            learn: redis::Script::new(LEARN),
            pending: Default::default(),
        }
    }

    /// The same store with another request time limit (`filtertrain`'s bulk work).
    pub fn retimed(&self, timeout: std::time::Duration) -> RedisBayes {
        RedisBayes::new(
            Arc::new(self.redis.retimed(timeout)),
            self.params,
            self.ttl_secs,
        )
    }

    /// Where it is, for logs.
    pub fn label(&self) -> &str {
        self.redis.label()
    }

    /// The autolearn queue.
    pub fn queue(&self) -> &crate::model::learn_queue::LearnQueue {
        &self.pending
    }

    /// Write the autolearned messages queued so far, `LEARN_BATCH` (50) per pipelined round
    /// trip (each within the request time limit); how many were new or changed class.
    /// What Redis cannot take stays queued, from the batch that failed on.
    pub async fn flush_learned(&self) -> Result<usize, Unavailable> {
        let queued = self.pending.take();
        let now = crate::clock::now_unix();
        let mut learned = 0;
        for (i, chunk) in queued.chunks(LEARN_BATCH).enumerate() {
            let refs: Vec<(u128, &Tokens, Option<Class>)> =
                chunk.iter().map(|(id, t, c)| (*id, t, Some(*c))).collect();
            match self.learn(&refs, now).await {
                Ok(done) => learned += done.iter().filter(|l| **l != Learned::Skipped).count(),
                Err(e) => {
                    drop(refs);
                    let mut queued = queued;
                    self.pending.put_back(queued.split_off(i * LEARN_BATCH));
                    return Err(e);
                }
            }
        }
        Ok(learned)
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.redis.prefix())
    }

    fn token_key(&self, t: u64) -> String {
        format!("{}bt:{t:016x}", self.redis.prefix())
    }

    /// Classify one message's tokens: the counts and every token in one round trip.
    pub async fn classify(&self, tokens: &Tokens) -> Result<Lookup, Unavailable> {
        let mut pipe = redis::pipe();
        pipe.hmget(self.key("bayes"), &["spam", "ham", "tokver"]);
        for &t in &tokens.0 {
            pipe.hmget(self.token_key(t), &["s", "h", "a"]);
        }
        let rows: Vec<redis::Value> = self
            .redis
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        let Some((head, rows)) = rows.split_first() else {
            return Err(Unavailable("redis answered nothing".into()));
        };
        let head = values(head);
        let tokver = num(head.get(2));
        if tokver != 0 && tokver != u64::from(TOKENIZER_VERSION) {
            return Err(Unavailable(format!(
                "Bayes store in redis {} was learned with tokenizer version {tokver}, this filterd uses {TOKENIZER_VERSION}: relearn",
                self.label()
            )));
        }
        let mut store = Store::default();
        (store.nspam, store.nham) = (num(head.first()), num(head.get(1)));
        for (&t, row) in tokens.0.iter().zip(rows) {
            if let Some(c) = counts(row) {
                store.insert_token(t, c);
            }
        }
        Ok(match classify(&store, tokens, &self.params) {
            Some(score) => Lookup::Scored(score),
            None => Lookup::NotReady,
        })
    }

    /// Learn (`Some(class)`) or forget (`None`) messages, pipelined; what each did (for a
    /// forget: `New` when it was forgotten, `Skipped` when it was never learned).
    pub async fn learn(
        &self,
        batch: &[(u128, &Tokens, Option<Class>)],
        now: u64,
    ) -> Result<Vec<Learned>, Unavailable> {
        if batch.is_empty() {
            return Ok(vec![]);
        }
        // SCRIPT LOAD first in the same pipeline: EVALSHA then works also on a server that
        // restarted since the last batch, still in one round trip.
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(LEARN).ignore();
        let sha = self.learn.get_hash().to_string();
        let prefix = format!("{}bt:", self.redis.prefix());
        for (id, tokens, class) in batch {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(&sha)
                .arg(2)
                .arg(self.key("bayes"))
                .arg(self.key("bseen"));
            cmd.arg(format!("{id:032x}"))
                .arg(class.map_or("-", class_code))
                .arg(now.min(u64::from(u32::MAX)))
                .arg(self.ttl_secs)
                .arg(&prefix)
                .arg(TOKENIZER_VERSION);
            for t in &tokens.0 {
                cmd.arg(format!("{t:016x}"));
            }
            pipe.add_command(cmd);
        }
        let out: Vec<u64> = self
            .redis
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        Ok(out
            .into_iter()
            .map(|n| match n {
                1 => Learned::New,
                2 => Learned::Moved,
                _ => Learned::Skipped,
            })
            .collect())
    }

    /// Every key of the token set, in batches (SCAN).
    async fn token_keys(&self) -> Result<Vec<String>, Unavailable> {
        let pattern = format!("{}bt:*", self.redis.prefix());
        let mut cursor = 0u64;
        let mut keys = vec![];
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(2000);
            let (next, batch): (u64, Vec<String>) = self
                .redis
                .run(|mut c| async move { cmd.query_async(&mut c).await })
                .await?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// The whole store (for `--backup`, `--dump`, `--force-expire`).
    pub async fn load_all(&self) -> Result<Store, Unavailable> {
        let keys = self.token_keys().await?;
        let head: Vec<Option<u64>> = {
            let key = self.key("bayes");
            let fields = [
                "spam",
                "ham",
                "last_expire",
                "last_expire_reduction",
                "last_expire_delta",
            ];
            self.redis
                .run(|mut c| async move {
                    redis::cmd("HMGET")
                        .arg(key)
                        .arg(&fields)
                        .query_async(&mut c)
                        .await
                })
                .await?
        };
        let at = |i: usize| head.get(i).copied().flatten().unwrap_or(0);
        let mut store = Store::default();
        (store.nspam, store.nham) = (at(0), at(1));
        store.last_expire = at(2);
        store.last_expire_reduction = at(3);
        store.last_expire_delta = at(4);
        for chunk in keys.chunks(2000) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.hmget(k, &["s", "h", "a"]);
            }
            let rows: Vec<redis::Value> = self
                .redis
                .run(|mut c| async move { pipe.query_async(&mut c).await })
                .await?;
            for (k, row) in chunk.iter().zip(&rows) {
                let hex = k.rsplit(':').next().unwrap_or("");
                if let (Ok(t), Some(c)) = (u64::from_str_radix(hex, 16), counts(row)) {
                    store.insert_token(t, c);
                }
            }
        }
        let key = self.key("bseen");
        let seen: Vec<(String, String)> = self
            .redis
            .run(|mut c| async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await })
            .await?;
        for (id, class) in seen {
            let class = if class == "s" {
                Class::Spam
            } else {
                Class::Ham
            };
            if let Ok(id) = u128::from_str_radix(&id, 16) {
                store.insert_seen(id, class);
            }
        }
        Ok(store)
    }

    /// Remove every Bayes key.
    pub async fn clear(&self) -> Result<(), Unavailable> {
        let mut keys = self.token_keys().await?;
        keys.push(self.key("bayes"));
        keys.push(self.key("bseen"));
        self.del(&keys).await
    }

    /// DEL `keys`, 2000 a request.
    async fn del(&self, keys: &[String]) -> Result<(), Unavailable> {
        for chunk in keys.chunks(2000) {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(chunk);
            self.redis
                .run(|mut c| async move { cmd.query_async::<()>(&mut c).await })
                .await?;
        }
        Ok(())
    }

    /// HSET `key` with the field/value `pairs`, one request.
    async fn hset<F, V>(&self, key: String, pairs: &[(F, V)]) -> Result<(), Unavailable>
    where
        F: redis::ToRedisArgs,
        V: redis::ToRedisArgs,
    {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(key).arg(pairs);
        self.redis
            .run(|mut c| async move { cmd.query_async::<()>(&mut c).await })
            .await
    }

    /// Replace the store with `store` (`--restore`); every token's expiry starts now.
    pub async fn replace_with(&self, store: &Store) -> Result<(), Unavailable> {
        self.clear().await?;
        let head = [
            ("spam", store.nspam),
            ("ham", store.nham),
            ("tokver", u64::from(TOKENIZER_VERSION)),
            ("last_expire", store.last_expire),
            ("last_expire_reduction", store.last_expire_reduction),
            ("last_expire_delta", store.last_expire_delta),
        ];
        self.hset(self.key("bayes"), &head).await?;
        let tokens: Vec<(u64, TokenCounts)> = store.tokens_iter().collect();
        for chunk in tokens.chunks(2000) {
            let mut pipe = redis::pipe();
            for (t, c) in chunk {
                let k = self.token_key(*t);
                pipe.hset_multiple(&k, &[("s", c.spam), ("h", c.ham), ("a", c.atime)])
                    .ignore();
                if self.ttl_secs > 0 {
                    pipe.expire(&k, self.ttl_secs as i64).ignore();
                }
            }
            self.redis
                .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
                .await?;
        }
        let seen: Vec<(String, &str)> = store
            .seen_iter()
            .map(|(id, c)| (format!("{id:032x}"), class_code(c)))
            .collect();
        for chunk in seen.chunks(2000) {
            self.hset(self.key("bseen"), chunk).await?;
        }
        Ok(())
    }

    /// Expire now, down to 75% of `max_tokens` (`--force-expire`): the least recently
    /// learned go, as in the file store. Returns how many went.
    pub async fn force_expire(&self, max_tokens: usize, now: u64) -> Result<usize, Unavailable> {
        let mut store = self.load_all().await?;
        let before: Vec<u64> = store.tokens_iter().map(|(t, _)| t).collect();
        let removed = store.expire(max_tokens, now, true);
        let gone: Vec<String> = before
            .into_iter()
            .filter(|t| store.get(*t).is_none())
            .map(|t| self.token_key(t))
            .collect();
        self.del(&gone).await?;
        let stamp = [
            ("last_expire", store.last_expire),
            ("last_expire_reduction", store.last_expire_reduction),
            ("last_expire_delta", store.last_expire_delta),
        ];
        self.hset(self.key("bayes"), &stamp).await?;
        Ok(removed)
    }
}
