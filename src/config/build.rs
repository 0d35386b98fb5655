//! Stage two of configuration: from the plain TOML data to runtime settings, collecting
//! every problem before failing, so `filterd --check-config` lists them all at once.

use super::check::{ConfigError, addresses, is_hostname, networks, positive};
use super::policy::QuarantineSettings;
use super::raw::RawConfig;
use crate::auth::AuthConfig;
use crate::model::bayes::BayesParams;
use crate::model::bayes_live::BayesLive;
use crate::model::bayes_store::default_state_dir;
use crate::model::onnx::{OnnxModel, default_model_dir};
use crate::policy::Policies;
use crate::smtp::codec::Limits;
use crate::smtp::relay::NextHop;
use crate::smtp::session::SessionConfig;
use crate::verdict::Levels;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Listener settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// SMTP listeners.
    pub listen: Vec<SocketAddr>,
    /// LMTP listeners.
    pub lmtp_listen: Vec<SocketAddr>,
    /// Allowed client networks.
    pub allow_clients: Vec<IpNet>,
    /// Connection cap.
    pub max_connections: usize,
    /// Drain limit on SIGTERM.
    pub shutdown_grace: Duration,
    /// Bytes of message content all sessions may hold at once.
    pub max_bytes_in_flight: u64,
    /// The metrics listener (`/metrics`, `/healthz`), when on.
    pub metrics: Option<SocketAddr>,
}

/// The syslog facilities `[log] syslog_facility` may name.
pub const SYSLOG_FACILITIES: &[&str] = &[
    "mail", "daemon", "user", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
    "local7",
];

/// `[log] journald`: when to log to the systemd journal natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journald {
    /// When stderr is the journal (`$JOURNAL_STREAM` names it, as systemd sets it).
    Auto,
    /// Always (an error line on stderr, and stderr logging, when the journal is not there).
    On,
    /// Never: plain lines on stderr.
    Off,
}

/// The validated runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listeners.
    pub server: ServerSettings,
    /// Per-session settings for SMTP listeners (LMTP ones copy it with `lmtp = true`).
    pub session: Arc<SessionConfig>,
    /// The next hop.
    pub next_hop: Arc<NextHop>,
    /// How long idle next-hop connections are kept for reuse (0: never reused).
    pub next_hop_idle: Duration,
    /// Levels of the default policy.
    pub levels: Levels,
    /// The default policy and the banks.
    pub policies: Arc<Policies>,
    /// The quarantine, when some policy uses it.
    pub quarantine: Option<QuarantineSettings>,
    /// Score of every hit name any check or rule can emit (defaults, rule files, then
    /// `[scores]`), as loaded at start.
    pub scores: BTreeMap<&'static str, f64>,
    /// The rule set and the scores in use (reloaded on SIGHUP).
    pub rules: Arc<crate::rules::live::LiveRules>,
    /// The DNS block lists, when on.
    pub dnsbl: Option<crate::dns::Dnsbl>,
    /// Our host name.
    pub hostname: String,
    /// Log filter directive.
    pub log_level: String,
    /// The syslog facility to log to besides stderr, when on (one of [`SYSLOG_FACILITIES`]).
    pub log_syslog: Option<String>,
    /// Whether to log to the journal natively.
    pub log_journald: Journald,
    /// Async worker threads (0: one per core).
    pub worker_threads: usize,
    /// The Bayes store, when enabled.
    pub bayes: Option<Arc<BayesLive>>,
    /// The Bayes state directory (also when disabled, for the CLIs).
    pub bayes_dir: PathBuf,
    /// The classifier's settings.
    pub bayes_params: BayesParams,
    /// Expiry target of the Bayes store.
    pub bayes_max_tokens: usize,
    /// Autolearn thresholds (ham at or below, spam at or above), when on.
    pub autolearn: Option<(f64, f64)>,
    /// The ONNX model, validated and optimised, when enabled.
    pub model: Option<Arc<OnnxModel>>,
    /// Sender authentication and DKIM signing.
    pub auth: AuthConfig,
    /// A message carrying this many of our own Received lines is looping.
    pub max_passes: usize,
    /// Bytes of a message the scan reads at most (besides the header block).
    pub max_scan: usize,
    /// The local domains and where they came from.
    pub local: super::LocalSettings,
    /// Counters of the outbound guard and greylist triplets.
    pub state: crate::state::Store,
    /// The Bayes store in Redis (`[shared] bayes = "redis"`), instead of `bayes`.
    pub bayes_redis: Option<Arc<crate::model::bayes_redis::RedisBayes>>,
    /// What the outbound guard does when a shared store cannot answer.
    pub guard_on_error: crate::policy::guard::OnError,
    /// The policy service, when enabled.
    pub policy_service: Option<crate::policyd::PolicySettings>,
    /// The attachment walk and clamd.
    pub content: crate::content::Content,
}

/// The Bayes part of a configuration.
struct BayesSettings {
    live: Option<Arc<BayesLive>>,
    dir: PathBuf,
    params: BayesParams,
}

impl Config {
    /// The embedded defaults (what `filterd` runs with no `--config`).
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::from_raw(RawConfig::default())
    }

    /// Validate plain data into runtime settings.
    pub(crate) fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let mut p: Vec<String> = vec![];
        let server = build_server(&raw, &mut p);
        let hostname = hostname_of(&raw, &mut p);
        let (next_addr, next_hop) = build_next_hop(&raw, &hostname, &mut p);
        if let Some(a) = next_addr {
            loop_check(a, &server, &mut p);
        }
        positive("scan.budget_ms", raw.scan.budget_ms, &mut p);
        positive("scan.max_passes", raw.scan.max_passes as u64, &mut p);
        positive("scan.max_scan_kb", raw.scan.max_scan_kb as u64, &mut p);
        let policies = super::policy::build_policies(&raw, &mut p);
        let quarantine = super::policy::build_quarantine(&raw, &policies, &hostname, &mut p);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.log.level) {
            p.push(format!("log.level: `{}`: {e}", raw.log.level));
        }
        if !SYSLOG_FACILITIES.contains(&raw.log.syslog_facility.as_str()) {
            p.push(format!(
                "log.syslog_facility: `{}` is not one of {}",
                raw.log.syslog_facility,
                SYSLOG_FACILITIES.join(", ")
            ));
        }
        let log_journald = match raw.log.journald.as_str() {
            "auto" => Journald::Auto,
            "on" => Journald::On,
            "off" => Journald::Off,
            other => {
                p.push(format!(
                    "log.journald: `{other}` is not one of auto, on, off"
                ));
                Journald::Off
            }
        };
        let bayes = build_bayes(&raw, &mut p);
        let model = build_model(&raw, &mut p);
        let auth = super::auth::build_auth(&raw, &hostname, &mut p);
        let (dnsbl, list_scores) = super::rules::build_dnsbl(&raw, &auth, &mut p);
        let rules = super::rules::build_rules(&raw, list_scores, &mut p);
        let local = super::service::build_local(&raw, &mut p);
        let redis = super::service::build_redis(&raw, &mut p);
        let state = super::service::build_state(&raw, &bayes.dir, redis.as_ref(), &mut p);
        let bayes_redis = super::service::build_bayes_redis(&raw, redis.as_ref(), bayes.params);
        let policy_service = super::service::build_policy_service(&raw, &local, &mut p);
        let walk = policies.all.iter().any(|x| !x.banned.is_empty());
        let content = super::content::build_content(&raw, walk, &mut p);
        let Some(rules) = rules.filter(|_| p.is_empty()) else {
            return Err(ConfigError { problems: p });
        };
        let b = &raw.bayes;
        Ok(Config {
            server,
            session: Arc::new(session_of(&raw, &hostname)),
            next_hop: Arc::new(next_hop),
            next_hop_idle: Duration::from_secs(raw.next_hop.reuse_idle_secs),
            levels: policies.default_policy().levels,
            policies: Arc::new(policies),
            quarantine,
            scores: rules.current().scores.clone(),
            rules,
            dnsbl,
            hostname,
            log_level: raw.log.level.clone(),
            log_syslog: raw.log.syslog.then(|| raw.log.syslog_facility.clone()),
            log_journald,
            worker_threads: raw.server.worker_threads,
            bayes: bayes.live,
            bayes_redis,
            bayes_dir: bayes.dir,
            bayes_params: bayes.params,
            bayes_max_tokens: b.max_tokens,
            autolearn: b
                .autolearn
                .then_some((b.autolearn_ham_below, b.autolearn_spam_above)),
            model,
            auth,
            max_passes: raw.scan.max_passes,
            max_scan: raw.scan.max_scan_kb.saturating_mul(1024),
            local,
            state,
            guard_on_error: raw.shared.guard_on_error,
            policy_service,
            content,
        })
    }
}

/// `[server]`: listeners, the allow-list, limits.
fn build_server(raw: &RawConfig, p: &mut Vec<String>) -> ServerSettings {
    let s = &raw.server;
    let listen = addresses("server.listen", &s.listen, p);
    let lmtp_listen = addresses("server.lmtp_listen", &s.lmtp_listen, p);
    if s.listen.is_empty() && s.lmtp_listen.is_empty() {
        p.push("server.listen: no listen address (and no lmtp_listen)".into());
    }
    let allow_clients = networks("server.allow_clients", &s.allow_clients, p);
    positive("server.max_connections", s.max_connections as u64, p);
    positive("server.max_message_size", s.max_message_size as u64, p);
    positive("server.max_recipients", s.max_recipients as u64, p);
    positive("server.command_timeout_secs", s.command_timeout_secs, p);
    positive("server.data_timeout_secs", s.data_timeout_secs, p);
    positive("server.hard_error_limit", s.hard_error_limit as u64, p);
    if s.max_bytes_in_flight_mb.saturating_mul(1024 * 1024) < s.max_message_size as u64 {
        p.push(format!(
            "server.max_bytes_in_flight_mb: {} MB cannot hold one message of max_message_size ({} bytes)",
            s.max_bytes_in_flight_mb, s.max_message_size
        ));
    }
    if s.max_command_line < 512 {
        p.push("server.max_command_line: must be at least 512 (RFC 5321)".into());
    }
    if s.max_data_line < 1000 {
        p.push("server.max_data_line: must be at least 1000 (RFC 5321)".into());
    }
    let metrics = match raw.metrics.listen.as_str() {
        "" => None,
        a => addresses("metrics.listen", &[a.to_string()], p).pop(),
    };
    if let Some(m) = metrics
        && m.port() != 0
        && listen.iter().chain(&lmtp_listen).any(|l| *l == m)
    {
        p.push(format!(
            "metrics.listen: {m} is also a mail listener (server.listen or lmtp_listen)"
        ));
    }
    ServerSettings {
        listen,
        lmtp_listen,
        allow_clients,
        max_connections: s.max_connections,
        shutdown_grace: Duration::from_secs(s.shutdown_grace_secs),
        max_bytes_in_flight: s.max_bytes_in_flight_mb.saturating_mul(1024 * 1024),
        metrics,
    }
}

/// A next hop that is one of our own listeners is a mail loop: the same address, or any
/// local address on the port of a wildcard (`0.0.0.0`, `[::]`) listener.
fn loop_check(next: SocketAddr, server: &ServerSettings, p: &mut Vec<String>) {
    let ours = server.listen.iter().chain(&server.lmtp_listen);
    for l in ours {
        if *l == next {
            p.push(format!(
                "next_hop.address: {next} is one of our own listen addresses (mail loop)"
            ));
            return;
        }
        if l.port() == next.port() && l.ip().is_unspecified() && is_local(next.ip()) {
            p.push(format!(
                "next_hop.address: {next} is this host, and server listens on {l}, every local address (mail loop)"
            ));
            return;
        }
    }
}

/// True for an address of this host: loopback, unspecified, or one a socket can bind to.
fn is_local(ip: std::net::IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// The settings every SMTP session gets.
fn session_of(raw: &RawConfig, hostname: &str) -> SessionConfig {
    let s = &raw.server;
    SessionConfig {
        hostname: hostname.to_string(),
        lmtp: false,
        limits: Limits {
            max_command_line: s.max_command_line,
            max_data_line: s.max_data_line,
            max_message_size: s.max_message_size,
        },
        max_recipients: s.max_recipients,
        command_timeout: Duration::from_secs(s.command_timeout_secs),
        data_timeout: Duration::from_secs(s.data_timeout_secs),
        scan_budget: Duration::from_millis(raw.scan.budget_ms),
        min_data_rate: s.min_data_rate,
        hard_error_limit: s.hard_error_limit,
    }
}

/// `[bayes]`: the store (loaded now: a corrupt one is refused with its path).
fn build_bayes(raw: &RawConfig, p: &mut Vec<String>) -> BayesSettings {
    let b = &raw.bayes;
    let dir = if b.state_dir.is_empty() {
        default_state_dir()
    } else {
        PathBuf::from(&b.state_dir)
    };
    let params = BayesParams {
        min_spam: b.min_spam,
        min_ham: b.min_ham,
        ..BayesParams::default()
    };
    if b.autolearn && b.autolearn_ham_below >= b.autolearn_spam_above {
        p.push("bayes.autolearn_ham_below must be below bayes.autolearn_spam_above".into());
    }
    if b.autolearn && !b.enabled {
        p.push("bayes.autolearn needs bayes.enabled".into());
    }
    if b.max_tokens < 1000 {
        p.push("bayes.max_tokens: must be at least 1000".into());
    }
    let live = if b.enabled && raw.shared.bayes != "redis" {
        match BayesLive::open(&dir, params) {
            Ok(live) => Some(Arc::new(live)),
            Err(e) => {
                p.push(format!("bayes: {e}"));
                None
            }
        }
    } else {
        None
    };
    BayesSettings { live, dir, params }
}

/// `[model]`: the ONNX model, validated and optimised now.
fn build_model(raw: &RawConfig, p: &mut Vec<String>) -> Option<Arc<OnnxModel>> {
    if !raw.model.enabled {
        return None;
    }
    let dir = if raw.model.path.is_empty() {
        default_model_dir()
    } else {
        Some(PathBuf::from(&raw.model.path))
    };
    let Some(dir) = dir else {
        p.push("model: the shipped model (models/spam-lr) was not found next to the binary or in /usr/share/filterd/models; set [model] path, or enabled = false".into());
        return None;
    };
    match OnnxModel::load(&dir) {
        Ok(m) => Some(Arc::new(m)),
        Err(e) => {
            p.push(format!("model: {e}"));
            None
        }
    }
}

/// The host name: `[server] hostname`, else the kernel's.
fn hostname_of(raw: &RawConfig, p: &mut Vec<String>) -> String {
    let hostname = if raw.server.hostname.is_empty() {
        system_hostname()
    } else {
        raw.server.hostname.clone()
    };
    if !is_hostname(&hostname) {
        p.push(format!(
            "server.hostname: `{hostname}` is not a valid host name"
        ));
    }
    hostname
}

/// `[next_hop]`: the address (when valid) and the client settings.
fn build_next_hop(
    raw: &RawConfig,
    hostname: &str,
    p: &mut Vec<String>,
) -> (Option<SocketAddr>, NextHop) {
    let n = &raw.next_hop;
    let addr = n.address.parse::<SocketAddr>().ok();
    if addr.is_none() {
        p.push(format!(
            "next_hop.address: `{}` is not an IP:port address",
            n.address
        ));
    }
    for (key, v) in [
        ("connect_timeout_secs", n.connect_timeout_secs),
        ("command_timeout_secs", n.command_timeout_secs),
        ("data_done_timeout_secs", n.data_done_timeout_secs),
        ("rset_limit", u64::from(n.rset_limit)),
    ] {
        positive(&format!("next_hop.{key}"), v, p);
    }
    let helo_name = if n.helo_name.is_empty() {
        hostname.to_string()
    } else {
        n.helo_name.clone()
    };
    if !is_hostname(&helo_name) {
        p.push(format!(
            "next_hop.helo_name: `{helo_name}` is not a valid host name"
        ));
    }
    let hop = NextHop {
        addr: addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 10025))),
        helo_name,
        connect_timeout: Duration::from_secs(n.connect_timeout_secs),
        command_timeout: Duration::from_secs(n.command_timeout_secs),
        data_done_timeout: Duration::from_secs(n.data_done_timeout_secs),
        xforward: n.xforward,
        rset_limit: n.rset_limit,
    };
    (addr, hop)
}

/// The next hop of a configuration alone (what `filterq release` reinjects through).
pub fn next_hop_of(raw: &RawConfig) -> Result<NextHop, ConfigError> {
    let mut p = vec![];
    let hostname = hostname_of(raw, &mut p);
    let (_, hop) = build_next_hop(raw, &hostname, &mut p);
    if p.is_empty() {
        Ok(hop)
    } else {
        Err(ConfigError { problems: p })
    }
}

/// The kernel's host name, without DNS (the banner must never wait for a lookup).
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| is_hostname(s))
        .unwrap_or_else(|| "localhost".into())
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::defaults().unwrap();
        assert_eq!(c.server.listen, vec!["127.0.0.1:10024".parse().unwrap()]);
        assert_eq!(c.next_hop.addr, "127.0.0.1:10025".parse().unwrap());
        assert_eq!(c.scores["GTUBE"], 1000.0);
    }

    #[test]
    fn every_problem_is_listed() {
        let e = Config::parse(
            r#"
            bogus = 1
            [server]
            listen = ["nowhere"]
            allow_clients = ["10.0.0.0/33"]
            max_connections = 0
            [next_hop]
            address = "127.0.0.1:10024x"
            [scores]
            NO_SUCH_RULE = 1.0
            [levels]
            colour = "red"
            "#,
        )
        .unwrap_err();
        let all = e.to_string();
        for needle in [
            "bogus",
            "server.listen: `nowhere`",
            "10.0.0.0/33",
            "max_connections",
            "next_hop.address",
            "NO_SUCH_RULE",
            "colour",
        ] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
    }

    #[test]
    fn loop_to_self_is_refused() {
        let e = Config::parse("[next_hop]\naddress = \"127.0.0.1:10024\"\n").unwrap_err();
        assert!(e.to_string().contains("mail loop"), "{e}");
        // A wildcard listener is every local address.
        for next in ["127.0.0.1:10024", "127.0.0.2:10024", "0.0.0.0:10024"] {
            let e = Config::parse(&format!(
                "[server]\nlisten = [\"0.0.0.0:10024\"]\n[next_hop]\naddress = \"{next}\"\n[bayes]\nenabled = false\n[model]\nenabled = false\n"
            ))
            .unwrap_err();
            assert!(e.to_string().contains("mail loop"), "{next}: {e}");
        }
        let e = Config::parse("[server]\nlmtp_listen = [\"[::]:10026\"]\n[next_hop]\naddress = \"127.0.0.1:10026\"\n[bayes]\nenabled = false\n[model]\nenabled = false\n").unwrap_err();
        assert!(e.to_string().contains("mail loop"), "{e}");
        // Another port, or an address that is not ours, is fine.
        for next in ["127.0.0.1:10025", "192.0.2.1:10024"] {
            assert!(
                Config::parse(&format!(
                    "[server]\nlisten = [\"0.0.0.0:10024\"]\n[next_hop]\naddress = \"{next}\"\n[bayes]\nenabled = false\n[model]\nenabled = false\n"
                ))
                .is_ok(),
                "{next}"
            );
        }
    }

    #[test]
    fn example_file_matches_defaults() {
        let text = include_str!("../../filterd.toml.example");
        let from_example: RawConfig = toml::from_str(text).unwrap();
        let defaults = RawConfig {
            scores: crate::checks::Registry::default_scores()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            ..RawConfig::default()
        };
        assert_eq!(
            from_example, defaults,
            "filterd.toml.example drifted from the defaults"
        );
    }
}
