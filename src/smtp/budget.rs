//! The budget of message bytes all sessions may hold at once, so many big messages arriving
//! together cannot take the host's memory: a session reserves a message's declared size
//! (SIZE=) at DATA, or grows its reservation as content arrives; past the budget DATA gets
//! `452 4.3.1` (or the content `451 4.3.1`) and Postfix retries later.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reservations are counted in KiB.
const UNIT: u64 = 1024;

/// The shared budget.
#[derive(Debug, Clone)]
pub struct Budget {
    sem: Arc<Semaphore>,
}

/// Bytes one message holds of the budget; given back on drop.
#[derive(Debug)]
pub struct Held {
    permit: OwnedSemaphorePermit,
    sem: Arc<Semaphore>,
}

impl Budget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> Self {
        let units = (bytes / UNIT).min(Semaphore::MAX_PERMITS as u64) as usize;
        Budget {
            sem: Arc::new(Semaphore::new(units)),
        }
    }

    /// Reserve `bytes`, if the budget has them now.
    pub fn try_hold(&self, bytes: u64) -> Option<Held> {
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).ok()?;
        let permit = self.sem.clone().try_acquire_many_owned(units).ok()?;
        Some(Held {
            permit,
            sem: self.sem.clone(),
        })
    }

    /// Bytes free now.
    pub fn available(&self) -> u64 {
        self.sem.available_permits() as u64 * UNIT
    }
}

impl Held {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.permit.num_permits() as u64 * UNIT
    }

    /// Hold at least `bytes`, if the budget has the difference now.
    pub fn grow_to(&mut self, bytes: u64) -> bool {
        let have = self.bytes();
        if bytes <= have {
            return true;
        }
        let Ok(more) = u32::try_from((bytes - have).div_ceil(UNIT)) else {
            return false;
        };
        match self.sem.clone().try_acquire_many_owned(more) {
            Ok(p) => {
                self.permit.merge(p);
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_within_the_budget_and_gives_back_on_drop() {
        let b = Budget::new(100 * 1024 * 1024);
        let held: Vec<Held> = (0..8).filter_map(|_| b.try_hold(12_000_000)).collect();
        assert_eq!(held.len(), 8);
        assert!(b.try_hold(12_000_000).is_none(), "the ninth does not fit");
        drop(held);
        let mut h = b.try_hold(1).expect("all given back");
        assert!(h.grow_to(90 * 1024 * 1024));
        assert!(!h.grow_to(101 * 1024 * 1024));
        assert!(h.bytes() >= 90 * 1024 * 1024);
    }
}
