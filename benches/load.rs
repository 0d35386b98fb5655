//! The end-to-end load bench: N concurrent SMTP sessions push messages through a real
//! filterd process (the release binary) into a loopback sink, and the same load generator
//! pushes the same messages straight into the same sink as the baseline, in the same run.
//! Prints messages/s, p50/p99 latency per message (and what filterd adds), and filterd's
//! peak RSS.
//!
//! `cargo bench --bench load` (defaults: 16 sessions, 5 KB messages, 8 s per phase);
//! `LOAD_SESSIONS`, `LOAD_SECONDS`, `LOAD_SIZE` change them. `LOAD_COMPARE=/path/to/filterd`
//! runs the header-checks and model phases with that binary too, back to back with this
//! build's (A B A B, same sink, same generator), to compare two versions in one run.

#[path = "../tests/integration/util/sink.rs"]
mod sink;

use sink::{Behaviour, Sink};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn message(size: usize) -> Vec<u8> {
    let mut m = String::from(
        "Received: from mail.example.org (mail.example.org [192.0.2.10])\r\n\
\tby mx.example.net (Postfix) with ESMTP id 4Xyz1; Mon, 23 Nov 2026 10:00:05 +0000\r\n\
From: Alice Example <alice@example.org>\r\nTo: Bob <bob@example.net>\r\n\
Subject: Re: quarterly planning notes\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <20261123100000.1234@example.org>\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\n",
    );
    while m.len() < size {
        m.push_str("The quarterly planning meeting moved to Thursday; bring the figures.\r\n");
    }
    m.push_str(".\r\n");
    m.into_bytes()
}

/// The same message with the GTUBE string in the body: blocked, and with the default
/// destiny (discard + quarantine) written to the quarantine and fsynced before each 250.
fn spam_message(size: usize) -> Vec<u8> {
    let mut m = message(size);
    let at = m.len() - 3;
    m.splice(
        at..at,
        b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"
            .iter()
            .copied(),
    );
    m
}

async fn read_reply(r: &mut BufReader<TcpStream>, line: &mut String) -> std::io::Result<u16> {
    loop {
        line.clear();
        if r.read_line(line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0));
        }
    }
}

/// One session sending messages until the deadline, Postfix-style (MAIL, RCPT and DATA
/// pipelined). Returns the latency of each message, from MAIL to the final reply.
async fn session(
    addr: SocketAddr,
    msg: std::sync::Arc<Vec<u8>>,
    until: Instant,
) -> std::io::Result<Vec<Duration>> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let mut lat = Vec::new();
    read_reply(&mut r, &mut line).await?;
    r.get_mut().write_all(b"EHLO load.test\r\n").await?;
    read_reply(&mut r, &mut line).await?;
    while Instant::now() < until {
        let t = Instant::now();
        r.get_mut()
            .write_all(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n")
            .await?;
        let codes = [
            read_reply(&mut r, &mut line).await?,
            read_reply(&mut r, &mut line).await?,
            read_reply(&mut r, &mut line).await?,
        ];
        if codes != [250, 250, 354] {
            return Err(std::io::Error::other(format!(
                "unexpected replies {codes:?}: {line}"
            )));
        }
        r.get_mut().write_all(&msg).await?;
        let code = read_reply(&mut r, &mut line).await?;
        if code != 250 {
            return Err(std::io::Error::other(format!("message refused: {line}")));
        }
        lat.push(t.elapsed());
    }
    r.get_mut().write_all(b"QUIT\r\n").await?;
    Ok(lat)
}

struct Phase {
    rate: f64,
    p50: Duration,
    p99: Duration,
    n: usize,
}

async fn run_phase(
    addr: SocketAddr,
    sessions: usize,
    secs: u64,
    msg: &std::sync::Arc<Vec<u8>>,
) -> Phase {
    // Warm up briefly so connection setup and caches do not count.
    let warm = Instant::now() + Duration::from_millis(500);
    let _ = futures_join(addr, sessions, msg, warm).await;
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let mut lat = futures_join(addr, sessions, msg, until).await;
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Phase {
        rate: lat.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        n: lat.len(),
    }
}

async fn futures_join(
    addr: SocketAddr,
    sessions: usize,
    msg: &std::sync::Arc<Vec<u8>>,
    until: Instant,
) -> Vec<Duration> {
    let tasks: Vec<_> = (0..sessions)
        .map(|_| tokio::spawn(session(addr, msg.clone(), until)))
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(l)) => all.extend(l),
            Ok(Err(e)) => panic!("load session failed: {e}"),
            Err(e) => panic!("load task panicked: {e}"),
        }
    }
    all
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// This build's filterd release binary relaying to `next_hop`, with its listen address.
async fn spawn_filterd(
    dir: &std::path::Path,
    next_hop: SocketAddr,
    model: bool,
) -> (std::process::Child, SocketAddr) {
    spawn_binary(env!("CARGO_BIN_EXE_filterd"), dir, next_hop, model).await
}

/// A filterd binary relaying to `next_hop`, with its listen address.
async fn spawn_binary(
    binary: &str,
    dir: &std::path::Path,
    next_hop: SocketAddr,
    model: bool,
) -> (std::process::Child, SocketAddr) {
    let port = free_port();
    let cfg = dir.join(format!("filterd-{port}.toml"));
    std::fs::write(
        &cfg,
        format!("[server]\nlisten = [\"127.0.0.1:{port}\"]\nmax_connections = 256\n[next_hop]\naddress = \"{next_hop}\"\n[log]\nlevel = \"warn\"\n[bayes]\nenabled = false\n[model]\nenabled = {model}\n[auth]\nenabled = false\n[quarantine]\ndir = \"{}\"\n", dir.join("quarantine").display()),
    )
    .expect("config");
    let child = Command::new(binary)
        .arg("--config")
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn filterd");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    wait_listening(addr).await;
    (child, addr)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

async fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "{addr} never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Postfix's own load tools, the reference the team quotes: `smtp-source` into `smtp-sink`
/// directly, and through filterd. Returns messages/s for each, with and without `-d`
/// (connection reuse). Skipped when Postfix's tools are not installed.
async fn postfix_tools(
    dir: &std::path::Path,
    sessions: usize,
    size: usize,
    count: u64,
) -> Option<Vec<(String, f64, f64, Option<u64>)>> {
    let (source, sink_bin) = ("/usr/sbin/smtp-source", "/usr/sbin/smtp-sink");
    if !std::path::Path::new(source).exists() || !std::path::Path::new(sink_bin).exists() {
        println!(
            "smtp-source/smtp-sink not installed (apt-get install postfix): Postfix-tools phase skipped"
        );
        return None;
    }
    let sink_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().ok()?;
    let mut sink = Command::new(sink_bin)
        .args(["-u", "nobody", &sink_addr.to_string(), "256"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .ok()?;
    wait_listening(sink_addr).await;
    let (mut filterd, faddr) = spawn_filterd(dir, sink_addr, true).await;
    let run = |target: SocketAddr, reuse: bool| {
        let mut cmd = Command::new(source);
        if reuse {
            cmd.arg("-d");
        }
        cmd.args([
            "-s",
            &sessions.to_string(),
            "-l",
            &size.to_string(),
            "-m",
            &count.to_string(),
        ])
        .args([
            "-f",
            "alice@example.org",
            "-t",
            "bob@example.net",
            &target.to_string(),
        ])
        .stdout(Stdio::null());
        let t = Instant::now();
        let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "smtp-source failed against {target}");
        count as f64 / t.elapsed().as_secs_f64()
    };
    let mut rows = vec![];
    for reuse in [false, true] {
        let base = run(sink_addr, reuse);
        let through = run(faddr, reuse);
        let label = if reuse {
            "smtp-source -d (reuse)"
        } else {
            "smtp-source (conn/msg)"
        };
        rows.push((label.to_string(), base, through, None));
    }
    if let Some(last) = rows.last_mut() {
        last.3 = peak_rss_kib(filterd.id());
    }
    let _ = filterd.kill();
    let _ = filterd.wait();
    let _ = sink.kill();
    let _ = sink.wait();
    Some(rows)
}

/// This build against `other`: the header-checks and the model phase, each binary twice in
/// the order A B A B, printed as rates and as the ratio of this build to the other.
async fn compare(
    other: &str,
    dir: &std::path::Path,
    sink: SocketAddr,
    sessions: usize,
    secs: u64,
    msg: &std::sync::Arc<Vec<u8>>,
) {
    let this = env!("CARGO_BIN_EXE_filterd");
    println!();
    println!("Comparison, back to back: this build = {this}, other = {other}");
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>12} {:>8}",
        "phase", "this #1", "other #1", "this #2", "other #2", "ratio"
    );
    for (label, model) in [
        ("filterd, header checks", false),
        ("filterd, headers + model", true),
    ] {
        let mut rates = vec![];
        for binary in [this, other, this, other] {
            let (mut child, addr) = spawn_binary(binary, dir, sink, model).await;
            rates.push(run_phase(addr, sessions, secs, msg).await.rate);
            let _ = child.kill();
            let _ = child.wait();
        }
        let ratio = (rates[0] + rates[2]) / (rates[1] + rates[3]);
        println!(
            "{label:<28} {:>12.0} {:>12.0} {:>12.0} {:>12.0} {:>7.3}x",
            rates[0], rates[1], rates[2], rates[3], ratio
        );
    }
}

fn main() {
    // `cargo test --benches` runs benches without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let sessions = env_or("LOAD_SESSIONS", 16) as usize;
    let secs = env_or("LOAD_SECONDS", 8);
    let size = env_or("LOAD_SIZE", 5000) as usize;
    let count = env_or("LOAD_COUNT", 20000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = Sink::start(Behaviour { discard: true, ..Behaviour::default() }).await;
        let msg = std::sync::Arc::new(message(size));
        let base = run_phase(sink.addr, sessions, secs, &msg).await;
        let (mut child, filterd) = spawn_filterd(dir.path(), sink.addr, false).await;
        let through = run_phase(filterd, sessions, secs, &msg).await;
        let rss = peak_rss_kib(child.id());
        let spam = std::sync::Arc::new(spam_message(size));
        let quarantined = run_phase(filterd, sessions, secs, &spam).await;
        let rss_quarantine = peak_rss_kib(child.id());
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(dir.path().join("quarantine"));
        let (mut child, filterd) = spawn_filterd(dir.path(), sink.addr, true).await;
        let with_model = run_phase(filterd, sessions, secs, &msg).await;
        let rss_model = peak_rss_kib(child.id());
        let _ = child.kill();
        let _ = child.wait();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mb = |k: Option<u64>| k.map_or("unknown".into(), |k| format!("{:.1} MB", k as f64 / 1024.0));
        println!("load: {sessions} sessions, {} byte messages, {secs} s per phase (Rust generator, pipelined like Postfix)", msg.len() - 3);
        println!("{:<28} {:>10} {:>9} {:>9} {:>8}", "path", "msg/s", "p50 ms", "p99 ms", "msgs");
        println!("{:<28} {:>10.0} {:>9.3} {:>9.3} {:>8}", "generator -> sink", base.rate, ms(base.p50), ms(base.p99), base.n);
        for (label, ph, rss) in [
            ("filterd, header checks", &through, rss),
            ("spam, discard + quarantine", &quarantined, rss_quarantine),
            ("filterd, headers + model", &with_model, rss_model),
        ] {
            println!("{label:<28} {:>10.0} {:>9.3} {:>9.3} {:>8}", ph.rate, ms(ph.p50), ms(ph.p99), ph.n);
            println!(
                "  keeps {:.0}% of the baseline rate; adds p50 {:.3} ms, p99 {:.3} ms; peak RSS {}",
                100.0 * ph.rate / base.rate,
                ms(ph.p50) - ms(base.p50),
                ms(ph.p99) - ms(base.p99),
                mb(rss)
            );
        }
        if let Ok(other) = std::env::var("LOAD_COMPARE") {
            compare(&other, dir.path(), sink.addr, sessions, secs, &msg).await;
        }
        if let Some(rows) = postfix_tools(dir.path(), sessions, size, count).await {
            println!();
            println!("Postfix tools: {sessions} sessions, {size} byte payloads, {count} messages per run, filterd with the model");
            println!("{:<26} {:>14} {:>16} {:>7}", "load", "sink msg/s", "filterd msg/s", "kept");
            for (label, base, through, _) in &rows {
                println!("{label:<26} {base:>14.0} {through:>16.0} {:>6.0}%", 100.0 * through / base);
            }
            println!("filterd peak RSS after both runs: {}", mb(rows.last().and_then(|r| r.3)));
        }
    });
}
