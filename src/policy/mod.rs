//! Policy banks: which levels, destinies, lists, checks and rate limits apply to a recipient.
//! A bank is chosen per recipient by recipient domain, client network and origin (inbound or
//! originating); the first bank whose selectors all match wins, else the default policy.
//! [`Policy::decide`] turns a verdict into what happens to that recipient's copy.

pub mod guard;
pub mod lists;

use crate::config::Levels;
use crate::verdict::{Category, Verdict};
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::IpAddr;

pub use guard::{Guard, RateLimit};
pub use lists::Lists;

/// What happens to blocked mail (at or above the kill level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destiny {
    /// Delivered, tagged.
    Pass,
    /// Accepted (250) and not delivered.
    Discard,
    /// Refused with 554 at the end of DATA: Postfix then bounces it to the envelope sender.
    Reject,
}

impl Destiny {
    /// From the config word.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pass" => Some(Destiny::Pass),
            "discard" => Some(Destiny::Discard),
            "reject" => Some(Destiny::Reject),
            _ => None,
        }
    }
}

/// Which mail a bank applies to, by origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Either.
    Any,
    /// Mail from outside.
    Inbound,
    /// Our own users' mail (see `[origin]`).
    Originating,
}

impl Direction {
    /// From the config word.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "any" => Some(Direction::Any),
            "inbound" => Some(Direction::Inbound),
            "originating" => Some(Direction::Originating),
            _ => None,
        }
    }
}

/// One policy bank (or the default policy), fully resolved.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Its name (`default` for the default policy), logged and stored with quarantined mail.
    pub name: String,
    /// Recipient domains it applies to (`example.com` exactly, `.example.com` also its
    /// subdomains); empty = any.
    pub recipient_domains: Vec<String>,
    /// Client networks it applies to; empty = any.
    pub client_networks: Vec<IpNet>,
    /// Inbound, originating or both.
    pub direction: Direction,
    /// tag, tag2 and kill levels.
    pub levels: Levels,
    /// At or above: blocked mail is not quarantined.
    pub quarantine_cutoff: Option<f64>,
    /// At or above: blocked mail is discarded whatever its destiny.
    pub discard_cutoff: Option<f64>,
    /// What happens to blocked mail.
    pub spam_destiny: Destiny,
    /// Keep a quarantine copy of blocked mail.
    pub spam_quarantine: bool,
    /// Prepended to the Subject of spam (empty = none).
    pub subject_tag: String,
    /// Hold inbound mail failing DMARC where the domain says `p=reject`.
    pub dmarc_reject: bool,
    /// Hold inbound mail failing DMARC where the domain says `p=quarantine`.
    pub dmarc_quarantine: bool,
    /// Checks that do not count for this policy.
    pub skip_checks: Vec<String>,
    /// The hit names of the skipped checks.
    pub skipped_hits: HashSet<&'static str>,
    /// Allow and block lists.
    pub lists: Lists,
    /// The outbound guard (originating mail only).
    pub rate_limit: Option<RateLimit>,
}

/// What a policy decides for one verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Deliver (tagged as the levels say), discard or reject.
    pub destiny: Destiny,
    /// Keep a quarantine copy.
    pub quarantine: bool,
    /// The mail is blocked (at or above kill).
    pub blocked: bool,
}

impl Policy {
    /// The destiny of a message with this verdict, amavis-style: below kill it passes;
    /// blocked mail meets the spam destiny, is discarded at or above the discard cutoff,
    /// and is quarantined (if so configured) below the quarantine cutoff.
    pub fn decide(&self, verdict: &Verdict) -> Decision {
        if verdict.category() != Category::Spam {
            return Decision {
                destiny: Destiny::Pass,
                quarantine: false,
                blocked: false,
            };
        }
        let s = verdict.score;
        let destiny = if self.discard_cutoff.is_some_and(|c| s >= c) {
            Destiny::Discard
        } else {
            self.spam_destiny
        };
        Decision {
            destiny,
            quarantine: self.spam_quarantine && !self.quarantine_cutoff.is_some_and(|c| s >= c),
            blocked: true,
        }
    }

    fn applies(&self, domain: &str, client: Option<IpAddr>, originating: bool) -> bool {
        let dir = match self.direction {
            Direction::Any => true,
            Direction::Inbound => !originating,
            Direction::Originating => originating,
        };
        let dom = self.recipient_domains.is_empty()
            || self
                .recipient_domains
                .iter()
                .any(|d| domain_matches(d, domain));
        let net = self.client_networks.is_empty()
            || client.is_some_and(|ip| self.client_networks.iter().any(|n| n.contains(&ip)));
        dir && dom && net
    }
}

/// The banks in config order and the default policy.
#[derive(Debug, Clone)]
pub struct Policies {
    /// Banks, first match wins; the default policy is the last element.
    pub all: Vec<Policy>,
}

impl Policies {
    /// The index of the policy for one recipient.
    pub fn select(&self, recipient: &str, client: Option<IpAddr>, originating: bool) -> usize {
        let domain = recipient
            .rsplit_once('@')
            .map_or("", |(_, d)| d)
            .to_ascii_lowercase();
        let last = self.all.len().saturating_sub(1);
        self.all[..last]
            .iter()
            .position(|p| p.applies(&domain, client, originating))
            .unwrap_or(last)
    }

    /// The default policy.
    pub fn default_policy(&self) -> &Policy {
        &self.all[self.all.len() - 1]
    }
}

/// `example.com` matches exactly; `.example.com` matches it and every subdomain.
/// Both sides are compared without case; `domain` must already be lower case.
pub fn domain_matches(pattern: &str, domain: &str) -> bool {
    let domain = domain.trim_end_matches('.');
    match pattern.strip_prefix('.') {
        Some(base) => {
            domain.eq_ignore_ascii_case(base)
                || (domain.len() > base.len()
                    && domain.as_bytes()[domain.len() - base.len() - 1] == b'.'
                    && domain[domain.len() - base.len()..].eq_ignore_ascii_case(base))
        }
        None => domain.eq_ignore_ascii_case(pattern),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn policy(name: &str) -> Policy {
        Policy {
            name: name.into(),
            recipient_domains: vec![],
            client_networks: vec![],
            direction: Direction::Any,
            levels: Levels {
                tag: 2.0,
                tag2: 6.2,
                kill: 6.9,
            },
            quarantine_cutoff: None,
            discard_cutoff: None,
            spam_destiny: Destiny::Discard,
            spam_quarantine: true,
            subject_tag: "***SPAM*** ".into(),
            dmarc_reject: false,
            dmarc_quarantine: false,
            skip_checks: vec![],
            skipped_hits: HashSet::new(),
            lists: Lists::default(),
            rate_limit: None,
        }
    }

    fn verdict(score: f64, p: &Policy) -> Verdict {
        Verdict {
            score,
            hits: vec![],
            levels: p.levels,
            message_id: None,
        }
    }

    #[test]
    fn destinies_at_every_boundary() {
        let mut p = policy("x");
        p.quarantine_cutoff = Some(20.0);
        p.discard_cutoff = Some(30.0);
        let d = |p: &Policy, s| p.decide(&verdict(s, p));
        // below kill: passes whatever the destiny
        for s in [-5.0, 6.2, 6.899] {
            assert_eq!(d(&p, s).destiny, Destiny::Pass, "{s}");
            assert!(!d(&p, s).quarantine && !d(&p, s).blocked);
        }
        for destiny in [Destiny::Pass, Destiny::Discard, Destiny::Reject] {
            p.spam_destiny = destiny;
            // at kill: the destiny, quarantined
            assert_eq!(
                d(&p, 6.9),
                Decision {
                    destiny,
                    quarantine: true,
                    blocked: true
                }
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
    fn first_matching_bank_wins() {
        let mut a = policy("a");
        a.recipient_domains = vec![".example.com".into()];
        a.direction = Direction::Inbound;
        let mut b = policy("b");
        b.client_networks = vec!["192.0.2.0/24".parse().unwrap()];
        let set = Policies {
            all: vec![a, b, policy("default")],
        };
        let ip = Some("192.0.2.9".parse().unwrap());
        assert_eq!(set.select("u@Example.COM", None, false), 0);
        assert_eq!(set.select("u@mail.example.com", None, false), 0);
        assert_eq!(set.select("u@notexample.com", None, false), 2);
        assert_eq!(
            set.select("u@example.com", ip, true),
            1,
            "a is inbound only"
        );
        assert_eq!(set.select("u@other.org", ip, false), 1);
        assert_eq!(set.select("postmaster", None, false), 2);
    }

    #[test]
    fn domain_patterns() {
        assert!(domain_matches("example.com", "example.com"));
        assert!(!domain_matches("example.com", "a.example.com"));
        assert!(domain_matches(".example.com", "a.b.example.com"));
        assert!(domain_matches(".example.com", "example.com"));
        assert!(!domain_matches(".example.com", "badexample.com"));
        assert!(domain_matches("example.com", "example.com."));
    }
}
