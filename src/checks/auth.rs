//! Sender authentication hits: what SPF, DKIM, DMARC and ARC found (computed before the
//! checks by [`crate::auth`], under its DNS budget). Nothing here touches the network.

use super::{Check, HitDef, Hits, Input};
use crate::auth::{AuthResult, DmarcPolicy, DmarcVerdict};

pub(super) struct AuthCheck;

macro_rules! hit {
    ($name:literal, $score:expr, $desc:literal) => {
        HitDef {
            name: $name,
            default_score: $score,
            description: $desc,
        }
    };
}

/// Scores follow SpamAssassin's where it has the rule, rspamd's for DMARC/ARC policy.
const HITS: &[HitDef] = &[
    hit!(
        "SPF_PASS",
        -0.001,
        "SPF: sender's domain designates the client"
    ),
    hit!(
        "SPF_FAIL",
        0.919,
        "SPF: sender's domain forbids the client (-all)"
    ),
    hit!(
        "SPF_SOFTFAIL",
        0.665,
        "SPF: sender's domain discourages the client (~all)"
    ),
    hit!(
        "SPF_NEUTRAL",
        0.652,
        "SPF: sender's domain says nothing about the client (?all)"
    ),
    hit!(
        "SPF_NONE",
        0.001,
        "SPF: sender's domain publishes no SPF record"
    ),
    hit!(
        "SPF_TEMPERROR",
        0.01,
        "SPF: DNS trouble or the time budget ran out"
    ),
    hit!(
        "SPF_PERMERROR",
        0.01,
        "SPF: the sender's SPF record is broken"
    ),
    hit!(
        "SPF_HELO_PASS",
        -0.001,
        "SPF: HELO name designates the client"
    ),
    hit!("SPF_HELO_FAIL", 0.001, "SPF: HELO name forbids the client"),
    hit!(
        "SPF_HELO_SOFTFAIL",
        0.732,
        "SPF: HELO name discourages the client"
    ),
    hit!(
        "SPF_HELO_NEUTRAL",
        0.001,
        "SPF: HELO name says nothing about the client"
    ),
    hit!(
        "SPF_HELO_NONE",
        0.001,
        "SPF: HELO name publishes no SPF record"
    ),
    hit!(
        "SPF_HELO_TEMPERROR",
        0.01,
        "SPF: HELO check hit DNS trouble or the time budget"
    ),
    hit!(
        "SPF_HELO_PERMERROR",
        0.01,
        "SPF: HELO name's SPF record is broken"
    ),
    hit!("DKIM_VALID", -0.1, "DKIM: at least one valid signature"),
    hit!(
        "DKIM_VALID_AU",
        -0.1,
        "DKIM: a valid signature from the author's (From) domain"
    ),
    hit!(
        "DKIM_INVALID",
        0.1,
        "DKIM: a signature does not verify (modified, expired, no key)"
    ),
    hit!(
        "DKIM_TEMPERROR",
        0.01,
        "DKIM: DNS trouble or the time budget ran out"
    ),
    hit!("DKIM_NONE", 0.0, "DKIM: the message is not signed"),
    hit!("DMARC_PASS", -0.1, "DMARC: aligned SPF or DKIM pass"),
    hit!(
        "DMARC_REJECT",
        2.0,
        "DMARC: fails, and the domain asks to reject (p=reject)"
    ),
    hit!(
        "DMARC_QUARANTINE",
        1.5,
        "DMARC: fails, and the domain asks to quarantine"
    ),
    hit!(
        "DMARC_NONE",
        0.1,
        "DMARC: fails, the domain only monitors (p=none)"
    ),
    hit!(
        "DMARC_MISSING",
        0.0,
        "DMARC: the From domain publishes no DMARC record"
    ),
    hit!(
        "DMARC_TEMPERROR",
        0.01,
        "DMARC: DNS trouble or the time budget ran out"
    ),
    hit!(
        "DMARC_PERMERROR",
        0.01,
        "DMARC: the domain's DMARC record is broken"
    ),
    hit!("ARC_VALID", -0.1, "ARC: the chain validates"),
    hit!("ARC_INVALID", 0.5, "ARC: the chain is broken"),
    hit!(
        "ARC_TEMPERROR",
        0.01,
        "ARC: DNS trouble or the time budget ran out"
    ),
    hit!("ARC_NONE", 0.0, "ARC: no ARC headers"),
    hit!(
        "AUTH_NO_CLIENT_IP",
        0.0,
        "the client IP is unknown (no XFORWARD, no trusted Received): SPF skipped"
    ),
];

fn spf_hit(r: AuthResult, helo: bool) -> &'static str {
    match (r, helo) {
        (AuthResult::Pass, false) => "SPF_PASS",
        (AuthResult::Fail, false) => "SPF_FAIL",
        (AuthResult::SoftFail, false) => "SPF_SOFTFAIL",
        (AuthResult::Neutral, false) => "SPF_NEUTRAL",
        (AuthResult::None, false) => "SPF_NONE",
        (AuthResult::TempError, false) => "SPF_TEMPERROR",
        (AuthResult::PermError, false) => "SPF_PERMERROR",
        (AuthResult::Pass, true) => "SPF_HELO_PASS",
        (AuthResult::Fail, true) => "SPF_HELO_FAIL",
        (AuthResult::SoftFail, true) => "SPF_HELO_SOFTFAIL",
        (AuthResult::Neutral, true) => "SPF_HELO_NEUTRAL",
        (AuthResult::None, true) => "SPF_HELO_NONE",
        (AuthResult::TempError, true) => "SPF_HELO_TEMPERROR",
        (AuthResult::PermError, true) => "SPF_HELO_PERMERROR",
    }
}

impl Check for AuthCheck {
    fn hits(&self) -> &'static [HitDef] {
        HITS
    }

    fn run(&self, input: &Input<'_>, hits: &mut Hits) {
        let Some(a) = input.auth else {
            return;
        };
        if a.no_client_ip {
            hits.add("AUTH_NO_CLIENT_IP");
        }
        if let Some(r) = a.spf {
            hits.add(spf_hit(r, false));
        }
        if let Some(r) = a.spf_helo {
            hits.add(spf_hit(r, true));
        }
        if a.dkim.is_empty() {
            hits.add("DKIM_NONE");
        }
        if a.dkim.iter().any(|d| d.result == AuthResult::Pass) {
            hits.add("DKIM_VALID");
        }
        if a.dkim
            .iter()
            .any(|d| d.result == AuthResult::Pass && d.author)
        {
            hits.add("DKIM_VALID_AU");
        }
        if a.dkim.iter().any(|d| {
            matches!(
                d.result,
                AuthResult::Fail | AuthResult::PermError | AuthResult::Neutral
            )
        }) {
            hits.add("DKIM_INVALID");
        }
        if a.dkim.iter().any(|d| d.result == AuthResult::TempError) {
            hits.add("DKIM_TEMPERROR");
        }
        hits.add(match a.dmarc {
            DmarcVerdict::Pass => "DMARC_PASS",
            DmarcVerdict::Fail(DmarcPolicy::Reject) => "DMARC_REJECT",
            DmarcVerdict::Fail(DmarcPolicy::Quarantine) => "DMARC_QUARANTINE",
            DmarcVerdict::Fail(DmarcPolicy::None) => "DMARC_NONE",
            DmarcVerdict::Missing => "DMARC_MISSING",
            DmarcVerdict::TempError => "DMARC_TEMPERROR",
            DmarcVerdict::PermError => "DMARC_PERMERROR",
        });
        hits.add(match a.arc {
            AuthResult::Pass => "ARC_VALID",
            AuthResult::None => "ARC_NONE",
            AuthResult::TempError => "ARC_TEMPERROR",
            _ => "ARC_INVALID",
        });
    }
}
