//! What the load benches share: the message generator, a Postfix-style SMTP session that
//! measures each message's latency, the phase runner, a trained Bayes store.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A `name` environment variable as a number, else `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An ordinary message of about `size` bytes, dot-terminated.
pub fn message(size: usize) -> Vec<u8> {
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
pub fn spam_message(size: usize) -> Vec<u8> {
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

pub async fn read_reply(r: &mut BufReader<TcpStream>, line: &mut String) -> std::io::Result<u16> {
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
pub async fn session(
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

pub struct Phase {
    pub rate: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub n: usize,
}

pub async fn run_phase(
    addr: SocketAddr,
    sessions: usize,
    secs: u64,
    msg: &std::sync::Arc<Vec<u8>>,
) -> Phase {
    run_spread(&[addr], sessions, secs, msg).await
}

/// [`run_phase`] with the sessions spread over `addrs` in turn (several filterd hosts).
pub async fn run_spread(
    addrs: &[SocketAddr],
    sessions: usize,
    secs: u64,
    msg: &std::sync::Arc<Vec<u8>>,
) -> Phase {
    // Warm up briefly so connection setup and caches do not count.
    let warm = Instant::now() + Duration::from_millis(500);
    let _ = futures_join(addrs, sessions, msg, warm).await;
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let mut lat = futures_join(addrs, sessions, msg, until).await;
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
    addrs: &[SocketAddr],
    sessions: usize,
    msg: &std::sync::Arc<Vec<u8>>,
    until: Instant,
) -> Vec<Duration> {
    let tasks: Vec<_> = (0..sessions)
        .map(|i| tokio::spawn(session(addrs[i % addrs.len()], msg.clone(), until)))
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

pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

pub async fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "{addr} never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Bayes store that votes, learned by this build's `filtertrain`: from the corpus' spam and
/// easy_ham when it is there (`$FILTERD_CORPUS` or `../shared/corpus/spamassassin`), else from
/// 300 generated spam and 300 generated ham. Returns the store and what it was learned from.
pub fn trained_store(dir: &Path) -> (PathBuf, String) {
    let store = dir.join("bayes");
    let corpus = std::env::var_os("FILTERD_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/spamassassin")
        });
    let (spam, ham, what) = if corpus.join("spam").is_dir() && corpus.join("easy_ham").is_dir() {
        (
            corpus.join("spam"),
            corpus.join("easy_ham"),
            format!("{}/{{spam,easy_ham}}", corpus.display()),
        )
    } else {
        let (spam, ham) = (dir.join("learn-spam"), dir.join("learn-ham"));
        generated_mail(
            &spam,
            &[
                "winner",
                "prize",
                "casino",
                "pills",
                "cheap",
                "offer",
                "loan",
                "click",
                "unsubscribe",
                "bonus",
            ],
        );
        generated_mail(
            &ham,
            &[
                "meeting",
                "agenda",
                "figures",
                "quarterly",
                "project",
                "review",
                "notes",
                "lunch",
                "schedule",
                "draft",
            ],
        );
        (
            spam,
            ham,
            "300 generated spam and 300 generated ham (no corpus found)".into(),
        )
    };
    let ok = Command::new(env!("CARGO_BIN_EXE_filtertrain"))
        .arg("--dbpath")
        .arg(&store)
        .arg("--spam")
        .arg(&spam)
        .arg("--ham")
        .arg(&ham)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "filtertrain failed to learn {what}");
    (store, what)
}

/// 300 messages in `dir`, each a different mix of `words` and numbered tokens.
pub fn generated_mail(dir: &Path, words: &[&str]) {
    std::fs::create_dir_all(dir).expect("mail dir");
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..300 {
        let mut body = String::new();
        for _ in 0..120 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            body.push_str(words[(x % words.len() as u64) as usize]);
            body.push_str(if x.is_multiple_of(7) { "\r\n" } else { " " });
        }
        let m = format!(
            "From: sender{i}@example.com\r\nTo: bob@example.net\r\nSubject: {} {i}\r\n\
Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{i}.{x}@example.com>\r\n\r\n{body}\r\n",
            words[i % words.len()]
        );
        std::fs::write(dir.join(format!("{i}.eml")), m).expect("write message");
    }
}
