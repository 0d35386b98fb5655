//! Policy banks: which levels, destinies, lists, checks and rate limits apply to a recipient.
//! A bank is chosen per recipient by recipient domain, client network and origin (inbound or
//! originating); the first bank whose selectors all match wins, else the default policy.
//! [`decision::decide`] turns a verdict into what happens to that recipient's copy.

pub mod decision;
pub mod guard;
pub mod lists;
pub mod local;

use crate::checks::Hits;
use crate::domain::matches_pattern;
use crate::verdict::{Levels, Verdict};
use ipnet::IpNet;
use lists::Identity;
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

pub use guard::{Guard, RateLimit};
pub use lists::Lists;
pub use local::LocalDomains;

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
    /// The outbound guard (mail to recipients outside the local domains).
    pub rate_limit: Option<RateLimit>,
    /// Banned rules (its exceptions first); empty = no banned check.
    pub banned: std::sync::Arc<crate::content::banned::BannedRules>,
    /// What happens to banned mail.
    pub banned_destiny: Destiny,
    /// Keep a quarantine copy of banned mail.
    pub banned_quarantine: bool,
    /// What happens to infected mail.
    pub virus_destiny: Destiny,
    /// Keep a quarantine copy of infected mail.
    pub virus_quarantine: bool,
}

impl Policy {
    /// The verdict on `hits` under this policy: its levels, without the hits of the checks
    /// it skips, forced by its allow and block lists for `who`.
    pub fn verdict(
        &self,
        hits: &Hits,
        scores: &BTreeMap<&'static str, f64>,
        who: &Identity<'_>,
    ) -> Verdict {
        let rules = self.skips("rules");
        let mut v = Verdict::without(hits, scores, self.levels, |n| {
            self.skipped_hits.contains(n) || (rules && crate::rules::is_rule_name(n))
        });
        let (allow, block) = self.lists.check(who);
        v.apply_lists(&allow, &block);
        v
    }

    /// True when this policy turns the check `name` off.
    pub(crate) fn skips(&self, check: &str) -> bool {
        self.skip_checks.iter().any(|c| c == check)
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
                .any(|d| matches_pattern(d, domain));
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

    /// The index of the policy of each recipient.
    pub(crate) fn select_all<'a>(
        &self,
        recipients: impl Iterator<Item = &'a str>,
        client: Option<IpAddr>,
        originating: bool,
    ) -> Vec<usize> {
        recipients
            .map(|r| self.select(r, client, originating))
            .collect()
    }

    /// The default policy.
    pub(crate) fn default_policy(&self) -> &Policy {
        &self.all[self.all.len() - 1]
    }

    /// The index of the default policy.
    pub(crate) fn default_index(&self) -> usize {
        self.all.len() - 1
    }
}

/// Which policy each recipient of one message has, and the distinct policies among them in
/// the order first seen (each decides once; recipients with equal outcomes merge later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Assignment {
    per_recipient: Vec<usize>,
    distinct: Vec<usize>,
}

impl Assignment {
    /// From the policies chosen per recipient; a message without recipients (a test's, an
    /// evaluation's) gets the default policy.
    pub fn new(chosen: &[usize], recipients: usize, default: usize) -> Self {
        let per_recipient: Vec<usize> = (0..recipients.max(1))
            .map(|i| chosen.get(i).copied().unwrap_or(default))
            .collect();
        let mut distinct: Vec<usize> = vec![];
        for &p in &per_recipient {
            if !distinct.contains(&p) {
                distinct.push(p);
            }
        }
        Assignment {
            per_recipient,
            distinct,
        }
    }

    /// The distinct policies, in the order first seen.
    pub fn distinct(&self) -> &[usize] {
        &self.distinct
    }

    /// The recipients (indices into the envelope's, below `recipients`) of policy `p`.
    pub(crate) fn recipients_of(&self, p: usize, recipients: usize) -> Vec<usize> {
        (0..recipients)
            .filter(|&i| self.per_recipient.get(i) == Some(&p))
            .collect()
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
            banned: Default::default(),
            banned_destiny: Destiny::Discard,
            banned_quarantine: true,
            virus_destiny: Destiny::Discard,
            virus_quarantine: true,
        }
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
    fn one_decision_per_distinct_policy() {
        let a = Assignment::new(&[2, 0, 2, 1], 4, 2);
        assert_eq!(a.distinct(), [2, 0, 1]);
        assert_eq!(a.recipients_of(2, 4), [0, 2]);
        assert_eq!(a.recipients_of(1, 4), [3]);
        let none = Assignment::new(&[], 0, 5);
        assert_eq!(none.distinct(), [5], "no recipients: the default policy");
        assert!(none.recipients_of(5, 0).is_empty());
    }
}
