//! The quarantine in PostgreSQL (`[shared] quarantine = "postgresql"`), shared by every
//! filterd host and seen by `filterq` on any of them, as amavisd-new keeps its quarantine in
//! SQL. One row per held message: the columns an admin queries, the whole [`Entry`] as
//! JSONB (what `filterq --json` prints), and the message's bytes (BYTEA).
//!
//! A write is one INSERT, committed (synchronous commit) before filterd answers 250; a
//! failure is the 451. The schema is created and migrated at start, under an advisory lock,
//! so hosts starting together do not race; retention runs on one host at a time
//! (`pg_try_advisory_xact_lock`: the others skip that round).
//!
//! Calls are synchronous (the rust-postgres sync client): filterd makes them on the
//! blocking pool, as it writes the file store. One connection per process, reconnected
//! after an error (not before `RETRY` has passed, so a dead server costs one connect
//! timeout per `RETRY`, not one per message).

use super::{Entry, QuarantineError, Removed};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The schema, one migration per entry; `filterd_schema.version` says how many ran.
const MIGRATIONS: &[&str] = &["
CREATE TABLE filterd_quarantine (
    id          TEXT PRIMARY KEY,
    time        TIMESTAMPTZ NOT NULL,
    reason      TEXT NOT NULL,
    sender      TEXT NOT NULL,
    recipients  TEXT[] NOT NULL,
    score       DOUBLE PRECISION,
    size        BIGINT NOT NULL,
    host        TEXT NOT NULL,
    entry       JSONB NOT NULL,
    message     BYTEA NOT NULL
);
CREATE INDEX filterd_quarantine_time ON filterd_quarantine (time);
"];

/// Advisory lock keys: schema migration, retention.
const LOCK_MIGRATE: i64 = 0x6669_6c74_0001;
const LOCK_RETENTION: i64 = 0x6669_6c74_0002;

/// After a failed connection, no new attempt before this.
const RETRY: Duration = Duration::from_secs(2);

/// The store.
pub struct PgQuarantine {
    config: postgres::Config,
    label: String,
    host: String,
    conn: Mutex<Conn>,
}

#[derive(Default)]
struct Conn {
    client: Option<postgres::Client>,
    failed_at: Option<Instant>,
}

impl std::fmt::Debug for PgQuarantine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgQuarantine({})", self.label)
    }
}

fn db(label: &str, what: &str, e: impl std::fmt::Display) -> QuarantineError {
    QuarantineError::Database(format!("postgresql {label}: {what}: {e}"))
}

impl PgQuarantine {
    /// A store at `url` (`postgresql://user:password@host:port/db` or the key=value form),
    /// rows marked as written by `host`; nothing is connected yet.
    pub fn new(url: &str, host: &str, timeout: Duration) -> Result<Self, String> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| format!("{}: {e}", crate::state::redis::redact(url)))?;
        config
            .connect_timeout(timeout)
            .keepalives(true)
            .application_name("filterd");
        let ms = timeout.as_millis().max(1);
        config.options(&format!("-c statement_timeout={ms} -c lock_timeout={ms}"));
        Ok(PgQuarantine {
            config,
            label: crate::state::redis::redact(url),
            host: host.to_string(),
            conn: Mutex::default(),
        })
    }

    /// The URL without its password.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Run `f` on the connection, connecting first when there is none.
    fn with<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T, QuarantineError> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if conn
            .client
            .as_ref()
            .is_some_and(postgres::Client::is_closed)
        {
            conn.client = None;
        }
        if conn.client.is_none() {
            if let Some(at) = conn.failed_at.filter(|at| at.elapsed() < RETRY) {
                let left = RETRY.saturating_sub(at.elapsed()).as_millis();
                return Err(db(
                    &self.label,
                    what,
                    format!("unavailable (next try in {left} ms)"),
                ));
            }
            // Each new connection makes sure the schema is there and current.
            let connected = self.config.connect(postgres::NoTls).and_then(|mut c| {
                migrate(&mut c)?;
                Ok(c)
            });
            match connected {
                Ok(c) => conn.client = Some(c),
                Err(e) => {
                    conn.failed_at = Some(Instant::now());
                    let m = &crate::metrics::METRICS;
                    m.shared_requests
                        .with_label_values(&["postgresql", "error"])
                        .inc();
                    return Err(db(&self.label, what, e));
                }
            }
        }
        let Some(client) = conn.client.as_mut() else {
            return Err(db(&self.label, what, "no connection"));
        };
        let done = f(client);
        let result = if done.is_ok() { "ok" } else { "error" };
        let m = &crate::metrics::METRICS;
        m.shared_requests
            .with_label_values(&["postgresql", result])
            .inc();
        match done {
            Ok(v) => {
                conn.failed_at = None;
                Ok(v)
            }
            Err(e) => {
                // A statement error leaves the connection usable; a broken one is dropped.
                if client.is_closed() {
                    conn.client = None;
                    conn.failed_at = Some(Instant::now());
                }
                Err(db(&self.label, what, e))
            }
        }
    }

    /// Connect, creating or migrating the schema (at start, and `--check-config`).
    pub fn prepare(&self) -> Result<(), QuarantineError> {
        self.with("connecting", |c| c.simple_query("SELECT 1").map(drop))
    }

    /// Store a held message; committed when this returns Ok.
    pub fn put(&self, e: &Entry, message: &[u8]) -> Result<(), QuarantineError> {
        let json = serde_json::to_string(e).map_err(|x| db(&self.label, "encoding", x))?;
        self.with("writing", |c| {
            c.execute(
                "INSERT INTO filterd_quarantine \
                 (id, time, reason, sender, recipients, score, size, host, entry, message) \
                 VALUES ($1, to_timestamp($2::FLOAT8), $3, $4, $5, $6, $7, $8, $9::TEXT::JSONB, $10)",
                &[
                    &e.id,
                    &(e.time as f64),
                    &e.reason,
                    &e.sender,
                    &e.recipients,
                    &e.score,
                    &(e.size as i64),
                    &self.host,
                    &json,
                    &message,
                ],
            )
            .map(drop)
        })
    }

    /// Remove an entry.
    pub fn delete(&self, id: &str) -> Result<(), QuarantineError> {
        let n = self.with("deleting", |c| {
            c.execute("DELETE FROM filterd_quarantine WHERE id = $1", &[&id])
        })?;
        if n == 0 {
            return Err(QuarantineError::Unknown(id.to_string()));
        }
        Ok(())
    }

    fn parse(&self, id: &str, json: &str) -> Result<Entry, QuarantineError> {
        serde_json::from_str(json).map_err(|e| QuarantineError::Corrupt {
            path: PathBuf::from(format!("{}#{id}", self.label)),
            reason: e.to_string(),
        })
    }

    /// The metadata of one entry.
    pub fn get(&self, id: &str) -> Result<Entry, QuarantineError> {
        let row = self.with("reading", |c| {
            c.query_opt(
                "SELECT entry::TEXT FROM filterd_quarantine WHERE id = $1",
                &[&id],
            )
        })?;
        let json: String = row
            .ok_or_else(|| QuarantineError::Unknown(id.to_string()))?
            .get(0);
        self.parse(id, &json)
    }

    /// The message of one entry, as received.
    pub fn message(&self, id: &str) -> Result<Vec<u8>, QuarantineError> {
        let row = self.with("reading", |c| {
            c.query_opt(
                "SELECT message FROM filterd_quarantine WHERE id = $1",
                &[&id],
            )
        })?;
        Ok(row
            .ok_or_else(|| QuarantineError::Unknown(id.to_string()))?
            .get(0))
    }

    /// [`super::Quarantine::with_claim`] in the database: the entry's row locked (`FOR
    /// UPDATE NOWAIT`) in a transaction that lasts as long as `f`, the entry written back in
    /// it when `f` succeeds.
    pub fn with_claim<T, E: From<QuarantineError>>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Entry) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut outcome: Option<Result<T, E>> = None;
        self.with("releasing", |c| {
            let mut tx = c.transaction()?;
            let row = tx.query_opt(
                "SELECT entry::TEXT FROM filterd_quarantine WHERE id = $1 FOR UPDATE NOWAIT",
                &[&id],
            );
            let row = match row {
                Err(e) if e.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                    outcome = Some(Err(QuarantineError::Busy(id.to_string()).into()));
                    return Ok(());
                }
                row => row?,
            };
            let entry = row
                .ok_or_else(|| QuarantineError::Unknown(id.to_string()))
                .and_then(|row| self.parse(id, row.get(0)));
            let mut entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    outcome = Some(Err(e.into()));
                    return Ok(());
                }
            };
            let done = f(&mut entry);
            if done.is_ok() {
                let json = match serde_json::to_string(&entry) {
                    Ok(json) => json,
                    Err(e) => {
                        outcome = Some(Err(db(&self.label, "encoding", e).into()));
                        return Ok(());
                    }
                };
                tx.execute(
                    "UPDATE filterd_quarantine SET entry = $2::TEXT::JSONB, recipients = $3 WHERE id = $1",
                    &[&id, &json, &entry.recipients],
                )?;
            }
            tx.commit()?;
            outcome = Some(done);
            Ok(())
        })?;
        outcome.unwrap_or_else(|| Err(db(&self.label, "releasing", "no outcome").into()))
    }

    /// Replace the metadata of an existing entry.
    pub fn update(&self, e: &Entry) -> Result<(), QuarantineError> {
        let json = serde_json::to_string(e).map_err(|x| db(&self.label, "encoding", x))?;
        let n = self.with("updating", |c| {
            c.execute(
                "UPDATE filterd_quarantine SET entry = $2::TEXT::JSONB, recipients = $3 WHERE id = $1",
                &[&e.id, &json, &e.recipients],
            )
        })?;
        if n == 0 {
            return Err(QuarantineError::Unknown(e.id.clone()));
        }
        Ok(())
    }

    /// Every entry, oldest first; an unreadable one is reported with its id.
    pub fn list(&self) -> Result<Vec<Result<Entry, QuarantineError>>, QuarantineError> {
        let rows = self.with("listing", |c| {
            c.query(
                "SELECT id, entry::TEXT FROM filterd_quarantine ORDER BY time, id",
                &[],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| self.parse(r.get(0), r.get(1)))
            .collect())
    }

    /// Delete entries quarantined before `cutoff`.
    pub fn purge(&self, cutoff: SystemTime) -> Result<Removed, QuarantineError> {
        let cutoff = crate::clock::unix_secs(cutoff) as f64;
        let rows = self.with("purging", |c| {
            c.query(
                "DELETE FROM filterd_quarantine WHERE time < to_timestamp($1::FLOAT8) RETURNING size",
                &[&cutoff],
            )
        })?;
        Ok(removed(&rows))
    }

    /// Retention on one host at a time: past `max_age`, then the oldest until the messages
    /// take at most `max_bytes`. A host that finds another at it skips this round.
    pub fn enforce(
        &self,
        now: SystemTime,
        max_age: Option<Duration>,
        max_bytes: Option<u64>,
    ) -> Result<Removed, QuarantineError> {
        let cutoff = max_age.map(|a| {
            crate::clock::unix_secs(now.checked_sub(a).unwrap_or(SystemTime::UNIX_EPOCH)) as f64
        });
        let max = max_bytes.map(|b| b.min(i64::MAX as u64) as i64);
        self.with("retention", |c| {
            let mut tx = c.transaction()?;
            let mine: bool = tx
                .query_one("SELECT pg_try_advisory_xact_lock($1::BIGINT)", &[&LOCK_RETENTION])?
                .get(0);
            let mut out = Removed::default();
            if !mine {
                return Ok(out);
            }
            if let Some(cutoff) = cutoff {
                let rows = tx.query(
                    "DELETE FROM filterd_quarantine WHERE time < to_timestamp($1::FLOAT8) RETURNING size",
                    &[&cutoff],
                )?;
                out = removed(&rows);
            }
            if let Some(max) = max {
                // The oldest rows beyond the newest `max` bytes.
                let rows = tx.query(
                    "DELETE FROM filterd_quarantine WHERE id IN ( \
                       SELECT id FROM (SELECT id, SUM(size) OVER (ORDER BY time DESC, id DESC) AS newer \
                       FROM filterd_quarantine) t WHERE newer > $1::BIGINT) RETURNING size",
                    &[&max],
                )?;
                let more = removed(&rows);
                out.entries += more.entries;
                out.bytes += more.bytes;
            }
            tx.commit()?;
            Ok(out)
        })
    }
}

fn removed(rows: &[postgres::Row]) -> Removed {
    Removed {
        entries: rows.len(),
        bytes: rows
            .iter()
            .map(|r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0))
            .sum(),
    }
}

/// Create or migrate the schema, under an advisory lock (hosts starting together wait for
/// one another); a database migrated by a newer filterd is refused.
fn migrate(c: &mut postgres::Client) -> Result<(), postgres::Error> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1::BIGINT)", &[&LOCK_MIGRATE])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS filterd_schema (version INT NOT NULL)")?;
    let done: i64 = match tx.query_opt("SELECT version::BIGINT FROM filterd_schema", &[])? {
        Some(r) => r.get(0),
        None => {
            tx.execute("INSERT INTO filterd_schema VALUES (0)", &[])?;
            0
        }
    };
    if done > MIGRATIONS.len() as i64 {
        // Raised in SQL, so it reaches the caller as the database's own error.
        tx.batch_execute(&format!(
            "DO $$ BEGIN RAISE EXCEPTION 'filterd_schema version {done} is newer than this filterd knows ({})'; END $$",
            MIGRATIONS.len()
        ))?;
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(done.max(0) as usize) {
        tx.batch_execute(sql)?;
        tx.execute("UPDATE filterd_schema SET version = $1", &[&(n as i32 + 1)])?;
    }
    tx.commit()
}
