//! The Bayes store as a running filterd sees it: loaded once at start (a corrupt store is
//! refused then, with its path), swapped for a new snapshot when `filtertrain` replaces the
//! file (checked every second by the server, and at once on SIGHUP). Checks read a snapshot
//! and never wait for a reload.

use crate::message::tokenize::Tokens;
use crate::model::bayes::{BayesParams, BayesScore, classify};
use crate::model::bayes_store::{Store, StoreError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// What identifies one version of the store file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        inode: m.ino(),
    })
}

/// A live, reloadable Bayes store.
#[derive(Debug)]
pub struct BayesLive {
    dir: PathBuf,
    params: BayesParams,
    store: RwLock<Arc<Store>>,
    stamp: Mutex<Option<Stamp>>,
    /// Autolearned messages not yet written to the store.
    pending: crate::model::learn_queue::LearnQueue,
}

impl BayesLive {
    /// Load the store in `dir` (an empty one when there is none yet).
    pub fn open(dir: &Path, params: BayesParams) -> Result<Self, StoreError> {
        let path = Store::path_in(dir);
        let before = stamp(&path);
        let store = Store::load_or_empty(dir)?;
        Ok(BayesLive {
            dir: dir.to_path_buf(),
            params,
            store: RwLock::new(Arc::new(store)),
            stamp: Mutex::new(before),
            pending: Default::default(),
        })
    }

    /// A live store over an in-memory store (evaluation, tests); never reloads.
    pub fn from_store(store: Store, params: BayesParams) -> Self {
        BayesLive {
            dir: PathBuf::new(),
            params,
            store: RwLock::new(Arc::new(store)),
            stamp: Mutex::new(None),
            pending: Default::default(),
        }
    }

    /// The current snapshot.
    pub(crate) fn snapshot(&self) -> Arc<Store> {
        self.store
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// True when enough was learned for Bayes to vote (worth tokenizing for).
    pub fn ready(&self) -> bool {
        crate::model::bayes::ready(&self.snapshot(), &self.params)
    }

    /// Classify with the current snapshot; `None` until enough was learned.
    pub fn classify(&self, tokens: &Tokens) -> Option<BayesScore> {
        classify(&self.snapshot(), tokens, &self.params)
    }

    /// The autolearn queue.
    pub(crate) fn queue(&self) -> &crate::model::learn_queue::LearnQueue {
        &self.pending
    }

    /// Messages waiting to be written.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Write queued autolearned messages into the store on disk, under the writers' lock
    /// (so it never races `filtertrain`); returns how many were new. The snapshot follows
    /// with the next reload.
    pub(crate) fn flush_learned(&self, max_tokens: usize) -> Result<usize, StoreError> {
        let batch = self.pending.take();
        if batch.is_empty() {
            return Ok(0);
        }
        // A write that fails keeps the batch for the next one.
        self.write_learned(&batch, max_tokens)
            .inspect_err(|_| self.pending.put_back(batch))
    }

    fn write_learned(
        &self,
        batch: &[crate::model::learn_queue::Queued],
        max_tokens: usize,
    ) -> Result<usize, StoreError> {
        let _lock = Store::lock(&self.dir)?;
        let mut store = Store::load_or_empty(&self.dir)?;
        let now = crate::clock::now_unix();
        let mut learned = 0;
        for (id, tokens, class) in batch {
            if store.learn(*id, tokens, *class, now) != crate::model::bayes_store::Learned::Skipped
            {
                learned += 1;
            }
        }
        store.expire(max_tokens, now, false);
        store.save(&self.dir)?;
        Ok(learned)
    }

    /// Reload when the file changed since the last look. Returns true when a new snapshot
    /// was installed; a damaged new file leaves the old snapshot in place and is reported
    /// once (the next report comes when the file changes again).
    pub(crate) fn reload_if_changed(&self) -> Result<bool, StoreError> {
        let path = Store::path_in(&self.dir);
        let now = stamp(&path);
        {
            let mut last = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
            if *last == now {
                return Ok(false);
            }
            *last = now;
        }
        let store = Store::load_or_empty(&self.dir)?;
        *self.store.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(store);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_store_is_reported_once_per_change_and_the_old_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::default();
        store.nspam = 7;
        store.save(dir.path()).unwrap();
        let live = BayesLive::open(dir.path(), BayesParams::default()).unwrap();
        assert!(!live.reload_if_changed().unwrap(), "nothing changed");
        let path = Store::path_in(dir.path());
        std::fs::write(&path, b"not a store at all").unwrap();
        assert!(live.reload_if_changed().is_err(), "the damage is reported");
        for _ in 0..3 {
            assert!(!live.reload_if_changed().unwrap(), "and only once");
        }
        assert_eq!(live.snapshot().nspam, 7, "the old snapshot stays");
        store.nspam = 9;
        store.save(dir.path()).unwrap();
        assert!(live.reload_if_changed().unwrap());
        assert_eq!(live.snapshot().nspam, 9);
    }
}
