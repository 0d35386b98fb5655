//! The accept loops: bind every listener, refuse clients outside the allow-list (554) and
//! connections over the cap (421 4.7.0, never a hang), run one task per connection, and on
//! shutdown stop accepting and let messages in flight finish within the grace period.

use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::smtp::relay::RelayPool;
use crate::smtp::reply::Reply;
use crate::smtp::session::{Session, SessionConfig};
use ipnet::IpNet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// Bound listeners, ready to serve.
pub struct Server {
    config: Config,
    listeners: Vec<(TcpListener, Arc<SessionConfig>)>,
}

impl Server {
    /// Bind every listen address; fails with the address that could not be bound.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
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
            q.store
                .prepare()
                .map_err(|e| anyhow::anyhow!("quarantine: {e}"))?;
        }
        for (addr, session) in all {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            listeners.push((l, session));
        }
        Ok(Server { config, listeners })
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
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
        let mut loops = vec![];
        for (listener, session) in self.listeners {
            let ctx = AcceptContext {
                permits: permits.clone(),
                stop: stop_rx.clone(),
                pipeline: pipeline.clone(),
                allow: allow.clone(),
                session,
                pool: pool.clone(),
            };
            loops.push(tokio::spawn(accept_loop(listener, ctx)));
        }
        let max_tokens = self.config.bayes_max_tokens;
        // Take SIGHUP before announcing readiness: its default action would end the process.
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let reloader = self
            .config
            .bayes
            .clone()
            .map(|live| tokio::spawn(reload_loop(live, max_tokens, hup)));
        let retention = self
            .config
            .quarantine
            .clone()
            .map(|q| tokio::spawn(retention_loop(q)));
        let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        tracing::info!(
            listen = %addrs.join(","),
            next_hop = %self.config.next_hop.label(),
            "filterd {} ready",
            env!("CARGO_PKG_VERSION")
        );
        shutdown.await;
        if let Some(r) = reloader {
            r.abort();
        }
        if let Some(r) = retention {
            r.abort();
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
        if let Some(live) = self.config.bayes.clone() {
            flush_learned(live, max_tokens).await;
        }
    }
}

/// Quarantine retention: at start and every hour, entries past their age go, then the
/// oldest while the store is over its size, and leftovers of interrupted writes.
async fn retention_loop(q: crate::config::QuarantineSettings) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let q = q.clone();
        let done = tokio::task::spawn_blocking(move || {
            q.store
                .enforce(std::time::SystemTime::now(), q.max_age, q.max_bytes)
        })
        .await;
        match done {
            Ok(Ok(r)) if r.entries > 0 => tracing::info!(
                entries = r.entries,
                bytes = r.bytes,
                "quarantine retention removed old entries"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "quarantine retention failed"),
            Err(e) => tracing::error!(error = %e, "quarantine retention panicked"),
        }
    }
}

struct AcceptContext {
    permits: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    pipeline: Arc<Pipeline>,
    allow: Arc<Vec<IpNet>>,
    session: Arc<SessionConfig>,
    pool: Arc<RelayPool>,
}

async fn accept_loop(listener: TcpListener, ctx: AcceptContext) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => {
                backoff = Duration::from_millis(10);
                x
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        stream.set_nodelay(true).ok();
        let ip = canonical(peer.ip());
        if !ctx.allow.iter().any(|n| n.contains(&ip)) {
            tracing::warn!(client = %peer, "client not in allow_clients, refused");
            tokio::spawn(refuse(stream, Reply::client_refused(ip)));
            continue;
        }
        let Ok(permit) = ctx.permits.clone().try_acquire_owned() else {
            tracing::warn!(client = %peer, "connection limit reached, refused with 421");
            tokio::spawn(refuse(stream, Reply::too_many_connections()));
            continue;
        };
        let session = Session::new(
            stream,
            peer,
            ctx.session.clone(),
            ctx.pool.clone(),
            ctx.pipeline.clone(),
            ctx.stop.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = session.run().await {
                tracing::debug!(client = %peer, error = %e, "session ended with an I/O error");
            }
            drop(permit);
        });
    }
}

async fn refuse(mut stream: TcpStream, reply: Reply) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        stream.write_all(&reply.to_wire()).await?;
        stream.shutdown().await
    })
    .await;
}

/// IPv4-mapped IPv6 addresses are matched as IPv4.
fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// Write autolearned messages to the store (off the async workers).
async fn flush_learned(live: Arc<crate::model::bayes_live::BayesLive>, max_tokens: usize) {
    if live.pending() == 0 {
        return;
    }
    match tokio::task::spawn_blocking(move || live.flush_learned(max_tokens)).await {
        Ok(Ok(n)) => tracing::info!("autolearned {n} message(s) into the Bayes store"),
        Ok(Err(e)) => tracing::error!("autolearned messages not written: {e}"),
        Err(e) => tracing::error!("autolearn task failed: {e}"),
    }
}

/// Pick up a store that `filtertrain` replaced: checked every second, and at once on SIGHUP.
/// Autolearned messages are written every 30 s (and on SIGHUP and at shutdown).
async fn reload_loop(
    live: Arc<crate::model::bayes_live::BayesLive>,
    max_tokens: usize,
    mut hup: Option<tokio::signal::unix::Signal>,
) {
    let mut ticks: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let hupped = match hup.as_mut() {
            Some(h) => {
                tokio::select! {
                    _ = tick.tick() => false,
                    _ = h.recv() => {
                        tracing::info!("SIGHUP: writing autolearned messages and reloading the Bayes store");
                        true
                    }
                }
            }
            None => {
                tick.tick().await;
                false
            }
        };
        ticks += 1;
        if hupped || ticks.is_multiple_of(30) {
            flush_learned(live.clone(), max_tokens).await;
        }
        let l = live.clone();
        match tokio::task::spawn_blocking(move || l.reload_if_changed().map(|r| (r, l.snapshot())))
            .await
        {
            Ok(Ok((true, s))) => tracing::info!(
                nspam = s.nspam,
                nham = s.nham,
                ntokens = s.ntokens(),
                "Bayes store reloaded"
            ),
            Ok(Ok((false, _))) => {}
            Ok(Err(e)) => {
                tracing::error!("Bayes store not reloaded, keeping the previous one: {e}")
            }
            Err(e) => tracing::error!("Bayes reload task failed: {e}"),
        }
    }
}
