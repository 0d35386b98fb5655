//! Several filterd hosts on one state: the outbound guard's counters and the greylist in a
//! real redis-server (its own port and directory), and what happens while Redis is down.

use crate::util::redis::Redis;
use crate::util::sink::{Behaviour, Sink};
use crate::util::{Client, Filterd, ham};
use filterd::action::quarantine::Quarantine;
use std::path::Path;
use std::time::Duration;

/// `[shared]` on `redis` with its own key prefix, the guard's limit of `limit` per sender,
/// the policy service on with a 1 s greylist delay, and `extra`.
fn config(redis: &Redis, prefix: &str, limit: u64, extra: &str) -> String {
    format!(
        "[model]\nenabled = false\n[origin]\nnetworks = [\"198.51.100.0/24\"]\n\
         [ratelimit]\nmessages = {limit}\nwindow_secs = 3600\nper = [\"sender\"]\n\
         [shared]\nredis_url = \"{}\"\nstate = \"redis\"\nkey_prefix = \"{prefix}\"\n{extra}\n\
         [policy_service]\nenabled = true\nlisten = [\"127.0.0.1:0\"]\n\
         [policy_service.greylist]\ndelay_secs = 1\n",
        redis.url()
    )
}

/// One outbound message from a webmail client of ours; filterd's reply to the end of DATA.
async fn outbound(f: &Filterd) -> String {
    let (mut c, _) = Client::connect(f.addr()).await;
    c.send_message_after(
        &["XFORWARD ADDR=198.51.100.5 NAME=webmail.test"],
        "User@Example.org",
        &["friend@example.net"],
        &ham(),
    )
    .await
}

fn held(dir: &Path) -> usize {
    Quarantine::open(dir)
        .ok()
        .and_then(|q| q.list().ok())
        .map_or(0, |l| l.into_iter().filter_map(Result::ok).count())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_count_one_outbound_limit_in_redis() {
    let Some(redis) = Redis::start() else { return };
    let sink = Sink::start(Behaviour::default()).await;
    let cfg = config(&redis, "t1:", 6, "");
    let hosts = [
        Filterd::start(sink.addr, &cfg),
        Filterd::start(sink.addr, &cfg),
    ];
    assert!(
        hosts[0]
            .log_text()
            .contains("shared_state=redis redis://127.0.0.1:")
    );
    let mut replies = vec![];
    for i in 0..12 {
        replies.push(outbound(&hosts[i % 2]).await);
    }
    let passed = replies
        .iter()
        .filter(|r| r.starts_with("250 2.0.0 from MTA"))
        .count();
    let discarded = replies
        .iter()
        .filter(|r| r.starts_with("250 2.7.0 Ok, discarded"))
        .count();
    assert_eq!((passed, discarded), (6, 6), "{replies:#?}");
    assert!(
        replies[..6]
            .iter()
            .all(|r| r.starts_with("250 2.0.0 from MTA"))
    );
    assert_eq!(sink.count(), 6, "the limit holds in total, not per host");
    assert_eq!(
        held(&hosts[0].quarantine_dir()) + held(&hosts[1].quarantine_dir()),
        6
    );
    let n = redis.command(&["HGET", "t1:rl:default/sender/user@example.org", "n"]);
    assert_eq!(n.as_deref(), Some("12"));
    let ttl = redis.command(&["TTL", "t1:rl:default/sender/user@example.org"]);
    let ttl: u64 = ttl.and_then(|t| t.parse().ok()).unwrap_or(0);
    assert!((3500..=3600).contains(&ttl), "the window expires: {ttl}");
    let first = redis.command(&["HGET", "t1:rl:default/sender/user@example.org", "s"]);
    assert_eq!(
        first.as_deref(),
        Some("User@Example.org"),
        "the window's first sender"
    );
    // Before queueing, the policy service of either host refuses the next one.
    let policy = hosts[1].policy.expect("policy_listen");
    let answer =
        crate::policyd::ask_as(policy, "198.51.100.5", "User@Example.org", "x@example.net").await;
    assert!(
        answer.starts_with("action=DEFER_IF_PERMIT 4.7.1 outbound rate limit exceeded"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_greylist_retry_passes_on_another_host() {
    let Some(redis) = Redis::start() else { return };
    let sink = Sink::start(Behaviour::default()).await;
    let cfg = config(&redis, "t2:", 100, "");
    let a = Filterd::start(sink.addr, &cfg);
    let b = Filterd::start(sink.addr, &cfg);
    let (pa, pb) = (a.policy.expect("policy"), b.policy.expect("policy"));
    let first = crate::policyd::ask(pa, "192.0.2.1", "u@sink.test").await;
    assert!(first.starts_with("action=DEFER_IF_PERMIT"), "{first}");
    let early = crate::policyd::ask(pb, "192.0.2.1", "u@sink.test").await;
    assert!(
        early.starts_with("action=DEFER_IF_PERMIT"),
        "within the delay: {early}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let retry = crate::policyd::ask(pb, "192.0.2.1", "u@sink.test").await;
    assert_eq!(retry, "action=DUNNO", "the retry passes on the other host");
    b.expect_log("greylist=pass after 1 s");
    let again = crate::policyd::ask(pa, "192.0.2.1", "u@sink.test").await;
    assert_eq!(again, "action=DUNNO", "passed once, passes on every host");
    let other = crate::policyd::ask(pa, "192.0.2.1", "v@sink.test").await;
    assert!(
        other.starts_with("action=DEFER_IF_PERMIT"),
        "a new triplet: {other}"
    );
    let passes = redis.command(&["GET", "t2:gp:192.0.2"]);
    assert_eq!(
        passes.as_deref(),
        Some("1"),
        "the auto-allowlist count is shared"
    );
}

/// Redis down: mail flows (the guard fails open by default, closed when configured, each
/// with an error line), greylisting lets mail pass; back up, counting resumes.
#[tokio::test(flavor = "multi_thread")]
async fn with_redis_down_mail_flows_and_counting_resumes_when_it_is_back() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let sink = Sink::start(Behaviour::default()).await;
    let open = Filterd::start(sink.addr, &config(&redis, "t3:", 100, ""));
    let closed = Filterd::start(
        sink.addr,
        &config(&redis, "t3:", 100, "guard_on_error = \"closed\""),
    );
    assert!(outbound(&open).await.starts_with("250 2.0.0 from MTA"));
    redis.kill();
    for _ in 0..3 {
        let r = outbound(&open).await;
        assert!(r.starts_with("250 2.0.0 from MTA"), "fails open: {r}");
    }
    let r = outbound(&closed).await;
    assert!(
        r.starts_with("250 2.7.0 Ok, discarded"),
        "fails closed: {r}"
    );
    assert_eq!(held(&closed.quarantine_dir()), 1);
    assert_eq!(sink.count(), 4);
    let log = open.log_text();
    assert_eq!(
        log.matches("outbound guard cannot count: outbound mail passes uncounted")
            .count(),
        1,
        "one error line a minute:\n{log}"
    );
    assert!(
        log.contains("shared state store (redis) unavailable"),
        "{log}"
    );
    closed.expect_log("outbound guard cannot count: outbound mail is held");
    // Greylisting passes while its store is down.
    let policy = open.policy.expect("policy");
    let grey = crate::policyd::ask(policy, "192.0.2.9", "w@sink.test").await;
    assert_eq!(grey, "action=DUNNO");
    open.expect_log("greylist=store-unavailable");
    // Back: after the backoff (1 s, then 2 s) the next message is counted again.
    redis.restart();
    let key = "t3:rl:default/sender/user@example.org";
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while redis
        .command(&["HGET", key, "n"])
        .unwrap_or_default()
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "{}", open.log_text());
        assert!(outbound(&open).await.starts_with("250 2.0.0 from MTA"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    open.expect_log("shared state store (redis) reachable again");
}

/// `filtertrain` with a host's configuration, as an admin runs it; (status, stdout).
fn filtertrain(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_filtertrain"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run filtertrain");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() || !err.is_empty(), "{text}");
    (out.status.success(), format!("{text}{err}"))
}

/// The X-Spam-Status header of the last message the sink received.
fn last_status(sink: &Sink) -> String {
    let got = sink.received();
    let data = got.last().map(|r| r.data.clone()).unwrap_or_default();
    let text = String::from_utf8_lossy(&data).into_owned();
    let start = text.find("X-Spam-Status:").unwrap_or(0);
    let end = text[start..]
        .find("\r\nX-")
        .map_or(text.len(), |e| start + e);
    text[start..end].replace("\r\n\t", " ")
}

async fn send(f: &Filterd, message: &str) -> String {
    let (mut c, _) = Client::connect(f.addr()).await;
    c.send_message(
        "alice@example.org",
        &["bob@example.net"],
        message.as_bytes(),
    )
    .await
}

/// Bayes in Redis: `filtertrain` on one host's configuration changes the verdicts of both;
/// backups move the store between Redis and the file format losslessly; Redis down, Bayes
/// abstains with a hit that says so and mail flows.
#[tokio::test(flavor = "multi_thread")]
async fn filtertrain_into_redis_changes_the_verdicts_of_every_host() {
    use crate::train::{folder, synthetic};
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let sink = Sink::start(Behaviour::default()).await;
    let cfg = format!(
        "[model]\nenabled = false\n[auth]\nenabled = false\n\
         [shared]\nredis_url = \"{}\"\nbayes = \"redis\"\nkey_prefix = \"t4:\"\n\
         [bayes]\nmin_spam = 3\nmin_ham = 3\nstate_dir = \"/nonexistent/never-used\"\n",
        redis.url()
    );
    let a = Filterd::start(sink.addr, &cfg);
    let b = Filterd::start(sink.addr, &cfg);
    let spam = synthetic(100, true);
    assert!(send(&a, &spam).await.starts_with("250"));
    let before = last_status(&sink);
    assert!(!before.contains("BAYES_"), "nothing learned yet: {before}");
    let corpus = tempfile::tempdir().unwrap();
    let s = folder(corpus.path(), "spam", true, 0..6);
    let h = folder(corpus.path(), "ham", false, 0..6);
    let conf = a.dir.path().join("filterd.toml");
    let conf = conf.to_str().unwrap();
    let (ok, out) = filtertrain(&["--config", conf, "--spam", s.to_str().unwrap()]);
    assert!(
        ok && out.contains("Learned tokens from 6 message(s)"),
        "{out}"
    );
    let (ok, out) = filtertrain(&["--config", conf, "--ham", h.to_str().unwrap()]);
    assert!(
        ok && out.contains("Learned tokens from 6 message(s)"),
        "{out}"
    );
    let (_, again) = filtertrain(&["--config", conf, "--ham", h.to_str().unwrap()]);
    assert!(
        again.contains("Learned tokens from 0 message(s)"),
        "seen: {again}"
    );
    for host in [&a, &b] {
        assert!(send(host, &spam).await.starts_with("250"));
        let status = last_status(&sink);
        assert!(status.contains("BAYES_99"), "{status}");
        assert!(send(host, &synthetic(100, false)).await.starts_with("250"));
        let status = last_status(&sink);
        assert!(status.contains("BAYES_00"), "{status}");
    }
    assert_eq!(
        redis.command(&["HGET", "t4:bayes", "spam"]).as_deref(),
        Some("6")
    );
    // Backups: Redis -> file store -> the same text; the text back into Redis.
    let (ok, backup) = filtertrain(&["--config", conf, "--backup"]);
    assert!(
        ok && backup.contains("num_spam") && backup.lines().count() > 20,
        "{backup}"
    );
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("backup.txt");
    std::fs::write(&file, &backup).unwrap();
    let db = work.path().join("db");
    std::fs::create_dir_all(&db).unwrap();
    let (db, file) = (db.to_str().unwrap(), file.to_str().unwrap());
    let (ok, out) = filtertrain(&["--dbpath", db, "--restore", file]);
    assert!(ok, "{out}");
    assert_eq!(
        filtertrain(&["--dbpath", db, "--backup"]).1,
        backup,
        "file store"
    );
    let url = redis.url();
    let (ok, out) = filtertrain(&["--dbpath", &url, "--restore", file]);
    assert!(ok && out.contains("Restored"), "{out}");
    assert_eq!(
        filtertrain(&["--dbpath", &url, "--backup"]).1,
        backup,
        "redis, other prefix"
    );
    // Down: Bayes abstains, with a hit that says so.
    redis.kill();
    assert!(send(&b, &spam).await.starts_with("250 2.0.0 from MTA"));
    let status = last_status(&sink);
    assert!(
        status.contains("BAYES_UNAVAILABLE") && !status.contains("BAYES_99"),
        "{status}"
    );
    let (ok, out) = filtertrain(&["--config", conf, "--spam", s.to_str().unwrap()]);
    assert!(!ok && out.contains("redis"), "a clear error: {out}");
}

/// Autolearn into the Redis Bayes store: a clear spam is written within seconds; while
/// Redis is down the next 60 stay queued (one error line) and are written once it is back,
/// in round trips of 50.
#[tokio::test(flavor = "multi_thread")]
async fn autolearn_writes_into_redis_and_keeps_the_queue_while_it_is_down() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start(
        sink.addr,
        &format!(
            "[model]\nenabled = false\n[auth]\nenabled = false\n\
             [shared]\nredis_url = \"{}\"\nbayes = \"redis\"\nkey_prefix = \"t5:\"\n\
             [bayes]\nautolearn = true\nstate_dir = \"/nonexistent/never-used\"\n",
            redis.url()
        ),
    );
    let spam = |subject: &str| {
        String::from_utf8(crate::util::gtube())
            .unwrap()
            .replace("Subject: test", &format!("Subject: {subject}"))
    };
    let learned = |redis: &Redis| {
        redis
            .command(&["HGET", "t5:bayes", "spam"])
            .unwrap_or_default()
    };
    assert!(send(&f, &spam("one")).await.starts_with("250 2.7.0"));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while learned(&redis) != "1" {
        assert!(std::time::Instant::now() < deadline, "{}", f.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f.expect_log("autolearned 1 message(s) into the Bayes store in Redis");
    redis.kill();
    // More than one round trip's worth (50) queues up while Redis is down.
    for i in 0..60 {
        let r = send(&f, &spam(&format!("two {i}"))).await;
        assert!(r.starts_with("250 2.7.0"), "{r}");
    }
    f.expect_log("autolearned messages not written to Redis, kept queued");
    // Back, empty: the queued messages are written, though no new mail came.
    redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    while learned(&redis) != "60" {
        assert!(std::time::Instant::now() < deadline, "{}", f.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(redis.command(&["HLEN", "t5:bseen"]).as_deref(), Some("60"));
    f.expect_log("autolearned messages written to Redis again");
    assert_eq!(
        f.log_text()
            .matches("autolearned messages not written to Redis")
            .count(),
        1,
        "one error line while it is down"
    );
}
