//! A private Postfix instance for end-to-end tests: its own config, queue and log in a temp
//! dir, loopback ports, `content_filter` pointing at a filterd process, a 10025-style
//! reinjection listener, final delivery to a loopback sink. Extra `main.cf` lines (later
//! ones win in Postfix) let a test add restrictions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const POSTFIX: &str = "/usr/sbin/postfix";

/// None when Postfix can run here; else why not (and a panic when it is required).
pub fn unavailable() -> Option<String> {
    let why = if !std::path::Path::new(POSTFIX).exists() {
        Some("Postfix is not installed (apt-get install postfix)".to_string())
    } else if Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout != b"0\n")
        .unwrap_or(true)
    {
        Some("not running as root (a private Postfix instance needs root)".to_string())
    } else {
        None
    };
    if let Some(why) = &why {
        if std::env::var("FILTERD_REQUIRE_POSTFIX").is_ok_and(|v| v == "1") {
            panic!("FILTERD_REQUIRE_POSTFIX=1 but {why}");
        }
        eprintln!("skipped: {why}");
    }
    why
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `base` with the parameters `extra` sets replaced (and the new ones added). Never two
/// lines for one parameter: every Postfix process warns "overriding earlier entry" for
/// each at start, and with the container's `net.unix.max_dgram_qlen` of 10 that burst
/// fills the postlog socket before postlogd has switched to writing its own messages to
/// the file: postlogd then blocks sending to itself and all logging (and smtpd) hangs.
fn replace_params(base: &str, extra: &str) -> String {
    let name = |l: &str| l.split('=').next().unwrap_or("").trim().to_string();
    let set: Vec<String> = extra
        .lines()
        .filter(|l| l.contains('=') && !l.starts_with(char::is_whitespace))
        .map(name)
        .collect();
    let mut out: String = base
        .lines()
        .filter(|l| !l.contains('=') || !set.contains(&name(l)))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(extra);
    out
}

/// A private Postfix instance; stopped on drop, also when the test fails.
pub struct Postfix {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub smtpd: SocketAddr,
}

impl Postfix {
    pub fn start(filterd_port: u16, reinject_port: u16, sink: SocketAddr) -> Postfix {
        Self::start_with(filterd_port, reinject_port, sink, "")
    }

    /// Start with `extra` lines appended to `main.cf`.
    pub fn start_with(
        filterd_port: u16,
        reinject_port: u16,
        sink: SocketAddr,
        extra: &str,
    ) -> Postfix {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_path_buf();
        let conf = d.join("conf");
        for sub in ["conf", "queue", "data"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let ok = Command::new("chown")
            .arg("postfix")
            .arg(d.join("data"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown postfix failed");
        let smtpd_port = free_port();
        let d_str = d.display();
        let base = format!(
            "compatibility_level = 3.6
myhostname = mx.filterd.test
mydomain = filterd.test
myorigin = filterd.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
queue_directory = {d_str}/queue
data_directory = {d_str}/data
maillog_file = {d_str}/maillog
maillog_file_prefixes = {d_str}
mynetworks = 127.0.0.0/8
relay_domains = sink.test, blocked.test
transport_maps = inline:{{ sink.test=smtp:[127.0.0.1]:{sink_port}, blocked.test=smtp:[127.0.0.1]:{sink_port} }}
smtpd_relay_restrictions = permit_mynetworks, reject
content_filter = filterd:[127.0.0.1]:{filterd_port}
alias_maps =
alias_database =
smtp_dns_support_level = disabled
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
# Postfix's own SMTP client folds lines over 998 bytes by default; filterd does not, and
# this test checks filterd's fidelity, so let Postfix pass long lines too.
smtp_line_length_limit = 0
",
            sink_port = sink.port()
        );
        std::fs::write(conf.join("main.cf"), replace_params(&base, extra)).unwrap();
        // Every service unchrooted (the queue is in a temp dir) and the recommended
        // filterd wiring from the README.
        std::fs::write(
            conf.join("master.cf"),
            format!(
                "127.0.0.1:{smtpd_port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
virtual unix - n n - - virtual
lmtp unix - - n - - lmtp
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
filterd unix - - n - 4 smtp
  -o smtp_data_done_timeout=1200
  -o smtp_send_xforward_command=yes
  -o disable_dns_lookups=yes
  -o max_use=20
127.0.0.1:{reinject_port} inet n - n - - smtpd
  -o content_filter=
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters
  -o smtpd_helo_restrictions=
  -o smtpd_client_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o smtpd_relay_restrictions=permit_mynetworks,reject
  -o mynetworks=127.0.0.0/8
  -o smtpd_authorized_xforward_hosts=127.0.0.0/8
"
            ),
        )
        .unwrap();
        let pf = Postfix {
            dir,
            conf,
            smtpd: SocketAddr::from(([127, 0, 0, 1], smtpd_port)),
        };
        let out = pf.postfix(&["start"]);
        assert!(
            out.status.success(),
            "postfix start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            pf.maillog()
        );
        // Wait for smtpd to accept.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(pf.smtpd).is_err() {
            assert!(
                Instant::now() < deadline,
                "Postfix smtpd never listened:\n{}",
                pf.maillog()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pf
    }

    pub fn postfix(&self, args: &[&str]) -> std::process::Output {
        Command::new(POSTFIX)
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .expect("run postfix")
    }

    pub fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    pub fn queue_listing(&self) -> String {
        let out = Command::new("postqueue")
            .arg("-c")
            .arg(&self.conf)
            .arg("-p")
            .output()
            .expect("postqueue");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn wait_queue_empty(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.queue_listing().contains("Mail queue is empty") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn flush(&self) {
        let _ = Command::new("postqueue")
            .arg("-c")
            .arg(&self.conf)
            .arg("-f")
            .status();
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let master = std::fs::read_to_string(self.dir.path().join("queue/pid/master.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        // `postfix stop` logs through postlogd first; bound it, so a wedged instance
        // cannot hang the test run.
        let stop = Command::new(POSTFIX)
            .arg("-c")
            .arg(&self.conf)
            .arg("stop")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let deadline = Instant::now() + Duration::from_secs(15);
        if let Ok(mut child) = stop {
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // `postfix stop` returns before master exits; wait so the temp dir can go, and
        // kill the instance's process group if it does not.
        if let Some(master) = master {
            // A zombie (nobody may reap it in a container) has exited.
            let alive = || {
                std::fs::read_to_string(format!("/proc/{master}/stat")).is_ok_and(|st| {
                    st.rsplit(')')
                        .next()
                        .is_some_and(|r| !r.trim_start().starts_with('Z'))
                })
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if alive() {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{master}"), &master.to_string()])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}
