//! `filtertrain` as a user runs it, on temporary stores, and Bayes end to end in filterd.

use crate::util::sink::{Behaviour, Sink};
use crate::util::{Client, Filterd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const SPAM_WORDS: &[&str] = &[
    "viagra",
    "casino",
    "winner",
    "lottery",
    "pills",
    "unsubscribe",
    "offer",
    "cheap",
    "bonus",
    "cash",
];
const HAM_WORDS: &[&str] = &[
    "meeting", "minutes", "project", "schedule", "review", "patch", "kernel", "release", "agenda",
    "notes",
];

/// A synthetic message: `words` with some variety, so each message is distinct.
pub(crate) fn synthetic(i: usize, spam: bool) -> String {
    let words = if spam { SPAM_WORDS } else { HAM_WORDS };
    let body: Vec<&str> = (0..40)
        .map(|k| words[(i * 7 + k * 3) % words.len()])
        .collect();
    let from = if spam {
        "deals@promo.example.com"
    } else {
        "alice@example.org"
    };
    format!(
        "From: {from}\r\nTo: bob@example.net\r\nSubject: {} {i}\r\nMessage-ID: <{i}.{spam}@example>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n{}\r\n",
        words[i % words.len()],
        body.join(" ")
    )
}

/// A maildir-like folder (`cur/`) of synthetic messages.
pub(crate) fn folder(
    root: &Path,
    name: &str,
    spam: bool,
    range: std::ops::Range<usize>,
) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("cur")).unwrap();
    for i in range {
        std::fs::write(dir.join("cur").join(format!("{i}.msg")), synthetic(i, spam)).unwrap();
    }
    dir
}

fn train(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_filtertrain"))
        .arg("--dbpath")
        .arg(db)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run filtertrain")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn magic(db: &Path) -> String {
    let o = train(db, &["--dump", "magic"]);
    assert!(o.status.success());
    stdout(&o)
}

fn magic_value(db: &Path, label: &str) -> u64 {
    magic(db)
        .lines()
        .find(|l| l.ends_with(&format!("non-token data: {label}")))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{label} not in dump"))
}

#[test]
fn learns_relearns_forgets_and_round_trips_backups() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let spam = folder(tmp.path(), "spam", true, 0..30);
    let ham = folder(tmp.path(), "ham", false, 0..30);
    let s = spam.to_str().unwrap();
    let h = ham.to_str().unwrap();

    let o = train(&db, &["--spam", s, "--ham", h]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        stdout(&o),
        "Learned tokens from 60 message(s) (60 message(s) examined)\n"
    );
    // Not a tty: nothing but the summary.
    assert_eq!(String::from_utf8_lossy(&o.stderr), "");
    let o = train(&db, &["--spam", s, "--ham", h]);
    assert_eq!(
        stdout(&o),
        "Learned tokens from 0 message(s) (60 message(s) examined)\n"
    );
    assert_eq!(
        (magic_value(&db, "nspam"), magic_value(&db, "nham")),
        (30, 30)
    );
    let dump = magic(&db);
    assert_eq!(dump.lines().count(), 10);
    assert!(
        dump.starts_with(
            "0.000          0          1          0  non-token data: bayes db version\n"
        ),
        "{dump}"
    );
    assert!(
        dump.contains("0.000          0         30          0  non-token data: nspam\n"),
        "{dump}"
    );

    // Moving a message between classes, sa-learn style.
    let one = spam.join("cur/3.msg");
    let o = train(&db, &["--ham", one.to_str().unwrap()]);
    assert_eq!(
        stdout(&o),
        "Learned tokens from 1 message(s) (1 message(s) examined)\n"
    );
    assert_eq!(
        (magic_value(&db, "nspam"), magic_value(&db, "nham")),
        (29, 31)
    );
    let o = train(&db, &["--forget", one.to_str().unwrap()]);
    assert_eq!(
        stdout(&o),
        "Forgot tokens from 1 message(s) (1 message(s) examined)\n"
    );
    assert_eq!(
        (magic_value(&db, "nspam"), magic_value(&db, "nham")),
        (29, 30)
    );

    // Backup, clear, restore: an identical store.
    let before = magic(&db);
    let data_before = stdout(&train(&db, &["--dump", "data"]));
    assert!(data_before.lines().count() > 10);
    let backup = train(&db, &["--backup"]);
    assert!(backup.status.success());
    let file = tmp.path().join("backup.txt");
    std::fs::write(&file, &backup.stdout).unwrap();
    assert!(train(&db, &["--clear"]).status.success());
    assert_eq!(magic_value(&db, "ntokens"), 0);
    assert!(
        train(&db, &["--restore", file.to_str().unwrap()])
            .status
            .success()
    );
    assert_eq!(magic(&db), before);
    assert_eq!(stdout(&train(&db, &["--dump", "data"])), data_before);

    let o = train(&db, &["--force-expire"]);
    assert!(o.status.success());
}

#[test]
fn mbox_stdin_folders_and_bad_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let mbox = tmp.path().join("spam.mbox");
    let mut text = String::new();
    for i in 0..5 {
        text.push_str(&format!(
            "From sender@example Mon Nov 23 10:00:00 2026\n{}\n",
            synthetic(100 + i, true).replace("\r\n", "\n")
        ));
    }
    std::fs::write(&mbox, text).unwrap();
    let o = train(&db, &["--mbox", "--spam", mbox.to_str().unwrap()]);
    assert_eq!(
        stdout(&o),
        "Learned tokens from 5 message(s) (5 message(s) examined)\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_filtertrain"))
        .arg("--dbpath")
        .arg(&db)
        .args(["--ham", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(synthetic(7, false).as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        stdout(&o),
        "Learned tokens from 1 message(s) (1 message(s) examined)\n"
    );

    let ham = folder(tmp.path(), "ham", false, 10..14);
    let list = tmp.path().join("folders");
    std::fs::write(
        &list,
        format!(
            "# comment\nham:dir:{}\nspam:mbox:{}\n",
            ham.display(),
            mbox.display()
        ),
    )
    .unwrap();
    let o = train(&db, &["--folders", list.to_str().unwrap()]);
    assert_eq!(
        stdout(&o),
        "Learned tokens from 4 message(s) (9 message(s) examined)\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // An unreadable input: reported by path, the rest learned, exit status 1.
    let missing = tmp.path().join("no-such-folder");
    let garbage = tmp.path().join("garbage");
    std::fs::write(&garbage, "just some words\n").unwrap();
    let o = train(
        &db,
        &[
            "--ham",
            missing.to_str().unwrap(),
            garbage.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no-such-folder") && err.contains(garbage.to_str().unwrap()),
        "{err}"
    );
    assert_eq!(
        stdout(&o),
        "Learned tokens from 0 message(s) (1 message(s) examined)\n"
    );
}

#[test]
fn damaged_stores_and_unwritable_dirs_are_refused_by_path() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let spam = folder(tmp.path(), "spam", true, 0..3);
    assert!(
        train(&db, &["--spam", spam.to_str().unwrap()])
            .status
            .success()
    );
    let file = db.join("bayes.db");
    let bytes = std::fs::read(&file).unwrap();

    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let o = train(&db, &["--dump", "magic"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(file.to_str().unwrap()) && err.contains("truncated"),
        "{err}"
    );

    let mut v9 = bytes.clone();
    v9[8] = 9;
    std::fs::write(&file, &v9).unwrap();
    let o = train(&db, &["--spam", spam.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("format version 9")
            && err.contains(file.to_str().unwrap()),
        "{err}"
    );

    // filterd refuses to start on it, naming the file.
    let o = Command::new(env!("CARGO_BIN_EXE_filterd"))
        .arg("--check-config")
        .arg("--config")
        .arg({
            let c = tmp.path().join("f.toml");
            std::fs::write(&c, format!("[bayes]\nstate_dir = \"{}\"\n", db.display())).unwrap();
            c
        })
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&o.stderr).contains(file.to_str().unwrap()));

    // A state dir that cannot be written (even root cannot create files under /proc).
    let o = train(
        Path::new("/proc/self/filterd-state"),
        &["--spam", spam.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("/proc/self/filterd-state"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn filterd_uses_the_store_and_picks_up_new_learning_without_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let spam = folder(tmp.path(), "spam", true, 0..10);
    let ham = folder(tmp.path(), "ham", false, 0..10);
    // Not enough learned yet for Bayes to vote (min 15 each here).
    assert!(
        train(
            &db,
            &[
                "--spam",
                spam.to_str().unwrap(),
                "--ham",
                ham.to_str().unwrap()
            ]
        )
        .status
        .success()
    );
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start_with(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[next_hop]\naddress = \"{}\"\n[bayes]\nstate_dir = \"{}\"\nmin_spam = 15\nmin_ham = 15\n",
        sink.addr,
        db.display()
    ));
    let send = |i: usize, spam: bool| {
        let addr = f.addr();
        async move {
            let (mut c, _) = Client::connect(addr).await;
            let r = c
                .send_message(
                    "a@example.org",
                    &["bob@example.net"],
                    synthetic(i, spam).as_bytes(),
                )
                .await;
            assert!(r.starts_with("250 "), "{r}");
        }
    };
    send(500, true).await;
    let first = String::from_utf8_lossy(&sink.received()[0].data).into_owned();
    assert!(!first.contains("BAYES_"), "Bayes voted too early: {first}");

    let more_spam = folder(tmp.path(), "spam2", true, 10..20);
    let more_ham = folder(tmp.path(), "ham2", false, 10..20);
    assert!(
        train(
            &db,
            &[
                "--spam",
                more_spam.to_str().unwrap(),
                "--ham",
                more_ham.to_str().unwrap()
            ]
        )
        .status
        .success()
    );
    assert!(
        f.wait_log("Bayes store reloaded", Duration::from_secs(10)),
        "{}",
        f.log_text()
    );

    send(501, true).await;
    send(502, false).await;
    let got = sink.received();
    let spam_text = String::from_utf8_lossy(&got[1].data);
    let ham_text = String::from_utf8_lossy(&got[2].data);
    assert!(spam_text.contains("BAYES_99=3.5"), "{spam_text}");
    assert!(ham_text.contains("BAYES_00=-1.9"), "{ham_text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn autolearn_learns_clear_cases_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start_with(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[next_hop]\naddress = \"{}\"\n[bayes]\nstate_dir = \"{}\"\nautolearn = true\nautolearn_spam_above = 100\n[model]\nenabled = false\n[actions]\nspam_destiny = \"pass\"\n",
        sink.addr,
        db.display()
    ));
    let (mut c, _) = Client::connect(f.addr()).await;
    let r = c
        .send_message("a@example.org", &["bob@example.net"], &crate::util::gtube())
        .await;
    assert!(r.starts_with("250 "), "{r}");
    let r = c
        .send_message(
            "a@example.org",
            &["bob@example.net"],
            synthetic(1, false).as_bytes(),
        )
        .await;
    assert!(r.starts_with("250 "), "{r}");
    let got = sink.received();
    assert!(String::from_utf8_lossy(&got[0].data).contains("autolearn=spam"));
    assert!(String::from_utf8_lossy(&got[1].data).contains("autolearn=no"));
    f.signal("HUP");
    assert!(
        f.wait_log("autolearned 1 message(s)", Duration::from_secs(10)),
        "{}",
        f.log_text()
    );
    assert_eq!(magic_value(&db, "nspam"), 1);
}

/// The recorded accuracy must not regress: Bayes alone on fold 0 of the shared corpus.
#[test]
fn corpus_evaluation_keeps_the_recorded_accuracy() {
    let Some(corpus) = crate::util::corpus() else {
        return;
    };
    let o = crate::util::corpus_tools("evaluate", &corpus)
        .output()
        .expect("run corpus-tools");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    // (1-ROCA%, recall%) of a table row.
    let figures = |label: &str| -> (f64, f64) {
        let row = out
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label} row:\n{out}"));
        let cols: Vec<f64> = row
            .split('|')
            .filter_map(|c| c.trim().parse().ok())
            .collect();
        (cols[cols.len() - 2], cols[cols.len() - 1])
    };
    let bayes = figures("| Bayes alone");
    let model = figures("| model alone");
    let combined = figures("| filterd (headers+Bayes+model)");
    assert!(
        bayes.0 <= 0.06 && bayes.1 >= 95.0,
        "Bayes below its goals {bayes:?}:\n{out}"
    );
    assert!(
        model.0 <= 0.03 && model.1 >= 98.0,
        "model below its goals {model:?}:\n{out}"
    );
    // Combined ranks better than each part (1-ROCA) and recalls at least as much at
    // 0.1% FP. (Recall was strictly better, 99.0 vs 98.8, until mail-auth switched on
    // mail-parser's full charset decoding; see README "Accuracy".)
    for part in [bayes, model] {
        assert!(
            combined.0 < part.0 && combined.1 >= part.1,
            "combined {combined:?} not better than a part {part:?}:\n{out}"
        );
    }
}
