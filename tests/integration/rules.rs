//! The rule engine as data: `tests/fixtures/rules/<file>.cases` for each shipped
//! `rules/<file>.cf` (the case format of `checks.rs`), run through the built-in checks and
//! the shipped rules as the pipeline runs them; every scored rule must fire in some case
//! and be asserted silent in another. Then today's mail (`tests/fixtures/mail/`): with the
//! shipped model and no Bayes training, no legitimate message reaches tag2_level and every
//! spam does. And the rule author's tools: `filterd rules lint`, `rules test`,
//! `--check-config` with a broken site rule.

use crate::checks::{Case, DEFAULT_NOW, failing_model, parse, shipped_model};
use crate::util::repo;
use filterd::checks::{Hits, Input, Registry};
use filterd::message::Features;
use filterd::rules::live::{LiveRules, Scoring};
use filterd::rules::{Sources, View};
use filterd::verdict::Verdict;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, OnceLock};

fn shipped() -> Arc<Scoring> {
    static SET: OnceLock<Arc<Scoring>> = OnceLock::new();
    SET.get_or_init(|| {
        LiveRules::load(Sources::default(), BTreeMap::new(), vec![])
            .expect("the shipped rules load")
            .current()
    })
    .clone()
}

/// tag2_level of the defaults.
fn tag2() -> f64 {
    levels().tag2
}

fn levels() -> filterd::verdict::Levels {
    static LEVELS: OnceLock<filterd::verdict::Levels> = OnceLock::new();
    *LEVELS.get_or_init(|| {
        filterd::config::Config::defaults()
            .expect("defaults")
            .levels
    })
}

/// Built-in checks then rules, as the pipeline runs them; all hits.
fn hits_of(case_model: Option<&str>, msg: &[u8], now: i64, case: Option<&Case>) -> Hits {
    let model = match case_model {
        None => None,
        Some("shipped") => Some(shipped_model()),
        Some("failing") => Some(failing_model()),
        Some(other) => panic!("model: shipped or failing, not `{other}`"),
    };
    let registry = Registry::new(None, model);
    let features = Features::extract_with(msg, now, true);
    let auth = case.and_then(|c| c.auth.as_ref());
    let input = Input {
        features: &features,
        auth,
        virus_unchecked: false,
        bayes: None,
    };
    let mut hits = registry.run(&input);
    let scoring = shipped();
    let view = View::new(&features, &hits, auth);
    let mut fired = Hits::default();
    scoring.rules.run(&view, &mut fired);
    hits.extend(&fired);
    hits
}

#[test]
fn every_rule_case_holds_and_every_rule_fires_and_stays_quiet() {
    let scoring = shipped();
    let mut failures = vec![];
    let (mut fired, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    let dir = repo().join("rules");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("rules/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cf"))
        .collect();
    files.sort();
    for cf in files {
        let stem = cf.file_stem().unwrap_or_default().to_string_lossy();
        let path = repo().join(format!("tests/fixtures/rules/{stem}.cases"));
        assert!(
            path.exists(),
            "{}: every rule file has cases",
            path.display()
        );
        for case in parse(&path) {
            let at = format!("{}:{} ({})", path.display(), case.line, case.name);
            let now = case.now.unwrap_or(DEFAULT_NOW);
            let hits = hits_of(case.model.as_deref(), &case.message, now, Some(&case));
            let names = hits.names();
            for want in &case.expect {
                if names.contains(&want.as_str()) {
                    fired.insert(want.clone());
                } else {
                    failures.push(format!("{at}: {want} did not fire (hits: {names:?})"));
                }
            }
            for no in &case.reject {
                if names.contains(&no.as_str()) {
                    failures.push(format!("{at}: {no} fired (hits: {names:?})"));
                } else {
                    quiet.insert(no.clone());
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let scored: Vec<&str> = scoring
        .rules
        .rules()
        .iter()
        .filter(|r| r.reported())
        .map(|r| r.name)
        .collect();
    let never: Vec<&&str> = scored.iter().filter(|n| !fired.contains(**n)).collect();
    let unguarded: Vec<&&str> = scored.iter().filter(|n| !quiet.contains(**n)).collect();
    assert!(never.is_empty(), "rules no case fires: {never:?}");
    assert!(
        unguarded.is_empty(),
        "rules no case asserts silent (`expect: !NAME`): {unguarded:?}"
    );
}

/// The messages of one folder of `tests/fixtures/mail`, with LF turned into CRLF.
fn mail(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = repo().join("tests/fixtures/mail").join(kind);
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| {
            let text = std::fs::read(&p).expect("fixture");
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (name, crlf(&text))
        })
        .collect();
    v.sort();
    v
}

fn crlf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + b.len() / 40);
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' && (i == 0 || b[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(c);
    }
    out
}

fn score(msg: &[u8]) -> Verdict {
    let hits = hits_of(Some("shipped"), msg, DEFAULT_NOW, None);
    Verdict::new(&hits, &shipped().scores, levels())
}

#[test]
fn todays_mail_is_judged_right_with_the_shipped_model_and_no_bayes() {
    let tag2 = tag2();
    let (ham, spam) = (mail("ham"), mail("spam"));
    assert!(
        ham.len() >= 20 && spam.len() >= 20,
        "{} ham, {} spam",
        ham.len(),
        spam.len()
    );
    let mut wrong = vec![];
    let mut table = String::new();
    for (kind, set) in [("ham", &ham), ("spam", &spam)] {
        for (name, msg) in set {
            let v = score(msg);
            table.push_str(&format!("{kind} {:>7.3} {name}\n", v.score));
            if (kind == "ham") == (v.score >= tag2) {
                wrong.push(format!("{kind} {name}: {} {:?}", v.score, v.hits));
            }
        }
    }
    eprintln!("{table}");
    assert!(wrong.is_empty(), "tag2_level {tag2}:\n{}", wrong.join("\n"));
}

#[test]
fn sextortion_with_split_words_a_bitcoin_address_and_no_subject_is_spam() {
    let msg = crlf(
        &std::fs::read(
            repo().join("tests/fixtures/mail/spam/02-sextortion-nosubject-split-words.eml"),
        )
        .expect("fixture"),
    );
    assert!(
        !msg.windows(9)
            .any(|w| w.eq_ignore_ascii_case(b"\nsubject:"))
    );
    let v = score(&msg);
    let names: Vec<&str> = v.hits.iter().map(|h| h.0).collect();
    for n in [
        "SPLIT_SPAM_WORDS",
        "BTC_ADDRESS",
        "SEXTORTION",
        "MISSING_SUBJECT",
    ] {
        assert!(names.contains(&n), "{n}: {names:?}");
    }
    let tag2 = tag2();
    assert!(v.score > tag2, "{} <= {tag2}: {:?}", v.score, v.hits);
}

fn filterd(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_filterd"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run filterd");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn site_config(dir: &Path, rule_text: &str) -> String {
    let rules = dir.join("rules.d");
    std::fs::create_dir_all(&rules).expect("mkdir");
    std::fs::write(rules.join("local.cf"), rule_text).expect("write");
    let cfg = dir.join("filterd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[rules]\ndirs = [\"{}\"]\n[local_domains]\npostconf = false\n",
            rules.display()
        ),
    )
    .expect("write");
    cfg.display().to_string()
}

#[test]
fn a_broken_site_rule_is_refused_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = site_config(
        dir.path(),
        "# site rules\nbody SITE_OK /fine/\nbody SITE_BAD /(unclosed/\nmeta SITE_META SITE_OK && NOPE\n",
    );
    for args in [
        vec!["--check-config", "--config", &cfg],
        vec!["rules", "lint", "--config", &cfg],
    ] {
        let (code, out) = filterd(&args);
        assert_eq!(code, 78, "{args:?}: {out}");
        assert!(
            out.contains("local.cf:3: SITE_BAD: pattern /(unclosed/"),
            "{out}"
        );
        assert!(
            out.contains("local.cf:4: SITE_META: no rule or hit called `NOPE`"),
            "{out}"
        );
    }
}

#[test]
fn rules_lint_and_test_say_what_they_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = site_config(
        dir.path(),
        "body SITE_FINE /quarterly\\s+planning/i\nscore SITE_FINE 0.5\ndescribe SITE_FINE Site test\nscore SEXTORTION 0\n",
    );
    let (code, out) = filterd(&["rules", "lint", "--config", &cfg]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("rules compiled") && out.contains("local.cf: 1"),
        "{out}"
    );
    let eml = dir.path().join("m.eml");
    std::fs::write(
        &eml,
        "From: a@example.org\r\nTo: b@example.net\r\nSubject: Quarterly  planning\r\n\r\nSee you.\r\n",
    )
    .expect("write");
    let (code, out) = filterd(&[
        "rules",
        "test",
        "--config",
        &cfg,
        &eml.display().to_string(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("0.500 SITE_FINE") && out.contains("matched \"Quarterly  planning\""),
        "{out}"
    );
    let sext = repo().join("tests/fixtures/mail/spam/02-sextortion-nosubject-split-words.eml");
    let (_, out) = filterd(&[
        "rules",
        "test",
        "--config",
        &cfg,
        &sext.display().to_string(),
    ]);
    assert!(
        !out.contains(" SEXTORTION "),
        "score 0 turns a shipped rule off: {out}"
    );
    assert!(out.contains("SPLIT_SPAM_WORDS"), "{out}");
}

/// A block-list config against the loopback DNS server's test zones.
fn dnsbl_config(dns: std::net::SocketAddr) -> String {
    format!(
        "[auth]\nnameservers = [\"{dns}\"]\nbudget_ms = 1500\ndns_timeout_ms = 500\ndns_attempts = 1\n\
         [model]\nenabled = false\n[levels]\nkill_level = 1000.0\n\
         [[dnsbl.lists]]\nzone = \"zen.bl.test\"\nkind = \"ip\"\nreturns = [\n\
           {{ code = \"127.0.0.2\", hit = \"T_RCVD_IN_SBL\", score = 2.5 }},\n\
           {{ code = \"127.0.0.4-7\", hit = \"T_RCVD_IN_XBL\", score = 2.0 }},\n]\n\
         [[dnsbl.lists]]\nzone = \"dbl.bl.test\"\nkind = \"domain\"\nreturns = [\n\
           {{ code = \"127.0.1.4\", hit = \"T_URIBL_PHISH\", score = 3.5 }},\n]\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn block_lists_are_asked_about_the_client_and_the_link_domains() {
    use crate::util::dns::{DnsServer, Rec};
    use crate::util::sink::{Behaviour, Sink};
    use crate::util::{Client, Filterd};
    let mut dns = DnsServer::start(&[
        Rec::A("7.113.0.203.zen.bl.test", [127, 0, 0, 2]),
        Rec::A("6.113.0.203.zen.bl.test", [127, 0, 0, 5]),
        Rec::A("5.113.0.203.zen.bl.test", [127, 255, 255, 254]),
        Rec::A("phish-shop.co.uk.dbl.bl.test", [127, 0, 1, 4]),
        Rec::Txt("example.org", "v=spf1 ip4:203.0.113.0/24 -all"),
    ])
    .await;
    let sink = Sink::start(Behaviour::default()).await;
    let config = dnsbl_config(dns.addr) + "[metrics]\nlisten = \"127.0.0.1:0\"\n";
    let f = Filterd::start(sink.addr, &config);
    let body = |link: &str| {
        format!(
            "From: shop@example.org\r\nTo: bob@example.net\r\nSubject: your order\r\n\
             Message-ID: <o1@example.org>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
             Content-Type: text/html\r\n\r\n<p>Track it <a href=\"{link}\">here</a></p>\r\n"
        )
    };
    let cases = [
        (
            "203.0.113.7",
            "https://www.login.phish-shop.co.uk/x",
            &["T_RCVD_IN_SBL", "T_URIBL_PHISH"][..],
            &[][..],
        ),
        (
            "203.0.113.6",
            "https://example.org/track",
            &["T_RCVD_IN_XBL"],
            &["T_RCVD_IN_SBL", "T_URIBL_PHISH"],
        ),
        // Spamhaus' "public resolver" refusal is no hit; a private client is never asked.
        (
            "203.0.113.5",
            "https://example.org/track",
            &[],
            &["T_RCVD_IN_SBL", "T_RCVD_IN_XBL"],
        ),
        (
            "10.1.2.3",
            "https://example.org/track",
            &[],
            &["T_RCVD_IN_SBL", "T_RCVD_IN_XBL"],
        ),
    ];
    for (i, (ip, link, want, not)) in cases.iter().enumerate() {
        let (mut c, _) = Client::connect(f.addr()).await;
        let xf = format!("XFORWARD ADDR={ip} HELO=mail.example.org NAME=mail.example.org");
        let r = c
            .send_message_after(
                &[&xf],
                "shop@example.org",
                &["bob@example.net"],
                body(link).as_bytes(),
            )
            .await;
        assert!(r.starts_with("250"), "{r}");
        let got = String::from_utf8_lossy(&sink.received()[i].data).into_owned();
        let status = got
            .split("\r\n")
            .skip_while(|l| !l.starts_with("X-Spam-Status:"))
            .take_while(|l| l.starts_with("X-Spam-Status:") || l.starts_with([' ', '\t']))
            .collect::<String>();
        for w in *want {
            assert!(status.contains(w), "{ip}: {w} missing: {status}");
        }
        for n in *not {
            assert!(!status.contains(n), "{ip}: {n} present: {status}");
        }
    }
    // The same client again: answered from the cache, no new query.
    let before = dns.queries();
    let (mut c, _) = Client::connect(f.addr()).await;
    let xf = "XFORWARD ADDR=203.0.113.6 HELO=mail.example.org NAME=mail.example.org";
    let r = c
        .send_message_after(
            &[xf],
            "shop@example.org",
            &["bob@example.net"],
            body("https://example.org/track").as_bytes(),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    let lists_asked = dns.queries() - before;
    assert!(
        lists_asked <= 3,
        "{lists_asked} queries: the list answers were not cached"
    );
    // The metrics count each block-list look-up (five answered: two for the first message,
    // the listed and the refused client, the cached repeat; four links not listed) and the
    // parsed-record cache: the sender's SPF record is parsed once and then found four times
    // (negative answers are cached by the resolver below, not parsed). The policy service's
    // memo of whole SPF results is asked once per message and never filled by the scan.
    let metrics = f.metrics_addr().expect("metrics listener");
    let (_, text) = crate::metrics::get(metrics, "/metrics").await;
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(-1.0)
    };
    for (series, want) in [
        ("filterd_dnsbl_lookups_total{result=\"answered\"}", 5.0),
        ("filterd_dnsbl_lookups_total{result=\"nxdomain\"}", 4.0),
        ("filterd_dnsbl_lookups_total{result=\"error\"}", -1.0),
        (
            "filterd_dns_record_cache_total{kind=\"txt\",result=\"hit\"}",
            4.0,
        ),
        (
            "filterd_dns_record_cache_total{kind=\"spf_result\",result=\"miss\"}",
            5.0,
        ),
        ("filterd_dns_budget_exceeded_total{check=\"dnsbl\"}", -1.0),
    ] {
        assert_eq!(value(series), want, "{series}\n{text}");
    }
    dns.stop().await;
}
