//! A real PostgreSQL server (Debian's postgresql package) with its own cluster in a
//! temporary directory, on a loopback port, stopped on drop. As root it runs as the
//! `postgres` user (PostgreSQL refuses root). Tests skip with the reason when it is not
//! installed, unless `FILTERD_REQUIRE_POSTGRES=1` (CI) makes that a failure.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running PostgreSQL.
pub struct Postgres {
    child: Option<Child>,
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|d| d.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// Why PostgreSQL cannot run here, if it cannot (or a panic when it is required).
pub fn unavailable() -> Option<String> {
    if bin_dir().is_some() {
        return None;
    }
    let why = "PostgreSQL server not installed (apt-get install postgresql)".to_string();
    if std::env::var("FILTERD_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
        panic!("FILTERD_REQUIRE_POSTGRES=1 but {why}");
    }
    eprintln!("skipped: {why}");
    Some(why)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
    })
}

/// `program` as the user PostgreSQL runs as.
fn as_postgres(program: PathBuf) -> Command {
    if !is_root() {
        return Command::new(program);
    }
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--clear-groups",
        "--",
    ]);
    c.arg(program);
    c
}

impl Postgres {
    /// A new cluster on a free port; `None` (skip) when PostgreSQL is missing.
    pub fn start() -> Option<Postgres> {
        if unavailable().is_some() {
            return None;
        }
        let bin = bin_dir()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        if is_root() {
            // The postgres user must reach and own its directory.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
                .expect("chmod");
        }
        let out = as_postgres(bin.join("initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                "filterd",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut pg = Postgres {
            child: None,
            port,
            bin,
            data,
            _dir: dir,
        };
        pg.restart();
        Some(pg)
    }

    /// `postgresql://filterd@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgresql://filterd@127.0.0.1:{}/postgres", self.port)
    }

    /// Stop it at once (SIGKILL: as a crash looks to its clients).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // A killed postmaster leaves its pid file and its shared memory to the next start.
        let _ = std::fs::remove_file(self.data.join("postmaster.pid"));
    }

    /// Start it (again) on the same port and data, and wait until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let child = as_postgres(self.bin.join("postgres"))
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-F"])
            .args(["-c", "unix_socket_directories=", "-c", "max_connections=50"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "postgres did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One SQL statement through psql; its output, unaligned, without headers.
    pub fn sql(&self, statement: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-q", "-d", &self.url(), "-c", statement])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
    }
}
