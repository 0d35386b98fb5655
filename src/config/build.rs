//! Stage two of configuration: from the plain TOML data to runtime settings, collecting
//! every problem before failing, so `filterd --check-config` lists them all at once.

use super::RawConfig;
use super::policy::QuarantineSettings;
use crate::auth::origin::OriginPolicy;
use crate::auth::sign::{KeyAlgorithm, KeySpec, Signer};
use crate::auth::{AuthConfig, AuthSettings, Verifier};
use crate::checks::Registry;
use crate::model::bayes::BayesParams;
use crate::model::bayes_live::BayesLive;
use crate::model::bayes_store::default_state_dir;
use crate::model::onnx::{OnnxModel, default_model_dir};
use crate::policy::Policies;
use crate::smtp::codec::Limits;
use crate::smtp::relay::NextHop;
use crate::smtp::session::SessionConfig;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Every problem found in a configuration, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// One line per problem, each naming its key.
    pub problems: Vec<String>,
}

/// amavisd-new's levels, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Levels {
    /// Headers at or above.
    pub tag: f64,
    /// Spam at or above.
    pub tag2: f64,
    /// Blocked at or above.
    pub kill: f64,
}

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
    /// Score of every hit name any check can emit (defaults merged with `[scores]`).
    pub scores: BTreeMap<&'static str, f64>,
    /// Our host name.
    pub hostname: String,
    /// Log filter directive.
    pub log_level: String,
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
}

impl Config {
    /// The embedded defaults (what `filterd` runs with no `--config`).
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::from_raw(RawConfig::default())
    }

    /// Read and validate a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![format!("{}: cannot read: {e}", path.display())],
        })?;
        Self::parse(&text).map_err(|mut e| {
            for p in &mut e.problems {
                *p = format!("{}: {p}", path.display());
            }
            e
        })
    }

    /// Parse and validate TOML text. Each section is read on its own so that problems in
    /// several sections are all reported.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let (raw, mut problems) = read_sections(text)?;
        match Self::from_raw(raw) {
            Ok(c) if problems.is_empty() => Ok(c),
            Ok(_) => Err(ConfigError { problems }),
            Err(e) => {
                problems.extend(e.problems);
                Err(ConfigError { problems })
            }
        }
    }

    /// Validate plain data into runtime settings.
    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let mut p: Vec<String> = vec![];
        let s = &raw.server;
        let addrs = |key: &str, list: &[String], p: &mut Vec<String>| -> Vec<SocketAddr> {
            list.iter()
                .filter_map(|a| match a.parse::<SocketAddr>() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        p.push(format!("server.{key}: `{a}` is not an IP:port address"));
                        None
                    }
                })
                .collect()
        };
        let listen = addrs("listen", &s.listen, &mut p);
        let lmtp_listen = addrs("lmtp_listen", &s.lmtp_listen, &mut p);
        if s.listen.is_empty() && s.lmtp_listen.is_empty() {
            p.push("server.listen: no listen address (and no lmtp_listen)".into());
        }
        let allow_clients = networks("server.allow_clients", &s.allow_clients, &mut p);
        let positive = |key: &str, v: u64, p: &mut Vec<String>| {
            if v == 0 {
                p.push(format!("{key}: must be greater than 0"));
            }
        };
        positive("server.max_connections", s.max_connections as u64, &mut p);
        positive("server.max_message_size", s.max_message_size as u64, &mut p);
        positive("server.max_recipients", s.max_recipients as u64, &mut p);
        positive(
            "server.command_timeout_secs",
            s.command_timeout_secs,
            &mut p,
        );
        positive("server.data_timeout_secs", s.data_timeout_secs, &mut p);
        if s.max_command_line < 512 {
            p.push("server.max_command_line: must be at least 512 (RFC 5321)".into());
        }
        if s.max_data_line < 1000 {
            p.push("server.max_data_line: must be at least 1000 (RFC 5321)".into());
        }
        let hostname = hostname_of(&raw, &mut p);
        let (next_addr, next_hop) = build_next_hop(&raw, &hostname, &mut p);
        if let Some(a) = next_addr
            && (listen.contains(&a) || lmtp_listen.contains(&a))
        {
            p.push(format!(
                "next_hop.address: {a} is one of our own listen addresses (mail loop)"
            ));
        }
        positive("scan.budget_ms", raw.scan.budget_ms, &mut p);

        let policies = super::policy::build_policies(&raw, &mut p);
        let quarantine = super::policy::build_quarantine(&raw, &policies);

        let mut scores = Registry::default_scores();
        for (name, score) in &raw.scores {
            match scores.keys().find(|k| **k == name.as_str()).copied() {
                Some(k) if score.is_finite() => {
                    scores.insert(k, *score);
                }
                Some(_) => p.push(format!("scores.{name}: must be a finite number")),
                None => p.push(format!(
                    "scores.{name}: no check emits a hit of this name (known: {})",
                    scores.keys().copied().collect::<Vec<_>>().join(", ")
                )),
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.log.level) {
            p.push(format!("log.level: `{}`: {e}", raw.log.level));
        }

        let b = &raw.bayes;
        let bayes_dir = if b.state_dir.is_empty() {
            default_state_dir()
        } else {
            PathBuf::from(&b.state_dir)
        };
        let bayes_params = BayesParams {
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
        let bayes = if b.enabled {
            match BayesLive::open(&bayes_dir, bayes_params) {
                Ok(live) => Some(Arc::new(live)),
                Err(e) => {
                    p.push(format!("bayes: {e}"));
                    None
                }
            }
        } else {
            None
        };

        let model = if raw.model.enabled {
            let dir = if raw.model.path.is_empty() {
                default_model_dir()
            } else {
                Some(PathBuf::from(&raw.model.path))
            };
            match dir {
                None => {
                    p.push("model: the shipped model (models/spam-lr) was not found next to the binary or in /usr/share/filterd/models; set [model] path, or enabled = false".into());
                    None
                }
                Some(dir) => match OnnxModel::load(&dir) {
                    Ok(m) => Some(Arc::new(m)),
                    Err(e) => {
                        p.push(format!("model: {e}"));
                        None
                    }
                },
            }
        } else {
            None
        };

        let auth = build_auth(&raw, &hostname, &mut p);

        if !p.is_empty() {
            return Err(ConfigError { problems: p });
        }
        let session = SessionConfig {
            hostname: hostname.clone(),
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
        };
        Ok(Config {
            server: ServerSettings {
                listen,
                lmtp_listen,
                allow_clients,
                max_connections: s.max_connections,
                shutdown_grace: Duration::from_secs(s.shutdown_grace_secs),
            },
            session: Arc::new(session),
            next_hop: Arc::new(next_hop),
            next_hop_idle: Duration::from_secs(raw.next_hop.reuse_idle_secs),
            levels: policies.default_policy().levels,
            policies: Arc::new(policies),
            quarantine,
            scores,
            hostname,
            log_level: raw.log.level.clone(),
            worker_threads: s.worker_threads,
            bayes,
            bayes_dir,
            bayes_params,
            bayes_max_tokens: b.max_tokens,
            autolearn: b
                .autolearn
                .then_some((b.autolearn_ham_below, b.autolearn_spam_above)),
            model,
            auth,
        })
    }
}

/// The plain data of a TOML text, section by section, with the problems of each section.
fn read_sections(text: &str) -> Result<(RawConfig, Vec<String>), ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError {
        problems: vec![format!("TOML syntax: {}", e.to_string().trim())],
    })?;
    let mut problems = vec![];
    let mut raw = RawConfig::default();
    for (key, value) in table {
        let text = value.clone();
        macro_rules! section {
            ($field:ident) => {
                match text.try_into() {
                    Ok(v) => raw.$field = v,
                    Err(e) => problems.push(format!("[{key}]: {}", e.to_string().trim())),
                }
            };
        }
        match key.as_str() {
                "server" => section!(server),
                "next_hop" => section!(next_hop),
                "scan" => section!(scan),
                "levels" => section!(levels),
                "scores" => section!(scores),
                "log" => section!(log),
                "bayes" => section!(bayes),
                "model" => section!(model),
                "auth" => section!(auth),
                "origin" => section!(origin),
                "dkim" => section!(dkim),
                "actions" => section!(actions),
                "lists" => section!(lists),
                "ratelimit" => section!(ratelimit),
                "quarantine" => section!(quarantine),
                "policy" => section!(policy),
                _ => problems.push(format!(
                    "unknown section or key `{key}` (known: server, next_hop, scan, levels, scores, log, bayes, model, auth, origin, dkim, actions, lists, ratelimit, quarantine, policy)"
                )),
            }
    }
    Ok((raw, problems))
}

/// Read a TOML file into plain data only, for tools that need a part of it (`filterq`
/// needs the quarantine directory and the next hop, not the models).
pub fn load_raw(path: &Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![format!("{}: cannot read: {e}", path.display())],
    })?;
    match read_sections(&text) {
        Ok((raw, problems)) if problems.is_empty() => Ok(raw),
        Ok((_, problems)) | Err(ConfigError { problems }) => Err(ConfigError {
            problems: problems
                .into_iter()
                .map(|p| format!("{}: {p}", path.display()))
                .collect(),
        }),
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
    ] {
        if v == 0 {
            p.push(format!("next_hop.{key}: must be greater than 0"));
        }
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

/// Networks in CIDR form (a bare IP is a /32 or /128); each bad one is a problem under `key`.
pub(super) fn networks(key: &str, list: &[String], p: &mut Vec<String>) -> Vec<IpNet> {
    list.iter()
        .filter_map(|n| {
            n.parse::<IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| p.push(format!("{key}: `{n}` is not a network (CIDR) or IP")))
                .ok()
        })
        .collect()
}

/// `[auth]`, `[origin]` and `[dkim]`: the verifier (resolver), the origin policy and the
/// signing keys (each read and checked against its algorithm now, not at the first message).
fn build_auth(raw: &RawConfig, hostname: &str, p: &mut Vec<String>) -> AuthConfig {
    let a = &raw.auth;
    let origin_networks = networks("origin.networks", &raw.origin.networks, p);
    let nameservers: Vec<SocketAddr> = a
        .nameservers
        .iter()
        .filter_map(|n| {
            n.parse::<SocketAddr>()
                .or_else(|_| {
                    n.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .map_err(|_| p.push(format!("auth.nameservers: `{n}` is not an IP or IP:port")))
                .ok()
        })
        .collect();
    let authserv_id = if a.authserv_id.is_empty() {
        hostname.to_string()
    } else {
        a.authserv_id.clone()
    };
    if !is_hostname(&authserv_id) {
        p.push(format!(
            "auth.authserv_id: `{authserv_id}` is not a host name (RFC 8601 wants a domain name)"
        ));
    }
    if a.budget_ms == 0 {
        p.push("auth.budget_ms: must be greater than 0".into());
    }
    if a.dns_timeout_ms == 0 {
        p.push("auth.dns_timeout_ms: must be greater than 0".into());
    }
    if a.dns_attempts == 0 {
        p.push("auth.dns_attempts: must be at least 1".into());
    }
    let d = &raw.dkim;
    if !d.keys.is_empty() && !d.headers.iter().any(|h| h.eq_ignore_ascii_case("From")) {
        p.push("dkim.headers: must include From (RFC 6376 section 5.4)".into());
    }
    let mut specs = vec![];
    for (i, k) in d.keys.iter().enumerate() {
        let Some(algorithm) = KeyAlgorithm::parse(&k.algorithm) else {
            p.push(format!(
                "dkim.keys[{i}].algorithm: `{}` is neither rsa nor ed25519",
                k.algorithm
            ));
            continue;
        };
        if !is_hostname(&k.domain) {
            p.push(format!(
                "dkim.keys[{i}].domain: `{}` is not a domain",
                k.domain
            ));
        }
        if !is_hostname(&k.selector) {
            p.push(format!(
                "dkim.keys[{i}].selector: `{}` is not a DNS label",
                k.selector
            ));
        }
        specs.push(KeySpec {
            domain: k.domain.clone(),
            selector: k.selector.clone(),
            algorithm,
            key_file: PathBuf::from(&k.key_file),
        });
    }
    let signer = if specs.is_empty() {
        None
    } else {
        match Signer::load(&specs, &d.headers) {
            Ok(s) => Some(Arc::new(s)),
            Err(problems) => {
                p.extend(problems);
                None
            }
        }
    };
    let verifier = if a.enabled && p.is_empty() {
        match Verifier::new(AuthSettings {
            authserv_id,
            budget: Duration::from_millis(a.budget_ms),
            nameservers,
            dns_timeout: Duration::from_millis(a.dns_timeout_ms),
            dns_attempts: a.dns_attempts,
            cache_size: a.cache_size,
        }) {
            Ok(v) => Some(Arc::new(v)),
            Err(e) => {
                p.push(format!("auth: {e}"));
                None
            }
        }
    } else {
        None
    };
    AuthConfig {
        verifier,
        signer,
        origin: OriginPolicy {
            networks: origin_networks,
            local: raw.origin.local,
            authenticated: raw.origin.authenticated,
        },
        trusted_hops: a.trusted_hops,
        verify_originating: a.verify_originating,
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

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
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
    }

    #[test]
    fn example_file_matches_defaults() {
        let text = include_str!("../../filterd.toml.example");
        let from_example: RawConfig = toml::from_str(text).unwrap();
        let defaults = RawConfig {
            scores: Registry::default_scores()
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
