//! The Bayes token store: per-token spam/ham message counts with the time each was last
//! learned, the message counts, and the "seen" set of learned messages (which message was
//! learned as what, so relearning moves it and a repeat is skipped, as sa-learn does).
//!
//! # On-disk format (version 1)
//!
//! One file, `bayes.db`, in the state directory; all integers little-endian:
//!
//! ```text
//! magic "FDBAYES\0" | format version u32 | tokenizer version u32
//! nspam u64 | nham u64 | last expire u64 | last expire reduction u64 | last expire delta u64
//! ntokens u64 | nseen u64
//! ntokens x (token hash u64, spam u32, ham u32, atime u32)   sorted by hash
//! nseen x (message id u128, class u8: 1 spam, 2 ham)          sorted by id
//! FNV-1a 64 checksum of everything above
//! ```
//!
//! Writers (`filtertrain`) hold an exclusive lock on `bayes.lock`, write `bayes.db.tmp-<pid>`,
//! fsync it, rename it over `bayes.db` and fsync the directory, so a reader (a running filterd)
//! always sees a whole old or a whole new store and a crash never leaves half a store.

mod backup;

use crate::message::tokenize::{TOKENIZER_VERSION, Tokens};
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The store file's name in the state directory.
pub(crate) const STORE_FILE: &str = "bayes.db";
/// The writers' lock file's name in the state directory.
pub(crate) const LOCK_FILE: &str = "bayes.lock";
/// The on-disk format this build reads and writes.
pub(crate) const FORMAT_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"FDBAYES\0";
const HEADER_LEN: usize = 8 + 4 + 4 + 8 * 7;
const TOKEN_LEN: usize = 8 + 4 * 3;
const SEEN_LEN: usize = 16 + 1;

/// Spam or ham.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Unsolicited.
    Spam,
    /// Wanted.
    Ham,
}

/// Counts of one token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// Spam messages that had it.
    pub spam: u32,
    /// Ham messages that had it.
    pub ham: u32,
    /// When it was last learned (Unix seconds).
    pub atime: u32,
}

/// What learning one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// New message, learned.
    New,
    /// Already learned as the other class: forgotten there and learned here.
    Moved,
    /// Already learned as this class: nothing done.
    Skipped,
}

/// Why a store cannot be used. Every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a whole, valid store.
    #[error("{path}: corrupt Bayes store: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Written by another version of filterd.
    #[error(
        "{path}: Bayes store format version {found} is not supported (this filterd reads version {FORMAT_VERSION}); restore it from a `filtertrain --backup` or relearn"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
    },
    /// Learned with another tokenizer: its tokens would not match ours.
    #[error(
        "{path}: Bayes store was learned with tokenizer version {found}, this filterd uses {TOKENIZER_VERSION}; relearn the corpus (`filtertrain --clear`, then learn)"
    )]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
    },
    /// A backup file that cannot be restored.
    #[error("backup line {line}: {reason}")]
    Backup {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The whole store in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Store {
    /// Spam messages learned.
    pub nspam: u64,
    /// Ham messages learned.
    pub nham: u64,
    /// When expiry last ran (Unix seconds).
    pub last_expire: u64,
    /// Tokens removed by the last expiry.
    pub last_expire_reduction: u64,
    /// Age of the newest token the last expiry removed (seconds before it ran).
    pub last_expire_delta: u64,
    tokens: HashMap<u64, TokenCounts>,
    seen: HashMap<u128, Class>,
}

fn fnv(data: &[u8]) -> u64 {
    crate::fnv::fnv1a(&[data])
}

impl Store {
    /// The store file in `dir`.
    pub(crate) fn path_in(dir: &Path) -> PathBuf {
        dir.join(STORE_FILE)
    }

    /// Load `dir/bayes.db`; an empty store when it does not exist yet.
    pub fn load_or_empty(dir: &Path) -> Result<Store, StoreError> {
        let path = Self::path_in(dir);
        match std::fs::read(&path) {
            Ok(bytes) => Self::decode(&path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Store::default()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// Parse the bytes of a store file.
    pub fn decode(path: &Path, b: &[u8]) -> Result<Store, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        if b.len() < 8 || &b[..8] != MAGIC {
            return Err(corrupt("not a filterd Bayes store (bad magic)"));
        }
        if b.len() < HEADER_LEN + 8 {
            return Err(corrupt("truncated header"));
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return Err(StoreError::Version {
                path: path.to_path_buf(),
                found: version,
            });
        }
        let tokenizer = u32_at(12);
        let mut s = Store {
            nspam: u64_at(16),
            nham: u64_at(24),
            last_expire: u64_at(32),
            last_expire_reduction: u64_at(40),
            last_expire_delta: u64_at(48),
            ..Store::default()
        };
        let ntokens = usize::try_from(u64_at(56)).map_err(|_| corrupt("token count"))?;
        let nseen = usize::try_from(u64_at(64)).map_err(|_| corrupt("seen count"))?;
        let expect = ntokens
            .checked_mul(TOKEN_LEN)
            .and_then(|t| nseen.checked_mul(SEEN_LEN).and_then(|s| t.checked_add(s)))
            .and_then(|x| x.checked_add(HEADER_LEN + 8))
            .ok_or_else(|| corrupt("impossible counts"))?;
        if b.len() != expect {
            return Err(corrupt(&format!(
                "size {} bytes, expected {expect} (truncated or damaged)",
                b.len()
            )));
        }
        let body_end = b.len() - 8;
        if fnv(&b[..body_end]) != u64_at(body_end) {
            return Err(corrupt("checksum mismatch"));
        }
        if tokenizer != TOKENIZER_VERSION {
            return Err(StoreError::Tokenizer {
                path: path.to_path_buf(),
                found: tokenizer,
            });
        }
        s.tokens.reserve(ntokens);
        let mut i = HEADER_LEN;
        for _ in 0..ntokens {
            s.tokens.insert(
                u64_at(i),
                TokenCounts {
                    spam: u32_at(i + 8),
                    ham: u32_at(i + 12),
                    atime: u32_at(i + 16),
                },
            );
            i += TOKEN_LEN;
        }
        for _ in 0..nseen {
            let id = (u128::from(u64_at(i)) << 64) | u128::from(u64_at(i + 8));
            let class = match b[i + 16] {
                1 => Class::Spam,
                2 => Class::Ham,
                _ => return Err(corrupt("bad class in seen set")),
            };
            s.seen.insert(id, class);
            i += SEEN_LEN;
        }
        Ok(s)
    }

    /// The bytes of the store file.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            HEADER_LEN + self.tokens.len() * TOKEN_LEN + self.seen.len() * SEEN_LEN + 8,
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&TOKENIZER_VERSION.to_le_bytes());
        for v in [
            self.nspam,
            self.nham,
            self.last_expire,
            self.last_expire_reduction,
            self.last_expire_delta,
            self.tokens.len() as u64,
            self.seen.len() as u64,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let mut tokens: Vec<_> = self.tokens.iter().collect();
        tokens.sort_unstable_by_key(|(h, _)| **h);
        for (h, c) in tokens {
            out.extend_from_slice(&h.to_le_bytes());
            out.extend_from_slice(&c.spam.to_le_bytes());
            out.extend_from_slice(&c.ham.to_le_bytes());
            out.extend_from_slice(&c.atime.to_le_bytes());
        }
        let mut seen: Vec<_> = self.seen.iter().collect();
        seen.sort_unstable_by_key(|(id, _)| **id);
        for (id, class) in seen {
            out.extend_from_slice(&((*id >> 64) as u64).to_le_bytes());
            out.extend_from_slice(&(*id as u64).to_le_bytes());
            out.push(match class {
                Class::Spam => 1,
                Class::Ham => 2,
            });
        }
        let sum = fnv(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Write atomically into `dir`: temp file, fsync, rename, fsync the directory.
    pub fn save(&self, dir: &Path) -> Result<(), StoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let tmp = dir.join(format!("{STORE_FILE}.tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&self.encode())?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(&tmp)(e));
        }
        let path = Self::path_in(dir);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))
    }

    /// Take the writers' lock on `dir` (blocks while another writer holds it).
    pub fn lock(dir: &Path) -> Result<std::fs::File, StoreError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        f.lock().map_err(io)?;
        Ok(f)
    }

    /// Counts of one token.
    pub fn get(&self, token: u64) -> Option<TokenCounts> {
        self.tokens.get(&token).copied()
    }

    /// Every token with its counts (any order).
    pub(crate) fn tokens_iter(&self) -> impl Iterator<Item = (u64, TokenCounts)> + '_ {
        self.tokens.iter().map(|(t, c)| (*t, *c))
    }

    /// Every learned message with its class (any order).
    pub(crate) fn seen_iter(&self) -> impl Iterator<Item = (u128, Class)> + '_ {
        self.seen.iter().map(|(id, c)| (*id, *c))
    }

    /// Set one token's counts (a store read from elsewhere: Redis).
    pub(crate) fn insert_token(&mut self, token: u64, counts: TokenCounts) {
        self.tokens.insert(token, counts);
    }

    /// Record one learned message (a store read from elsewhere: Redis).
    pub(crate) fn insert_seen(&mut self, id: u128, class: Class) {
        self.seen.insert(id, class);
    }

    /// Distinct tokens stored.
    pub fn ntokens(&self) -> usize {
        self.tokens.len()
    }

    /// Learn one message's tokens as `class` at time `now`.
    pub fn learn(&mut self, id: u128, tokens: &Tokens, class: Class, now: u64) -> Learned {
        let outcome = match self.seen.get(&id) {
            Some(c) if *c == class => return Learned::Skipped,
            Some(_) => {
                self.forget(id, tokens);
                Learned::Moved
            }
            None => Learned::New,
        };
        let atime = now.min(u64::from(u32::MAX)) as u32;
        for &t in &tokens.0 {
            let c = self.tokens.entry(t).or_default();
            match class {
                Class::Spam => c.spam = c.spam.saturating_add(1),
                Class::Ham => c.ham = c.ham.saturating_add(1),
            }
            c.atime = c.atime.max(atime);
        }
        match class {
            Class::Spam => self.nspam += 1,
            Class::Ham => self.nham += 1,
        }
        self.seen.insert(id, class);
        outcome
    }

    /// Unlearn a message; false when it was never learned.
    pub fn forget(&mut self, id: u128, tokens: &Tokens) -> bool {
        let Some(class) = self.seen.remove(&id) else {
            return false;
        };
        for t in &tokens.0 {
            if let Some(c) = self.tokens.get_mut(t) {
                match class {
                    Class::Spam => c.spam = c.spam.saturating_sub(1),
                    Class::Ham => c.ham = c.ham.saturating_sub(1),
                }
                if c.spam == 0 && c.ham == 0 {
                    self.tokens.remove(t);
                }
            }
        }
        match class {
            Class::Spam => self.nspam = self.nspam.saturating_sub(1),
            Class::Ham => self.nham = self.nham.saturating_sub(1),
        }
        true
    }

    /// Keep the store bounded: above `max_tokens`, remove the least recently learned and,
    /// among equally old ones, the rarest tokens, down to 75% of the maximum (as SpamAssassin
    /// does). With `force`, expire down to that target even below the maximum. Returns how many
    /// tokens went.
    pub fn expire(&mut self, max_tokens: usize, now: u64, force: bool) -> usize {
        let target = max_tokens * 3 / 4;
        if self.tokens.len() <= max_tokens && !(force && self.tokens.len() > target) {
            return 0;
        }
        let mut order: Vec<(u32, u64, u64)> = self
            .tokens
            .iter()
            .map(|(h, c)| (c.atime, u64::from(c.spam) + u64::from(c.ham), *h))
            .collect();
        order.sort_unstable();
        let remove = self.tokens.len() - target;
        let mut newest_removed = 0u32;
        for (atime, _, h) in order.into_iter().take(remove) {
            self.tokens.remove(&h);
            newest_removed = newest_removed.max(atime);
        }
        self.last_expire = now;
        self.last_expire_reduction = remove as u64;
        self.last_expire_delta = now.saturating_sub(u64::from(newest_removed));
        remove
    }

    /// Oldest and newest atime of the stored tokens.
    pub(crate) fn atime_range(&self) -> (u32, u32) {
        let mut it = self.tokens.values().map(|c| c.atime);
        let first = it.next().unwrap_or(0);
        it.fold((first, first), |(lo, hi), a| (lo.min(a), hi.max(a)))
    }
}

/// The identity of a message for the seen set: its Message-ID, Date, From and Subject and
/// the start of its body, so the same message learned twice (even with new Received lines)
/// is recognised.
pub fn message_id(raw: &[u8]) -> u128 {
    message_id_with(raw, &crate::message::HeaderBlock::parse(raw))
}

/// [`message_id`] with the header block already split.
pub(crate) fn message_id_with(raw: &[u8], headers: &crate::message::HeaderBlock) -> u128 {
    let mut key = Vec::with_capacity(2048);
    for name in ["Message-ID", "Date", "From", "Subject"] {
        if let Some(v) = headers.first(raw, name) {
            key.extend_from_slice(v.trim_ascii());
        }
        key.push(0);
    }
    let body = &raw[headers.end.min(raw.len())..];
    key.extend_from_slice(&body[..body.len().min(2048)]);
    let a = fnv(&key);
    key.push(0x5a);
    let b = fnv(&key).rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
    (u128::from(a) << 64) | u128::from(b)
}

/// The default state directory: systemd's `$STATE_DIRECTORY` (the unit's
/// `StateDirectory=filterd`, i.e. `/var/lib/filterd`), else `/var/lib/filterd` for root,
/// else `$XDG_STATE_HOME/filterd` or `~/.local/state/filterd`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // Several directories are separated by ':'; the first is ours.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        return PathBuf::from(first);
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if root {
        return PathBuf::from("/var/lib/filterd");
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("filterd");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/state/filterd"),
        None => PathBuf::from("/var/lib/filterd"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(v: &[u64]) -> Tokens {
        Tokens(v.to_vec())
    }

    #[test]
    fn learn_move_skip_forget() {
        let mut s = Store::default();
        assert_eq!(s.learn(1, &toks(&[10, 11]), Class::Spam, 100), Learned::New);
        assert_eq!(
            s.learn(1, &toks(&[10, 11]), Class::Spam, 100),
            Learned::Skipped
        );
        assert_eq!(
            s.learn(1, &toks(&[10, 11]), Class::Ham, 200),
            Learned::Moved
        );
        assert_eq!((s.nspam, s.nham), (0, 1));
        assert_eq!(
            s.get(10),
            Some(TokenCounts {
                spam: 0,
                ham: 1,
                atime: 200
            })
        );
        assert!(s.forget(1, &toks(&[10, 11])));
        assert!(!s.forget(1, &toks(&[10, 11])));
        assert_eq!(s.ntokens(), 0);
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let mut s = Store::default();
        for i in 0..50u64 {
            s.learn(
                u128::from(i),
                &toks(&[i, i + 1000]),
                if i % 2 == 0 { Class::Spam } else { Class::Ham },
                1000 + i,
            );
        }
        let bytes = s.encode();
        let p = Path::new("/x/bayes.db");
        assert_eq!(Store::decode(p, &bytes).unwrap(), s);
        assert_eq!(Store::restore(&s.backup()).unwrap(), s);
        let e = Store::decode(p, &bytes[..bytes.len() - 3])
            .unwrap_err()
            .to_string();
        assert!(e.contains("/x/bayes.db") && e.contains("truncated"), "{e}");
        let mut flipped = bytes.clone();
        flipped[HEADER_LEN + 5] ^= 1;
        assert!(
            Store::decode(p, &flipped)
                .unwrap_err()
                .to_string()
                .contains("checksum")
        );
        let mut v2 = bytes.clone();
        v2[8] = 2;
        assert!(matches!(
            Store::decode(p, &v2),
            Err(StoreError::Version { found: 2, .. })
        ));
        assert!(
            Store::decode(p, b"hello")
                .unwrap_err()
                .to_string()
                .contains("bad magic")
        );
    }

    #[test]
    fn expiry_removes_oldest_then_rarest() {
        let mut s = Store::default();
        for i in 0..100u64 {
            s.learn(u128::from(i), &toks(&[i]), Class::Spam, 1000 + i);
        }
        assert_eq!(s.expire(80, 5000, false), 40);
        assert_eq!(s.ntokens(), 60);
        assert!(s.get(0).is_none() && s.get(99).is_some());
        assert_eq!(s.expire(80, 5000, false), 0);
        assert_eq!(s.last_expire_reduction, 40);
    }

    #[test]
    fn dump_magic_matches_sa_learn() {
        let s = Store {
            nspam: 673,
            ..Store::default()
        };
        let dump = s.dump_magic();
        assert!(
            dump.contains("0.000          0        673          0  non-token data: nspam\n"),
            "{dump}"
        );
        assert!(dump.starts_with(
            "0.000          0          1          0  non-token data: bayes db version\n"
        ));
        assert_eq!(dump.lines().count(), 10);
    }

    #[test]
    fn message_ids_ignore_trace_headers() {
        let a = b"Received: from a\r\nMessage-ID: <1@x>\r\nSubject: s\r\n\r\nbody\r\n";
        let b = b"Received: from b\r\nReceived: from c\r\nMessage-ID: <1@x>\r\nSubject: s\r\n\r\nbody\r\n";
        assert_eq!(message_id(a), message_id(b));
        assert_ne!(
            message_id(a),
            message_id(b"Message-ID: <2@x>\r\nSubject: s\r\n\r\nbody\r\n")
        );
    }
}
