//! Stage one of configuration, continued: the plain data of `[content]` (the attachment
//! walk and banned rules, with amavisd-new's defaults) and `[clamd]`.

use serde::Deserialize;

/// `[content]`: banned content and what happens to banned and infected mail.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawContent {
    /// Check parts and archive members against the banned rules.
    pub banned_check: bool,
    /// Banned patterns (regular expressions, case-insensitive), tried against each part's
    /// types by content (`.exe`), declared MIME type and file name.
    pub banned: Vec<String>,
    /// Exceptions for every policy, tried first (a bank adds its own `allow_banned`).
    pub allow: Vec<String>,
    /// `pass` (with X-Amavis-Alert), `discard` or `reject`.
    pub banned_destiny: String,
    /// Keep a quarantine copy of banned mail.
    pub banned_quarantine: bool,
    /// The same for infected mail.
    pub virus_destiny: String,
    /// Keep a quarantine copy of infected mail.
    pub virus_quarantine: bool,
    /// Archives nested deeper are banned (`.too-deep`).
    pub max_depth: usize,
    /// Archive members of one message, at most (`.too-many`).
    pub max_members: usize,
    /// Expanded size of one member, MB (`.bomb` beyond).
    pub max_member_mb: u64,
    /// Expanded size of all members, MB (`.bomb` beyond).
    pub max_total_mb: u64,
    /// Messages larger than this, MB, are not walked (clamd still scans them).
    pub max_walk_mb: usize,
}

impl Default for RawContent {
    fn default() -> Self {
        RawContent {
            banned_check: true,
            banned: crate::content::banned::DEFAULT_BANNED
                .map(String::from)
                .to_vec(),
            allow: vec![],
            banned_destiny: "discard".into(),
            banned_quarantine: true,
            virus_destiny: "discard".into(),
            virus_quarantine: true,
            max_depth: 4,
            max_members: 1000,
            max_member_mb: 64,
            max_total_mb: 256,
            max_walk_mb: 16,
        }
    }
}

/// `[clamd]`: virus scanning with clamd.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawClamd {
    /// clamd sockets, tried in order: a unix socket path (Debian:
    /// `/run/clamav/clamd.ctl`) or `IP:port`; empty = no virus scanning.
    pub addresses: Vec<String>,
    /// Longest wait for one clamd, milliseconds (the scan budget bounds it too).
    pub timeout_ms: u64,
    /// When no clamd answers: `tempfail` (451, Postfix retries) or `pass` (delivered with
    /// `X-Amavis-Alert: UNCHECKED`).
    pub on_error: String,
}

impl Default for RawClamd {
    fn default() -> Self {
        RawClamd {
            addresses: vec![],
            timeout_ms: 10_000,
            on_error: "tempfail".into(),
        }
    }
}

/// `[rules]`: the rule engine's files.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawRules {
    /// Load the shipped rule set (compiled into filterd from `rules/`).
    pub shipped: bool,
    /// Site directories of `*.cf` files, read after the shipped set in name order: a rule
    /// defined again replaces the shipped one, `score NAME 0` turns it off.
    pub dirs: Vec<std::path::PathBuf>,
}

impl Default for RawRules {
    fn default() -> Self {
        RawRules {
            shipped: true,
            dirs: vec![],
        }
    }
}

/// `[dnsbl]`: DNS block lists.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawDnsbl {
    /// Ask the lists (needs `[auth] enabled`: the lists are asked through its resolver).
    pub enabled: bool,
    /// The lists.
    pub lists: Vec<RawList>,
}

/// One `[[dnsbl.lists]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawList {
    /// The zone.
    pub zone: String,
    /// `ip` (the client's address) or `domain` (each link's registered domain).
    pub kind: String,
    /// Return codes that are hits.
    pub returns: Vec<RawReturn>,
}

/// One return code of a list.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawReturn {
    /// `127.0.0.2`, or a range in the last octet: `127.0.0.4-7`.
    pub code: String,
    /// The hit it gives.
    pub hit: String,
    /// Its score.
    pub score: f64,
}

impl Default for RawDnsbl {
    fn default() -> Self {
        let r = |code: &str, hit: &str, score: f64| RawReturn {
            code: code.into(),
            hit: hit.into(),
            score,
        };
        RawDnsbl {
            enabled: true,
            lists: vec![
                RawList {
                    zone: "zen.spamhaus.org".into(),
                    kind: "ip".into(),
                    returns: vec![
                        r("127.0.0.2", "RCVD_IN_SBL", 2.5),
                        r("127.0.0.3", "RCVD_IN_SBL_CSS", 2.0),
                        r("127.0.0.4-7", "RCVD_IN_XBL", 2.5),
                        r("127.0.0.9", "RCVD_IN_SBL_DROP", 3.5),
                        r("127.0.0.10-11", "RCVD_IN_PBL", 1.5),
                    ],
                },
                RawList {
                    zone: "bl.spamcop.net".into(),
                    kind: "ip".into(),
                    returns: vec![r("127.0.0.2", "RCVD_IN_BL_SPAMCOP_NET", 1.5)],
                },
                RawList {
                    zone: "dbl.spamhaus.org".into(),
                    kind: "domain".into(),
                    returns: vec![
                        r("127.0.1.2", "URIBL_DBL_SPAM", 2.5),
                        r("127.0.1.4", "URIBL_DBL_PHISH", 3.5),
                        r("127.0.1.5", "URIBL_DBL_MALWARE", 3.5),
                        r("127.0.1.6", "URIBL_DBL_BOTNETCC", 3.5),
                        r("127.0.1.102-106", "URIBL_DBL_ABUSED", 1.0),
                    ],
                },
            ],
        }
    }
}
