//! Viruses and banned content through a filterd process: a real clamd (Debian's
//! clamav-daemon, started here on a private socket with a signature database of our own:
//! no freshclam), the banned rules with amavisd-new's defaults, a decompression bomb, and
//! an exception bank. Skips with a message when clamd is not installed, unless
//! `FILTERD_REQUIRE_CLAMD=1` (set by `.ci/run`).

use crate::util::sink::{Behaviour, Sink};
use crate::util::{Client, Filterd};
use filterd::action::quarantine::Quarantine;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// EICAR's test string: every virus scanner reports it, none of it is harmful.
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// A private clamd; killed on drop.
pub struct Clamd {
    child: Option<Child>,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Clamd {
    /// Start clamd with a database of EICAR's MD5 and a body signature; `None` (and why)
    /// when clamd is not installed or we are not root.
    pub fn start() -> Option<Clamd> {
        let why = if !Path::new("/usr/sbin/clamd").exists() {
            Some("clamd is not installed (apt-get install clamav-daemon)")
        } else if std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            !s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        }) {
            Some("not root (clamd drops to its own user)")
        } else {
            None
        };
        if let Some(why) = why {
            if std::env::var("FILTERD_REQUIRE_CLAMD").is_ok_and(|v| v == "1") {
                panic!("FILTERD_REQUIRE_CLAMD=1 but {why}");
            }
            eprintln!("skipped: {why}");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("db")).unwrap();
        std::fs::write(
            d.join("db/test.hdb"),
            "44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n",
        )
        .unwrap();
        std::fs::write(
            d.join("db/test.ndb"),
            "Filterd.Test.Body:0:*:46494c544552442d544553542d4d414c574152452d424f4459\n",
        )
        .unwrap();
        let socket = d.join("clamd.sock");
        let conf = d.join("clamd.conf");
        std::fs::write(
            &conf,
            format!(
                "LocalSocket {}\nLocalSocketMode 666\nDatabaseDirectory {}\nUser clamav\nForeground true\nLogFile {}\nScanArchive true\nScanMail true\n",
                socket.display(),
                d.join("db").display(),
                d.join("clamd.log").display()
            ),
        )
        .unwrap();
        // clamd (as user clamav) must reach its database and socket directory.
        let _ = Command::new("chmod").args(["-R", "a+rwX"]).arg(d).status();
        let _ = Command::new("chmod").arg("a+rx").arg(d).status();
        let child = Command::new("/usr/sbin/clamd")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn clamd");
        let c = Clamd {
            child: Some(child),
            socket,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::os::unix::net::UnixStream::connect(&c.socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "clamd never listened: {}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(c)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("clamd.log")).unwrap_or_default()
    }

    /// Stop it now.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A zip archive of `files`.
pub fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in files {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A multipart/mixed message with a text part and base64 attachments; `tag` makes it unique.
pub fn message(tag: &str, attachments: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut m = format!(
        "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: {tag}\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n\
         Message-ID: <{tag}@example.org>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nthe files\r\n"
    );
    for (ctype, name, data) in attachments {
        let b64 = <base64ct::Base64 as base64ct::Encoding>::encode_string(data);
        m.push_str(&format!(
            "--b1\r\nContent-Type: {ctype}; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        ));
        for line in b64.as_bytes().chunks(76) {
            m.push_str(std::str::from_utf8(line).unwrap());
            m.push_str("\r\n");
        }
    }
    m.push_str("--b1--\r\n");
    m.into_bytes()
}

async fn send(f: &Filterd, to: &str, msg: &[u8]) -> String {
    let (mut c, _) = Client::connect(f.addr()).await;
    let r = c.send_message("alice@example.org", &[to], msg).await;
    c.cmd("QUIT").await;
    r
}

fn held(f: &Filterd) -> Vec<filterd::action::quarantine::Entry> {
    Quarantine::open(&f.quarantine_dir())
        .and_then(|q| q.list())
        .map(|l| l.into_iter().filter_map(Result::ok).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn eicar_plain_in_a_zip_and_in_a_nested_zip_is_held_as_infected_and_clean_files_pass() {
    let Some(clamd) = Clamd::start() else { return };
    let sink = Sink::start(Behaviour::default()).await;
    // A dead clamd first: the next address is tried (failover).
    let dead = clamd.socket.with_file_name("no-such-clamd.sock");
    let addresses = format!("\"{}\", \"{}\"", dead.display(), clamd.socket.display());
    let f = Filterd::start(sink.addr, &format!("[clamd]\naddresses = [{addresses}]\n"));
    let nested = zip_of(&[("inner.zip", &zip_of(&[("eicar.com", EICAR)]))]);
    let zipped = zip_of(&[("eicar.com", EICAR)]);
    for (i, (ctype, name, data)) in [
        ("application/octet-stream", "eicar.com", EICAR),
        ("application/zip", "eicar.zip", &zipped[..]),
        ("application/zip", "nested.zip", &nested[..]),
    ]
    .into_iter()
    .enumerate()
    {
        let r = send(
            &f,
            "bob@example.net",
            &message(&format!("virus-{i}"), &[(ctype, name, data)]),
        )
        .await;
        assert!(r.starts_with("250"), "{name}: {r}\n{}", clamd.log());
    }
    assert_eq!(
        f.log_text()
            .matches(
                "Blocked INFECTED (Eicar-Test-Signature.UNOFFICIAL) {DiscardedInbound,Quarantined}"
            )
            .count(),
        3,
        "{}",
        f.log_text()
    );
    let entries = held(&f);
    assert_eq!(entries.len(), 3);
    assert!(
        entries.iter().all(|e| e.reason == "virus"),
        "{:?}",
        entries[0].reason
    );
    assert_eq!(sink.count(), 0, "nothing infected delivered");
    // Clean mail with attachments passes byte-identical below our headers.
    let clean = message(
        "clean",
        &[(
            "application/zip",
            "docs.zip",
            &zip_of(&[("a.txt", b"just text")]),
        )],
    );
    let r = send(&f, "bob@example.net", &clean).await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(sink.wait_for(1, Duration::from_secs(10)).await, 1);
    let got = &sink.received()[0].data;
    assert!(
        got.ends_with(&clean),
        "the message arrives unchanged below the added headers"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_clamd_down_mail_is_tempfailed_or_passed_with_an_alert() {
    let Some(mut clamd) = Clamd::start() else {
        return;
    };
    let socket = clamd.socket.display().to_string();
    clamd.stop();
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start(sink.addr, &format!("[clamd]\naddresses = [\"{socket}\"]\n"));
    let m = message("down", &[("application/pdf", "a.pdf", b"%PDF-1.4 plain")]);
    let r = send(&f, "bob@example.net", &m).await;
    assert!(r.starts_with("451"), "clamd down: {r}");
    let passing = Filterd::start(
        sink.addr,
        &format!("[clamd]\naddresses = [\"{socket}\"]\non_error = \"pass\"\n"),
    );
    let r = send(&passing, "bob@example.net", &m).await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(sink.wait_for(1, Duration::from_secs(10)).await, 1);
    let got = String::from_utf8_lossy(&sink.received()[0].data).into_owned();
    assert!(
        got.contains("X-Amavis-Alert: UNCHECKED, virus scanner unavailable"),
        "{got}"
    );
    // Plain text cannot carry an attachment: not sent to clamd, so not tempfailed.
    let text = b"From: a@example.org\r\nTo: bob@example.net\r\nSubject: hi\r\nContent-Type: text/plain\r\n\r\nhello\r\n";
    assert!(send(&f, "bob@example.net", text).await.starts_with("250"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clamd_that_never_answers_is_a_451_within_the_budget() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let keep = std::thread::spawn(move || {
        let mut held = vec![];
        for s in silent.incoming().take(2).flatten() {
            held.push(s);
        }
        std::thread::sleep(Duration::from_secs(8));
    });
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start(
        sink.addr,
        &format!(
            "[scan]\nbudget_ms = 2000\n[clamd]\naddresses = [\"{addr}\"]\ntimeout_ms = 60000\n"
        ),
    );
    let m = message("silent", &[("application/pdf", "a.pdf", b"%PDF-1.4 plain")]);
    let started = Instant::now();
    let r = send(&f, "bob@example.net", &m).await;
    assert!(r.starts_with("451"), "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(keep);
}

/// Peak RSS of a process, KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A zip that expands to about 4 GB: 64 members of 64 MB of zeros, compressed once and
/// copied raw (a few MB on disk).
fn four_gb_bomb() -> Vec<u8> {
    let one = zip_of(&[("zeros.bin", &vec![0u8; 64 << 20])]);
    let mut src = zip::ZipArchive::new(std::io::Cursor::new(one)).unwrap();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..64 {
        let f = src.by_index_raw(0).unwrap();
        w.raw_copy_file_rename(f, format!("part{i}.bin")).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn banned_names_types_macros_encryption_and_bombs_are_held_each_with_its_finding() {
    let sink = Sink::start(Behaviour::default()).await;
    let vendor = "[[policy]]\nname = \"vendor\"\nrecipient_domains = [\"vendor.test\"]\nallow_banned = ['^\\.exe$', '\\.exe$']\n";
    let f = Filterd::start(sink.addr, vendor);
    let pe: &[u8] = b"MZ\x90\0\x03\0\0\0\x04\0";
    let docm = zip_of(&[
        ("[Content_Types].xml", b"<Types/>"),
        ("word/vbaProject.bin", b"\xd0\xcf\x11\xe0"),
    ]);
    let mut locked = zip_of(&[("secret.txt", b"data")]);
    for sig in [&b"PK\x03\x04"[..], &b"PK\x01\x02"[..]] {
        let at = if sig == b"PK\x03\x04" { 6 } else { 8 };
        let i = memchr::memmem::find(&locked, sig).unwrap();
        locked[i + at] |= 1;
    }
    let bomb = four_gb_bomb();
    assert!(bomb.len() < 8 << 20, "small on disk: {}", bomb.len());
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "application/pdf",
            "invoice.pdf.exe",
            b"%PDF-1.4".to_vec(),
            "application/pdf,.pdf,invoice.pdf.exe)",
        ),
        (
            "application/zip",
            "setup.zip",
            zip_of(&[("tool.exe", pe)]),
            "| .exe,tool.exe)",
        ),
        (
            "application/octet-stream",
            "report.docm",
            docm,
            "report.docm",
        ),
        (
            "application/zip",
            "locked.zip",
            locked,
            ".encrypted,secret.txt",
        ),
        ("application/zip", "bomb.zip", bomb, ".bomb,"),
    ];
    for (i, (ctype, name, data, finding)) in cases.iter().enumerate() {
        let r = send(
            &f,
            "bob@example.net",
            &message(&format!("banned-{i}"), &[(ctype, name, data)]),
        )
        .await;
        assert!(r.starts_with("250"), "{name}: {r}");
        let mid = format!("Message-ID: <banned-{i}@example.org>");
        assert!(
            f.wait_log(&mid, Duration::from_secs(10)),
            "{}",
            f.log_text()
        );
        let log = f.log_text();
        let line = log
            .lines()
            .find(|l| l.contains(&format!("Message-ID: <banned-{i}@example.org>")));
        let line = line.unwrap_or_else(|| panic!("no line for {name}:\n{log}"));
        assert!(
            line.contains("Blocked BANNED (multipart/mixed | "),
            "{line}"
        );
        assert!(line.contains(finding), "{name}: {finding} in {line}");
    }
    assert_eq!(
        held(&f).iter().filter(|e| e.reason == "banned").count(),
        cases.len()
    );
    let rss = peak_rss_kib(f.child.id());
    assert!(rss < 100 * 1024, "peak RSS {rss} KiB after the bomb");
    assert_eq!(sink.count(), 0);
    // The vendor bank's exception lets the executable through, with our headers only.
    let tool = message(
        "vendor",
        &[("application/zip", "setup.zip", &zip_of(&[("tool.exe", pe)]))],
    );
    let r = send(&f, "dev@vendor.test", &tool).await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(
        sink.wait_for(1, Duration::from_secs(10)).await,
        1,
        "{}",
        f.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn through_postfix_eicar_is_quarantined_with_its_name_and_ham_is_delivered() {
    use crate::util::postfix::{Postfix, free_port, unavailable};
    if unavailable().is_some() {
        return;
    }
    let Some(clamd) = Clamd::start() else { return };
    let sink = Sink::start(Behaviour::default()).await;
    let reinject = free_port();
    let next = std::net::SocketAddr::from(([127, 0, 0, 1], reinject));
    let f = Filterd::start(
        next,
        &format!("[clamd]\naddresses = [\"{}\"]\n", clamd.socket.display()),
    );
    let pf = Postfix::start(f.addr().port(), reinject, sink.addr);
    let (mut c, g) = Client::connect_from("127.0.0.2".parse().unwrap(), pf.smtpd).await;
    assert!(g.starts_with("220"), "{g}");
    let virus = message(
        "e2e-virus",
        &[(
            "application/zip",
            "eicar.zip",
            &zip_of(&[("eicar.com", EICAR)]),
        )],
    );
    let ham = message(
        "e2e-ham",
        &[(
            "application/pdf",
            "report.pdf",
            b"%PDF-1.4 quarterly numbers",
        )],
    );
    for m in [&virus, &ham] {
        let r = c
            .send_message("alice@sink.test", &["bob@sink.test"], m)
            .await;
        assert!(r.starts_with("250"), "{r}");
        assert!(c.cmd("RSET").await.starts_with("250"));
    }
    c.cmd("QUIT").await;
    assert_eq!(
        sink.wait_for(1, Duration::from_secs(60)).await,
        1,
        "{}",
        pf.maillog()
    );
    assert!(
        pf.wait_queue_empty(Duration::from_secs(30)),
        "{}",
        pf.queue_listing()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.count(), 1, "only the ham is delivered");
    let got = String::from_utf8_lossy(&sink.received()[0].data).into_owned();
    assert!(got.contains("Subject: e2e-ham"), "{got}");
    let entries = held(&f);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].reason, "virus");
    let out = Command::new(env!("CARGO_BIN_EXE_filterq"))
        .arg("--config")
        .arg(f.config_path())
        .args(["show", &entries[0].id])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Finding:     Eicar-Test-Signature.UNOFFICIAL"),
        "{text}"
    );
    assert!(text.contains("Reason:      virus"), "{text}");
}
