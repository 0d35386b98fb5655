//! Stage one of configuration, continued: the plain data of `[local_domains]` (which
//! recipients are ours) and `[policy_service]` (the Postfix policy delegation server with
//! greylisting, SPF at RCPT, the login map and the outbound guard's limits).

use serde::Deserialize;

/// `[local_domains]`: the domains whose recipients are local (amavisd-new's
/// `@local_domains_acl`); mail to any other recipient is outbound.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawLocalDomains {
    /// Domains (`example.com` exactly, `.example.com` also its subdomains), added to what
    /// Postfix says.
    pub domains: Vec<String>,
    /// Also ask the Postfix beside us (`postconf`): `mydestination`,
    /// `virtual_mailbox_domains`, `virtual_alias_domains`, `relay_domains`, and
    /// `mynetworks` for the policy service's exemptions.
    pub postconf: bool,
    /// Postfix's configuration directory (`postconf -c`); empty = Postfix's default.
    pub postfix_config_dir: String,
}

impl Default for RawLocalDomains {
    fn default() -> Self {
        RawLocalDomains {
            domains: vec![],
            postconf: true,
            postfix_config_dir: String::new(),
        }
    }
}

/// `[policy_service]`: the Postfix policy delegation server (`check_policy_service`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawPolicyService {
    /// Serve it.
    pub enabled: bool,
    /// Listen addresses (IP:port).
    pub listen: Vec<String>,
    /// Concurrent connections (Postfix keeps one per smtpd process).
    pub max_connections: usize,
    /// A connection idle this long is closed (Postfix's own client gives up after
    /// `smtpd_policy_service_max_idle`, 300 s).
    pub idle_timeout_secs: u64,
    /// Clients never greylisted or limited by the service (CIDR); empty = Postfix's
    /// `mynetworks` (see `[local_domains] postconf`), else loopback.
    pub exempt_networks: Vec<String>,
    /// `[policy_service.greylist]`
    pub greylist: RawGreylist,
    /// `[policy_service.spf]`
    pub spf: RawSpfAtRcpt,
    /// `[policy_service.login]`
    pub login: RawLogin,
    /// `[policy_service.limits]`
    pub limits: RawLimits,
}

impl Default for RawPolicyService {
    fn default() -> Self {
        RawPolicyService {
            enabled: false,
            listen: vec!["127.0.0.1:10023".into()],
            max_connections: 256,
            idle_timeout_secs: 600,
            exempt_networks: vec![],
            greylist: RawGreylist::default(),
            spf: RawSpfAtRcpt::default(),
            login: RawLogin::default(),
            limits: RawLimits::default(),
        }
    }
}

/// `[policy_service.greylist]`: postgrey's behaviour and defaults.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawGreylist {
    /// Greylist new triplets (client network, sender, recipient).
    pub enabled: bool,
    /// A retry is accepted this long after the first attempt (postgrey `--delay`).
    pub delay_secs: u64,
    /// A first retry later than this after the first attempt starts over (postgrey
    /// `--retry-window`, 2 days).
    pub retry_window_secs: u64,
    /// Triplets unseen this long are forgotten (postgrey `--max-age`).
    pub max_age_days: u64,
    /// A client whose mail passed greylisting this many times is no longer greylisted
    /// (postgrey `--auto-whitelist-clients`); 0 = never.
    pub auto_allowlist_after: u64,
    /// IPv4 clients are grouped by this prefix (postgrey's /24).
    pub ipv4_prefix: u8,
    /// IPv6 clients are grouped by this prefix.
    pub ipv6_prefix: u8,
    /// postgrey `whitelist_clients` files, read as they are.
    pub allow_clients_files: Vec<String>,
    /// postgrey `whitelist_recipients` files, read as they are.
    pub allow_recipients_files: Vec<String>,
    /// The deferral text (`%r` = the recipient domain, `%s` = seconds left).
    pub text: String,
    /// Prepend `X-Greylist:` to mail that passed after a delay.
    pub prepend_header: bool,
    /// Most triplets kept; past it the least recently seen go.
    pub max_entries: usize,
}

impl Default for RawGreylist {
    fn default() -> Self {
        RawGreylist {
            enabled: true,
            delay_secs: 300,
            retry_window_secs: 2 * 86_400,
            max_age_days: 35,
            auto_allowlist_after: 5,
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            allow_clients_files: vec![],
            allow_recipients_files: vec![],
            text: "Greylisted, try again later (%s seconds); see https://www.greylisting.org/"
                .into(),
            prepend_header: false,
            max_entries: 1_000_000,
        }
    }
}

/// `[policy_service.spf]`: SPF at RCPT with postfix-policyd-spf's semantics.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawSpfAtRcpt {
    /// Check SPF (needs `[auth] enabled`: the same resolver and budget).
    pub enabled: bool,
    /// Also check the HELO name.
    pub helo: bool,
    /// On `fail`: `reject` (550 5.7.23) or `prepend` (only the Received-SPF header).
    pub fail: String,
    /// On `softfail`: `prepend`, `defer` or `reject`.
    pub softfail: String,
    /// On `temperror`: `prepend` or `defer`.
    pub temperror: String,
}

impl Default for RawSpfAtRcpt {
    fn default() -> Self {
        RawSpfAtRcpt {
            enabled: true,
            helo: true,
            fail: "reject".into(),
            softfail: "prepend".into(),
            temperror: "prepend".into(),
        }
    }
}

/// `[policy_service.login]`: the SASL login must own the envelope sender.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawLogin {
    /// A map in the format of Postfix's `smtpd_sender_login_maps` (a text file:
    /// `address-or-@domain  login1,login2`); empty = off.
    pub sender_login_map: String,
    /// Senders every login may use (e.g. `noreply@example.com`).
    pub service_senders: Vec<String>,
    /// Authenticated mail with the null sender `<>` is allowed.
    pub allow_null_sender: bool,
}

impl Default for RawLogin {
    fn default() -> Self {
        RawLogin {
            sender_login_map: String::new(),
            service_senders: vec![],
            allow_null_sender: true,
        }
    }
}

/// `[policy_service.limits]`: the outbound guard's counters answered before queueing.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Refuse at RCPT what the guard would hold.
    pub enabled: bool,
    /// `defer` (DEFER_IF_PERMIT, 450) or `reject` (REJECT, 550).
    pub action: String,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            enabled: true,
            action: "defer".into(),
        }
    }
}
