//! The metrics listener: `GET /metrics` (Prometheus text format) and `GET /healthz`. A
//! deliberately small HTTP/1.1 responder: one request per connection, a request head of at
//! most 8 KB read within 5 s, `Connection: close`. Two read-only endpoints on a loopback
//! address do not justify an HTTP stack (hyper and its dependencies) in a mail filter.

use crate::metrics::METRICS;
use crate::smtp::relay::{NextHop, RelayConn};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest request head read.
const MAX_HEAD: usize = 8192;
/// How long a client may take to send its request.
const READ_LIMIT: Duration = Duration::from_secs(5);
/// A next hop that answered within this long is "reachable recently"; past it, `/healthz`
/// opens an SMTP session to it (greeting, EHLO, QUIT) to find out.
const RECENT_SECS: u64 = 60;

/// What `/healthz` checks besides the listeners (bound before this one is served).
pub struct Health {
    /// The next hop, for the probe.
    pub next_hop: Arc<NextHop>,
    /// The model is configured (it was loaded and validated at start, or filterd would not run).
    pub model: bool,
    /// Bayes is configured.
    pub bayes: bool,
}

/// Serve the metrics listener until the task is aborted.
pub(super) async fn metrics_loop(listener: TcpListener, health: Arc<Health>) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, _) = super::accept(&listener, &mut backoff, "metrics accept failed").await;
        let health = health.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(READ_LIMIT * 2, handle(stream, &health)).await;
        });
    }
}

async fn handle(mut stream: TcpStream, health: &Health) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(READ_LIMIT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
            if head.len() > MAX_HEAD {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    let (status, kind, body) = match read {
        Err(_) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(())) if head.len() > MAX_HEAD => {
            (431, "text/plain", "request head too large\n".into())
        }
        Ok(Ok(())) => route(&head, health).await,
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    // HEAD: the headers (with the length the body would have), no body.
    if !head.starts_with(b"HEAD ") {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

async fn route(head: &[u8], health: &Health) -> (u16, &'static str, String) {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_ascii_whitespace();
    let (Some(method), Some(target), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return (400, "text/plain", "bad request line\n".into());
    };
    if !version.starts_with("HTTP/1.") {
        return (400, "text/plain", "HTTP/1.x only\n".into());
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            METRICS.render(),
        ),
        ("GET" | "HEAD", "/healthz") => healthz(health).await,
        (_, "/metrics" | "/healthz") => (405, "text/plain", "GET only\n".into()),
        _ => (
            404,
            "text/plain",
            "not found: try /metrics or /healthz\n".into(),
        ),
    }
}

/// Ready: listeners bound and serving, the next hop answered recently (or answers a probe
/// now), the configured models loaded.
async fn healthz(health: &Health) -> (u16, &'static str, String) {
    // This listener is served only once every mail and policy listener is bound.
    let mut body = String::from("listeners: serving\n");
    let mut ok = true;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (answered, failed) = METRICS.next_hop_times();
    let label = health.next_hop.label();
    if answered > 0 && answered >= failed && now.saturating_sub(answered) <= RECENT_SECS {
        body.push_str(&format!(
            "next_hop: {label} answered {} s ago\n",
            now.saturating_sub(answered)
        ));
    } else {
        match RelayConn::connect(health.next_hop.clone()).await {
            Ok(conn) => {
                METRICS.next_hop_answered();
                conn.quit().await;
                body.push_str(&format!("next_hop: {label} answered a probe\n"));
            }
            Err(e) => {
                ok = false;
                body.push_str(&format!("next_hop: {label} unreachable: {e}\n"));
            }
        }
    }
    if health.model {
        body.push_str("model: loaded\n");
    }
    if health.bayes {
        let ready = METRICS.bayes_ready.get() == 1;
        body.push_str(if ready {
            "bayes: voting\n"
        } else {
            "bayes: learning (not voting yet)\n"
        });
    }
    (if ok { 200 } else { 503 }, "text/plain", body)
}
