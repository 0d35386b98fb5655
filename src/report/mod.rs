//! What the pipeline reports about one message, beside the parts it hands the session: one
//! [`Decision`] per part (policy, verdict, destiny, hold reason) and the facts the log line
//! and the quarantine entry need (Subject, Message-ID, origin). The amavis-style log line
//! ([`logline`]) renders a report with what the session says happened downstream.

pub mod logline;

use crate::auth::origin::Origin;
use crate::policy::decision::Decision;
use crate::smtp::filter::{Delivery, Disposition, Part};
use std::net::IpAddr;

/// The pipeline's report on one message (the `Report` of its disposition).
#[derive(Debug, Clone)]
pub struct Report {
    /// One decision per part of the disposition, in the same order.
    pub decisions: Vec<Decision>,
    /// The Subject header (decoded), for the quarantine.
    pub subject: Option<String>,
    /// The Message-ID header, for the log line and the quarantine.
    pub message_id: Option<String>,
    /// Outbound mail (logged `...Outbound`).
    pub originating: bool,
    /// The original client's IP (XFORWARD or the trusted Received header), when known.
    pub client: Option<IpAddr>,
    /// The original client's HELO name, when known.
    pub helo: String,
}

impl Report {
    /// The decision of part `i`.
    pub fn decision(&self, i: usize) -> Option<&Decision> {
        self.decisions.get(i)
    }
}

/// The parts of a disposition and their decisions, kept in step while they are built:
/// recipients whose delivery, quarantine copy and hold reason equal an earlier part's join
/// it; otherwise they become a part of their own.
#[derive(Debug, Default)]
pub(crate) struct Parts {
    parts: Vec<Part>,
    decisions: Vec<Decision>,
}

impl Parts {
    /// Add the recipients of one decision, delivered one way.
    pub fn add(&mut self, recipients: Vec<usize>, delivery: Delivery, decision: Decision) {
        let reason = |d: &Decision| d.hold.as_ref().map(|h| h.reason());
        let same = (0..self.parts.len()).find(|&i| {
            self.parts[i].quarantine == decision.quarantine
                && reason(&self.decisions[i]) == reason(&decision)
                && self.parts[i].delivery == delivery
        });
        match same {
            Some(i) => self.parts[i].recipients.extend(recipients),
            None => {
                self.parts.push(Part {
                    recipients,
                    delivery,
                    quarantine: decision.quarantine,
                });
                self.decisions.push(decision);
            }
        }
    }

    /// The disposition: the parts (recipients in envelope order) and the report on them,
    /// with the facts about the message the log and the quarantine need.
    pub fn disposition(
        mut self,
        subject: Option<String>,
        message_id: Option<String>,
        originating: bool,
        origin: &Origin,
    ) -> Disposition<Report> {
        for part in &mut self.parts {
            part.recipients.sort_unstable();
        }
        let report = Report {
            decisions: self.decisions,
            subject,
            message_id,
            originating,
            client: origin.ip,
            helo: origin.helo.clone(),
        };
        Disposition {
            report,
            parts: self.parts,
        }
    }
}
