//! Allow and block lists of a policy: envelope sender (address or domain), From domain (only
//! when the From domain is authenticated, so a forged From cannot use the allow list) and
//! client network. A listed message gets a hit; the verdict then forces the score to at
//! most 0 (allow) or at least 64 (block), as amavisd-new does. Block wins over allow.

use crate::auth::{AuthResult, AuthVerdict, DmarcVerdict};
use crate::domain::{matches_pattern as domain_matches, of_address, related};
use ipnet::IpNet;
use std::net::IpAddr;

/// The lists.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lists {
    /// Envelope senders: `user@example.com`, `@example.com` / `example.com` (the domain),
    /// `.example.com` (the domain and its subdomains).
    pub allow_senders: Vec<String>,
    /// Same forms, blocked.
    pub block_senders: Vec<String>,
    /// From-header domains (same domain forms), allowed only when authenticated (DMARC
    /// pass, or an aligned DKIM signature or SPF pass).
    pub allow_from: Vec<String>,
    /// From-header domains, blocked.
    pub block_from: Vec<String>,
    /// Client networks.
    pub allow_clients: Vec<IpNet>,
    /// Client networks, blocked.
    pub block_clients: Vec<IpNet>,
}

/// Hit names of allow-list matches.
pub(crate) const ALLOW_HITS: [&str; 3] = ["ALLOWLIST_SENDER", "ALLOWLIST_FROM", "ALLOWLIST_CLIENT"];
/// Hit names of block-list matches.
pub(crate) const BLOCK_HITS: [&str; 3] = ["BLOCKLIST_SENDER", "BLOCKLIST_FROM", "BLOCKLIST_CLIENT"];

/// Who a message is from, as the lists see it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity<'a> {
    /// The envelope sender (empty for `<>`).
    pub sender: &'a str,
    /// The From domain, lower case.
    pub from_domain: Option<&'a str>,
    /// The From domain is authenticated.
    pub from_authenticated: bool,
    /// The original client.
    pub client: Option<IpAddr>,
}

impl<'a> Identity<'a> {
    /// The identity of a message from envelope `sender` with From domain `from_domain`
    /// (lower case), as sender authentication judged it, from `client`.
    pub fn new(
        sender: &'a str,
        from_domain: Option<&'a str>,
        auth: Option<&AuthVerdict>,
        client: Option<IpAddr>,
    ) -> Self {
        Identity {
            sender,
            from_domain,
            from_authenticated: from_authenticated(auth, from_domain, sender),
            client,
        }
    }
}

/// The From domain is authenticated: DMARC pass, an author DKIM signature that verifies,
/// or SPF pass for an envelope domain aligned with it.
fn from_authenticated(auth: Option<&AuthVerdict>, from: Option<&str>, sender: &str) -> bool {
    let Some(a) = auth else {
        return false;
    };
    if a.dmarc == DmarcVerdict::Pass
        || a.dkim
            .iter()
            .any(|d| d.result == AuthResult::Pass && d.author)
    {
        return true;
    }
    a.spf == Some(AuthResult::Pass)
        && from
            .zip(of_address(sender))
            .is_some_and(|(f, e)| related(f, e))
}

impl Lists {
    /// True when no list has an entry.
    pub fn is_empty(&self) -> bool {
        *self == Lists::default()
    }

    /// The allow and block hits for one message.
    pub fn check(&self, m: &Identity<'_>) -> (Vec<&'static str>, Vec<&'static str>) {
        let mut allow = vec![];
        let mut block = vec![];
        let sender =
            |l: &[String]| !m.sender.is_empty() && l.iter().any(|p| sender_matches(p, m.sender));
        let from = |l: &[String]| {
            m.from_domain.is_some_and(|d| {
                l.iter()
                    .any(|p| domain_matches(p.trim_start_matches('@'), d))
            })
        };
        let client = |l: &[IpNet]| m.client.is_some_and(|ip| l.iter().any(|n| n.contains(&ip)));
        if sender(&self.allow_senders) {
            allow.push(ALLOW_HITS[0]);
        }
        if m.from_authenticated && from(&self.allow_from) {
            allow.push(ALLOW_HITS[1]);
        }
        if client(&self.allow_clients) {
            allow.push(ALLOW_HITS[2]);
        }
        if sender(&self.block_senders) {
            block.push(BLOCK_HITS[0]);
        }
        if from(&self.block_from) {
            block.push(BLOCK_HITS[1]);
        }
        if client(&self.block_clients) {
            block.push(BLOCK_HITS[2]);
        }
        (allow, block)
    }
}

/// `user@domain` exactly (case-insensitive), or a domain pattern for the sender's domain.
fn sender_matches(pattern: &str, sender: &str) -> bool {
    let domain = sender.rsplit_once('@').map_or("", |(_, d)| d);
    match pattern.split_once('@') {
        Some(("", dom)) => domain_matches(dom, &domain.to_ascii_lowercase()),
        Some(_) => pattern.eq_ignore_ascii_case(sender),
        None => domain_matches(pattern, &domain.to_ascii_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_forms() {
        assert!(sender_matches("Boss@Example.com", "boss@example.COM"));
        assert!(!sender_matches("boss@example.com", "other@example.com"));
        assert!(sender_matches("@example.com", "x@EXAMPLE.com"));
        assert!(sender_matches("example.com", "x@example.com"));
        assert!(!sender_matches("example.com", "x@a.example.com"));
        assert!(sender_matches(".example.com", "x@a.example.com"));
        assert!(!sender_matches("example.com", "x@badexample.com"));
    }

    #[test]
    fn hits_and_the_authentication_rule() {
        let l = Lists {
            allow_senders: vec!["@partner.test".into()],
            block_senders: vec!["spam.test".into()],
            allow_from: vec!["bank.test".into()],
            block_from: vec!["@evil.test".into()],
            allow_clients: vec!["10.0.0.0/8".parse().unwrap()],
            block_clients: vec!["203.0.113.0/24".parse().unwrap()],
        };
        let mut m = Identity {
            sender: "a@partner.test",
            from_domain: Some("bank.test"),
            from_authenticated: false,
            client: Some("10.1.2.3".parse().unwrap()),
        };
        assert_eq!(
            l.check(&m),
            (vec!["ALLOWLIST_SENDER", "ALLOWLIST_CLIENT"], vec![]),
            "an unauthenticated From does not allow"
        );
        m.from_authenticated = true;
        assert_eq!(l.check(&m).0, ALLOW_HITS.to_vec());
        let m = Identity {
            sender: "x@spam.test",
            from_domain: Some("evil.test"),
            from_authenticated: false,
            client: Some("203.0.113.5".parse().unwrap()),
        };
        assert_eq!(l.check(&m), (vec![], BLOCK_HITS.to_vec()));
        assert_eq!(l.check(&Identity::default()), (vec![], vec![]));
    }
}
