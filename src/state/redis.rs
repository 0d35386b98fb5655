//! The shared state store in Redis: the outbound guard's counters and the greylist, the
//! same for every filterd host pointing at one server, so a limit holds across hosts and a
//! retry passes whichever host it reaches.
//!
//! Keys (under `key_prefix`, default `filterd:`):
//! - `rl:{policy}/{kind}/{value}`: a counter, hash `n` (count) and `s` (the window's first
//!   sender), expiring `window` seconds after its first message (a fixed window that starts
//!   at the key's first message, as the embedded store counts). All of a message's counters
//!   are counted by one script call: one round trip, atomic per key.
//! - `gl:{net}/{sender}/{recipient}`: a greylist triplet, hash `f` (first), `l` (last), `p`
//!   (passed), expiring `max_age` after its last attempt.
//! - `gp:{net}`: how many triplets of a client network passed after a delay (the
//!   auto-allowlist), expiring `max_age` after the last pass.
//!
//! Redis time is not filterd's: windows and ages run on Redis' own expiry. Every request
//! has `timeout_ms`; after a failure, requests fail at once until a backoff (1 s, doubling
//! to 30 s) has passed, so a dead Redis costs one timeout, not one per message. The manager
//! reconnects by itself. Going down is logged as an error (again each minute while down),
//! coming back as info.

use super::{Count, Triplet};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// The shared store cannot answer: Redis is down, slow, or refused the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Counts every key of `KEYS` once: returns `n1, s1, n2, s2, ...`.
const HIT: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('HINCRBY', key, 'n', 1)
  if n == 1 or redis.call('TTL', key) < 0 then
    redis.call('HSET', key, 's', ARGV[2])
    redis.call('EXPIRE', key, ARGV[1])
  end
  out[2 * i - 1] = n
  out[2 * i] = redis.call('HGET', key, 's') or ''
end
return out
";

/// When to try Redis again after a failure.
#[derive(Debug, Default)]
struct Breaker {
    /// Since when it fails, if it does.
    down_since: Option<Instant>,
    /// No request before this.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// When the last error line was written.
    logged: Option<Instant>,
}

/// The shared store.
pub struct RedisStore {
    label: String,
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    max_age: u64,
    hit: redis::Script,
    breaker: Mutex<Breaker>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisStore({})", self.label)
    }
}

/// `url` without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

impl RedisStore {
    /// A store at `url` (`redis://[user:password@]host:port/db`, `rediss://` for TLS is not
    /// built in, `unix:///path`); nothing is connected until the first request. Triplets
    /// and passes expire `max_age_secs` after their last use.
    pub fn new(
        url: &str,
        prefix: &str,
        timeout: Duration,
        max_age_secs: u64,
    ) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("{}: {e}", redact(url)))?;
        Ok(RedisStore {
            label: redact(url),
            client,
            conn: OnceCell::new(),
            prefix: prefix.to_string(),
            timeout,
            max_age: max_age_secs.max(1),
            hit: redis::Script::new(HIT),
            breaker: Mutex::default(),
        })
    }

    /// The URL, without a password.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The same server and prefix with another request time limit (tools doing bulk work).
    pub fn retimed(&self, timeout: Duration) -> RedisStore {
        RedisStore {
            label: self.label.clone(),
            client: self.client.clone(),
            conn: OnceCell::new(),
            prefix: self.prefix.clone(),
            timeout,
            max_age: self.max_age,
            hit: redis::Script::new(HIT),
            breaker: Mutex::default(),
        }
    }

    /// The key prefix.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Run one request within the timeout, unless Redis failed lately.
    pub(crate) async fn run<T, F, Fut>(&self, request: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let now = Instant::now();
        if let Some(at) = self.lock().retry_at.filter(|at| now < *at) {
            let left = at.duration_since(now).as_millis();
            return Err(Unavailable(format!(
                "redis {} unavailable (next try in {left} ms)",
                self.label
            )));
        }
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .await
            .map_err(|e| self.failed(e.to_string()))?
            .clone();
        let started = Instant::now();
        let answer = tokio::time::timeout(self.timeout, request(conn)).await;
        let m = &crate::metrics::METRICS;
        m.redis_seconds.observe(started.elapsed().as_secs_f64());
        let result = if matches!(answer, Ok(Ok(_))) {
            "ok"
        } else {
            "error"
        };
        m.shared_requests
            .with_label_values(&["redis", result])
            .inc();
        match answer {
            Ok(Ok(v)) => {
                self.succeeded();
                Ok(v)
            }
            Ok(Err(e)) => Err(self.failed(e.to_string())),
            Err(_) => Err(self.failed(format!("no answer within {:?}", self.timeout))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failed(&self, why: String) -> Unavailable {
        let now = Instant::now();
        let mut b = self.lock();
        b.backoff = (b.backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
        b.retry_at = Some(now + b.backoff);
        let since = *b.down_since.get_or_insert(now);
        if b.logged
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60))
        {
            b.logged = Some(now);
            tracing::error!(
                redis = %self.label,
                error = %why,
                down_secs = now.duration_since(since).as_secs(),
                retry_in_ms = b.backoff.as_millis() as u64,
                "shared state store (redis) unavailable"
            );
        }
        Unavailable(format!("redis {}: {why}", self.label))
    }

    fn succeeded(&self) {
        let mut b = self.lock();
        if let Some(since) = b.down_since.take() {
            tracing::info!(
                redis = %self.label,
                down_secs = since.elapsed().as_secs(),
                "shared state store (redis) reachable again"
            );
        }
        *b = Breaker::default();
    }

    /// Count one message from `sender` under each of `keys` (one round trip).
    pub async fn hit_all(
        &self,
        keys: &[String],
        window_secs: u64,
        sender: &str,
    ) -> Result<Vec<Count>, Unavailable> {
        if keys.is_empty() {
            return Ok(vec![]);
        }
        let mut call = self.hit.prepare_invoke();
        for k in keys {
            call.key(format!("{}rl:{k}", self.prefix));
        }
        call.arg(window_secs.max(1)).arg(sender);
        let flat: Vec<redis::Value> = self
            .run(|mut c| async move { call.invoke_async(&mut c).await })
            .await?;
        let counts = flat
            .chunks(2)
            .map(|pair| Count {
                count: pair.first().map_or(0, int),
                first_sender: pair.get(1).map(text).unwrap_or_default(),
            })
            .collect::<Vec<_>>();
        if counts.len() != keys.len() {
            return Err(Unavailable(format!(
                "redis {}: counter script answered {} values for {} keys",
                self.label,
                flat.len(),
                keys.len()
            )));
        }
        Ok(counts)
    }

    /// The counts under `keys`, without counting (one round trip).
    pub async fn peek_all(&self, keys: &[String]) -> Result<Vec<u64>, Unavailable> {
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.hget(format!("{}rl:{k}", self.prefix), "n");
        }
        let got: Vec<Option<u64>> = self
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        Ok(got.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// A greylist triplet's record.
    pub async fn get(&self, triplet: &str) -> Result<Option<Triplet>, Unavailable> {
        let key = format!("{}gl:{triplet}", self.prefix);
        let (first, last, passed): (Option<u64>, Option<u64>, Option<u64>) = self
            .run(|mut c| async move { c.hmget(key, &["f", "l", "p"]).await })
            .await?;
        Ok(match (first, last) {
            (Some(first), Some(last)) => Some(Triplet {
                first,
                last,
                passed: passed.unwrap_or(0) != 0,
            }),
            _ => None,
        })
    }

    /// Store a greylist triplet's record; it expires `max_age` from now.
    pub async fn put(&self, triplet: &str, t: Triplet) -> Result<(), Unavailable> {
        let key = format!("{}gl:{triplet}", self.prefix);
        let mut pipe = redis::pipe();
        pipe.hset_multiple(
            &key,
            &[("f", t.first), ("l", t.last), ("p", u64::from(t.passed))],
        )
        .ignore()
        .expire(&key, self.max_age as i64)
        .ignore();
        self.run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
    }

    /// How many triplets of client network `client` passed after a delay.
    pub async fn passes(&self, client: &str) -> Result<u64, Unavailable> {
        let key = format!("{}gp:{client}", self.prefix);
        let n: Option<u64> = self.run(|mut c| async move { c.get(key).await }).await?;
        Ok(n.unwrap_or(0))
    }

    /// Count one more pass of `client`; returns the new count.
    pub async fn add_pass(&self, client: &str) -> Result<u64, Unavailable> {
        let key = format!("{}gp:{client}", self.prefix);
        let mut pipe = redis::pipe();
        pipe.incr(&key, 1u64)
            .expire(&key, self.max_age as i64)
            .ignore();
        let (n,): (u64,) = self
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        Ok(n)
    }
}

/// A store on a loopback port nothing listens on (tests of what Redis being down does).
#[cfg(test)]
pub(crate) fn dead_store() -> RedisStore {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(9, |a| a.port());
    let url = format!("redis://127.0.0.1:{port}/0");
    RedisStore::new(&url, "t:", Duration::from_millis(200), 60).expect("a valid URL")
}

fn int(v: &redis::Value) -> u64 {
    match v {
        redis::Value::Int(n) => u64::try_from(*n).unwrap_or(0),
        other => text(other).parse().unwrap_or(0),
    }
}

fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Int(n) => n.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_the_label() {
        assert_eq!(
            redact("redis://user:secret@10.0.0.5:6379/2"),
            "redis://***@10.0.0.5:6379/2"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[tokio::test]
    async fn a_dead_server_fails_fast_after_the_first_timeout() {
        // A port with nothing listening: connection refused at once, then the backoff.
        let s = dead_store();
        let first = s.hit_all(&["a".into()], 60, "x").await;
        assert!(first.is_err(), "{first:?}");
        let started = std::time::Instant::now();
        let second = s.passes("192.0.2").await;
        assert!(
            second.as_ref().is_err_and(|e| e.0.contains("next try")),
            "{second:?}"
        );
        assert!(started.elapsed() < Duration::from_millis(50));
        assert!(RedisStore::new("nonsense", "t:", Duration::from_millis(1), 1).is_err());
    }
}
