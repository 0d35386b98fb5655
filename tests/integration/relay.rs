//! filterd as a process on loopback, relaying into an in-process sink that can misbehave.

use crate::util::sink::{Behaviour, Sink};
use crate::util::{Client, Filterd, gtube, ham, split_added};
use std::time::Duration;

fn without_x_spam(msg: &[u8]) -> Vec<u8> {
    let text = msg.to_vec();
    let head_end = text.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
    let mut out = vec![];
    let mut skipping = false;
    for line in text[..head_end].split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"X-Spam-") {
            skipping = true;
            continue;
        }
        if skipping && (line[0] == b' ' || line[0] == b'\t') {
            continue;
        }
        skipping = false;
        out.extend_from_slice(line);
    }
    out.extend_from_slice(&text[head_end..]);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn ham_is_relayed_byte_identical_plus_headers() {
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start(sink.addr, "");
    let (mut c, greeting) = Client::connect(f.addr()).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    let r = c.cmd("EHLO postfix.test").await;
    for kw in [
        "PIPELINING",
        "SIZE 52428800",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE",
    ] {
        assert!(r.contains(kw), "EHLO lacks {kw}: {r}");
    }
    let r = c
        .cmd("XFORWARD NAME=mail.example.org ADDR=192.0.2.10 PORT=40000 PROTO=ESMTP HELO=mail.example.org")
        .await;
    assert!(r.starts_with("250 "), "{r}");
    assert!(
        c.cmd("XFORWARD IDENT=4Xyz1 SOURCE=REMOTE")
            .await
            .starts_with("250 ")
    );
    let r = c
        .cmd("MAIL FROM:<alice@example.org> SIZE=900 BODY=8BITMIME")
        .await;
    assert!(r.starts_with("250 2.1.0"), "{r}");
    let r = c
        .cmd("RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.net")
        .await;
    assert!(r.starts_with("250 2.1.5"), "{r}");
    assert!(c.cmd("DATA").await.starts_with("354"));
    let msg = ham();
    let mut wire = vec![];
    filterd::smtp::codec::dot_stuff(&[&msg], &mut wire);
    c.send(&wire).await;
    let r = c.reply().await;
    assert!(r.starts_with("250 2.0.0 from MTA(smtp:[127.0.0.1]:"), "{r}");
    assert!(r.contains("queued as SINK00000"), "{r}");
    assert!(c.cmd("QUIT").await.starts_with("221"));

    let got = sink.received();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(
        m.mail,
        "MAIL FROM:<alice@example.org> SIZE=900 BODY=8BITMIME"
    );
    assert_eq!(
        m.rcpts,
        vec!["RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.net"]
    );
    let xf = m.xforward.join("\n");
    for attr in [
        "NAME=mail.example.org",
        "ADDR=192.0.2.10",
        "PORT=40000",
        "HELO=mail.example.org",
        "IDENT=4Xyz1",
        "SOURCE=REMOTE",
    ] {
        assert!(xf.contains(attr), "XFORWARD lacks {attr}: {xf}");
    }
    let (added, rest) = split_added(&m.data, b"Received: from mail.example.org");
    assert_eq!(rest, without_x_spam(&msg), "original bytes changed");
    assert!(
        added.starts_with("X-Spam-Flag: NO\r\nX-Spam-Score: "),
        "{added}"
    );
    assert!(added.contains("X-Spam-Status: No, score="), "{added}");
    assert!(
        added.contains("Received: from postfix.test ([127.0.0.1])\r\n\tby "),
        "{added}"
    );
    assert!(!added.contains("score=99"));

    assert!(
        f.wait_log("Passed CLEAN {RelayedInbound}", Duration::from_secs(5)),
        "{}",
        f.log_text()
    );
    let log = f.log_text();
    for part in [
        "[192.0.2.10] <alice@example.org> -> <bob@example.net>",
        "Queue-ID: 4Xyz1",
        "Message-ID: <20261123100000.1234@example.org>",
        "queued_as: SINK00000",
        "size: ",
    ] {
        assert!(log.contains(part), "log lacks {part}: {log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gtube_is_tagged_as_spam_when_its_destiny_is_pass() {
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start(
        sink.addr,
        "[actions]\nspam_destiny = \"pass\"\nspam_quarantine = false\n",
    );
    let (mut c, _) = Client::connect(f.addr()).await;
    let r = c
        .send_message("spammer@example.com", &["bob@example.net"], &gtube())
        .await;
    assert!(r.starts_with("250 "), "{r}");
    let m = &sink.received()[0];
    let text = String::from_utf8_lossy(&m.data);
    assert!(text.starts_with("X-Spam-Flag: YES\r\n"), "{text}");
    assert!(text.contains("GTUBE=1000"), "{text}");
    assert!(text.contains("\r\nSubject: ***SPAM*** test\r\n"), "{text}");
    assert!(!text.contains("\r\nSubject: test\r\n"), "{text}");
    assert!(
        f.wait_log(
            "Passed SPAM {RelayedTaggedInbound}, ",
            Duration::from_secs(5)
        ),
        "{}",
        f.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn next_hop_down_gives_451_and_delivers_nothing() {
    // A port with nothing listening: bind, learn the port, close.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let f = Filterd::start(addr, "");
    let (mut c, _) = Client::connect(f.addr()).await;
    c.cmd("EHLO postfix.test").await;
    // MAIL alone waits for the first RCPT to go to the next hop; that RCPT gets the 451.
    assert!(c.cmd("MAIL FROM:<a@example.org>").await.starts_with("250"));
    let r = c.cmd("RCPT TO:<b@example.net>").await;
    assert!(r.starts_with("451 4.4.1 "), "{r}");
    // The rest of the transaction tempfails too, and nothing is relayed.
    assert!(
        c.cmd("RCPT TO:<c@example.net>")
            .await
            .starts_with("451 4.4.1 ")
    );
    assert!(c.cmd("DATA").await.starts_with("451 4.4.1 "));
    // Pipelined behind MAIL, the RCPT goes with it and MAIL gets the next hop's answer.
    assert!(c.cmd("RSET").await.starts_with("250"));
    c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n")
        .await;
    let (mail, rcpt) = (c.reply().await, c.reply().await);
    assert!(mail.starts_with("451 4.4.1 "), "{mail}");
    assert!(rcpt.starts_with("503"), "{rcpt}");
}

#[tokio::test(flavor = "multi_thread")]
async fn next_hop_replies_to_the_data_are_mirrored() {
    // (next hop's reply, filterd's reply starts with, log line)
    let cases = [
        (
            "452 4.3.1 Insufficient system storage",
            "451 4.3.1 from MTA(smtp:",
            "Deferred CLEAN {TempFailedInbound}",
        ),
        (
            "421 4.4.2 closing",
            "451 4.4.2 from MTA(smtp:",
            "Deferred CLEAN {TempFailedInbound}",
        ),
        (
            "554 5.7.1 Rejected by policy",
            "554 5.7.1 from MTA(smtp:",
            "Blocked CLEAN {RejectedInbound}",
        ),
        (
            "552 Too big",
            "552 5.0.0 from MTA(smtp:",
            "Blocked CLEAN {RejectedInbound}",
        ),
    ];
    for (downstream, want, log) in cases {
        let sink = Sink::start(Behaviour {
            data_reply: Some(downstream.into()),
            ..Behaviour::default()
        })
        .await;
        let f = Filterd::start(sink.addr, "");
        let (mut c, _) = Client::connect(f.addr()).await;
        let r = c
            .send_message("a@example.org", &["b@example.net"], &ham())
            .await;
        assert!(r.starts_with(want), "{downstream}: {r}");
        assert!(r.contains(&downstream[4..]), "{downstream}: {r}");
        assert!(sink.received().is_empty());
        assert!(
            f.wait_log(log, Duration::from_secs(5)),
            "{downstream}: {}",
            f.log_text()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_data_command_is_mirrored_and_the_connection_stays_clean() {
    let sink = Sink::start(Behaviour {
        data_command_reply: Some("554 5.5.1 Error: no valid recipients".into()),
        ..Behaviour::default()
    })
    .await;
    let f = Filterd::start(sink.addr, "");
    let (mut c, _) = Client::connect(f.addr()).await;
    for _ in 0..2 {
        // The second transaction reuses the next-hop connection: it must not find the
        // first envelope still open there (which would give 503 nested MAIL).
        let r = c
            .send_message("a@example.org", &["b@example.net"], &ham())
            .await;
        assert!(r.starts_with("554 5.5.1 from MTA(smtp:"), "{r}");
    }
    let cmds = sink.commands.lock().unwrap().join("\n");
    assert_eq!(cmds.matches("RSET").count(), 2, "{cmds}");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_recipients_are_mirrored_one_by_one() {
    let sink = Sink::start(Behaviour {
        refuse_rcpt: Some("nobody@".into()),
        ..Behaviour::default()
    })
    .await;
    let f = Filterd::start(sink.addr, "");
    let (mut c, _) = Client::connect(f.addr()).await;
    c.cmd("EHLO postfix.test").await;
    assert!(c.cmd("MAIL FROM:<a@example.org>").await.starts_with("250"));
    let r = c.cmd("RCPT TO:<nobody@example.net>").await;
    assert!(r.starts_with("550 5.1.1 from MTA(smtp:"), "{r}");
    assert!(c.cmd("RCPT TO:<bob@example.net>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    let mut wire = vec![];
    filterd::smtp::codec::dot_stuff(&[&ham()], &mut wire);
    c.send(&wire).await;
    assert!(c.reply().await.starts_with("250 "));
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpts, vec!["RCPT TO:<bob@example.net>"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_next_hop_beyond_timeout_gives_451() {
    let sink = Sink::start(Behaviour {
        data_delay: Some(Duration::from_secs(4)),
        ..Behaviour::default()
    })
    .await;
    let f = Filterd::start(sink.addr, "");
    // Override only the next hop's data timeout.
    drop(f);
    let f = Filterd::start_with(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[next_hop]\naddress = \"{}\"\ndata_done_timeout_secs = 1\n",
        sink.addr
    ));
    let (mut c, _) = Client::connect(f.addr()).await;
    let r = c
        .send_message("a@example.org", &["b@example.net"], &ham())
        .await;
    assert!(r.starts_with("451 4.4.1 "), "{r}");
    assert!(r.contains("timeout"), "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_disconnect_mid_data_relays_nothing() {
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start(sink.addr, "");
    {
        let (mut c, _) = Client::connect(f.addr()).await;
        c.cmd("EHLO postfix.test").await;
        c.cmd("MAIL FROM:<a@example.org>").await;
        c.cmd("RCPT TO:<partial@example.net>").await;
        assert!(c.cmd("DATA").await.starts_with("354"));
        c.send(b"Subject: half\r\n\r\nthe first half and then the line drops")
            .await;
    }
    // A complete message afterwards arrives alone.
    let (mut c, _) = Client::connect(f.addr()).await;
    let r = c
        .send_message("a@example.org", &["whole@example.net"], &ham())
        .await;
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(sink.wait_for(1, Duration::from_secs(5)).await, 1);
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpts, vec!["RCPT TO:<whole@example.net>"]);
    assert_eq!(sink.data_seen.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggled_commands_stay_inside_the_message() {
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start(sink.addr, "");
    let (mut c, _) = Client::connect(f.addr()).await;
    c.cmd("EHLO postfix.test").await;
    c.cmd("MAIL FROM:<a@example.org>").await;
    c.cmd("RCPT TO:<b@example.net>").await;
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: s\r\n\r\nhello\n.\nMAIL FROM:<evil@x.test>\nRCPT TO:<victim@y.test>\nDATA\nsmuggled\n.\r\n")
        .await;
    // No reply yet: a bare-LF dot line did not end the message.
    c.send(b"\r\n.\r\n").await;
    let r = c.reply().await;
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(sink.count(), 1);
    let cmds = sink.commands.lock().unwrap().join("\n");
    assert!(!cmds.contains("evil@x.test"), "smuggled through: {cmds}");
    let data = String::from_utf8_lossy(&sink.received()[0].data).into_owned();
    assert!(data.contains("MAIL FROM:<evil@x.test>"), "{data}");
}

#[tokio::test(flavor = "multi_thread")]
async fn long_lines_pass_and_limits_give_5xx() {
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start_with(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nmax_message_size = 100000\nmax_data_line = 20000\n[next_hop]\naddress = \"{}\"\n",
        sink.addr
    ));
    let (mut c, _) = Client::connect(f.addr()).await;
    let mut msg = ham();
    msg.extend_from_slice(&[b'x'; 5000]);
    msg.extend_from_slice(b"\r\n");
    let r = c
        .send_message("a@example.org", &["b@example.net"], &msg)
        .await;
    assert!(r.starts_with("250 "), "{r}");
    assert!(sink.received()[0].data.ends_with(&msg[msg.len() - 5002..]));

    let mut long = ham();
    long.extend_from_slice(&[b'y'; 30000]);
    long.extend_from_slice(b"\r\n");
    let r = c
        .send_message("a@example.org", &["b@example.net"], &long)
        .await;
    assert!(r.starts_with("554 5.6.0"), "{r}");

    let r = c.cmd("MAIL FROM:<a@example.org> SIZE=200000").await;
    assert!(r.starts_with("552 5.3.4"), "{r}");
    let mut big = ham();
    for _ in 0..100 {
        big.extend_from_slice(&[b'z'; 1998]);
        big.extend_from_slice(b"\r\n");
    }
    let r = c
        .send_message("a@example.org", &["b@example.net"], &big)
        .await;
    assert!(r.starts_with("552 5.3.4"), "{r}");
    assert_eq!(sink.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_outside_the_allow_list_are_refused() {
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start(sink.addr, "allow_clients = [\"127.0.0.2/32\"]");
    let (mut c, greeting) = Client::connect_from("127.0.0.1".parse().unwrap(), f.addr()).await;
    assert!(greeting.starts_with("554 5.7.1 "), "{greeting}");
    assert!(c.closed().await);
    let (_c, greeting) = Client::connect_from("127.0.0.2".parse().unwrap(), f.addr()).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_cap_get_421() {
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start(sink.addr, "max_connections = 2");
    let (_a, g) = Client::connect(f.addr()).await;
    assert!(g.starts_with("220"));
    let (_b, g) = Client::connect(f.addr()).await;
    assert!(g.starts_with("220"));
    let (mut c, g) = Client::connect(f.addr()).await;
    assert!(g.starts_with("421 4.7.0 "), "{g}");
    assert!(c.closed().await);
    drop(_a);
    // A slot frees up once a session ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_d, g) = Client::connect(f.addr()).await;
        if g.starts_with("220") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lmtp_gives_one_reply_per_recipient() {
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start_with(&format!(
        "[server]\nlisten = []\nlmtp_listen = [\"127.0.0.1:0\"]\n[next_hop]\naddress = \"{}\"\n",
        sink.addr
    ));
    let (mut c, g) = Client::connect(f.addr()).await;
    assert!(g.contains("LMTP"), "{g}");
    assert!(c.cmd("EHLO x").await.starts_with("503"));
    assert!(c.cmd("LHLO postfix.test").await.starts_with("250"));
    c.cmd("MAIL FROM:<a@example.org>").await;
    c.cmd("RCPT TO:<one@example.net>").await;
    c.cmd("RCPT TO:<two@example.net>").await;
    assert!(c.cmd("DATA").await.starts_with("354"));
    let mut wire = vec![];
    filterd::smtp::codec::dot_stuff(&[&ham()], &mut wire);
    c.send(&wire).await;
    assert!(c.reply().await.starts_with("250 "));
    assert!(c.reply().await.starts_with("250 "));
    assert_eq!(sink.received()[0].rcpts.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_messages_in_flight() {
    let sink = Sink::start(Behaviour {
        data_delay: Some(Duration::from_millis(1500)),
        ..Behaviour::default()
    })
    .await;
    let mut f = Filterd::start(sink.addr, "");
    let addr = f.addr();
    let (mut idle, _) = Client::connect(addr).await;
    assert!(idle.cmd("EHLO idle.test").await.starts_with("250"));
    let busy = tokio::spawn(async move {
        let (mut c, _) = Client::connect(addr).await;
        let r = c
            .send_message("a@example.org", &["b@example.net"], &ham())
            .await;
        let after = c.cmd("NOOP").await;
        (r, after)
    });
    // Wait until the message is at the next hop, then ask filterd to stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sink.data_seen.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "message never reached the sink"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f.signal("TERM");
    // The idle session is told at once.
    let r = idle.reply().await;
    assert!(r.starts_with("421 4.3.2 "), "{r}");
    let (r, after) = busy.await.unwrap();
    assert!(r.starts_with("250 "), "in-flight message not finished: {r}");
    assert!(after.starts_with("421 ") || after.is_empty(), "{after}");
    assert_eq!(
        f.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        f.log_text()
    );
    assert_eq!(sink.count(), 1);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

/// MAIL on its own waits here and goes to the next hop with the first RCPT, in one write
/// (a client that waits for each reply costs the next hop one round trip fewer). A MAIL the
/// next hop refuses then is that RCPT's answer, and each later RCPT tries MAIL again; a
/// transaction the next hop never opened is not reset there.
#[tokio::test(flavor = "multi_thread")]
async fn mail_goes_to_the_next_hop_with_the_first_rcpt_and_its_refusal_answers_it() {
    use crate::util::hop::Hop;
    let hop = Hop::start(|mut c| async move {
        if c.greet().await.is_none() {
            return;
        }
        let mut refused = false;
        while let Some(line) = c.line().await {
            let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
            if line.contains("<refused@") {
                refused = true;
                c.send("550 5.7.1 <refused@example.org>: Sender address rejected\r\n")
                    .await;
            } else if verb == "RCPT" && refused {
                refused = false;
                c.send("503 5.5.1 Error: need MAIL command\r\n").await;
            } else if c.answer(&verb).await.is_none() {
                return;
            }
        }
    })
    .await;
    let f = Filterd::start(hop.addr, "[model]\nenabled = false\n");
    let (mut c, _) = Client::connect(f.addr()).await;
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@example.org>").await.starts_with("250"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mails = |hop: &Hop| {
        hop.lines()
            .iter()
            .filter(|l| l.contains("MAIL FROM"))
            .count()
    };
    assert_eq!(mails(&hop), 0, "no MAIL before the RCPT: {:?}", hop.lines());
    assert!(c.cmd("RCPT TO:<b@example.net>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    let mut wire = vec![];
    filterd::smtp::codec::dot_stuff(&[&ham()], &mut wire);
    c.send(&wire).await;
    let done = c.reply().await;
    assert!(done.starts_with("250"), "{done}");
    assert_eq!(hop.delivered_count(), 1);

    assert!(
        c.cmd("MAIL FROM:<refused@example.org>")
            .await
            .starts_with("250")
    );
    for rcpt in ["b@example.net", "c@example.net"] {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        assert!(
            r.starts_with("550 5.7.1") && r.contains("Sender address rejected"),
            "{r}"
        );
    }
    assert!(
        c.cmd("DATA").await.starts_with("554"),
        "no valid recipients"
    );
    assert!(c.cmd("RSET").await.starts_with("250"));
    assert!(c.cmd("QUIT").await.starts_with("221"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = hop.lines();
    assert_eq!(mails(&hop), 3, "{lines:?}");
    assert!(!lines.iter().any(|l| l.ends_with("RSET")), "{lines:?}");
}
