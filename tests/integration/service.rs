//! Issue 16, running as a service: the shipped systemd unit passes `systemd-analyze verify`
//! without a warning, and filterd tells systemd `READY=1` once it serves and `STOPPING=1`
//! when it drains (`Type=notify`).

use crate::util::{filterd_binary, repo};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Whether `tool --version` runs; when it does not and `require` is set in the environment
/// (as `.ci/run` does), the test fails instead of skipping.
fn have(tool: &str, require: &str, package: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os(require).is_none(),
            "{tool} required ({require}) but missing"
        );
        eprintln!("SKIP: {tool} not installed (Debian package {package})");
    }
    ok
}

#[test]
fn systemd_analyze_accepts_the_unit() {
    if !have("systemd-analyze", "FILTERD_REQUIRE_SYSTEMD", "systemd") {
        return;
    }
    let unit = std::fs::read_to_string(repo().join("packaging/filterd.service")).expect("unit");
    assert!(unit.contains("Type=notify") && unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    // The package installs /usr/bin/filterd; here the unit points at this build's binary
    // (verify checks that the command exists). The man page is checked by the package test.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("filterd.service");
    std::fs::write(&path, unit.replace("/usr/bin/filterd", &filterd_binary())).expect("write");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify warned:\n{said}"
    );
}

#[test]
fn filterd_notifies_systemd_when_ready_and_when_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("notify");
    let listener = UnixDatagram::bind(&socket).expect("bind notify socket");
    listener
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let config = dir.path().join("filterd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[next_hop]\naddress = \"127.0.0.1:9\"\n\
[auth]\nenabled = false\n[local_domains]\npostconf = false\n[metrics]\nlisten = \"\"\n\
[bayes]\nstate_dir = \"{}\"\n",
            dir.path().join("state").display()
        ),
    )
    .expect("config");
    let mut child = Command::new(filterd_binary())
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn filterd");
    let mut buf = [0u8; 256];
    let got = listener.recv(&mut buf);
    let ready = got.as_ref().map(|n| buf[..*n].to_vec());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stopping = listener.recv(&mut buf).map(|n| buf[..n].to_vec());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(ready.ok().as_deref(), Some(&b"READY=1"[..]));
    assert_eq!(stopping.ok().as_deref(), Some(&b"STOPPING=1"[..]));
}

/// Removes the test's `/dev/log` socket, also when the test fails.
struct DevLog(UnixDatagram);

impl Drop for DevLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file("/dev/log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn syslog_gets_the_message_line_with_facility_mail() {
    use crate::util::sink::{Behaviour, Sink};
    use crate::util::{Client, Filterd, ham};
    if std::path::Path::new("/dev/log").exists() {
        eprintln!("SKIP: /dev/log belongs to a running syslog daemon; not borrowed");
        return;
    }
    let Ok(sock) = UnixDatagram::bind("/dev/log") else {
        eprintln!("SKIP: cannot bind /dev/log (not root?)");
        return;
    };
    let devlog = DevLog(sock);
    devlog
        .0
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start(
        sink.addr,
        "[log]\nsyslog = true\n[model]\nenabled = false\n",
    );
    let (mut c, _) = Client::connect(f.addr()).await;
    let r = c
        .send_message("alice@example.org", &["bob@example.net"], &ham())
        .await;
    assert!(r.starts_with("250"), "{r}");
    let pid = f.child.id();
    let mut seen = vec![];
    let mut buf = vec![0u8; 8192];
    let line = loop {
        match devlog.0.recv(&mut buf) {
            Ok(n) => {
                let l = String::from_utf8_lossy(&buf[..n]).into_owned();
                if l.contains("Passed CLEAN") {
                    break l;
                }
                seen.push(l);
            }
            Err(e) => panic!("no message line in syslog ({e}); got: {seen:?}"),
        }
    };
    // Facility mail (2) and priority notice (5): <21>; then syslog's time, the program
    // name with the pid, and the line as amavisd-new writes it.
    assert!(line.starts_with("<21>"), "{line}");
    assert!(
        line.contains(&format!("filterd[{pid}]: Passed CLEAN {{RelayedInbound}}")),
        "{line}"
    );
    assert!(!line.contains("INFO"), "no level word of its own: {line}");
}

#[test]
fn man_pages_and_completions_are_generated_from_the_clis_and_render() {
    let have_man = have("man", "FILTERD_REQUIRE_MAN", "man-db");
    let dir = tempfile::tempdir().expect("tempdir");
    let man = dir.path().join("man");
    for bin in [
        env!("CARGO_BIN_EXE_filterd"),
        env!("CARGO_BIN_EXE_filtertrain"),
        env!("CARGO_BIN_EXE_filterq"),
    ] {
        let ok = Command::new(bin)
            .arg("--generate-man")
            .arg(&man)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "{bin} --generate-man");
        for shell in ["bash", "zsh", "fish"] {
            let ok = Command::new(bin)
                .args(["--generate-completions", shell])
                .arg(dir.path().join(shell))
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "{bin} --generate-completions {shell}");
        }
    }
    let mut pages: Vec<String> = std::fs::read_dir(&man)
        .expect("man dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for want in [
        "filterd.1",
        "filterd-rules.1",
        "filterd-dkim-keygen.1",
        "filtertrain.1",
        "filterq.1",
        "filterq-release.1",
    ] {
        assert!(
            pages.iter().any(|p| p == want),
            "{want} missing in {pages:?}"
        );
    }
    for bash in ["filterd.bash", "filtertrain.bash", "filterq.bash"] {
        let path = dir.path().join("bash").join(bash);
        let ok = Command::new("bash")
            .arg("-n")
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "bash -n {}", path.display());
    }
    if !have_man {
        return;
    }
    for page in &pages {
        let out = Command::new("man")
            .arg("-l")
            .arg(man.join(page))
            .env("MANWIDTH", "80")
            .output()
            .expect("man ran");
        assert!(out.status.success(), "man -l {page}");
        assert!(
            out.stderr.is_empty(),
            "man -l {page} warned: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{page}:\n{text}"
        );
    }
}

/// Removes the test's journal socket (and the directories it made), also when it fails.
struct FakeJournal {
    sock: UnixDatagram,
    made: Vec<std::path::PathBuf>,
}

impl Drop for FakeJournal {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(JOURNAL_SOCKET);
        for d in self.made.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// The fields of one datagram of journald's native protocol (`NAME=value\n`, or `NAME\n`,
/// a 64-bit little-endian length, the value and `\n` for values with a newline).
fn journal_fields(mut d: &[u8]) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    while !d.is_empty() {
        let nl = d.iter().position(|&b| b == b'\n').unwrap_or(d.len());
        let (line, rest) = d.split_at(nl);
        let rest = rest.get(1..).unwrap_or(&[]);
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            out.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            d = rest;
        } else {
            let len = u64::from_le_bytes(rest[..8].try_into().expect("length")) as usize;
            out.insert(
                String::from_utf8_lossy(line).into_owned(),
                String::from_utf8_lossy(&rest[8..8 + len]).into_owned(),
            );
            d = &rest[8 + len + 1..];
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn under_systemd_the_journal_gets_each_message_line_with_its_fields() {
    use crate::util::sink::{Behaviour, Sink};
    use crate::util::{Client, gtube};
    use std::os::unix::fs::MetadataExt as _;
    if std::path::Path::new(JOURNAL_SOCKET).exists() {
        eprintln!("SKIP: {JOURNAL_SOCKET} belongs to a running journald; not borrowed");
        return;
    }
    let mut made = vec![];
    for d in ["/run/systemd", "/run/systemd/journal"] {
        if !std::path::Path::new(d).exists() {
            if std::fs::create_dir(d).is_err() {
                eprintln!("SKIP: cannot make {d} (not root?)");
                return;
            }
            made.push(d.into());
        }
    }
    let Ok(sock) = UnixDatagram::bind(JOURNAL_SOCKET) else {
        eprintln!("SKIP: cannot bind {JOURNAL_SOCKET}");
        return;
    };
    let journal = FakeJournal { sock, made };
    journal
        .sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let sink = Sink::start(Behaviour::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("filterd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[next_hop]\naddress = \"{}\"\n\
             [bayes]\nstate_dir = \"{}\"\n[auth]\nenabled = false\n[metrics]\nlisten = \"\"\n\
             [local_domains]\npostconf = false\n[model]\nenabled = false\n\
             [quarantine]\ndir = \"{}\"\n",
            sink.addr,
            dir.path().join("state").display(),
            dir.path().join("q").display()
        ),
    )
    .expect("config");
    // What systemd does: stderr is a stream socket to the journal, named in $JOURNAL_STREAM
    // by its device and inode; `[log] journald = "auto"` (the default) sees it.
    let (stream, mut ours) = std::os::unix::net::UnixStream::pair().expect("pair");
    let meta = std::fs::metadata(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&stream)
    ))
    .expect("stat");
    let child = Command::new(filterd_binary())
        .arg("--config")
        .arg(&config)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::os::fd::OwnedFd::from(stream))
        .spawn()
        .expect("spawn");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child_guard = Kill(child);
    let mut buf = vec![0u8; 65536];
    let mut next = || -> std::collections::HashMap<String, String> {
        let n = journal
            .sock
            .recv(&mut buf)
            .expect("a journal entry in time");
        journal_fields(&buf[..n])
    };
    let ready = loop {
        let e = next();
        if e.get("MESSAGE").is_some_and(|m| m.contains("ready")) {
            break e;
        }
    };
    assert_eq!(ready["SYSLOG_IDENTIFIER"], "filterd", "{ready:?}");
    // info is notice (5), as in the syslog mapping.
    assert_eq!(ready["PRIORITY"], "5", "{ready:?}");
    let addr: std::net::SocketAddr = ready["FILTERD_LISTEN"].parse().expect("listen field");
    let (mut c, _) = Client::connect(addr).await;
    let r = c
        .send_message("alice@example.org", &["bob@example.net"], &gtube())
        .await;
    assert!(r.starts_with("250"), "{r}");
    let line = loop {
        let e = next();
        if e.contains_key("FILTERD_MAIL_ID") {
            break e;
        }
    };
    // The message is amavisd-new's line; the fields are its parts.
    assert!(
        line["MESSAGE"].starts_with("Blocked SPAM {DiscardedInbound"),
        "{line:?}"
    );
    for (k, v) in [
        ("FILTERD_CATEGORY", "SPAM"),
        ("FILTERD_ACTION", "Discarded"),
        ("FILTERD_DIRECTION", "Inbound"),
        ("FILTERD_SENDER", "alice@example.org"),
        ("FILTERD_RECIPIENTS", "bob@example.net"),
        ("FILTERD_CLIENT_IP", "127.0.0.1"),
        ("PRIORITY", "5"),
    ] {
        assert_eq!(line.get(k).map(String::as_str), Some(v), "{k}: {line:?}");
    }
    assert!(line["FILTERD_HITS"].contains("GTUBE"), "{line:?}");
    assert!(
        line["FILTERD_SCORE"]
            .parse::<f64>()
            .is_ok_and(|s| s > 100.0),
        "{line:?}"
    );
    assert!(
        line["MESSAGE"].contains(&line["FILTERD_MAIL_ID"]),
        "{line:?}"
    );
    // Nothing went to the stream as well (no line twice in the journal).
    drop(child_guard);
    let mut rest = String::new();
    ours.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = std::io::Read::read_to_string(&mut ours, &mut rest);
    assert!(rest.is_empty(), "stderr also got: {rest}");
}
