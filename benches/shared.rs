//! The shared stores under load: filterd with its embedded stores against filterd with the
//! guard's counters and the Bayes store in Redis and the quarantine in PostgreSQL (a real
//! redis-server and PostgreSQL cluster started here, on loopback ports), then one host
//! against three sharing them. The same Rust load generator as `load` (16 sessions, 5 KB
//! messages, MAIL/RCPT/DATA pipelined) into the same sink, in one run.
//!
//! The load is outbound mail of a client of ours (so the guard counts every message) and
//! the Bayes store votes (learned from the corpus, or generated mail without it; the same
//! store restored into Redis), so each message costs Redis its two round trips.
//!
//! `cargo bench --bench shared`; `LOAD_SESSIONS`, `LOAD_SECONDS`, `LOAD_SIZE` as in `load`.

#[path = "../tests/integration/util/sink.rs"]
mod sink;

#[path = "../tests/integration/util/redis.rs"]
#[allow(dead_code)]
mod redis;

#[path = "../tests/integration/util/pg.rs"]
#[allow(dead_code)]
mod pg;

#[path = "common/generator.rs"]
mod generator;

use generator::{
    Phase, env_or, free_port, message, run_spread, spam_message, trained_store, wait_listening,
};
use sink::{Behaviour, Sink};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One filterd process: its SMTP and metrics addresses.
struct Host {
    child: Child,
    smtp: SocketAddr,
    metrics: SocketAddr,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn host(dir: &Path, sink: SocketAddr, store: &Path, shared: &str) -> Host {
    let (port, mport) = (free_port(), free_port());
    let cfg = dir.join(format!("filterd-{port}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nmax_connections = 256\n\
             [next_hop]\naddress = \"{sink}\"\n[log]\nlevel = \"warn\"\n[model]\nenabled = false\n\
             [auth]\nenabled = false\n[bayes]\nstate_dir = \"{}\"\n[quarantine]\ndir = \"{}\"\n\
             [metrics]\nlisten = \"127.0.0.1:{mport}\"\n\
             [local_domains]\npostconf = false\ndomains = [\"example.com\"]\n\
             [ratelimit]\nmessages = 1000000000\n{shared}",
            store.display(),
            dir.join(format!("quarantine-{port}")).display()
        ),
    )
    .expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_filterd"))
        .arg("--config")
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn filterd");
    let smtp: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    wait_listening(smtp).await;
    let metrics = format!("127.0.0.1:{mport}").parse().expect("addr");
    Host {
        child,
        smtp,
        metrics,
    }
}

/// The sum of the series of `name` whose labels contain `labels`, from `/metrics`.
async fn metric(addr: SocketAddr, name: &str, labels: &str) -> f64 {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return 0.0;
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text).await;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0
}

/// Redis requests (round trips) per message a host made so far.
async fn round_trips(h: &Host) -> f64 {
    let redis = metric(
        h.metrics,
        "filterd_shared_store_requests_total",
        "store=\"redis\"",
    )
    .await;
    let msgs = metric(h.metrics, "filterd_messages_total", "").await;
    if msgs > 0.0 { redis / msgs } else { 0.0 }
}

fn row(label: &str, p: &Phase, base: &Phase) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label:<40} {:>8.0} {:>8.3} {:>8.3} {:>8.2}x {:>+8.3} {:>+8.3}",
        p.rate,
        ms(p.p50),
        ms(p.p99),
        p.rate / base.rate,
        ms(p.p50) - ms(base.p50),
        ms(p.p99) - ms(base.p99)
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let (Some(redis), Some(pg)) = (redis::Redis::start(), pg::Postgres::start()) else {
        println!("shared: redis-server or PostgreSQL not installed; skipped");
        return;
    };
    let sessions = env_or("LOAD_SESSIONS", 16) as usize;
    let secs = env_or("LOAD_SECONDS", 8);
    let size = env_or("LOAD_SIZE", 5000) as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, learned) = trained_store(dir.path());
    // The same store in Redis.
    let backup = Command::new(env!("CARGO_BIN_EXE_filtertrain"))
        .arg("--dbpath")
        .arg(&store)
        .arg("--backup")
        .output()
        .expect("filtertrain --backup");
    let file = dir.path().join("bayes.backup");
    std::fs::write(&file, &backup.stdout).expect("backup");
    let restored = Command::new(env!("CARGO_BIN_EXE_filtertrain"))
        .args(["--dbpath", &redis.url(), "--restore"])
        .arg(&file)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(restored, "restoring the store into redis");
    let shared = format!(
        "[shared]\nredis_url = \"{}\"\nstate = \"redis\"\nbayes = \"redis\"\n\
         quarantine = \"postgresql\"\npostgresql_url = \"{}\"\n",
        redis.url(),
        pg.url()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let sink = Sink::start(Behaviour {
            discard: true,
            ..Behaviour::default()
        })
        .await;
        let (ham, spam) = (Arc::new(message(size)), Arc::new(spam_message(size)));
        let base = run_spread(&[sink.addr], sessions, secs, &ham).await;
        let embedded = host(dir.path(), sink.addr, &store, "").await;
        let e_ham = run_spread(&[embedded.smtp], sessions, secs, &ham).await;
        let e_spam = run_spread(&[embedded.smtp], sessions, secs, &spam).await;
        drop(embedded);
        let one = host(dir.path(), sink.addr, &store, &shared).await;
        let s_ham = run_spread(&[one.smtp], sessions, secs, &ham).await;
        let trips = round_trips(&one).await;
        let s_spam = run_spread(&[one.smtp], sessions, secs, &spam).await;
        let (two, three) = (
            host(dir.path(), sink.addr, &store, &shared).await,
            host(dir.path(), sink.addr, &store, &shared).await,
        );
        let addrs = [one.smtp, two.smtp, three.smtp];
        let three_ham = run_spread(&addrs, sessions, secs, &ham).await;
        let pg_errors = metric(one.metrics, "filterd_shared_store_requests_total", "result=\"error\"").await;
        println!(
            "shared stores: {sessions} sessions, {size} byte messages, {secs} s per phase; Bayes learned from {learned}"
        );
        println!(
            "{:<40} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8}",
            "phase", "msg/s", "p50 ms", "p99 ms", "rate", "+p50", "+p99"
        );
        row("generator -> sink", &base, &base);
        row("1 host, embedded stores, ham", &e_ham, &base);
        row("1 host, redis (guard + bayes), ham", &s_ham, &e_ham);
        row("1 host, embedded, spam (quarantine dir)", &e_spam, &e_ham);
        row("1 host, redis + postgresql, spam", &s_spam, &e_spam);
        row("3 hosts, redis + postgresql, ham", &three_ham, &s_ham);
        println!(
            "(rate, +p50, +p99 against: the sink; embedded ham; embedded ham; embedded spam; 1 host with redis)"
        );
        println!("redis round trips per message (ham, guard + bayes): {trips:.2}; shared-store errors: {pg_errors}");
    });
}
