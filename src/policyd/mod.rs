//! The Postfix policy delegation service (`check_policy_service`): greylisting
//! ([`greylist`], postgrey's behaviour and allow-list files), SPF at RCPT ([`spf`],
//! policyd-spf's semantics), "login owns sender" ([`login`], the format of
//! `smtpd_sender_login_maps`) and the outbound guard's limits before queueing (the same
//! counters the content filter counts in). [`protocol`] is the wire format; the listener
//! is `server::policy`. Named apart from `policy`, which holds the content filter's
//! policy banks.
//!
//! Order per recipient: the login check, the limits, SPF (a fail refuses at once), then
//! greylisting; mail that goes on gets the Received-SPF header (once per message) or, after
//! a greylist delay, `X-Greylist:`. Authenticated clients and the exempt networks are
//! neither greylisted nor SPF-checked; the limits apply to everyone.

pub mod allowlist;
pub mod connection;
pub mod greylist;
pub mod login;
pub mod protocol;
pub mod spf;

use crate::auth::Verifier;
use crate::auth::origin::{Origin, OriginPolicy};
use crate::policy::{Guard, LocalDomains, Policies};
use crate::state::Store;
use greylist::{Grey, GreylistSettings};
use ipnet::IpNet;
use login::LoginMap;
use protocol::{ProtocolError, Request};
use spf::SpfPolicy;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the limits answer past a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitAction {
    /// DEFER_IF_PERMIT (450 4.7.1).
    Defer,
    /// 550 5.7.1.
    Reject,
}

/// `[policy_service]`, built.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    /// Listen addresses.
    pub listen: Vec<SocketAddr>,
    /// Concurrent connections.
    pub max_connections: usize,
    /// Idle connections are closed after this.
    pub idle_timeout: Duration,
    /// Never greylisted or SPF-checked.
    pub exempt: Vec<IpNet>,
    /// Greylisting, when on.
    pub greylist: Option<GreylistSettings>,
    /// SPF at RCPT, when on.
    pub spf: Option<SpfPolicy>,
    /// The login map, when configured.
    pub login: Option<LoginMap>,
    /// The limits, when on.
    pub limits: Option<LimitAction>,
    /// Said in the log at start (what is off and why).
    pub notes: Vec<String>,
}

/// One answer, with what decided it for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The action text (`DUNNO`, `PREPEND ...`, `DEFER_IF_PERMIT ...`, `550 ...`).
    pub action: String,
    /// The check that decided (`greylist`, `spf`, `login`, `limit`, `none`).
    pub check: &'static str,
    /// Why, for the log.
    pub detail: String,
}

impl Answer {
    fn new(action: String, check: &'static str, detail: String) -> Self {
        Answer {
            action,
            check,
            detail,
        }
    }
}

/// Everything the service needs; shared by its connections.
pub struct PolicyService {
    /// The settings.
    pub settings: PolicySettings,
    greylist: Store,
    guard: Guard,
    verifier: Option<Arc<Verifier>>,
    hostname: String,
    /// Message instances that already got their Received-SPF header.
    prepended: Mutex<VecDeque<String>>,
}

/// The parts of the filter's configuration the service shares.
pub struct Shared {
    /// Greylist triplets and the counters of the outbound guard.
    pub state: Store,
    /// What the guard does when a shared store cannot answer.
    pub guard_on_error: crate::policy::guard::OnError,
    /// Policy banks (their rate limits).
    pub policies: Arc<Policies>,
    /// Local domains.
    pub local: Arc<LocalDomains>,
    /// Which clients are ours.
    pub origin: OriginPolicy,
    /// The resolver for SPF.
    pub verifier: Option<Arc<Verifier>>,
    /// Our host name (Received-SPF receiver).
    pub hostname: String,
}

impl PolicyService {
    /// The service over the shared state.
    pub fn new(settings: PolicySettings, shared: Shared) -> Self {
        PolicyService {
            settings,
            greylist: shared.state.clone(),
            guard: Guard::scoped(shared.state, shared.local, shared.origin, shared.policies)
                .with_on_error(shared.guard_on_error),
            verifier: shared.verifier,
            hostname: shared.hostname,
            prepended: Mutex::new(VecDeque::new()),
        }
    }

    /// Answer one request; an error closes the connection without a reply.
    pub async fn answer(&self, req: &Request) -> Result<Answer, ProtocolError> {
        req.check_kind()?;
        let state = req.get("protocol_state");
        let ip: Option<IpAddr> = req.get("client_address").parse().ok();
        let (sasl, sender, rcpt) = (
            req.get("sasl_username"),
            req.get("sender"),
            req.get("recipient"),
        );
        let dunno = || Answer::new("DUNNO".into(), "none", String::new());
        if !matches!(state, "RCPT" | "MAIL" | "END-OF-MESSAGE") {
            return Ok(dunno());
        }
        if let Some(map) = &self.settings.login
            && !sasl.is_empty()
            && !map.owns(sasl, sender)
        {
            return Ok(Answer::new(
                format!("553 5.7.1 <{sender}>: Sender address rejected: not owned by user {sasl}"),
                "login",
                format!("login {sasl} does not own {sender}"),
            ));
        }
        if state == "MAIL" || (state == "END-OF-MESSAGE" && rcpt.is_empty()) {
            return Ok(dunno());
        }
        if let Some(action) = self.settings.limits
            && let Some(key) = self.over_limit(ip, sasl, sender, rcpt).await
        {
            let text = match action {
                LimitAction::Defer => "DEFER_IF_PERMIT 4.7.1",
                LimitAction::Reject => "550 5.7.1",
            };
            return Ok(Answer::new(
                format!("{text} outbound rate limit exceeded ({key}); try again later"),
                "limit",
                key,
            ));
        }
        let (Some(ip), "RCPT") = (ip, state) else {
            return Ok(dunno());
        };
        let exempt = !sasl.is_empty() || self.settings.exempt.iter().any(|n| n.contains(&ip));
        if exempt {
            return Ok(Answer::new("DUNNO".into(), "none", "exempt".into()));
        }
        self.check_client(req, ip, sender, rcpt).await
    }

    /// SPF, then greylisting, for a client that is not exempt.
    async fn check_client(
        &self,
        req: &Request,
        ip: IpAddr,
        sender: &str,
        rcpt: &str,
    ) -> Result<Answer, ProtocolError> {
        let helo = req.get("helo_name");
        let mut prepend = None;
        let mut detail = vec![];
        if let (Some(spf), Some(v)) = (&self.settings.spf, &self.verifier) {
            let out = spf.evaluate(v, ip, helo, sender, &self.hostname).await;
            detail.push(format!("spf={}", out.result));
            if let Some(refusal) = out.refusal {
                return Ok(Answer::new(refusal, "spf", detail.join(", ")));
            }
            if self.first_prepend(req.get("instance")) {
                prepend = Some(out.header);
            }
        }
        if let Some(g) = &self.settings.greylist {
            let now = crate::clock::tokio_unix();
            let name = req.get("client_name");
            match g.check(&self.greylist, ip, name, sender, rcpt, now).await {
                Grey::Defer(left) => {
                    detail.push(format!("greylist=defer, {left} s left"));
                    // As postgrey answers: Postfix replies 450 4.2.0 (other mailbox status).
                    let text = format!("DEFER_IF_PERMIT 4.2.0 {}", g.defer_text(rcpt, left));
                    return Ok(Answer::new(text, "greylist", detail.join(", ")));
                }
                Grey::Pass(Some(waited)) => {
                    detail.push(format!("greylist=pass after {waited} s"));
                    if g.prepend_header && prepend.is_none() {
                        prepend = Some(format!(
                            "X-Greylist: delayed {waited} seconds by filterd at {}; {}",
                            self.hostname,
                            mail_parser::DateTime::from_timestamp(now as i64).to_rfc822()
                        ));
                    }
                }
                Grey::Pass(None) => detail.push("greylist=pass".into()),
                Grey::Allowed(why) => detail.push(format!("greylist={why}")),
            }
        }
        let check = if prepend.is_some() { "prepend" } else { "none" };
        let action = prepend.map_or_else(|| "DUNNO".to_string(), |h| format!("PREPEND {h}"));
        Ok(Answer::new(action, check, detail.join(", ")))
    }

    /// True the first time a message instance asks (its Received-SPF goes on once).
    fn first_prepend(&self, instance: &str) -> bool {
        if instance.is_empty() {
            return true;
        }
        let mut seen = self.prepended.lock().unwrap_or_else(|e| e.into_inner());
        if seen.iter().any(|i| i == instance) {
            return false;
        }
        if seen.len() >= 4096 {
            seen.pop_front();
        }
        seen.push_back(instance.to_string());
        true
    }

    /// The guard's key already at its limit for mail from this client to `rcpt`.
    async fn over_limit(
        &self,
        ip: Option<IpAddr>,
        sasl: &str,
        sender: &str,
        rcpt: &str,
    ) -> Option<String> {
        let origin = Origin {
            ip,
            local: ip.is_some_and(|i| i.is_loopback()),
            authenticated: !sasl.is_empty(),
            sasl_user: (!sasl.is_empty()).then(|| sasl.to_string()),
            ..Origin::default()
        };
        self.guard.at_limit(&origin, sender, rcpt).await
    }
}
