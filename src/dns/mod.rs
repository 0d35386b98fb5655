//! DNS block lists: the client's IP address looked up in IP lists (`zen.spamhaus.org`,
//! `bl.spamcop.net`: reversed octets or nibbles under the zone), the registered domains of
//! the message's links in domain lists (`dbl.spamhaus.org`, SURBL-style), each answer's
//! return code mapped to a hit with its score. Queries go through the one resolver of
//! sender authentication (its nameservers, its cache: answers and NXDOMAINs are kept for
//! their TTL) and run at once, inside the message's one DNS budget; what has not answered
//! by then is left out. A list's "you may not query me" codes (Spamhaus' 127.255.255.x for
//! public resolvers, typos and over-use) are never hits: they are logged, at most once a
//! minute, saying to use a local resolver.

use crate::auth::Verifier;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

/// Bound on the link domains looked up per message.
pub const MAX_DOMAINS: usize = 20;

/// What a list is looked up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// The client's IP address.
    Ip,
    /// The registered domain of each link.
    Domain,
}

/// A return code (or a range of codes in the last octet) and its hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Code {
    /// First address of the range.
    pub from: Ipv4Addr,
    /// Last address of the range (the same for one code).
    pub to: Ipv4Addr,
    /// The hit.
    pub hit: &'static str,
    /// Its score.
    pub score: f64,
}

/// One block list.
#[derive(Debug, Clone, PartialEq)]
pub struct List {
    /// The zone queried under.
    pub zone: String,
    /// Ip or domain.
    pub kind: ListKind,
    /// Return codes that are hits.
    pub codes: Vec<Code>,
}

impl List {
    /// The hits an answer carries.
    fn hits_of(&self, answer: &[Ipv4Addr], out: &mut BTreeSet<&'static str>) {
        for a in answer {
            if is_refusal(*a) {
                refused(&self.zone, *a);
                continue;
            }
            for c in &self.codes {
                if (c.from..=c.to).contains(a) {
                    out.insert(c.hit);
                }
            }
        }
    }
}

/// 127.255.255.0/24: Spamhaus' (and others') answers that refuse the query, not list it.
fn is_refusal(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 127 && o[1] == 255 && o[2] == 255
}

fn refused(zone: &str, a: Ipv4Addr) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = crate::clock::now_unix();
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 60
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            zone,
            answer = %a,
            "the block list refuses our queries (127.255.255.254: through a public resolver; .255: too many queries); list hits are off until filterd asks through a local recursive resolver ([auth] nameservers)"
        );
    }
}

/// The block lists with the resolver they are asked through.
#[derive(Clone)]
pub struct Dnsbl {
    lists: Arc<Vec<List>>,
    resolver: Arc<Verifier>,
}

impl std::fmt::Debug for Dnsbl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dnsbl").field("lists", &self.lists).finish()
    }
}

impl Dnsbl {
    /// Lists asked through `resolver`.
    pub fn new(lists: Vec<List>, resolver: Arc<Verifier>) -> Self {
        Dnsbl {
            lists: Arc::new(lists),
            resolver,
        }
    }

    /// Whether any list looks up link domains (so the message's links are wanted).
    pub fn wants_domains(&self) -> bool {
        self.lists.iter().any(|l| l.kind == ListKind::Domain)
    }

    /// Ask every list about `client` and `domains` at once; the hits of what answered
    /// before `deadline`.
    pub async fn check(
        &self,
        client: Option<IpAddr>,
        domains: &[String],
        deadline: Instant,
    ) -> Vec<&'static str> {
        let mut jobs = tokio::task::JoinSet::new();
        for (i, list) in self.lists.iter().enumerate() {
            let names: Vec<String> = match list.kind {
                ListKind::Ip => client
                    .filter(|ip| is_public(*ip))
                    .map(|ip| vec![format!("{}.{}.", reversed(ip), list.zone)])
                    .unwrap_or_default(),
                ListKind::Domain => domains
                    .iter()
                    .take(MAX_DOMAINS)
                    .map(|d| format!("{d}.{}.", list.zone))
                    .collect(),
            };
            for name in names {
                let r = self.resolver.clone();
                jobs.spawn(async move { (i, r.lookup_a(&name).await) });
            }
        }
        let mut hits = BTreeSet::new();
        loop {
            match tokio::time::timeout_at(deadline, jobs.join_next()).await {
                Ok(Some(Ok((i, Ok(answer))))) => self.lists[i].hits_of(&answer, &mut hits),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    crate::metrics::METRICS.dns_budget_exceeded("dnsbl");
                    jobs.abort_all();
                    break;
                }
            }
        }
        hits.into_iter().collect()
    }
}

/// Ask the block lists about the client and the links of `msg` within the DNS budget;
/// none for our own mail (`originating`) or when no lists are on.
pub async fn listed(
    lists: Option<&Dnsbl>,
    msg: &[u8],
    client: Option<IpAddr>,
    originating: bool,
) -> Vec<&'static str> {
    let Some(lists) = lists.filter(|_| !originating) else {
        return vec![];
    };
    let domains = if lists.wants_domains() {
        crate::rules::view::link_domains(msg, MAX_DOMAINS)
    } else {
        vec![]
    };
    let deadline = Instant::now() + lists.resolver.settings().budget;
    lists.check(client, &domains, deadline).await
}

/// Worth asking a public list about (not private, loopback, link-local, documentation...).
/// Documentation ranges are asked: the tests list them.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            !(v.is_private()
                || v.is_loopback()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast())
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            !(v.is_loopback()
                || v.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// The query name of an address: `4.3.2.1` for 1.2.3.4, nibbles for IPv6.
pub fn reversed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v) => {
            let hex: String = v.octets().iter().map(|b| format!("{b:02x}")).collect();
            let nibbles: Vec<String> = hex.chars().rev().map(String::from).collect();
            nibbles.join(".")
        }
    }
}

/// Parse a return code: `127.0.0.2`, or a range in the last octet: `127.0.0.4-7`.
pub fn parse_code(s: &str) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let bad = || format!("`{s}` is not a return code (127.0.0.2 or 127.0.0.4-7)");
    let (ip, end) = match s.rsplit_once('-') {
        Some((ip, end)) => (ip, Some(end)),
        None => (s, None),
    };
    let from: Ipv4Addr = ip.trim().parse().map_err(|_| bad())?;
    let to = match end {
        None => from,
        Some(e) => {
            let last: u8 = e.trim().parse().map_err(|_| bad())?;
            let o = from.octets();
            if last < o[3] {
                return Err(bad());
            }
            Ipv4Addr::new(o[0], o[1], o[2], last)
        }
    };
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names() {
        assert_eq!(reversed("192.0.2.99".parse().unwrap()), "99.2.0.192");
        let v6 = reversed("2001:db8::1".parse().unwrap());
        assert!(
            v6.starts_with("1.0.0.0.") && v6.ends_with(".8.b.d.0.1.0.0.2"),
            "{v6}"
        );
        assert!(!is_public("10.1.2.3".parse().unwrap()));
        assert!(!is_public("127.0.0.1".parse().unwrap()));
        assert!(!is_public("fd00::1".parse().unwrap()));
        assert!(is_public("203.0.113.7".parse().unwrap()));
    }

    #[test]
    fn codes_and_refusals() {
        assert_eq!(
            parse_code("127.0.0.4-7"),
            Ok(("127.0.0.4".parse().unwrap(), "127.0.0.7".parse().unwrap()))
        );
        assert!(parse_code("127.0.0.7-4").is_err());
        assert!(parse_code("listed").is_err());
        let list = List {
            zone: "zen.test".into(),
            kind: ListKind::Ip,
            codes: vec![Code {
                from: "127.0.0.2".parse().unwrap(),
                to: "127.0.0.3".parse().unwrap(),
                hit: "T_SBL",
                score: 1.0,
            }],
        };
        let mut out = BTreeSet::new();
        list.hits_of(
            &[
                "127.255.255.254".parse().unwrap(),
                "127.0.0.9".parse().unwrap(),
            ],
            &mut out,
        );
        assert!(out.is_empty());
        list.hits_of(&["127.0.0.3".parse().unwrap()], &mut out);
        assert_eq!(out.into_iter().collect::<Vec<_>>(), ["T_SBL"]);
    }
}
