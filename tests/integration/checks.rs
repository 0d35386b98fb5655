//! The checks as data: `tests/fixtures/checks/<check>.cases`, one file per check of the
//! registry, each a list of messages with the hits that must and must not fire, run through
//! the registry as the pipeline runs it. Every hit name a check can emit must fire in some
//! case, and README's hits table must list exactly the registry's names and scores.
//!
//! A case file: `#` comment lines before the first case; each case starts with
//! `=== name`, then directive lines, a blank line, and the raw message (lines joined with
//! CRLF; trailing blank lines dropped). Directives:
//!
//! - `expect: HIT !OTHER ...`: HIT must fire, OTHER must not;
//! - `now: 2026-11-23T14:00:00Z`: the scan time (default that one);
//! - `auth: spf=pass helo=none dkim=pass/author dkim=fail dmarc=reject arc=pass no-client-ip`:
//!   what sender authentication found (the checks never touch DNS);
//! - `train: spam 10` / `train: ham`: not a test but training: the message is learned that
//!   many times (as distinct messages) into the file's Bayes store, which then votes;
//! - `model: shipped` (models/spam-lr) or `model: failing` (a model that loads but cannot
//!   score a real message): the ONNX model the case runs with;
//! - `clamd: failed` / `clamd: clean`: what the virus scan found before the checks;
//! - `shared_bayes: unavailable`: the Bayes store is Redis and it did not answer.

use crate::util::repo;
use filterd::auth::{AuthResult, AuthVerdict, DkimVerdict, DmarcPolicy, DmarcVerdict};
use filterd::checks::{Input, Registry};
use filterd::message::Features;
use filterd::message::tokenize::Tokens;
use filterd::model::bayes::BayesParams;
use filterd::model::bayes_live::BayesLive;
use filterd::model::bayes_store::{Class, Store, message_id};
use filterd::model::onnx::OnnxModel;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Mon, 23 Nov 2026 14:00:00 +0000.
pub(crate) const DEFAULT_NOW: i64 = 1_795_442_400;

#[derive(Debug, Default)]
pub(crate) struct Case {
    pub(crate) name: String,
    pub(crate) line: usize,
    pub(crate) expect: Vec<String>,
    pub(crate) reject: Vec<String>,
    pub(crate) now: Option<i64>,
    pub(crate) auth: Option<AuthVerdict>,
    pub(crate) train: Option<(Class, usize)>,
    pub(crate) model: Option<String>,
    pub(crate) clamd: Option<String>,
    pub(crate) shared_bayes_down: bool,
    pub(crate) message: Vec<u8>,
}

fn fixtures() -> PathBuf {
    repo().join("tests/fixtures/checks")
}

/// Parse one case file; a malformed directive is a test failure naming file and line.
pub(crate) fn parse(path: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut cases: Vec<Case> = vec![];
    let mut body: Option<Vec<&str>> = None;
    let finish = |case: &mut Case, lines: Vec<&str>| {
        let mut lines = lines;
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        let mut m = lines.join("\r\n").into_bytes();
        if !m.is_empty() {
            m.extend_from_slice(b"\r\n");
        }
        case.message = m;
    };
    for (n, line) in text.lines().enumerate() {
        let at = format!("{}:{}", path.display(), n + 1);
        if let Some(name) = line.strip_prefix("=== ") {
            if let (Some(c), Some(lines)) = (cases.last_mut(), body.take()) {
                finish(c, lines);
            }
            cases.push(Case {
                name: name.trim().to_string(),
                line: n + 1,
                ..Case::default()
            });
            continue;
        }
        let Some(case) = cases.last_mut() else {
            assert!(
                line.is_empty() || line.starts_with('#'),
                "{at}: text before the first `=== ` case"
            );
            continue;
        };
        match &mut body {
            Some(lines) => lines.push(line),
            None if line.is_empty() => body = Some(vec![]),
            None => directive(case, line, &at),
        }
    }
    if let (Some(c), Some(lines)) = (cases.last_mut(), body.take()) {
        finish(c, lines);
    }
    cases
}

fn directive(case: &mut Case, line: &str, at: &str) {
    let (key, value) = line
        .split_once(':')
        .unwrap_or_else(|| panic!("{at}: not a `key: value` directive: {line}"));
    let value = value.trim();
    match key.trim() {
        "expect" => {
            for w in value.split_whitespace() {
                match w.strip_prefix('!') {
                    Some(no) => case.reject.push(no.to_string()),
                    None => case.expect.push(w.to_string()),
                }
            }
        }
        "now" => {
            let t = humantime::parse_rfc3339(value).unwrap_or_else(|e| panic!("{at}: {e}"));
            case.now = Some(filterd::clock::unix_secs(t) as i64);
        }
        "auth" => case.auth = Some(auth(value, at)),
        "train" => {
            let mut w = value.split_whitespace();
            let class = match w.next() {
                Some("spam") => Class::Spam,
                Some("ham") => Class::Ham,
                other => panic!("{at}: train: spam or ham, not {other:?}"),
            };
            let times = w.next().map_or(1, |n| {
                n.parse()
                    .unwrap_or_else(|_| panic!("{at}: `{n}` is not a count"))
            });
            case.train = Some((class, times));
        }
        "model" => case.model = Some(value.to_string()),
        "clamd" => match value {
            "failed" | "clean" => case.clamd = Some(value.to_string()),
            other => panic!("{at}: clamd: failed or clean, not `{other}`"),
        },
        "shared_bayes" => match value {
            "unavailable" => case.shared_bayes_down = true,
            other => panic!("{at}: shared_bayes: unavailable, not `{other}`"),
        },
        other => panic!("{at}: unknown directive `{other}`"),
    }
}

fn auth(value: &str, at: &str) -> AuthVerdict {
    let result = |r: &str| match r {
        "pass" => AuthResult::Pass,
        "fail" => AuthResult::Fail,
        "softfail" => AuthResult::SoftFail,
        "neutral" => AuthResult::Neutral,
        "none" => AuthResult::None,
        "temperror" => AuthResult::TempError,
        "permerror" => AuthResult::PermError,
        _ => panic!("{at}: `{r}` is not an authentication result"),
    };
    let mut a = AuthVerdict {
        no_client_ip: false,
        spf: None,
        spf_helo: None,
        dkim: vec![],
        dmarc: DmarcVerdict::Missing,
        arc: AuthResult::None,
        header: String::new(),
    };
    for item in value.split_whitespace() {
        match item.split_once('=') {
            None if item == "no-client-ip" => a.no_client_ip = true,
            Some(("spf", r)) => a.spf = Some(result(r)),
            Some(("helo", r)) => a.spf_helo = Some(result(r)),
            Some(("dkim", r)) => {
                let (r, author) = match r.strip_suffix("/author") {
                    Some(r) => (r, true),
                    None => (r, false),
                };
                a.dkim.push(DkimVerdict {
                    result: result(r),
                    domain: "example.org".into(),
                    author,
                });
            }
            Some(("dmarc", d)) => {
                a.dmarc = match d {
                    "pass" => DmarcVerdict::Pass,
                    "reject" => DmarcVerdict::Fail(DmarcPolicy::Reject),
                    "quarantine" => DmarcVerdict::Fail(DmarcPolicy::Quarantine),
                    "none" => DmarcVerdict::Fail(DmarcPolicy::None),
                    "missing" => DmarcVerdict::Missing,
                    "temperror" => DmarcVerdict::TempError,
                    "permerror" => DmarcVerdict::PermError,
                    _ => panic!("{at}: `{d}` is not a DMARC verdict"),
                }
            }
            Some(("arc", r)) => a.arc = result(r),
            _ => panic!("{at}: `{item}` is not spf=, helo=, dkim=, dmarc=, arc= or no-client-ip"),
        }
    }
    a
}

/// The Bayes store of a file's `train:` cases, voting from the first message of each class.
fn bayes_of(cases: &[Case]) -> Option<Arc<BayesLive>> {
    let mut store = Store::default();
    let mut trained = false;
    for c in cases {
        let Some((class, times)) = c.train else {
            continue;
        };
        trained = true;
        let tokens = Tokens::of_raw(&c.message);
        // Distinct ids per case and copy: the same text learned as the other class in
        // another case must count there, not move this case's copy (sa-learn's relearning).
        let id = message_id(&c.message) ^ ((c.line as u128) << 96);
        for i in 0..times {
            store.learn(id ^ ((i as u128) << 64), &tokens, class, DEFAULT_NOW as u64);
        }
    }
    let params = BayesParams {
        min_spam: 1,
        min_ham: 1,
        ..BayesParams::default()
    };
    trained.then(|| Arc::new(BayesLive::from_store(store, params)))
}

pub(crate) fn shipped_model() -> Arc<OnnxModel> {
    static MODEL: OnceLock<Arc<OnnxModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            Arc::new(OnnxModel::load(&repo().join("models/spam-lr")).expect("the shipped model"))
        })
        .clone()
}

/// A model directory holding `bytes` (with a manifest that honours the contract).
fn model_dir(bytes: &[u8]) -> tempfile::TempDir {
    use filterd::model::onnx::{DIM, FEATURISER_VERSION, Manifest, Metrics, Training};
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = Manifest {
        format_version: 1,
        featuriser_version: FEATURISER_VERSION,
        sha256: filterd::model::onnx::sha256_hex(bytes),
        inputs: Manifest::expected_inputs(),
        outputs: Manifest::expected_outputs(),
        dim: DIM,
        training: Training {
            command: "tests/integration/checks.rs".into(),
            data: "none".into(),
            settings: "hand-made".into(),
        },
        metrics: Metrics {
            test_ham: 0,
            test_spam: 0,
            one_minus_roca_pct: 0.0,
            recall_at_0_1_fp_pct: 0.0,
        },
    };
    std::fs::write(dir.path().join("model.onnx"), bytes).expect("write model");
    std::fs::write(
        dir.path().join("manifest.toml"),
        toml::to_string(&manifest).expect("manifest"),
    )
    .expect("write manifest");
    dir
}

/// A model that loads (the loader's one test inference passes 4 features) and fails on
/// every real message: the shipped graph's shape, with `values` first added to a tensor of
/// 4 zeros, which broadcasts for 4 features and for no message's hundreds.
pub(crate) fn failing_model() -> Arc<OnnxModel> {
    use filterd::model::onnx::{DIM, write_onnx};
    use prost::Message as _;
    use tract_onnx::pb;
    let mut model = pb::ModelProto::decode(write_onnx(&vec![0.0; DIM], 0.0).as_slice())
        .expect("our own model decodes");
    let graph = model.graph.as_mut().expect("a graph");
    graph.initializer.push(pb::TensorProto {
        dims: vec![4],
        data_type: pb::tensor_proto::DataType::Float as i32,
        float_data: vec![0.0; 4],
        name: "four".into(),
        ..Default::default()
    });
    graph.node.insert(
        0,
        pb::NodeProto {
            input: vec!["values".into(), "four".into()],
            output: vec!["v4".into()],
            name: "Add_v4".into(),
            op_type: "Add".into(),
            ..Default::default()
        },
    );
    for n in graph.node.iter_mut().filter(|n| n.op_type == "Mul") {
        n.input[1] = "v4".into();
    }
    let dir = model_dir(&model.encode_to_vec());
    Arc::new(OnnxModel::load(dir.path()).expect("the failing model loads"))
}

#[test]
fn a_model_that_knows_fewer_features_than_it_claims_is_refused_at_load() {
    let dir = model_dir(&filterd::model::onnx::write_onnx(&[0.1; 16], 0.0));
    let e = OnnxModel::load(dir.path()).expect_err("16 weights for 2^18 features");
    let e = e.to_string();
    assert!(
        e.contains("model.onnx") && e.contains("index out of bounds"),
        "{e}"
    );
}

#[test]
fn a_model_with_a_weight_that_is_not_a_number_is_refused_at_load() {
    use filterd::model::onnx::DIM;
    // Away from the features the load-time inference uses (0, 1, 2 and the last).
    let mut weights = vec![0.1; DIM];
    weights[DIM / 2] = f32::NAN;
    let dir = model_dir(&filterd::model::onnx::write_onnx(&weights, 0.0));
    let e = OnnxModel::load(dir.path()).expect_err("a NaN weight");
    let e = e.to_string();
    assert!(
        e.contains("model.onnx")
            && e.contains("1 of the 262144 values")
            && e.contains("not finite"),
        "{e}"
    );
}

/// The hits of one case, through the registry.
fn run(case: &Case, bayes: Option<Arc<BayesLive>>, at: &str) -> Vec<&'static str> {
    let model = match case.model.as_deref() {
        None => None,
        Some("shipped") => Some(shipped_model()),
        Some("failing") => Some(failing_model()),
        Some(other) => panic!("{at}: model: shipped or failing, not `{other}`"),
    };
    let registry = Registry::new(bayes, model);
    let features = Features::extract_with(&case.message, case.now.unwrap_or(DEFAULT_NOW), true);
    let down = Err("redis 127.0.0.1:6379: no answer".to_string());
    let input = Input {
        features: &features,
        auth: case.auth.as_ref(),
        virus_unchecked: case.clamd.as_deref() == Some("failed"),
        bayes: case.shared_bayes_down.then_some(&down),
    };
    registry.run(&input).names().to_vec()
}

#[test]
fn every_check_case_holds_and_every_hit_fires() {
    let registry = Registry::default();
    let mut failures = vec![];
    let mut fired: BTreeSet<&'static str> = BTreeSet::new();
    for check in registry.check_names() {
        let path = fixtures().join(format!("{check}.cases"));
        assert!(
            path.exists(),
            "{}: every check has a case file",
            path.display()
        );
        let cases = parse(&path);
        let bayes = bayes_of(&cases);
        let known = registry.hits_of(check).unwrap_or_default();
        let mut tested = 0;
        for case in cases.iter().filter(|c| c.train.is_none()) {
            let at = format!("{}:{} ({})", path.display(), case.line, case.name);
            assert!(
                !case.expect.is_empty() || !case.reject.is_empty(),
                "{at}: no expect"
            );
            tested += 1;
            let hits = run(case, bayes.clone(), &at);
            for name in case.expect.iter().chain(&case.reject) {
                assert!(
                    registry.hit_defs().any(|d| d.name == name),
                    "{at}: no check emits `{name}`"
                );
            }
            for want in &case.expect {
                if hits.contains(&want.as_str()) {
                    if known.contains(&want.as_str()) {
                        fired.extend(hits.iter().filter(|h| *h == want));
                    }
                } else {
                    failures.push(format!("{at}: {want} did not fire (hits: {hits:?})"));
                }
            }
            for no in &case.reject {
                if hits.contains(&no.as_str()) {
                    failures.push(format!("{at}: {no} fired (hits: {hits:?})"));
                }
            }
        }
        assert!(tested > 0, "{}: no cases", path.display());
    }
    assert!(
        failures.is_empty(),
        "{} failing:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let never: Vec<&str> = registry
        .hit_defs()
        .map(|d| d.name)
        .filter(|n| !fired.contains(n))
        .collect();
    assert!(
        never.is_empty(),
        "hits no case of their own check's file expects: {never:?}"
    );
}

/// README's table in "## Checks": one row per hit, `| `NAME` | score | when |`.
fn readme_hits() -> BTreeMap<String, f64> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let section = readme
        .split("\n## Checks\n")
        .nth(1)
        .expect("README has a ## Checks section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut rows = BTreeMap::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, name, score, ..] = cells[..] else {
            continue;
        };
        let (Some(name), Ok(score)) = (
            name.strip_prefix('`').and_then(|n| n.strip_suffix('`')),
            score.parse::<f64>(),
        ) else {
            continue;
        };
        assert!(
            rows.insert(name.to_string(), score).is_none(),
            "README lists {name} twice"
        );
    }
    rows
}

#[test]
fn readme_hits_table_is_the_registry() {
    let readme = readme_hits();
    let registry: BTreeMap<String, f64> = Registry::default_scores()
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
    let missing: Vec<_> = registry
        .keys()
        .filter(|n| !readme.contains_key(*n))
        .collect();
    let extra: Vec<_> = readme
        .keys()
        .filter(|n| !registry.contains_key(*n))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "README's hits table: missing {missing:?}, not emitted by any check {extra:?}"
    );
    for (name, score) in &registry {
        assert!(
            (readme[name] - score).abs() < 1e-9,
            "README says {name} scores {}, the registry {score}",
            readme[name]
        );
    }
}
