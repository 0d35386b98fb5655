//! Issue 16, the Debian package, installed for real: `dpkg -i` of the .deb that
//! `packaging/build-deb` made, the installed `/usr/bin/filterd` run as the `filterd` user
//! with the packaged config between a private Postfix and a sink (20 messages, each
//! delivered once with filterd's headers), the conffile kept when changed, and
//! `dpkg --purge` leaving none of the package's files behind.
//!
//! It installs into this machine, so it runs only when `FILTERD_DEB` names the package
//! (`.ci/run` builds it and sets it); `FILTERD_REQUIRE_DEB=1` makes a missing package a
//! failure. It refuses to touch a machine where filterd is already installed.
//!
//! The packaged config is used as shipped except for what a test may not use: the ports
//! (10024/10025 are the site's, tests bind ephemeral ones), the resolver (a DNS server on
//! loopback, never the machine's) and which Postfix to ask for the local domains (the
//! private one).

use crate::postfix::{delivered_once, inject};
use crate::util::dns::DnsServer;
use crate::util::postfix::{Postfix, free_port, unavailable};
use crate::util::sink::{Behaviour, Sink};
use crate::util::{Filterd, repo};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The package to test, or `None` (skip) when it is not given.
fn package() -> Option<PathBuf> {
    let Some(deb) = std::env::var_os("FILTERD_DEB") else {
        assert!(
            std::env::var_os("FILTERD_REQUIRE_DEB").is_none(),
            "FILTERD_REQUIRE_DEB is set but FILTERD_DEB names no package"
        );
        eprintln!(
            "SKIP: the package test installs a .deb into this machine; build one with \
             packaging/build-deb and set FILTERD_DEB=target/debian/filterd_*.deb"
        );
        return None;
    };
    Some(PathBuf::from(deb))
}

/// Run a command to success; its output otherwise.
fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().expect("command ran");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn dpkg(args: &[&str]) -> String {
    run(Command::new("dpkg")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status}", "filterd"])
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"installed"))
}

/// Purges the package when the test ends, also when it fails.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "filterd"])
            .stdin(Stdio::null())
            .output();
    }
}

/// `text` with the first `key = ...` line after `[section]` set to `value`; the test fails
/// when the packaged file has no such line (its layout changed).
fn set(text: &str, section: &str, key: &str, value: &str) -> String {
    let header = format!("[{section}]");
    let mut out = Vec::new();
    let (mut inside, mut done) = (false, false);
    for line in text.lines() {
        if line.starts_with('[') {
            inside = line.trim() == header;
        }
        let is_key = line
            .split_once('=')
            .is_some_and(|(k, _)| k.trim() == key && !line.starts_with('#'));
        if inside && !done && is_key {
            out.push(format!("{key} = {value}"));
            done = true;
        } else {
            out.push(line.to_string());
        }
    }
    assert!(done, "the packaged config has no `{key}` in [{section}]");
    out.join("\n") + "\n"
}

/// A numeric id of the `filterd` user or group.
fn id(flag: &str) -> u32 {
    run(Command::new("id").args([flag, "filterd"]))
        .trim()
        .parse()
        .expect("numeric id")
}

/// The installed filterd as the unit runs it (`ExecStartPre` and `ExecStart`): the `filterd`
/// user, a clean environment with systemd's `STATE_DIRECTORY`.
fn as_filterd(args: &[&str], config: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=filterd", "--regid=filterd", "--init-groups", "--"])
        .arg("/usr/bin/filterd")
        .args(args)
        .arg(config)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("STATE_DIRECTORY", "/var/lib/filterd")
        .env("RUST_LOG", "info");
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn the_debian_package_installs_runs_as_filterd_with_its_config_and_purges_clean() {
    let Some(deb) = package() else { return };
    if let Some(why) = unavailable() {
        panic!("the package test needs root and Postfix: {why}");
    }
    assert!(
        !installed(),
        "filterd is already installed here; the package test installs and purges it, so it \
         runs only on a machine without it"
    );
    let _purge = Installed;
    dpkg(&["-i", &deb.display().to_string()]);
    assert!(installed());

    // What postinst made: the user and its state directory; the config is the example.
    let (uid, gid) = (id("-u"), id("-g"));
    let state = std::fs::metadata("/var/lib/filterd").expect("/var/lib/filterd");
    assert_eq!((state.uid(), state.gid()), (uid, gid));
    assert_eq!(state.permissions().mode() & 0o777, 0o750);
    let shipped = std::fs::read_to_string("/etc/filterd/filterd.toml").expect("config");
    let example = std::fs::read_to_string(repo().join("filterd.toml.example")).expect("example");
    assert_eq!(
        shipped, example,
        "/etc/filterd/filterd.toml is not the example"
    );
    let files = dpkg(&["-L", "filterd"]);
    for f in [
        "/usr/bin/filterd",
        "/usr/bin/filtertrain",
        "/usr/bin/filterq",
        "/usr/share/filterd/models/spam-lr/model.onnx",
        "/usr/share/man/man1/filterd.1.gz",
        "/usr/share/man/man1/filterq-release.1.gz",
        "/usr/share/bash-completion/completions/filterd",
        "/usr/lib/systemd/system/filterd.service",
    ] {
        assert!(
            files.lines().any(|l| l == f),
            "{f} not in the package:\n{files}"
        );
    }
    assert!(dpkg(&["-s", "filterd"]).contains("Conffiles:\n /etc/filterd/filterd.toml"));
    // The installed unit, with its man page now there to be found.
    run(Command::new("systemd-analyze")
        .args(["verify", "/usr/lib/systemd/system/filterd.service"])
        .env("SYSTEMD_LOG_LEVEL", "warning"));

    // The packaged config, moved onto the test's ports and resolver.
    let sink = Sink::start(Behaviour::default()).await;
    let dns = DnsServer::start(&[]).await;
    let reinject = free_port();
    let filterd_port = free_port();
    let pf = Postfix::start(filterd_port, reinject, sink.addr);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut config = set(
        &shipped,
        "server",
        "listen",
        &format!("[\"127.0.0.1:{filterd_port}\"]"),
    );
    config = set(
        &config,
        "next_hop",
        "address",
        &format!("\"127.0.0.1:{reinject}\""),
    );
    config = set(&config, "metrics", "listen", "\"127.0.0.1:0\"");
    config = set(
        &config,
        "auth",
        "nameservers",
        &format!("[\"{}\"]", dns.addr),
    );
    config = set(&config, "local_domains", "postconf", "false");
    config = set(&config, "local_domains", "domains", "[\"sink.test\"]");
    let path = dir.path().join("filterd.toml");
    std::fs::write(&path, &config).expect("write config");
    run(&mut as_filterd(&["--check-config", "--config"], &path));
    let mut f = Filterd::spawn(as_filterd(&["--config"], &path), dir);
    let status = std::fs::read_to_string(format!("/proc/{}/status", f.child.id())).expect("status");
    assert!(
        status.lines().any(|l| l.starts_with("Uid:")
            && l.split_whitespace().nth(1) == Some(uid.to_string().as_str())),
        "not running as filterd:\n{status}"
    );
    f.expect_log("model=/usr/share/filterd/models/spam-lr/model.onnx");
    f.expect_log("state_dir=/var/lib/filterd");

    inject(&pf, 0..20).await;
    for head in delivered_once(&pf, &sink, &f, 20).await {
        assert!(head.contains("Authentication-Results: "), "{head}");
    }
    assert!(
        !pf.maillog().contains("status=deferred"),
        "{}",
        pf.maillog()
    );
    // The packaged config's metrics listener (moved to port 0) counts them and is healthy.
    let metrics = f
        .metrics_addr()
        .expect("metrics listener on in the packaged config");
    let (status, health) = crate::metrics::get(metrics, "/healthz").await;
    assert_eq!(status, 200, "{health}");
    let (_, text) = crate::metrics::get(metrics, "/metrics").await;
    let series =
        "filterd_messages_total{action=\"Relayed\",category=\"CLEAN\",direction=\"Inbound\"} 20";
    assert!(
        text.lines().any(|l| l == series),
        "{series} not in:\n{text}"
    );
    assert!(text.contains("filterd_model_loaded 1"), "{text}");
    f.signal("TERM");
    assert_eq!(
        f.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        f.log_text()
    );
    drop(f);

    // An upgrade (here: the same package again) keeps a changed config.
    let changed = format!("{shipped}# changed by the admin\n");
    std::fs::write("/etc/filterd/filterd.toml", &changed).expect("change config");
    dpkg(&["-i", &deb.display().to_string()]);
    assert_eq!(
        std::fs::read_to_string("/etc/filterd/filterd.toml").expect("config"),
        changed,
        "dpkg replaced the changed config"
    );

    // Purge: none of the package's files, nor what filterd and postinst made, is left.
    dpkg(&["--purge", "filterd"]);
    assert!(!installed());
    let left: Vec<&str> = files
        .lines()
        .filter(|l| l.starts_with('/'))
        .filter(|l| {
            let p = Path::new(l);
            p.symlink_metadata().is_ok_and(|m| !m.is_dir())
        })
        .collect();
    assert!(left.is_empty(), "left after purge: {left:?}");
    for p in [
        "/etc/filterd",
        "/var/lib/filterd",
        "/usr/share/filterd",
        "/usr/share/doc/filterd",
        "/etc/systemd/system/multi-user.target.wants/filterd.service",
        "/etc/systemd/system/filterd.service",
    ] {
        assert!(
            Path::new(p).symlink_metadata().is_err(),
            "{p} left after purge"
        );
    }
}
