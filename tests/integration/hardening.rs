//! Hardening against a next hop that misbehaves and a client that abuses the session: reply
//! sync (every command the relay sends), pooled connections with unread data, Postfix's
//! junk-command limit, a MAIL retried on a fresh connection, a next hop closing at RCPT.
//! Each runs the filterd binary against a scripted next hop over loopback
//! (`FILTERD_TEST_BIN` runs them against another build).

use crate::util::hop::{Hop, HopConn};
use crate::util::{Client, Filterd, gtube, ham};
use std::time::Duration;

const NO_MODEL: &str = "[model]\nenabled = false\n";

fn code(reply: &str) -> &str {
    reply.get(..3).unwrap_or("")
}

/// EHLO, then one transaction up to the reply to the end of DATA, stopping at the first
/// reply that is not the expected 250/354; returns every reply in order.
async fn transaction(c: &mut Client, message: &[u8], xforward: bool) -> Vec<String> {
    let mut replies = vec![c.cmd("EHLO client.test").await];
    if xforward {
        replies.push(c.cmd("XFORWARD ADDR=192.0.2.7 NAME=client.example").await);
    }
    for cmd in [
        "MAIL FROM:<a@example.org>",
        "RCPT TO:<b@example.net>",
        "DATA",
    ] {
        let r = c.cmd(cmd).await;
        let ok = if cmd == "DATA" { "354" } else { "250" };
        let stop = code(&r) != ok;
        replies.push(r);
        if stop {
            return replies;
        }
    }
    let mut wire = vec![];
    filterd::smtp::codec::dot_stuff(&[message], &mut wire);
    c.send(&wire).await;
    replies.push(c.reply().await);
    replies
}

/// How the first next-hop connection breaks the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// An extra line after the EHLO reply.
    ExtraAfterEhlo,
    /// 354 to XFORWARD.
    XforwardOutOfStep,
    /// 354 to MAIL.
    MailOutOfStep,
    /// An extra reply after the reply to MAIL (it shifts every later reply by one).
    ExtraAfterMail,
    /// 354 to RCPT.
    RcptOutOfStep,
    /// 250 instead of 354 to DATA: the content was never sent.
    DataNot354,
    /// An extra reply right after 354.
    ExtraAfter354,
    /// 354 to the content.
    ContentOutOfStep,
    /// A leftover 550 right after the 250 to the content.
    ExtraAfterContent,
    /// An extra reply after the reply to RSET (the message was discarded).
    ExtraAfterRset,
}

/// The first connection: well-behaved except for `fault`; later ones behave.
async fn faulty(mut c: HopConn, fault: Fault) {
    use Fault::*;
    if c.n > 0 {
        if c.greet().await.is_some() {
            c.serve().await;
        }
        return;
    }
    c.send("220 hop.test ESMTP scripted\r\n").await;
    let Some(_ehlo) = c.line().await else { return };
    c.send(crate::util::hop::CAPS).await;
    if fault == ExtraAfterEhlo {
        c.send("250 and one more\r\n").await;
    }
    while let Some(line) = c.line().await {
        let verb = line
            .split_ascii_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match (verb.as_str(), fault) {
            ("XFORWARD", XforwardOutOfStep) | ("MAIL", MailOutOfStep) | ("RCPT", RcptOutOfStep) => {
                c.send("354 go on\r\n").await
            }
            ("MAIL", ExtraAfterMail) => c.send("250 2.1.0 Ok\r\n250 2.1.0 Ok again\r\n").await,
            ("DATA", DataNot354) => c.send("250 2.0.0 Ok\r\n").await,
            ("DATA", ExtraAfter354 | ContentOutOfStep | ExtraAfterContent) => {
                c.send(if fault == ExtraAfter354 {
                    "354 go ahead\r\n250 surprise\r\n"
                } else {
                    "354 go ahead\r\n"
                })
                .await;
                if fault == ExtraAfter354 {
                    continue;
                }
                let Some(_data) = c.content().await else {
                    return;
                };
                if fault == ContentOutOfStep {
                    c.send("354 again?\r\n").await;
                } else {
                    c.hop_delivered();
                    c.send("250 2.0.0 Ok: queued as FIRST\r\n550 5.7.1 leftover\r\n")
                        .await;
                }
            }
            ("RSET", ExtraAfterRset) => c.send("250 2.0.0 Ok\r\n250 2.0.0 Ok again\r\n").await,
            _ => {
                if c.answer(&verb).await.is_none() {
                    return;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replies_out_of_step_with_the_commands_never_pass_a_message_and_the_connection_goes() {
    use Fault::*;
    for fault in [
        ExtraAfterEhlo,
        XforwardOutOfStep,
        MailOutOfStep,
        ExtraAfterMail,
        RcptOutOfStep,
        DataNot354,
        ExtraAfter354,
        ContentOutOfStep,
        ExtraAfterContent,
        ExtraAfterRset,
    ] {
        let hop = Hop::start(move |c| faulty(c, fault)).await;
        let f = Filterd::start(hop.addr, &format!("\n{NO_MODEL}"));
        let (mut c, _) = Client::connect(f.addr()).await;
        let first = if fault == ExtraAfterRset {
            gtube()
        } else {
            ham()
        };
        let replies = transaction(&mut c, &first, fault == XforwardOutOfStep).await;
        let last = replies.last().cloned().unwrap_or_default();
        match fault {
            // The content was answered 250 (it is delivered, once); only the connection goes.
            ExtraAfterContent => {
                assert_eq!(code(&last), "250", "{fault:?}: {replies:?}");
                assert!(!last.contains("leftover"), "{fault:?}: {last}");
            }
            // A discarded message: its 250 does not depend on the next hop.
            ExtraAfterRset => assert!(last.starts_with("250 2.7.0"), "{fault:?}: {replies:?}"),
            _ => assert!(last.starts_with('4'), "{fault:?}: {replies:?}"),
        }
        // Nothing wrongly passed: the first connection never had content delivered unless
        // it answered it properly.
        let delivered_first = hop.delivered_count();
        if fault != ExtraAfterContent {
            assert_eq!(
                delivered_first, 0,
                "{fault:?}: delivered although out of step"
            );
        }
        // The next message goes through on a fresh connection, with its own replies.
        let mut c2 = c;
        let replies = transaction(&mut c2, &ham(), false).await;
        let last = replies.last().cloned().unwrap_or_default();
        assert!(
            last.starts_with("250 2.0.0 from MTA"),
            "{fault:?}, second message: {replies:?}"
        );
        assert!(
            !last.contains("leftover") && !last.contains("again"),
            "{last}"
        );
        assert!(
            hop.connections.load(std::sync::atomic::Ordering::SeqCst) >= 2,
            "{fault:?}: the first connection was reused"
        );
        assert_eq!(hop.delivered_count(), delivered_first + 1, "{fault:?}");
    }
}

/// An idle pooled connection that the next hop closed with 421, or that holds a leftover
/// reply, is not reused: the next session's MAIL gets its own answer.
#[tokio::test(flavor = "multi_thread")]
async fn pooled_connections_with_unread_data_are_not_reused() {
    for leftover in [
        "421 4.4.2 hop.test Error: timeout exceeded\r\n",
        "550 5.7.1 leftover from another session\r\n",
    ] {
        let hop = Hop::start(move |mut c| async move {
            if c.greet().await.is_none() {
                return;
            }
            if c.n == 0 {
                // One message, then the idle connection gets a line nobody asked for.
                while let Some(verb) = c.answer_one().await {
                    if verb == "DATA" {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                c.send(leftover).await;
                if leftover.starts_with("421") {
                    return;
                }
                // Keep the connection open (and answer whatever comes, badly: 550).
                while c.line().await.is_some() {
                    c.send("550 5.7.1 refused\r\n").await;
                }
                return;
            }
            c.serve().await;
        })
        .await;
        let f = Filterd::start(hop.addr, &format!("\n{NO_MODEL}"));
        let (mut c, _) = Client::connect(f.addr()).await;
        let r = c
            .send_message("a@example.org", &["b@example.net"], &ham())
            .await;
        assert!(r.starts_with("250"), "{r}");
        assert!(c.cmd("QUIT").await.starts_with("221"));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (mut c, _) = Client::connect(f.addr()).await;
        let r = c
            .send_message("a@example.org", &["b@example.net"], &ham())
            .await;
        assert!(r.starts_with("250 2.0.0 from MTA"), "{leftover}: {r}");
        assert_eq!(hop.delivered_count(), 2);
        assert_eq!(hop.connections.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}

/// 120 blocked messages in one session: each makes filterd RSET the next hop's transaction;
/// no next-hop connection sees more RSETs than the default `rset_limit` (50), far below
/// Postfix's junk limit (100).
#[tokio::test(flavor = "multi_thread")]
async fn connections_are_retired_before_postfix_junk_command_limit() {
    let hop = Hop::well_behaved().await;
    let f = Filterd::start_with(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n{NO_MODEL}[next_hop]\naddress = \"{}\"\n",
        hop.addr
    ));
    let (mut c, _) = Client::connect(f.addr()).await;
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    let mut wire = vec![];
    filterd::smtp::codec::dot_stuff(&[&gtube()], &mut wire);
    for i in 0..120 {
        assert!(
            c.cmd("MAIL FROM:<s@example.com>").await.starts_with("250"),
            "{i}"
        );
        assert!(
            c.cmd("RCPT TO:<b@example.net>").await.starts_with("250"),
            "{i}"
        );
        assert!(c.cmd("DATA").await.starts_with("354"), "{i}");
        c.send(&wire).await;
        let r = c.reply().await;
        assert!(r.starts_with("250 2.7.0"), "{i}: {r}");
    }
    let r = c
        .send_message_after(&[], "a@example.org", &["b@example.net"], &ham())
        .await;
    assert!(r.starts_with("250 2.0.0 from MTA"), "{r}");
    let conns = hop.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(conns >= 3, "{conns} connections for 120 RSETs");
    for n in 0..conns {
        let rsets = hop
            .lines_of(n)
            .iter()
            .filter(|l| l.eq_ignore_ascii_case("RSET"))
            .count();
        assert!(rsets <= 50, "connection {n} got {rsets} RSETs");
    }
}

/// A MAIL that a reused connection refuses with 421 is tried again on a fresh connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_mail_refused_on_a_reused_connection_is_retried_on_a_fresh_one() {
    let hop = Hop::start(|mut c| async move {
        if c.greet().await.is_none() {
            return;
        }
        if c.n > 0 {
            return c.serve().await;
        }
        let mut mails = 0;
        while let Some(line) = c.line().await {
            let verb = line
                .split_ascii_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            if verb == "MAIL" {
                mails += 1;
                if mails == 2 {
                    c.send("421 4.7.0 hop.test Error: too many errors\r\n")
                        .await;
                    return;
                }
            }
            if c.answer(&verb).await.is_none() {
                return;
            }
        }
    })
    .await;
    let f = Filterd::start(hop.addr, &format!("\n{NO_MODEL}"));
    let (mut c, _) = Client::connect(f.addr()).await;
    for i in 0..2 {
        let r = c
            .send_message("a@example.org", &["b@example.net"], &ham())
            .await;
        assert!(r.starts_with("250 2.0.0 from MTA"), "message {i}: {r}");
    }
    assert_eq!(hop.delivered_count(), 2);
}

/// A next hop that says 421 to a RCPT is closing: that recipient, the ones after it and
/// DATA all tempfail, consistently, without a 354.
#[tokio::test(flavor = "multi_thread")]
async fn a_next_hop_closing_at_rcpt_tempfails_the_rest_of_the_envelope() {
    let hop = Hop::start(|mut c| async move {
        if c.greet().await.is_none() {
            return;
        }
        let mut rcpts = 0;
        while let Some(line) = c.line().await {
            let verb = line
                .split_ascii_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            if verb == "RCPT" {
                rcpts += 1;
                if rcpts == 2 {
                    c.send("421 4.4.2 hop.test Error: closing\r\n").await;
                    return;
                }
            }
            if c.answer(&verb).await.is_none() {
                return;
            }
        }
    })
    .await;
    let f = Filterd::start(hop.addr, &format!("\n{NO_MODEL}"));
    let (mut c, _) = Client::connect(f.addr()).await;
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@example.org>").await.starts_with("250"));
    let replies = [
        c.cmd("RCPT TO:<one@example.net>").await,
        c.cmd("RCPT TO:<two@example.net>").await,
        c.cmd("RCPT TO:<three@example.net>").await,
        c.cmd("DATA").await,
    ];
    let codes: Vec<&str> = replies.iter().map(|r| code(r)).collect();
    assert_eq!(codes, ["250", "451", "451", "451"], "{replies:?}");
    // The session goes on: the next transaction works on a fresh connection.
    assert!(c.cmd("RSET").await.starts_with("250"));
    let r = c
        .send_message_after(&[], "a@example.org", &["b@example.net"], &ham())
        .await;
    assert!(r.starts_with("250"), "{r}");
}

/// A next hop that leads back to filterd itself (here set behind the configuration check's
/// back) is found at the first connection: filterd refuses its own relay client with 554
/// 5.4.6, so a MAIL does not recurse through nested self-connections.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_from_our_own_relay_is_a_loop() {
    use filterd::config::Config;
    use filterd::server::Server;
    use filterd::smtp::relay::NextHop;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cfg = Config::parse(&format!(
        "[server]\nlisten = [\"{listen}\"]\n[next_hop]\naddress = \"127.0.0.1:9\"\n[bayes]\nenabled = false\n{NO_MODEL}[auth]\nenabled = false\n[quarantine]\ndir = \"{}\"\n",
        dir.path().join("q").display()
    ))
    .unwrap();
    cfg.next_hop = Arc::new(NextHop {
        addr: listen,
        ..(*cfg.next_hop).clone()
    });
    let server = Server::bind(cfg).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let (mut c, _) = Client::connect(listen).await;
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    // MAIL waits for the first RCPT to go to the next hop; that RCPT finds the loop.
    assert!(c.cmd("MAIL FROM:<a@example.org>").await.starts_with("250"));
    let r = c.cmd("RCPT TO:<b@example.net>").await;
    assert!(r.starts_with("451") && r.contains("loop"), "{r}");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), serving).await;
}

/// A message that already carries our own Received lines `max_passes` (3) times is looping
/// (through Postfix and back): refused with 554 5.4.6, not relayed again.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_that_passed_too_often_is_refused_as_a_loop() {
    let hop = Hop::well_behaved().await;
    let f = Filterd::start(
        hop.addr,
        &format!("hostname = \"filter.example.net\"\n{NO_MODEL}"),
    );
    let ours = "Received: from postfix.example.net ([127.0.0.1])\r\n\tby filter.example.net (filterd) with ESMTP\r\n\tid AbCdEf12345{n}; Mon, 23 Nov 2026 14:00:0{n} +0000\r\n";
    let looped = |n: usize| {
        let mut m = String::new();
        for i in 0..n {
            m.push_str(&ours.replace("{n}", &i.to_string()));
        }
        let mut m = m.into_bytes();
        m.extend_from_slice(&ham());
        m
    };
    let (mut c, _) = Client::connect(f.addr()).await;
    let r = c
        .send_message("a@example.org", &["b@example.net"], &looped(2))
        .await;
    assert!(r.starts_with("250"), "two passes are not a loop yet: {r}");
    let r = c
        .send_message("a@example.org", &["b@example.net"], &looped(3))
        .await;
    assert!(r.starts_with("554 5.4.6"), "{r}");
    assert_eq!(hop.delivered_count(), 1);
    f.expect_log("Blocked LOOP");
}

/// A big message: headers, a text part, and an attachment of `mb` MB in base64.
fn big_message(mb: usize) -> Vec<u8> {
    let mut m = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: the files\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <big@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhere they are\r\n--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    let line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n";
    while m.len() < mb * 1024 * 1024 {
        m.extend_from_slice(line);
    }
    m.extend_from_slice(b"--XX--\r\n");
    m
}

/// Open `n` sessions up to the end of the content of `message` (everything but the final
/// dot), declaring its size; returns them with the reply each got to DATA.
async fn almost_sent(
    addr: std::net::SocketAddr,
    n: usize,
    message: &[u8],
) -> Vec<(Client, String)> {
    let mut wire = vec![];
    filterd::smtp::codec::dot_stuff(&[message], &mut wire);
    let body = &wire[..wire.len() - 3];
    let mut out = vec![];
    for _ in 0..n {
        let (mut c, _) = Client::connect(addr).await;
        assert!(c.cmd("EHLO client.test").await.starts_with("250"));
        let r = c
            .cmd(&format!("MAIL FROM:<a@example.org> SIZE={}", message.len()))
            .await;
        assert!(r.starts_with("250"), "{r}");
        assert!(c.cmd("RCPT TO:<b@example.net>").await.starts_with("250"));
        let r = c.cmd("DATA").await;
        if r.starts_with("354") {
            c.send(body).await;
        }
        out.push((c, r));
    }
    out
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map_or(0.0, |k| k / 1024.0)
}

/// Eight 40 MB messages held at once by one filterd with the default settings (the model
/// scanning each) cost it about their size once: peak RSS under 400 MB.
#[tokio::test(flavor = "multi_thread")]
async fn eight_concurrent_40_mb_messages_stay_under_400_mb() {
    let hop = Hop::well_behaved().await;
    let f = Filterd::start(hop.addr, "");
    let message = big_message(40);
    let mut sessions = almost_sent(f.addr(), 8, &message).await;
    for (c, r) in &mut sessions {
        assert!(r.starts_with("354"), "{r}");
        c.send(b".\r\n").await;
    }
    for (c, _) in &mut sessions {
        let r = c.reply().await;
        assert!(r.starts_with("250"), "{r}");
    }
    let peak = peak_rss_mb(f.child.id());
    assert_eq!(hop.delivered_count(), 8);
    assert!(peak < 400.0, "peak RSS {peak:.0} MB for 8 x 40 MB");
    eprintln!("peak RSS {peak:.0} MB for 8 concurrent 40 MB messages");
}

/// With `max_bytes_in_flight_mb = 100`, eight 12 MB messages fit and the ninth gets 452 at
/// DATA; once the others are through, its retry is delivered.
#[tokio::test(flavor = "multi_thread")]
async fn past_the_memory_budget_data_gets_452_and_the_retry_is_delivered() {
    let hop = Hop::well_behaved().await;
    let f = Filterd::start(
        hop.addr,
        &format!("max_bytes_in_flight_mb = 100\nmax_message_size = 20000000\n{NO_MODEL}"),
    );
    let message = big_message(12);
    let mut sessions = almost_sent(f.addr(), 9, &message).await;
    let codes: Vec<&str> = sessions.iter().map(|(_, r)| code(r)).collect();
    assert_eq!(
        codes,
        [
            "354", "354", "354", "354", "354", "354", "354", "354", "452"
        ]
    );
    assert!(sessions[8].1.starts_with("452 4.3.1"), "{}", sessions[8].1);
    for (c, _) in sessions.iter_mut().take(8) {
        c.send(b".\r\n").await;
        let r = c.reply().await;
        assert!(r.starts_with("250"), "{r}");
    }
    let (c, _) = &mut sessions[8];
    let r = c.cmd("DATA").await;
    assert!(r.starts_with("354"), "the retry: {r}");
    let mut wire = vec![];
    filterd::smtp::codec::dot_stuff(&[&message], &mut wire);
    c.send(&wire).await;
    let r = c.reply().await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(hop.delivered_count(), 9);
    f.expect_log("memory budget for messages in flight used up");
}
