//! The only place that knows the order of the steps for one message:
//! 0. origin + sender authentication (async, DNS under one budget: [`Pipeline::prepare`]);
//! 1. features (parse once); 2. checks; 3. verdict; 4. tag (byte-level headers);
//! 5. DKIM signature for originating mail, over the message as it will leave.
//!
//! The session calls it after DATA and relays what it returns.

use crate::auth::origin::Origin;
use crate::auth::{AuthConfig, AuthVerdict, claims_authserv_id};
use crate::checks::Registry;
use crate::config::{Config, Levels};
use crate::message::Features;
use crate::message::HeaderBlock;
use crate::smtp::envelope::Envelope;
use crate::smtp::rewrite::Rewrite;
use crate::smtp::session::{MessageFilter, MessageRecord};
use crate::verdict::Verdict;
use std::collections::BTreeMap;

/// Messages up to this size are scanned on the session's task when only the header checks
/// run (see `scan_inline`); with Bayes voting every scan goes to the blocking pool.
const INLINE_SCAN_LIMIT: usize = 256 * 1024;

/// Everything needed to scan a message; shared by all sessions.
pub struct Pipeline {
    registry: Registry,
    bayes: Option<std::sync::Arc<crate::model::bayes_live::BayesLive>>,
    scores: BTreeMap<&'static str, f64>,
    levels: Levels,
    hostname: String,
    autolearn: Option<(f64, f64)>,
    model: bool,
    auth: AuthConfig,
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
}

impl Pipeline {
    /// Build the pipeline from a validated configuration.
    pub fn new(cfg: &Config) -> Self {
        Pipeline {
            registry: Registry::new(cfg.bayes.clone(), cfg.model.clone()),
            model: cfg.model.is_some(),
            bayes: cfg.bayes.clone(),
            scores: cfg.scores.clone(),
            levels: cfg.levels,
            hostname: cfg.hostname.clone(),
            autolearn: cfg.autolearn,
            auth: cfg.auth.clone(),
        }
    }

    /// Find the origin and verify the sender (SPF, DKIM, DMARC, ARC) within the DNS budget.
    pub async fn prepare(&self, env: &Envelope, msg: &[u8]) -> Prepared {
        if self.auth.verifier.is_none() && self.auth.signer.is_none() {
            return Prepared::default();
        }
        let headers = HeaderBlock::parse(msg);
        let origin = Origin::find(env, msg, &headers, self.auth.trusted_hops);
        let originating = self.auth.origin.is_originating(&origin);
        let auth = match &self.auth.verifier {
            Some(v) if !originating || self.auth.verify_originating => {
                Some(v.verify(msg, &origin, &env.sender).await)
            }
            _ => None,
        };
        Prepared {
            origin,
            originating,
            auth,
        }
    }

    fn signs(&self, prepared: &Prepared) -> bool {
        prepared.originating && self.auth.signer.is_some()
    }

    /// Scan one message as of `now` (Unix seconds), without sender authentication.
    pub fn scan_at(
        &self,
        env: &Envelope,
        msg: &[u8],
        mail_id: &str,
        now: i64,
    ) -> (Rewrite, Verdict) {
        self.scan_prepared(env, msg, mail_id, now, &Prepared::default())
    }

    /// Scan one message as of `now` (Unix seconds) with what [`Pipeline::prepare`] found.
    pub fn scan_prepared(
        &self,
        env: &Envelope,
        msg: &[u8],
        mail_id: &str,
        now: i64,
        prepared: &Prepared,
    ) -> (Rewrite, Verdict) {
        // 1. features (Bayes tokens only when Bayes can vote or may learn)
        let mut features = Features::extract_with(
            msg,
            now,
            self.autolearn.is_some() || self.bayes_ready(),
            self.model,
        );
        features.auth = prepared.auth.clone();
        // 2. checks
        let hits = self.registry.run(&features);
        // 3. verdict
        let mut verdict = Verdict::new(&hits, &self.scores, self.levels);
        verdict.message_id = features.message_id.clone();
        let autolearn = self.autolearn(&features, &verdict);
        // 4. tag: our Authentication-Results (forged ones claiming our id are dropped),
        //    the X-Spam-* headers and our Received line, all at the byte level.
        let mut prefix = String::new();
        if let Some(a) = &prepared.auth {
            prefix.push_str(&a.header);
        }
        if verdict.is_tagged() {
            prefix.push_str(&verdict.spam_headers(autolearn));
        }
        prefix.push_str(&self.received_header(env, mail_id, now));
        let authserv_id = self
            .auth
            .verifier
            .as_ref()
            .map(|v| v.settings().authserv_id.as_str());
        let mut rewrite =
            crate::action::tag::rewrite(msg, &features.headers, prefix, |name, value| {
                authserv_id.is_some_and(|id| {
                    name.eq_ignore_ascii_case(b"Authentication-Results")
                        && claims_authserv_id(value, id)
                })
            });
        // 5. sign what will leave
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
        (rewrite, verdict)
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

impl MessageFilter for Pipeline {
    type Prepared = Prepared;

    fn prepare(
        &self,
        env: &Envelope,
        msg: &[u8],
    ) -> impl std::future::Future<Output = Prepared> + Send {
        Pipeline::prepare(self, env, msg)
    }

    type Verdict = Verdict;

    fn scan(
        &self,
        env: &Envelope,
        msg: &[u8],
        mail_id: &str,
        prepared: &Prepared,
    ) -> Result<(Rewrite, Verdict), String> {
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

    fn log(&self, record: &MessageRecord<'_, Verdict>) {
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

    const SEEDS: &[&[u8]] = &[
        b"From: A <a@example.org>\r\nTo: b@example.net\r\nSubject: hi\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\nplain body\r\n",
        b"From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\nContent-Type: text/plain\r\n\r\ntext\r\n--XX\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<p>h=C3=A9llo=\r\n</p>\r\n--XX--\r\n",
        b"Subject: =?utf-8?b?w6nDqQ==?=\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: text/html\r\n\r\n<b>x</b>\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC!!!=\r\n--b1--\r\n",
        b"X-Spam-Flag: YES\r\nReceived: from x by y; Mon, 23 Nov 2026 10:00:00 +0000\r\nFrom: \"service@paypal.com\" <x@evil.test>\r\nReply-To: z@other.test\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n",
    ];

    #[test]
    fn relays_the_original_bytes_after_the_added_headers() {
        let p = Pipeline::new(&Config::parse("[bayes]\nenabled = false\n").unwrap());
        let msg = SEEDS[3];
        let (rewrite, verdict) = p.scan_at(&envelope(), msg, "AbCdEf123456", 1_795_442_400);
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
    fn mangled_messages_never_panic_and_keep_their_bytes() {
        let p = Pipeline::new(&Config::parse("[bayes]\nenabled = false\n").unwrap());
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
                let (rewrite, _) = p.scan_at(&env, &m, "AbCdEf123456", 1_795_442_400);
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
