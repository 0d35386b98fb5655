//! Autolearned messages waiting to be written to the Bayes store (the file store every 30 s,
//! Redis every few seconds), bounded: past [`MAX_PENDING`] a message is not queued and its
//! `autolearn=` says `unavailable`.

use crate::message::tokenize::Tokens;
use crate::model::bayes_store::Class;
use std::sync::Mutex;

/// Autolearned messages kept in memory at most before a write (more are not queued).
pub const MAX_PENDING: usize = 10_000;

/// One queued message: its id (as `bayes_store::message_id_with`), tokens and class.
pub type Queued = (u128, Tokens, Class);

/// The queue.
#[derive(Debug, Default)]
pub struct LearnQueue(Mutex<Vec<Queued>>);

impl LearnQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a message; false when the queue is full.
    pub fn push(&self, id: u128, tokens: Tokens, class: Class) -> bool {
        let mut q = self.lock();
        if q.len() >= MAX_PENDING {
            return false;
        }
        q.push((id, tokens, class));
        true
    }

    /// Everything queued, in order; the queue is empty afterwards.
    pub fn take(&self) -> Vec<Queued> {
        std::mem::take(&mut *self.lock())
    }

    /// A batch whose write failed goes back in front of what came since, as far as the
    /// bound allows (the newest are dropped first).
    pub fn put_back(&self, mut batch: Vec<Queued>) {
        let mut q = self.lock();
        batch.append(&mut q);
        batch.truncate(MAX_PENDING);
        *q = batch;
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when none are waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_a_failed_batch_goes_back_in_front() {
        let q = LearnQueue::default();
        assert!(q.push(1, Tokens(vec![1]), Class::Spam));
        let batch = q.take();
        assert!(q.is_empty());
        assert!(q.push(2, Tokens(vec![2]), Class::Ham));
        q.put_back(batch);
        let ids: Vec<u128> = q.take().iter().map(|m| m.0).collect();
        assert_eq!(ids, [1, 2]);
        for i in 0..MAX_PENDING as u128 {
            assert!(q.push(i, Tokens::default(), Class::Ham));
        }
        assert!(!q.push(0, Tokens::default(), Class::Ham));
        q.put_back(vec![(7, Tokens::default(), Class::Spam)]);
        assert_eq!(q.len(), MAX_PENDING);
        assert_eq!(q.take()[0].0, 7);
    }
}
