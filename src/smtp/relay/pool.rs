//! The pool of idle next-hop connections, shared by all sessions.

use super::{NextHop, RelayConn, RelayError};
use std::time::Duration;

/// Idle next-hop connections kept for reuse across sessions: Postfix opens a new filter
/// connection for many messages, and re-opening the next hop's connection (greeting, EHLO,
/// QUIT) for each would cost more than the relaying itself. Connections idle longer than
/// `max_idle_age` are closed with QUIT, well before Postfix's own idle timeout (300 s).
#[derive(Debug)]
pub struct RelayPool {
    hop: std::sync::Arc<NextHop>,
    label: String,
    idle: std::sync::Mutex<Vec<(RelayConn, std::time::Instant)>>,
    max_idle: usize,
    max_idle_age: Duration,
}

impl RelayPool {
    /// A pool for `hop` keeping at most `max_idle` connections for `max_idle_age`
    /// (0 disables reuse across sessions).
    pub fn new(hop: std::sync::Arc<NextHop>, max_idle: usize, max_idle_age: Duration) -> Self {
        RelayPool {
            label: hop.label(),
            hop,
            idle: std::sync::Mutex::new(Vec::new()),
            max_idle,
            max_idle_age,
        }
    }

    /// The next hop as written in replies and logs.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// A fresh connection.
    pub async fn connect(&self) -> Result<RelayConn, RelayError> {
        RelayConn::connect(self.hop.clone()).await
    }

    /// The most recently used idle connection that is young enough and quiet (nothing
    /// unread, not closed by the next hop: an idle `421 timeout` must never become the
    /// answer to the next session's MAIL). It may still turn out dead: callers retry on a
    /// fresh one.
    pub(crate) fn checkout(&self) -> Option<RelayConn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        // Oldest first: the expired ones are a prefix.
        let cut = idle
            .iter()
            .position(|(_, since)| now.duration_since(*since) <= self.max_idle_age)
            .unwrap_or(idle.len());
        let expired: Vec<RelayConn> = idle.drain(..cut).map(|(c, _)| c).collect();
        let mut found = None;
        let mut noisy = vec![];
        while let Some((mut c, _)) = idle.pop() {
            if c.is_quiet() {
                found = Some(c);
                break;
            }
            noisy.push(c);
        }
        drop(idle);
        if !noisy.is_empty() {
            tracing::debug!(
                n = noisy.len(),
                "pooled next-hop connections had unread data or were closed; discarded"
            );
        }
        for conn in expired {
            tokio::spawn(conn.quit());
        }
        found
    }

    /// Return an idle connection (between transactions) for reuse, or close it.
    pub async fn checkin(&self, conn: RelayConn) {
        if !conn.is_usable() {
            return;
        }
        let rejected = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < self.max_idle && !self.max_idle_age.is_zero() {
                idle.push((conn, std::time::Instant::now()));
                None
            } else {
                Some(conn)
            }
        };
        if let Some(conn) = rejected {
            conn.quit().await;
        }
    }

    /// Close every idle connection (shutdown).
    pub async fn close_idle(&self) {
        let all: Vec<_> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.drain(..).collect()
        };
        for (conn, _) in all {
            conn.quit().await;
        }
    }
}
