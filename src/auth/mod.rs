//! Sender authentication: SPF (MAIL FROM and HELO), DKIM, DMARC and ARC, computed once per
//! message before the checks, under one DNS time budget; the `Authentication-Results:`
//! header (RFC 8601); and DKIM signing of outbound mail ([`sign`]).
//!
//! Everything that touches the network happens here (mail-auth over hickory's resolver,
//! whose cache keeps answers for their TTL up to a bounded number of entries). A timeout or
//! DNS failure becomes a temperror result and a hit, never a stalled or failed message.

mod cache;
pub mod origin;
mod results;
pub mod sign;
mod verify;

pub use results::claims_authserv_id;

use mail_auth::{DkimResult, MessageAuthenticator, SpfResult};
use origin::{Origin, OriginPolicy};
use std::net::SocketAddr;
use std::time::Duration;

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

impl AuthConfig {
    /// Verify a message from `origin` with envelope `sender`, unless verification is off
    /// or the message is ours (`originating`) and ours are not verified.
    pub async fn verify(
        &self,
        msg: &[u8],
        origin: &Origin,
        originating: bool,
        sender: &str,
    ) -> Option<AuthVerdict> {
        match &self.verifier {
            Some(v) if !originating || self.verify_originating => {
                Some(v.verify(msg, origin, sender).await)
            }
            _ => None,
        }
    }

    /// Our authserv-id, when verification is on (incoming Authentication-Results claiming
    /// it are forgeries).
    pub fn authserv_id(&self) -> Option<&str> {
        self.verifier
            .as_ref()
            .map(|v| v.settings().authserv_id.as_str())
    }
}

/// The verifier: one resolver (with its cache) for every session.
pub struct Verifier {
    settings: AuthSettings,
    resolver: MessageAuthenticator,
    records: verify::Records,
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
