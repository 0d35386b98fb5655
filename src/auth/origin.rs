//! Where a message came from: the original client's IP and HELO, whether Postfix picked it
//! up locally, whether the client authenticated, and so whether the message is outbound.
//!
//! XFORWARD is the first source (Postfix forwards it to content filters). Without it, the
//! `Received:` header added by the first trusted hop is read; `trusted_hops` says which
//! one (1 = the topmost, added by the Postfix in front of us). Where neither says, the IP
//! stays unknown and the checks that need it are skipped, never guessed.

use crate::message::HeaderBlock;
use crate::smtp::envelope::{Envelope, XforwardAttr};
use ipnet::IpNet;
use std::net::IpAddr;

/// The original client of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The client's address, when known.
    pub ip: Option<IpAddr>,
    /// The HELO name it used (empty when unknown).
    pub helo: String,
    /// Postfix picked the message up locally (`sendmail`): XFORWARD SOURCE=LOCAL.
    pub local: bool,
    /// The client authenticated (SMTP AUTH), as the trusted Received header says.
    pub authenticated: bool,
    /// The SASL login, when Postfix wrote it (`smtpd_sasl_authenticated_header = yes`:
    /// "(Authenticated sender: user)" in its Received header). XFORWARD does not carry it.
    pub sasl_user: Option<String>,
    /// Where `ip`/`helo` came from: `xforward`, `received` or `none`.
    pub source: &'static str,
}

/// Which mail counts as originating (outbound): signed, and not verified as inbound.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OriginPolicy {
    /// Client networks whose mail is ours (e.g. the office LAN, a webmail host).
    pub networks: Vec<IpNet>,
    /// Mail Postfix picked up locally (`sendmail`, XFORWARD SOURCE=LOCAL).
    pub local: bool,
    /// Mail from clients that authenticated (submission with SMTP AUTH).
    pub authenticated: bool,
}

impl OriginPolicy {
    /// True when `origin` is one of ours.
    pub(crate) fn is_originating(&self, origin: &Origin) -> bool {
        (self.local && origin.local)
            || (self.authenticated && origin.authenticated)
            || origin
                .ip
                .is_some_and(|ip| self.networks.iter().any(|n| n.contains(&ip)))
    }
}

impl OriginPolicy {
    /// True when mail from `origin` is relayed for a client that is neither authenticated
    /// nor in our networks: a local pickup or a loopback client included (a tunnel that
    /// ends on the server looks like one).
    pub fn is_relay(&self, origin: &Origin) -> bool {
        !origin.authenticated
            && !origin
                .ip
                .is_some_and(|ip| self.networks.iter().any(|n| n.contains(&ip)))
    }
}

impl Origin {
    /// Find the origin of a message from its envelope and headers.
    pub fn find(env: &Envelope, msg: &[u8], headers: &HeaderBlock, trusted_hops: usize) -> Self {
        let mut received = headers
            .named(msg, "Received")
            .map(|f| &msg[f.value.clone()]);
        // The topmost Received header was added by the Postfix in front of us: it says
        // whether the client authenticated ("with ESMTPA"/"ESMTPSA", RFC 3848).
        let top = received.next();
        let sasl_user = top.and_then(sasl_user_of);
        let authenticated = top.is_some_and(says_authenticated)
            || env
                .xforward
                .get(XforwardAttr::Proto)
                .is_some_and(|p| p.ends_with('A') && p.len() > 4);
        let local = env
            .xforward
            .get(XforwardAttr::Source)
            .is_some_and(|s| s.eq_ignore_ascii_case("LOCAL"));
        let forwarded_helo = || {
            env.xforward
                .get(XforwardAttr::Helo)
                .unwrap_or_default()
                .to_string()
        };
        if let Some(ip) = env.xforward.addr() {
            return Origin {
                ip: Some(ip),
                helo: forwarded_helo(),
                local,
                authenticated,
                sasl_user: sasl_user.clone(),
                source: "xforward",
            };
        }
        let hop = match trusted_hops {
            0 => None,
            1 => top,
            n => received.nth(n - 2),
        };
        match hop.and_then(parse_received) {
            Some((helo, ip)) => Origin {
                ip: Some(ip),
                helo,
                local,
                authenticated,
                sasl_user: sasl_user.clone(),
                source: "received",
            },
            None => Origin {
                ip: None,
                helo: forwarded_helo(),
                local,
                authenticated,
                sasl_user: sasl_user.clone(),
                source: "none",
            },
        }
    }
}

/// The login in Postfix's "(Authenticated sender: user)".
fn sasl_user_of(value: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(value);
    let rest = &text[text.find("(Authenticated sender:")? + 22..];
    let user = rest[..rest.find(')')?].trim();
    (!user.is_empty()).then(|| user.to_string())
}

/// "with ESMTPA", "with ESMTPSA", "with LMTPA" ... or Postfix's "(Authenticated sender: x)".
fn says_authenticated(value: &[u8]) -> bool {
    let text = String::from_utf8_lossy(value);
    if text.contains("(Authenticated sender:") {
        return true;
    }
    let mut words = text.split_ascii_whitespace();
    while let Some(w) = words.next() {
        if w.eq_ignore_ascii_case("with")
            && let Some(proto) = words.next()
        {
            let p = proto.trim_end_matches(';').to_ascii_uppercase();
            return p.ends_with("SMTPA") || p.ends_with("SMTPSA") || p.ends_with("LMTPA");
        }
    }
    false
}

/// The HELO name and client IP of `from HELO (rdns [IP])`, as Postfix, Sendmail, Exim and
/// filterd itself write them.
fn parse_received(value: &[u8]) -> Option<(String, IpAddr)> {
    let text = String::from_utf8_lossy(value);
    let rest = text.trim_start().strip_prefix("from")?;
    let rest = rest.trim_start();
    let helo_end = rest
        .find(|c: char| c.is_ascii_whitespace() || c == '(')
        .unwrap_or(rest.len());
    let helo = rest[..helo_end].to_string();
    let comment = rest[helo_end..].trim_start().strip_prefix('(')?;
    let comment = &comment[..comment.find(')')?];
    let open = comment.rfind('[')?;
    let close = open + comment[open..].find(']')?;
    let literal = &comment[open + 1..close];
    let literal = literal
        .strip_prefix("IPv6:")
        .or_else(|| literal.strip_prefix("IPV6:"))
        .unwrap_or(literal);
    let ip = literal.parse().ok()?;
    Some((helo, ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_lines() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            (
                " from mail.example.com (mail.example.com [192.0.2.1])\r\n\tby mx.example.net (Postfix) with ESMTPS id 4Xy; Mon, 1 Jan 2026 00:00:00 +0000",
                Some(("mail.example.com", "192.0.2.1")),
            ),
            (
                " from helo.test (unknown [IPv6:2001:db8::5]) by mx",
                Some(("helo.test", "2001:db8::5")),
            ),
            (" from x ([198.51.100.7])", Some(("x", "198.51.100.7"))),
            (" by mx.example.net with ESMTP", None),
            (" from x (no address here)", None),
            (" from x (y [not-an-ip])", None),
            (" from", None),
        ];
        for (line, want) in cases {
            let got = parse_received(line.as_bytes());
            let want = want.map(|(h, ip)| (h.to_string(), ip.parse::<IpAddr>().unwrap()));
            assert_eq!(got, want, "{line}");
        }
    }

    #[test]
    fn authenticated_submission() {
        assert!(says_authenticated(
            b" from a (b [192.0.2.1]) by mx (Postfix) with ESMTPSA id X;"
        ));
        assert!(says_authenticated(
            b" from a (b [192.0.2.1]) (Authenticated sender: bob) by mx with ESMTP id X;"
        ));
        assert_eq!(
            sasl_user_of(b" from a (b [192.0.2.1]) (Authenticated sender: bob@x.test) by mx")
                .as_deref(),
            Some("bob@x.test")
        );
        assert_eq!(sasl_user_of(b" from a (Authenticated sender: )"), None);
        assert_eq!(sasl_user_of(b" from a (Authenticated sender: bob"), None);
        assert!(!says_authenticated(
            b" from a (b [192.0.2.1]) by mx (Postfix) with ESMTPS id X;"
        ));
        assert!(!says_authenticated(b" from a by mx"));
    }

    #[test]
    fn policy() {
        let p = OriginPolicy {
            networks: vec!["10.0.0.0/8".parse().unwrap()],
            local: true,
            authenticated: false,
        };
        let mut o = Origin {
            ip: Some("10.1.2.3".parse().unwrap()),
            ..Origin::default()
        };
        assert!(p.is_originating(&o));
        o.ip = Some("192.0.2.1".parse().unwrap());
        assert!(!p.is_originating(&o));
        o.authenticated = true;
        assert!(!p.is_originating(&o));
        o.local = true;
        assert!(p.is_originating(&o));
    }
}
