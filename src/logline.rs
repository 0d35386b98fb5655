//! The one info line per message, in the order of amavisd-new's `Passed CLEAN` line so
//! existing log tools keep matching `Passed|Blocked <CATEGORY>`, `Hits:` and `queued_as:`.

use crate::smtp::envelope::XforwardAttr;
use crate::smtp::session::{MessageRecord, Outcome};
use crate::verdict::{Verdict, format_score};
use std::fmt::Write as _;

/// Render the line (without any logger prefix).
pub fn render(r: &MessageRecord<'_, Verdict>) -> String {
    let env = r.envelope;
    let category = r.verdict.map_or("UNCHECKED", |v| v.category().as_str());
    let tagged = r.verdict.is_some_and(|v| v.is_spam());
    let (verb, actions) = match r.outcome {
        Outcome::Relayed { .. } if tagged => ("Passed", "RelayedTaggedInbound"),
        Outcome::Relayed { .. } => ("Passed", "RelayedInbound"),
        Outcome::Rejected(_) => ("Blocked", "RejectedInbound"),
        Outcome::TempFailed(_) => ("Deferred", "TempFailedInbound"),
    };
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "{verb} {category} {{{actions}}}, [{}]:{}",
        env.peer.ip(),
        env.peer.port()
    );
    if let Some(ip) = env.xforward.addr() {
        let _ = write!(s, " [{ip}]");
    }
    let rcpts: Vec<String> = env
        .recipients
        .iter()
        .map(|r| format!("<{}>", r.address))
        .collect();
    let _ = write!(s, " <{}> -> {}", env.sender, rcpts.join(","));
    if let Some(id) = env.xforward.get(XforwardAttr::Ident) {
        let _ = write!(s, ", Queue-ID: {id}");
    }
    if let Some(mid) = r.verdict.and_then(|v| v.message_id.as_deref()) {
        let _ = write!(s, ", Message-ID: {mid}");
    }
    let hits = r.verdict.map_or("-".to_string(), |v| format_score(v.score));
    let _ = write!(
        s,
        ", mail_id: {}, Hits: {hits}, size: {}",
        r.mail_id, r.size
    );
    match r.outcome {
        Outcome::Relayed { queued_as: Some(q) } => {
            let _ = write!(s, ", queued_as: {q}");
        }
        Outcome::Relayed { queued_as: None } => {}
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
pub fn log(r: &MessageRecord<'_, Verdict>) {
    let line = render(r);
    match r.outcome {
        Outcome::Relayed { .. } => tracing::info!(target: "filterd::message", "{line}"),
        _ => tracing::warn!(target: "filterd::message", "{line}"),
    }
    if let Some(v) = r.verdict {
        for (name, score) in &v.hits {
            tracing::debug!(mail_id = r.mail_id, hit = name, score, "hit");
        }
    }
}
