//! Viruses and banned content, amavisd-new's other half: the attachment walk ([`walk`]:
//! MIME leaves, names, types by content ([`magic`]), zip archives within limits), the
//! banned rules ([`banned`], amavis' semantics and defaults, per policy bank), and clamd
//! ([`clamd`], the message streamed with INSTREAM, failover, under the scan budget).
//! The pipeline asks [`Content`] for a virus verdict before the scan (network work, like
//! sender authentication) and for the walk during it; the decide step holds what they find
//! (`Hold::Virus`, `Hold::Banned`).

pub mod banned;
pub mod clamd;
pub mod magic;
pub mod walk;

use crate::message::HeaderBlock;
use clamd::{Clamd, Scanned};
use tokio::time::Instant;
use walk::{Limits, Walked};

/// What to do when no clamd answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnClamdError {
    /// 451: Postfix keeps the message and retries (amavisd-new's behaviour).
    Tempfail,
    /// Deliver it, with `X-Amavis-Alert: UNCHECKED` and the failure in the log.
    Pass,
}

/// `[content]` and `[clamd]`, built.
#[derive(Debug, Clone, Default)]
pub struct Content {
    /// Limits of the walk.
    pub limits: Limits,
    /// Walk at all (some policy has banned rules).
    pub walk: bool,
    /// clamd, when configured.
    pub clamd: Option<Clamd>,
    /// When clamd fails.
    pub on_error: Option<OnClamdError>,
}

impl Content {
    /// The virus verdict on `msg` within clamd's timeout: none when clamd is off or the
    /// message cannot carry an attachment (a plain text or HTML message).
    pub async fn virus_scan(&self, msg: &[u8]) -> Option<Scanned> {
        let clamd = self.clamd.as_ref()?;
        if !walk::may_have_attachments(&HeaderBlock::parse(msg), msg) {
            return None;
        }
        Some(clamd.scan(msg, Instant::now() + clamd.timeout).await)
    }

    /// The walk of the whole message, when some policy has banned rules and the message
    /// may have attachments; else nothing.
    pub fn walk(&self, msg: &[u8], headers: &HeaderBlock) -> Walked {
        if self.walk && walk::may_have_attachments(headers, msg) {
            walk::walk(msg, &self.limits)
        } else {
            Walked::default()
        }
    }

    /// The reason to answer 451 for `scanned`: clamd failed and the policy is to tempfail.
    pub fn tempfail(&self, scanned: Option<&Scanned>) -> Option<String> {
        match (scanned, self.on_error) {
            (Some(Scanned::Failed(why)), Some(OnClamdError::Tempfail) | None) => {
                Some(format!("virus scanner unavailable: {why}"))
            }
            _ => None,
        }
    }
}

impl Content {
    /// `X-Amavis-Alert:` for mail passed unscanned because clamd failed (`on_error = pass`).
    pub fn unchecked_alert(&self, scanned: Option<&Scanned>) -> Option<String> {
        match scanned {
            Some(Scanned::Failed(_)) => Some("UNCHECKED, virus scanner unavailable".into()),
            _ => None,
        }
    }
}

/// The virus name in `scanned`, if infected.
pub fn virus_name(scanned: Option<&Scanned>) -> Option<&str> {
    match scanned {
        Some(Scanned::Infected(name)) => Some(name.as_str()),
        _ => None,
    }
}
