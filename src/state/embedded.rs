//! The embedded state store: counters and greylist triplets in memory, saved as one
//! snapshot file under the state directory (written beside, fsynced, renamed over: a crash
//! leaves the old snapshot or the new one, never a torn one). Bounded: counters live one
//! window; triplets unseen for `max_age` are dropped and at most `max_entries` are kept
//! (the least recently seen go first). A crash loses at most the changes since the last
//! save (every few seconds): a triplet greylisted again, a window counted from lower.

use super::{Count, Counters, Greylist, Triplet};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// The first line of a snapshot.
const MAGIC: &str = "filterd-state 1";

/// Why a snapshot cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// It cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// It is not a snapshot this version wrote.
    #[error(
        "{path}: line {line}: {reason} (not a filterd state snapshot, or damaged; move it away to start empty)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Counters and greylist in memory, with their snapshot file.
#[derive(Debug, Default)]
pub struct EmbeddedState {
    path: Option<PathBuf>,
    max_entries: usize,
    max_age: u64,
    counters: Mutex<HashMap<String, (u64, u64, String)>>,
    triplets: Mutex<HashMap<String, Triplet>>,
    clients: Mutex<HashMap<String, (u64, u64)>>,
    dirty: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EmbeddedState {
    /// A store kept in memory only (tests, and when no state directory is wanted).
    pub fn in_memory(max_entries: usize, max_age_secs: u64) -> Self {
        EmbeddedState {
            max_entries: max_entries.max(1),
            max_age: max_age_secs,
            ..Default::default()
        }
    }

    /// Open the snapshot at `path` (a missing file is an empty store); a damaged one is
    /// refused with its path, line and reason.
    pub fn open(path: &Path, max_entries: usize, max_age_secs: u64) -> Result<Self, StateError> {
        let mut s = Self::in_memory(max_entries, max_age_secs);
        s.path = Some(path.to_path_buf());
        match std::fs::read_to_string(path) {
            Ok(text) => s.load(path, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StateError::Io {
                    path: path.into(),
                    source,
                });
            }
        }
        Ok(s)
    }

    fn load(&mut self, path: &Path, text: &str) -> Result<(), StateError> {
        let corrupt = |line: usize, reason: &str| StateError::Corrupt {
            path: path.into(),
            line,
            reason: reason.into(),
        };
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(corrupt(1, &format!("the first line is not `{MAGIC}`")));
        }
        let (c, t, a) = (
            self.counters.get_mut().unwrap_or_else(|e| e.into_inner()),
            self.triplets.get_mut().unwrap_or_else(|e| e.into_inner()),
            self.clients.get_mut().unwrap_or_else(|e| e.into_inner()),
        );
        for (i, line) in lines.enumerate() {
            let f: Vec<&str> = line.split('\t').collect();
            let num = |k: usize| f.get(k).and_then(|v| v.parse::<u64>().ok());
            let ok = match (f.first().copied(), f.len()) {
                (Some("c"), 5) => num(2)
                    .zip(num(3))
                    .map(|(until, n)| c.insert(unescape(f[1]), (until, n, unescape(f[4]))))
                    .is_some(),
                (Some("t"), 5) => num(2)
                    .zip(num(3))
                    .map(|(first, last)| {
                        let passed = f[4] == "1";
                        t.insert(
                            unescape(f[1]),
                            Triplet {
                                first,
                                last,
                                passed,
                            },
                        )
                    })
                    .is_some(),
                (Some("a"), 4) => num(2)
                    .zip(num(3))
                    .map(|r| a.insert(unescape(f[1]), r))
                    .is_some(),
                _ => false,
            };
            if !ok {
                return Err(corrupt(i + 2, "not a counter, triplet or client record"));
            }
        }
        Ok(())
    }

    /// Triplets and clients kept.
    pub fn len(&self) -> usize {
        lock(&self.triplets).len() + lock(&self.clients).len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write the snapshot if anything changed since the last one (expired records are
    /// left out). No-op for an in-memory store.
    pub fn save(&self, now: u64) -> Result<(), StateError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let text = self.snapshot(now);
        write_atomically(path, text.as_bytes()).inspect_err(|_| {
            self.dirty.store(true, Ordering::Release);
        })
    }

    fn snapshot(&self, now: u64) -> String {
        let mut out = format!("{MAGIC}\n");
        for (k, (until, n, first)) in lock(&self.counters).iter() {
            if *until > now {
                out.push_str(&format!(
                    "c\t{}\t{until}\t{n}\t{}\n",
                    escape(k),
                    escape(first)
                ));
            }
        }
        let fresh = |last: u64| now.saturating_sub(last) <= self.max_age;
        for (k, t) in lock(&self.triplets).iter().filter(|(_, t)| fresh(t.last)) {
            let passed = u8::from(t.passed);
            out.push_str(&format!(
                "t\t{}\t{}\t{}\t{passed}\n",
                escape(k),
                t.first,
                t.last
            ));
        }
        for (k, (n, last)) in lock(&self.clients).iter().filter(|(_, c)| fresh(c.1)) {
            out.push_str(&format!("a\t{}\t{n}\t{last}\n", escape(k)));
        }
        out
    }

    /// Keep at most `max_entries` triplets: drop the expired, then the least recently seen.
    fn bound(&self, map: &mut HashMap<String, Triplet>, now: u64) {
        if map.len() <= self.max_entries {
            return;
        }
        map.retain(|_, t| now.saturating_sub(t.last) <= self.max_age);
        if map.len() > self.max_entries {
            let mut lasts: Vec<u64> = map.values().map(|t| t.last).collect();
            let cut = (map.len() - self.max_entries * 9 / 10).min(lasts.len() - 1);
            lasts.select_nth_unstable(cut);
            let limit = lasts[cut];
            map.retain(|_, t| t.last > limit);
        }
    }
}

impl Counters for EmbeddedState {
    fn hit(&self, key: &str, window_secs: u64, now: u64, sender: &str) -> Count {
        let mut map = lock(&self.counters);
        if map.len() > 100_000 {
            map.retain(|_, (until, _, _)| *until > now);
        }
        let slot = map
            .entry(key.to_string())
            .or_insert_with(|| (now + window_secs, 0, sender.to_string()));
        if now >= slot.0 {
            *slot = (now + window_secs, 0, sender.to_string());
        }
        slot.1 += 1;
        self.dirty.store(true, Ordering::Release);
        Count {
            count: slot.1,
            first_sender: slot.2.clone(),
        }
    }

    fn peek(&self, key: &str, _window_secs: u64, now: u64) -> u64 {
        lock(&self.counters)
            .get(key)
            .filter(|(until, _, _)| now < *until)
            .map_or(0, |(_, n, _)| *n)
    }
}

impl Greylist for EmbeddedState {
    fn get(&self, triplet: &str) -> Option<Triplet> {
        lock(&self.triplets).get(triplet).copied()
    }

    fn put(&self, triplet: &str, record: Triplet) {
        let mut map = lock(&self.triplets);
        map.insert(triplet.to_string(), record);
        self.bound(&mut map, record.last);
        self.dirty.store(true, Ordering::Release);
    }

    fn passes(&self, client: &str) -> u64 {
        lock(&self.clients).get(client).map_or(0, |(n, _)| *n)
    }

    fn add_pass(&self, client: &str, now: u64) -> u64 {
        let mut map = lock(&self.clients);
        if map.len() > self.max_entries {
            map.retain(|_, (_, last)| now.saturating_sub(*last) <= self.max_age);
        }
        let slot = map.entry(client.to_string()).or_insert((0, now));
        *slot = (slot.0 + 1, now);
        self.dirty.store(true, Ordering::Release);
        slot.0
    }
}

/// `bytes` to `path` through a temp file beside it: written, fsynced, renamed, the
/// directory fsynced.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

/// Keys and senders with `%`, tab or line breaks written as `%XX`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' | '\t' | '\n' | '\r' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = s
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_start_at_the_first_message_and_remember_its_sender() {
        let s = EmbeddedState::in_memory(10, 100);
        assert_eq!(s.hit("k", 60, 1000, "a@x").count, 1);
        let c = s.hit("k", 60, 1059, "b@x");
        assert_eq!((c.count, c.first_sender.as_str()), (2, "a@x"));
        assert_eq!(s.peek("k", 60, 1059), 2);
        assert_eq!(s.peek("k", 60, 1060), 0, "the window ended");
        let c = s.hit("k", 60, 1060, "c@x");
        assert_eq!((c.count, c.first_sender.as_str()), (1, "c@x"));
    }

    #[test]
    fn a_snapshot_round_trips_and_leaves_out_what_expired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.state");
        let s = EmbeddedState::open(&path, 10, 100).unwrap();
        s.hit("relay\tloopback%", 600, 1000, "odd\nsender");
        s.hit("gone", 10, 1000, "");
        s.put(
            "1.2.3/a@x/b@y",
            Triplet {
                first: 990,
                last: 995,
                passed: true,
            },
        );
        s.put(
            "old",
            Triplet {
                first: 1,
                last: 2,
                passed: false,
            },
        );
        s.add_pass("1.2.3", 995);
        s.save(1050).unwrap();
        let back = EmbeddedState::open(&path, 10, 100).unwrap();
        let c = back.hit("relay\tloopback%", 600, 1100, "x");
        assert_eq!((c.count, c.first_sender.as_str()), (2, "odd\nsender"));
        assert_eq!(back.peek("gone", 10, 1100), 0);
        assert_eq!(back.get("1.2.3/a@x/b@y").map(|t| t.passed), Some(true));
        assert_eq!(back.get("old"), None, "unseen longer than max_age");
        assert_eq!(back.passes("1.2.3"), 1);
    }

    #[test]
    fn a_damaged_snapshot_is_refused_with_path_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.state");
        std::fs::write(&path, format!("{MAGIC}\nt\tk\t1\t2\t0\nt\tk\tx\n")).unwrap();
        let e = EmbeddedState::open(&path, 10, 100).unwrap_err().to_string();
        assert!(e.contains("policy.state: line 3"), "{e}");
        std::fs::write(&path, "garbage").unwrap();
        let e = EmbeddedState::open(&path, 10, 100).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn triplets_are_bounded_least_recently_seen_first() {
        let s = EmbeddedState::in_memory(10, 1_000_000);
        for i in 0..11u64 {
            s.put(
                &format!("t{i}"),
                Triplet {
                    first: i,
                    last: i,
                    passed: false,
                },
            );
        }
        assert!(lock(&s.triplets).len() <= 10);
        assert!(s.get("t10").is_some(), "the newest stays");
        assert!(s.get("t0").is_none(), "the oldest goes");
    }
}
