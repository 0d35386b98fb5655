//! SPF at RCPT with postfix-policyd-spf's semantics: the HELO name first (a `fail` there
//! refuses), then MAIL FROM (postmaster@HELO for `<>`); `fail` refuses with
//! `550 5.7.23` and the domain's explanation, `softfail` and `temperror` do what the
//! config says, everything else gets a `Received-SPF:` header prepended (once per message).

use crate::auth::Verifier;
use mail_auth::{SpfOutput, SpfResult};
use std::net::IpAddr;

/// What a result leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpfAct {
    /// Refuse the recipient (550 5.7.23).
    Reject,
    /// Defer it (451 4.7.24 for temperror, DEFER_IF_PERMIT for softfail).
    Defer,
    /// Only prepend the Received-SPF header.
    Prepend,
}

impl SpfAct {
    /// From the config word.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reject" => Some(SpfAct::Reject),
            "defer" => Some(SpfAct::Defer),
            "prepend" => Some(SpfAct::Prepend),
            _ => None,
        }
    }
}

/// `[policy_service.spf]`, built.
#[derive(Debug, Clone)]
pub struct SpfPolicy {
    /// Check the HELO name too.
    pub helo: bool,
    /// On fail.
    pub fail: SpfAct,
    /// On softfail.
    pub softfail: SpfAct,
    /// On temperror.
    pub temperror: SpfAct,
}

/// The outcome for one client, HELO and sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfOutcome {
    /// A refusal or deferral (the whole action text), if the result calls for one.
    pub refusal: Option<String>,
    /// The Received-SPF header (name included) for mail that goes on.
    pub header: String,
    /// The result word for the log (`pass`, `fail`, ...).
    pub result: &'static str,
}

fn word(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

impl SpfPolicy {
    /// Evaluate (through the verifier's resolver, cache and budget) and decide.
    pub async fn evaluate(
        &self,
        verifier: &Verifier,
        ip: IpAddr,
        helo: &str,
        sender: &str,
        receiver: &str,
    ) -> SpfOutcome {
        let (mail_from, ehlo) = verifier.spf_at_rcpt(ip, helo, sender).await;
        let helo_failed = ehlo
            .as_ref()
            .filter(|h| self.helo && h.result() == SpfResult::Fail);
        let (out, identity) = match helo_failed {
            Some(h) => (h, "helo"),
            None if sender.is_empty() => (ehlo.as_ref().unwrap_or(&mail_from), "helo"),
            None => (&mail_from, "mailfrom"),
        };
        let result = out.result();
        let id = if identity == "helo" { helo } else { sender };
        let refusal = match (result, self.act(result)) {
            (SpfResult::Fail | SpfResult::SoftFail, SpfAct::Reject) => Some(format!(
                "550 5.7.23 Message rejected due to: SPF {} - not authorized. {}",
                word(result),
                explanation(out, identity, id, ip, receiver)
            )),
            (SpfResult::SoftFail, SpfAct::Defer) => Some(format!(
                "DEFER_IF_PERMIT 4.7.24 SPF softfail for {id}: try again later"
            )),
            (SpfResult::TempError, SpfAct::Defer) => Some(format!(
                "451 4.7.24 SPF temporary error for {id}: try again later"
            )),
            _ => None,
        };
        let mut name = word(result).to_string();
        name[..1].make_ascii_uppercase();
        let header = format!(
            "Received-SPF: {name} ({identity}) identity={identity}; client-ip={ip}; helo={}; envelope-from={}; receiver={receiver}",
            if helo.is_empty() { "<UNKNOWN>" } else { helo },
            if sender.is_empty() { "<>" } else { sender },
        );
        SpfOutcome {
            refusal,
            header,
            result: word(result),
        }
    }

    fn act(&self, r: SpfResult) -> SpfAct {
        match r {
            SpfResult::Fail => self.fail,
            SpfResult::SoftFail => self.softfail,
            SpfResult::TempError => self.temperror,
            _ => SpfAct::Prepend,
        }
    }
}

/// The domain's explanation (`exp=`), else where to read why.
fn explanation(out: &SpfOutput, identity: &str, id: &str, ip: IpAddr, receiver: &str) -> String {
    match out.explanation() {
        Some(e) if !e.trim().is_empty() => e.trim().to_string(),
        _ => format!(
            "Please see https://www.open-spf.org/Why?s={identity};id={id};ip={ip};r={receiver}"
        ),
    }
}
