//! The SMTP/LMTP filter listeners: accept (backing off when the OS refuses), refuse clients
//! outside the allow-list (554) and connections over the cap (421 4.7.0, never a hang), and
//! run one session task per connection.

use crate::metrics::{METRICS, OpenConnection};
use crate::pipeline::Pipeline;
use crate::smtp::budget::Budget;
use crate::smtp::relay::{RelayPool, is_own_connection};
use crate::smtp::reply::Reply;
use crate::smtp::session::{Session, SessionConfig};
use ipnet::IpNet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// What every accept loop shares.
pub(super) struct AcceptContext {
    pub(super) permits: Arc<Semaphore>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) pipeline: Arc<Pipeline>,
    pub(super) allow: Arc<Vec<IpNet>>,
    pub(super) session: Arc<SessionConfig>,
    pub(super) pool: Arc<RelayPool>,
    pub(super) budget: Budget,
}

/// Accept connections on one listener until the task is aborted.
pub(super) async fn accept_loop(listener: TcpListener, ctx: AcceptContext) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, peer) = super::accept(&listener, &mut backoff, "accept failed").await;
        stream.set_nodelay(true).ok();
        let ip = canonical(peer.ip());
        if !ctx.allow.iter().any(|n| n.contains(&ip)) {
            tracing::warn!(client = %peer, "client not in allow_clients, refused");
            METRICS.refused("allow_list");
            tokio::spawn(refuse(stream, Reply::client_refused(ip)));
            continue;
        }
        let local = stream
            .local_addr()
            .map(|a| SocketAddr::new(canonical(a.ip()), a.port()));
        if local.is_ok_and(|l| is_own_connection(SocketAddr::new(ip, peer.port()), l)) {
            tracing::error!(client = %peer, "mail loop: a connection from this filterd's own relay client; next_hop leads back here");
            METRICS.refused("loop");
            tokio::spawn(refuse(stream, Reply::loop_connection()));
            continue;
        }
        let Ok(permit) = ctx.permits.clone().try_acquire_owned() else {
            tracing::warn!(client = %peer, "connection limit reached, refused with 421");
            METRICS.refused("limit");
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
            ctx.budget.clone(),
        );
        tokio::spawn(async move {
            let _open = OpenConnection::new();
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
pub(super) fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}
