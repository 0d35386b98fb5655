//! The policy service and the outbound guard through a real Postfix: greylisting, the
//! auto-allowlist, "login owns sender" with `XCLIENT LOGIN=` (Postfix's
//! `smtpd_authorized_xclient_hosts`), SPF at RCPT against the loopback DNS server, and the
//! localhost-tunnel incident replayed with the policy service on (refused before queueing)
//! and off (the content filter holds all but the limit).

use crate::util::dns::{DnsServer, Rec};
use crate::util::postfix::{Postfix, free_port, unavailable};
use crate::util::sink::{Behaviour, Sink};
use crate::util::{Client, Filterd};
use filterd::action::quarantine::Quarantine;
use std::net::SocketAddr;
use std::time::Duration;

/// `main.cf` lines: the policy service first in the recipient restrictions, XCLIENT for
/// the test client, and `outside.test` (not a local domain) delivered to the sink too.
fn policy_main_cf(policy: Option<SocketAddr>, sink: SocketAddr) -> String {
    let check = policy.map_or(String::new(), |p| {
        format!("check_policy_service inet:{p}, ")
    });
    format!(
        "smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_recipient_restrictions = {check}permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
transport_maps = inline:{{ sink.test=smtp:[127.0.0.1]:{p}, outside.test=smtp:[127.0.0.1]:{p} }}
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 1000
smtpd_error_sleep_time = 0
",
        p = sink.port()
    )
}

/// A sink, filterd with `config` (the policy service on when the config says), and a
/// private Postfix in front of it with the policy service in its restrictions.
async fn chain(config: &str) -> (Sink, Filterd, Postfix) {
    let sink = Sink::start(Behaviour::default()).await;
    let reinject = free_port();
    let f = Filterd::start(SocketAddr::from(([127, 0, 0, 1], reinject)), config);
    let extra = policy_main_cf(f.policy, sink.addr);
    let pf = Postfix::start_with(f.addr().port(), reinject, sink.addr, &extra);
    (sink, f, pf)
}

/// A Postfix session that claims (XCLIENT) to come from `addr`, logged in as `login`.
async fn session(pf: &Postfix, addr: &str, login: Option<&str>) -> Client {
    let (mut c, g) = Client::connect(pf.smtpd).await;
    assert!(g.starts_with("220"), "{g}");
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    let login = login.map_or(String::new(), |l| format!(" LOGIN={l}"));
    let r = c
        .cmd(&format!(
            "XCLIENT ADDR={addr} NAME=[UNAVAILABLE] HELO=mail.remote.test{login}"
        ))
        .await;
    assert!(r.starts_with("220"), "XCLIENT: {r}\n{}", pf.maillog());
    assert!(c.cmd("EHLO mail.remote.test").await.starts_with("250"));
    c
}

/// MAIL and RCPT; the RCPT reply (the transaction is reset afterwards unless it passed).
async fn rcpt(c: &mut Client, from: &str, to: &str) -> String {
    let r = c.cmd(&format!("MAIL FROM:<{from}>")).await;
    assert!(r.starts_with("250"), "MAIL: {r}");
    let r = c.cmd(&format!("RCPT TO:<{to}>")).await;
    assert!(c.cmd("RSET").await.starts_with("250"));
    r
}

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: carol@remote.test\r\nTo: bob@sink.test\r\nSubject: {subject}\r\n\
Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@remote.test>\r\n\r\nhello\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn greylisting_defers_a_new_triplet_passes_the_retry_and_allowlists_after_five() {
    if unavailable().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let logins = dir.path().join("sender_logins");
    std::fs::write(&logins, "alice@sink.test alice\n@shared.test alice,bob\n").unwrap();
    let config = format!(
        "[policy_service]\nenabled = true\nlisten = [\"127.0.0.1:0\"]\nexempt_networks = [\"127.0.0.0/8\"]\n\
         [policy_service.greylist]\ndelay_secs = 2\n\
         [policy_service.login]\nsender_login_map = \"{}\"\n\
         [local_domains]\npostconf = false\ndomains = [\"sink.test\"]\n",
        logins.display()
    );
    let (sink, f, pf) = chain(&config).await;
    let mut c = session(&pf, "203.0.113.7", None).await;
    let rcpts = ["bob", "u1", "u2", "u3", "u4"].map(|u| format!("{u}@sink.test"));
    for r in &rcpts {
        let reply = rcpt(&mut c, "carol@remote.test", r).await;
        assert!(
            reply.starts_with("450 4."),
            "a new triplet is deferred: {reply}"
        );
        assert!(reply.contains("Greylisted"), "{reply}");
    }
    let early = rcpt(&mut c, "carol@remote.test", "bob@sink.test").await;
    assert!(
        early.starts_with("450"),
        "a retry before the delay: {early}"
    );
    // The same /24, another host: the same triplet.
    let mut other = session(&pf, "203.0.113.200", None).await;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    for r in &rcpts[1..] {
        let reply = rcpt(&mut other, "carol@remote.test", r).await;
        assert!(
            reply.starts_with("250"),
            "the retry after the delay: {reply}"
        );
    }
    let r = c
        .send_message(
            "carol@remote.test",
            &["bob@sink.test"],
            &message("greylisted"),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    let fresh = rcpt(&mut c, "dave@remote.test", "new@sink.test").await;
    assert!(
        fresh.starts_with("250"),
        "five passes: the client network is allow-listed: {fresh}"
    );
    assert!(f.wait_log("greylist=auto-allowlist", Duration::from_secs(5)));
    assert_eq!(
        sink.wait_for(1, Duration::from_secs(30)).await,
        1,
        "{}",
        pf.maillog()
    );

    // Authenticated: never greylisted; the login must own the sender.
    let mut a = session(&pf, "198.51.100.9", Some("alice")).await;
    let own = rcpt(&mut a, "alice@sink.test", "bob@sink.test").await;
    assert!(
        own.starts_with("250"),
        "alice as alice@: {own}\n{}",
        pf.maillog()
    );
    let shared = rcpt(&mut a, "anyone@shared.test", "bob@sink.test").await;
    assert!(
        shared.starts_with("250"),
        "@shared.test is alice's: {shared}"
    );
    let forged = rcpt(&mut a, "bob@sink.test", "bob@sink.test").await;
    assert!(forged.starts_with("553 5.7.1"), "alice as bob@: {forged}");
    assert!(forged.contains("not owned by user alice"), "{forged}");
    f.expect_log("Policy 553 {login}");
    f.expect_log(
        "Policy DEFER_IF_PERMIT {greylist}, [203.0.113.7] <carol@remote.test> -> <bob@sink.test>",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn spf_fail_is_refused_at_rcpt_and_pass_gets_received_spf() {
    if unavailable().is_some() {
        return;
    }
    let dns = DnsServer::start(&[
        Rec::Txt("spf-pass.test", "v=spf1 ip4:203.0.113.0/24 -all"),
        Rec::Txt("spf-fail.test", "v=spf1 ip4:192.0.2.1 -all"),
    ])
    .await;
    let config = format!(
        "[auth]\nnameservers = [\"{}\"]\nbudget_ms = 3000\ndns_timeout_ms = 1000\ndns_attempts = 1\n\
         [policy_service]\nenabled = true\nlisten = [\"127.0.0.1:0\"]\nexempt_networks = [\"127.0.0.0/8\"]\n\
         [policy_service.greylist]\nenabled = false\n\
         [origin]\nlocal = false\n\
         [local_domains]\npostconf = false\ndomains = [\"sink.test\"]\n",
        dns.addr
    );
    // XCLIENT keeps Postfix's local rewrite context (SOURCE=LOCAL): call that inbound here.
    let (sink, f, pf) = chain(&config).await;
    let mut c = session(&pf, "203.0.113.7", None).await;
    let fail = rcpt(&mut c, "x@spf-fail.test", "bob@sink.test").await;
    assert!(fail.starts_with("550 5.7.23"), "SPF fail: {fail}");
    assert!(fail.contains("SPF fail - not authorized"), "{fail}");
    let r = c
        .send_message("x@spf-pass.test", &["bob@sink.test"], &message("spf-pass"))
        .await;
    assert!(r.starts_with("250"), "SPF pass: {r}");
    assert_eq!(
        sink.wait_for(1, Duration::from_secs(30)).await,
        1,
        "{}",
        pf.maillog()
    );
    let got = String::from_utf8_lossy(&sink.received()[0].data).into_owned();
    let header = got.lines().find(|l| l.starts_with("Received-SPF:"));
    let header = header.unwrap_or_else(|| panic!("no Received-SPF:\n{got}"));
    assert!(
        header.starts_with("Received-SPF: Pass (mailfrom)"),
        "{header}"
    );
    assert!(header.contains("client-ip=203.0.113.7"), "{header}");
    assert_eq!(got.matches("Received-SPF:").count(), 1, "once per message");
    // The content scan found the same result (Authentication-Results says spf=pass).
    assert!(got.contains("spf=pass"), "{got}\n{}", f.log_text());
    f.expect_log("Policy 550 {spf}");
}

/// The incident: loopback clients (inside mynetworks), unauthenticated, a new sender per
/// message, recipients at an outside domain; one session per message, as a spam tool runs.
/// Returns (messages Postfix accepted, the first refusal).
async fn flood(pf: &Postfix, n: usize) -> (usize, Option<String>) {
    let mut accepted = 0;
    let mut refusal = None;
    for i in 0..n {
        let (mut c, g) = Client::connect(pf.smtpd).await;
        assert!(g.starts_with("220"), "{g}");
        assert!(c.cmd("EHLO tunnel.test").await.starts_with("250"));
        let from = format!("promo{i}@made-up-{i}.test");
        assert!(
            c.cmd(&format!("MAIL FROM:<{from}>"))
                .await
                .starts_with("250")
        );
        let r = c.cmd(&format!("RCPT TO:<victim{i}@outside.test>")).await;
        if r.starts_with("250") {
            assert!(c.cmd("DATA").await.starts_with("354"));
            c.send(b"Subject: cheap pills\r\n\r\nbuy now\r\n.\r\n")
                .await;
            let done = c.reply().await;
            assert!(done.starts_with("250"), "{done}");
            accepted += 1;
        } else if refusal.is_none() {
            refusal = Some(r);
        }
        c.cmd("QUIT").await;
    }
    (accepted, refusal)
}

/// Wait until Postfix's queue is empty and at least `held_at_least` messages are in the
/// quarantine, each with reason `ratelimit`; returns how many are held.
async fn wait_drained(pf: &Postfix, f: &Filterd, held_at_least: usize) -> usize {
    assert!(
        pf.wait_queue_empty(Duration::from_secs(120)),
        "{}",
        pf.queue_listing()
    );
    let held = || match Quarantine::open(&f.quarantine_dir()) {
        Ok(q) => q
            .list()
            .map_or(vec![], |l| l.into_iter().filter_map(Result::ok).collect()),
        Err(_) => vec![],
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while held().len() < held_at_least && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = held();
    assert!(
        all.iter().all(|e| e.reason == "ratelimit"),
        "{:?}",
        all.first()
    );
    all.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tunnel_flood_is_refused_before_queueing_with_the_policy_service() {
    if unavailable().is_some() {
        return;
    }
    let config = "[policy_service]\nenabled = true\nlisten = [\"127.0.0.1:0\"]\n\
                  [local_domains]\npostconf = false\ndomains = [\"sink.test\"]\n";
    let (sink, f, pf) = chain(config).await;
    let (accepted, refusal) = flood(&pf, 1000).await;
    let refusal = refusal.unwrap_or_else(|| panic!("all 1000 accepted\n{}", f.log_text()));
    assert!(refusal.starts_with("450 4.7.1"), "{refusal}");
    assert!(
        refusal.contains("outbound rate limit exceeded"),
        "{refusal}"
    );
    assert!((200..1000).contains(&accepted), "accepted {accepted}");
    let held = wait_drained(&pf, &f, accepted - 200).await;
    let out = sink.count();
    assert_eq!(
        out, 200,
        "at most the limit gets out (accepted {accepted}, held {held})"
    );
    assert_eq!(held, accepted - 200, "the rest Postfix queued is held");
    f.expect_log("Policy DEFER_IF_PERMIT {limit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tunnel_flood_is_held_by_the_content_filter_without_the_policy_service() {
    if unavailable().is_some() {
        return;
    }
    let config = "[local_domains]\npostconf = false\ndomains = [\"sink.test\"]\n";
    let (sink, f, pf) = chain(config).await;
    let (accepted, refusal) = flood(&pf, 1000).await;
    assert_eq!((accepted, refusal), (1000, None));
    let held = wait_drained(&pf, &f, 800).await;
    assert_eq!(sink.count(), 200, "the default limit: 200 per 10 minutes");
    assert_eq!(held, 800);
    // One warning per key and window, naming the key, the count and the senders.
    let log = f.log_text();
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("outbound rate limit exceeded"))
        .collect();
    assert_eq!(warns.len(), 1, "{warns:#?}");
    // Postfix delivers through four processes: the order is nearly, not exactly, the
    // order sent.
    assert!(warns[0].contains("first_sender=promo"), "{}", warns[0]);
    assert!(warns[0].contains("last_sender=promo"), "{}", warns[0]);
    assert!(warns[0].contains("count=201"), "{}", warns[0]);
}

/// One request to the policy service over TCP; the action line.
pub(crate) async fn ask(addr: SocketAddr, client: &str, rcpt: &str) -> String {
    ask_as(addr, client, "a@remote.test", rcpt).await
}

/// [`ask`] for mail from `sender`.
pub(crate) async fn ask_as(addr: SocketAddr, client: &str, sender: &str, rcpt: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("policy connect");
    let req = format!(
        "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address={client}\n\
         client_name=unknown\nsender={sender}\nrecipient={rcpt}\n\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    let mut buf = [0u8; 1024];
    while !out.ends_with("\n\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {out:?}");
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    out.trim_end().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn greylist_triplets_survive_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[next_hop]\naddress = \"127.0.0.1:9\"\n\
         [bayes]\nenabled = false\nstate_dir = \"{}\"\n[model]\nenabled = false\n\
         [policy_service]\nenabled = true\nlisten = [\"127.0.0.1:0\"]\n\
         [policy_service.greylist]\ndelay_secs = 1\n",
        state.path().display()
    );
    let mut f = Filterd::start_with(&config);
    let addr = f.policy.expect("policy_listen in the ready line");
    let first = ask(addr, "192.0.2.1", "u@sink.test").await;
    assert!(first.starts_with("action=DEFER_IF_PERMIT"), "{first}");
    f.signal("TERM");
    assert_eq!(
        f.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        f.log_text()
    );
    assert!(
        state.path().join("policy.state").exists(),
        "saved at shutdown"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let f = Filterd::start_with(&config);
    let addr = f.policy.expect("policy_listen");
    let again = ask(addr, "192.0.2.1", "u@sink.test").await;
    assert_eq!(
        again, "action=DUNNO",
        "the retry after the delay passes: the triplet was kept"
    );
    let other = ask(addr, "192.0.2.1", "v@sink.test").await;
    assert!(
        other.starts_with("action=DEFER_IF_PERMIT"),
        "a new triplet: {other}"
    );
}

#[test]
fn a_damaged_state_file_is_refused_at_start_with_its_path() {
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("policy.state"), "not a snapshot\n").unwrap();
    let cfg = state.path().join("filterd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[bayes]\nenabled = false\nstate_dir = \"{}\"\n[model]\nenabled = false\n[auth]\nenabled = false\n[local_domains]\npostconf = false\n",
            state.path().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(crate::util::filterd_binary())
        .arg("--config")
        .arg(&cfg)
        .arg("--check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("policy.state: line 1"), "{err}");
}
