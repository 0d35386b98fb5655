//! The virus bench: filterd with clamd on (otherwise its defaults) against amavisd-new asking
//! the same clamd, same messages, same run: every 10th carries a clean ~100 KB zip of random
//! text, the rest are ~5 KB text mails, alice@example.org to bob@example.net, over
//! connections reused with RSET (as Postfix's smtp client caches them), to a loopback sink.
//! Prints msg/s, p50/p99 from the end of DATA to the reply (all and zip messages), that all
//! were accepted and reached the sink, and the ratio filterd/amavisd. First an EICAR-in-a-zip
//! message to each must be held and not delivered: both really ask clamd.
//!
//! `cargo bench --bench virus` (defaults: 2000 messages, 4 connections, 50 warm-up);
//! `VIRUS_COUNT`, `VIRUS_SESSIONS` change them; `VIRUS_SAME_ZIP=1` attaches one zip to all
//! (clamd's cache of clean files then answers repeats). Needs root and Debian's clamd (a
//! private one, EICAR's MD5 its only signature); without amavisd-new, filterd runs alone.

#[path = "../tests/integration/util/sink.rs"]
mod sink;

use sink::{Behaviour, Sink};
use std::io::{Result as IoResult, Write};
use std::net::SocketAddr;
use std::ops::Range;
use std::os::unix::{fs::MetadataExt, fs::PermissionsExt, process::CommandExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, atomic::AtomicUsize, atomic::Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const CLAMD: &str = "/usr/sbin/clamd";
const AMAVISD: [&str; 2] = ["/usr/sbin/amavisd", "/usr/sbin/amavisd-new"];
/// EICAR's test string: every virus scanner reports it, none of it is harmful.
const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
const WARM: usize = 50;
const FILLER: &str = "The quarterly planning meeting moved to Thursday; bring the figures.\r\n";
const INFECTED: &str = "Blocked INFECTED (Eicar-Test-Signature.UNOFFICIAL)";

fn env_or(name: &str, default: u64) -> u64 {
    let v = std::env::var(name);
    v.map_or(default, |v| v.parse().unwrap_or(default))
}

/// A process in its own process group: the group (amavisd's children too) is killed and the
/// process reaped when dropped, also when the bench panics.
struct Guard {
    child: Child,
    logs: Vec<PathBuf>,
}

impl Guard {
    /// Spawns `cmd` with stdout and stderr to `logs[0]`; `log()` shows all of `logs`.
    fn spawn(cmd: &mut Command, logs: &[PathBuf]) -> Guard {
        let out = std::fs::File::create(&logs[0]).expect("log file");
        let err = out.try_clone().expect("log file");
        cmd.process_group(0).stdin(Stdio::null());
        let spawned = cmd.stdout(out).stderr(err).spawn();
        let child = spawned.unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let logs = logs.to_vec();
        Guard { child, logs }
    }

    fn log(&self) -> String {
        let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        self.logs.iter().map(read).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to 60 s for `ready`; panics with the process' log if it exits or times out.
async fn wait_ready<T>(what: &str, g: &mut Guard, ready: impl Fn(&Guard) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = ready(g) {
            return v;
        }
        let alive = matches!(g.child.try_wait(), Ok(None));
        let state = if alive { "running" } else { "exited" };
        if state == "exited" || Instant::now() > deadline {
            let log = g.log();
            panic!("{what} not ready within 60 s ({state}); its log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn version(bin: &str, arg: &str) -> String {
    let out = Command::new(bin).arg(arg).output().map(|o| o.stdout);
    let out = out.unwrap_or_default();
    String::from_utf8_lossy(&out).trim().to_string()
}

fn run_ok(cmd: &mut Command) {
    let ok = cmd.status().is_ok_and(|s| s.success());
    assert!(ok, "{cmd:?} failed");
}

/// A private clamd (started as root, it drops to user clamav) on a unix socket in `dir`,
/// with EICAR's MD5 as its only signature. Returns it and its socket once it accepts.
async fn start_clamd(dir: &Path) -> (Guard, PathBuf) {
    let d = dir.join("clamd");
    std::fs::create_dir_all(d.join("db")).expect("clamd dir");
    let hdb = "44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n";
    std::fs::write(d.join("db/test.hdb"), hdb).expect("test.hdb");
    let (socket, conf) = (d.join("clamd.sock"), d.join("clamd.conf"));
    let (db, log) = (d.join("db"), d.join("clamd.log"));
    let (s, db, l) = (socket.display(), db.display(), log.display());
    let text = format!(
        "LocalSocket {s}\nLocalSocketMode 666\nDatabaseDirectory {db}\nUser clamav\n\
Foreground true\nLogFile {l}\nScanArchive true\nScanMail true\n"
    );
    std::fs::write(&conf, text).expect("clamd.conf");
    // clamd, as user clamav, reads its database and writes its socket and log here.
    run_ok(Command::new("chmod").args(["-R", "a+rwX"]).arg(&d));
    let logs = [d.join("clamd.out"), log];
    let mut g = Guard::spawn(Command::new(CLAMD).arg("-c").arg(&conf), &logs);
    let accepts = |_: &Guard| std::os::unix::net::UnixStream::connect(&socket).ok();
    wait_ready("clamd", &mut g, accepts).await;
    (g, socket)
}

/// filterd on its defaults except where it listens and relays, where its state lives, no
/// sender authentication (no DNS here), example.net local, and clamd on `socket`. Its log
/// goes to a file; its address is the `listen=` of its ready line.
async fn start_filterd(dir: &Path, sink: SocketAddr, socket: &Path) -> (Guard, SocketAddr) {
    let cfg = dir.join("filterd.toml");
    let (state, quar) = (dir.join("state"), dir.join("quarantine"));
    let (state, quar, socket) = (state.display(), quar.display(), socket.display());
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[next_hop]\naddress = \"{sink}\"\n\
[bayes]\nstate_dir = \"{state}\"\n[auth]\nenabled = false\n\
[local_domains]\npostconf = false\ndomains = [\"example.net\"]\n\
[quarantine]\ndir = \"{quar}\"\n[clamd]\naddresses = [\"{socket}\"]\n"
    );
    std::fs::write(&cfg, text).expect("filterd.toml");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_filterd"));
    cmd.arg("--config").arg(&cfg).env_remove("RUST_LOG");
    let mut g = Guard::spawn(&mut cmd, &[dir.join("filterd.log")]);
    let listen = |g: &Guard| {
        let log = g.log();
        let line = log.lines().find(|l| l.contains(" ready"))?;
        let at = line.find("listen=")? + "listen=".len();
        let value = line[at..].split([' ', '\t', ',']).next()?.trim_matches('"');
        value.parse::<SocketAddr>().ok()
    };
    let addr = wait_ready("filterd", &mut g, listen).await;
    (g, addr)
}

/// A complete small amavisd-new config: virus checks only (spam checks bypassed, so no
/// SpamAssassin), clamd asked with CONTSCAN of the decoded parts, mail forwarded to the sink.
fn amavisd_conf(home: &Path, port: u16, load: &Load, socket: &Path) -> String {
    let (home, socket, servers) = (home.display(), socket.display(), load.conns);
    format!(
        r#"use strict;
$ENV{{PATH}} = $path = '/usr/sbin:/sbin:/usr/bin:/bin'; $file = 'file';
$myhostname = 'filter.example.net'; $mydomain = 'example.net';
@local_domains_maps = (['.example.net']);
$daemon_user = 'amavis'; $daemon_group = 'clamav';
$MYHOME = '{home}'; $TEMPBASE = "$MYHOME/tmp"; $db_home = "$MYHOME/db";
$helpers_home = $MYHOME; $QUARANTINEDIR = "$MYHOME/quarantine";
$pid_file = "$MYHOME/amavisd.pid"; $lock_file = "$MYHOME/amavisd.lock";
$enable_db = 0; $enable_zmq = 0; $enable_dkim_verification = 0; $enable_dkim_signing = 0;
$DO_SYSLOG = 0; $LOGFILE = "$MYHOME/amavis.log"; $log_level = 0;
$max_servers = {servers}; $final_virus_destiny = D_DISCARD; @bypass_spam_checks_maps = (1);
$inet_socket_bind = '127.0.0.1'; $inet_socket_port = {port}; @inet_acl = qw(127.0.0.1);
$forward_method = 'smtp:[127.0.0.1]:{}'; $notify_method = $forward_method;
@av_scanners = (['ClamAV-clamd', \&ask_daemon, ["CONTSCAN {{}}\n", '{socket}'],
  qr/\bOK$/m, qr/\bFOUND$/m, qr/^.*?: (?!Infected Archive)(.*) FOUND$/m]);
@av_scanners_backup = (); 1;
"#,
        load.sink.addr.port()
    )
}

/// amavisd-new in the foreground. Started as root, it drops to user amavis, group clamav:
/// its temporary files (0640 in 0750 directories) are then readable by clamd (user clamav).
/// Its config lies in `dir`, root's: amavisd refuses a config in a directory it can write.
async fn start_amavisd(bin: &str, dir: &Path, load: &Load, socket: &Path) -> (Guard, SocketAddr) {
    let home = dir.join("amavis");
    for sub in ["tmp", "db", "quarantine"] {
        std::fs::create_dir_all(home.join(sub)).expect("amavis home");
    }
    let mut chown = Command::new("chown");
    run_ok(chown.args(["-R", "amavis:clamav"]).arg(&home));
    let free = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
    let (port, conf) = (free.expect("free port").port(), dir.join("amavisd.conf"));
    std::fs::write(&conf, amavisd_conf(&home, port, load, socket)).expect("amavisd.conf");
    let logs = [dir.join("amavisd.out"), home.join("amavis.log")];
    let mut cmd = Command::new(bin);
    let mut g = Guard::spawn(cmd.arg("-c").arg(&conf).arg("foreground"), &logs);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let accepts = |_: &Guard| std::net::TcpStream::connect(addr).ok();
    wait_ready("amavisd-new", &mut g, accepts).await;
    (g, addr)
}

/// A zip of ~165 KB pseudo-random lowercase words (xorshift from `seed`): about 100 KB.
fn clean_zip(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut text = Vec::with_capacity(170_000);
    while text.len() < 165_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for k in 0..2 + x % 9 {
            text.push(b'a' + ((x >> (k * 5)) % 26) as u8);
        }
        text.push(if x.is_multiple_of(13) { b'\n' } else { b' ' });
    }
    zip_of("notes.txt", &text)
}

fn zip_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    w.start_file(name, opts).expect("zip member");
    w.write_all(data).expect("zip write");
    w.finish().expect("zip finish").into_inner()
}

/// Message `i` as sent after DATA (ending in `.` CRLF): a ~5 KB text mail, or with `zip` a
/// short text part and the zip attached in base64. No line starts with a dot.
fn message(i: usize, zip: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut m = format!(
        "Received: from mail.example.org (mail.example.org [192.0.2.10])\r\n\
\tby mx.example.net (Postfix) with ESMTP id 4Xyz{i}; Mon, 23 Nov 2026 10:00:05 +0000\r\n\
From: Alice Example <alice@example.org>\r\nTo: Bob <bob@example.net>\r\n\
Subject: planning notes {i}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <{i}.virus-bench@example.org>\r\nMIME-Version: 1.0\r\n"
    );
    let text = |lines| format!("Notes number {i} follow.\r\n{}", FILLER.repeat(lines));
    let Some((name, data)) = zip else {
        m.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\n");
        m.push_str(&text(68));
        return [m.as_bytes(), b".\r\n"].concat();
    };
    m.push_str("Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n");
    m.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\n");
    m.push_str(&text(8));
    m.push_str(&format!(
        "--b1\r\nContent-Type: application/zip; name=\"{name}\"\r\n\
Content-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    ));
    let b64 = <base64ct::Base64 as base64ct::Encoding>::encode_string(data);
    for line in b64.as_bytes().chunks(76) {
        m.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        m.push_str("\r\n");
    }
    m.push_str("--b1--\r\n.\r\n");
    m.into_bytes()
}

/// `n` messages, every 10th (i % 10 == 9) with a clean zip, each its own unless `same`.
fn messages(n: usize, same: bool) -> Vec<Vec<u8>> {
    let shared = clean_zip(0);
    let one = |i: usize| match (i % 10, same) {
        (9, true) => message(i, Some(("notes.zip", &shared))),
        (9, false) => message(i, Some(("notes.zip", &clean_zip(i as u64)))),
        _ => message(i, None),
    };
    (0..n).map(one).collect()
}

/// An SMTP client connection; `used` after its first message (RSET comes first then).
struct Conn {
    s: BufReader<TcpStream>,
    line: String,
    used: bool,
}

impl Conn {
    async fn open(addr: SocketAddr) -> IoResult<Conn> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let (s, line, used) = (BufReader::new(s), String::new(), false);
        let mut c = Conn { s, line, used };
        c.reply().await?;
        c.write(b"EHLO client.example.org\r\n").await?;
        c.reply().await?;
        Ok(c)
    }

    async fn write(&mut self, bytes: &[u8]) -> IoResult<()> {
        self.s.get_mut().write_all(bytes).await
    }

    /// The next reply's code; its last line is in `line`.
    async fn reply(&mut self) -> IoResult<u16> {
        loop {
            self.line.clear();
            if self.s.read_line(&mut self.line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if self.line.as_bytes().get(3) != Some(&b'-') {
                return Ok(self.line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0));
            }
        }
    }

    /// One message, RSET first on a used connection, the commands pipelined. Returns the
    /// final reply's code and the time from the end of DATA to it.
    async fn send(&mut self, msg: &[u8]) -> IoResult<(u16, Duration)> {
        let rset: &[u8] = if self.used { b"RSET\r\n" } else { b"" };
        let cmds = b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n";
        self.write(&[rset, cmds].concat()).await?;
        let mut codes = vec![];
        for _ in 0..3 + usize::from(self.used) {
            codes.push(self.reply().await?);
        }
        self.used = true;
        if codes.last() != Some(&354) || codes.iter().rev().skip(1).any(|&c| c != 250) {
            let msg = format!("replies {codes:?}: {}", self.line.trim_end());
            return Err(std::io::Error::other(msg));
        }
        self.write(msg).await?;
        let t = Instant::now();
        let code = self.reply().await?;
        Ok((code, t.elapsed()))
    }
}

/// A message's index, final reply code, latency, and the reply when it was not 250.
type Sent = (usize, u16, Duration, Option<String>);

/// A timed run: what was sent, messages per second, and how many reached the sink.
struct Measured {
    sent: Vec<Sent>,
    rate: f64,
    sunk: usize,
}

/// p50 and p99 in ms, of all messages or of the zip ones.
fn p50_p99(m: &Measured, zip_only: bool) -> (f64, f64) {
    let pick = m.sent.iter().filter(|s| !zip_only || s.0 % 10 == 9);
    let mut lat: Vec<f64> = pick.map(|s| s.2.as_secs_f64() * 1000.0).collect();
    lat.sort_by(f64::total_cmp);
    let last = lat.len().max(1) - 1;
    let at = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(last))
            .copied()
    };
    (at(0.50).unwrap_or(0.0), at(0.99).unwrap_or(0.0))
}

/// What both targets get: the same sink, messages and number of connections.
struct Load {
    sink: Sink,
    msgs: Arc<Vec<Vec<u8>>>,
    conns: usize,
}

impl Load {
    /// The messages `range` over `conns` parallel connections, each sending the next unsent.
    async fn run(&self, label: &str, addr: SocketAddr, range: Range<usize>) -> Vec<Sent> {
        let (next, end) = (Arc::new(AtomicUsize::new(range.start)), range.end);
        let session = |msgs: Arc<Vec<Vec<u8>>>, next: Arc<AtomicUsize>| async move {
            let (mut c, mut out) = (Conn::open(addr).await?, vec![]);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    c.write(b"QUIT\r\n").await?;
                    return IoResult::Ok(out);
                }
                let (code, lat) = c.send(&msgs[i]).await?;
                let refused = (code != 250).then(|| c.line.trim_end().into());
                out.push((i, code, lat, refused));
            }
        };
        let spawn = |_| tokio::spawn(session(self.msgs.clone(), next.clone()));
        let tasks: Vec<_> = (0..self.conns).map(spawn).collect();
        let mut all = vec![];
        for t in tasks {
            let sent = t.await.expect("session task panicked");
            all.extend(sent.unwrap_or_else(|e| panic!("{label}: SMTP session failed: {e}")));
        }
        all
    }

    /// `WARM` warm-up messages, then the rest timed.
    async fn measure(&self, label: &str, addr: SocketAddr) -> Measured {
        self.run(label, addr, 0..WARM).await;
        let before = self.sink.count();
        let start = Instant::now();
        let sent = self.run(label, addr, WARM..self.msgs.len()).await;
        let rate = sent.len() as f64 / start.elapsed().as_secs_f64();
        let want = before + sent.iter().filter(|s| s.1 == 250).count();
        let sunk = self.sink.wait_for(want, Duration::from_secs(10)).await - before;
        Measured { sent, rate, sunk }
    }

    /// One EICAR-in-a-zip message: it must be accepted (discarded), logged as infected, and
    /// never reach the sink. Returns the line to print.
    async fn sanity(&self, label: &str, addr: SocketAddr, g: &mut Guard) -> String {
        let eicar = message(999_999, Some(("eicar.zip", &zip_of("eicar.com", EICAR))));
        let before = self.sink.count();
        let mut c = Conn::open(addr).await.expect("connect for the EICAR check");
        let (code, _) = c.send(&eicar).await.expect("send the EICAR message");
        let reply = c.line.trim_end().to_string();
        assert_eq!(code, 250, "{label}: EICAR message refused: {reply}");
        let _ = c.write(b"QUIT\r\n").await;
        let logged = |g: &Guard| g.log().contains(INFECTED).then_some(());
        wait_ready(&format!("{label}'s `{INFECTED}` log line"), g, logged).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(self.sink.count(), before, "{label}: EICAR reached the sink");
        format!("{label}: EICAR in a zip -> \"{reply}\", logged `{INFECTED}`, not at the sink")
    }
}

fn print_table(rows: &[(&str, &Measured)]) {
    println!("target         msg/s  p50 ms  p99 ms  zip p50  zip p99  accepted  at sink");
    for (label, m) in rows {
        let (rate, (p50, p99), (z50, z99)) = (m.rate, p50_p99(m, false), p50_p99(m, true));
        let (n, ok) = (m.sent.len(), m.sent.iter().filter(|s| s.1 == 250).count());
        let (of, sunk) = (format!("{ok}/{n}"), m.sunk);
        println!("{label:<12}{rate:>8.1}{p50:>8.2}{p99:>8.2}{z50:>9.2}{z99:>9.2}{of:>10}{sunk:>9}");
        if ok < n || sunk < ok {
            let refused = m.sent.iter().find_map(|s| s.3.as_deref()).unwrap_or("-");
            println!("  NOT all accepted and delivered; first refusal: {refused}");
        }
    }
    if let [(_, f), (_, a)] = rows {
        let rate = f.rate / a.rate;
        let p99 = p50_p99(f, false).1 / p50_p99(a, false).1;
        let zip = p50_p99(f, true).1 / p50_p99(a, true).1;
        let inv = 1.0 / p99;
        println!("ratio filterd/amavisd: msg/s {rate:.2}x, p99 {p99:.3}x, zip p99 {zip:.3}x");
        println!("(amavisd-new's p99 is {inv:.1}x filterd's)");
    }
}

/// The lines saying what runs where.
fn describe(count: usize, conns: usize, same: bool, msgs: &[Vec<u8>], amavisd: Option<&str>) {
    let (zip, with, text) = (clean_zip(9).len(), msgs[9].len(), msgs[0].len());
    let which = ["each its own", "all the same"][usize::from(same)];
    println!("virus: {count} messages, {conns} connections (RSET between), {WARM} warm-up");
    println!("every 10th: {with} bytes with a clean {zip} byte zip ({which}); else {text}");
    let clamd = version(CLAMD, "--version");
    println!("clamd: {clamd}, private (EICAR's MD5 its only signature), for both");
    println!("filterd: defaults (header checks, banned names, shipped model; Bayes store empty:");
    println!("  not voting; auth off); zINSTREAM to clamd if it may have attachments");
    let Some(bin) = amavisd else {
        return println!("skipped: amavisd-new not installed (apt-get install amavisd-new)");
    };
    let amavis = version(bin, "-V");
    println!("amavisd-new: {amavis}, $max_servers = {conns}, no spam checks");
    println!("  (@bypass_spam_checks_maps = (1): SpamAssassin not run); clamd: CONTSCAN of parts");
}

fn main() {
    // `cargo test --benches` runs benches without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // /proc/self is owned by our effective uid.
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root || !Path::new(CLAMD).exists() {
        println!("skipped: needs root and clamd (apt-get install clamav-daemon)");
        return;
    }
    let count = env_or("VIRUS_COUNT", 2000).max(1) as usize;
    let conns = env_or("VIRUS_SESSIONS", 4).max(1) as usize;
    let same = std::env::var("VIRUS_SAME_ZIP").is_ok_and(|v| v == "1");
    let amavisd = AMAVISD.into_iter().find(|p| Path::new(p).exists());
    let msgs = Arc::new(messages(WARM + count, same));
    describe(count, conns, same, &msgs, amavisd);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        // amavis (user amavis) and clamd (user clamav) reach their directories inside.
        let perms = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(dir.path(), perms).expect("chmod tempdir");
        let quiet = Behaviour {
            discard: true,
            ..Behaviour::default()
        };
        let sink = Sink::start(quiet).await;
        let (_clamd, socket) = start_clamd(dir.path()).await;
        let load = Load { sink, msgs, conns };
        let (mut filterd, addr) = start_filterd(dir.path(), load.sink.addr, &socket).await;
        println!("{}", load.sanity("filterd", addr, &mut filterd).await);
        let f = load.measure("filterd", addr).await;
        drop(filterd);
        let Some(bin) = amavisd else {
            return print_table(&[("filterd", &f)]);
        };
        let (mut amavis, addr) = start_amavisd(bin, dir.path(), &load, &socket).await;
        println!("{}", load.sanity("amavisd-new", addr, &mut amavis).await);
        let a = load.measure("amavisd-new", addr).await;
        drop(amavis);
        print_table(&[("filterd", &f), ("amavisd-new", &a)]);
    });
}
