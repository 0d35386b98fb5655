//! The binaries as a user runs them: config checking and exit codes.

use crate::util::repo;
use std::process::Command;

#[test]
fn check_config_accepts_the_example_and_defaults() {
    let out = Command::new(env!("CARGO_BIN_EXE_filterd"))
        .arg("--check-config")
        .arg("--config")
        .arg(repo().join("filterd.toml.example"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_filterd"))
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(out.status.success());
}

/// `filterd --check-config` on a config file holding `text`.
fn check_text(text: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("filterd.toml");
    std::fs::write(&path, text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_filterd"))
        .args(["--check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap()
}

#[test]
fn check_config_lists_every_problem_and_exits_78() {
    let out = check_text(
        "[server]\nlisten = [\"localhost\"]\nmax_connections = 0\n[scores]\nNOT_A_RULE = 2\n[levles]\n",
    );
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in ["server.listen", "max_connections", "NOT_A_RULE", "levles"] {
        assert!(err.contains(needle), "{needle} not reported:\n{err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_filterd"))
        .args(["--config", "/nonexistent/filterd.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/filterd.toml"));
}

#[test]
fn an_unwritable_quarantine_is_refused_with_its_path() {
    let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n[bayes]\nenabled = false\n[model]\nenabled = false\n[quarantine]\ndir = \"/proc/filterd-test/quarantine\"\n";
    let out = check_text(text);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("quarantine: /proc/filterd-test/quarantine"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_filterd"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(78),
        "the same code as --check-config for the same fault"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("quarantine: /proc/filterd-test/quarantine"),
        "{err}"
    );
}

#[test]
fn the_commented_policy_banks_of_the_example_are_valid() {
    let example = std::fs::read_to_string(repo().join("filterd.toml.example")).unwrap();
    let start = example.find("# [[policy]]").expect("a policy example");
    let block: String = example[start..]
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.strip_prefix("# ").unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(block.matches("[[policy]]").count() >= 2, "{block}");
    let q = tempfile::tempdir().unwrap();
    let out = check_text(&format!(
        "{block}\n[bayes]\nenabled = false\n[quarantine]\ndir = \"{}\"\n",
        q.path().join("q").display()
    ));
    assert!(
        out.status.success(),
        "{}\n{block}",
        String::from_utf8_lossy(&out.stderr)
    );
}
