//! Verification of one message: SPF for both identities, every DKIM signature and the ARC
//! chain at once, then DMARC on their results, all under one deadline. Whatever the budget
//! does not cover becomes a temperror result, never a wait.

use super::cache::TtlCache;
use super::results::{self, Found};
use super::{
    AuthResult, AuthSettings, AuthVerdict, DkimVerdict, DmarcPolicy, DmarcVerdict, ResolverError,
    Verifier,
};
use crate::auth::origin::Origin;
use crate::domain::is_within;
use crate::metrics::METRICS;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, DkimOutput, DkimResult, DmarcOutput, DmarcResult, MX,
    MessageAuthenticator, Parameters, RecordSet, SpfOutput, SpfResult, Txt,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tokio::time::Instant;

/// Parsed records, cached for their TTL (see [`TtlCache`]).
pub(super) struct Records {
    txt: TtlCache<Box<str>, Txt>,
    mx: TtlCache<Box<str>, RecordSet<MX>>,
    ipv4: TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    ipv6: TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
    ptr: TtlCache<IpAddr, RecordSet<Box<str>>>,
    /// SPF results the policy service found at RCPT, for the content scan of the same
    /// message: (client, HELO, sender) -> (MAIL FROM, HELO).
    spf: TtlCache<SpfKey, (SpfOutput, Option<SpfOutput>)>,
}

/// Client, HELO and sender (lower case) of one SPF evaluation.
type SpfKey = (IpAddr, Box<str>, Box<str>);

/// How long an SPF result found at RCPT is kept for the content scan.
const SPF_MEMO: std::time::Duration = std::time::Duration::from_secs(600);

fn spf_key(ip: IpAddr, helo: &str, sender: &str) -> SpfKey {
    (
        ip,
        helo.to_ascii_lowercase().into(),
        sender.to_ascii_lowercase().into(),
    )
}

impl Records {
    fn new(capacity: usize) -> Self {
        Records {
            txt: TtlCache::new(capacity, "txt"),
            mx: TtlCache::new(capacity, "mx"),
            ipv4: TtlCache::new(capacity, "a"),
            ipv6: TtlCache::new(capacity, "aaaa"),
            ptr: TtlCache::new(capacity, "ptr"),
            spf: TtlCache::new(capacity, "spf_result"),
        }
    }
}

/// The parameters of one mail-auth call, with the record caches.
type Cached<'x, P> = Parameters<
    'x,
    P,
    TtlCache<Box<str>, Txt>,
    TtlCache<Box<str>, RecordSet<MX>>,
    TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
    TtlCache<IpAddr, RecordSet<Box<str>>>,
>;

/// What every step of one verification shares.
struct Job<'a> {
    deadline: Instant,
    host: &'a str,
    helo: &'a str,
    sender: &'a str,
}

fn timed_out() -> mail_auth::Error {
    mail_auth::Error::Dns(mail_auth::DnsError::Resolver("time budget exceeded".into()))
}

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
        let records = Records::new(settings.cache_size as usize);
        Ok(Verifier {
            settings,
            resolver,
            records,
        })
    }

    /// `p` with the record caches.
    fn cached<P>(&self, p: P) -> Cached<'_, P> {
        let r = &self.records;
        Parameters::new(p)
            .with_txt_cache(&r.txt)
            .with_mx_cache(&r.mx)
            .with_ipv4_cache(&r.ipv4)
            .with_ipv6_cache(&r.ipv6)
            .with_ptr_cache(&r.ptr)
    }

    /// The settings.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// The A records of `name` (a block-list query) through the shared resolver and its
    /// cache; none for NXDOMAIN.
    pub async fn lookup_a(&self, name: &str) -> Result<Vec<Ipv4Addr>, String> {
        let (result, out) = match self.resolver.ipv4_lookup_raw(name).await {
            Ok(e) => ("answered", Ok(e.entry.to_vec())),
            Err(mail_auth::Error::Dns(mail_auth::DnsError::RecordNotFound(_))) => {
                ("nxdomain", Ok(vec![]))
            }
            Err(e) => ("error", Err(e.to_string())),
        };
        METRICS.dnsbl_lookups.with_label_values(&[result]).inc();
        out
    }

    /// Verify one message from `origin` with envelope sender `sender`, within the budget.
    pub async fn verify(&self, msg: &[u8], origin: &Origin, sender: &str) -> AuthVerdict {
        let job = Job {
            deadline: Instant::now() + self.settings.budget,
            host: self.settings.authserv_id.as_str(),
            helo: origin.helo.as_str(),
            sender,
        };
        let parsed = AuthenticatedMessage::parse(msg);
        let from_domain = parsed
            .as_ref()
            .and_then(|m| m.from.first())
            .and_then(|f| f.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        // SPF (both identities), DKIM and ARC at once; DMARC needs SPF and DKIM.
        let ((spf, spf_helo), dkim, arc) = tokio::join!(
            self.spf(&job, origin.ip),
            self.dkim(&job, parsed.as_ref()),
            self.arc(&job, parsed.as_ref())
        );
        let dmarc = match &parsed {
            Some(m) if !from_domain.is_empty() => {
                let out = self.dmarc(&job, m, &dkim, spf.as_ref(), &from_domain).await;
                self.dmarc_verdict(&out, job.deadline).await
            }
            _ => DmarcVerdict::Missing,
        };
        let arc = match AuthResult::from_dkim(arc.result()) {
            r @ (AuthResult::Pass | AuthResult::None | AuthResult::TempError) => r,
            _ => AuthResult::Fail,
        };
        let found = Found {
            spf: spf.as_ref(),
            spf_helo: spf_helo.as_ref(),
            dkim: &dkim,
            dmarc,
            arc,
        };
        AuthVerdict {
            no_client_ip: origin.ip.is_none(),
            spf: spf.as_ref().map(|o| AuthResult::from_spf(o.result())),
            spf_helo: spf_helo.as_ref().map(|o| AuthResult::from_spf(o.result())),
            dkim: dkim_verdicts(&dkim, &from_domain),
            dmarc,
            arc,
            header: results::header(job.host, origin.ip, sender, job.helo, &from_domain, &found),
        }
    }

    /// SPF for the policy service at RCPT (MAIL FROM, and HELO when it is a name), within
    /// the budget; a result that is not a temperror is kept for ten minutes, so the
    /// content scan of the same message reuses it instead of evaluating again.
    pub async fn spf_at_rcpt(
        &self,
        ip: IpAddr,
        helo: &str,
        sender: &str,
    ) -> (SpfOutput, Option<SpfOutput>) {
        let job = Job {
            deadline: Instant::now() + self.settings.budget,
            host: self.settings.authserv_id.as_str(),
            helo,
            sender,
        };
        let (m, h) = self.spf(&job, Some(ip)).await;
        let m = m.unwrap_or_else(|| SpfOutput::new(String::new()).with_result(SpfResult::None));
        if m.result() != SpfResult::TempError {
            use mail_auth::ResolverCache;
            let until = std::time::Instant::now() + SPF_MEMO;
            let key = spf_key(ip, helo, sender);
            self.records.spf.insert(key, (m.clone(), h.clone()), until);
        }
        (m, h)
    }

    /// SPF for MAIL FROM (postmaster@HELO for `<>`) and for the HELO name when it is a
    /// name; neither without a client IP. A result the policy service found is reused.
    async fn spf(
        &self,
        job: &Job<'_>,
        ip: Option<IpAddr>,
    ) -> (Option<SpfOutput>, Option<SpfOutput>) {
        let Some(ip) = ip else {
            return (None, None);
        };
        {
            use mail_auth::ResolverCache;
            if let Some((m, h)) = self.records.spf.get(&spf_key(ip, job.helo, job.sender)) {
                return (Some(m), h);
            }
        }
        let (helo, host, r) = (job.helo, job.host, &self.resolver);
        let helo_is_name = !helo.is_empty() && !helo.starts_with('[') && helo.contains('.');
        let mail_from = async {
            tokio::time::timeout_at(
                job.deadline,
                r.verify_spf(
                    self.cached(SpfParameters::verify_mail_from(ip, helo, host, job.sender)),
                ),
            )
            .await
            .unwrap_or_else(|_| {
                METRICS.dns_budget_exceeded("spf");
                SpfOutput::new(spf_domain(job.sender, helo).to_string())
                    .with_result(SpfResult::TempError)
            })
        };
        let ehlo = async {
            if !helo_is_name {
                return None;
            }
            Some(
                tokio::time::timeout_at(
                    job.deadline,
                    r.verify_spf(self.cached(SpfParameters::verify_ehlo(ip, helo, host))),
                )
                .await
                .unwrap_or_else(|_| {
                    METRICS.dns_budget_exceeded("spf");
                    SpfOutput::new(helo.to_string()).with_result(SpfResult::TempError)
                }),
            )
        };
        let (m, h) = tokio::join!(mail_from, ehlo);
        (Some(m), h)
    }

    /// Every DKIM signature.
    async fn dkim<'x>(
        &'x self,
        job: &Job<'_>,
        m: Option<&'x AuthenticatedMessage<'x>>,
    ) -> Vec<DkimOutput<'x>> {
        let Some(m) = m else { return vec![] };
        if m.dkim_headers.is_empty() {
            return vec![];
        }
        tokio::time::timeout_at(job.deadline, self.resolver.verify_dkim(self.cached(m)))
            .await
            .unwrap_or_else(|_| {
                METRICS.dns_budget_exceeded("dkim");
                vec![DkimOutput::temp_err(timed_out())]
            })
    }

    /// The ARC chain.
    async fn arc<'x>(
        &'x self,
        job: &Job<'_>,
        m: Option<&'x AuthenticatedMessage<'x>>,
    ) -> ArcOutput<'x> {
        let Some(m) = m else {
            return ArcOutput::default();
        };
        if m.ams_headers.is_empty() && m.as_headers.is_empty() && m.aar_headers.is_empty() {
            return ArcOutput::default();
        }
        tokio::time::timeout_at(job.deadline, self.resolver.verify_arc(self.cached(m)))
            .await
            .unwrap_or_else(|_| {
                METRICS.dns_budget_exceeded("arc");
                ArcOutput::default().with_result(DkimResult::TempError(timed_out()))
            })
    }

    /// DMARC for the From domain on the SPF and DKIM results.
    async fn dmarc(
        &self,
        job: &Job<'_>,
        m: &AuthenticatedMessage<'_>,
        dkim: &[DkimOutput<'_>],
        spf: Option<&SpfOutput>,
        from_domain: &str,
    ) -> DmarcOutput {
        let mail_from_domain = spf_domain(job.sender, job.helo).to_ascii_lowercase();
        let none = SpfOutput::new(mail_from_domain.clone());
        let params = DmarcParameters::new(m, dkim, &mail_from_domain, spf.unwrap_or(&none));
        tokio::time::timeout_at(
            job.deadline,
            self.resolver.verify_dmarc(self.cached(params)),
        )
        .await
        .unwrap_or_else(|_| {
            METRICS.dns_budget_exceeded("dmarc");
            DmarcOutput::new(from_domain.to_string())
                .with_dkim_result(DmarcResult::TempError(timed_out()))
                .with_spf_result(DmarcResult::TempError(timed_out()))
        })
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

/// Each signature's result, its `d=` domain and whether it is the author's.
fn dkim_verdicts(dkim: &[DkimOutput<'_>], from_domain: &str) -> Vec<DkimVerdict> {
    dkim.iter()
        .map(|o| {
            let domain = o
                .signature()
                .map(|s| s.d.to_ascii_lowercase())
                .unwrap_or_default();
            DkimVerdict {
                result: AuthResult::from_dkim(o.result()),
                author: !domain.is_empty() && is_within(from_domain, &domain),
                domain,
            }
        })
        .collect()
}

/// The domain SPF checks for MAIL FROM: the sender's, or the HELO name's for `<>`.
pub(super) fn spf_domain<'a>(sender: &'a str, helo: &'a str) -> &'a str {
    sender.rsplit_once('@').map_or(helo, |(_, d)| d)
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

#[cfg(test)]
mod tests {
    use super::*;

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
        // The author's signature: d= is the From domain or a parent of it.
        assert!(is_within("example.com", "example.com"));
        assert!(is_within("mail.example.com", "example.com"));
        assert!(!is_within("badexample.com", "example.com"));
        assert!(!is_within("example.com", "mail.example.com"));
    }
}
