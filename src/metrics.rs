//! Prometheus metrics (issue 16): one registry for the process, counters updated where
//! things happen (the per-message record, the relay, the accept loop, the quarantine), served
//! in the text exposition format by [`crate::server`]'s metrics listener at `/metrics`.
//!
//! Label sets are bounded: hit names come from the check registry and the loaded rules,
//! everything else from fixed lists here. Counters are atomic adds; a label lookup is a read
//! lock and a hash, a few per message.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder, exponential_buckets,
};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A message's labels, the words of its log line: direction (`Inbound`, `Outbound`),
/// amavisd-new's content category (`CLEAN`, `SPAMMY`, `SPAM`, `INFECTED`, `BANNED`,
/// `UNCHECKED`, ...) and the action (`Relayed`, `RelayedTagged`, `Discarded`, `Rejected`,
/// `TempFailed`).
#[derive(Clone, Copy, Debug)]
pub struct MessageLabels {
    /// `Inbound` or `Outbound`.
    pub direction: &'static str,
    /// The content category.
    pub category: &'static str,
    /// What was done with it.
    pub action: &'static str,
}

/// Every metric filterd exports.
pub struct Metrics {
    registry: Registry,
    /// Messages by direction, category and action (one per log line).
    pub messages: IntCounterVec,
    /// Hits on scanned messages, by hit name.
    pub hits: IntCounterVec,
    /// Time from the end of DATA to the scan's result (preparation included).
    pub scan_seconds: Histogram,
    /// Time the next hop took for the content (DATA or the end of data to its reply).
    pub next_hop_seconds: Histogram,
    /// Time from the end of DATA to filterd's reply.
    pub message_seconds: Histogram,
    /// Next-hop failures by kind (`connect`, `timeout`, `io`, `protocol`, `tempfail`,
    /// `reject`).
    pub next_hop_errors: IntCounterVec,
    /// Connections being served.
    pub connections_open: IntGauge,
    /// Connections refused, by reason (`allow_list`, `limit`, `loop`).
    pub connections_refused: IntCounterVec,
    /// Messages written to the quarantine.
    pub quarantined: IntCounter,
    /// Bytes written to the quarantine.
    pub quarantined_bytes: IntCounter,
    /// Messages Bayes learned, by class (`ham`, `spam`).
    pub bayes_messages: IntGaugeVec,
    /// 1 when Bayes has learned enough to vote.
    pub bayes_ready: IntGauge,
    /// 1 when the ONNX model is loaded.
    pub model_loaded: IntGauge,
    /// Policy-service answers by the check that decided and the result.
    pub policy_decisions: IntCounterVec,
    /// Look-ups in the cache of parsed DNS records (SPF, DKIM, DMARC and what they need),
    /// by record kind (`txt`, `mx`, `a`, `aaaa`, `ptr`; `spf_result` is the policy service's
    /// memo of whole SPF results) and `hit`/`miss`; a miss asks the resolver, whose own cache
    /// may still answer it.
    pub dns_cache: IntCounterVec,
    /// Block-list look-ups by result (`answered`: an address came back, `nxdomain`: not
    /// listed, `error`); the resolver's answer cache is below them.
    pub dnsbl_lookups: IntCounterVec,
    /// Checks cut short by the message's DNS budget, by check (`spf`, `dkim`, `arc`,
    /// `dmarc`, `dnsbl`).
    pub dns_budget_exceeded: IntCounterVec,
    /// Requests to the shared stores, by store (`redis`, `postgresql`) and result (`ok`,
    /// `error`); one Redis request is one round trip (a pipeline or a script call).
    pub shared_requests: IntCounterVec,
    /// Time of each Redis request.
    pub redis_seconds: Histogram,
    /// Unix time of the last next-hop reply that was not an error, for `/healthz`.
    next_hop_ok: AtomicU64,
    /// Unix time of the last failure to reach the next hop.
    next_hop_failed: AtomicU64,
}

/// The process' metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Metric definitions are constants of this file: a failure to build one is a bug, found by
/// the unit test; it panics at the first use, never on input.
fn built<T>(r: prometheus::Result<T>) -> T {
    match r {
        Ok(m) => m,
        Err(e) => panic!("metric definition: {e}"),
    }
}

fn counters(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    built(IntCounterVec::new(Opts::new(name, help), labels))
}

fn latency(name: &str, help: &str) -> Histogram {
    // 0.1 ms to about 6 s.
    let buckets = built(exponential_buckets(0.0001, 3.0, 11));
    built(Histogram::with_opts(
        HistogramOpts::new(name, help).buckets(buckets),
    ))
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: built(Registry::new_custom(Some("filterd".into()), None)),
            messages: counters(
                "messages_total",
                "Messages by direction, content category and action",
                &["direction", "category", "action"],
            ),
            hits: counters(
                "hits_total",
                "Hits on scanned messages, by hit name",
                &["name"],
            ),
            scan_seconds: latency(
                "scan_seconds",
                "Time from the end of DATA to the scan's result",
            ),
            next_hop_seconds: latency(
                "next_hop_seconds",
                "Time the next hop took to answer the content",
            ),
            message_seconds: latency(
                "message_seconds",
                "Time from the end of DATA to filterd's reply",
            ),
            next_hop_errors: counters(
                "next_hop_errors_total",
                "Next-hop failures by kind",
                &["kind"],
            ),
            connections_open: built(IntGauge::new(
                "connections_open",
                "Client connections being served",
            )),
            connections_refused: counters(
                "connections_refused_total",
                "Client connections refused, by reason",
                &["reason"],
            ),
            quarantined: built(IntCounter::new(
                "quarantined_messages_total",
                "Messages written to the quarantine",
            )),
            quarantined_bytes: built(IntCounter::new(
                "quarantined_bytes_total",
                "Bytes written to the quarantine",
            )),
            bayes_messages: built(IntGaugeVec::new(
                Opts::new(
                    "bayes_learned_messages",
                    "Messages the Bayes store has learned, by class",
                ),
                &["class"],
            )),
            bayes_ready: built(IntGauge::new(
                "bayes_ready",
                "1 when Bayes has learned enough to vote",
            )),
            model_loaded: built(IntGauge::new(
                "model_loaded",
                "1 when the ONNX model is loaded",
            )),
            policy_decisions: counters(
                "policy_decisions_total",
                "Policy-service answers by the check that decided and the result",
                &["check", "result"],
            ),
            dns_cache: counters(
                "dns_record_cache_total",
                "Look-ups in the parsed DNS record cache by kind and result (a miss asks the resolver)",
                &["kind", "result"],
            ),
            dnsbl_lookups: counters(
                "dnsbl_lookups_total",
                "DNS block-list look-ups by result",
                &["result"],
            ),
            dns_budget_exceeded: counters(
                "dns_budget_exceeded_total",
                "Checks cut short by the message's DNS time budget, by check",
                &["check"],
            ),
            shared_requests: counters(
                "shared_store_requests_total",
                "Requests to the shared stores (one Redis request is one round trip), by store and result",
                &["store", "result"],
            ),
            redis_seconds: latency("redis_request_seconds", "Time of each Redis request"),
            next_hop_ok: AtomicU64::new(0),
            next_hop_failed: AtomicU64::new(0),
        };
        m.register_all();
        m
    }

    /// Register every metric, and the build info, with the registry.
    fn register_all(&self) {
        let build = built(IntGaugeVec::new(
            Opts::new("build_info", "The running build (always 1)"),
            &["version"],
        ));
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.messages.clone()),
            Box::new(self.hits.clone()),
            Box::new(self.scan_seconds.clone()),
            Box::new(self.next_hop_seconds.clone()),
            Box::new(self.message_seconds.clone()),
            Box::new(self.next_hop_errors.clone()),
            Box::new(self.connections_open.clone()),
            Box::new(self.connections_refused.clone()),
            Box::new(self.quarantined.clone()),
            Box::new(self.quarantined_bytes.clone()),
            Box::new(self.bayes_messages.clone()),
            Box::new(self.bayes_ready.clone()),
            Box::new(self.model_loaded.clone()),
            Box::new(self.policy_decisions.clone()),
            Box::new(self.dns_cache.clone()),
            Box::new(self.dnsbl_lookups.clone()),
            Box::new(self.dns_budget_exceeded.clone()),
            Box::new(self.shared_requests.clone()),
            Box::new(self.redis_seconds.clone()),
            Box::new(build),
        ];
        for c in collectors {
            built(self.registry.register(c));
        }
    }

    /// A check ran out of the message's DNS budget.
    pub fn dns_budget_exceeded(&self, check: &'static str) {
        self.dns_budget_exceeded.with_label_values(&[check]).inc();
    }

    /// The text exposition (format 0.0.4) of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }

    /// Count a message the way its log line reports it.
    pub fn message(&self, l: MessageLabels, hits: &[(&'static str, f64)], elapsed: Duration) {
        self.messages
            .with_label_values(&[l.direction, l.category, l.action])
            .inc();
        for (name, _) in hits {
            self.hits.with_label_values(&[*name]).inc();
        }
        self.message_seconds.observe(elapsed.as_secs_f64());
    }

    /// Count a next-hop failure of `kind`.
    pub fn next_hop_error(&self, kind: &'static str) {
        self.next_hop_errors.with_label_values(&[kind]).inc();
        if matches!(kind, "connect" | "timeout" | "io" | "protocol") {
            self.next_hop_failed.store(now(), Ordering::Relaxed);
        }
    }

    /// The next hop answered.
    pub fn next_hop_answered(&self) {
        self.next_hop_ok.store(now(), Ordering::Relaxed);
    }

    /// (last answer, last failure) of the next hop, unix seconds (0: never).
    pub fn next_hop_times(&self) -> (u64, u64) {
        (
            self.next_hop_ok.load(Ordering::Relaxed),
            self.next_hop_failed.load(Ordering::Relaxed),
        )
    }

    /// Count a refused connection.
    pub fn refused(&self, reason: &'static str) {
        self.connections_refused.with_label_values(&[reason]).inc();
    }

    /// Count a policy-service answer: the check that decided (`greylist`, `spf`, `login`,
    /// `limit`, `none`) and the result (`dunno`, `prepend`, `defer`, `reject`).
    pub fn policy_decision(&self, check: &'static str, result: &'static str) {
        self.policy_decisions
            .with_label_values(&[check, result])
            .inc();
    }

    /// Record the Bayes store's message counts and whether it votes.
    pub fn bayes(&self, nham: u64, nspam: u64, ready: bool) {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.bayes_messages.with_label_values(&["ham"]).set(n(nham));
        self.bayes_messages
            .with_label_values(&["spam"])
            .set(n(nspam));
        self.bayes_ready.set(i64::from(ready));
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Holds the open-connections gauge up while a session runs.
pub struct OpenConnection(());

impl OpenConnection {
    /// One more connection open until this is dropped.
    pub fn new() -> OpenConnection {
        METRICS.connections_open.inc();
        OpenConnection(())
    }
}

impl Default for OpenConnection {
    fn default() -> Self {
        OpenConnection::new()
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        METRICS.connections_open.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let m = Metrics::new();
        m.message(
            MessageLabels {
                direction: "Inbound",
                category: "CLEAN",
                action: "Relayed",
            },
            &[("BAYES_00", -1.9)],
            Duration::from_millis(3),
        );
        m.next_hop_error("tempfail");
        let text = m.render();
        assert!(
            text.contains(
                "filterd_messages_total{action=\"Relayed\",category=\"CLEAN\",direction=\"Inbound\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("filterd_hits_total{name=\"BAYES_00\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("filterd_next_hop_errors_total{kind=\"tempfail\"} 1"),
            "{text}"
        );
        assert!(text.contains("filterd_build_info{version=\""), "{text}");
        assert!(text.contains("filterd_message_seconds_count 1"), "{text}");
    }
}
