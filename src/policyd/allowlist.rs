//! Postgrey's allowlist files, read as postgrey reads them.
//!
//! So a site keeps its `whitelist_clients`, `whitelist_recipients` and `.local` files. Rules
//! of postgrey 1.37's `read_clients_whitelists`, `read_recipients_whitelists` and
//! `smtpd_access_policy`: from the first `#` on is dropped, then surrounding whitespace;
//! blank lines are skipped. `/RE/` (no whitespace inside) is a regex, unanchored and without
//! case, on the client name or the full recipient. Client lines, in postgrey's order:
//! `a.b.c.d` or `a.b.c.d/NN` (a leading zero makes an octet octal, as in NetAddr::IP),
//! `a.b.c` (a /24), `a.b` (also a /24, `a.b.0.0/24`: what postgrey does, whatever its comment
//! says), anything with two colons (IPv6, optional `/len`), else a name matching itself and
//! its subdomains. IPv4 lives in NetAddr::IP's 128-bit space as `::a.b.c.d`, so an IPv6
//! entry covering `::/96` covers IPv4 clients too. Recipient lines: `user@domain`, `user@`
//! (both also `user+ext@`), `domain` (and subdomains). ASCII case never matters.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};

use regex::{RegexBuilder, RegexSet, RegexSetBuilder};

/// The entries of one or more postgrey allowlist files, ready to match.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    names: HashSet<String>,                      // client names, lowercased
    nets: Vec<Net>,                              // client networks
    client_regexes: Vec<RegexSet>,               // one case-insensitive set per file
    domains: HashSet<String>,                    // recipient domains, lowercased
    users: HashSet<String>,                      // `user@`, lowercased
    addresses: HashMap<String, HashSet<String>>, // `user@domain`: domain to users
    rcpt_regexes: Vec<RegexSet>,                 // one case-insensitive set per file
    entries: usize,                              // accepted lines
}

/// A network (base, mask) in NetAddr::IP's 128-bit space, where IPv4 is `::a.b.c.d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net(u128, u128);

impl Net {
    fn new(addr: u128, prefix: u32) -> Net {
        let shift = 128u32.saturating_sub(prefix);
        let mask = u128::MAX.checked_shl(shift).unwrap_or(0);
        Net(addr & mask, mask)
    }
}

/// Which file format a text is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Clients,
    Recipients,
}

impl Allowlist {
    /// Parse a whitelist_clients-format text; `origin` is the file path used in error messages.
    /// Errors are "PATH:LINE: reason" strings, all of them collected (not just the first).
    pub fn parse_clients(text: &str, origin: &str) -> Result<Allowlist, Vec<String>> {
        parse(text, origin, Kind::Clients)
    }

    /// Same for whitelist_recipients format.
    pub fn parse_recipients(text: &str, origin: &str) -> Result<Allowlist, Vec<String>> {
        parse(text, origin, Kind::Recipients)
    }

    /// Merge another list into this one (several files).
    pub fn extend(&mut self, other: Allowlist) {
        self.names.extend(other.names);
        self.nets.extend(other.nets);
        self.client_regexes.extend(other.client_regexes);
        self.domains.extend(other.domains);
        self.users.extend(other.users);
        for (domain, users) in other.addresses {
            self.addresses.entry(domain).or_default().extend(users);
        }
        self.rcpt_regexes.extend(other.rcpt_regexes);
        self.entries += other.entries;
    }

    /// Number of entries (for a log line).
    pub fn len(&self) -> usize {
        self.entries
    }

    /// True when no file gave an entry.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Client allowed: `ip` is the client address, `name` the client's verified hostname
    /// (Postfix's client_name; "unknown" when it has none).
    pub fn client_allowed(&self, ip: IpAddr, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        let key = match ip {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        };
        self.names.contains(&lower)
            || lower
                .match_indices('.')
                .any(|(dot, _)| self.names.contains(&lower[dot + 1..]))
            || self.client_regexes.iter().any(|set| set.is_match(name))
            || self.nets.iter().any(|net| (key & net.1) == net.0)
    }

    /// Recipient allowed (the full address as Postfix sends it in `recipient=`).
    pub fn recipient_allowed(&self, recipient: &str) -> bool {
        let lower = recipient.to_ascii_lowercase();
        lower
            .match_indices(['@', '.'])
            .any(|(at, _)| self.domains.contains(&lower[at + 1..]))
            || self.user_allowed(&lower)
            || self.rcpt_regexes.iter().any(|set| set.is_match(recipient))
    }

    /// `user@` and `user@domain` entries: postgrey's `^USER(?:\+[^@]+)?\@(DOMAIN$)?`.
    fn user_allowed(&self, lower: &str) -> bool {
        let Some((local, domain)) = lower.split_once('@') else {
            return false;
        };
        let at_domain = self.addresses.get(domain);
        let unextended = local
            .match_indices('+')
            .filter(|(plus, _)| plus + 1 < local.len())
            .map(|(plus, _)| &local[..plus]);
        std::iter::once(local).chain(unextended).any(|user| {
            self.users.contains(user) || at_domain.is_some_and(|users| users.contains(user))
        })
    }

    /// One client line that is not a regex.
    fn add_client(&mut self, line: &str) -> Result<(), String> {
        let net = if let Some(net) = ipv4_net(line) {
            net.map_err(|why| format!("invalid IPv4 entry {line:?}: {why}"))?
        } else if line.matches(':').count() >= 2 {
            ipv6_net(line).map_err(|why| format!("invalid IPv6 entry {line:?}: {why}"))?
        } else if line.contains(is_perl_space) {
            return Err(format!("doesn't look like a hostname: {line:?}"));
        } else {
            self.names.insert(line.to_ascii_lowercase());
            return Ok(());
        };
        self.nets.push(net);
        Ok(())
    }

    /// One recipient line that is not a regex (postgrey splits at the first `@`).
    fn add_recipient(&mut self, line: &str) -> Result<(), String> {
        if line.contains(is_perl_space) {
            return Err(format!("doesn't look like an address: {line:?}"));
        }
        let line = line.to_ascii_lowercase();
        let (set, entry) = match line.split_once('@') {
            Some((user, "")) => (&mut self.users, user),
            Some((user, domain)) => (self.addresses.entry(domain.to_owned()).or_default(), user),
            None => (&mut self.domains, line.as_str()),
        };
        set.insert(entry.to_owned());
        Ok(())
    }
}

/// Parse a whole file of either kind, collecting every error.
fn parse(text: &str, origin: &str, kind: Kind) -> Result<Allowlist, Vec<String>> {
    let mut list = Allowlist::default();
    let mut regexes: Vec<&str> = Vec::new();
    let mut errors = Vec::new();
    for (index, line) in text.lines().map(strip_line).enumerate() {
        let added = match (regex_body(line), kind) {
            _ if line.is_empty() => continue,
            (Some(pattern), _) => check_regex(pattern).map(|()| regexes.push(pattern)),
            (None, Kind::Clients) => list.add_client(line),
            (None, Kind::Recipients) => list.add_recipient(line),
        };
        match added {
            Ok(()) => list.entries += 1,
            Err(reason) => errors.push(format!("{origin}:{}: {reason}", index + 1)),
        }
    }
    if !regexes.is_empty() {
        match RegexSetBuilder::new(regexes).case_insensitive(true).build() {
            Ok(set) if kind == Kind::Clients => list.client_regexes.push(set),
            Ok(set) => list.rcpt_regexes.push(set),
            Err(err) => errors.push(format!("{origin}: regexes together: {err}")),
        }
    }
    errors.is_empty().then_some(list).ok_or(errors)
}

/// Perl's `\s` on a byte string: ASCII space, tab, newline, CR, form feed, vertical tab.
fn is_perl_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// Postgrey's `s/#.*$//; s/^\s+//; s/\s+$//`.
fn strip_line(raw: &str) -> &str {
    let uncommented = raw.split_once('#').map_or(raw, |(before, _)| before);
    uncommented.trim_matches(is_perl_space)
}

/// The regex of a `/RE/` line (postgrey's `^\/(\S+)\/$`).
fn regex_body(line: &str) -> Option<&str> {
    let body = line.strip_prefix('/')?.strip_suffix('/')?;
    (!body.is_empty() && !body.contains(is_perl_space)).then_some(body)
}

/// Compile one regex alone, so that a bad one is reported with its line (with the last line
/// of the crate's message, which spans several).
fn check_regex(pattern: &str) -> Result<(), String> {
    let Err(err) = RegexBuilder::new(pattern).case_insensitive(true).build() else {
        return Ok(());
    };
    let text = err.to_string();
    let last = text.lines().rfind(|line| !line.trim().is_empty());
    let why = last.unwrap_or("").trim().trim_start_matches("error: ");
    Err(format!("invalid regex /{pattern}/: {why}"))
}

/// Postgrey's IPv4 shapes, `d.d.d.d(/NN)?`, `d.d.d` and `d.d` (each `d` one to three ASCII
/// digits, `NN` one or two), as NetAddr::IP builds them: a full address is a /32 (or its
/// `/NN`), two or three parts are padded with zeros into a /24. `None`: not such a shape.
fn ipv4_net(line: &str) -> Option<Result<Net, String>> {
    let (addr, mask) = line
        .split_once('/')
        .map_or((line, None), |(addr, mask)| (addr, Some(mask)));
    let parts: Vec<&str> = addr.split('.').collect();
    let prefix = match (parts.len(), mask) {
        (4, Some(mask)) if is_digits(mask, 2) => mask.parse::<u32>().unwrap_or(u32::MAX),
        (4, None) => 32,
        (2 | 3, None) => 24,
        _ => return None,
    };
    if !parts.iter().all(|part| is_digits(part, 3)) {
        return None;
    }
    if prefix > 32 {
        return Some(Err("netmask out of range".to_owned()));
    }
    let mut octets = [0u8; 4];
    for (slot, part) in octets.iter_mut().zip(&parts) {
        match octet(part) {
            Ok(value) => *slot = value,
            Err(why) => return Some(Err(why)),
        }
    }
    let addr = u128::from(u32::from_be_bytes(octets));
    Some(Ok(Net::new(addr, 96 + prefix)))
}

/// One to `max` ASCII digits.
fn is_digits(text: &str, max: usize) -> bool {
    (1..=max).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

/// One octet as NetAddr::IP (inet_aton) reads it: decimal, or octal after a leading zero.
fn octet(text: &str) -> Result<u8, String> {
    let (body, radix) = match text.strip_prefix('0') {
        Some(rest) if !rest.is_empty() => (rest, 8),
        _ => (text, 10),
    };
    u8::from_str_radix(body, radix).map_err(|_| format!("bad octet {text:?}"))
}

/// An IPv6 address with an optional `/len` (host bits dropped, as `within` ignores them).
fn ipv6_net(line: &str) -> Result<Net, String> {
    let (addr, prefix) = match line.split_once('/') {
        Some((addr, len)) if is_digits(len, 3) => {
            let len = len.parse::<u32>().ok().filter(|len| *len <= 128);
            (addr, len.ok_or("prefix length out of range")?)
        }
        Some(_) => return Err("bad prefix length".to_owned()),
        None => (line, 128),
    };
    let addr: Ipv6Addr = addr.parse().map_err(|_| "not an IPv6 address")?;
    Ok(Net::new(u128::from(addr), prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENTS: &str = "# comment\n   \t\r\nExample.COM   # trailing comment\r\n\
        /^smtp\\d+\\.orange\\.fr$/\n192.0.2.1\n198.51.100.7/24\n203.0.113\n10.1\n\
        010.0.0.1\n2001:db8::1/32\n1.2.3.4/100\n";

    fn client(list: &Allowlist, ip: &str, name: &str) -> bool {
        list.client_allowed(ip.parse().expect("test ip"), name)
    }

    #[test]
    fn client_forms_and_comments() {
        let list = Allowlist::parse_clients(CLIENTS, "c").expect("parses");
        assert_eq!(list.len(), 9);
        let table = [
            ("192.0.2.200", "example.com", true),
            ("192.0.2.200", "MAIL.example.com", true),
            ("192.0.2.200", "badexample.com", false),
            ("192.0.2.200", "example.com.evil.test", false),
            ("192.0.2.200", "smtp12.Orange.FR", true),
            ("192.0.2.200", "smtp.orange.fr", false),
            ("192.0.2.1", "unknown", true),
            ("192.0.2.2", "unknown", false),
            ("198.51.100.250", "unknown", true),
            ("198.51.101.1", "unknown", false),
            ("203.0.113.9", "unknown", true),
            ("203.0.114.9", "unknown", false),
            ("10.1.0.9", "unknown", true),
            ("10.1.2.9", "unknown", false), // postgrey's `a.b` is a.b.0.0/24
            ("8.0.0.1", "unknown", true),   // 010 is octal
            ("10.0.0.1", "unknown", false),
            ("2001:db8:ffff::25", "unknown", true),
            ("2001:db9::1", "unknown", false),
            ("::192.0.2.1", "unknown", true), // NetAddr::IP's ::a.b.c.d
            ("1.2.3.4", "unknown", false),    // `/100` made it a name
            ("1.2.3.4", "1.2.3.4/100", true),
        ];
        for (ip, name, want) in table {
            assert_eq!(client(&list, ip, name), want, "{ip} {name}");
        }
    }

    #[test]
    fn recipient_forms_and_comments() {
        let text = "# c\n\npostmaster@\nabuse@Example.ORG # c\nexample.net\n/^list-.*@lists\\./\n";
        let list = Allowlist::parse_recipients(text, "r").expect("parses");
        assert_eq!(list.len(), 4);
        let table = [
            ("postmaster@anything.test", true),
            ("PostMaster+tag@x.test", true),
            ("postmaster+@x.test", false),
            ("postmasterx@x.test", false),
            ("abuse@example.org", true),
            ("abuse+a+b@EXAMPLE.org", true),
            ("abuse@sub.example.org", false),
            ("abuse@example.com", false),
            ("joe@example.net", true),
            ("joe@mx.Example.NET", true),
            ("joe@badexample.net", false),
            ("LIST-foo@Lists.test", true),
            ("joe@example.org", false),
        ];
        for (recipient, want) in table {
            assert_eq!(list.recipient_allowed(recipient), want, "{recipient}");
        }
        let empty = Allowlist::parse_recipients("# nothing\n \n", "r");
        assert!(empty.is_ok_and(|list| list.is_empty()));
    }

    #[test]
    fn bad_lines_reported_with_numbers() {
        let text = "ok.test\nfoo bar\n/(unclosed/\n999.1.1.1\n1.2.3.4/33\n1::2::3\n08.1\n";
        let clients = Allowlist::parse_clients(text, "/etc/c").expect_err("bad lines");
        let recipients = Allowlist::parse_recipients("a@b\na b\n/[/\n", "r").expect_err("bad");
        let errors: Vec<String> = clients.into_iter().chain(recipients).collect();
        let at: Vec<&str> = errors
            .iter()
            .filter_map(|e| e.split_once(": "))
            .map(|e| e.0)
            .collect();
        let want = [
            "/etc/c:2", "/etc/c:3", "/etc/c:4", "/etc/c:5", "/etc/c:6", "/etc/c:7", "r:2", "r:3",
        ];
        assert_eq!(at, want, "{errors:?}");
    }

    #[test]
    fn extend_merges() {
        let mut list = Allowlist::parse_clients("a.test\n/^b\\./\n", "1").expect("parses");
        list.extend(Allowlist::parse_clients("192.0.2.0/24\n/^c\\./\n", "2").expect("parses"));
        list.extend(Allowlist::parse_recipients("x@d.test\n", "3").expect("parses"));
        list.extend(Allowlist::parse_recipients("y@d.test\n", "4").expect("parses"));
        assert_eq!(list.len(), 6);
        assert!(client(&list, "198.51.100.1", "a.test") && client(&list, "192.0.2.9", ""));
        assert!(client(&list, "198.51.100.1", "b.x") && client(&list, "198.51.100.1", "c.y"));
        assert!(list.recipient_allowed("x@d.test") && list.recipient_allowed("y+z@d.test"));
    }

    #[test]
    fn debian_installed_files() {
        let clients_path = "/etc/postgrey/whitelist_clients";
        let recipients_path = "/etc/postgrey/whitelist_recipients";
        let read = std::fs::read_to_string;
        let (Ok(clients), Ok(recipients)) = (read(clients_path), read(recipients_path)) else {
            eprintln!("skipping: postgrey's Debian allowlists are not installed");
            return;
        };
        let clients = Allowlist::parse_clients(&clients, clients_path).expect("clients");
        assert!(clients.len() > 100, "{}", clients.len());
        assert!(client(&clients, "192.0.2.1", "mail-yw1-f170.google.com"));
        assert!(client(&clients, "192.0.2.1", "smtp12.orange.fr"));
        assert!(client(&clients, "195.235.39.7", "unknown"));
        assert!(client(&clients, "2a01:4180:4051:800::25", "unknown"));
        assert!(!client(&clients, "192.0.2.1", "mail.example.com"));
        let recipients = Allowlist::parse_recipients(&recipients, recipients_path).expect("rcpt");
        assert!(recipients.recipient_allowed("Postmaster@example.com"));
        assert!(recipients.recipient_allowed("abuse+x@example.com"));
        assert!(!recipients.recipient_allowed("joe@example.com"));
    }
}
