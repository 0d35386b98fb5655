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
                    crate::metrics::METRICS
                        .policy_decision(answer.check, result_of(&answer.action));
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

/// The kind of a policy answer, for the metrics: `dunno`, `prepend`, `defer`, `reject`.
fn result_of(action: &str) -> &'static str {
    match action.split_ascii_whitespace().next().unwrap_or_default() {
        "DUNNO" | "OK" => "dunno",
        "PREPEND" => "prepend",
        a if a.starts_with('4') || a.starts_with("DEFER") => "defer",
        a if a.starts_with('5') || a.starts_with("REJECT") => "reject",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::origin::OriginPolicy;
    use crate::policyd::greylist::GreylistSettings;
    use crate::policyd::{PolicySettings, Shared};
    use crate::state::EmbeddedState;
    use std::sync::Arc;
    use tokio::io::duplex;

    fn service() -> PolicyService {
        let state = crate::state::Store::Embedded(Arc::new(EmbeddedState::in_memory(1000, 86_400)));
        let settings = PolicySettings {
            listen: vec![],
            max_connections: 4,
            idle_timeout: Duration::from_secs(30),
            exempt: vec!["127.0.0.0/8".parse().unwrap()],
            greylist: Some(GreylistSettings {
                delay: 60,
                retry_window: 86_400,
                max_age: 86_400,
                auto_allowlist_after: 5,
                ipv4_prefix: 24,
                ipv6_prefix: 64,
                clients: Default::default(),
                recipients: Default::default(),
                text: "Greylisted %s".into(),
                prepend_header: true,
            }),
            spf: None,
            login: None,
            limits: None,
            notes: vec![],
        };
        let policies = crate::config::Config::parse("[model]\nenabled = false\n[bayes]\nenabled = false\n[auth]\nenabled = false\n[local_domains]\npostconf = false\n")
            .map(|c| c.policies)
            .unwrap();
        PolicyService::new(
            settings,
            Shared {
                state,
                guard_on_error: Default::default(),
                policies,
                local: Default::default(),
                origin: OriginPolicy::default(),
                verifier: None,
                hostname: "mx.test".into(),
            },
        )
    }

    fn request(client: &str, rcpt: &str) -> String {
        format!(
            "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address={client}\n\
             client_name=unknown\nsender=a@x.test\nrecipient={rcpt}\ninstance=1\nfuture=ignored\n\n"
        )
    }

    /// Read answers until `n` have arrived or the stream ends.
    async fn answers(io: &mut tokio::io::DuplexStream, n: usize) -> Vec<String> {
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while text.matches("\n\n").count() < n {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => text.push_str(&String::from_utf8_lossy(&buf[..k])),
            }
        }
        text.split_terminator("\n\n").map(str::to_string).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn pipelined_requests_in_pieces_are_answered_in_order() {
        let svc = service();
        let (mut client, server) = duplex(64);
        let serving = serve(server, "test", &svc, Duration::from_secs(30));
        let talk = async {
            let all = format!(
                "{}{}{}",
                request("192.0.2.1", "a@y.test"),
                request("127.0.0.1", "b@y.test"),
                request("192.0.2.1", "a@y.test")
            );
            for piece in all.as_bytes().chunks(5) {
                client.write_all(piece).await.unwrap();
            }
            let got = answers(&mut client, 3).await;
            drop(client);
            got
        };
        let (_, got) = tokio::join!(serving, talk);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], "action=DEFER_IF_PERMIT 4.2.0 Greylisted 60");
        assert_eq!(got[1], "action=DUNNO", "an exempt network");
        assert_eq!(
            got[2], "action=DEFER_IF_PERMIT 4.2.0 Greylisted 60",
            "no time has passed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_malformed_or_huge_request_closes_without_a_reply() {
        let svc = service();
        for bad in [
            "request=smtpd_access_policy\nthis line has no equals sign\n\n".to_string(),
            "request=junk\n\n".to_string(),
            format!(
                "request=smtpd_access_policy\nsender={}\n\n",
                "x".repeat(70_000)
            ),
        ] {
            let (mut client, server) = duplex(1 << 20);
            let serving = serve(server, "test", &svc, Duration::from_secs(30));
            let talk = async {
                client.write_all(bad.as_bytes()).await.unwrap();
                answers(&mut client, 1).await
            };
            let (_, got) = tokio::join!(serving, talk);
            assert!(got.is_empty(), "{got:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_after_the_timeout() {
        let svc = service();
        let (mut client, server) = duplex(4096);
        let started = tokio::time::Instant::now();
        let serving = serve(server, "test", &svc, Duration::from_secs(30));
        let talk = async {
            client
                .write_all(request("192.0.2.1", "a@y.test").as_bytes())
                .await
                .unwrap();
            let first = answers(&mut client, 1).await;
            let rest = answers(&mut client, 1).await;
            (first, rest)
        };
        let (_, (first, rest)) = tokio::join!(serving, talk);
        assert_eq!(first.len(), 1);
        assert!(rest.is_empty(), "closed, nothing more");
        assert_eq!(started.elapsed().as_secs(), 30);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_the_delay_passes_with_x_greylist() {
        let svc = service();
        let (mut client, server) = duplex(4096);
        let serving = serve(server, "test", &svc, Duration::from_secs(300));
        let talk = async {
            client
                .write_all(request("192.0.2.1", "a@y.test").as_bytes())
                .await
                .unwrap();
            let first = answers(&mut client, 1).await;
            tokio::time::advance(Duration::from_secs(61)).await;
            client
                .write_all(request("192.0.2.9", "a@y.test").as_bytes())
                .await
                .unwrap();
            let second = answers(&mut client, 1).await;
            drop(client);
            (first, second)
        };
        let (_, (first, second)) = tokio::join!(serving, talk);
        assert!(first[0].starts_with("action=DEFER_IF_PERMIT"), "{first:?}");
        assert!(
            second[0].starts_with(
                "action=PREPEND X-Greylist: delayed 61 seconds by filterd at mx.test;"
            ),
            "{second:?}"
        );
    }
}
