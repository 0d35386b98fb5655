//! Test helpers: a filterd process on ephemeral ports, a plain SMTP client, fixtures.
#![allow(dead_code)]

pub mod dns;
pub mod hop;
pub mod pg;
pub mod postfix;
pub mod redis;
pub mod sink;

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The filterd binary the process tests run: this build's, or `FILTERD_TEST_BIN` (to run
/// the same tests against another version, e.g. to show a test fails without a fix).
pub fn filterd_binary() -> String {
    std::env::var("FILTERD_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_filterd").into())
}

/// A filterd process started from the built binary with its own config in a temp dir.
/// Killed on drop, so a failing test never leaves it behind.
pub struct Filterd {
    pub child: Child,
    pub addrs: Vec<SocketAddr>,
    /// The policy service's address, when it is on.
    pub policy: Option<SocketAddr>,
    /// The metrics listener, when it is on.
    pub metrics: Option<SocketAddr>,
    pub log: Arc<Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
}

impl Filterd {
    /// Start with `extra` TOML appended to a config that listens on an ephemeral port and
    /// relays to `next_hop`.
    pub fn start(next_hop: SocketAddr, extra: &str) -> Filterd {
        Self::start_with(&format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n{extra}\n[next_hop]\naddress = \"{next_hop}\"\n"
        ))
    }

    /// Start with a complete config text.
    pub fn start_with(config: &str) -> Filterd {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("filterd.toml");
        // Never read a real installation's Bayes store.
        let mut config = if config.contains("[bayes]") {
            config.to_string()
        } else {
            format!(
                "{config}\n[bayes]\nstate_dir = \"{}\"\n",
                dir.path().join("state").display()
            )
        };
        // Never ask the machine's resolver: tests that verify senders serve their own zones.
        if !config.contains("[auth]") {
            config.push_str("\n[auth]\nenabled = false\n");
        }
        // Tests run in parallel: no fixed metrics port unless the test asks for one.
        if !config.contains("[metrics]") {
            config.push_str("\n[metrics]\nlisten = \"\"\n");
        }
        // Never ask the machine's Postfix which domains are local.
        if !config.contains("[local_domains]") {
            config.push_str("\n[local_domains]\npostconf = false\n");
        }
        // Never write to a real installation's quarantine.
        if !config.contains("[quarantine]") {
            config.push_str(&format!(
                "\n[quarantine]\ndir = \"{}\"\n",
                dir.path().join("quarantine").display()
            ));
        }
        std::fs::write(&path, config).expect("write config");
        let mut cmd = Command::new(filterd_binary());
        cmd.arg("--config").arg(&path).env("RUST_LOG", "info");
        Self::spawn(cmd, dir)
    }

    /// Run `cmd` (a filterd that logs to stderr, possibly through a wrapper that execs it)
    /// and wait for its ready line; `dir` is kept for as long as the process runs.
    pub fn spawn(mut cmd: Command, dir: tempfile::TempDir) -> Filterd {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn filterd");
        let stderr = child.stderr.take().expect("stderr");
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(i) = line.find("listen=") {
                    let list = |text: &str| -> Vec<SocketAddr> {
                        text.split_whitespace()
                            .next()
                            .unwrap_or("")
                            .split(',')
                            .filter_map(|a| a.parse().ok())
                            .collect()
                    };
                    let policy = line
                        .find("policy_listen=")
                        .and_then(|j| list(&line[j + 14..]).first().copied());
                    let metrics = line
                        .find("metrics_listen=")
                        .and_then(|j| list(&line[j + 15..]).first().copied());
                    let _ = tx.send((list(&line[i + 7..]), policy, metrics));
                }
                l.lock().unwrap().push(line);
            }
        });
        let (addrs, policy, metrics) = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "filterd did not become ready; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Filterd {
            child,
            addrs,
            policy,
            metrics,
            log,
            dir,
        }
    }

    /// The quarantine directory the harness gave it (unless the config named one).
    pub fn quarantine_dir(&self) -> PathBuf {
        self.dir.path().join("quarantine")
    }

    /// The path of the config file it runs with (for `filterq --config`).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("filterd.toml")
    }

    /// The metrics listener, when the config has one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// The first listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Wait until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        self.wait_log_count(needle, 1, limit)
    }

    /// Wait (up to 10 s) for a log line containing `needle`; fail the test with the whole
    /// log when none comes.
    pub fn expect_log(&self, needle: &str) {
        assert!(
            self.wait_log(needle, Duration::from_secs(10)),
            "no log line with `{needle}`:\n{}",
            self.log_text()
        );
    }

    /// Wait until `needle` occurs `n` times in the log (stderr is read by a thread, so a
    /// line may arrive a moment after the client saw its reply); true when it did.
    pub fn wait_log_count(&self, needle: &str, n: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.log_text().matches(needle).count() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send a signal.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Wait for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Filterd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain SMTP client that shows replies as text.
pub struct Client {
    io: BufReader<TcpStream>,
}

impl Client {
    /// Connect and return the client with the greeting.
    pub async fn connect(addr: SocketAddr) -> (Client, String) {
        let s = TcpStream::connect(addr).await.expect("connect");
        let mut c = Client {
            io: BufReader::new(s),
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    /// Connect from a given local loopback address.
    pub async fn connect_from(local: std::net::IpAddr, addr: SocketAddr) -> (Client, String) {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind(SocketAddr::new(local, 0)).expect("bind source");
        let s = sock.connect(addr).await.expect("connect");
        let mut c = Client {
            io: BufReader::new(s),
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    /// Read one (multi-line) reply; an empty string on EOF.
    pub async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(30), self.io.read_line(&mut line))
                .await
                .expect("reply timeout")
                .unwrap_or(0);
            if n == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    /// Send raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.expect("send");
    }

    /// Send one command line and read its reply.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// True when the server closed the connection.
    pub async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.io.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// A whole transaction: EHLO, MAIL, RCPTs, DATA with `message` dot-stuffed; returns the
    /// reply to the end of DATA.
    pub async fn send_message(&mut self, from: &str, rcpts: &[&str], message: &[u8]) -> String {
        self.send_message_after(&[], from, rcpts, message).await
    }

    /// [`Client::send_message`] with `commands` (e.g. XFORWARD) sent after EHLO.
    pub async fn send_message_after(
        &mut self,
        commands: &[&str],
        from: &str,
        rcpts: &[&str],
        message: &[u8],
    ) -> String {
        let r = self.cmd("EHLO client.test").await;
        assert!(r.starts_with("250"), "{r}");
        for c in commands {
            let r = self.cmd(c).await;
            assert!(r.starts_with("250"), "{c}: {r}");
        }
        let r = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        assert!(r.starts_with("250"), "MAIL: {r}");
        for rcpt in rcpts {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            assert!(r.starts_with("250"), "RCPT: {r}");
        }
        let r = self.cmd("DATA").await;
        assert!(r.starts_with("354"), "DATA: {r}");
        let mut wire = vec![];
        filterd::smtp::codec::dot_stuff(&[message], &mut wire);
        self.send(&wire).await;
        self.reply().await
    }
}

/// A hand-written, ordinary ham message.
pub fn ham() -> Vec<u8> {
    b"Received: from mail.example.org (mail.example.org [192.0.2.10])\r\n\
\tby mx.example.net (Postfix) with ESMTP id 4Xyz1\r\n\
\tfor <bob@example.net>; Mon, 23 Nov 2026 10:00:05 +0000\r\n\
From: Alice Example <alice@example.org>\r\n\
To: Bob <bob@example.net>\r\n\
Subject: Minutes of Tuesday's meeting\r\n\
Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <20261123100000.1234@example.org>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
X-Spam-Flag: YES\r\n\
X-Spam-Status: Yes, score=99\r\n\
\tforged=yes\r\n\
\r\n\
Hi Bob,\r\n\
\r\n\
.a line that starts with a dot, and one with two:\r\n\
..two\r\n\
A line with trailing spaces   \r\n\
Gr\xc3\xbc\xc3\x9fe, Alice\r\n"
        .to_vec()
}

/// The GTUBE test message.
pub fn gtube() -> Vec<u8> {
    b"From: spammer@example.com\r\nTo: bob@example.net\r\nSubject: test\r\n\r\n\
XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"
        .to_vec()
}

/// Split a relayed message into filterd's added header lines and the rest.
pub fn split_added(relayed: &[u8], original_first_line: &[u8]) -> (String, Vec<u8>) {
    let i = relayed
        .windows(original_first_line.len())
        .position(|w| w == original_first_line)
        .expect("original headers not found in relayed message");
    (
        String::from_utf8_lossy(&relayed[..i]).into_owned(),
        relayed[i..].to_vec(),
    )
}

/// The shared corpus (`../shared/corpus/spamassassin` or `$FILTERD_CORPUS`); `None`, after
/// saying "skipped", when it is absent.
pub fn corpus() -> Option<PathBuf> {
    let root = std::env::var_os("FILTERD_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/corpus/spamassassin"));
    if root.join("easy_ham").exists() {
        Some(root)
    } else {
        eprintln!(
            "skipped: corpus not found at {} (set FILTERD_CORPUS)",
            root.display()
        );
        None
    }
}

/// `corpus-tools <sub>` over the corpus' ham and spam folders.
pub fn corpus_tools(sub: &str, corpus: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corpus-tools"));
    cmd.arg(sub);
    for h in ["easy_ham", "easy_ham_2", "hard_ham"] {
        cmd.arg("--ham").arg(corpus.join(h));
    }
    for s in ["spam", "spam_2"] {
        cmd.arg("--spam").arg(corpus.join(s));
    }
    cmd
}

/// Path to the repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
