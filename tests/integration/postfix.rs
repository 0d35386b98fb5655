//! End to end through a real Postfix: a private instance started by the test (its own
//! config, queue and log in a temp dir, loopback ports), `content_filter` pointing at a
//! filterd process, a 10025-style reinjection listener, final delivery to a loopback sink.
//!
//! Skips with a message when Postfix is not installed or we are not root, unless
//! `FILTERD_REQUIRE_POSTFIX=1` (set by `.ci/run`), where that is a failure.

use crate::util::postfix::{Postfix, free_port, unavailable};
use crate::util::sink::{Behaviour, Sink};
use crate::util::{Client, Filterd};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// A message with a unique marker and bytes that break careless relays.
pub(crate) fn message(i: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Alice <alice@sink.test>\r\nTo: bob@sink.test\r\nSubject: e2e message {i}\r\n\
Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <e2e-{i}@sink.test>\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
marker-{i}\r\n.leading dot\r\n..two dots\r\ntrailing spaces   \r\n"
    )
    .into_bytes();
    m.extend_from_slice("Grüße\r\n".as_bytes());
    m.extend_from_slice(&vec![b'L'; 3000]);
    m.extend_from_slice(b"\r\nend\r\n");
    m
}

fn body(m: &[u8]) -> &[u8] {
    let i = m
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header/body separator");
    &m[i + 4..]
}

pub(crate) fn marker(m: &[u8]) -> Option<usize> {
    let b = body(m);
    let s = std::str::from_utf8(&b[..b.len().min(40)]).ok()?;
    s.strip_prefix("marker-")?
        .split("\r\n")
        .next()?
        .parse()
        .ok()
}

/// A sink, a filterd with `config` relaying to a reinjection port, and a private Postfix
/// between them (content_filter to filterd, reinjection to the sink).
async fn chain(config: &str) -> (Sink, Filterd, Postfix) {
    let sink = Sink::start(Behaviour::default()).await;
    let reinject = free_port();
    let f = Filterd::start(SocketAddr::from(([127, 0, 0, 1], reinject)), config);
    let pf = Postfix::start(f.addr().port(), reinject, sink.addr);
    (sink, f, pf)
}

pub(crate) async fn inject(pf: &Postfix, range: std::ops::Range<usize>) {
    inject_at(pf.smtpd, range).await;
}

/// Messages `range` into the smtpd at `smtpd` over one session.
pub(crate) async fn inject_at(smtpd: SocketAddr, range: std::ops::Range<usize>) {
    let (mut c, g) = Client::connect_from("127.0.0.2".parse().unwrap(), smtpd).await;
    assert!(g.starts_with("220"), "{g}");
    for i in range {
        let r = c
            .send_message("alice@sink.test", &["bob@sink.test"], &message(i))
            .await;
        assert!(r.starts_with("250"), "Postfix refused message {i}: {r}");
        assert!(c.cmd("RSET").await.starts_with("250"));
    }
    c.cmd("QUIT").await;
}

/// Wait for messages `0..n` at the sink and an empty queue; each must arrive exactly once,
/// with its body and its original headers untouched and filterd's headers added. Returns
/// the header blocks, for the caller's own checks.
pub(crate) async fn delivered_once(
    pf: &Postfix,
    sink: &Sink,
    f: &Filterd,
    n: usize,
) -> Vec<String> {
    let got = sink.wait_for(n, Duration::from_secs(90)).await;
    assert_eq!(
        got,
        n,
        "only {got} of {n} delivered\nmaillog:\n{}\nfilterd:\n{}",
        pf.maillog(),
        f.log_text()
    );
    assert!(
        pf.wait_queue_empty(Duration::from_secs(20)),
        "queue not empty:\n{}",
        pf.queue_listing()
    );
    // Nothing more trickles in.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = sink.received();
    assert_eq!(got.len(), n);
    let mut seen = vec![0usize; n];
    let mut heads = vec![];
    for m in &got {
        let i = marker(&m.data).expect("marker");
        seen[i] += 1;
        assert!(
            body(&m.data) == body(&message(i)),
            "body of message {i} changed"
        );
        let head =
            String::from_utf8_lossy(&m.data[..m.data.len() - body(&m.data).len()]).into_owned();
        assert!(head.contains("X-Spam-Flag: NO\r\n"), "{head}");
        assert!(head.contains("X-Spam-Status: No, score="), "{head}");
        assert!(head.contains("(filterd) with ESMTP"), "{head}");
        let orig = message(i);
        let orig_head = &orig[..orig.len() - body(&orig).len()];
        assert!(
            m.data.windows(orig_head.len()).any(|w| w == orig_head),
            "original headers of {i} not intact:\n{head}"
        );
        heads.push(head);
    }
    assert!(seen.iter().all(|&c| c == 1), "not exactly once: {seen:?}");
    heads
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_messages_through_postfix_arrive_once_with_headers_and_untouched_bodies() {
    if unavailable().is_some() {
        return;
    }
    let (sink, f, pf) = chain("").await;
    inject(&pf, 0..50).await;
    delivered_once(&pf, &sink, &f, 50).await;
    let log = pf.maillog();
    assert!(
        log.contains("orig_client=unknown[127.0.0.2]"),
        "XFORWARD not seen by Postfix:\n{log}"
    );
    assert!(log.contains("orig_queue_id="), "{log}");
    assert!(!log.contains("status=bounced"), "{log}");
    f.wait_log_count("Passed CLEAN {RelayedInbound}", 50, Duration::from_secs(10));
    assert_eq!(
        f.log_text()
            .matches("Passed CLEAN {RelayedInbound}")
            .count(),
        50,
        "{}",
        f.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_filterd_stopped_postfix_defers_and_delivers_after_restart() {
    if unavailable().is_some() {
        return;
    }
    let sink = Sink::start(Behaviour::default()).await;
    let reinject = free_port();
    let filterd_port = free_port();
    let pf = Postfix::start(filterd_port, reinject, sink.addr);
    inject(&pf, 0..10).await;
    // Postfix tries filterd, fails, and defers every message.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pf.maillog().matches("status=deferred").count() < 10 {
        assert!(
            Instant::now() < deadline,
            "messages not deferred:\n{}",
            pf.maillog()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sink.count(), 0);
    assert!(!pf.maillog().contains("status=bounced"));
    let f = Filterd::start_with(&format!(
        "[server]\nlisten = [\"127.0.0.1:{filterd_port}\"]\n[next_hop]\naddress = \"127.0.0.1:{reinject}\"\n"
    ));
    pf.flush();
    let n = sink.wait_for(10, Duration::from_secs(60)).await;
    assert_eq!(
        n,
        10,
        "after restart only {n} of 10 delivered\n{}\n{}",
        pf.maillog(),
        f.log_text()
    );
    assert!(
        pf.wait_queue_empty(Duration::from_secs(20)),
        "{}",
        pf.queue_listing()
    );
    let mut markers: Vec<usize> = sink
        .received()
        .iter()
        .filter_map(|m| marker(&m.data))
        .collect();
    markers.sort();
    assert_eq!(markers, (0..10).collect::<Vec<_>>());
    assert!(!pf.maillog().contains("status=bounced"));
}

/// Wait until the sink has `n` messages and Postfix's queue is empty, give stragglers a
/// moment, and check that nothing more arrived.
async fn settle(pf: &Postfix, sink: &Sink, n: usize, context: &str) {
    assert_eq!(
        sink.wait_for(n, Duration::from_secs(60)).await,
        n,
        "{context}\n{}",
        pf.maillog()
    );
    assert!(
        pf.wait_queue_empty(Duration::from_secs(30)),
        "{}",
        pf.queue_listing()
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sink.count(), n, "more than {n} delivered: {context}");
}

fn filterq(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_filterq"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run filterq")
}

#[tokio::test(flavor = "multi_thread")]
async fn gtube_to_a_blocked_domain_is_quarantined_and_released_exactly_once() {
    if unavailable().is_some() {
        return;
    }
    // Spam passes tagged by default; the bank for blocked.test discards it into the quarantine.
    let (sink, f, pf) = chain(
        "[actions]\nspam_destiny = \"pass\"\nspam_quarantine = false\n\
[[policy]]\nname = \"blocked\"\nrecipient_domains = [\"blocked.test\"]\nspam_destiny = \"discard\"\nspam_quarantine = true\n",
    )
    .await;
    let (mut c, _) = Client::connect_from("127.0.0.2".parse().unwrap(), pf.smtpd).await;
    let r = c
        .send_message(
            "spammer@sink.test",
            &["carol@blocked.test"],
            &crate::util::gtube(),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("RSET").await.starts_with("250"));
    let r = c
        .send_message("alice@sink.test", &["carol@blocked.test"], &message(7))
        .await;
    assert!(r.starts_with("250"), "{r}");
    c.cmd("QUIT").await;
    // The ham arrives, tagged; the spam does not.
    settle(&pf, &sink, 1, &f.log_text()).await;
    let got = sink.received();
    assert_eq!(marker(&got[0].data), Some(7));
    let ham = String::from_utf8_lossy(&got[0].data).into_owned();
    assert!(
        ham.contains("X-Spam-Flag: NO\r\n") && ham.contains("X-Spam-Status: No, score="),
        "{ham}"
    );
    f.expect_log("Blocked SPAM {DiscardedInbound,Quarantined}");
    // filterq lists it, with Postfix's queue id.
    let cfg = f.config_path();
    let o = filterq(&cfg, &["list", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(list[0]["recipients"][0], "carol@blocked.test");
    assert_eq!(list[0]["policy"], "blocked");
    assert!(list[0]["queue_id"].is_string(), "{list:?}");
    assert_eq!(
        list[0]["dsn"]["orcpt"][0], "rfc822;carol@blocked.test",
        "Postfix's ORCPT is kept for the release"
    );
    let table = filterq(&cfg, &["list"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains(&id));
    // Released through Postfix's reinjection listener: delivered once, with its id.
    let o = tokio::task::spawn_blocking({
        let (cfg, id) = (cfg.clone(), id.clone());
        move || filterq(&cfg, &["release", &id])
    })
    .await
    .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    settle(&pf, &sink, 2, "released more than once").await;
    let got = sink.received();
    let released = String::from_utf8_lossy(&got[1].data).into_owned();
    assert!(
        released.contains(&format!("X-Quarantine-ID: <{id}>\r\n")),
        "{released}"
    );
    assert!(
        released.contains("GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL"),
        "{released}"
    );
    assert_eq!(got[1].rcpts.len(), 1);
    assert!(
        got[1].rcpts[0].starts_with("RCPT TO:<carol@blocked.test>"),
        "{:?}",
        got[1].rcpts
    );
    assert!(!pf.maillog().contains("status=bounced"), "{}", pf.maillog());
    // A second release is refused without --force.
    let o = filterq(&cfg, &["release", &id]);
    assert_eq!(o.status.code(), Some(64));
    // One message to both domains: Postfix hands it over in one transaction, filterd splits
    // it; sink.test gets it tagged, blocked.test's copy is held.
    let (mut c, _) = Client::connect_from("127.0.0.2".parse().unwrap(), pf.smtpd).await;
    let r = c
        .send_message(
            "spammer@sink.test",
            &["bob@sink.test", "dave@blocked.test"],
            &crate::util::gtube(),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    c.cmd("QUIT").await;
    settle(&pf, &sink, 3, &f.log_text()).await;
    let got = sink.received();
    let tagged = String::from_utf8_lossy(&got[2].data).into_owned();
    assert!(tagged.contains("\r\nX-Spam-Flag: YES\r\n"), "{tagged}");
    assert_eq!(got[2].rcpts.len(), 1);
    assert!(
        got[2].rcpts[0].starts_with("RCPT TO:<bob@sink.test>"),
        "{:?}",
        got[2].rcpts
    );
    let o = filterq(&cfg, &["list", "--json", "--rcpt", "dave@"]);
    let held: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(held.as_array().map(Vec::len), Some(1), "{held}");
    assert_eq!(
        held[0]["recipients"],
        serde_json::json!(["dave@blocked.test"])
    );
    assert!(!pf.maillog().contains("status=bounced"), "{}", pf.maillog());
}

/// A spam wave that filterd discards, then ham, over one injection session: every blocked
/// message makes filterd RSET the reinjection smtpd's transaction, and Postfix counts RSET as
/// a junk command. filterd retires a next-hop connection before Postfix's limit, so Postfix
/// never slows down or drops it: no "too many errors", nothing deferred, the ham delivered
/// once each.
#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_spam_wave_never_trips_postfix_junk_command_limit() {
    if unavailable().is_some() {
        return;
    }
    let (sink, f, pf) = chain("").await;
    let (mut c, g) = Client::connect_from("127.0.0.2".parse().unwrap(), pf.smtpd).await;
    assert!(g.starts_with("220"), "{g}");
    let spam = crate::util::gtube();
    for i in 0..1500 {
        let r = c
            .send_message("spammer@sink.test", &["bob@sink.test"], &spam)
            .await;
        assert!(r.starts_with("250"), "Postfix refused spam {i}: {r}");
        assert!(c.cmd("RSET").await.starts_with("250"));
    }
    for i in 0..20 {
        let r = c
            .send_message("alice@sink.test", &["bob@sink.test"], &message(i))
            .await;
        assert!(r.starts_with("250"), "Postfix refused ham {i}: {r}");
        assert!(c.cmd("RSET").await.starts_with("250"));
    }
    c.cmd("QUIT").await;
    settle(&pf, &sink, 20, "20 ham after 1500 spam").await;
    let log = pf.maillog();
    assert!(
        !log.contains("too many errors"),
        "Postfix dropped a filterd connection:\n{}",
        tail(&log)
    );
    assert!(
        !log.contains("status=deferred"),
        "something was deferred:\n{}",
        tail(&log)
    );
    let mut seen = [0usize; 20];
    for m in sink.received() {
        seen[marker(&m.data).expect("only ham reaches the sink")] += 1;
    }
    assert!(
        seen.iter().all(|&n| n == 1),
        "ham not exactly once: {seen:?}"
    );
    assert!(
        f.wait_log_count("Blocked SPAM", 1500, Duration::from_secs(30)),
        "not every spam was blocked"
    );
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}
