//! The only place that knows the order of the steps for one message:
//! 0. origin, policy per recipient, outbound guard, sender authentication (async, DNS under
//!    one budget: [`Pipeline::prepare`]);
//! 1. features (parse once); 2. checks (those some recipient's policy wants);
//! 3. a verdict per policy (its levels, skipped checks, allow/block lists);
//! 4. a decision per policy (pass, discard, reject; quarantine copy);
//! 5. tag (byte-level headers, subject tag) and DKIM-sign what will be relayed;
//! 6. recipients with the same outcome are merged into one part.
//!
//! The session calls it after DATA and carries out the parts.

use crate::action::quarantine::{Dsn, Entry, EntryHit, Quarantine, unix};
use crate::auth::origin::Origin;
use crate::auth::{AuthConfig, AuthResult, AuthVerdict, DmarcVerdict, claims_authserv_id};
use crate::checks::Registry;
use crate::config::Config;
use crate::message::Features;
use crate::message::HeaderBlock;
use crate::policy::guard::Keys;
use crate::policy::lists::Subject;
use crate::policy::{Destiny, Guard, Policies, Policy};
use crate::smtp::envelope::{Body, Envelope, XforwardAttr};
use crate::smtp::reply::Reply;
use crate::smtp::rewrite::Rewrite;
use crate::smtp::session::{Action, Disposition, MessageFilter, MessageRecord, Part};
use crate::verdict::Verdict;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Messages up to this size are scanned on the session's task when only the header checks
/// run (see `scan_inline`); with Bayes voting every scan goes to the blocking pool.
const INLINE_SCAN_LIMIT: usize = 256 * 1024;

/// Everything needed to scan a message; shared by all sessions.
pub struct Pipeline {
    registry: Registry,
    bayes: Option<Arc<crate::model::bayes_live::BayesLive>>,
    scores: BTreeMap<&'static str, f64>,
    hostname: String,
    autolearn: Option<(f64, f64)>,
    model: bool,
    auth: AuthConfig,
    policies: Arc<Policies>,
    guard: Guard,
    quarantine: Option<Quarantine>,
}

/// What [`Pipeline::prepare`] found before the scan.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// Where the message came from.
    pub origin: Origin,
    /// The origin policy calls it ours (outbound): it gets signed.
    pub originating: bool,
    /// Sender authentication, when it ran.
    pub auth: Option<AuthVerdict>,
    /// The policy of each recipient (index into the policies; missing = default).
    pub policies: Vec<usize>,
    /// Policies whose outbound rate limit this message is over, with the key.
    pub over_limit: Vec<(usize, String)>,
}

/// What one scan works from, for building each relayed copy.
#[derive(Clone, Copy)]
struct Context<'a> {
    env: &'a Envelope,
    msg: &'a [u8],
    mail_id: &'a str,
    now: i64,
    prepared: &'a Prepared,
    features: &'a Features<'a>,
    autolearn: &'static str,
}

/// What the pipeline found, for the log lines and the quarantine: one entry per part of
/// the disposition.
#[derive(Debug, Clone)]
pub struct Judgement {
    /// One per part, in the same order.
    pub parts: Vec<PartJudgement>,
    /// The Subject header (decoded), for the quarantine.
    pub subject: Option<String>,
    /// Outbound mail (logged `...Outbound`).
    pub originating: bool,
    /// The original client's IP (XFORWARD or the trusted Received header), when known.
    pub client: Option<std::net::IpAddr>,
    /// The original client's HELO name, when known.
    pub helo: String,
}

/// The verdict and decision for one part.
#[derive(Debug, Clone)]
pub struct PartJudgement {
    /// The policy that decided.
    pub policy: String,
    /// The score under that policy.
    pub verdict: Verdict,
    /// Why it is held or blocked: `spam`, `ratelimit`, `dmarc`.
    pub reason: Option<&'static str>,
    /// For `ratelimit`: the key over its limit.
    pub detail: Option<String>,
    /// A quarantine copy is kept.
    pub quarantine: bool,
}

impl Pipeline {
    /// Build the pipeline from a validated configuration.
    pub fn new(cfg: &Config) -> Self {
        Pipeline {
            registry: Registry::new(cfg.bayes.clone(), cfg.model.clone()),
            model: cfg.model.is_some(),
            bayes: cfg.bayes.clone(),
            scores: cfg.scores.clone(),
            hostname: cfg.hostname.clone(),
            autolearn: cfg.autolearn,
            auth: cfg.auth.clone(),
            policies: cfg.policies.clone(),
            guard: Guard::default(),
            quarantine: cfg.quarantine.as_ref().map(|q| q.store.clone()),
        }
    }

    /// The policies.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Origin and the policy of each recipient: no I/O.
    fn locate(&self, env: &Envelope, msg: &[u8]) -> Prepared {
        let headers = HeaderBlock::parse(msg);
        let origin = Origin::find(env, msg, &headers, self.auth.trusted_hops);
        let originating = self.auth.origin.is_originating(&origin);
        let policies = env
            .recipients
            .iter()
            .map(|r| self.policies.select(&r.address, origin.ip, originating))
            .collect();
        Prepared {
            origin,
            originating,
            auth: None,
            policies,
            over_limit: vec![],
        }
    }

    /// Find the origin and the policies, count originating mail against the outbound
    /// guard, and verify the sender (SPF, DKIM, DMARC, ARC) within the DNS budget.
    pub async fn prepare(&self, env: &Envelope, msg: &[u8]) -> Prepared {
        let mut prepared = self.locate(env, msg);
        if prepared.originating {
            let keys = Keys {
                user: prepared.origin.sasl_user.clone(),
                sender: (!env.sender.is_empty()).then(|| env.sender.to_ascii_lowercase()),
                client: prepared
                    .origin
                    .ip
                    .filter(|_| !prepared.origin.local)
                    .map(|ip| ip.to_string()),
            };
            let mut seen = vec![];
            for &p in &prepared.policies {
                if seen.contains(&p) {
                    continue;
                }
                seen.push(p);
                let policy = &self.policies.all[p];
                if let Some(limit) = &policy.rate_limit
                    && let Some(key) = self.guard.check(&policy.name, limit, &keys)
                {
                    prepared.over_limit.push((p, key));
                }
            }
        }
        prepared.auth = match &self.auth.verifier {
            Some(v) if !prepared.originating || self.auth.verify_originating => {
                Some(v.verify(msg, &prepared.origin, &env.sender).await)
            }
            _ => None,
        };
        prepared
    }

    fn signs(&self, prepared: &Prepared) -> bool {
        prepared.originating && self.auth.signer.is_some()
    }

    /// Scan one message as of `now` (Unix seconds), without sender authentication or the
    /// outbound guard.
    pub fn scan_at(
        &self,
        env: &Envelope,
        msg: &[u8],
        mail_id: &str,
        now: i64,
    ) -> Disposition<Judgement> {
        let prepared = self.locate(env, msg);
        self.scan_prepared(env, msg, mail_id, now, &prepared)
    }

    /// Scan one message as of `now` (Unix seconds) with what [`Pipeline::prepare`] found.
    pub fn scan_prepared(
        &self,
        env: &Envelope,
        msg: &[u8],
        mail_id: &str,
        now: i64,
        prepared: &Prepared,
    ) -> Disposition<Judgement> {
        let all = &self.policies.all;
        let default = all.len() - 1;
        let policy_of: Vec<usize> = (0..env.recipients.len().max(1))
            .map(|i| prepared.policies.get(i).copied().unwrap_or(default))
            .collect();
        let mut distinct: Vec<usize> = vec![];
        for &p in &policy_of {
            if !distinct.contains(&p) {
                distinct.push(p);
            }
        }
        let skipped_by_all = |check: &str| {
            distinct
                .iter()
                .all(|&p| all[p].skip_checks.iter().any(|c| c == check))
        };
        // 1. features (Bayes tokens only when Bayes can vote or may learn)
        let mut features = Features::extract_with(
            msg,
            now,
            (self.autolearn.is_some() || self.bayes_ready()) && !skipped_by_all("bayes"),
            self.model && !skipped_by_all("model"),
        );
        features.auth = prepared.auth.clone();
        // 2. checks
        let hits = self.registry.run_except(&features, skipped_by_all);
        // 3. a verdict per policy
        let from_domain = features
            .from
            .as_ref()
            .and_then(|f| f.domain())
            .map(str::to_ascii_lowercase);
        let listed = Subject {
            sender: &env.sender,
            from_domain: from_domain.as_deref(),
            from_authenticated: from_authenticated(
                prepared.auth.as_ref(),
                from_domain.as_deref(),
                &env.sender,
            ),
            client: prepared.origin.ip,
        };
        let verdicts: Vec<Verdict> = distinct
            .iter()
            .map(|&p| {
                let policy = &all[p];
                let mut v = Verdict::without(&hits, &self.scores, policy.levels, |n| {
                    policy.skipped_hits.contains(n)
                });
                v.message_id = features.message_id.clone();
                let (allow, block) = policy.lists.check(&listed);
                v.apply_lists(&allow, &block);
                v
            })
            .collect();
        let autolearn = self.autolearn(&features, &verdicts[0]);
        // 4.-6. decide, tag, merge
        let mut parts: Vec<Part> = vec![];
        let mut judged: Vec<PartJudgement> = vec![];
        for (&p, verdict) in distinct.iter().zip(verdicts) {
            let policy = &all[p];
            let mut decision = policy.decide(&verdict);
            let mut reason = decision.blocked.then_some("spam");
            let detail = prepared
                .over_limit
                .iter()
                .find(|(q, _)| *q == p)
                .map(|(_, k)| k.clone());
            if detail.is_some() {
                decision.destiny = Destiny::Discard;
                decision.quarantine = true;
                decision.blocked = true;
                reason = Some("ratelimit");
            } else if decision.destiny == Destiny::Pass
                && dmarc_holds(policy, prepared.auth.as_ref(), &verdict)
            {
                decision.destiny = Destiny::Discard;
                decision.quarantine = true;
                decision.blocked = true;
                reason = Some("dmarc");
            }
            let action = match decision.destiny {
                Destiny::Pass => Action::Relay(self.tag(
                    &Context {
                        env,
                        msg,
                        mail_id,
                        now,
                        prepared,
                        features: &features,
                        autolearn,
                    },
                    &verdict,
                    policy,
                    decision.quarantine,
                )),
                Destiny::Discard => Action::Discard,
                Destiny::Reject => Action::Reject(Reply::policy_reject(mail_id)),
            };
            let recipients: Vec<usize> = (0..env.recipients.len())
                .filter(|&i| policy_of[i] == p)
                .collect();
            let same = (0..parts.len()).find(|&i| {
                parts[i].quarantine == decision.quarantine
                    && judged[i].reason == reason
                    && same_action(&parts[i].action, &action)
            });
            match same {
                Some(i) => parts[i].recipients.extend(recipients),
                None => {
                    parts.push(Part {
                        recipients,
                        action,
                        quarantine: decision.quarantine,
                    });
                    judged.push(PartJudgement {
                        policy: policy.name.clone(),
                        verdict,
                        reason,
                        detail,
                        quarantine: decision.quarantine,
                    });
                }
            }
        }
        for part in &mut parts {
            part.recipients.sort_unstable();
        }
        Disposition {
            verdict: Judgement {
                parts: judged,
                subject: features.subject.clone(),
                originating: prepared.originating,
                client: prepared.origin.ip,
                helo: prepared.origin.helo.clone(),
            },
            parts,
        }
    }

    /// The relayed copy for one policy: our Authentication-Results (forged ones claiming our
    /// id dropped), the X-Spam-* headers, the subject tag, `X-Quarantine-ID` when a copy is
    /// also kept, our Received line, all at the byte level; then a DKIM signature over
    /// exactly what leaves, for originating mail.
    fn tag(
        &self,
        cx: &Context<'_>,
        verdict: &Verdict,
        policy: &Policy,
        quarantined: bool,
    ) -> Rewrite {
        let Context {
            env,
            msg,
            mail_id,
            now,
            prepared,
            features,
            autolearn,
        } = *cx;
        let mut prefix: Vec<u8> = Vec::with_capacity(512);
        if let Some(a) = &prepared.auth {
            prefix.extend_from_slice(a.header.as_bytes());
        }
        if verdict.is_tagged() {
            prefix.extend_from_slice(verdict.spam_headers(autolearn).as_bytes());
        }
        let subject = features.headers.first(msg, "Subject");
        let retag = verdict.is_spam() && !policy.subject_tag.is_empty();
        if retag {
            prefix.extend_from_slice(&crate::action::tag::tagged_subject(
                subject,
                &policy.subject_tag,
            ));
        }
        if quarantined {
            prefix.extend_from_slice(format!("X-Quarantine-ID: <{mail_id}>\r\n").as_bytes());
        }
        prefix.extend_from_slice(self.received_header(env, mail_id, now).as_bytes());
        let authserv_id = self
            .auth
            .verifier
            .as_ref()
            .map(|v| v.settings().authserv_id.as_str());
        let mut rewrite =
            crate::action::tag::rewrite(msg, &features.headers, prefix, |name, value| {
                (retag
                    && subject.is_some_and(|s| std::ptr::eq(s.as_ptr(), value.as_ptr()))
                    && name.eq_ignore_ascii_case(b"Subject"))
                    || authserv_id.is_some_and(|id| {
                        name.eq_ignore_ascii_case(b"Authentication-Results")
                            && claims_authserv_id(value, id)
                    })
            });
        if self.signs(prepared)
            && let Some(signer) = &self.auth.signer
            && let Some(domain) = features.from.as_ref().and_then(|f| f.domain())
        {
            match signer.sign(domain, &rewrite.parts(msg)) {
                Some(Ok(header)) => {
                    let mut signed = header.into_bytes();
                    signed.extend_from_slice(&rewrite.prefix);
                    rewrite.prefix = signed;
                }
                Some(Err(e)) => tracing::error!(mail_id, error = %e, "relaying unsigned"),
                None => tracing::debug!(mail_id, domain, "no DKIM key for the From domain"),
            }
        }
        rewrite
    }

    /// SpamAssassin-style autolearning on the score without the Bayes hits; returns the
    /// `autolearn=` value for X-Spam-Status.
    fn autolearn(&self, features: &Features<'_>, verdict: &Verdict) -> &'static str {
        use crate::model::bayes_store::{Class, message_id_with};
        let (Some((ham_below, spam_above)), Some(live), Some(tokens)) =
            (self.autolearn, &self.bayes, &features.tokens)
        else {
            return "disabled";
        };
        let bayes: f64 = verdict
            .hits
            .iter()
            .filter(|(n, _)| n.starts_with("BAYES_"))
            .map(|(_, s)| s)
            .sum();
        let score = verdict.score - bayes;
        let class = if score <= ham_below {
            Class::Ham
        } else if score >= spam_above {
            Class::Spam
        } else {
            return "no";
        };
        let id = message_id_with(features.raw, &features.headers);
        if !live.queue_learn(id, tokens.clone(), class) {
            return "unavailable";
        }
        if class == Class::Spam { "spam" } else { "ham" }
    }

    fn bayes_ready(&self) -> bool {
        self.bayes.as_ref().is_some_and(|b| b.ready())
    }

    /// Our own trace header, as every SMTP relay adds one (RFC 5321 section 4.4).
    fn received_header(&self, env: &Envelope, mail_id: &str, now: i64) -> String {
        let proto = if env.mail_params.smtputf8 {
            "UTF8SMTP"
        } else {
            "ESMTP"
        };
        let for_ = match env.recipients.as_slice() {
            [one] => format!(" for <{}>", one.address),
            _ => String::new(),
        };
        let date = mail_parser::DateTime::from_timestamp(now).to_rfc822();
        format!(
            "Received: from {} ([{}])\r\n\tby {} (filterd) with {proto}\r\n\tid {mail_id}{for_}; {date}\r\n",
            sanitize(&env.helo),
            env.peer.ip(),
            self.hostname,
        )
    }
}

/// Keep a client-supplied name from breaking our header.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || c == '(' || c == ')' {
                '_'
            } else {
                c
            }
        })
        .take(255)
        .collect()
}

/// The quarantine entry for a message held for `recipients`.
fn entry(
    env: &Envelope,
    msg: &[u8],
    mail_id: &str,
    judgement: &Judgement,
    recipients: &[usize],
) -> Entry {
    let part = judgement
        .parts
        .iter()
        .find(|p| p.quarantine)
        .or(judgement.parts.first());
    let (policy, reason, verdict) = match part {
        Some(p) => (
            p.policy.clone(),
            p.reason.unwrap_or("spam"),
            Some(&p.verdict),
        ),
        None => ("default".to_string(), "spam", None),
    };
    Entry {
        id: mail_id.to_string(),
        time: unix(std::time::SystemTime::now()),
        policy,
        reason: reason.to_string(),
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
        client_ip: judgement.client.map(|ip| ip.to_string()),
        helo: if judgement.helo.is_empty() {
            env.helo.clone()
        } else {
            judgement.helo.clone()
        },
        queue_id: env.xforward.get(XforwardAttr::Ident).map(str::to_string),
        sender: env.sender.clone(),
        recipients: recipients
            .iter()
            .filter_map(|&i| env.recipients.get(i).map(|r| r.address.clone()))
            .collect(),
        body: env.mail_params.body.map(|b| match b {
            Body::SevenBit => "7BIT".to_string(),
            Body::EightBitMime => "8BITMIME".to_string(),
        }),
        smtputf8: env.mail_params.smtputf8,
        dsn: {
            let held = || recipients.iter().filter_map(|&i| env.recipients.get(i));
            Dsn {
                ret: env.mail_params.ret.clone(),
                envid: env.mail_params.envid.clone(),
                notify: held().map(|r| r.params.notify.clone()).collect(),
                orcpt: held().map(|r| r.params.orcpt.clone()).collect(),
            }
        },
        message_id: verdict.and_then(|v| v.message_id.clone()),
        subject: judgement.subject.clone(),
        size: msg.len() as u64,
        released: vec![],
    }
}

/// The sender's domain asks for failing mail to be rejected or quarantined, and this policy
/// holds such mail (not when an allow list says otherwise).
fn dmarc_holds(policy: &Policy, auth: Option<&AuthVerdict>, verdict: &Verdict) -> bool {
    use crate::auth::DmarcPolicy;
    let asked = match auth.map(|a| a.dmarc) {
        Some(DmarcVerdict::Fail(DmarcPolicy::Reject)) => policy.dmarc_reject,
        Some(DmarcVerdict::Fail(DmarcPolicy::Quarantine)) => policy.dmarc_quarantine,
        _ => false,
    };
    asked
        && !verdict
            .hits
            .iter()
            .any(|(n, _)| n.starts_with("ALLOWLIST_"))
}

/// Two actions that can share one next-hop transaction (or one reply).
fn same_action(a: &Action, b: &Action) -> bool {
    match (a, b) {
        (Action::Relay(x), Action::Relay(y)) => x == y,
        (Action::Discard, Action::Discard) => true,
        (Action::Reject(x), Action::Reject(y)) => x == y,
        _ => false,
    }
}

/// The From domain is authenticated: DMARC pass, an author DKIM signature that verifies,
/// or SPF pass for an envelope domain aligned with it.
fn from_authenticated(auth: Option<&AuthVerdict>, from: Option<&str>, sender: &str) -> bool {
    let Some(a) = auth else {
        return false;
    };
    if a.dmarc == DmarcVerdict::Pass
        || a.dkim
            .iter()
            .any(|d| d.result == AuthResult::Pass && d.author)
    {
        return true;
    }
    let envelope = sender.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
    a.spf == Some(AuthResult::Pass)
        && from.zip(envelope.as_deref()).is_some_and(|(f, e)| {
            f == e || f.ends_with(&format!(".{e}")) || e.ends_with(&format!(".{f}"))
        })
}

impl MessageFilter for Pipeline {
    type Prepared = Prepared;

    fn prepare(
        &self,
        env: &Envelope,
        msg: &[u8],
    ) -> impl std::future::Future<Output = Prepared> + Send {
        Pipeline::prepare(self, env, msg)
    }

    type Verdict = Judgement;

    fn scan(
        &self,
        env: &Envelope,
        msg: &[u8],
        mail_id: &str,
        prepared: &Prepared,
    ) -> Result<Disposition<Judgement>, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Ok(self.scan_prepared(env, msg, mail_id, now, prepared))
    }

    /// The header checks cost about 10 us for a typical message (`cargo bench --bench scan`),
    /// far less than a hand-off to the blocking pool; only big messages go there, and
    /// messages to sign (an RSA signature costs a millisecond or more).
    fn scan_inline(&self, size: usize, prepared: &Prepared) -> bool {
        size <= INLINE_SCAN_LIMIT && !self.bayes_ready() && !self.model && !self.signs(prepared)
    }

    fn quarantine(
        &self,
        env: &Envelope,
        msg: &[u8],
        mail_id: &str,
        judgement: &Judgement,
        recipients: &[usize],
    ) -> Result<String, String> {
        let store = self
            .quarantine
            .as_ref()
            .ok_or("no quarantine is configured")?;
        store
            .put(&entry(env, msg, mail_id, judgement, recipients), msg)
            .map_err(|e| e.to_string())?;
        Ok(mail_id.to_string())
    }

    fn unquarantine(&self, id: &str) {
        if let Some(store) = &self.quarantine
            && let Err(e) = store.delete(id)
        {
            tracing::error!(id, error = %e, "could not remove a quarantine copy of a retried message");
        }
    }

    fn log(&self, record: &MessageRecord<'_, Judgement>) {
        crate::logline::log(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::HeaderBlock;
    use crate::smtp::envelope::{MailParams, RcptParams, Recipient, Xforward};

    fn envelope() -> Envelope {
        Envelope {
            peer: "127.0.0.1:40000".parse().unwrap(),
            helo: "mx.example.net".into(),
            xforward: Xforward::default(),
            sender: "a@example.org".into(),
            mail_params: MailParams::default(),
            recipients: vec![Recipient {
                address: "b@example.net".into(),
                params: RcptParams::default(),
            }],
        }
    }

    fn config() -> Config {
        Config::parse(
            "[bayes]\nenabled = false\n[model]\nenabled = false\n[auth]\nenabled = false\n[actions]\nspam_destiny = \"pass\"\nspam_quarantine = false\n",
        )
        .unwrap()
    }

    fn relayed(d: &Disposition<Judgement>) -> (&Rewrite, &Verdict) {
        match (&d.parts[..], &d.verdict.parts[..]) {
            (
                [
                    Part {
                        action: Action::Relay(r),
                        ..
                    },
                ],
                [j],
            ) => (r, &j.verdict),
            _ => panic!("not one relayed part: {d:?}"),
        }
    }

    const SEEDS: &[&[u8]] = &[
        b"From: A <a@example.org>\r\nTo: b@example.net\r\nSubject: hi\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\nplain body\r\n",
        b"From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\nContent-Type: text/plain\r\n\r\ntext\r\n--XX\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<p>h=C3=A9llo=\r\n</p>\r\n--XX--\r\n",
        b"Subject: =?utf-8?b?w6nDqQ==?=\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: text/html\r\n\r\n<b>x</b>\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC!!!=\r\n--b1--\r\n",
        b"X-Spam-Flag: YES\r\nReceived: from x by y; Mon, 23 Nov 2026 10:00:00 +0000\r\nFrom: \"service@paypal.com\" <x@evil.test>\r\nReply-To: z@other.test\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n",
    ];

    #[test]
    fn relays_the_original_bytes_after_the_added_headers() {
        let p = Pipeline::new(&config());
        let msg = SEEDS[3];
        let d = p.scan_at(&envelope(), msg, "AbCdEf123456", 1_795_442_400);
        let (rewrite, verdict) = relayed(&d);
        let out = rewrite.parts(msg).concat();
        assert!(out.ends_with(&msg[b"X-Spam-Flag: YES\r\n".len()..]));
        assert!(
            out.starts_with(b"X-Spam-Flag: YES\r\n"),
            "GTUBE makes it spam"
        );
        let names: Vec<_> = verdict.hits.iter().map(|h| h.0).collect();
        for n in [
            "GTUBE",
            "FROM_DISPLAY_SPOOF",
            "REPLYTO_DIFF_DOMAIN",
            "MISSING_DATE",
            "MISSING_MID",
            "MISSING_SUBJECT",
            "MISSING_HEADERS",
        ] {
            assert!(names.contains(&n), "{n} not in {names:?}");
        }
        let text = String::from_utf8_lossy(&rewrite.prefix);
        assert!(
            text.contains("Received: from mx.example.net ([127.0.0.1])\r\n\tby "),
            "{text}"
        );
        assert!(
            text.contains(
                "id AbCdEf123456 for <b@example.net>; Mon, 23 Nov 2026 14:00:00 +0000\r\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_bank_skipping_a_check_scores_without_it_and_unwanted_checks_do_not_run() {
        let cfg = Config::parse(
            "[bayes]\nenabled = false\n[model]\nenabled = false\n[auth]\nenabled = false\n\
[actions]\nspam_destiny = \"pass\"\nspam_quarantine = false\n\
[[policy]]\nname = \"nogtube\"\nrecipient_domains = [\"a.test\"]\nskip_checks = [\"gtube\"]\n",
        )
        .unwrap();
        let p = Pipeline::new(&cfg);
        let mut env = envelope();
        env.recipients = ["x@a.test", "y@b.test"]
            .iter()
            .map(|a| Recipient {
                address: a.to_string(),
                params: RcptParams::default(),
            })
            .collect();
        let d = p.scan_at(&env, SEEDS[3], "AbCdEf123456", 1_795_442_400);
        assert_eq!(d.parts.len(), 2);
        assert_eq!(d.parts[0].recipients, [0]);
        assert_eq!(d.verdict.parts[0].policy, "nogtube");
        let names = |i: usize| -> Vec<&str> {
            d.verdict.parts[i]
                .verdict
                .hits
                .iter()
                .map(|h| h.0)
                .collect()
        };
        assert!(!names(0).contains(&"GTUBE"), "{:?}", names(0));
        assert!(names(1).contains(&"GTUBE"));
        let score = |i: usize| d.verdict.parts[i].verdict.score;
        assert!(
            (score(1) - score(0) - 1000.0).abs() < 1e-9,
            "GTUBE counts only in b.test"
        );
        // Only the skipping bank's recipient: GTUBE does not run at all.
        env.recipients.truncate(1);
        let d = p.scan_at(&env, SEEDS[3], "AbCdEf123456", 1_795_442_400);
        assert_eq!(d.parts.len(), 1);
        assert!(
            !d.verdict.parts[0]
                .verdict
                .hits
                .iter()
                .any(|h| h.0 == "GTUBE")
        );
    }

    #[test]
    fn mangled_messages_never_panic_and_keep_their_bytes() {
        let p = Pipeline::new(&config());
        let env = envelope();
        let tokens: &[&[u8]] = &[
            b"\r\n",
            b"\n",
            b"\r",
            b"--",
            b"XX",
            b"b1",
            b"boundary=",
            b"Content-Type: multipart/mixed;",
            b"=?utf-8?q?",
            b"?=",
            b"=",
            b":",
            b" ",
            b"\t",
            b"\xff\xfe",
            b"<",
            b">",
            b"@",
            b"\r\n\r\n",
            b"Content-Transfer-Encoding: base64\r\n",
            b"Date: ",
            b"Received: ",
            b"Subject: ",
            b"***SPAM*** ",
            b";",
        ];
        let mut x: u64 = 0x2545F4914F6CDD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for seed in SEEDS {
            for _ in 0..2000 {
                let mut m = seed.to_vec();
                for _ in 0..(next() % 8 + 1) {
                    let at = (next() as usize) % (m.len() + 1);
                    match next() % 4 {
                        0 => {
                            let t = tokens[(next() as usize) % tokens.len()];
                            m.splice(at..at, t.iter().copied());
                        }
                        1 if at < m.len() => m[at] = next() as u8,
                        2 => m.truncate(at),
                        _ => {
                            let end = (at + (next() as usize) % 16).min(m.len());
                            m.drain(at..end);
                        }
                    }
                }
                let d = p.scan_at(&env, &m, "AbCdEf123456", 1_795_442_400);
                let (rewrite, _) = relayed(&d);
                let out = rewrite.parts(&m).concat();
                let end = HeaderBlock::parse(&m).end;
                assert!(
                    out.ends_with(&m[end..]),
                    "body changed for {:?}",
                    String::from_utf8_lossy(&m)
                );
                assert_eq!(out.len(), rewrite.len());
            }
        }
    }
}
