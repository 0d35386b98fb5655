//! The decide step: what one policy does with a verdict and the signals beside it (the
//! outbound guard, DMARC). The answer is a [`Decision`]: the destiny (pass, discard,
//! reject), whether a quarantine copy is kept, and, for mail that is not delivered as
//! scored, the typed reason it is held ([`Hold`]). A new hold reason is one variant here.

use super::{Destiny, Policy};
use crate::auth::{AuthVerdict, DmarcPolicy, DmarcVerdict};
use crate::checks::Hits;
use crate::verdict::{Category, Verdict};
use std::collections::BTreeMap;

/// Why a message is held: blocked by its score, or by a signal beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// The score is at or above the kill level.
    Spam,
    /// The outbound guard: this key is over its limit.
    RateLimit {
        /// The key, e.g. `sender alice@example.com`.
        key: String,
    },
    /// The From domain fails DMARC and asks for such mail to be rejected or quarantined.
    Dmarc,
    /// The message already passed this filterd too often: a mail loop (refused, not held).
    Loop,
    /// clamd found a virus.
    Virus {
        /// The signature name, e.g. `Eicar-Signature`.
        name: String,
    },
    /// A part or archive member matched a banned rule.
    Banned {
        /// Where, amavis-style: `multipart/mixed | application/zip,.zip,invoice.zip |
        /// .exe,invoice.pdf.exe`.
        part: String,
    },
}

impl Hold {
    /// The reason as the quarantine records it (`filterq list --reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            Hold::Spam => "spam",
            Hold::RateLimit { .. } => "ratelimit",
            Hold::Dmarc => "dmarc",
            Hold::Loop => "loop",
            Hold::Virus { .. } => "virus",
            Hold::Banned { .. } => "banned",
        }
    }
}

/// What one policy decided for one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The policy that decided (`default` or a bank's name).
    pub policy: String,
    /// The verdict it decided on (the message's hits under this policy's levels).
    pub verdict: Verdict,
    /// Deliver (tagged as the levels say), discard or reject.
    pub destiny: Destiny,
    /// Keep a quarantine copy.
    pub quarantine: bool,
    /// Why the message is held; `None` when it is delivered as scored.
    pub hold: Option<Hold>,
}

impl Decision {
    /// amavisd-new's content category, as the log line writes it: `RATELIMIT` and `DMARC`
    /// for mail held by a signal, else the verdict's `CLEAN`, `SPAMMY` or `SPAM`.
    pub(crate) fn category(&self) -> &'static str {
        match self.hold {
            Some(Hold::RateLimit { .. }) => "RATELIMIT",
            Some(Hold::Dmarc) => "DMARC",
            Some(Hold::Loop) => "LOOP",
            Some(Hold::Virus { .. }) => "INFECTED",
            Some(Hold::Banned { .. }) => "BANNED",
            Some(Hold::Spam) | None => self.verdict.category().as_str(),
        }
    }

    /// What the log line writes in parentheses after the category: the virus name or the
    /// banned part.
    pub(crate) fn detail(&self) -> Option<&str> {
        match &self.hold {
            Some(Hold::Virus { name }) => Some(name),
            Some(Hold::Banned { part }) => Some(part),
            _ => None,
        }
    }

    /// amavisd-new's `X-Amavis-Alert:` value for infected or banned mail that is passed
    /// anyway.
    pub(crate) fn alert(&self) -> Option<String> {
        match (&self.hold, self.destiny) {
            (Some(Hold::Virus { name }), Destiny::Pass) => {
                Some(format!("INFECTED, message contains virus: {name}"))
            }
            (Some(Hold::Banned { part }), Destiny::Pass) => {
                let last = part.rsplit(" | ").next().unwrap_or(part);
                Some(format!("BANNED, message contains {last}"))
            }
            _ => None,
        }
    }
}

/// What the decision looks at besides the verdict.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signals<'a> {
    /// The outbound guard's key over its limit for this policy, if any.
    pub over_limit: Option<&'a str>,
    /// Sender authentication, when it ran.
    pub auth: Option<&'a AuthVerdict>,
    /// The virus clamd found, if any.
    pub virus: Option<&'a str>,
    /// The first part this policy's banned rules ban, if any.
    pub banned: Option<&'a str>,
}

impl<'a> Signals<'a> {
    /// All four signals.
    pub fn new(
        over_limit: Option<&'a str>,
        auth: Option<&'a AuthVerdict>,
        virus: Option<&'a str>,
        banned: Option<&'a str>,
    ) -> Self {
        Signals {
            over_limit,
            auth,
            virus,
            banned,
        }
    }
}

/// Decide, amavis-style: below kill the message passes; blocked mail meets the spam
/// destiny, is discarded at or above the discard cutoff, and is quarantined (if so
/// configured) below the quarantine cutoff. A rate limit holds the message whatever its
/// score; a DMARC failure the policy acts on holds mail that would otherwise pass.
pub fn decide(policy: &Policy, verdict: Verdict, signals: &Signals<'_>) -> Decision {
    let mut d = Decision {
        policy: policy.name.clone(),
        destiny: Destiny::Pass,
        quarantine: false,
        hold: None,
        verdict,
    };
    if d.verdict.category() == Category::Spam {
        let s = d.verdict.score;
        d.destiny = if policy.discard_cutoff.is_some_and(|c| s >= c) {
            Destiny::Discard
        } else {
            policy.spam_destiny
        };
        d.quarantine = policy.spam_quarantine && !policy.quarantine_cutoff.is_some_and(|c| s >= c);
        d.hold = Some(Hold::Spam);
    }
    let held = if let Some(key) = signals.over_limit {
        Some(Hold::RateLimit { key: key.into() })
    } else if d.destiny == Destiny::Pass && dmarc_holds(policy, signals.auth, &d.verdict) {
        Some(Hold::Dmarc)
    } else {
        None
    };
    if let Some(hold) = held {
        d.destiny = Destiny::Discard;
        d.quarantine = true;
        d.hold = Some(hold);
    }
    let content = if let Some(name) = signals.virus {
        Some((
            Hold::Virus { name: name.into() },
            policy.virus_destiny,
            policy.virus_quarantine,
        ))
    } else {
        let part = signals.banned.map(|p| Hold::Banned { part: p.into() });
        part.map(|h| (h, policy.banned_destiny, policy.banned_quarantine))
    };
    if let Some((hold, destiny, quarantine)) = content {
        d.destiny = destiny;
        d.quarantine = quarantine;
        d.hold = Some(hold);
    }
    d
}

/// The decision on a message in a mail loop, under `policy` (scored: nothing).
pub fn looping(policy: &Policy, scores: &BTreeMap<&'static str, f64>) -> Decision {
    Decision {
        policy: policy.name.clone(),
        verdict: Verdict::new(&Hits::default(), scores, policy.levels),
        destiny: Destiny::Reject,
        quarantine: false,
        hold: Some(Hold::Loop),
    }
}

/// The sender's domain asks for failing mail to be rejected or quarantined, and this policy
/// holds such mail (not when an allow list says otherwise).
fn dmarc_holds(policy: &Policy, auth: Option<&AuthVerdict>, verdict: &Verdict) -> bool {
    let asked = match auth.map(|a| a.dmarc) {
        Some(DmarcVerdict::Fail(DmarcPolicy::Reject)) => policy.dmarc_reject,
        Some(DmarcVerdict::Fail(DmarcPolicy::Quarantine)) => policy.dmarc_quarantine,
        _ => false,
    };
    asked
        && !verdict
            .hits
            .iter()
            .any(|(n, _)| n.starts_with("ALLOWLIST_"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::policy;

    fn verdict(score: f64, p: &Policy) -> Verdict {
        Verdict {
            score,
            hits: vec![],
            levels: p.levels,
        }
    }

    fn auth(dmarc: DmarcVerdict) -> AuthVerdict {
        AuthVerdict {
            no_client_ip: false,
            spf: None,
            spf_helo: None,
            dkim: vec![],
            dmarc,
            arc: crate::auth::AuthResult::None,
            header: String::new(),
        }
    }

    #[test]
    fn destinies_at_every_boundary() {
        let mut p = policy("x");
        p.quarantine_cutoff = Some(20.0);
        p.discard_cutoff = Some(30.0);
        let d = |p: &Policy, s| decide(p, verdict(s, p), &Signals::default());
        // below kill: passes whatever the destiny
        for s in [-5.0, 6.2, 6.899] {
            assert_eq!(d(&p, s).destiny, Destiny::Pass, "{s}");
            assert!(!d(&p, s).quarantine && d(&p, s).hold.is_none());
        }
        for destiny in [Destiny::Pass, Destiny::Discard, Destiny::Reject] {
            p.spam_destiny = destiny;
            // at kill: the destiny, quarantined
            let at_kill = d(&p, 6.9);
            assert_eq!(
                (at_kill.destiny, at_kill.quarantine, at_kill.hold),
                (destiny, true, Some(Hold::Spam))
            );
            assert!(d(&p, 19.999).quarantine);
            assert!(!d(&p, 20.0).quarantine, "at the quarantine cutoff: no copy");
            assert_eq!(d(&p, 29.999).destiny, destiny);
            assert_eq!(d(&p, 30.0).destiny, Destiny::Discard, "discard cutoff");
        }
        p.spam_quarantine = false;
        assert!(!d(&p, 10.0).quarantine);
    }

    #[test]
    fn a_virus_or_a_banned_part_holds_by_its_own_destiny() {
        let mut p = policy("x");
        let infected = Signals {
            virus: Some("Eicar-Signature"),
            banned: Some("multipart/mixed | .exe,x.exe"),
            ..Signals::default()
        };
        let d = decide(&p, verdict(-3.0, &p), &infected);
        assert_eq!(
            (d.destiny, d.quarantine, d.category()),
            (Destiny::Discard, true, "INFECTED")
        );
        assert_eq!(d.detail(), Some("Eicar-Signature"));
        assert_eq!(d.hold.as_ref().map(Hold::reason), Some("virus"));
        assert_eq!(d.alert(), None, "not passed: no alert header");
        let banned = Signals {
            banned: Some("multipart/mixed | application/zip,.zip,a.zip | .exe,invoice.pdf.exe"),
            ..Signals::default()
        };
        p.banned_destiny = Destiny::Pass;
        let d = decide(&p, verdict(0.0, &p), &banned);
        assert_eq!((d.destiny, d.category()), (Destiny::Pass, "BANNED"));
        assert_eq!(d.hold.as_ref().map(Hold::reason), Some("banned"));
        assert_eq!(
            d.alert().as_deref(),
            Some("BANNED, message contains .exe,invoice.pdf.exe")
        );
    }

    #[test]
    fn signals_hold_whatever_the_score() {
        let mut p = policy("x");
        let limited = Signals {
            over_limit: Some("sender a@x.test"),
            ..Signals::default()
        };
        let d = decide(&p, verdict(-3.0, &p), &limited);
        assert_eq!(d.destiny, Destiny::Discard);
        assert!(d.quarantine);
        assert_eq!(d.category(), "RATELIMIT");
        assert_eq!(d.hold.as_ref().map(Hold::reason), Some("ratelimit"));
        let failing = auth(DmarcVerdict::Fail(DmarcPolicy::Reject));
        let dmarc = Signals {
            auth: Some(&failing),
            ..Signals::default()
        };
        assert_eq!(
            decide(&p, verdict(0.0, &p), &dmarc).hold,
            None,
            "score-only by default"
        );
        p.dmarc_reject = true;
        let d = decide(&p, verdict(0.0, &p), &dmarc);
        assert_eq!((d.destiny, d.category()), (Destiny::Discard, "DMARC"));
        let mut allowed = verdict(0.0, &p);
        allowed.hits.push(("ALLOWLIST_SENDER", 0.0));
        assert_eq!(decide(&p, allowed, &dmarc).hold, None, "allow-listed");
        p.spam_destiny = Destiny::Reject;
        let d = decide(&p, verdict(10.0, &p), &dmarc);
        assert_eq!(
            (d.destiny, d.hold.clone(), d.category()),
            (Destiny::Reject, Some(Hold::Spam), "SPAM"),
            "blocked spam keeps its destiny"
        );
    }
}
