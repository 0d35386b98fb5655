//! `filterq` as an admin runs it: the real binary against a temporary store, every
//! subcommand, `--json` that parses, and errors with non-zero exits that name the problem.

use crate::util::sink::{Behaviour, Sink};
use filterd::action::quarantine::{Dsn, Entry, EntryHit, Quarantine};
use filterd::clock::unix_secs as unix;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

struct Store {
    dir: tempfile::TempDir,
    q: Quarantine,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::create(&dir.path().join("quarantine")).unwrap();
        Store { dir, q }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("quarantine")
    }

    /// A config whose quarantine is this store and whose next hop is `hop`.
    fn config(&self, hop: SocketAddr) -> PathBuf {
        let p = self.dir.path().join("filterd.toml");
        std::fs::write(
            &p,
            format!(
                "[quarantine]\ndir = \"{}\"\n[next_hop]\naddress = \"{hop}\"\nconnect_timeout_secs = 2\n",
                self.path().display()
            ),
        )
        .unwrap();
        p
    }

    fn add(&self, id: &str, age_days: u64, reason: &str, score: f64, sender: &str) -> Vec<u8> {
        let msg = format!(
            "From: <{sender}>\r\nSubject: held {id}\r\nMessage-ID: <{id}@x.test>\r\n\r\nbody of {id}\r\n\
binary \u{e9}\r\n"
        )
        .into_bytes();
        let e = Entry {
            id: id.into(),
            time: unix(SystemTime::now()) - age_days * 86_400,
            policy: "default".into(),
            reason: reason.into(),
            finding: None,
            score: Some(score),
            hits: vec![EntryHit {
                name: "GTUBE".into(),
                score,
            }],
            client_ip: Some("192.0.2.1".into()),
            helo: "mx.x.test".into(),
            queue_id: Some("4ABC".into()),
            sender: sender.into(),
            recipients: vec!["bob@example.net".into(), "carol@example.net".into()],
            body: Some(filterd::smtp::envelope::Body::EightBitMime),
            smtputf8: false,
            dsn: Dsn {
                ret: Some("HDRS".into()),
                envid: Some("Q123".into()),
                notify: vec![Some("FAILURE".into()), None],
                orcpt: vec![Some("rfc822;bob@example.net".into()), None],
            },
            message_id: Some(format!("<{id}@x.test>")),
            subject: Some(format!("held {id}")),
            size: msg.len() as u64,
            released: vec![],
        };
        self.q.put(&e, &msg).unwrap();
        msg
    }
}

fn filterq(args: &[&str], store: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_filterq"))
        .arg("--dir")
        .arg(store)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{:?}", text(o));
    serde_json::from_slice(&o.stdout).expect("--json output parses")
}

#[test]
fn list_filters_and_json() {
    let s = Store::new();
    s.add("AAAAAAAAAAA1", 40, "spam", 1003.5, "spammer@bad.test");
    s.add("AAAAAAAAAAA2", 2, "ratelimit", 0.5, "User@Example.org");
    s.add("AAAAAAAAAAA3", 0, "spam", 9.0, "x@bad.test");
    let o = filterq(&["list"], &s.path());
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ID  "), "{out}");
    assert!(
        lines[1].starts_with("AAAAAAAAAAA1  "),
        "oldest first:\n{out}"
    );
    assert!(
        out.contains("ratelimit") && out.contains("<User@Example.org>"),
        "{out}"
    );
    assert!(out.contains("bob@example.net +1"), "{out}");
    let ids = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["list", "--json"];
        a.extend_from_slice(args);
        json(&filterq(&a, &s.path()))
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&[]).len(), 3);
    assert_eq!(ids(&["--reason", "ratelimit"]), ["AAAAAAAAAAA2"]);
    assert_eq!(ids(&["--sender", "user@example"]), ["AAAAAAAAAAA2"]);
    assert_eq!(ids(&["--rcpt", "CAROL"]).len(), 3);
    assert_eq!(ids(&["--rcpt", "nobody"]).len(), 0);
    assert_eq!(ids(&["--min-score", "9"]), ["AAAAAAAAAAA1", "AAAAAAAAAAA3"]);
    assert_eq!(ids(&["--since", "7d"]), ["AAAAAAAAAAA2", "AAAAAAAAAAA3"]);
    assert_eq!(ids(&["--since", "2000-01-01T00:00:00Z"]).len(), 3);
    let e = json(&filterq(&["list", "--json"], &s.path()));
    assert_eq!(e[0]["recipients"][1], "carol@example.net");
    assert_eq!(e[0]["hits"][0]["name"], "GTUBE");
    let o = filterq(&["list", "--since", "yesterday-ish"], &s.path());
    assert_eq!(o.status.code(), Some(64));
    assert!(text(&o).1.contains("--since `yesterday-ish`"));
}

#[test]
fn show_and_cat() {
    let s = Store::new();
    let msg = s.add("BBBBBBBBBBB1", 0, "spam", 12.5, "a@x.test");
    let o = filterq(&["show", "BBBBBBBBBBB1"], &s.path());
    let (out, _) = text(&o);
    assert!(o.status.success());
    for needle in [
        "ID:          BBBBBBBBBBB1",
        "Reason:      spam",
        "Score:       12.5",
        "Client:      192.0.2.1 (HELO mx.x.test)",
        "Recipients:  <bob@example.net>, <carol@example.net>",
        "  GTUBE",
        "Headers:\nFrom: <a@x.test>\r\nSubject: held BBBBBBBBBBB1\r\n",
    ] {
        assert!(out.contains(needle), "`{needle}` not in\n{out}");
    }
    assert!(!out.contains("body of"), "show prints headers only");
    let e = json(&filterq(&["show", "--json", "BBBBBBBBBBB1"], &s.path()));
    assert_eq!(e["score"], 12.5);
    let o = filterq(&["cat", "BBBBBBBBBBB1"], &s.path());
    assert!(o.status.success());
    assert_eq!(o.stdout, msg, "cat gives the exact bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn release_once_then_force_and_alternate_recipients() {
    let s = Store::new();
    let msg = s.add("CCCCCCCCCCC1", 0, "spam", 1000.0, "a@x.test");
    let sink = Sink::start(Behaviour::default()).await;
    let cfg = s.config(sink.addr);
    let run = move |args: Vec<String>| {
        let cfg = cfg.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new(env!("CARGO_BIN_EXE_filterq"))
                    .arg("--config")
                    .arg(&cfg)
                    .args(&args)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let o = run(args(&["release", "CCCCCCCCCCC1"])).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("<bob@example.net>: 250"), "{out}");
    assert!(out.contains("released CCCCCCCCCCC1 to bob@example.net, carol@example.net"));
    let got = sink.received();
    assert_eq!(got.len(), 1);
    let mut want = b"X-Quarantine-ID: <CCCCCCCCCCC1>\r\n".to_vec();
    want.extend_from_slice(&msg);
    assert_eq!(
        got[0].data, want,
        "the message as received, with X-Quarantine-ID"
    );
    assert!(
        got[0]
            .mail
            .starts_with("MAIL FROM:<a@x.test> BODY=8BITMIME")
            && got[0].mail.contains(" RET=HDRS")
            && got[0].mail.contains(" ENVID=Q123"),
        "the original envelope, DSN parameters included: {}",
        got[0].mail
    );
    assert_eq!(
        got[0].rcpts,
        [
            "RCPT TO:<bob@example.net> NOTIFY=FAILURE ORCPT=rfc822;bob@example.net",
            "RCPT TO:<carol@example.net>"
        ]
    );
    // A second release needs --force.
    let o = run(args(&["release", "CCCCCCCCCCC1"])).await;
    assert_eq!(o.status.code(), Some(64));
    assert!(text(&o).1.contains("already released"), "{:?}", text(&o));
    assert_eq!(sink.count(), 1);
    let o = run(args(&[
        "release",
        "CCCCCCCCCCC1",
        "--force",
        "--to",
        "admin@example.net",
    ]))
    .await;
    assert!(o.status.success(), "{:?}", text(&o));
    let got = sink.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].rcpts, ["RCPT TO:<admin@example.net>"]);
    assert!(
        !got[1].mail.contains("RET="),
        "alternates get no DSN: {}",
        got[1].mail
    );
    let e = json(&run(args(&["show", "--json", "CCCCCCCCCCC1"])).await);
    assert_eq!(e["released"].as_array().unwrap().len(), 2);
    assert_eq!(e["released"][1]["recipients"][0], "admin@example.net");
    let (out, _) = text(&run(args(&["list"])).await);
    assert!(out.contains("spam*"), "released entries are marked:\n{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn release_with_the_next_hop_down_or_refusing_keeps_the_entry() {
    let s = Store::new();
    s.add("DDDDDDDDDDD1", 0, "spam", 1000.0, "a@x.test");
    let dead: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = s.config(dead);
    let o = Command::new(env!("CARGO_BIN_EXE_filterq"))
        .arg("--config")
        .arg(&cfg)
        .args(["release", "DDDDDDDDDDD1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(75));
    let err = text(&o).1;
    assert!(
        err.contains(&format!(
            "next hop [{}]:{} unavailable",
            dead.ip(),
            dead.port()
        )) && err.contains("DDDDDDDDDDD1 stays in the quarantine"),
        "{err}"
    );
    assert!(s.q.get("DDDDDDDDDDD1").unwrap().released.is_empty());
    // A next hop that refuses the content for good.
    let sink = Sink::start(Behaviour {
        data_reply: Some("554 5.7.1 no thanks".into()),
        ..Behaviour::default()
    })
    .await;
    let cfg = s.config(sink.addr);
    let o = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_filterq"))
            .arg("--config")
            .arg(&cfg)
            .args(["release", "DDDDDDDDDDD1"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(69), "{:?}", text(&o));
    assert!(
        text(&o).1.contains("refused: 554 5.7.1 no thanks"),
        "{:?}",
        text(&o)
    );
    assert!(s.q.get("DDDDDDDDDDD1").unwrap().released.is_empty());
}

#[test]
fn delete_purge_and_stats() {
    let s = Store::new();
    s.add("EEEEEEEEEEE1", 45, "spam", 20.0, "a@x.test");
    s.add("EEEEEEEEEEE2", 31, "ratelimit", 1.0, "b@x.test");
    s.add("EEEEEEEEEEE3", 1, "spam", 30.0, "c@x.test");
    s.add("EEEEEEEEEEE4", 0, "spam", 30.0, "d@x.test");
    let st = json(&filterq(&["stats", "--json"], &s.path()));
    assert_eq!(st["entries"], 4);
    assert_eq!(st["by_reason"]["spam"], 3);
    assert_eq!(st["by_reason"]["ratelimit"], 1);
    let (out, _) = text(&filterq(&["stats"], &s.path()));
    assert!(
        out.contains("entries:   4 (") && out.contains("reason spam: 3"),
        "{out}"
    );
    let o = filterq(&["purge", "--older-than", "30d"], &s.path());
    assert!(o.status.success());
    assert!(text(&o).0.starts_with("purged 2 entries"), "{:?}", text(&o));
    let o = filterq(&["delete", "EEEEEEEEEEE3"], &s.path());
    assert!(o.status.success());
    assert_eq!(text(&o).0, "deleted EEEEEEEEEEE3\n");
    let left: Vec<String> =
        s.q.list()
            .unwrap()
            .into_iter()
            .map(|e| e.unwrap().id)
            .collect();
    assert_eq!(left, ["EEEEEEEEEEE4"]);
    assert_eq!(
        std::fs::read_dir(s.path()).unwrap().count(),
        3,
        "ID.eml, ID.json and tmp/ only"
    );
    let o = filterq(&["purge", "--older-than", "soon"], &s.path());
    assert_eq!(o.status.code(), Some(64));
}

#[test]
fn errors_name_the_problem() {
    let s = Store::new();
    s.add("FFFFFFFFFFF1", 0, "spam", 20.0, "a@x.test");
    for (args, code, needle) in [
        (
            vec!["show", "FFFFFFFFFFF9"],
            66,
            "no quarantined message with id `FFFFFFFFFFF9`",
        ),
        (
            vec!["delete", "FFFFFFFFFFF9"],
            66,
            "no quarantined message with id",
        ),
        (vec!["cat", "../../etc/x"], 66, "is not a quarantine id"),
    ] {
        let o = filterq(&args, &s.path());
        assert_eq!(o.status.code(), Some(code), "{args:?}: {:?}", text(&o));
        assert!(text(&o).1.contains(needle), "{args:?}: {:?}", text(&o));
    }
    // A corrupt entry is named, and list still shows the good ones.
    std::fs::write(s.path().join("FFFFFFFFFFF2.json"), b"{\"id\": 3").unwrap();
    let o = filterq(&["list"], &s.path());
    assert_eq!(o.status.code(), Some(65));
    let (out, err) = text(&o);
    assert!(out.contains("FFFFFFFFFFF1"), "{out}");
    assert!(err.contains("FFFFFFFFFFF2.json: corrupt entry"), "{err}");
    let o = filterq(&["show", "FFFFFFFFFFF2"], &s.path());
    assert_eq!(o.status.code(), Some(65));
    // A missing store and a bad config.
    let o = filterq(&["list"], Path::new("/nonexistent/quarantine"));
    assert_eq!(o.status.code(), Some(74));
    assert!(
        text(&o).1.contains("/nonexistent/quarantine"),
        "{:?}",
        text(&o)
    );
    let bad = s.dir.path().join("bad.toml");
    std::fs::write(&bad, "[quarantine]\ndirr = 1\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_filterq"))
        .arg("--config")
        .arg(&bad)
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78));
    assert!(text(&o).1.contains("dirr"), "{:?}", text(&o));
    let _ = Duration::ZERO;
}
