//! Sender authentication: SPF (MAIL FROM and HELO), DKIM, DMARC and ARC, computed once per
//! message before the checks, under one DNS time budget; the `Authentication-Results:`
//! header (RFC 8601); and DKIM signing of outbound mail ([`sign`]).
//!
//! Everything that touches the network happens here (mail-auth over hickory's resolver,
//! whose cache keeps answers for their TTL up to a bounded number of entries). A timeout or
//! DNS failure becomes a temperror result and a hit, never a stalled or failed message.

pub mod origin;
pub mod sign;

use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput,
    DmarcResult, MessageAuthenticator, SpfOutput, SpfResult,
};
use origin::{Origin, OriginPolicy};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::time::Instant;

/// Verification settings, validated.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// The authserv-id of our Authentication-Results header.
    pub authserv_id: String,
    /// One budget for all DNS work of a message.
    pub budget: Duration,
    /// Nameservers (IP:port); empty = the system resolver (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Per-query timeout.
    pub dns_timeout: Duration,
    /// Tries per query.
    pub dns_attempts: usize,
    /// Cached answers (kept for their TTL).
    pub cache_size: u64,
}

/// Everything sender authentication needs at run time.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// The verifier, when verification is on.
    pub verifier: Option<std::sync::Arc<Verifier>>,
    /// The DKIM signer, when keys are configured.
    pub signer: Option<std::sync::Arc<sign::Signer>>,
    /// Which mail is ours (outbound).
    pub origin: OriginPolicy,
    /// Which Received header tells the client when XFORWARD does not (1 = topmost; 0 = never).
    pub trusted_hops: usize,
    /// Also verify mail that the origin policy calls originating.
    pub verify_originating: bool,
}

/// The verifier: one resolver (with its cache) for every session.
pub struct Verifier {
    settings: AuthSettings,
    resolver: MessageAuthenticator,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The outcome of one authentication method, as RFC 8601 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    /// pass
    Pass,
    /// fail
    Fail,
    /// softfail (SPF only)
    SoftFail,
    /// neutral
    Neutral,
    /// none
    None,
    /// temperror: DNS trouble or the time budget ran out
    TempError,
    /// permerror: a broken record or signature
    PermError,
}

impl AuthResult {
    /// The RFC 8601 result keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Pass => "pass",
            AuthResult::Fail => "fail",
            AuthResult::SoftFail => "softfail",
            AuthResult::Neutral => "neutral",
            AuthResult::None => "none",
            AuthResult::TempError => "temperror",
            AuthResult::PermError => "permerror",
        }
    }

    fn from_spf(r: SpfResult) -> Self {
        match r {
            SpfResult::Pass => AuthResult::Pass,
            SpfResult::Fail => AuthResult::Fail,
            SpfResult::SoftFail => AuthResult::SoftFail,
            SpfResult::Neutral => AuthResult::Neutral,
            SpfResult::TempError => AuthResult::TempError,
            SpfResult::PermError => AuthResult::PermError,
            SpfResult::None => AuthResult::None,
        }
    }

    fn from_dkim(r: &DkimResult) -> Self {
        match r {
            DkimResult::Pass => AuthResult::Pass,
            DkimResult::Neutral(_) => AuthResult::Neutral,
            DkimResult::Fail(_) => AuthResult::Fail,
            DkimResult::PermError(_) => AuthResult::PermError,
            DkimResult::TempError(_) => AuthResult::TempError,
            DkimResult::None => AuthResult::None,
        }
    }
}

/// One DKIM signature's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimVerdict {
    /// Its result.
    pub result: AuthResult,
    /// Its `d=` domain (empty when the signature did not parse).
    pub domain: String,
    /// `d=` is the From domain or a parent of it (the author's own signature).
    pub author: bool,
}

/// DMARC's outcome for the From domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcVerdict {
    /// Aligned SPF or DKIM pass.
    Pass,
    /// Failed, with the policy to apply (after `t=y` and `pct`).
    Fail(DmarcPolicy),
    /// The domain publishes no DMARC record (or the From header has no single domain).
    Missing,
    /// DNS trouble or the time budget ran out.
    TempError,
    /// A broken record.
    PermError,
}

/// A DMARC policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcPolicy {
    /// p=none: monitor only.
    None,
    /// p=quarantine.
    Quarantine,
    /// p=reject.
    Reject,
}

impl DmarcPolicy {
    /// The `p=` keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }
}

impl DmarcVerdict {
    /// The RFC 8601 result keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcVerdict::Pass => "pass",
            DmarcVerdict::Fail(_) => "fail",
            DmarcVerdict::Missing => "none",
            DmarcVerdict::TempError => "temperror",
            DmarcVerdict::PermError => "permerror",
        }
    }
}

/// Everything verification found for one message; owned, so it can travel to the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthVerdict {
    /// The client was not known (no XFORWARD, no trusted Received): SPF was skipped.
    pub no_client_ip: bool,
    /// SPF for MAIL FROM (or postmaster@HELO for the null sender); `None` when skipped.
    pub spf: Option<AuthResult>,
    /// SPF for the HELO name; `None` when skipped (no IP, or HELO is an address literal).
    pub spf_helo: Option<AuthResult>,
    /// Every DKIM signature.
    pub dkim: Vec<DkimVerdict>,
    /// DMARC for the From domain.
    pub dmarc: DmarcVerdict,
    /// The ARC chain.
    pub arc: AuthResult,
    /// The Authentication-Results header, CRLF-terminated.
    pub header: String,
}

/// Why a Verifier could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ResolverError(String);

impl Verifier {
    /// Build the resolver. Reads `/etc/resolv.conf` when no nameservers are configured.
    pub fn new(settings: AuthSettings) -> Result<Self, ResolverError> {
        use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig};
        let (config, mut opts) = if settings.nameservers.is_empty() {
            mail_auth::hickory_resolver::system_conf::read_system_conf().map_err(|e| {
                ResolverError(format!(
                    "cannot use the system resolver (/etc/resolv.conf): {e}; set [auth] nameservers"
                ))
            })?
        } else {
            let servers = settings
                .nameservers
                .iter()
                .map(|a| {
                    let mut ns = NameServerConfig::udp_and_tcp(a.ip());
                    for c in &mut ns.connections {
                        c.port = a.port();
                    }
                    ns
                })
                .collect();
            (
                ResolverConfig::from_name_servers(servers),
                Default::default(),
            )
        };
        opts.timeout = settings.dns_timeout;
        opts.attempts = settings.dns_attempts;
        opts.cache_size = settings.cache_size;
        opts.edns0 = true;
        let resolver = MessageAuthenticator::new(config, opts)
            .map_err(|e| ResolverError(format!("cannot build the DNS resolver: {e}")))?;
        Ok(Verifier { settings, resolver })
    }

    /// The settings.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Verify one message from `origin` with envelope sender `sender`, within the budget.
    pub async fn verify(&self, msg: &[u8], origin: &Origin, sender: &str) -> AuthVerdict {
        let deadline = Instant::now() + self.settings.budget;
        let r = &self.resolver;
        let host = self.settings.authserv_id.as_str();
        let helo = origin.helo.as_str();
        let helo_is_name = !helo.is_empty() && !helo.starts_with('[') && helo.contains('.');
        let timed_out =
            || mail_auth::Error::Dns(mail_auth::DnsError::Resolver("time budget exceeded".into()));

        let parsed = AuthenticatedMessage::parse(msg);
        let from_domain = parsed
            .as_ref()
            .and_then(|m| m.from.first())
            .and_then(|f| f.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();

        // SPF (both identities), DKIM and ARC at once; DMARC needs SPF and DKIM.
        let spf = async {
            let Some(ip) = origin.ip else {
                return (None, None);
            };
            let mail_from = async {
                tokio::time::timeout_at(
                    deadline,
                    r.verify_spf(SpfParameters::verify_mail_from(ip, helo, host, sender)),
                )
                .await
                .unwrap_or_else(|_| {
                    SpfOutput::new(spf_domain(sender, helo).to_string())
                        .with_result(SpfResult::TempError)
                })
            };
            let ehlo = async {
                if !helo_is_name {
                    return None;
                }
                Some(
                    tokio::time::timeout_at(
                        deadline,
                        r.verify_spf(SpfParameters::verify_ehlo(ip, helo, host)),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        SpfOutput::new(helo.to_string()).with_result(SpfResult::TempError)
                    }),
                )
            };
            let (m, h) = tokio::join!(mail_from, ehlo);
            (Some(m), h)
        };
        let dkim = async {
            let Some(m) = &parsed else { return vec![] };
            if m.dkim_headers.is_empty() {
                return vec![];
            }
            tokio::time::timeout_at(deadline, r.verify_dkim(m))
                .await
                .unwrap_or_else(|_| vec![DkimOutput::temp_err(timed_out())])
        };
        let arc = async {
            let Some(m) = &parsed else {
                return ArcOutput::default();
            };
            if m.ams_headers.is_empty() && m.as_headers.is_empty() && m.aar_headers.is_empty() {
                return ArcOutput::default();
            }
            tokio::time::timeout_at(deadline, r.verify_arc(m))
                .await
                .unwrap_or_else(|_| {
                    ArcOutput::default().with_result(DkimResult::TempError(timed_out()))
                })
        };
        let ((spf, spf_helo), dkim, arc) = tokio::join!(spf, dkim, arc);

        let mail_from_domain = spf_domain(sender, helo).to_ascii_lowercase();
        let dmarc_out = match &parsed {
            Some(m) if !from_domain.is_empty() => {
                let none = SpfOutput::new(mail_from_domain.clone());
                let spf_for_dmarc = spf.as_ref().unwrap_or(&none);
                let out = tokio::time::timeout_at(
                    deadline,
                    r.verify_dmarc(DmarcParameters::new(
                        m,
                        &dkim,
                        &mail_from_domain,
                        spf_for_dmarc,
                    )),
                )
                .await;
                Some(out.unwrap_or_else(|_| {
                    DmarcOutput::new(from_domain.clone())
                        .with_dkim_result(DmarcResult::TempError(timed_out()))
                        .with_spf_result(DmarcResult::TempError(timed_out()))
                }))
            }
            _ => None,
        };
        let dmarc = match &dmarc_out {
            None => DmarcVerdict::Missing,
            Some(d) => self.dmarc_verdict(d, deadline).await,
        };

        // The header, in the order most tools print it: dkim, spf, dmarc, arc.
        let mut ar = AuthenticationResults::new(host).with_dkim_results(&dkim, &from_domain);
        if let (Some(ip), Some(out)) = (origin.ip, &spf) {
            ar = ar.with_spf_mailfrom_result(out, ip, sender, helo);
        }
        if let (Some(ip), Some(out)) = (origin.ip, &spf_helo) {
            ar = ar.with_spf_ehlo_result(out, ip, helo);
        }
        let mut header = format!("Authentication-Results: {ar}");
        if dkim.is_empty() {
            header.push_str(";\r\n\tdkim=none");
        }
        // DMARC and ARC are written here: mail-auth prints `dmarc=none` for a message that
        // fails DMARC without any passing identifier, and ARC knows only none/pass/fail
        // (RFC 8617 section 4.4).
        header.push_str(";\r\n\tdmarc=");
        header.push_str(dmarc.as_str());
        if !from_domain.is_empty() && is_domain(&from_domain) {
            header.push_str(" header.from=");
            header.push_str(&from_domain);
        }
        if let DmarcVerdict::Fail(p) = dmarc {
            header.push_str(" policy.dmarc=");
            header.push_str(p.as_str());
        }
        let arc_result = match AuthResult::from_dkim(arc.result()) {
            r @ (AuthResult::Pass | AuthResult::None | AuthResult::TempError) => r,
            _ => AuthResult::Fail,
        };
        header.push_str(";\r\n\tarc=");
        header.push_str(arc_result.as_str());
        if let Some(ip) = origin.ip {
            header.push_str(&format!(" smtp.remote-ip={}", ip_pvalue(ip)));
        }
        header.push_str("\r\n");

        AuthVerdict {
            no_client_ip: origin.ip.is_none(),
            spf: spf.as_ref().map(|o| AuthResult::from_spf(o.result())),
            spf_helo: spf_helo.as_ref().map(|o| AuthResult::from_spf(o.result())),
            dkim: dkim
                .iter()
                .map(|o| {
                    let domain = o
                        .signature()
                        .map(|s| s.d.to_ascii_lowercase())
                        .unwrap_or_default();
                    DkimVerdict {
                        result: AuthResult::from_dkim(o.result()),
                        author: !domain.is_empty() && is_same_or_parent(&domain, &from_domain),
                        domain,
                    }
                })
                .collect(),
            dmarc,
            arc: arc_result,
            header,
        }
    }

    /// Classify DMARC's output; a failing message gets the record's policy, with RFC 7489's
    /// `pct` applied (DMARCbis' `t=y` is applied by mail-auth already).
    async fn dmarc_verdict(&self, d: &DmarcOutput, deadline: Instant) -> DmarcVerdict {
        let results = [d.spf_result(), d.dkim_result()];
        if results.contains(&&DmarcResult::Pass) {
            return DmarcVerdict::Pass;
        }
        if results
            .iter()
            .any(|r| matches!(r, DmarcResult::TempError(_)))
        {
            return DmarcVerdict::TempError;
        }
        if results
            .iter()
            .any(|r| matches!(r, DmarcResult::PermError(_)))
        {
            return DmarcVerdict::PermError;
        }
        if d.dmarc_record().is_none() {
            return DmarcVerdict::Missing;
        }
        let policy = match d.policy() {
            Policy::Reject => DmarcPolicy::Reject,
            Policy::Quarantine => DmarcPolicy::Quarantine,
            Policy::None | Policy::Unspecified => DmarcPolicy::None,
        };
        if policy == DmarcPolicy::None {
            return DmarcVerdict::Fail(policy);
        }
        let pct = tokio::time::timeout_at(deadline, self.dmarc_pct(d.domain()))
            .await
            .unwrap_or(100);
        DmarcVerdict::Fail(sample_policy(policy, pct, random_percent()))
    }

    /// The `pct=` of the DMARC record that applies to `domain` (the answers are in the
    /// resolver's cache from DMARC's own lookup); 100 when absent.
    async fn dmarc_pct(&self, domain: &str) -> u8 {
        let mut name = domain;
        loop {
            if let Ok(txt) = self
                .resolver
                .txt_raw_lookup(format!("_dmarc.{name}."))
                .await
            {
                let text = String::from_utf8_lossy(&txt).to_string();
                if text.trim_start().starts_with("v=DMARC1") {
                    return parse_pct(&text);
                }
            }
            match name.split_once('.') {
                Some((_, parent)) if parent.contains('.') => name = parent,
                _ => return 100,
            }
        }
    }
}

/// The domain SPF checks for MAIL FROM: the sender's, or the HELO name's for `<>`.
fn spf_domain<'a>(sender: &'a str, helo: &'a str) -> &'a str {
    sender.rsplit_once('@').map_or(helo, |(_, d)| d)
}

/// `a` is `b` or a parent domain of `b`.
fn is_same_or_parent(a: &str, b: &str) -> bool {
    a == b || (b.len() > a.len() && b.ends_with(a) && b.as_bytes()[b.len() - a.len() - 1] == b'.')
}

/// Safe to print as a pvalue: letters, digits, '-', '.', '_'.
fn is_domain(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

fn ip_pvalue(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        // A pvalue may not hold ':' unquoted.
        IpAddr::V6(v6) => format!("\"{v6}\""),
    }
}

fn parse_pct(record: &str) -> u8 {
    record
        .split(';')
        .filter_map(|tag| tag.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("pct"))
        .and_then(|(_, v)| v.trim().parse::<u32>().ok())
        .map_or(100, |v| v.min(100) as u8)
}

/// RFC 7489 6.6.4: the policy applies to `pct` percent of failing messages; the others get
/// the next weaker one. `roll` is uniform in 0..100.
fn sample_policy(policy: DmarcPolicy, pct: u8, roll: u8) -> DmarcPolicy {
    if roll < pct {
        policy
    } else {
        match policy {
            DmarcPolicy::Reject => DmarcPolicy::Quarantine,
            _ => DmarcPolicy::None,
        }
    }
}

fn random_percent() -> u8 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    (u16::from_le_bytes(b) % 100) as u8
}

/// True when an `Authentication-Results` value claims `authserv_id` (ours): such headers
/// arriving from outside are forgeries and are removed (RFC 8601 section 5).
pub fn claims_authserv_id(value: &[u8], authserv_id: &str) -> bool {
    let text = String::from_utf8_lossy(value);
    let mut rest = text.trim_start();
    // Skip leading comments: "(comment) id; ..."
    while let Some(r) = rest.strip_prefix('(') {
        match r.find(')') {
            Some(i) => rest = r[i + 1..].trim_start(),
            None => return false,
        }
    }
    let id: &str = rest
        .split(|c: char| c == ';' || c.is_ascii_whitespace() || c == '(')
        .next()
        .unwrap_or("");
    !id.is_empty() && id.eq_ignore_ascii_case(authserv_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_results_are_recognised() {
        assert!(claims_authserv_id(
            b" mx.example.net; spf=pass",
            "mx.example.net"
        ));
        assert!(claims_authserv_id(
            b" MX.Example.NET 1; none",
            "mx.example.net"
        ));
        assert!(claims_authserv_id(
            b" (forged) mx.example.net;\r\n\tdkim=pass",
            "mx.example.net"
        ));
        assert!(!claims_authserv_id(
            b" mx.example.org; spf=pass",
            "mx.example.net"
        ));
        assert!(!claims_authserv_id(
            b" mx.example.net.evil; none",
            "mx.example.net"
        ));
        assert!(!claims_authserv_id(b"", "mx.example.net"));
    }

    #[test]
    fn dmarc_pct_sampling() {
        assert_eq!(parse_pct("v=DMARC1; p=reject; pct=25"), 25);
        assert_eq!(parse_pct("v=DMARC1; p=reject"), 100);
        assert_eq!(parse_pct("v=DMARC1; PCT = 500 ;"), 100);
        assert_eq!(parse_pct("v=DMARC1; pct=x"), 100);
        use DmarcPolicy::*;
        assert_eq!(sample_policy(Reject, 25, 24), Reject);
        assert_eq!(sample_policy(Reject, 25, 25), Quarantine);
        assert_eq!(sample_policy(Quarantine, 0, 0), None);
        assert_eq!(sample_policy(Quarantine, 100, 99), Quarantine);
    }

    #[test]
    fn alignment() {
        assert!(is_same_or_parent("example.com", "example.com"));
        assert!(is_same_or_parent("example.com", "mail.example.com"));
        assert!(!is_same_or_parent("example.com", "badexample.com"));
        assert!(!is_same_or_parent("mail.example.com", "example.com"));
    }
}
