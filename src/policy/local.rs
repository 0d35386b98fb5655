//! Which recipients are local (amavisd-new's `@local_domains_acl`): mail to any other
//! recipient is outbound, whatever its source, and is what the outbound guard counts.
//! The domains come from `[local_domains]` and, by default, from the Postfix beside us.

use crate::domain::{matches_pattern, of_address};

/// The local domains; empty means unknown (the guard then counts originating mail only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalDomains {
    patterns: Vec<String>,
}

impl LocalDomains {
    /// From patterns (`example.com` exactly, `.example.com` also its subdomains), lower
    /// case, without duplicates.
    pub fn new(patterns: impl IntoIterator<Item = String>) -> Self {
        let mut out: Vec<String> = vec![];
        for p in patterns {
            let p = p.trim().trim_end_matches('.').to_ascii_lowercase();
            if !p.is_empty() && !out.contains(&p) {
                out.push(p);
            }
        }
        LocalDomains { patterns: out }
    }

    /// True when some domain is known.
    pub fn known(&self) -> bool {
        !self.patterns.is_empty()
    }

    /// The patterns.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// True when `recipient` is in a local domain; an address without a domain
    /// (`postmaster`) is local.
    pub fn is_local(&self, recipient: &str) -> bool {
        let domain = of_address(recipient).unwrap_or("");
        domain.is_empty() || self.patterns.iter().any(|p| matches_pattern(p, domain))
    }

    /// The policies (from `chosen`, one per recipient; missing = `default`) of the
    /// outbound recipients: those outside the local domains or, with none known, every
    /// recipient of originating mail.
    pub fn outbound<'a>(
        &self,
        recipients: impl Iterator<Item = &'a str>,
        chosen: &[usize],
        originating: bool,
        default: usize,
    ) -> Vec<usize> {
        recipients
            .enumerate()
            .filter(|(_, r)| match self.known() {
                true => !self.is_local(r),
                false => originating,
            })
            .map(|(i, _)| chosen.get(i).copied().unwrap_or(default))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_subdomain_patterns() {
        let l = LocalDomains::new([
            "Example.COM.".to_string(),
            ".corp.test".into(),
            "x.test".into(),
            "".into(),
        ]);
        assert_eq!(l.patterns(), ["example.com", ".corp.test", "x.test"]);
        for (r, want) in [
            ("bob@example.com", true),
            ("bob@EXAMPLE.com", true),
            ("bob@mail.example.com", false),
            ("bob@corp.test", true),
            ("bob@a.corp.test", true),
            ("bob@elsewhere.test", false),
            ("postmaster", true),
        ] {
            assert_eq!(l.is_local(r), want, "{r}");
        }
        assert!(!LocalDomains::default().known());
        let rcpts = [
            "a@example.com",
            "b@elsewhere.test",
            "c@x.test",
            "d@far.test",
        ];
        assert_eq!(l.outbound(rcpts.into_iter(), &[0, 1, 2], false, 9), [1, 9]);
        let unknown = LocalDomains::default();
        assert_eq!(
            unknown.outbound(rcpts.into_iter(), &[], true, 9),
            [9, 9, 9, 9]
        );
        assert!(
            unknown
                .outbound(rcpts.into_iter(), &[], false, 9)
                .is_empty()
        );
    }
}
