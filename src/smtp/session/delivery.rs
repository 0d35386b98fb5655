//! After DATA: scan the message (under the scan budget, panics caught), keep the quarantine
//! copies (durably, on a blocking thread, before anything else happens), carry out each
//! part (the common case, one part relayed to every recipient, sends the content on the
//! transaction opened while the envelope arrived; otherwise that transaction is reset and
//! each relayed part gets its own), then answer the client and write one log line per part.

use super::{Session, answer};
use crate::metrics::METRICS;
use crate::smtp::codec::DataError;
use crate::smtp::envelope::{Envelope, Recipient};
use crate::smtp::filter::{Delivery, Disposition, MessageFilter, MessageRecord, Outcome, Part};
use crate::smtp::relay::RelayError;
use crate::smtp::reply::Reply;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};

/// Why a message could not be scanned. Every one of them is a 451: nothing is relayed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ScanFailure {
    /// The scan took longer than `scan.budget_ms`.
    OverBudget,
    /// The scan panicked (or its thread was lost).
    Panicked,
    /// The filter said why it could not scan.
    Failed(String),
}

impl ScanFailure {
    /// The client's reply.
    fn reply(&self) -> Reply {
        match self {
            ScanFailure::OverBudget => Reply::scan_timeout(),
            ScanFailure::Panicked => Reply::scan_failed("internal error"),
            ScanFailure::Failed(e) => Reply::scan_failed(e),
        }
    }

    /// The reason in the log line.
    fn why(&self) -> String {
        match self {
            ScanFailure::OverBudget => "scan time budget exceeded".into(),
            ScanFailure::Panicked => "scan panicked".into(),
            ScanFailure::Failed(e) => e.clone(),
        }
    }
}

/// A message being delivered: what arrived, its id and when DATA ended.
struct Message {
    envelope: Envelope,
    /// The bytes as received (shared with the scan's thread without a copy).
    bytes: Arc<Vec<u8>>,
    mail_id: String,
    started: Instant,
}

impl Message {
    /// Every recipient, as part indices.
    fn all(&self) -> Vec<usize> {
        (0..self.envelope.recipients.len()).collect()
    }
}

impl<S, F> Session<S, F>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: MessageFilter,
{
    /// The end of DATA: deliver the message (or refuse what could not be received) and
    /// queue the replies (one per accepted recipient in LMTP).
    pub(super) async fn message(&mut self, message: Result<Vec<u8>, DataError>) {
        let Some(txn) = self.txn.take() else {
            return;
        };
        let n_replies = if self.cfg.lmtp {
            txn.recipients.len()
        } else {
            1
        };
        let envelope = Envelope {
            peer: self.peer,
            helo: self.helo.clone().unwrap_or_default(),
            xforward: std::mem::take(&mut self.xforward),
            sender: txn.sender,
            mail_params: txn.params,
            recipients: txn.recipients,
        };
        let replies = match message {
            Ok(bytes) => self.deliver(envelope, bytes).await,
            Err(e) => {
                self.abort_relay().await;
                vec![match e {
                    DataError::TooBig => Reply::message_too_big(),
                    DataError::LineTooLong => {
                        Reply::data_line_too_long(self.cfg.limits.max_data_line)
                    }
                    DataError::OverBudget => {
                        tracing::warn!(
                            "message content over the memory budget for messages in flight; answered 451"
                        );
                        Reply::insufficient_storage(451)
                    }
                }]
            }
        };
        for i in 0..n_replies {
            let r = replies.get(i).or(replies.last()).cloned();
            self.reply(r.unwrap_or_else(|| Reply::scan_failed("no reply")));
        }
        // The message is done with: its bytes go back to the budget.
        self.held = None;
    }

    /// Scan, keep quarantine copies, carry out each part, and return the reply for the
    /// client (one per recipient in LMTP).
    async fn deliver(&mut self, envelope: Envelope, bytes: Vec<u8>) -> Vec<Reply> {
        let m = Message {
            envelope,
            bytes: Arc::new(bytes),
            mail_id: new_mail_id(),
            started: Instant::now(),
        };
        let scan_started = Instant::now();
        let scanned = self.scan(&m).await;
        METRICS
            .scan_seconds
            .observe(scan_started.elapsed().as_secs_f64());
        let Disposition { report, mut parts } = match scanned {
            Ok(d) => d,
            Err(failure) => {
                self.abort_relay().await;
                let outcome = Outcome::TempFailed(failure.why());
                self.log_part(&m, None, None, &m.all(), &outcome, None);
                return vec![failure.reply()];
            }
        };
        answer::fit_to_mode(self.cfg.lmtp, &mut parts);
        let report = Arc::new(report);
        let mut quarantine_id = match self.keep_copies(&m, &report, &parts).await {
            Ok(q) => q,
            Err(e) => {
                tracing::error!(mail_id = m.mail_id, error = %e, "quarantine write failed; answering 451");
                self.abort_relay().await;
                let outcome = Outcome::TempFailed(format!("quarantine: {e}"));
                self.log_part(&m, Some(&report), None, &m.all(), &outcome, None);
                return vec![Reply::quarantine_failed(&e)];
            }
        };
        let results = self.carry_out(&m, &parts).await;
        let answer = answer::answer(&answer::Done {
            lmtp: self.cfg.lmtp,
            mail_id: &m.mail_id,
            recipients: m.envelope.recipients.len(),
            parts: &parts,
            results: &results,
            quarantine: quarantine_id.as_deref(),
        });
        if answer.retry {
            if answer.duplicates {
                tracing::warn!(
                    mail_id = m.mail_id,
                    "some recipients were delivered and others must be retried: 451 makes Postfix retry all, so the delivered ones get the message again"
                );
            }
            if let Some(q) = quarantine_id.take() {
                // On the blocking pool, as the write was (a database call blocks).
                let filter = self.filter.clone();
                let _ = tokio::task::spawn_blocking(move || filter.unquarantine(&q)).await;
            }
        }
        for (i, (part, (outcome, _))) in parts.iter().zip(&results).enumerate() {
            let q = quarantine_id.as_deref().filter(|_| part.quarantine);
            self.log_part(&m, Some(&report), Some(i), &part.recipients, outcome, q);
        }
        answer.replies
    }

    /// The filter's preparation (network work: sender authentication, clamd) and scan, both
    /// within the scan budget: the scan on the session's task when the filter says it is
    /// cheap, else on the blocking pool.
    async fn scan(&self, m: &Message) -> Result<Disposition<F::Report>, ScanFailure> {
        let end = tokio::time::Instant::now() + self.cfg.scan_budget;
        let prepare = self.filter.prepare(&m.envelope, &m.bytes);
        let prepared = tokio::time::timeout_at(end, prepare)
            .await
            .map_err(|_| ScanFailure::OverBudget)?;
        let prepared = Arc::new(prepared);
        let guarded = |filter: &F, env: &Envelope, msg: &[u8], id: &str, pre: &F::Prepared| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                filter.scan(env, msg, id, pre)
            }))
            .map_err(|_| ScanFailure::Panicked)?
            .map_err(ScanFailure::Failed)
        };
        if self.filter.scan_inline(m.bytes.len(), &prepared) {
            return guarded(&self.filter, &m.envelope, &m.bytes, &m.mail_id, &prepared);
        }
        let filter = self.filter.clone();
        let env = m.envelope.clone();
        let msg = m.bytes.clone();
        let id = m.mail_id.clone();
        let scan =
            tokio::task::spawn_blocking(move || guarded(&filter, &env, &msg, &id, &prepared));
        match tokio::time::timeout_at(end, scan).await {
            Err(_) => Err(ScanFailure::OverBudget),
            Ok(Err(_)) => Err(ScanFailure::Panicked),
            Ok(Ok(done)) => done,
        }
    }

    /// Quarantine copies, durable before anything else happens: one copy for every
    /// recipient some part holds. Returns its id, if a copy was kept.
    async fn keep_copies(
        &self,
        m: &Message,
        report: &Arc<F::Report>,
        parts: &[Part],
    ) -> Result<Option<String>, String> {
        let held: Vec<usize> = parts
            .iter()
            .filter(|p| p.quarantine)
            .flat_map(|p| p.recipients.iter().copied())
            .collect();
        if held.is_empty() {
            return Ok(None);
        }
        let filter = self.filter.clone();
        let (env, msg, id, report) = (
            m.envelope.clone(),
            m.bytes.clone(),
            m.mail_id.clone(),
            report.clone(),
        );
        tokio::task::spawn_blocking(move || filter.quarantine(&env, &msg, &id, &report, &held))
            .await
            .unwrap_or_else(|_| Err("quarantine write panicked".into()))
            .map(Some)
    }

    /// Carry out each part in order; returns its outcome and the reply it earned.
    async fn carry_out(&mut self, m: &Message, parts: &[Part]) -> Vec<(Outcome, Option<Reply>)> {
        let hop = self.pool.label().to_string();
        let single = answer::is_single_relay(parts);
        if !single {
            self.abort_relay().await;
        }
        let mut results: Vec<(Outcome, Option<Reply>)> = Vec::with_capacity(parts.len());
        for part in parts {
            let earlier_failed = results
                .iter()
                .any(|(o, _)| matches!(o, Outcome::TempFailed(_)));
            results.push(match &part.delivery {
                Delivery::Discard => (Outcome::Discarded, None),
                Delivery::Reject(r) => (Outcome::Rejected(r.clone()), Some(r.clone())),
                // The reply will be 451 anyway: relaying more parts would only add copies
                // that Postfix's retry delivers again.
                Delivery::Relay(_) if !self.cfg.lmtp && earlier_failed => (
                    Outcome::TempFailed("not attempted after an earlier part failed".into()),
                    None,
                ),
                Delivery::Relay(rewrite) => {
                    let data = rewrite.parts(&m.bytes);
                    let started = Instant::now();
                    let result = if single {
                        self.send_data(&data).await
                    } else {
                        self.relay_part(&m.envelope, &part.recipients, &data).await
                    };
                    METRICS
                        .next_hop_seconds
                        .observe(started.elapsed().as_secs_f64());
                    count_next_hop(result.as_ref());
                    answer::relay_outcome(&hop, result)
                }
            });
        }
        results
    }

    /// The content on the transaction opened during the envelope.
    async fn send_data(&mut self, data: &[&[u8]]) -> Result<Reply, RelayError> {
        let result = match self.relay.as_mut() {
            Some(relay) => relay.data(data).await,
            None => Err(RelayError::Protocol("connection lost".into())),
        };
        if result.is_err() || self.relay.as_ref().is_some_and(|r| !r.is_usable()) {
            self.relay = None;
        }
        result
    }

    /// A transaction of its own for one part: MAIL, the part's RCPTs, the content.
    async fn relay_part(
        &mut self,
        env: &Envelope,
        recipients: &[usize],
        data: &[&[u8]],
    ) -> Result<Reply, RelayError> {
        let rcpts: Vec<Recipient> = recipients
            .iter()
            .filter_map(|&i| env.recipients.get(i).cloned())
            .collect();
        let saved = std::mem::replace(&mut self.xforward, env.xforward.clone());
        let opened = self
            .open_transaction(&env.sender, &env.mail_params, &rcpts)
            .await;
        self.xforward = saved;
        let (mail, replies) = opened?;
        let refused = std::iter::once(&mail)
            .chain(&replies)
            .find(|r| !r.is_positive())
            .cloned();
        if let Some(r) = refused.or_else(|| {
            (replies.len() != rcpts.len())
                .then(|| Reply::new(451, None, "recipient replies missing"))
        }) {
            self.abort_relay().await;
            return Ok(r);
        }
        self.send_data(data).await
    }

    /// Reset the next hop's transaction; the connection stays for the next message unless
    /// the reset failed or it has sent as many RSETs as the next hop tolerates (then it is
    /// closed, and the next transaction opens a fresh one).
    pub(super) async fn abort_relay(&mut self) {
        let Some(relay) = &mut self.relay else {
            return;
        };
        let reset = relay.rset().await;
        if (reset.is_err() || !relay.is_usable())
            && let Some(old) = self.relay.take()
            && reset.is_ok()
        {
            tokio::spawn(old.quit());
        }
    }

    fn log_part(
        &self,
        m: &Message,
        report: Option<&F::Report>,
        part: Option<usize>,
        recipients: &[usize],
        outcome: &Outcome,
        quarantine: Option<&str>,
    ) {
        self.filter.log(&MessageRecord {
            envelope: &m.envelope,
            mail_id: &m.mail_id,
            size: m.bytes.len(),
            report,
            part,
            recipients,
            outcome,
            quarantine,
            elapsed: m.started.elapsed(),
        });
    }
}

/// A new amavis-style mail id: 12 characters of `[A-Za-z0-9+-]`, 72 unguessable bits:
/// keyed SipHash (std's `RandomState`, keys from the OS) over a secret seed from the OS RNG
/// and a counter, so an id costs no system call and none can be predicted from others.
/// The metrics of a next-hop answer (or failure).
pub(super) fn count_next_hop(result: Result<&Reply, &RelayError>) {
    match result {
        Ok(r) => {
            METRICS.next_hop_answered();
            if r.is_transient() {
                METRICS.next_hop_error("tempfail");
            } else if !r.is_positive() {
                METRICS.next_hop_error("reject");
            }
        }
        Err(e) => METRICS.next_hop_error(match e {
            RelayError::Connect(_) => "connect",
            RelayError::Timeout(_) => "timeout",
            RelayError::Io(_) => "io",
            RelayError::Protocol(_) => "protocol",
        }),
    }
}

pub(crate) fn new_mail_id() -> String {
    use std::hash::BuildHasher as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-";
    static KEYED: std::sync::LazyLock<(std::hash::RandomState, [u8; 16])> =
        std::sync::LazyLock::new(|| {
            let mut seed = [0u8; 16];
            if getrandom::fill(&mut seed).is_err() {
                // The OS RNG failing is not a reason to lose mail: the hasher's own keys
                // still make the ids unpredictable; mix the time in as well.
                seed[..8].copy_from_slice(&crate::clock::now_unix().to_le_bytes());
            }
            (std::hash::RandomState::new(), seed)
        });
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (hasher, seed) = &*KEYED;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let a = hasher.hash_one((seed, n, 0u8));
    let b = hasher.hash_one((seed, n, 1u8));
    let mut bytes = [0u8; 9];
    bytes[..8].copy_from_slice(&a.to_le_bytes());
    bytes[8] = b as u8;
    let mut id = String::with_capacity(12);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            id.push(ALPHABET[((n >> shift) & 63) as usize] as char);
        }
    }
    if id.starts_with('-') {
        // `filterq release -Xy...` would read the id as an option (amavisd-new avoids a
        // leading '-' for the same reason): a letter instead.
        id.replace_range(
            ..1,
            &char::from(ALPHABET[(b >> 8) as usize % 52]).to_string(),
        );
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_ids() {
        let a = new_mail_id();
        assert_eq!(a.len(), 12);
        assert_ne!(a, new_mail_id());
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-')
        );
        // One in 64 would start with '-' by chance; none may (filterq reads it as an option).
        assert!((0..5000).all(|_| !new_mail_id().starts_with('-')));
    }

    #[test]
    fn scan_failures_are_451_with_a_reason() {
        for (f, code, why) in [
            (ScanFailure::OverBudget, 451, "scan time budget exceeded"),
            (ScanFailure::Panicked, 451, "scan panicked"),
            (ScanFailure::Failed("store gone".into()), 451, "store gone"),
        ] {
            assert_eq!(f.reply().code, code);
            assert_eq!(f.why(), why);
        }
        assert!(
            ScanFailure::OverBudget
                .reply()
                .one_line()
                .contains("budget")
        );
    }
}
