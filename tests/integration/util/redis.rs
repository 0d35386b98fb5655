//! A real `redis-server` (Debian's redis-server package) on a loopback port with its own
//! temporary directory, no persistence, stopped on drop. Tests skip with the reason when it
//! is not installed, unless `FILTERD_REQUIRE_REDIS=1` (CI) makes that a failure.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = "/usr/bin/redis-server";

/// A running redis-server.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// Why Redis cannot run here, if it cannot (or a panic when it is required).
pub fn unavailable() -> Option<String> {
    if std::path::Path::new(BINARY).exists() {
        return None;
    }
    let why = format!("{BINARY} not installed (apt-get install redis-server)");
    if std::env::var("FILTERD_REQUIRE_REDIS").is_ok_and(|v| v == "1") {
        panic!("FILTERD_REQUIRE_REDIS=1 but {why}");
    }
    eprintln!("skipped: {why}");
    Some(why)
}

impl Redis {
    /// Start one on a free loopback port; `None` (skip) when redis-server is missing.
    pub fn start() -> Option<Redis> {
        if unavailable().is_some() {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut r = Redis {
            child: None,
            port,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        r.restart();
        Some(r)
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stop it (SIGKILL: as a crash looks to its clients).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it (again) on the same port, empty, and wait until it answers PING.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(BINARY)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command(&["PING"]).as_deref() != Some("PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One command over RESP; the reply as text (bulk, simple, integer; nil = "").
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let line = line.trim_end();
        match line.as_bytes().first()? {
            b'+' | b':' => Some(line[1..].to_string()),
            b'$' if line == "$-1" => Some(String::new()),
            b'$' => {
                let mut v = String::new();
                r.read_line(&mut v).ok()?;
                Some(v.trim_end().to_string())
            }
            _ => Some(line.to_string()),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
