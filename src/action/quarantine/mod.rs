//! The quarantine: a crash-safe directory store of held messages, written by filterd before
//! it answers 250 and read by `filterq` (list, show, cat, release, delete, purge, stats).
//!
//! Layout under the quarantine directory:
//!
//! ```text
//! ID.eml    the message, byte for byte as filterd received it
//! ID.json   its metadata (Entry): time, policy, reason, score, hits, envelope, ...
//! tmp/      files being written; never listed
//! ```
//!
//! A write goes to `tmp/`, is fsynced, renamed into place (message first, metadata last) and
//! the directory is fsynced. An entry exists when its `.json` does, so a crash at any point
//! leaves either a complete entry or nothing listed; leftovers in `tmp/` and messages without
//! metadata are swept after an hour.

mod claim;
mod entry;
mod pg;

pub use entry::{Dsn, Entry, EntryHit, Release, id_header};
pub use pg::PgQuarantine;
use std::sync::Arc;

use crate::clock::unix_secs;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Leftovers younger than this may still be in the middle of a write.
const SWEEP_AGE: Duration = Duration::from_secs(3600);

/// Why the store refused.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    /// An I/O error on a path (the OS error is part of the message, not a separate cause,
    /// so an error chain does not print it twice).
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// No entry of that id.
    #[error("no quarantined message with id `{0}`")]
    Unknown(String),
    /// Not a quarantine id (12 characters of A-Z a-z 0-9 + -).
    #[error("`{0}` is not a quarantine id (12 characters of A-Z, a-z, 0-9, + and -)")]
    BadId(String),
    /// The database did not answer or refused (`[shared] quarantine = "postgresql"`).
    #[error("{0}")]
    Database(String),
    /// Another `filterq` (on this host or, with the database, any host) is releasing this
    /// entry right now.
    #[error("`{0}` is being released by another filterq right now; try again in a moment")]
    Busy(String),
    /// The metadata does not parse.
    #[error("{path}: corrupt entry: {reason}")]
    Corrupt {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> QuarantineError + '_ {
    move |error| QuarantineError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// True for a well-formed id (also what keeps a path out of the store's directory).
/// Write a held message to `store` (durably, before the reply); an error says why, for
/// the 451 and the log.
pub(crate) fn hold(
    store: Option<&Quarantine>,
    entry: &Entry,
    msg: &[u8],
) -> Result<String, String> {
    let store = store.ok_or("no quarantine is configured")?;
    store.put(entry, msg).map_err(|e| e.to_string())?;
    crate::metrics::METRICS.quarantined.inc();
    crate::metrics::METRICS
        .quarantined_bytes
        .inc_by(msg.len() as u64);
    Ok(entry.id.clone())
}

/// Remove the quarantine copy of a message that is being retried (its delivery failed).
pub(crate) fn release_copy(store: Option<&Quarantine>, id: &str) {
    if let Some(store) = store
        && let Err(e) = store.delete(id)
    {
        tracing::error!(id, error = %e, "could not remove a quarantine copy of a retried message");
    }
}

pub(crate) fn valid_id(id: &str) -> bool {
    id.len() == 12
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-')
}

/// The store: a directory, or PostgreSQL.
#[derive(Debug, Clone)]
pub struct Quarantine {
    dir: PathBuf,
    pg: Option<Arc<PgQuarantine>>,
}

/// What `enforce` or `purge` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Entries.
    pub entries: usize,
    /// Bytes of messages.
    pub bytes: u64,
}

impl Quarantine {
    /// The store at `dir` (nothing is touched until [`Quarantine::prepare`] or a write).
    pub fn at(dir: &Path) -> Self {
        Quarantine {
            dir: dir.to_path_buf(),
            pg: None,
        }
    }

    /// The store in PostgreSQL (`dir` is its label then).
    pub fn postgres(pg: PgQuarantine) -> Self {
        Quarantine {
            dir: PathBuf::from(pg.label()),
            pg: Some(Arc::new(pg)),
        }
    }

    /// True for the PostgreSQL store.
    pub fn is_database(&self) -> bool {
        self.pg.is_some()
    }

    /// The database store, if this is it, after an id check.
    fn db(&self, id: &str) -> Result<Option<&PgQuarantine>, QuarantineError> {
        if !valid_id(id) {
            return Err(QuarantineError::BadId(id.to_string()));
        }
        Ok(self.pg.as_deref())
    }

    /// Create the directories and make sure they are writable (at filterd's start).
    pub fn prepare(&self) -> Result<(), QuarantineError> {
        use std::os::unix::fs::DirBuilderExt as _;
        if let Some(pg) = &self.pg {
            return pg.prepare();
        }
        let tmp = self.dir.join("tmp");
        // Held mail is private: directories 0700, files 0600 (for the user filterd runs as).
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&tmp)
            .map_err(io(&tmp))?;
        let probe = tmp.join(format!(".probe-{}", std::process::id()));
        File::create(&probe).map_err(io(&probe))?;
        let _ = fs::remove_file(&probe);
        Ok(())
    }

    /// Check, without creating anything, that [`Quarantine::prepare`] can succeed: the
    /// directory, or its nearest existing ancestor, is a writable directory
    /// (`filterd --check-config`).
    pub fn check(&self) -> Result<(), QuarantineError> {
        if let Some(pg) = &self.pg {
            return pg.prepare();
        }
        let mut at = self.dir.as_path();
        while !at.exists() {
            match at.parent() {
                Some(p) if !p.as_os_str().is_empty() => at = p,
                _ => break,
            }
        }
        let probe = at.join(format!(".filterd-probe-{}", std::process::id()));
        File::create(&probe).map_err(|e| QuarantineError::Io {
            path: self.dir.clone(),
            error: std::io::Error::new(e.kind(), format!("cannot write in {}: {e}", at.display())),
        })?;
        let _ = fs::remove_file(&probe);
        Ok(())
    }

    /// Open (creating) the store at `dir` and make sure it is writable.
    pub fn create(dir: &Path) -> Result<Self, QuarantineError> {
        let q = Self::at(dir);
        q.prepare()?;
        Ok(q)
    }

    /// Open an existing store for reading (filterq); it must exist.
    pub fn open(dir: &Path) -> Result<Self, QuarantineError> {
        fs::read_dir(dir).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (filterd creates it at start; is this the configuration filterd runs with?)"
            } else {
                ""
            };
            QuarantineError::Io {
                path: dir.to_path_buf(),
                error: std::io::Error::new(e.kind(), format!("{e}{hint}")),
            }
        })?;
        Ok(Quarantine::at(dir))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn paths(&self, id: &str) -> Result<(PathBuf, PathBuf), QuarantineError> {
        if !valid_id(id) {
            return Err(QuarantineError::BadId(id.to_string()));
        }
        Ok((
            self.dir.join(format!("{id}.eml")),
            self.dir.join(format!("{id}.json")),
        ))
    }

    /// Store a message durably: when this returns Ok, the entry survives a crash.
    pub fn put(&self, entry: &Entry, message: &[u8]) -> Result<(), QuarantineError> {
        if let Some(pg) = self.db(&entry.id)? {
            return pg.put(entry, message);
        }
        let (eml, json) = self.paths(&entry.id)?;
        let meta = serde_json::to_vec_pretty(entry).map_err(|e| QuarantineError::Corrupt {
            path: json.clone(),
            reason: e.to_string(),
        })?;
        let tmp_eml = self.dir.join("tmp").join(format!("{}.eml", entry.id));
        let tmp_json = self.dir.join("tmp").join(format!("{}.json", entry.id));
        let result = (|| {
            write_synced(&tmp_eml, message)?;
            write_synced(&tmp_json, &meta)?;
            fs::rename(&tmp_eml, &eml).map_err(io(&eml))?;
            fs::rename(&tmp_json, &json).map_err(io(&json))?;
            sync_dir(&self.dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp_eml);
            let _ = fs::remove_file(&tmp_json);
            let _ = fs::remove_file(&json);
            let _ = fs::remove_file(&eml);
        }
        result
    }

    /// Remove an entry (metadata first, so it is never listed without its message).
    pub fn delete(&self, id: &str) -> Result<(), QuarantineError> {
        if let Some(pg) = self.db(id)? {
            return pg.delete(id);
        }
        let (eml, json) = self.paths(id)?;
        match fs::remove_file(&json) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(QuarantineError::Unknown(id.to_string()));
            }
            Err(e) => return Err(io(&json)(e)),
        }
        let _ = fs::remove_file(&eml);
        sync_dir(&self.dir)
    }

    /// The metadata of one entry.
    pub fn get(&self, id: &str) -> Result<Entry, QuarantineError> {
        if let Some(pg) = self.db(id)? {
            return pg.get(id);
        }
        let (_, json) = self.paths(id)?;
        read_entry(&json, id)
    }

    /// The message of one entry, as received.
    pub fn message(&self, id: &str) -> Result<Vec<u8>, QuarantineError> {
        if let Some(pg) = self.db(id)? {
            return pg.message(id);
        }
        let (eml, json) = self.paths(id)?;
        if !json.exists() {
            return Err(QuarantineError::Unknown(id.to_string()));
        }
        fs::read(&eml).map_err(|e| QuarantineError::Corrupt {
            path: eml.clone(),
            reason: format!("the message file is unreadable: {e}"),
        })
    }

    /// Replace the metadata of an existing entry (atomically).
    pub fn update(&self, entry: &Entry) -> Result<(), QuarantineError> {
        if let Some(pg) = self.db(&entry.id)? {
            return pg.update(entry);
        }
        let (_, json) = self.paths(&entry.id)?;
        if !json.exists() {
            return Err(QuarantineError::Unknown(entry.id.clone()));
        }
        let meta = serde_json::to_vec_pretty(entry).map_err(|e| QuarantineError::Corrupt {
            path: json.clone(),
            reason: e.to_string(),
        })?;
        let tmp = self.dir.join("tmp").join(format!("{}.json", entry.id));
        write_synced(&tmp, &meta)?;
        fs::rename(&tmp, &json).map_err(io(&json))?;
        sync_dir(&self.dir)
    }

    /// Every entry, oldest first; an unreadable one is reported with its id, not skipped.
    pub fn list(&self) -> Result<Vec<Result<Entry, QuarantineError>>, QuarantineError> {
        if let Some(pg) = &self.pg {
            return pg.list();
        }
        let mut out = vec![];
        for de in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let de = de.map_err(io(&self.dir))?;
            let name = de.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if valid_id(id) {
                out.push(read_entry(&de.path(), id));
            }
        }
        out.sort_by_key(|e| match e {
            Ok(e) => (e.time, e.id.clone()),
            Err(_) => (0, String::new()),
        });
        Ok(out)
    }

    /// Delete entries quarantined before `cutoff`.
    pub fn purge(&self, cutoff: SystemTime) -> Result<Removed, QuarantineError> {
        if let Some(pg) = &self.pg {
            return pg.purge(cutoff);
        }
        let cutoff = unix_secs(cutoff);
        let mut removed = Removed::default();
        for e in self.list()?.into_iter().flatten() {
            if e.time < cutoff && self.delete(&e.id).is_ok() {
                removed.entries += 1;
                removed.bytes += e.size;
            }
        }
        Ok(removed)
    }

    /// Retention: drop entries older than `max_age`, then the oldest until the messages
    /// take at most `max_bytes`; and sweep leftovers of interrupted writes.
    pub fn enforce(
        &self,
        now: SystemTime,
        max_age: Option<Duration>,
        max_bytes: Option<u64>,
    ) -> Result<Removed, QuarantineError> {
        if let Some(pg) = &self.pg {
            return pg.enforce(now, max_age, max_bytes);
        }
        self.sweep(now)?;
        let mut removed = match max_age {
            Some(age) => self.purge(now.checked_sub(age).unwrap_or(UNIX_EPOCH))?,
            None => Removed::default(),
        };
        if let Some(max) = max_bytes {
            let entries: Vec<Entry> = self.list()?.into_iter().flatten().collect();
            let mut total: u64 = entries.iter().map(|e| e.size).sum();
            for e in entries {
                if total <= max {
                    break;
                }
                if self.delete(&e.id).is_ok() {
                    total = total.saturating_sub(e.size);
                    removed.entries += 1;
                    removed.bytes += e.size;
                }
            }
        }
        Ok(removed)
    }

    /// Remove what an interrupted write left: files in `tmp/` and messages without
    /// metadata, once they are an hour old (a write in progress is younger).
    fn sweep(&self, now: SystemTime) -> Result<(), QuarantineError> {
        let old = |p: &Path| {
            fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d >= SWEEP_AGE))
        };
        let tmp = self.dir.join("tmp");
        if let Ok(rd) = fs::read_dir(&tmp) {
            for de in rd.flatten() {
                if old(&de.path()) {
                    let _ = fs::remove_file(de.path());
                }
            }
        }
        for de in fs::read_dir(&self.dir).map_err(io(&self.dir))?.flatten() {
            let p = de.path();
            if p.extension().is_some_and(|x| x == "eml")
                && !p.with_extension("json").exists()
                && old(&p)
            {
                let _ = fs::remove_file(&p);
            }
        }
        Ok(())
    }
}

fn read_entry(json: &Path, id: &str) -> Result<Entry, QuarantineError> {
    let bytes = match fs::read(json) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(QuarantineError::Unknown(id.to_string()));
        }
        Err(e) => return Err(io(json)(e)),
    };
    let entry: Entry = serde_json::from_slice(&bytes).map_err(|e| QuarantineError::Corrupt {
        path: json.to_path_buf(),
        reason: e.to_string(),
    })?;
    if entry.id != id {
        return Err(QuarantineError::Corrupt {
            path: json.to_path_buf(),
            reason: format!("it names id `{}`", entry.id),
        });
    }
    Ok(entry)
}

fn write_synced(path: &Path, data: &[u8]) -> Result<(), QuarantineError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = OpenOptions::new()
        .mode(0o600)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io(path))?;
    f.write_all(data).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<(), QuarantineError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn entry(id: &str, time: u64, size: u64) -> Entry {
        Entry {
            id: id.into(),
            time,
            policy: "default".into(),
            reason: "spam".into(),
            finding: None,
            score: Some(1000.0),
            hits: vec![EntryHit {
                name: "GTUBE".into(),
                score: 1000.0,
            }],
            client_ip: Some("192.0.2.1".into()),
            helo: "mx.example".into(),
            queue_id: None,
            sender: "a@example.org".into(),
            recipients: vec!["b@example.net".into()],
            body: None,
            smtputf8: false,
            dsn: Dsn::default(),
            message_id: Some("<1@example.org>".into()),
            subject: Some("hi".into()),
            size,
            released: vec![],
        }
    }

    #[test]
    fn put_get_list_delete() {
        let d = tempfile::tempdir().unwrap();
        let q = Quarantine::create(d.path()).unwrap();
        q.put(&entry("AAAAAAAAAAAA", 10, 5), b"hello").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &str| fs::metadata(d.path().join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("AAAAAAAAAAAA.eml"), 0o600);
        assert_eq!(mode("AAAAAAAAAAAA.json"), 0o600);
        assert_eq!(mode("tmp"), 0o700);
        q.put(&entry("BBBBBBBBBBBB", 5, 5), b"world").unwrap();
        assert_eq!(q.get("AAAAAAAAAAAA").unwrap().time, 10);
        assert_eq!(q.message("BBBBBBBBBBBB").unwrap(), b"world");
        let ids: Vec<String> = q
            .list()
            .unwrap()
            .into_iter()
            .map(|e| e.unwrap().id)
            .collect();
        assert_eq!(ids, ["BBBBBBBBBBBB", "AAAAAAAAAAAA"]);
        q.delete("AAAAAAAAAAAA").unwrap();
        assert!(matches!(
            q.get("AAAAAAAAAAAA"),
            Err(QuarantineError::Unknown(_))
        ));
        assert!(matches!(
            q.delete("../../etc/pw"),
            Err(QuarantineError::BadId(_))
        ));
        assert!(fs::read_dir(d.path().join("tmp")).unwrap().next().is_none());
    }

    #[test]
    fn half_written_entries_are_never_listed_and_get_swept() {
        let d = tempfile::tempdir().unwrap();
        let q = Quarantine::create(d.path()).unwrap();
        // A crash after the message was renamed but before the metadata was.
        fs::write(d.path().join("CCCCCCCCCCCC.eml"), b"x").unwrap();
        fs::write(d.path().join("tmp/CCCCCCCCCCCC.json"), b"{").unwrap();
        assert!(q.list().unwrap().is_empty());
        let later = SystemTime::now() + Duration::from_secs(7200);
        q.enforce(later, None, None).unwrap();
        assert!(!d.path().join("CCCCCCCCCCCC.eml").exists());
        assert!(!d.path().join("tmp/CCCCCCCCCCCC.json").exists());
    }

    #[test]
    fn corrupt_metadata_is_reported_not_skipped() {
        let d = tempfile::tempdir().unwrap();
        let q = Quarantine::create(d.path()).unwrap();
        fs::write(d.path().join("DDDDDDDDDDDD.json"), b"{not json").unwrap();
        let all = q.list().unwrap();
        assert_eq!(all.len(), 1);
        let e = all[0].as_ref().unwrap_err().to_string();
        assert!(e.contains("DDDDDDDDDDDD.json: corrupt entry"), "{e}");
    }

    #[test]
    fn retention_by_age_then_size() {
        let d = tempfile::tempdir().unwrap();
        let q = Quarantine::create(d.path()).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(100_000);
        for (i, id) in [
            "EEEEEEEEEEE1",
            "EEEEEEEEEEE2",
            "EEEEEEEEEEE3",
            "EEEEEEEEEEE4",
        ]
        .iter()
        .enumerate()
        {
            q.put(&entry(id, 10_000 + i as u64 * 30_000, 100), b"m")
                .unwrap();
        }
        // Ages: 90 000, 60 000, 30 000, 0 seconds.
        let r = q
            .enforce(now, Some(Duration::from_secs(70_000)), Some(150))
            .unwrap();
        assert_eq!(r.entries, 3, "one by age, two by size");
        let left: Vec<String> = q
            .list()
            .unwrap()
            .into_iter()
            .map(|e| e.unwrap().id)
            .collect();
        assert_eq!(left, ["EEEEEEEEEEE4"]);
    }
}
