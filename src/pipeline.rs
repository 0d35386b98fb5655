//! The only place that knows the order of the steps for one message:
//!
//! 0. [`Pipeline::prepare`] (async, before the scan): where the message came from, the
//!    policy of each recipient, the outbound guard's count, sender authentication (DNS
//!    under one budget) and clamd's virus verdict;
//! 1. features, extracted once;
//! 2. checks (those some recipient's policy wants) -> hits; the attachment walk;
//! 3. a verdict per policy (its levels, skipped checks, allow/block lists);
//! 4. a decision per policy (destiny, quarantine copy, hold reason: also virus, banned);
//! 5. the delivery of each decision: the tagged (and for outbound mail, signed) copy to
//!    relay, a discard or a reject;
//! 6. recipients with the same delivery merged into one part.
//!
//! The session calls it after DATA and carries out the parts; the report goes to the log
//! line and the quarantine entry.

use crate::action::autolearn::autolearn;
use crate::action::quarantine::{Entry, Quarantine};
use crate::action::tag::{self, Tags};
use crate::auth::origin::Origin;
use crate::auth::{AuthConfig, AuthVerdict};
use crate::checks::{Input, Registry};
use crate::clock::now_unix;
use crate::config::Config;
use crate::content::clamd::Scanned;
use crate::content::{Content, virus_name};
use crate::message::{Features, HeaderBlock};
use crate::model::bayes_live::BayesLive;
use crate::policy::decision::{Decision, Signals, decide, looping};
use crate::policy::lists::Identity;
use crate::policy::{Assignment, Destiny, Guard, Policies};
use crate::report::{Parts, Report};
use crate::smtp::envelope::Envelope;
use crate::smtp::filter::{Delivery, Disposition, MessageFilter, MessageRecord};
use crate::smtp::reply::Reply;
use crate::smtp::rewrite::Rewrite;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Messages up to these sizes are scanned on the session's task (see `scan_inline`): with
/// header checks only, and with Bayes or the model (about 0.1 ms, less than the two thread
/// wake-ups of a hand-off to the blocking pool).
const INLINE_SCAN_LIMIT: (usize, usize) = (256 * 1024, 32 * 1024);

/// Messages up to this size run the rules (amavisd-new hands SpamAssassin 400 KB at most):
/// spam is small, and eight 40 MB messages at once stay in the memory budget.
const RULES_MAX_MESSAGE: usize = 4 << 20;

/// Everything needed to scan a message; shared by all sessions.
pub struct Pipeline {
    registry: Registry,
    bayes: Option<Arc<BayesLive>>,
    bayes_redis: Option<Arc<crate::model::bayes_redis::RedisBayes>>,
    rules: Arc<crate::rules::live::LiveRules>,
    hostname: String,
    autolearn: Option<(f64, f64)>,
    model: bool,
    auth: AuthConfig,
    policies: Arc<Policies>,
    guard: Guard,
    quarantine: Option<Quarantine>,
    max_passes: usize,
    max_scan: usize,
    content: Content,
    dnsbl: Option<crate::dns::Dnsbl>,
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
    pub over_limit: BTreeMap<usize, String>,
    /// How many times this filterd already handled the message (its own Received lines).
    pub passes: usize,
    /// What clamd said, when it ran.
    pub virus: Option<Scanned>,
    /// Block-list hits, when the lists were asked.
    pub listed: Vec<&'static str>,
    /// The Bayes store in Redis, when it is the store: its answer, or why there is none.
    pub bayes: Option<Result<crate::model::bayes_redis::Lookup, String>>,
}

/// One scan's inputs, for building each relayed copy.
struct Scan<'a> {
    env: &'a Envelope,
    msg: &'a [u8],
    mail_id: &'a str,
    now: i64,
    prepared: &'a Prepared,
    features: &'a Features<'a>,
    autolearn: &'static str,
}

impl Pipeline {
    /// Build the pipeline from a validated configuration.
    pub fn new(cfg: &Config) -> Self {
        Pipeline {
            registry: Registry::new(cfg.bayes.clone(), cfg.model.clone()),
            model: cfg.model.is_some(),
            bayes: cfg.bayes.clone(),
            bayes_redis: cfg.bayes_redis.clone(),
            rules: cfg.rules.clone(),
            hostname: cfg.hostname.clone(),
            autolearn: cfg.autolearn,
            auth: cfg.auth.clone(),
            policies: cfg.policies.clone(),
            guard: Guard::scoped(
                cfg.state.clone(),
                cfg.local.domains.clone(),
                cfg.auth.origin.clone(),
                cfg.policies.clone(),
            )
            .with_on_error(cfg.guard_on_error),
            quarantine: cfg.quarantine.as_ref().map(|q| q.store.clone()),
            max_passes: cfg.max_passes,
            max_scan: cfg.max_scan,
            content: cfg.content.clone(),
            dnsbl: cfg.dnsbl.clone(),
        }
    }

    /// Origin and the policy of each recipient: no I/O.
    fn locate(&self, env: &Envelope, msg: &[u8]) -> Prepared {
        let headers = HeaderBlock::parse(msg);
        let origin = Origin::find(env, msg, &headers, self.auth.trusted_hops);
        let originating = self.auth.origin.is_originating(&origin);
        let rcpts = env.recipients.iter().map(|r| r.address.as_str());
        let passes = headers
            .named(msg, "Received")
            .filter(|h| tag::is_our_received(&msg[h.value.clone()], &self.hostname))
            .count();
        Prepared {
            policies: self.policies.select_all(rcpts, origin.ip, originating),
            origin,
            originating,
            passes,
            ..Prepared::default()
        }
    }

    /// Step 0: find the origin and the policies, count outbound mail against the guard,
    /// then verify the sender (SPF, DKIM, DMARC, ARC) and ask clamd at once, each in budget.
    pub async fn prepare(&self, env: &Envelope, msg: &[u8]) -> Prepared {
        let mut prepared = self.locate(env, msg);
        let p = &prepared;
        let over = (self.guard)
            .count_message(env, &p.origin, p.originating, &p.policies)
            .await;
        prepared.over_limit = over.into_iter().collect();
        let p = &prepared;
        let verify = (self.auth).verify(msg, &p.origin, p.originating, &env.sender);
        let view = crate::message::features::scan_view(msg, self.max_scan);
        let lists = crate::dns::listed(self.dnsbl.as_ref(), view, p.origin.ip, p.originating);
        let bayes = self.bayes_lookup(view, &p.policies, env.recipients.len());
        (
            prepared.auth,
            prepared.virus,
            prepared.listed,
            prepared.bayes,
        ) = tokio::join!(verify, self.content.virus_scan(msg), lists, bayes);
        prepared
    }

    /// The Redis Bayes store's answer for the message's tokens (one round trip), unless
    /// the store is another or every recipient's policy skips Bayes.
    async fn bayes_lookup(
        &self,
        view: &[u8],
        chosen: &[usize],
        n: usize,
    ) -> Option<Result<crate::model::bayes_redis::Lookup, String>> {
        let redis = self.bayes_redis.as_ref()?;
        let assigned = Assignment::new(chosen, n, self.policies.default_index());
        let all = &self.policies.all;
        if assigned.distinct().iter().all(|&p| all[p].skips("bayes")) {
            return None;
        }
        let tokens = crate::message::tokenize::Tokens::of_raw(view);
        Some(redis.classify(&tokens).await.map_err(|e| e.0))
    }

    /// Scan one message as of `now` (Unix seconds), without sender authentication or the
    /// outbound guard.
    pub fn scan_at(
        &self,
        env: &Envelope,
        msg: &[u8],
        mail_id: &str,
        now: i64,
    ) -> Disposition<Report> {
        let prepared = self.locate(env, msg);
        self.scan_prepared(env, msg, mail_id, now, &prepared)
    }

    /// Steps 1-6: scan one message as of `now` (Unix seconds) with what
    /// [`Pipeline::prepare`] found.
    pub fn scan_prepared(
        &self,
        env: &Envelope,
        msg: &[u8],
        mail_id: &str,
        now: i64,
        prepared: &Prepared,
    ) -> Disposition<Report> {
        if prepared.passes >= self.max_passes {
            return self.looping(env, prepared);
        }
        let all = &self.policies.all;
        let n = env.recipients.len();
        let assigned = Assignment::new(&prepared.policies, n, self.policies.default_index());
        let skipped = |check: &str| assigned.distinct().iter().all(|&p| all[p].skips(check));
        // 1. features (tokens only when Bayes can vote or learn, or the model runs)
        let bayes = (self.autolearn.is_some() || self.bayes_ready()) && !skipped("bayes");
        let model = self.model && !skipped("model");
        let view = crate::message::features::scan_view(msg, self.max_scan);
        let features = Features::extract_with(view, now, bayes || model);
        // 2. checks
        let auth = prepared.auth.as_ref();
        let virus_unchecked = matches!(prepared.virus, Some(Scanned::Failed(_)));
        let input = Input {
            features: &features,
            auth,
            virus_unchecked,
            bayes: prepared.bayes.as_ref(),
        };
        let mut hits = self.registry.run_except(&input, skipped);
        let scoring = self.rules.current();
        let rules = !skipped("rules") && msg.len() <= RULES_MAX_MESSAGE;
        scoring.apply(&features, &mut hits, auth, &prepared.listed, rules);
        let walked = self.content.walk(msg, &features.headers);
        let virus = virus_name(prepared.virus.as_ref());
        // 3. a verdict and 4. a decision per policy
        let from = features.from.as_ref().and_then(|f| f.domain());
        let from = from.map(str::to_ascii_lowercase);
        let who = Identity::new(&env.sender, from.as_deref(), auth, prepared.origin.ip);
        let decisions: Vec<Decision> = assigned
            .distinct()
            .iter()
            .map(|&p| {
                let verdict = all[p].verdict(&hits, &scoring.scores, &who);
                let over_limit = prepared.over_limit.get(&p).map(String::as_str);
                let banned = all[p].banned.banned_part(&walked);
                let signals = Signals::new(over_limit, auth, virus, banned);
                decide(&all[p], verdict, &signals)
            })
            .collect();
        let scan = Scan {
            env,
            msg,
            mail_id,
            now,
            prepared,
            features: &features,
            autolearn: autolearn(
                self.autolearn,
                self.bayes.as_deref().map(BayesLive::queue).or(self
                    .bayes_redis
                    .as_deref()
                    .map(crate::model::bayes_redis::RedisBayes::queue)),
                &features,
                &decisions[0].verdict,
            ),
        };
        // 5. deliveries and 6. parts
        let mut parts = Parts::default();
        for (&p, decision) in assigned.distinct().iter().zip(decisions) {
            let delivery = self.delivery(&scan, p, &decision);
            parts.add(assigned.recipients_of(p, n), delivery, decision);
        }
        let (subject, id) = (features.subject.clone(), features.message_id.clone());
        parts.disposition(subject, id, prepared.originating, &prepared.origin)
    }

    /// A message in a mail loop: refused for every recipient, unscanned.
    fn looping(&self, env: &Envelope, prepared: &Prepared) -> Disposition<Report> {
        tracing::error!(
            passes = prepared.passes,
            "mail loop: the message already passed this filterd; check next_hop and Postfix's content_filter"
        );
        let decision = looping(self.policies.default_policy(), &self.rules.current().scores);
        let mut parts = Parts::default();
        let delivery = Delivery::Reject(Reply::mail_loop(prepared.passes));
        parts.add((0..env.recipients.len()).collect(), delivery, decision);
        parts.disposition(None, None, prepared.originating, &prepared.origin)
    }

    /// Step 5: the delivery of policy `p`'s decision; what passes is tagged (and signed
    /// when outbound).
    fn delivery(&self, scan: &Scan<'_>, p: usize, decision: &Decision) -> Delivery {
        match decision.destiny {
            Destiny::Pass => Delivery::Relay(self.relayed_copy(scan, p, decision)),
            Destiny::Discard => Delivery::Discard,
            Destiny::Reject => Delivery::Reject(Reply::policy_reject(scan.mail_id)),
        }
    }

    /// The copy to relay under policy `p`'s decision.
    fn relayed_copy(&self, scan: &Scan<'_>, p: usize, decision: &Decision) -> Rewrite {
        let policy = &self.policies.all[p];
        let received = tag::received_header(&self.hostname, scan.env, scan.mail_id, scan.now);
        let virus = scan.prepared.virus.as_ref();
        let alert = decision
            .alert()
            .or_else(|| self.content.unchecked_alert(virus));
        let tags = Tags {
            auth_results: scan.prepared.auth.as_ref().map(|a| a.header.as_str()),
            authserv_id: self.auth.authserv_id(),
            verdict: &decision.verdict,
            autolearn: scan.autolearn,
            subject_tag: &policy.subject_tag,
            quarantine_id: decision.quarantine.then_some(scan.mail_id),
            received: &received,
            alert: alert.as_deref(),
        };
        let mut copy = tag::relayed_copy(scan.msg, &scan.features.headers, &tags);
        if scan.prepared.originating
            && let Some(signer) = &self.auth.signer
            && let Some(domain) = scan.features.from.as_ref().and_then(|f| f.domain())
        {
            tag::sign(&mut copy, scan.msg, signer, domain, scan.mail_id);
        }
        copy
    }

    fn bayes_ready(&self) -> bool {
        self.bayes.as_ref().is_some_and(|b| b.ready())
    }
}

impl MessageFilter for Pipeline {
    type Report = Report;
    type Prepared = Prepared;

    fn prepare(
        &self,
        env: &Envelope,
        msg: &[u8],
    ) -> impl std::future::Future<Output = Prepared> + Send {
        Pipeline::prepare(self, env, msg)
    }

    fn scan(
        &self,
        env: &Envelope,
        msg: &[u8],
        mail_id: &str,
        prepared: &Prepared,
    ) -> Result<Disposition<Report>, String> {
        if let Some(why) = self.content.tempfail(prepared.virus.as_ref()) {
            return Err(why);
        }
        let now = now_unix() as i64;
        Ok(self.scan_prepared(env, msg, mail_id, now, prepared))
    }

    /// The header checks cost about 10 us for a typical message (`cargo bench --bench scan`),
    /// far less than a hand-off to the blocking pool; only big messages go there, and
    /// messages to sign (an RSA signature costs a millisecond or more).
    fn scan_inline(&self, size: usize, prepared: &Prepared) -> bool {
        let signs = prepared.originating && self.auth.signer.is_some();
        let (light, heavy) = INLINE_SCAN_LIMIT;
        let limit = if self.bayes_ready() || self.model {
            heavy
        } else {
            light
        };
        !signs && size <= limit
    }

    fn quarantine(
        &self,
        env: &Envelope,
        msg: &[u8],
        mail_id: &str,
        report: &Report,
        recipients: &[usize],
    ) -> Result<String, String> {
        let held = Entry::held(env, msg.len(), mail_id, report, recipients, now_unix());
        crate::action::quarantine::hold(self.quarantine.as_ref(), &held, msg)
    }

    fn unquarantine(&self, id: &str) {
        crate::action::quarantine::release_copy(self.quarantine.as_ref(), id);
    }

    fn log(&self, record: &MessageRecord<'_, Report>) {
        crate::report::logline::log(record);
    }
}
