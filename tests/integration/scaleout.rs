//! Three filterd hosts behind one private Postfix, one shared Redis and PostgreSQL: a host
//! killed mid-burst loses nothing, Postfix carries on through the others; a flood spread
//! over the three is held after the limit in total.
//!
//! Postfix (3.5 and later) takes a list of next hops for an SMTP transport and tries them
//! in order: `content_filter = filterd:[127.0.0.2]:P, [127.0.0.3]:P, [127.0.0.4]:P` sends
//! everything to the first host while it answers, and to the next when it does not. That is
//! failover, not load spreading. To spread, the same transport gets a random next hop per
//! message: `smtpd_client_restrictions = check_client_access randmap:{via2, via3, via4}`
//! with three restriction classes `via2 = check_client_access static:{FILTER
//! filterd:[127.0.0.2]:P,[127.0.0.3]:P,[127.0.0.4]:P}`, the list rotated in each (`randmap:`
//! picks one of its results at random for each lookup; `FILTER` overrides `content_filter`
//! for that message; the hosts after the first are its failover). The other way, one name
//! with several addresses (DNS or /etc/hosts, shuffled by `smtp_randomize_addresses`), would
//! need the machine's resolver.

use crate::postfix::{inject_at, marker};
use crate::util::Client;
use crate::util::Filterd;
use crate::util::pg::Postgres;
use crate::util::postfix::{Postfix, free_port, unavailable};
use crate::util::redis::Redis;
use crate::util::sink::{Behaviour, Sink};
use std::time::Duration;

/// Hosts on 127.0.0.2-4 at `port`, relaying to the reinjection port, the model off, with
/// `extra` (their local domains, stores and limits).
fn hosts(port: u16, reinject: u16, extra: &str) -> Vec<Filterd> {
    (2..=4)
        .map(|n| {
            Filterd::start_with(&format!(
                "[server]\nlisten = [\"127.0.0.{n}:{port}\"]\nhostname = \"filter{n}.test\"\n\
                 [next_hop]\naddress = \"127.0.0.1:{reinject}\"\n[model]\nenabled = false\n{extra}"
            ))
        })
        .collect()
}

/// main.cf lines for Postfix to pick one of the three hosts on 127.0.0.2-4 at `port` at
/// random per message: three restriction classes, each a FILTER to the three hosts in
/// another order (the first is the message's host, the others its failover).
fn spread(port: u16) -> String {
    let classes = (0..3)
        .map(|k| {
            let hops = (0..3)
                .map(|i| format!("[127.0.0.{}]:{port}", 2 + (k + i) % 3))
                .collect::<Vec<_>>()
                .join(",");
            format!(
                "via{} = check_client_access static:{{FILTER filterd:{hops}}}\n",
                k + 2
            )
        })
        .collect::<String>();
    format!(
        "smtpd_restriction_classes = via2, via3, via4\n{classes}\
         smtpd_client_restrictions = check_client_access randmap:{{via2, via3, via4}}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hosts_behind_one_postfix_lose_nothing_when_one_is_killed_mid_burst() {
    if unavailable().is_some() {
        return;
    }
    let (Some(redis), Some(pg)) = (Redis::start(), Postgres::start()) else {
        return;
    };
    let sink = Sink::start(Behaviour::default()).await;
    let (port, reinject) = (free_port(), free_port());
    let mut hosts = hosts(
        port,
        reinject,
        &format!(
            "[local_domains]\npostconf = false\ndomains = [\"sink.test\"]\n\
             [shared]\nredis_url = \"{}\"\nstate = \"redis\"\nbayes = \"redis\"\n\
             quarantine = \"postgresql\"\npostgresql_url = \"{}\"\n",
            redis.url(),
            pg.url()
        ),
    );
    let list = (2..=4)
        .map(|n| format!("[127.0.0.{n}]:{port}"))
        .collect::<Vec<_>>()
        .join(", ");
    let pf = Postfix::start_with(
        port,
        reinject,
        sink.addr,
        &format!("content_filter = filterd:{list}\n"),
    );
    let n = 200;
    let burst = {
        let smtpd = pf.smtpd;
        tokio::spawn(async move { inject_at(smtpd, 0..n).await })
    };
    // Mid-burst: the first host dies without a word.
    let first = sink.wait_for(30, Duration::from_secs(60)).await;
    assert!(first >= 30, "{}", pf.maillog());
    let _ = hosts[0].child.kill();
    let _ = hosts[0].child.wait();
    burst.await.expect("injection");
    sink.wait_for(n, Duration::from_secs(120)).await;
    assert!(
        pf.wait_queue_empty(Duration::from_secs(60)),
        "{}",
        pf.queue_listing()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen = vec![0usize; n];
    for m in sink.received() {
        if let Some(i) = marker(&m.data) {
            seen[i] += 1;
        }
    }
    let lost: Vec<usize> = (0..n).filter(|&i| seen[i] == 0).collect();
    assert!(lost.is_empty(), "lost {lost:?}\n{}", pf.maillog());
    // A message whose content reached the next hop just before the kill, but whose 250
    // never reached Postfix, comes again: at most one per connection in flight (the
    // filterd transport's process limit, 4). SMTP is at-least-once; this is the bound.
    let twice = seen.iter().filter(|&&c| c > 1).count();
    assert!(twice <= 4, "{twice} duplicates: {seen:?}");
    let by = |h: &Filterd| h.log_text().matches("Passed CLEAN").count();
    let (a, b, c) = (by(&hosts[0]), by(&hosts[1]), by(&hosts[2]));
    assert!(
        a >= 30 && b > 0,
        "first host {a}, then the second {b}, third {c}"
    );
    eprintln!("delivered by host: {a} / {b} / {c}; {twice} duplicates");
}

/// 1000 outbound messages from one sender, spread by Postfix at random over three hosts with
/// a limit of 100 per sender counted in Redis: 100 relayed in total (not 300), the other 900
/// held in the shared quarantine, every host having taken its share.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_spread_over_three_hosts_is_held_after_the_limit_in_total() {
    if unavailable().is_some() {
        return;
    }
    let (Some(redis), Some(pg)) = (Redis::start(), Postgres::start()) else {
        return;
    };
    let sink = Sink::start(Behaviour::default()).await;
    let (port, reinject) = (free_port(), free_port());
    // sink.test is not local here: the flood is outbound mail, counted per sender.
    let hosts = hosts(
        port,
        reinject,
        &format!(
            "[bayes]\nenabled = false\n[auth]\nenabled = false\n\
             [local_domains]\npostconf = false\ndomains = [\"filterd.test\"]\n\
             [ratelimit]\nmessages = 100\nwindow_secs = 3600\nper = [\"sender\"]\n\
             [shared]\nredis_url = \"{}\"\nstate = \"redis\"\n\
             quarantine = \"postgresql\"\npostgresql_url = \"{}\"\n",
            redis.url(),
            pg.url()
        ),
    );
    let pf = Postfix::start_with(port, reinject, sink.addr, &spread(port));
    let n = 1000;
    // Four injection sessions at once, 250 messages each.
    let sessions: Vec<_> = (0..4)
        .map(|k| {
            let smtpd = pf.smtpd;
            tokio::spawn(async move { inject_at(smtpd, k * 250..(k + 1) * 250).await })
        })
        .collect();
    for s in sessions {
        s.await.expect("injection");
    }
    assert!(
        pf.wait_queue_empty(Duration::from_secs(180)),
        "{}",
        pf.queue_listing()
    );
    let held = |pg: &Postgres| {
        pg.sql("SELECT count(*) FROM filterd_quarantine WHERE reason = 'ratelimit'")
            .parse::<usize>()
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sink.count() + held(&pg) < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let by_host = pg.sql(
        "SELECT string_agg(host || '=' || c, ' ' ORDER BY host) FROM \
         (SELECT host, count(*) AS c FROM filterd_quarantine GROUP BY host) AS h",
    );
    assert_eq!(
        (sink.count(), held(&pg)),
        (100, 900),
        "relayed, held (by host: {by_host})\n{}",
        pf.maillog()
    );
    let n_counted = redis.command(&["HGET", "filterd:rl:default/sender/alice@sink.test", "n"]);
    assert_eq!(n_counted.as_deref(), Some("1000"));
    // Each host took a share of the flood (1000 at random over three: far above 150 each).
    for h in &hosts {
        let log = h.log_text();
        let seen = log
            .lines()
            .filter(|l| l.contains(" Passed ") || l.contains(" Blocked "))
            .count();
        assert!(seen >= 150, "a host saw only {seen} messages: {by_host}");
    }
    eprintln!("held by host: {by_host}");
}

/// Bayes in Redis behind Postfix: before training no host's verdict has a Bayes hit;
/// `filtertrain` with one host's configuration, and every host's verdicts on the spam Postfix
/// spreads over them carry BAYES_99.
#[tokio::test(flavor = "multi_thread")]
async fn filtertrain_on_one_host_changes_the_verdicts_of_all_three() {
    use crate::train::{folder, synthetic};
    if unavailable().is_some() {
        return;
    }
    let Some(redis) = Redis::start() else { return };
    let sink = Sink::start(Behaviour::default()).await;
    let (port, reinject) = (free_port(), free_port());
    let hosts = hosts(
        port,
        reinject,
        &format!(
            "[auth]\nenabled = false\n\
             [local_domains]\npostconf = false\ndomains = [\"sink.test\"]\n\
             [bayes]\nmin_spam = 3\nmin_ham = 3\nstate_dir = \"/nonexistent/never-used\"\n\
             [shared]\nredis_url = \"{}\"\nbayes = \"redis\"\n",
            redis.url()
        ),
    );
    let pf = Postfix::start_with(port, reinject, sink.addr, &spread(port));
    let inject = |range: std::ops::Range<usize>| async move {
        let (mut c, g) = Client::connect_from("127.0.0.2".parse().unwrap(), pf.smtpd).await;
        assert!(g.starts_with("220"), "{g}");
        for i in range {
            let m = synthetic(i, true);
            let r = c
                .send_message("deals@promo.example.com", &["bob@sink.test"], m.as_bytes())
                .await;
            assert!(r.starts_with("250"), "{r}");
            assert!(c.cmd("RSET").await.starts_with("250"));
        }
        c.cmd("QUIT").await;
    };
    // (host, X-Spam-Status) of each message the sink has.
    let verdicts = |sink: &Sink| -> Vec<(String, String)> {
        sink.received()
            .iter()
            .map(|m| {
                let text = String::from_utf8_lossy(&m.data).into_owned();
                let host = (2..=4)
                    .map(|n| format!("filter{n}.test"))
                    .find(|h| text.contains(&format!("by {h} (filterd)")))
                    .unwrap_or_default();
                let status = text
                    .split("\r\nX-Spam-Status:")
                    .nth(1)
                    .and_then(|s| s.split("\r\nX-").next())
                    .unwrap_or_default()
                    .replace("\r\n\t", " ");
                (host, status)
            })
            .collect()
    };
    inject(100..110).await;
    assert_eq!(sink.wait_for(10, Duration::from_secs(60)).await, 10);
    let before = verdicts(&sink);
    assert!(
        before
            .iter()
            .all(|(h, s)| !h.is_empty() && !s.contains("BAYES_")),
        "nothing learned yet: {before:#?}"
    );
    let corpus = tempfile::tempdir().unwrap();
    let conf = hosts[0].dir.path().join("filterd.toml");
    for (name, spam) in [("spam", true), ("ham", false)] {
        let dir = folder(corpus.path(), name, spam, 0..6);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_filtertrain"))
            .arg("--config")
            .arg(&conf)
            .arg(format!("--{name}"))
            .arg(&dir)
            .output()
            .expect("filtertrain");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("Learned tokens from 6 message(s)"),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    inject(200..230).await;
    assert_eq!(sink.wait_for(40, Duration::from_secs(60)).await, 40);
    let after = &verdicts(&sink)[10..];
    for n in 2..=4 {
        let host = format!("filter{n}.test");
        let mine: Vec<&String> = after
            .iter()
            .filter(|(h, _)| *h == host)
            .map(|(_, s)| s)
            .collect();
        assert!(!mine.is_empty(), "{host} got none of the 30: {after:#?}");
        assert!(
            mine.iter().all(|s| s.contains("BAYES_99")),
            "{host}: {mine:#?}"
        );
    }
}
