//! The metadata of one quarantined message (`ID.json`), and how it is made from the
//! pipeline's report: what was found, why it is held, and the original envelope, so a
//! release re-sends it as it arrived.

use crate::policy::decision::Hold;
use crate::report::Report;
use crate::smtp::envelope::{Body, Envelope, XforwardAttr};
use serde::{Deserialize, Serialize};

/// One hit as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryHit {
    /// Rule name.
    pub name: String,
    /// Its score for this message.
    pub score: f64,
}

/// The DSN parameters of an envelope, kept so a release re-sends the original envelope.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dsn {
    /// `RET=` of MAIL FROM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<String>,
    /// `ENVID=` of MAIL FROM (xtext, as received).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    /// `NOTIFY=` of each recipient, in the order of `recipients`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Option<String>>,
    /// `ORCPT=` of each recipient (xtext, as received), in the order of `recipients`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orcpt: Vec<Option<String>>,
}

impl Dsn {
    /// True when the envelope had no DSN parameters.
    pub fn is_empty(&self) -> bool {
        self.ret.is_none()
            && self.envid.is_none()
            && self.notify.iter().all(Option::is_none)
            && self.orcpt.iter().all(Option::is_none)
    }
}

/// One release of an entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// When (Unix seconds).
    pub time: u64,
    /// The recipients it went to.
    pub recipients: Vec<String>,
    /// The next hop's reply.
    pub reply: String,
}

/// The metadata of one quarantined message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The quarantine id (the message's mail_id).
    pub id: String,
    /// When it was quarantined (Unix seconds).
    pub time: u64,
    /// The policy bank that decided.
    pub policy: String,
    /// Why: a [`Hold`] reason (`spam`, `ratelimit`, `dmarc`, `virus`, `banned`).
    pub reason: String,
    /// What was found: the virus name or the banned part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<String>,
    /// The score, when scanned.
    pub score: Option<f64>,
    /// The hits with their scores.
    pub hits: Vec<EntryHit>,
    /// The original client's IP, when known.
    pub client_ip: Option<String>,
    /// The original client's HELO name, when known.
    pub helo: String,
    /// Postfix's queue id (XFORWARD IDENT), when sent.
    pub queue_id: Option<String>,
    /// The envelope sender (empty for `<>`).
    pub sender: String,
    /// The envelope recipients held here.
    pub recipients: Vec<String>,
    /// `BODY=` of the original MAIL FROM (`8BITMIME`, `7BIT`), for the release.
    pub body: Option<Body>,
    /// The original MAIL FROM had SMTPUTF8.
    #[serde(default)]
    pub smtputf8: bool,
    /// DSN parameters of the original envelope (RFC 3461), re-sent on release.
    #[serde(default, skip_serializing_if = "Dsn::is_empty")]
    pub dsn: Dsn,
    /// The Message-ID header.
    pub message_id: Option<String>,
    /// The Subject header (decoded).
    pub subject: Option<String>,
    /// Message size in bytes.
    pub size: u64,
    /// Releases so far.
    #[serde(default)]
    pub released: Vec<Release>,
}

impl Entry {
    /// The entry of message `mail_id` (`size` bytes) held for `recipients` (indices into the
    /// envelope's), quarantined at `time` (Unix seconds). The first held part's decision
    /// says the policy, the reason and the score.
    pub fn held(
        env: &Envelope,
        size: usize,
        mail_id: &str,
        report: &Report,
        recipients: &[usize],
        time: u64,
    ) -> Self {
        let decision = report
            .decisions
            .iter()
            .find(|d| d.quarantine)
            .or(report.decisions.first());
        let verdict = decision.map(|d| &d.verdict);
        let held = || recipients.iter().filter_map(|&i| env.recipients.get(i));
        Entry {
            id: mail_id.to_string(),
            time,
            policy: decision.map_or_else(|| "default".to_string(), |d| d.policy.clone()),
            reason: decision
                .and_then(|d| d.hold.as_ref())
                .map_or("spam", Hold::reason)
                .to_string(),
            finding: decision.and_then(|d| d.detail()).map(str::to_string),
            score: verdict.map(|v| v.score),
            hits: verdict.map_or_else(Vec::new, |v| {
                v.hits
                    .iter()
                    .map(|(n, s)| EntryHit {
                        name: n.to_string(),
                        score: *s,
                    })
                    .collect()
            }),
            client_ip: report.client.map(|ip| ip.to_string()),
            helo: if report.helo.is_empty() {
                env.helo.clone()
            } else {
                report.helo.clone()
            },
            queue_id: env.xforward.get(XforwardAttr::Ident).map(str::to_string),
            sender: env.sender.clone(),
            recipients: held().map(|r| r.address.clone()).collect(),
            body: env.mail_params.body,
            smtputf8: env.mail_params.smtputf8,
            dsn: Dsn {
                ret: env.mail_params.ret.clone(),
                envid: env.mail_params.envid.clone(),
                notify: held().map(|r| r.params.notify.clone()).collect(),
                orcpt: held().map(|r| r.params.orcpt.clone()).collect(),
            },
            message_id: report.message_id.clone(),
            subject: report.subject.clone(),
            size: size as u64,
            released: vec![],
        }
    }
}

/// The `X-Quarantine-ID:` header line that delivered copies of quarantined mail carry (a
/// copy passed with a quarantine copy kept, and a release).
pub fn id_header(id: &str) -> String {
    format!("X-Quarantine-ID: <{id}>\r\n")
}
