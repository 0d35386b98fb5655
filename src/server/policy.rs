//! The policy service listener: accept (backing off when the OS refuses), close
//! connections from outside the allow-list or over the cap at once (Postfix then applies
//! its `smtpd_policy_service_default_action`, 451 4.3.5 by default), and serve each
//! connection on its own task.

use crate::policyd::PolicyService;
use crate::policyd::connection::serve;
use ipnet::IpNet;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Accept policy clients on one listener until the task is aborted.
pub(super) async fn policy_loop(
    listener: TcpListener,
    service: Arc<PolicyService>,
    allow: Arc<Vec<IpNet>>,
) {
    let permits = Arc::new(Semaphore::new(service.settings.max_connections));
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, peer) =
            super::accept(&listener, &mut backoff, "policy service: accept failed").await;
        let ip = super::smtp::canonical(peer.ip());
        if !allow.iter().any(|n| n.contains(&ip)) {
            tracing::warn!(client = %peer, "policy client not in allow_clients, closed");
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(client = %peer, "policy service: too many connections, closed");
            continue;
        };
        stream.set_nodelay(true).ok();
        let service = service.clone();
        tokio::spawn(async move {
            let idle = service.settings.idle_timeout;
            serve(stream, &peer.to_string(), &service, idle).await;
            drop(permit);
        });
    }
}
