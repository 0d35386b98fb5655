//! Stage one of configuration: plain serde structs mirroring the TOML file, every key
//! optional, with the defaults documented in `filterd.toml.example` (a test keeps the two
//! equal). Unknown keys are refused.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `[server]`
    pub server: RawServer,
    /// `[next_hop]`
    pub next_hop: RawNextHop,
    /// `[scan]`
    pub scan: RawScan,
    /// `[levels]`
    pub levels: RawLevels,
    /// `[scores]`: hit name -> score, overriding the defaults.
    pub scores: BTreeMap<String, f64>,
    /// `[log]`
    pub log: RawLog,
    /// `[metrics]`: the Prometheus listener.
    pub metrics: RawMetrics,
    /// `[bayes]`
    pub bayes: RawBayes,
    /// `[model]`
    pub model: RawModel,
    /// `[auth]`
    pub auth: RawAuth,
    /// `[origin]`
    pub origin: RawOrigin,
    /// `[dkim]`
    pub dkim: RawDkim,
    /// `[actions]`: what happens to blocked mail (the default policy).
    pub actions: RawActions,
    /// `[lists]`: allow and block lists of the default policy.
    pub lists: RawLists,
    /// `[ratelimit]`: the outbound guard of the default policy.
    pub ratelimit: RawRateLimit,
    /// `[quarantine]`: the store.
    pub quarantine: RawQuarantine,
    /// `[[policy]]`: policy banks, first match wins.
    pub policy: Vec<RawPolicy>,
    /// `[local_domains]`: which recipients are ours.
    pub local_domains: super::raw_policyd::RawLocalDomains,
    /// `[policy_service]`: the Postfix policy delegation server.
    pub policy_service: super::raw_policyd::RawPolicyService,
    /// `[content]`: banned content, virus and banned destinies.
    pub content: super::raw_content::RawContent,
    /// `[clamd]`: virus scanning.
    pub clamd: super::raw_content::RawClamd,
    /// `[rules]`: the rule engine's files.
    pub rules: super::raw_content::RawRules,
    /// `[dnsbl]`: DNS block lists.
    pub dnsbl: super::raw_content::RawDnsbl,
    /// `[shared]`: state shared by several filterd hosts.
    pub shared: super::raw_shared::RawShared,
}

/// `[actions]`: destinies of the default policy (amavisd-new's `final_spam_destiny`,
/// `spam_quarantine_to`, `sa_spam_subject_tag`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawActions {
    /// What happens to mail at or above kill_level: `pass` (deliver tagged), `discard`
    /// (accept, do not deliver) or `reject` (554 at the end of DATA; Postfix bounces it).
    pub spam_destiny: String,
    /// Keep a quarantine copy of mail at or above kill_level (below quarantine_cutoff_level).
    pub spam_quarantine: bool,
    /// Prepended to the Subject of spam (at or above tag2_level); empty = leave it.
    pub subject_tag: String,
    /// Inbound mail failing DMARC of a domain that publishes `p=reject`: `score` (only the
    /// DMARC_REJECT hit counts) or `quarantine` (held, reason `dmarc`, unless allow-listed).
    pub dmarc_reject: String,
    /// The same for `p=quarantine`.
    pub dmarc_quarantine: String,
}

impl Default for RawActions {
    fn default() -> Self {
        RawActions {
            spam_destiny: "discard".into(),
            spam_quarantine: true,
            subject_tag: "***SPAM*** ".into(),
            dmarc_reject: "score".into(),
            dmarc_quarantine: "score".into(),
        }
    }
}

/// `[lists]`: allow and block lists. Senders and From domains: `user@example.com`,
/// `@example.com` or `example.com` (the domain), `.example.com` (and its subdomains).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawLists {
    /// Envelope senders whose mail scores at most 0.
    pub allow_senders: Vec<String>,
    /// Envelope senders whose mail scores at least 64.
    pub block_senders: Vec<String>,
    /// From domains whose mail scores at most 0 when the domain is authenticated.
    pub allow_from: Vec<String>,
    /// From domains whose mail scores at least 64.
    pub block_from: Vec<String>,
    /// Client networks whose mail scores at most 0.
    pub allow_clients: Vec<String>,
    /// Client networks whose mail scores at least 64.
    pub block_clients: Vec<String>,
}

/// `[ratelimit]`: the outbound guard (mail to recipients outside `[local_domains]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawRateLimit {
    /// Messages per window and key; 0 = off.
    pub messages: u64,
    /// The window, seconds.
    pub window_secs: u64,
    /// Keys counted: `user` (SASL login), `sender` (envelope sender), `client` (IP),
    /// `relay` (all relayed mail of one client class: loopback, local pickup, private,
    /// public).
    pub per: Vec<String>,
    /// All outbound mail together per window; 0 = no such limit.
    pub total_messages: u64,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        RawRateLimit {
            messages: 200,
            window_secs: 600,
            per: ["user", "sender", "client", "relay"]
                .map(String::from)
                .to_vec(),
            total_messages: 0,
        }
    }
}

/// `[quarantine]`: where held mail is kept and for how long.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawQuarantine {
    /// The directory; empty = `quarantine/` in the state directory (`[bayes] state_dir`,
    /// else `/var/lib/filterd` for root or `~/.local/state/filterd`).
    pub dir: String,
    /// Entries older than this are deleted; 0 = kept until purged.
    pub max_age_days: u64,
    /// The oldest entries are deleted while the messages take more; 0 = no limit.
    pub max_size_mb: u64,
}

impl Default for RawQuarantine {
    fn default() -> Self {
        RawQuarantine {
            dir: String::new(),
            max_age_days: 30,
            max_size_mb: 2048,
        }
    }
}

/// One `[[policy]]` bank: selectors (all given ones must match) and overrides (any key
/// left out comes from the default policy).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Its name, logged and stored with quarantined mail.
    pub name: String,
    /// Recipient domains (`example.com`; `.example.com` also its subdomains).
    #[serde(default)]
    pub recipient_domains: Vec<String>,
    /// Client networks (CIDR).
    #[serde(default)]
    pub client_networks: Vec<String>,
    /// `any`, `inbound` or `originating` (see `[origin]`).
    #[serde(default)]
    pub origin: Option<String>,
    /// Overrides `[levels] tag_level`.
    pub tag_level: Option<f64>,
    /// Overrides `[levels] tag2_level`.
    pub tag2_level: Option<f64>,
    /// Overrides `[levels] kill_level`.
    pub kill_level: Option<f64>,
    /// Overrides `[levels] quarantine_cutoff_level`.
    pub quarantine_cutoff_level: Option<f64>,
    /// Overrides `[levels] discard_cutoff_level`.
    pub discard_cutoff_level: Option<f64>,
    /// Overrides `[actions] spam_destiny`.
    pub spam_destiny: Option<String>,
    /// Overrides `[actions] spam_quarantine`.
    pub spam_quarantine: Option<bool>,
    /// Overrides `[actions] subject_tag`.
    pub subject_tag: Option<String>,
    /// Overrides `[actions] dmarc_reject`.
    pub dmarc_reject: Option<String>,
    /// Overrides `[actions] dmarc_quarantine`.
    pub dmarc_quarantine: Option<String>,
    /// Checks whose hits do not count here (`bayes`, `model`, `auth`, ...).
    #[serde(default)]
    pub skip_checks: Vec<String>,
    /// Replaces `[lists]` for this bank.
    pub lists: Option<RawLists>,
    /// Replaces `[ratelimit]` for this bank.
    pub ratelimit: Option<RawRateLimit>,
    /// Banned-rule exceptions of this bank, tried before `[content] allow`.
    #[serde(default)]
    pub allow_banned: Vec<String>,
}

/// `[auth]`: SPF, DKIM, DMARC and ARC verification of inbound mail.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    /// Verify senders and add an Authentication-Results header.
    pub enabled: bool,
    /// The authserv-id of our Authentication-Results header; empty = the server host name.
    /// Incoming Authentication-Results headers claiming it are removed (forgeries).
    pub authserv_id: String,
    /// One time budget for all DNS work of a message, milliseconds; what is left undone
    /// becomes a temperror result.
    pub budget_ms: u64,
    /// Nameservers as IP or IP:port; empty = the system resolver (/etc/resolv.conf).
    pub nameservers: Vec<String>,
    /// Timeout of one DNS query, milliseconds.
    pub dns_timeout_ms: u64,
    /// Tries per DNS query.
    pub dns_attempts: usize,
    /// DNS answers cached (each for its TTL).
    pub cache_size: u64,
    /// Without XFORWARD, the client is read from this Received header (1 = the topmost,
    /// added by the Postfix in front of filterd; 0 = never).
    pub trusted_hops: usize,
    /// Also verify mail that `[origin]` calls originating (outbound).
    pub verify_originating: bool,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            enabled: true,
            authserv_id: String::new(),
            budget_ms: 3000,
            nameservers: vec![],
            dns_timeout_ms: 1000,
            dns_attempts: 2,
            cache_size: 10_000,
            trusted_hops: 1,
            verify_originating: false,
        }
    }
}

/// `[origin]`: which mail is ours (originating, outbound): it is DKIM-signed and not
/// verified as inbound mail.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawOrigin {
    /// Client networks (CIDR) whose mail is ours, e.g. the office LAN or a webmail host.
    pub networks: Vec<String>,
    /// Mail Postfix picked up locally (sendmail; XFORWARD SOURCE=LOCAL).
    pub local: bool,
    /// Mail from clients that authenticated (the trusted Received header says ESMTPA/ESMTPSA).
    pub authenticated: bool,
}

impl Default for RawOrigin {
    fn default() -> Self {
        RawOrigin {
            networks: vec![],
            local: true,
            authenticated: true,
        }
    }
}

/// `[dkim]`: DKIM signing of originating mail.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawDkim {
    /// Header fields to sign (each one present is signed; From always).
    pub headers: Vec<String>,
    /// Signing keys, one `[[dkim.keys]]` table per domain and selector. Originating mail
    /// is signed with the key of its From domain, or of the nearest parent domain.
    pub keys: Vec<RawDkimKey>,
}

impl Default for RawDkim {
    fn default() -> Self {
        RawDkim {
            headers: [
                "From",
                "Reply-To",
                "Subject",
                "Date",
                "Message-ID",
                "To",
                "Cc",
                "MIME-Version",
                "Content-Type",
                "Content-Transfer-Encoding",
                "In-Reply-To",
                "References",
                "List-Unsubscribe",
                "List-Unsubscribe-Post",
            ]
            .map(String::from)
            .to_vec(),
            keys: vec![],
        }
    }
}

/// One `[[dkim.keys]]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawDkimKey {
    /// The signing domain (`d=`).
    pub domain: String,
    /// The selector (`s=`): the key's DNS record is at `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// `rsa` (rsa-sha256) or `ed25519` (ed25519-sha256).
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    /// The private key, PEM (as `filterd dkim-keygen` writes it).
    pub key_file: String,
}

fn default_algorithm() -> String {
    "rsa".into()
}

/// `[model]`: the ONNX model check.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawModel {
    /// Score messages with the model.
    pub enabled: bool,
    /// The model folder (`model.onnx` + `manifest.toml`); empty = the shipped `spam-lr`, found
    /// next to the binary's repository or in `/usr/share/filterd/models`.
    pub path: String,
}

impl Default for RawModel {
    fn default() -> Self {
        RawModel {
            enabled: true,
            path: String::new(),
        }
    }
}

/// `[server]`: where and how filterd listens.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// SMTP listen addresses.
    pub listen: Vec<String>,
    /// LMTP listen addresses (LHLO, one reply per recipient after DATA).
    pub lmtp_listen: Vec<String>,
    /// Client networks allowed to connect; everyone else gets 554 at connect.
    pub allow_clients: Vec<String>,
    /// Connections served at once; more get 421 4.7.0.
    pub max_connections: usize,
    /// Name in the greeting and the Received header; empty = the system host name.
    pub hostname: String,
    /// Largest message in bytes (advertised as SIZE).
    pub max_message_size: usize,
    /// Recipients per transaction.
    pub max_recipients: usize,
    /// Longest SMTP command line.
    pub max_command_line: usize,
    /// Longest message line: a safety limit, far above RFC 5321's 1000 octets.
    pub max_data_line: usize,
    /// Idle limit between commands, seconds.
    pub command_timeout_secs: u64,
    /// Idle limit while message content arrives, seconds.
    pub data_timeout_secs: u64,
    /// Once `data_timeout_secs` have passed since 354, message content must have arrived at
    /// this many bytes per second on average (Postfix's `smtpd_min_data_rate`); 0 = no floor.
    pub min_data_rate: u64,
    /// Errors (unknown, malformed, out-of-sequence commands) before the session ends with
    /// 421 (Postfix's `smtpd_hard_error_limit`).
    pub hard_error_limit: usize,
    /// Message content all sessions may hold at once, MB; past it DATA gets 452 4.3.1
    /// (Postfix retries later).
    pub max_bytes_in_flight_mb: u64,
    /// On SIGTERM, how long messages in flight may take to finish, seconds.
    pub shutdown_grace_secs: u64,
    /// Threads serving connections; 0 = one per CPU core.
    pub worker_threads: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: vec!["127.0.0.1:10024".into()],
            lmtp_listen: vec![],
            allow_clients: vec!["127.0.0.0/8".into(), "::1/128".into()],
            max_connections: 64,
            hostname: String::new(),
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 1000,
            max_command_line: 2048,
            max_data_line: 1024 * 1024,
            command_timeout_secs: 300,
            data_timeout_secs: 300,
            min_data_rate: 500,
            hard_error_limit: 20,
            max_bytes_in_flight_mb: 1024,
            shutdown_grace_secs: 60,
            worker_threads: 0,
        }
    }
}

/// `[next_hop]`: the only place filterd relays to.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawNextHop {
    /// Address of Postfix's reinjection listener.
    pub address: String,
    /// Our EHLO name there; empty = the server host name.
    pub helo_name: String,
    /// Connect limit, seconds.
    pub connect_timeout_secs: u64,
    /// Limit for each command reply, seconds.
    pub command_timeout_secs: u64,
    /// Limit for the reply after the content, seconds; keep it well below Postfix's
    /// `smtp_data_done_timeout` (1200 s in the recommended master.cf) or Postfix may deliver twice.
    pub data_done_timeout_secs: u64,
    /// Forward the original client's attributes with XFORWARD when the next hop offers it.
    pub xforward: bool,
    /// Keep idle next-hop connections this many seconds for reuse by later sessions
    /// (0: a connection per session).
    pub reuse_idle_secs: u64,
    /// RSETs (sent for every message that is not relayed) one next-hop connection may send
    /// before a fresh one replaces it; keep it below Postfix's `smtpd_junk_command_limit`
    /// (100), past which Postfix slows every reply down and then drops the connection.
    pub rset_limit: u32,
}

impl Default for RawNextHop {
    fn default() -> Self {
        RawNextHop {
            address: "127.0.0.1:10025".into(),
            helo_name: String::new(),
            connect_timeout_secs: 30,
            command_timeout_secs: 300,
            data_done_timeout_secs: 600,
            xforward: true,
            reuse_idle_secs: 10,
            rset_limit: 50,
        }
    }
}

/// `[scan]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawScan {
    /// Time budget to scan one message, milliseconds; past it the message gets 451.
    pub budget_ms: u64,
    /// A message that already carries this many of our own Received lines is in a mail loop
    /// and is refused with 554 5.4.6.
    pub max_passes: usize,
    /// Only the first this many KB of a message are scanned (the whole header block always);
    /// the whole message is still relayed, byte for byte.
    pub max_scan_kb: usize,
}

impl Default for RawScan {
    fn default() -> Self {
        RawScan {
            budget_ms: 5000,
            max_passes: 3,
            max_scan_kb: 1024,
        }
    }
}

/// `[levels]`: amavisd-new's levels.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawLevels {
    /// X-Spam-* headers are added at or above this score.
    pub tag_level: f64,
    /// Spam from here on: `X-Spam-Flag: YES`, `X-Spam-Status: Yes`.
    pub tag2_level: f64,
    /// Blocked from here on (logged as SPAM); what happens then is `[actions]`.
    pub kill_level: f64,
    /// At or above: blocked mail is not quarantined (amavisd-new's
    /// `spam_quarantine_cutoff_level`); unset = always.
    pub quarantine_cutoff_level: Option<f64>,
    /// At or above: blocked mail is discarded whatever its destiny; unset = never.
    pub discard_cutoff_level: Option<f64>,
}

impl Default for RawLevels {
    fn default() -> Self {
        RawLevels {
            tag_level: -999.0,
            tag2_level: 6.2,
            kill_level: 6.9,
            quarantine_cutoff_level: None,
            discard_cutoff_level: None,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// A tracing filter directive (`info`, `debug`, `filterd=debug` ...); `RUST_LOG` wins.
    pub level: String,
    /// Also log to syslog (`/dev/log`, program name `filterd` with its pid), besides stderr.
    pub syslog: bool,
    /// The syslog facility: `mail` (where Postfix and amavisd-new log), `daemon`, `user`,
    /// `local0` ... `local7`.
    pub syslog_facility: String,
    /// Log to the systemd journal in its native protocol, each message line with its fields
    /// (`FILTERD_MAIL_ID`, `FILTERD_CATEGORY`, ...), instead of plain lines on stderr: `auto`
    /// (when stderr is the journal, as under systemd), `on` or `off`.
    pub journald: String,
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// Where `/metrics` (Prometheus text format) and `/healthz` are served; empty = off.
    pub listen: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            listen: "127.0.0.1:9469".into(),
        }
    }
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
            syslog: false,
            syslog_facility: "mail".into(),
            journald: "auto".into(),
        }
    }
}

/// `[bayes]`: the trainable Bayes check.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawBayes {
    /// Score messages with the Bayes store.
    pub enabled: bool,
    /// Where the store lives; empty = `/var/lib/filterd` for root, else
    /// `$XDG_STATE_HOME/filterd` or `~/.local/state/filterd`.
    pub state_dir: String,
    /// Bayes does not vote until this many spam were learned.
    pub min_spam: u64,
    /// ... and this many ham.
    pub min_ham: u64,
    /// Expiry keeps the store near this many tokens (least recent and rarest go first).
    pub max_tokens: usize,
    /// Learn clear cases automatically, judged by the score without the Bayes hits.
    pub autolearn: bool,
    /// Autolearn as ham at or below this non-Bayes score.
    pub autolearn_ham_below: f64,
    /// Autolearn as spam at or above this non-Bayes score.
    pub autolearn_spam_above: f64,
}

impl Default for RawBayes {
    fn default() -> Self {
        RawBayes {
            enabled: true,
            state_dir: String::new(),
            min_spam: 200,
            min_ham: 200,
            max_tokens: 150_000,
            autolearn: false,
            autolearn_ham_below: 0.1,
            autolearn_spam_above: 12.0,
        }
    }
}
