//! Verdict actions through the filterd binary and a loopback sink: every destiny at every
//! level boundary, policy banks splitting one message into per-outcome transactions, allow
//! and block lists, the outbound guard, and the quarantine entries they leave.

use crate::util::sink::{Behaviour, Sink};
use crate::util::{Client, Filterd, ham};
use filterd::action::quarantine::{Entry, Quarantine};
use filterd::config::Config;
use filterd::pipeline::Pipeline;
use filterd::smtp::envelope::{
    Envelope, MailParams, RcptParams, Recipient, Xforward, XforwardAttr,
};
use filterd::smtp::filter::Delivery;
use std::path::Path;
use std::time::Duration;

/// A GTUBE message whose Subject names the case.
fn spam(case: &str) -> Vec<u8> {
    format!(
        "From: spammer@example.com\r\nTo: x@example.net\r\nSubject: case {case}\r\n\r\n\
XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"
    )
    .into_bytes()
}

fn entries(dir: &Path) -> Vec<Entry> {
    match Quarantine::open(dir) {
        Ok(q) => q.list().unwrap().into_iter().map(|e| e.unwrap()).collect(),
        Err(_) => vec![],
    }
}

/// The addresses of `RCPT TO:<a>` / `MAIL FROM:<a>` lines.
fn addrs(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let (_, rest) = l.split_once('<').unwrap_or(("", l));
            rest.split('>').next().unwrap_or("").to_string()
        })
        .collect()
}

fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.split("\r\n")
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

/// The score the spam message gets with `GTUBE = 20` (the other hits are those of a message
/// without Date and Message-ID), read from a relayed copy.
async fn spam_score() -> f64 {
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start(
        sink.addr,
        "[model]\nenabled = false\n[scores]\nGTUBE = 20\n[actions]\nspam_destiny = \"pass\"\nspam_quarantine = false\n",
    );
    let (mut c, _) = Client::connect(f.addr()).await;
    let r = c
        .send_message("s@example.com", &["u@example.net"], &spam("probe"))
        .await;
    assert!(r.starts_with("250 "), "{r}");
    let got = sink.received();
    let text = String::from_utf8_lossy(&got[0].data);
    header(&text, "X-Spam-Score").unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_destiny_at_every_level_boundary() {
    let s = spam_score().await;
    let up = s + 0.001; // the next level a score can miss by
    let sink = Sink::start(Behaviour::default()).await;
    // One bank per case, chosen by recipient domain: (domain, overrides).
    let cases: Vec<(&str, String)> = vec![
        (
            "pass-at",
            format!("kill_level = {s:?}\nspam_destiny = \"pass\""),
        ),
        (
            "pass-below",
            format!("kill_level = {up:?}\ntag2_level = {s:?}\nspam_destiny = \"pass\""),
        ),
        (
            "discard-at",
            format!("kill_level = {s:?}\nspam_destiny = \"discard\""),
        ),
        (
            "discard-below",
            format!("kill_level = {up:?}\nspam_destiny = \"discard\""),
        ),
        (
            "reject-at",
            format!("kill_level = {s:?}\nspam_destiny = \"reject\""),
        ),
        (
            "reject-below",
            format!("kill_level = {up:?}\nspam_destiny = \"reject\""),
        ),
        (
            "qcut-at",
            format!("kill_level = 7\nspam_destiny = \"discard\"\nquarantine_cutoff_level = {s:?}"),
        ),
        (
            "qcut-below",
            format!("kill_level = 7\nspam_destiny = \"discard\"\nquarantine_cutoff_level = {up:?}"),
        ),
        (
            "dcut-at",
            format!("kill_level = 7\nspam_destiny = \"reject\"\ndiscard_cutoff_level = {s:?}"),
        ),
        (
            "dcut-below",
            format!("kill_level = 7\nspam_destiny = \"reject\"\ndiscard_cutoff_level = {up:?}"),
        ),
        (
            "tag-at",
            format!("tag_level = {s:?}\ntag2_level = {s:?}\nkill_level = 999"),
        ),
        (
            "tag-above",
            format!("tag_level = {up:?}\ntag2_level = {up:?}\nkill_level = 999"),
        ),
        (
            "noquarantine",
            format!("kill_level = {s:?}\nspam_destiny = \"discard\"\nspam_quarantine = false"),
        ),
    ];
    let mut cfg = String::from("[model]\nenabled = false\n[scores]\nGTUBE = 20\n");
    for (name, overrides) in &cases {
        cfg.push_str(&format!(
            "[[policy]]\nname = \"{name}\"\nrecipient_domains = [\"{name}.test\"]\n{overrides}\n"
        ));
    }
    let f = Filterd::start(sink.addr, &cfg);
    let mut replies = std::collections::HashMap::new();
    for (name, _) in &cases {
        let (mut c, _) = Client::connect(f.addr()).await;
        let r = c
            .send_message("s@example.com", &[&format!("u@{name}.test")], &spam(name))
            .await;
        replies.insert(*name, r);
    }
    let got = sink.received();
    let relayed = |case: &str| {
        got.iter()
            .find(|m| String::from_utf8_lossy(&m.data).contains(&format!("case {case}\r\n")))
            .map(|m| String::from_utf8_lossy(&m.data).into_owned())
    };
    let held: Vec<String> = entries(&f.quarantine_dir())
        .into_iter()
        .map(|e| e.policy)
        .collect();
    assert!(
        f.wait_log_count("mail_id: ", cases.len(), Duration::from_secs(10)),
        "{}",
        f.log_text()
    );
    let log = f.log_text();
    // (case, reply prefix, relayed, quarantined, log words)
    let want = [
        (
            "pass-at",
            "250 2.0.0 from MTA",
            true,
            true,
            "Passed SPAM {RelayedTaggedInbound,Quarantined}",
        ),
        (
            "pass-below",
            "250 2.0.0 from MTA",
            true,
            false,
            "Passed SPAMMY {RelayedTaggedInbound}",
        ),
        (
            "discard-at",
            "250 2.7.0 Ok, discarded",
            false,
            true,
            "Blocked SPAM {DiscardedInbound,Quarantined}",
        ),
        (
            "discard-below",
            "250 2.0.0 from MTA",
            true,
            false,
            "Passed SPAMMY {RelayedTaggedInbound}",
        ),
        (
            "reject-at",
            "554 5.7.0 Reject",
            false,
            true,
            "Blocked SPAM {RejectedInbound,Quarantined}",
        ),
        (
            "reject-below",
            "250 2.0.0 from MTA",
            true,
            false,
            "Passed SPAMMY {RelayedTaggedInbound}",
        ),
        (
            "qcut-at",
            "250 2.7.0 Ok, discarded",
            false,
            false,
            "Blocked SPAM {DiscardedInbound}",
        ),
        (
            "qcut-below",
            "250 2.7.0 Ok, discarded",
            false,
            true,
            "Blocked SPAM {DiscardedInbound,Quarantined}",
        ),
        (
            "dcut-at",
            "250 2.7.0 Ok, discarded",
            false,
            true,
            "Blocked SPAM {DiscardedInbound,Quarantined}",
        ),
        (
            "dcut-below",
            "554 5.7.0 Reject",
            false,
            true,
            "Blocked SPAM {RejectedInbound,Quarantined}",
        ),
        (
            "tag-at",
            "250 2.0.0 from MTA",
            true,
            false,
            "Passed SPAMMY {RelayedTaggedInbound}",
        ),
        (
            "tag-above",
            "250 2.0.0 from MTA",
            true,
            false,
            "Passed CLEAN {RelayedInbound}",
        ),
        (
            "noquarantine",
            "250 2.7.0 Ok, discarded",
            false,
            false,
            "Blocked SPAM {DiscardedInbound}",
        ),
    ];
    for (case, reply, is_relayed, is_held, words) in want {
        let r = &replies[case];
        assert!(r.starts_with(reply), "{case}: {r}");
        assert_eq!(relayed(case).is_some(), is_relayed, "{case} relayed?");
        assert_eq!(
            held.iter().any(|p| p == case),
            is_held,
            "{case} held? {held:?}"
        );
        assert!(
            log.lines()
                .any(|l| l.contains(words) && l.contains(&format!("<u@{case}.test>"))),
            "{case}: no `{words}` line in\n{log}"
        );
    }
    // Tagging at the tag and tag2 boundaries.
    let at = relayed("tag-at").unwrap();
    assert_eq!(header(&at, "X-Spam-Flag"), Some("YES"), "{at}");
    assert!(at.contains("Subject: ***SPAM*** case tag-at\r\n"), "{at}");
    let above = relayed("tag-above").unwrap();
    assert_eq!(
        header(&above, "X-Spam-Flag"),
        None,
        "below tag_level: no headers\n{above}"
    );
    assert!(above.contains("Subject: case tag-above\r\n"), "{above}");
    let below = relayed("pass-below").unwrap();
    assert_eq!(header(&below, "X-Spam-Flag"), Some("YES"));
    // The quarantined copy is the message as received, with its envelope.
    let q = Quarantine::open(&f.quarantine_dir()).unwrap();
    let e = entries(&f.quarantine_dir())
        .into_iter()
        .find(|e| e.policy == "discard-at")
        .unwrap();
    assert_eq!(q.message(&e.id).unwrap(), spam("discard-at"));
    assert_eq!(e.reason, "spam");
    assert_eq!(e.recipients, ["u@discard-at.test"]);
    assert_eq!(e.sender, "s@example.com");
    assert_eq!(e.score, Some(s));
    assert!(e.hits.iter().any(|h| h.name == "GTUBE" && h.score == 20.0));
    assert_eq!(e.subject.as_deref(), Some("case discard-at"));
    assert!(log.contains(&format!("quarantine: {}", e.id)), "{log}");
    // Delivered and also kept: the delivered copy says where the copy is.
    let kept = entries(&f.quarantine_dir())
        .into_iter()
        .find(|e| e.policy == "pass-at")
        .unwrap();
    let delivered = relayed("pass-at").unwrap();
    assert_eq!(
        header(&delivered, "X-Quarantine-ID"),
        Some(format!("<{}>", kept.id).as_str())
    );
    assert_eq!(
        header(&relayed("pass-below").unwrap(), "X-Quarantine-ID"),
        None
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mixed_policies_split_into_one_transaction_per_outcome() {
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start(
        sink.addr,
        "[model]\nenabled = false\n[actions]\nspam_destiny = \"pass\"\nspam_quarantine = false\n\
[[policy]]\nname = \"strict\"\nrecipient_domains = [\"strict.test\"]\nspam_destiny = \"discard\"\nspam_quarantine = true\n\
[[policy]]\nname = \"lenient\"\nrecipient_domains = [\".lenient.test\"]\ntag2_level = 2000\nkill_level = 2000\n\
[[policy]]\nname = \"twin\"\nrecipient_domains = [\"twin.test\"]\nspam_quarantine = false\n",
    );
    let (mut c, _) = Client::connect(f.addr()).await;
    let rcpts = [
        "a@default.test",
        "b@strict.test",
        "c@mx.lenient.test",
        "d@twin.test",
        "e@strict.test",
    ];
    let r = c
        .send_message("s@example.com", &rcpts, &spam("mixed"))
        .await;
    assert!(r.starts_with("250 2.0.0 Ok, id="), "{r}");
    assert!(r.contains("handled in 3 parts"), "{r}");
    let mut got = sink.received();
    got.sort_by_key(|m| addrs(&m.rcpts));
    // default and twin decide the same and tag the same: one transaction for both.
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(addrs(&got[0].rcpts), ["a@default.test", "d@twin.test"]);
    assert_eq!(addrs(&got[1].rcpts), ["c@mx.lenient.test"]);
    let default = String::from_utf8_lossy(&got[0].data);
    let lenient = String::from_utf8_lossy(&got[1].data);
    assert_eq!(header(&default, "X-Spam-Flag"), Some("YES"));
    assert!(
        default.contains("Subject: ***SPAM*** case mixed"),
        "{default}"
    );
    assert_eq!(header(&lenient, "X-Spam-Flag"), Some("NO"), "{lenient}");
    assert!(lenient.contains("required=2000"), "{lenient}");
    assert!(lenient.contains("\r\nSubject: case mixed\r\n"), "{lenient}");
    for m in &got {
        assert_eq!(addrs(std::slice::from_ref(&m.mail)), ["s@example.com"]);
    }
    let held = entries(&f.quarantine_dir());
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].recipients, ["b@strict.test", "e@strict.test"]);
    assert_eq!(held[0].policy, "strict");
    assert!(
        f.wait_log_count("mail_id: ", 3, Duration::from_secs(10)),
        "{}",
        f.log_text()
    );
    let log = f.log_text();
    assert!(
        log.contains("Blocked SPAM {DiscardedInbound,Quarantined}")
            && log.contains("<b@strict.test>,<e@strict.test>, quarantine: "),
        "{log}"
    );
    assert!(
        log.contains("Passed SPAM {RelayedTaggedInbound}")
            && log.contains("-> <a@default.test>,<d@twin.test>, policy: default"),
        "{log}"
    );
    assert!(log.contains("Passed CLEAN {RelayedInbound}"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn lmtp_gives_each_recipient_its_own_outcome() {
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start_with(&format!(
        "[server]\nlisten = []\nlmtp_listen = [\"127.0.0.1:0\"]\n[next_hop]\naddress = \"{}\"\n\
[model]\nenabled = false\n[actions]\nspam_destiny = \"pass\"\nspam_quarantine = false\n\
[[policy]]\nname = \"refuse\"\nrecipient_domains = [\"refuse.test\"]\nspam_destiny = \"reject\"\nspam_quarantine = true\n",
        sink.addr
    ));
    let (mut c, _) = Client::connect(f.addr()).await;
    assert!(c.cmd("LHLO client.test").await.starts_with("250"));
    assert!(c.cmd("MAIL FROM:<s@example.com>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<a@ok.test>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@refuse.test>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    let mut wire = vec![];
    filterd::smtp::codec::dot_stuff(&[&spam("lmtp")], &mut wire);
    c.send(&wire).await;
    let first = c.reply().await;
    let second = c.reply().await;
    assert!(first.starts_with("250 "), "{first}");
    assert!(second.starts_with("554 5.7.0 Reject"), "{second}");
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert_eq!(addrs(&got[0].rcpts), ["a@ok.test"]);
    assert_eq!(
        entries(&f.quarantine_dir()).len(),
        1,
        "the rejected part is held"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reject_among_delivered_recipients_is_discarded_not_bounced() {
    // SMTP has one reply: a 554 would bounce the message for the delivered recipient too.
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start(
        sink.addr,
        "[model]\nenabled = false\n[actions]\nspam_destiny = \"pass\"\nspam_quarantine = false\n\
[[policy]]\nname = \"refuse\"\nrecipient_domains = [\"refuse.test\"]\nspam_destiny = \"reject\"\nspam_quarantine = true\n",
    );
    let (mut c, _) = Client::connect(f.addr()).await;
    let r = c
        .send_message("s@example.com", &["a@ok.test", "b@refuse.test"], &spam("r"))
        .await;
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(addrs(&sink.received()[0].rcpts), ["a@ok.test"]);
    assert_eq!(
        entries(&f.quarantine_dir())[0].recipients,
        ["b@refuse.test"]
    );
    f.expect_log("Blocked SPAM {DiscardedInbound,Quarantined}");
    // All recipients rejecting: then the reply is the reject.
    let r = c
        .send_message("s@example.com", &["c@refuse.test"], &spam("r2"))
        .await;
    assert!(r.starts_with("554 5.7.0 "), "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn allow_and_block_lists() {
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start(
        sink.addr,
        "[model]\nenabled = false\n\
[lists]\nallow_senders = [\"@partner.test\"]\nblock_senders = [\"boss@bad.test\"]\n\
allow_from = [\"example.com\"]\nblock_from = [\".evil.test\"]\nblock_clients = [\"203.0.113.0/24\"]\n",
    );
    let send = |from: &'static str, xforward: Option<&'static str>, msg: Vec<u8>| {
        let addr = f.addr();
        async move {
            let (mut c, _) = Client::connect(addr).await;
            let cmds: Vec<&str> = xforward.into_iter().collect();
            c.send_message_after(&cmds, from, &["u@example.net"], &msg)
                .await
        }
    };
    // Allowed sender: GTUBE is delivered, the score forced to 0.
    let r = send("x@partner.test", None, spam("allowed")).await;
    assert!(r.starts_with("250 2.0.0 from MTA"), "{r}");
    let m = String::from_utf8_lossy(&sink.received()[0].data).into_owned();
    assert_eq!(header(&m, "X-Spam-Score"), Some("0"), "{m}");
    assert!(m.contains("ALLOWLIST_SENDER=-"), "{m}");
    // The allowed From domain needs authentication; without it, GTUBE stays blocked.
    let r = send("s@example.com", None, spam("from-unauthenticated")).await;
    assert!(r.starts_with("250 2.7.0 Ok, discarded"), "{r}");
    // Blocked sender, blocked From domain, blocked client: ham is held.
    let evil = String::from_utf8(ham())
        .unwrap()
        .replace("alice@example.org", "alice@mail.evil.test")
        .into_bytes();
    for (from, xf, msg, hit) in [
        ("boss@bad.test", None, ham(), "BLOCKLIST_SENDER"),
        ("a@example.org", None, evil, "BLOCKLIST_FROM"),
        (
            "a@example.org",
            Some("XFORWARD ADDR=203.0.113.7 NAME=spamhost.test"),
            ham(),
            "BLOCKLIST_CLIENT",
        ),
    ] {
        let r = send(from, xf, msg).await;
        assert!(r.starts_with("250 2.7.0 Ok, discarded"), "{hit}: {r}");
        let e = entries(&f.quarantine_dir());
        let e = e
            .iter()
            .find(|e| e.hits.iter().any(|h| h.name == hit))
            .unwrap_or_else(|| panic!("{hit} not held: {e:?}"));
        assert!(e.score.unwrap() >= 64.0, "{e:?}");
    }
    assert_eq!(sink.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_guard_quarantines_past_the_limit() {
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start(
        sink.addr,
        "[model]\nenabled = false\n[origin]\nnetworks = [\"198.51.100.0/24\"]\n\
[ratelimit]\nmessages = 3\nwindow_secs = 3600\nper = [\"sender\"]\n",
    );
    let mut replies = vec![];
    for _ in 0..5 {
        let (mut c, _) = Client::connect(f.addr()).await;
        replies.push(
            c.send_message_after(
                &["XFORWARD ADDR=198.51.100.5 NAME=webmail.test"],
                "User@Example.org",
                &["friend@example.net"],
                &ham(),
            )
            .await,
        );
    }
    for r in &replies[..3] {
        assert!(r.starts_with("250 2.0.0 from MTA"), "{r}");
    }
    for r in &replies[3..] {
        assert!(r.starts_with("250 2.7.0 Ok, discarded"), "{r}");
    }
    assert_eq!(sink.count(), 3);
    let held = entries(&f.quarantine_dir());
    assert_eq!(held.len(), 2);
    assert!(held.iter().all(|e| e.reason == "ratelimit"));
    // Inbound mail from elsewhere is not counted.
    let (mut c, _) = Client::connect(f.addr()).await;
    let r = c
        .send_message("user@example.org", &["x@example.net"], &ham())
        .await;
    assert!(r.starts_with("250 2.0.0 from MTA"), "{r}");
    assert!(
        f.wait_log_count("mail_id: ", 6, Duration::from_secs(10)),
        "{}",
        f.log_text()
    );
    let log = f.log_text();
    assert_eq!(
        log.matches("outbound rate limit exceeded").count(),
        1,
        "one warning per key and window:\n{log}"
    );
    assert!(
        log.contains("key=\"default/sender/user@example.org\""),
        "{log}"
    );
    assert_eq!(
        log.matches("Blocked RATELIMIT {DiscardedOutbound,Quarantined}")
            .count(),
        2,
        "{log}"
    );
    assert!(log.contains("Passed CLEAN {RelayedOutbound}"), "{log}");
}

/// The guard's window on tokio's paused clock, through the pipeline's own prepare and scan.
#[tokio::test(start_paused = true)]
async fn outbound_guard_trips_exactly_at_its_limit_and_resets_after_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::parse(&format!(
        "[bayes]\nenabled = false\n[model]\nenabled = false\n[auth]\nenabled = false\n\
[origin]\nnetworks = [\"192.0.2.0/24\"]\n[ratelimit]\nmessages = 200\nwindow_secs = 600\n\
[quarantine]\ndir = \"{}\"\n",
        dir.path().display()
    ))
    .unwrap();
    let p = Pipeline::new(&cfg);
    let mut xforward = Xforward::default();
    xforward.set(XforwardAttr::Addr, "192.0.2.5".into());
    let env = Envelope {
        peer: "127.0.0.1:4000".parse().unwrap(),
        helo: "postfix.test".into(),
        xforward,
        sender: "user@example.org".into(),
        mail_params: MailParams::default(),
        recipients: vec![Recipient {
            address: "x@example.net".into(),
            params: RcptParams::default(),
        }],
    };
    let msg = ham();
    let held = |p: &Pipeline, prepared: filterd::pipeline::Prepared| {
        let d = p.scan_prepared(&env, &msg, "AbCdEf123456", 1_795_442_400, &prepared);
        let ratelimited =
            d.report.decisions[0].hold.as_ref().map(|h| h.reason()) == Some("ratelimit");
        assert_eq!(
            ratelimited,
            matches!(d.parts[0].delivery, Delivery::Discard)
        );
        assert_eq!(ratelimited, d.parts[0].quarantine);
        ratelimited
    };
    for round in 0..2 {
        for i in 0..200 {
            let prepared = p.prepare(&env, &msg).await;
            assert!(!held(&p, prepared), "round {round}: message {i} held");
        }
        let prepared = p.prepare(&env, &msg).await;
        assert!(held(&p, prepared), "round {round}: message 201 passed");
        tokio::time::advance(Duration::from_secs(599)).await;
        let prepared = p.prepare(&env, &msg).await;
        assert!(held(&p, prepared), "round {round}: window ended early");
        tokio::time::advance(Duration::from_secs(1)).await;
    }
}

#[test]
fn bad_policy_configuration_lists_every_problem() {
    let e = Config::parse(
        "[bayes]\nenabled = false\n[model]\nenabled = false\n\
[actions]\nspam_destiny = \"bounce\"\ndmarc_reject = \"reject\"\n[levels]\nquarantine_cutoff_level = 1.0\n\
[ratelimit]\nper = [\"ip\"]\n[lists]\nallow_senders = [\"<x@y>\"]\nblock_clients = [\"300.1.1.1\"]\n\
[[policy]]\nname = \"default\"\n\
[[policy]]\nname = \"a\"\nrecipient_domains = [\"a@b\"]\norigin = \"sideways\"\nskip_checks = [\"nope\"]\n\
[[policy]]\nname = \"a\"\nclient_networks = [\"10.0.0.0/8\"]\ntag2_level = 9\nkill_level = 8\n",
    )
    .unwrap_err()
    .to_string();
    for needle in [
        "actions.spam_destiny: `bounce`",
        "actions.dmarc_reject: `reject` is not score or quarantine",
        "levels.quarantine_cutoff_level (1) is below kill_level",
        "ratelimit.per: `ip`",
        "lists.allow_senders: `<x@y>`",
        "lists.block_clients: `300.1.1.1`",
        "policy[0].name",
        "policy[0] (default): no selector",
        "recipient_domains: `a@b`",
        "origin: `sideways`",
        "skip_checks: no check is called `nope`",
        "policy[2] (a): the name is used twice",
        "policy[2] (a): tag2_level (9) is above kill_level (8)",
    ] {
        assert!(e.contains(needle), "`{needle}` missing from:\n{e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_part_the_next_hop_tempfails_makes_the_whole_message_451_and_drops_the_copy() {
    let sink = Sink::start(Behaviour {
        data_reply: Some("451 4.3.0 busy".into()),
        ..Behaviour::default()
    })
    .await;
    let f = Filterd::start(
        sink.addr,
        "[model]\nenabled = false\n[actions]\nspam_destiny = \"pass\"\nspam_quarantine = false\n\
[[policy]]\nname = \"strict\"\nrecipient_domains = [\"strict.test\"]\nspam_destiny = \"discard\"\nspam_quarantine = true\n",
    );
    let (mut c, _) = Client::connect(f.addr()).await;
    let r = c
        .send_message("s@example.com", &["a@ok.test", "b@strict.test"], &spam("t"))
        .await;
    assert!(r.starts_with("451 4.3.0 "), "{r}");
    assert!(
        entries(&f.quarantine_dir()).is_empty(),
        "Postfix retries the whole message; the copy would be a duplicate"
    );
    f.expect_log("Deferred SPAM {TempFailedInbound}");
    // Quarantine trouble is 451 too, before anything is relayed.
    let ok = Sink::start(Behaviour::default()).await;
    let g = Filterd::start(ok.addr, "[model]\nenabled = false\n");
    std::fs::remove_dir_all(g.quarantine_dir()).unwrap();
    std::fs::write(g.quarantine_dir(), b"not a directory").unwrap();
    let (mut c, _) = Client::connect(g.addr()).await;
    let r = c
        .send_message("s@example.com", &["a@ok.test"], &spam("q"))
        .await;
    assert!(r.starts_with("451 4.3.0 Quarantine unavailable"), "{r}");
    assert_eq!(ok.count(), 0);
}
