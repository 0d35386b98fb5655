//! The quarantine in a real PostgreSQL (its own cluster in a temporary directory, on a
//! loopback port): written by one filterd host, seen and released by `filterq` with another
//! host's configuration, and what happens while the database is down.

use crate::util::pg::Postgres;
use crate::util::sink::{Behaviour, Sink};
use crate::util::{Client, Filterd, gtube, ham};
use std::process::Command;
use std::time::Duration;

/// Host `hostname` relaying to `sink`, its quarantine in `pg`.
fn host(pg: &Postgres, hostname: &str, sink: std::net::SocketAddr) -> Filterd {
    Filterd::start_with(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nhostname = \"{hostname}\"\n\
         [next_hop]\naddress = \"{sink}\"\n[model]\nenabled = false\n[auth]\nenabled = false\n\
         [shared]\nquarantine = \"postgresql\"\npostgresql_url = \"{}\"\npostgresql_timeout_ms = 2000\n",
        pg.url()
    ))
}

/// filterq with a host's configuration.
fn run_filterq(f: &Filterd, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_filterq"))
        .arg("--config")
        .arg(f.dir.path().join("filterd.toml"))
        .args(args)
        .output()
        .expect("run filterq")
}

/// stdout + stderr.
fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// filterq with a host's configuration; (success, stdout + stderr).
fn filterq(f: &Filterd, args: &[&str]) -> (bool, String) {
    let out = run_filterq(f, args);
    (out.status.success(), text(&out))
}

async fn send(f: &Filterd, message: &[u8]) -> String {
    let (mut c, _) = Client::connect(f.addr()).await;
    c.send_message("a@example.org", &["bob@example.net"], message)
        .await
}

/// The quarantine id in `250 2.7.0 Ok, discarded, id=..., quarantined as ID`.
fn held_id(reply: &str) -> String {
    let id = reply.rsplit("quarantined as ").next().unwrap_or("").trim();
    assert_eq!(id.len(), 12, "{reply}");
    id.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn held_by_one_host_released_from_another_exactly_once() {
    let Some(pg) = Postgres::start() else { return };
    let sink = Sink::start(Behaviour::default()).await;
    let a = host(&pg, "filter-a.test", sink.addr);
    let b = host(&pg, "filter-b.test", sink.addr);
    let reply = send(&a, &gtube()).await;
    assert!(
        reply.starts_with("250 2.7.0 Ok, discarded"),
        "{reply}\n{}",
        a.log_text()
    );
    let id = held_id(&reply);
    assert_eq!(sink.count(), 0);
    // In the database, with the host that wrote it and the bytes as received.
    let row = pg.sql(&format!(
        "SELECT host, reason, size, array_to_string(recipients, ',') FROM filterd_quarantine WHERE id = '{id}'"
    ));
    assert_eq!(
        row,
        format!("filter-a.test|spam|{}|bob@example.net", gtube().len())
    );
    assert_eq!(pg.sql("SELECT version FROM filterd_schema"), "1");
    // filterq with the other host's configuration sees it and releases it, once.
    let (ok, list) = filterq(&b, &["list"]);
    assert!(ok && list.contains(&id) && list.contains("spam"), "{list}");
    let (ok, cat) = filterq(&b, &["cat", &id]);
    assert!(ok && cat.as_bytes() == gtube().as_slice(), "{cat}");
    let (ok, out) = filterq(&b, &["release", &id]);
    assert!(ok && out.contains(&format!("released {id}")), "{out}");
    assert_eq!(sink.wait_for(1, Duration::from_secs(10)).await, 1);
    let (ok, again) = filterq(&a, &["release", &id]);
    assert!(!ok && again.contains("already released"), "{again}");
    assert_eq!(sink.count(), 1, "exactly once");
    let delivered = String::from_utf8_lossy(&sink.received()[0].data).into_owned();
    assert!(
        delivered.contains(&format!("X-Quarantine-ID: <{id}>")),
        "{delivered}"
    );
    let (ok, stats) = filterq(&a, &["stats"]);
    assert!(ok && stats.contains("released:  1"), "{stats}");
    let (ok, out) = filterq(&a, &["delete", &id]);
    assert!(ok, "{out}");
    assert_eq!(pg.sql("SELECT count(*) FROM filterd_quarantine"), "0");
    let (ok, out) = filterq(&b, &["show", &id]);
    assert!(!ok && out.contains("no quarantined message"), "{out}");
}

/// Two `filterq release` of the same message at once, from two hosts: the row lock lets one
/// deliver; the other is told the message is being released, and a third, later one that it
/// was released. The next hop receives it once.
#[tokio::test(flavor = "multi_thread")]
async fn two_releases_at_once_from_two_hosts_deliver_once() {
    let Some(pg) = Postgres::start() else { return };
    // A slow next hop: the first release is still delivering when the second starts.
    let sink = Sink::start(Behaviour {
        data_delay: Some(Duration::from_millis(2500)),
        ..Default::default()
    })
    .await;
    let a = host(&pg, "filter-a.test", sink.addr);
    let b = host(&pg, "filter-b.test", sink.addr);
    let id = held_id(&send(&a, &gtube()).await);
    let release = |f: &Filterd| run_filterq(f, &["release", &id]);
    let (first, second) = std::thread::scope(|s| {
        let first = s.spawn(|| release(&a));
        std::thread::sleep(Duration::from_millis(800));
        let second = s.spawn(|| release(&b));
        (first.join(), second.join())
    });
    let (first, second) = (first.expect("thread"), second.expect("thread"));
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(second.status.code(), Some(75), "{}", text(&second));
    assert!(
        text(&second).contains("being released by another filterq"),
        "{}",
        text(&second)
    );
    let (ok, again) = filterq(&b, &["release", &id]);
    assert!(!ok && again.contains("already released"), "{again}");
    assert_eq!(sink.wait_for(1, Duration::from_secs(5)).await, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.count(), 1, "delivered exactly once");
    let (ok, stats) = filterq(&a, &["stats"]);
    assert!(ok && stats.contains("released:  1"), "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_postgresql_down_held_mail_gets_451_and_other_mail_flows() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    let sink = Sink::start(Behaviour::default()).await;
    let f = host(&pg, "filter-a.test", sink.addr);
    assert!(
        send(&f, &gtube())
            .await
            .starts_with("250 2.7.0 Ok, discarded")
    );
    pg.kill();
    let r = send(&f, &gtube()).await;
    assert!(r.starts_with("451 4.3.0 Quarantine unavailable"), "{r}");
    let r = send(&f, &ham()).await;
    assert!(r.starts_with("250 2.0.0 from MTA"), "other mail flows: {r}");
    assert_eq!(sink.count(), 1);
    let (ok, out) = filterq(&f, &["list"]);
    assert!(!ok && out.contains("postgresql"), "a clear error: {out}");
    // Back: the next held message is written again (after the reconnect pause).
    pg.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = send(&f, &gtube()).await;
        if r.starts_with("250 2.7.0 Ok, discarded") {
            break;
        }
        assert!(r.starts_with("451"), "{r}");
        assert!(std::time::Instant::now() < deadline, "{}", f.log_text());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(pg.sql("SELECT count(*) FROM filterd_quarantine"), "2");
}

/// A database that is down when filterd starts does not stop it: it starts, says so, and
/// answers 451 for what it must hold.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_down_at_start_is_an_error_line_not_a_refusal() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    pg.kill();
    let sink = Sink::start(Behaviour::default()).await;
    let f = host(&pg, "filter-a.test", sink.addr);
    f.expect_log("quarantine database unavailable at start");
    let r = send(&f, &gtube()).await;
    assert!(r.starts_with("451 4.3.0"), "{r}");
    let out = Command::new(crate::util::filterd_binary())
        .arg("--check-config")
        .arg("--config")
        .arg(f.dir.path().join("filterd.toml"))
        .output()
        .expect("check-config");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("quarantine: postgresql"),
        "{err}"
    );
}

/// Retention runs on one host at a time: while another session holds the retention lock,
/// a host's round removes nothing; afterwards age and size limits apply.
#[test]
fn retention_takes_the_cluster_wide_lock_and_applies_age_and_size() {
    use filterd::action::quarantine::{Entry, PgQuarantine, Quarantine};
    let Some(pg) = Postgres::start() else { return };
    let q = Quarantine::postgres(
        PgQuarantine::new(&pg.url(), "filter-a.test", Duration::from_secs(5)).unwrap(),
    );
    q.prepare().unwrap();
    let now = filterd::clock::now_unix();
    let entry = |id: &str, age_days: u64, size: u64| Entry {
        id: id.into(),
        time: now - age_days * 86_400,
        policy: "default".into(),
        reason: "spam".into(),
        finding: None,
        score: Some(9.0),
        hits: vec![],
        client_ip: None,
        helo: String::new(),
        queue_id: None,
        sender: "a@example.org".into(),
        recipients: vec!["b@example.net".into()],
        body: None,
        smtputf8: false,
        dsn: Default::default(),
        message_id: None,
        subject: None,
        size,
        released: vec![],
    };
    for (id, age, size) in [
        ("AAAAAAAAAAA1", 40, 100),
        ("AAAAAAAAAAA2", 3, 300),
        ("AAAAAAAAAAA3", 2, 300),
        ("AAAAAAAAAAA4", 1, 300),
    ] {
        q.put(&entry(id, age, size), &vec![b'x'; size as usize])
            .unwrap();
    }
    // Another host's retention round in progress: this one skips.
    let mut holder = Command::new("psql")
        .args(["-X", "-q", "-d", &pg.url(), "-c"])
        .arg("SELECT pg_advisory_lock(112602977140738); SELECT pg_sleep(2);")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pg.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") != "1" {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was never taken"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let month = Some(Duration::from_secs(30 * 86_400));
    let skipped = q
        .enforce(std::time::SystemTime::now(), month, Some(700))
        .unwrap();
    assert_eq!((skipped.entries, skipped.bytes), (0, 0));
    let _ = holder.wait();
    // psql exits as soon as it has sent Terminate; the server releases the session's lock
    // a moment later.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pg.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") != "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was never released"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let done = q
        .enforce(std::time::SystemTime::now(), month, Some(700))
        .unwrap();
    // The 40-day-old one by age, then the oldest of the rest until 700 bytes are left.
    assert_eq!((done.entries, done.bytes), (2, 400));
    let left: Vec<String> = q
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.unwrap().id)
        .collect();
    assert_eq!(left, ["AAAAAAAAAAA3", "AAAAAAAAAAA4"]);
}
