//! The contract between a session and the filter it calls after DATA (the pipeline, or a
//! test's filter): what the filter is asked ([`MessageFilter`]), what it answers (a
//! [`Disposition`]: the recipients in [`Part`]s, each with its [`Delivery`]), and what the
//! session reports back for the log line ([`MessageRecord`] with the [`Outcome`]). The
//! session knows nothing of checks, verdicts or policies; the filter knows nothing of the
//! SMTP conversation.

use crate::smtp::envelope::Envelope;
use crate::smtp::reply::Reply;
use crate::smtp::rewrite::Rewrite;
use std::time::Duration;

/// What happened to (a part of) a message after DATA, for the log line.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The next hop accepted it.
    Relayed {
        /// The queue id from the next hop's reply, when it said one.
        queued_as: Option<String>,
    },
    /// Accepted and deliberately not delivered (policy).
    Discarded,
    /// Refused permanently, by the next hop (its reply is mirrored) or by policy.
    Rejected(Reply),
    /// Not delivered; the client was told to try again.
    TempFailed(String),
}

/// How the session delivers one part of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Relay the message, rewritten.
    Relay(Rewrite),
    /// Accept and do not deliver.
    Discard,
    /// Refuse with this reply (in SMTP mode only when every recipient is refused; see
    /// the session's delivery).
    Reject(Reply),
}

/// One group of recipients delivered one way.
#[derive(Debug, Clone)]
pub struct Part {
    /// Indices into the envelope's recipients.
    pub recipients: Vec<usize>,
    /// How it is delivered.
    pub delivery: Delivery,
    /// Keep a durable quarantine copy before answering.
    pub quarantine: bool,
}

/// The filter's answer for one message: the parts and the filter's report on them (for
/// the log lines and the quarantine). Parts with different deliveries are carried out as
/// separate next-hop transactions.
#[derive(Debug, Clone)]
pub struct Disposition<R> {
    /// What the filter found and decided, kept for the log lines and the quarantine.
    pub report: R,
    /// The recipient groups; every accepted recipient is in exactly one.
    pub parts: Vec<Part>,
}

/// The filter a session calls after DATA. Implemented by the pipeline.
pub trait MessageFilter: Send + Sync + 'static {
    /// What the filter found and decided, kept for the log line and the quarantine.
    type Report: Send + Sync + 'static;
    /// What the network-bound step before the scan found (sender authentication).
    type Prepared: Send + Sync + 'static;

    /// Network-bound work before the scan (DNS for SPF, DKIM, DMARC, ARC). Runs on the
    /// session's task and must bound its own time.
    fn prepare(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> impl std::future::Future<Output = Self::Prepared> + Send;

    /// Scan one message and say what to do with it. Runs on a blocking thread.
    fn scan(
        &self,
        envelope: &Envelope,
        message: &[u8],
        mail_id: &str,
        prepared: &Self::Prepared,
    ) -> Result<Disposition<Self::Report>, String>;

    /// True when scanning a message of `size` bytes is cheap enough (tens of microseconds)
    /// to run right on the session's task; handing it to a blocking thread costs more than
    /// the scan then. Heavy work (big messages, models) goes to the blocking pool.
    fn scan_inline(&self, size: usize, prepared: &Self::Prepared) -> bool {
        let _ = (size, prepared);
        false
    }

    /// Store a durable copy of the message for `recipients` (indices into the envelope)
    /// and return its quarantine id. Runs on a blocking thread before the client hears
    /// anything; an error makes the whole message 451.
    fn quarantine(
        &self,
        envelope: &Envelope,
        message: &[u8],
        mail_id: &str,
        report: &Self::Report,
        recipients: &[usize],
    ) -> Result<String, String> {
        let _ = (envelope, message, mail_id, report, recipients);
        Err("no quarantine is configured".into())
    }

    /// Remove a quarantine copy again: the client was told to retry, and will bring the
    /// message back. Runs on a blocking thread.
    fn unquarantine(&self, id: &str) {
        let _ = id;
    }

    /// Log the final outcome of one part of a message (one line per part).
    fn log(&self, record: &MessageRecord<'_, Self::Report>);
}

/// Everything the log line of one part of a message needs.
#[derive(Debug)]
pub struct MessageRecord<'a, R> {
    /// The envelope as accepted.
    pub envelope: &'a Envelope,
    /// The id filterd gave the message.
    pub mail_id: &'a str,
    /// The message size in bytes, as received.
    pub size: usize,
    /// The filter's report, when the scan finished.
    pub report: Option<&'a R>,
    /// Which part of the disposition this line is about (none when the scan failed).
    pub part: Option<usize>,
    /// The recipients of this part (indices into the envelope).
    pub recipients: &'a [usize],
    /// What happened downstream.
    pub outcome: &'a Outcome,
    /// The quarantine id, when a copy was kept.
    pub quarantine: Option<&'a str>,
    /// From end of DATA to the reply.
    pub elapsed: Duration,
}
