//! The validators every part of the build step shares, and the error that lists every
//! problem found: each problem is one line naming its key.

use ipnet::IpNet;
use std::net::SocketAddr;

/// Every problem found in a configuration, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// One line per problem, each naming its key.
    pub problems: Vec<String>,
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

/// `IP:port` addresses; each bad one is a problem under `key`.
pub(super) fn addresses(key: &str, list: &[String], p: &mut Vec<String>) -> Vec<SocketAddr> {
    list.iter()
        .filter_map(|a| match a.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                p.push(format!("{key}: `{a}` is not an IP:port address"));
                None
            }
        })
        .collect()
}

/// A count or duration that must not be 0.
pub(super) fn positive(key: &str, v: u64, p: &mut Vec<String>) {
    if v == 0 {
        p.push(format!("{key}: must be greater than 0"));
    }
}

/// A host name (or DNS label): letters, digits, `-` and `_` in dot-separated labels.
pub(super) fn is_hostname(s: &str) -> bool {
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
