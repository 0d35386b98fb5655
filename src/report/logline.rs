//! The one info line per message, in the order of amavisd-new's `Passed CLEAN` line so
//! existing log tools keep matching `Passed|Blocked <CATEGORY>`, `Hits:` and `queued_as:`.

use super::Report;
use crate::metrics::{METRICS, MessageLabels};
use crate::policy::decision::{Decision, Hold};
use crate::smtp::envelope::XforwardAttr;
use crate::smtp::filter::{MessageRecord, Outcome};
use crate::verdict::format_score;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set when filterd logs to the journal natively: each message line is then emitted with
/// its fields (target `filterd::journal`, for the journal layer only).
pub static JOURNAL_FIELDS: AtomicBool = AtomicBool::new(false);

/// Cleared when nothing but the journal takes the plain line (target `filterd::message`,
/// for stderr and syslog).
pub static PLAIN_LINE: AtomicBool = AtomicBool::new(true);

/// What the line says of a part: (verb, its metrics labels: direction, category, action).
fn kinds(r: &MessageRecord<'_, Report>) -> (&'static str, MessageLabels) {
    let part: Option<&Decision> = r.report.zip(r.part).and_then(|(j, i)| j.decision(i));
    let tagged = part.is_some_and(|p| p.verdict.is_spam());
    let direction = if r.report.is_some_and(|j| j.originating) {
        "Outbound"
    } else {
        "Inbound"
    };
    let (verb, action) = match r.outcome {
        Outcome::Relayed { .. } if tagged => ("Passed", "RelayedTagged"),
        Outcome::Relayed { .. } => ("Passed", "Relayed"),
        Outcome::Discarded => ("Blocked", "Discarded"),
        Outcome::Rejected(_) => ("Blocked", "Rejected"),
        Outcome::TempFailed(_) => ("Deferred", "TempFailed"),
    };
    let labels = MessageLabels {
        direction,
        category: part.map_or("UNCHECKED", Decision::category),
        action,
    };
    (verb, labels)
}

/// Render the line of one part (without any logger prefix); `verb` and `labels` are its
/// [`kinds`].
fn render(r: &MessageRecord<'_, Report>, verb: &str, labels: MessageLabels) -> String {
    let env = r.envelope;
    let part: Option<&Decision> = r.report.zip(r.part).and_then(|(j, i)| j.decision(i));
    let MessageLabels {
        direction,
        category,
        action,
    } = labels;
    let quarantined = if r.quarantine.is_some() {
        ",Quarantined"
    } else {
        ""
    };
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "{verb} {category}{} {{{action}{direction}{quarantined}}}, [{}]:{}",
        part.and_then(Decision::detail)
            .map_or(String::new(), |d| format!(" ({d})")),
        env.peer.ip(),
        env.peer.port()
    );
    if let Some(ip) = env.xforward.addr() {
        let _ = write!(s, " [{ip}]");
    }
    let rcpts: Vec<String> = r
        .recipients
        .iter()
        .filter_map(|&i| env.recipients.get(i))
        .map(|r| format!("<{}>", r.address))
        .collect();
    let _ = write!(s, " <{}> -> {}", env.sender, rcpts.join(","));
    if let Some(q) = r.quarantine {
        let _ = write!(s, ", quarantine: {q}");
    }
    if let Some(p) = part
        && (p.policy != "default" || r.report.is_some_and(|j| j.decisions.len() > 1))
    {
        let _ = write!(s, ", policy: {}", p.policy);
    }
    if let Some(Hold::RateLimit { key }) = part.and_then(|p| p.hold.as_ref()) {
        let _ = write!(s, ", ratelimit: {key}");
    }
    if let Some(id) = env.xforward.get(XforwardAttr::Ident) {
        let _ = write!(s, ", Queue-ID: {id}");
    }
    if let Some(mid) = part.and(r.report).and_then(|j| j.message_id.as_deref()) {
        let _ = write!(s, ", Message-ID: {mid}");
    }
    let hits = part.map_or("-".to_string(), |p| format_score(p.verdict.score));
    let _ = write!(
        s,
        ", mail_id: {}, Hits: {hits}, size: {}",
        r.mail_id, r.size
    );
    match r.outcome {
        Outcome::Relayed { queued_as: Some(q) } => {
            let _ = write!(s, ", queued_as: {q}");
        }
        Outcome::Relayed { queued_as: None } | Outcome::Discarded => {}
        Outcome::Rejected(reply) => {
            let _ = write!(s, ", reply: {}", reply.one_line());
        }
        Outcome::TempFailed(why) => {
            let _ = write!(s, ", reason: {why}");
        }
    }
    let _ = write!(s, ", {} ms", r.elapsed.as_millis());
    s
}

/// Emit the line through tracing: info for delivered mail, warn otherwise.
pub fn log(r: &MessageRecord<'_, Report>) {
    let (verb, labels) = kinds(r);
    let line = render(r, verb, labels);
    let part = r.report.zip(r.part).and_then(|(j, i)| j.decision(i));
    let hits = part.map_or(&[][..], |p| &p.verdict.hits[..]);
    METRICS.message(labels, hits, r.elapsed);
    let delivered = matches!(r.outcome, Outcome::Relayed { .. } | Outcome::Discarded);
    if JOURNAL_FIELDS.load(Ordering::Relaxed) {
        journal(r, &line, labels, delivered);
    }
    if PLAIN_LINE.load(Ordering::Relaxed) {
        if delivered {
            tracing::info!(target: "filterd::message", "{line}")
        } else {
            tracing::warn!(target: "filterd::message", "{line}")
        }
    }
    if let Some(p) = r.report.zip(r.part).and_then(|(j, i)| j.decision(i)) {
        for (name, score) in &p.verdict.hits {
            tracing::debug!(mail_id = r.mail_id, hit = name, score, "hit");
        }
    }
}

/// The message line with its parts as journal fields (`FILTERD_MAIL_ID`, `FILTERD_CATEGORY`,
/// `FILTERD_ACTION`, `FILTERD_SCORE`, ...), so `journalctl FILTERD_CATEGORY=SPAM` finds them.
fn journal(r: &MessageRecord<'_, Report>, line: &str, l: MessageLabels, delivered: bool) {
    let env = r.envelope;
    let part: Option<&Decision> = r.report.zip(r.part).and_then(|(j, i)| j.decision(i));
    let score = part.map(|p| format_score(p.verdict.score));
    let hits = part.map(|p| {
        p.verdict
            .hits
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(",")
    });
    let recipients: Vec<&str> = r
        .recipients
        .iter()
        .filter_map(|&i| env.recipients.get(i))
        .map(|r| r.address.as_str())
        .collect();
    let client = env.xforward.addr().unwrap_or(env.peer.ip()).to_string();
    let queued_as = match r.outcome {
        Outcome::Relayed { queued_as } => queued_as.as_deref(),
        _ => None,
    };
    let message_id = part.and(r.report).and_then(|j| j.message_id.as_deref());
    macro_rules! emit {
        ($level:expr) => {
            tracing::event!(
                target: "filterd::journal",
                $level,
                mail_id = r.mail_id,
                direction = l.direction,
                category = l.category,
                action = l.action,
                score,
                hits,
                size = r.size,
                client_ip = client,
                sender = env.sender.as_str(),
                recipients = recipients.join(","),
                queue_id = env.xforward.get(XforwardAttr::Ident),
                message_id,
                queued_as,
                quarantine = r.quarantine,
                elapsed_ms = r.elapsed.as_millis() as u64,
                "{line}"
            )
        };
    }
    if delivered {
        emit!(tracing::Level::INFO)
    } else {
        emit!(tracing::Level::WARN)
    }
}
