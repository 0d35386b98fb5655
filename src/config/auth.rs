//! Building `[auth]`, `[origin]` and `[dkim]`: the verifier (its resolver), the origin
//! policy and the signing keys, each key read and checked against its algorithm now, not
//! at the first message.

use super::check::{is_hostname, networks, positive};
use super::raw::RawConfig;
use crate::auth::origin::OriginPolicy;
use crate::auth::sign::{KeyAlgorithm, KeySpec, Signer};
use crate::auth::{AuthConfig, AuthSettings, Verifier};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Sender authentication and DKIM signing, with every problem in `p`. The resolver is only
/// built for an otherwise valid configuration.
pub(super) fn build_auth(raw: &RawConfig, hostname: &str, p: &mut Vec<String>) -> AuthConfig {
    let origin_networks = networks("origin.networks", &raw.origin.networks, p);
    let settings = auth_settings(raw, hostname, p);
    let signer = build_signer(raw, p);
    let verifier = if raw.auth.enabled && p.is_empty() {
        match Verifier::new(settings) {
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
        trusted_hops: raw.auth.trusted_hops,
        verify_originating: raw.auth.verify_originating,
    }
}

/// `[auth]`: the authserv-id, the DNS budget and the resolver's settings.
fn auth_settings(raw: &RawConfig, hostname: &str, p: &mut Vec<String>) -> AuthSettings {
    let a = &raw.auth;
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
    positive("auth.budget_ms", a.budget_ms, p);
    positive("auth.dns_timeout_ms", a.dns_timeout_ms, p);
    if a.dns_attempts == 0 {
        p.push("auth.dns_attempts: must be at least 1".into());
    }
    AuthSettings {
        authserv_id,
        budget: Duration::from_millis(a.budget_ms),
        nameservers,
        dns_timeout: Duration::from_millis(a.dns_timeout_ms),
        dns_attempts: a.dns_attempts,
        cache_size: a.cache_size,
    }
}

/// `[dkim]`: the signer, when keys are configured (each one loaded and checked).
fn build_signer(raw: &RawConfig, p: &mut Vec<String>) -> Option<Arc<Signer>> {
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
    if specs.is_empty() {
        return None;
    }
    match Signer::load(&specs, &d.headers) {
        Ok(s) => Some(Arc::new(s)),
        Err(problems) => {
            p.extend(problems);
            None
        }
    }
}
