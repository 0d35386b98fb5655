//! The server: bind every listener, serve until shutdown, then stop accepting and let
//! messages in flight finish within the grace period. One module per kind of listener
//! ([`smtp`]: the SMTP/LMTP filter listeners) and the loops that keep state fresh
//! ([`maintenance`]: Bayes reloads and autolearn writes, quarantine retention, saving the
//! guard's and greylist's state); [`policy`]: the Postfix policy service.

mod maintenance;
mod metrics;
mod notify;
mod policy;
mod smtp;

use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::smtp::budget::Budget;
use crate::smtp::relay::RelayPool;
use crate::smtp::session::SessionConfig;
use smtp::{AcceptContext, accept_loop};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// The next connection on `listener`. While the OS refuses (out of file descriptors and
/// the like) it logs `what` and backs off, 10 ms doubling up to 1 s, instead of spinning.
async fn accept(
    listener: &TcpListener,
    backoff: &mut std::time::Duration,
    what: &str,
) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(x) => {
                *backoff = std::time::Duration::from_millis(10);
                return x;
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what}");
                tokio::time::sleep(*backoff).await;
                *backoff = (*backoff * 2).min(std::time::Duration::from_secs(1));
            }
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A listen address could not be bound (in use, not ours, no permission).
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    /// The configured quarantine directory cannot be created or written: a configuration
    /// problem, as `--check-config` reports it.
    #[error("configuration is invalid:\n  - quarantine: {0}")]
    Quarantine(crate::action::quarantine::QuarantineError),
}

/// Bound listeners, ready to serve.
pub struct Server {
    config: Config,
    listeners: Vec<(TcpListener, Arc<SessionConfig>)>,
    policy_listeners: Vec<TcpListener>,
    metrics_listener: Option<TcpListener>,
}

impl Server {
    /// Bind every listen address; fails with the address that could not be bound, or the
    /// quarantine directory that cannot be used.
    pub async fn bind(config: Config) -> Result<Self, BindError> {
        let mut listeners = vec![];
        let lmtp_session = Arc::new(SessionConfig {
            lmtp: true,
            ..(*config.session).clone()
        });
        let all = config
            .server
            .listen
            .iter()
            .map(|a| (*a, config.session.clone()))
            .chain(
                config
                    .server
                    .lmtp_listen
                    .iter()
                    .map(|a| (*a, lmtp_session.clone())),
            );
        if let Some(q) = &config.quarantine {
            let store = q.store.clone();
            let prepared = tokio::task::spawn_blocking(move || store.prepare()).await;
            match prepared {
                Ok(Ok(())) => {}
                // A database that is down now may be up for the first held message: start,
                // and each write that cannot be made gets its 451.
                Ok(Err(e)) if q.store.is_database() => tracing::error!(
                    error = %e,
                    "quarantine database unavailable at start; mail to be quarantined gets 451 until it answers"
                ),
                Ok(Err(e)) => return Err(BindError::Quarantine(e)),
                Err(e) => tracing::error!(error = %e, "preparing the quarantine panicked"),
            }
        }
        for (addr, session) in all {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| BindError::Listen(addr, e))?;
            listeners.push((l, session));
        }
        let mut policy_listeners = vec![];
        for addr in config.policy_service.iter().flat_map(|p| &p.listen) {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| BindError::Listen(*addr, e))?;
            policy_listeners.push(l);
        }
        // Metrics are not worth refusing mail for: a port in use is an error line, not a stop.
        let metrics_listener = match config.server.metrics {
            None => None,
            Some(addr) => match TcpListener::bind(addr).await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::error!(metrics_listen = %addr, error = %e, "cannot listen for metrics; running without /metrics and /healthz");
                    None
                }
            },
        };
        Ok(Server {
            config,
            listeners,
            policy_listeners,
            metrics_listener,
        })
    }

    /// The addresses actually bound (useful with port 0).
    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// One accept loop per policy service listener.
    fn policy_loops(
        c: &Config,
        listeners: Vec<TcpListener>,
        allow: &Arc<Vec<ipnet::IpNet>>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(settings) = c.policy_service.clone() else {
            return vec![];
        };
        for note in &settings.notes {
            tracing::warn!("{note}");
        }
        let service = Arc::new(crate::policyd::PolicyService::new(
            settings,
            crate::policyd::Shared {
                state: c.state.clone(),
                guard_on_error: c.guard_on_error,
                policies: c.policies.clone(),
                local: c.local.domains.clone(),
                origin: c.auth.origin.clone(),
                verifier: c.auth.verifier.clone(),
                hostname: c.hostname.clone(),
            },
        ));
        listeners
            .into_iter()
            .map(|l| tokio::spawn(policy::policy_loop(l, service.clone(), allow.clone())))
            .collect()
    }

    /// Set the gauges known at start and serve `/metrics` and `/healthz` on `listener`;
    /// returns its address for the ready line ("off" without one).
    fn start_metrics(
        config: &Config,
        listener: Option<TcpListener>,
        loops: &mut Vec<tokio::task::JoinHandle<()>>,
    ) -> String {
        crate::metrics::METRICS
            .model_loaded
            .set(i64::from(config.model.is_some()));
        if let Some(live) = &config.bayes {
            maintenance::bayes_metrics(live);
        }
        let Some(listener) = listener else {
            return "off".into();
        };
        let addr = listener
            .local_addr()
            .map_or_else(|_| "off".to_string(), |a| a.to_string());
        let health = Arc::new(metrics::Health {
            next_hop: config.next_hop.clone(),
            model: config.model.is_some(),
            bayes: config.bayes.is_some(),
        });
        loops.push(tokio::spawn(metrics::metrics_loop(listener, health)));
        addr
    }

    /// Serve until `shutdown` completes, then drain: no new connections, idle sessions get
    /// 421, messages in flight finish (up to the grace period).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let addrs = self.local_addrs();
        let max = self.config.server.max_connections;
        let permits = Arc::new(Semaphore::new(max));
        let (stop_tx, stop_rx) = watch::channel(false);
        let pipeline = Arc::new(Pipeline::new(&self.config));
        let allow = Arc::new(self.config.server.allow_clients.clone());
        let pool = Arc::new(RelayPool::new(
            self.config.next_hop.clone(),
            max,
            self.config.next_hop_idle,
        ));
        let budget = Budget::new(self.config.server.max_bytes_in_flight);
        let mut loops = vec![];
        for (listener, session) in self.listeners {
            let ctx = AcceptContext {
                permits: permits.clone(),
                stop: stop_rx.clone(),
                pipeline: pipeline.clone(),
                allow: allow.clone(),
                session,
                pool: pool.clone(),
                budget: budget.clone(),
            };
            loops.push(tokio::spawn(accept_loop(listener, ctx)));
        }
        let max_tokens = self.config.bayes_max_tokens;
        // Take SIGHUP before announcing readiness: its default action would end the process.
        let (hup_tx, hup_rx) = watch::channel(0u64);
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let hupper = hup.map(|h| tokio::spawn(maintenance::hup_loop(h, hup_tx)));
        let reloader =
            self.config.bayes.clone().map(|live| {
                tokio::spawn(maintenance::reload_loop(live, max_tokens, hup_rx.clone()))
            });
        let learner = self
            .config
            .bayes_redis
            .clone()
            .filter(|_| self.config.autolearn.is_some())
            .map(|r| tokio::spawn(maintenance::redis_learn_loop(r, hup_rx.clone())));
        let rules = tokio::spawn(maintenance::rules_loop(self.config.rules.clone(), hup_rx));
        let retention = self
            .config
            .quarantine
            .clone()
            .map(|q| tokio::spawn(maintenance::retention_loop(q)));
        let policy_addrs: Vec<String> = self
            .policy_listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| a.to_string())
            .collect();
        loops.extend(Self::policy_loops(
            &self.config,
            self.policy_listeners,
            &allow,
        ));
        let saver = self
            .config
            .state
            .embedded()
            .map(|s| tokio::spawn(maintenance::state_loop(s.clone())));
        let metrics_addr = Self::start_metrics(&self.config, self.metrics_listener, &mut loops);
        tracing::info!("{}", self.config.local.summary);
        let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        log_ready(&self.config, &addrs, &policy_addrs, &metrics_addr);
        notify::notify("READY=1");
        shutdown.await;
        notify::notify("STOPPING=1");
        let background = [Some(rules), saver, hupper, reloader, retention, learner];
        for task in background.iter().flatten() {
            task.abort();
        }
        tracing::info!("shutting down: no new connections, finishing messages in flight");
        let _ = stop_tx.send(true);
        for l in &loops {
            l.abort();
        }
        let grace = self.config.server.shutdown_grace;
        match tokio::time::timeout(grace, permits.acquire_many(max as u32)).await {
            Ok(_) => tracing::info!("all sessions finished"),
            Err(_) => tracing::warn!(
                "grace period of {}s over; closing remaining sessions (their messages were not acknowledged and will be retried)",
                grace.as_secs()
            ),
        }
        pool.close_idle().await;
        if let Some(state) = self.config.state.embedded() {
            maintenance::save_state(state).await;
        }
        if let Some(live) = self.config.bayes.clone() {
            maintenance::flush_learned(live, max_tokens).await;
        }
        if let Some(redis) = self.config.bayes_redis.as_deref() {
            maintenance::redis_flush(redis, false).await;
        }
    }
}

/// The ready line: where filterd listens and relays, and which stores it uses.
fn log_ready(config: &Config, addrs: &[String], policy_addrs: &[String], metrics_addr: &str) {
    tracing::info!(
    listen = %addrs.join(","),
    next_hop = %config.next_hop.label(),
    policy_listen = %policy_addrs.join(","),
    metrics_listen = %metrics_addr,
    model = %config.model.as_ref().map_or("off".into(), |m| m.path().display().to_string()),
    state_dir = %config.bayes_dir.display(),
    shared_state = %config.state.describe(),
    bayes_store = %config.bayes_redis.as_ref().map_or("embedded", |b| b.label()),
    quarantine = %config.quarantine.as_ref().map_or("off".into(), |q| q.store.dir().display().to_string()),
    "filterd {} ready",
    env!("CARGO_PKG_VERSION")
    );
}
