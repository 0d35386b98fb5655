//! One release at a time: `filterq release` holds a claim on the entry while it delivers,
//! so two releases of the same message, on one host or (with the database) on two, cannot
//! both send it. The claim is a lock the system drops with its holder (a `flock` on the
//! message file; a row lock in a PostgreSQL transaction), so a killed `filterq` leaves
//! nothing stale behind; a second release finds the claim taken and says so at once.

use super::{Entry, Quarantine, QuarantineError, io};
use std::fs::File;

impl Quarantine {
    /// Run `f` on entry `id`, read fresh under the claim; when `f` succeeds, the entry it
    /// leaves (e.g. with a release recorded) is written back before the claim ends.
    /// [`QuarantineError::Busy`] when another release holds the claim.
    pub fn with_claim<T, E: From<QuarantineError>>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Entry) -> Result<T, E>,
    ) -> Result<T, E> {
        if let Some(pg) = self.db(id)? {
            return pg.with_claim(id, f);
        }
        let (eml, _) = self.paths(id)?;
        let file = match File::open(&eml) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(QuarantineError::Unknown(id.to_string()).into());
            }
            Err(e) => return Err(io(&eml)(e).into()),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(QuarantineError::Busy(id.to_string()).into());
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&eml)(e).into()),
        }
        let mut entry = self.get(id)?;
        let done = f(&mut entry)?;
        self.update(&entry)?;
        drop(file);
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        Entry {
            id: id.into(),
            time: 1,
            policy: "default".into(),
            reason: "spam".into(),
            finding: None,
            score: None,
            hits: vec![],
            client_ip: None,
            helo: String::new(),
            queue_id: None,
            sender: "a@example.org".into(),
            recipients: vec!["b@example.net".into()],
            body: None,
            smtputf8: false,
            dsn: Default::default(),
            message_id: None,
            subject: None,
            size: 3,
            released: vec![],
        }
    }

    #[test]
    fn a_second_claim_on_the_same_entry_is_refused_while_the_first_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::create(dir.path()).unwrap();
        q.put(&entry("AAAAAAAAAAAA"), b"abc").unwrap();
        q.put(&entry("BBBBBBBBBBBB"), b"abc").unwrap();
        // Another process' view of the same directory.
        let other = Quarantine::open(dir.path()).unwrap();
        let inner = q
            .with_claim("AAAAAAAAAAAA", |e| {
                e.reason = "released".into();
                let busy = other.with_claim("AAAAAAAAAAAA", |_| Ok::<_, QuarantineError>(()));
                // Another entry is not held by this claim.
                let free = other.with_claim("BBBBBBBBBBBB", |_| Ok::<_, QuarantineError>(()));
                Ok::<_, QuarantineError>((busy, free))
            })
            .unwrap();
        assert!(
            matches!(inner.0, Err(QuarantineError::Busy(ref id)) if id == "AAAAAAAAAAAA"),
            "{:?}",
            inner.0
        );
        assert!(inner.1.is_ok(), "{:?}", inner.1);
        // Written back under the claim, and the claim is gone with it.
        assert_eq!(other.get("AAAAAAAAAAAA").unwrap().reason, "released");
        other
            .with_claim("AAAAAAAAAAAA", |_| Ok::<_, QuarantineError>(()))
            .unwrap();
        // A failing `f` writes nothing back.
        let failed = q.with_claim("AAAAAAAAAAAA", |e| {
            e.reason = "changed".into();
            Err::<(), _>(QuarantineError::Unknown("x".into()))
        });
        assert!(failed.is_err());
        assert_eq!(q.get("AAAAAAAAAAAA").unwrap().reason, "released");
        assert!(matches!(
            q.with_claim("CCCCCCCCCCCC", |_| Ok::<_, QuarantineError>(())),
            Err(QuarantineError::Unknown(_))
        ));
    }
}
