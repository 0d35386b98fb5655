//! One policy client connection (a Postfix smtpd process keeps one open): read requests
//! as they come, possibly pipelined, answer each in order, log one line per decision;
//! close on a malformed request (without a reply, as the protocol says), on EOF, or when
//! idle longer than the timeout. Generic over the stream, so tests drive it in memory.

use super::PolicyService;
use super::protocol::{Decoder, Request, encode_action};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Serve one connection from `peer` until it ends.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: &str,
    service: &PolicyService,
    idle: Duration,
) {
    let mut decoder = Decoder::default();
    let mut buf = vec![0u8; 8192];
    loop {
        loop {
            match decoder.next_request() {
                Ok(Some(req)) => {
                    let started = Instant::now();
                    let answer = match service.answer(&req).await {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(peer, error = %e, "policy request refused; closing the connection");
                            return;
                        }
                    };
                    log(&req, &answer, started);
                    let reply = encode_action(&answer.action);
                    if stream.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(peer, error = %e, "malformed policy request; closing the connection");
                    return;
                }
            }
        }
        match tokio::time::timeout(idle, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => decoder.feed(&buf[..n]),
            Err(_) => {
                tracing::debug!(peer, "policy connection idle; closing");
                return;
            }
        }
    }
}

/// The decision line, in the order of the message line: verdict, what decided, client,
/// envelope, then the details.
fn log(req: &Request, answer: &super::Answer, started: Instant) {
    let word = answer.action.split(' ').next().unwrap_or("");
    let sasl = req.get("sasl_username");
    tracing::info!(
        "Policy {word} {{{}}}, [{}] <{}> -> <{}>, state={}{}{}, instance={}{}, {} ms",
        answer.check,
        req.get("client_address"),
        req.get("sender"),
        req.get("recipient"),
        req.get("protocol_state"),
        if sasl.is_empty() { "" } else { ", sasl=" },
        sasl,
        req.get("instance"),
        if answer.detail.is_empty() {
            String::new()
        } else {
            format!(", {}", answer.detail)
        },
        started.elapsed().as_millis()
    );
}
