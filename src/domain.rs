//! Domain names compared the way mail needs it: a name is "within" a domain when it is the
//! domain or one of its subdomains, without case and ignoring a trailing dot. Policy banks,
//! lists, DMARC alignment, DKIM key choice and the From/Reply-To checks all ask this one
//! function.

/// True when `name` is `domain` or a subdomain of it (`mail.example.com` is within
/// `example.com`; `badexample.com` is not).
///
/// ```
/// use filterd::domain::is_within;
/// assert!(is_within("Mail.Example.COM.", "example.com"));
/// assert!(!is_within("badexample.com", "example.com"));
/// ```
pub fn is_within(name: &str, domain: &str) -> bool {
    let name = name.trim_end_matches('.');
    let domain = domain.trim_end_matches('.');
    if name.len() == domain.len() {
        return name.eq_ignore_ascii_case(domain);
    }
    name.len() > domain.len()
        && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
        && name.is_char_boundary(name.len() - domain.len())
        && name[name.len() - domain.len()..].eq_ignore_ascii_case(domain)
}

/// True when one of the two names is within the other: the same organisation, as far as a
/// check can tell without the public suffix list.
pub fn related(a: &str, b: &str) -> bool {
    is_within(a, b) || is_within(b, a)
}

/// A configured domain pattern against a name: `example.com` matches exactly,
/// `.example.com` matches it and every subdomain (the form policy banks and lists use).
pub fn matches_pattern(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix('.') {
        Some(base) => is_within(name, base),
        None => name.trim_end_matches('.').eq_ignore_ascii_case(pattern),
    }
}

/// The domain part of an address (after the last `@`), when it has one.
pub fn of_address(address: &str) -> Option<&str> {
    address.rsplit_once('@').map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_and_related() {
        for (name, domain, want) in [
            ("example.com", "example.com", true),
            ("EXAMPLE.com", "example.COM", true),
            ("example.com.", "example.com", true),
            ("a.b.example.com", "example.com", true),
            ("badexample.com", "example.com", false),
            ("example.com", "mail.example.com", false),
            ("", "", true),
            ("x", "", false),
            ("é.example.com", "example.com", true),
        ] {
            assert_eq!(is_within(name, domain), want, "{name} within {domain}");
        }
        assert!(related("mail.example.com", "example.com"));
        assert!(related("example.com", "mail.example.com"));
        assert!(!related("example.org", "example.com"));
        assert!(matches_pattern("example.com", "Example.com."));
        assert!(!matches_pattern("example.com", "a.example.com"));
        assert!(matches_pattern(".example.com", "a.b.example.com"));
        assert!(matches_pattern(".example.com", "example.com"));
        assert!(!matches_pattern(".example.com", "badexample.com"));
        assert_eq!(of_address("a@b@c.test"), Some("c.test"));
        assert_eq!(of_address("postmaster"), None);
    }
}
