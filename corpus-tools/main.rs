//! `corpus-tools`: reproducible corpus work.
//!
//! `evaluate` splits labelled ham and spam folders deterministically (by a hash of each file
//! name), learns the train part into a fresh Bayes store exactly as `filtertrain` does, scores
//! the test part through filterd's own pipeline (`Pipeline::scan_at`, the code the daemon runs
//! per message), and prints FP% and FN% at the configured thresholds, 1-ROCA% and spam recall
//! at <= 0.1% FP, for Bayes alone, the header checks alone, and filterd's combined score.

mod fit;
mod train;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use filterd::config::Config;
use filterd::corpus::metrics::Scored;
use filterd::corpus::{is_test, message_files, strip_from_line};
use filterd::message::tokenize::Tokens;
use filterd::model::bayes::BayesParams;
use filterd::model::bayes_live::BayesLive;
use filterd::model::bayes_store::{Class, Store, message_id};
use filterd::pipeline::Pipeline;
use filterd::smtp::envelope::{Envelope, MailParams, RcptParams, Recipient, Xforward};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(about = "Reproducible corpus and model tooling for filterd")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train on one part of labelled folders, score the other through filterd's pipeline,
    /// print FP%, FN%, 1-ROCA% and spam recall at <= 0.1% FP.
    Evaluate {
        #[command(flatten)]
        split: SplitArgs,
        /// Also list the N spammiest ham and hammiest spam (by Bayes probability) of the test part.
        #[arg(long, default_value_t = 0)]
        show_worst: usize,
        /// Evaluate this ONNX model folder instead of training one on the split's train part
        /// (for fold 0 the trained one is the shipped models/spam-lr, bit for bit).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Leave the model out.
        #[arg(long)]
        no_model: bool,
        /// A filterd config whose [scores] and [levels] are used (default: the built-in ones).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also list how often each hit fires on the test ham and spam (as SpamAssassin's
        /// mass-check does) and the N ham with the highest combined score, with their hits.
        #[arg(long)]
        hits: Option<usize>,
    },
    /// Write the same split as `evaluate` to file lists (train-ham.txt, train-spam.txt,
    /// test-ham.txt, test-spam.txt), so other filters can be trained and tested the same way.
    Split {
        #[command(flatten)]
        split: SplitArgs,
        /// Where to write the lists.
        #[arg(long)]
        out: PathBuf,
    },
    /// Train the shipped ONNX model on the train part of the split and write `model.onnx`,
    /// `manifest.toml` and `golden.toml` (expected outputs for the messages in `golden/`).
    TrainModel {
        #[command(flatten)]
        split: SplitArgs,
        /// The model folder (`models/spam-lr`).
        #[arg(long)]
        out: PathBuf,
        /// Passes over the training data.
        #[arg(long, default_value_t = train::Settings::default().epochs)]
        epochs: usize,
        /// AdaGrad learning rate.
        #[arg(long, default_value_t = train::Settings::default().rate)]
        rate: f32,
        /// L2 penalty.
        #[arg(long, default_value_t = train::Settings::default().l2)]
        l2: f32,
        /// Train and report, but write nothing (for tuning on other folds).
        #[arg(long)]
        dry_run: bool,
    },
    /// Fit the default scores on the train part of a split (nested cross-validation for
    /// Bayes' and the model's probabilities), and report them on its test part.
    FitScores {
        #[command(flatten)]
        split: SplitArgs,
        /// Groups of the nested cross-validation inside the train part.
        #[arg(long, default_value_t = 4)]
        nested: u64,
        /// L2 penalty of the logistic regression.
        #[arg(long, default_value_t = 1.0)]
        l2: f64,
        /// Share of the train part's ham (%, scored by the nested cross-validation) allowed
        /// at or above `tag2_level`: sets the scale of the scores.
        #[arg(long, default_value_t = 0.05)]
        train_fp_pct: f64,
        /// Put `tag2_level` at this log-odds of the fit instead of by `--train-fp-pct`.
        #[arg(long)]
        at_log_odds: Option<f64>,
        /// Fit corrections around the default scores (their sum one more feature) rather
        /// than scores from nothing.
        #[arg(long)]
        anchor: bool,
        /// Write the fitted `[scores]` here (a config `evaluate --config` and filterd read);
        /// default: print them.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Figures for scores produced elsewhere: lines of `ham <score>` or `spam <score>`
    /// (higher = spammier).
    Metrics {
        /// The scores file.
        file: PathBuf,
        /// FP%/FN% threshold.
        #[arg(long, default_value_t = 0.99)]
        threshold: f64,
        /// Name for the table row.
        #[arg(long, default_value = "other filter")]
        name: String,
    },
}

/// Labelled folders and which deterministic split of them to use.
#[derive(clap::Args)]
struct SplitArgs {
    /// Ham folders (repeatable).
    #[arg(long, required = true)]
    ham: Vec<PathBuf>,
    /// Spam folders (repeatable).
    #[arg(long, required = true)]
    spam: Vec<PathBuf>,
    /// Share of each folder held out for testing, in percent.
    #[arg(long, default_value_t = 40)]
    test_percent: u64,
    /// Which split: 0 is the one reported in README; others are for tuning.
    #[arg(long, default_value_t = 0)]
    fold: u64,
}

struct Item {
    path: PathBuf,
    raw: Vec<u8>,
    spam: bool,
    test: bool,
}

fn envelope() -> Envelope {
    Envelope {
        peer: std::net::SocketAddr::from(([127, 0, 0, 1], 10024)),
        helo: "corpus-tools".into(),
        xforward: Xforward::default(),
        sender: String::new(),
        mail_params: MailParams::default(),
        recipients: vec![Recipient {
            address: "user@example.org".into(),
            params: RcptParams::default(),
        }],
    }
}

fn row(name: &str, s: &Scored, threshold: f64, at: &str) {
    let (fp, fneg) = s.fp_fn_pct(threshold);
    println!(
        "| {name:<28} | {fp:>6.2} | {fneg:>6.2} | {at:<14} | {:>8.3} | {:>13.1} |",
        s.one_minus_roca_pct(),
        s.recall_at_fp_pct(0.1)
    );
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.cmd {
        Cmd::Evaluate {
            split,
            show_worst,
            model,
            no_model,
            config,
            hits,
        } => {
            let model = match (no_model, model) {
                (true, _) => ModelChoice::None,
                (false, Some(dir)) => ModelChoice::Load(dir),
                (false, None) => ModelChoice::Train,
            };
            evaluate(&split, show_worst, model, config.as_deref(), hits)
        }
        Cmd::Split { split, out } => write_split(&split, &out),
        Cmd::FitScores {
            split,
            nested,
            l2,
            train_fp_pct,
            at_log_odds,
            anchor,
            out,
        } => {
            let s = fit::Settings {
                l2,
                tag2: 0.0,
                train_fp: train_fp_pct / 100.0,
                at_log_odds,
                anchor,
            };
            fit_scores(&split, nested, s, out.as_deref())
        }
        Cmd::TrainModel {
            split,
            out,
            epochs,
            rate,
            l2,
            dry_run,
        } => {
            let settings = train::Settings {
                epochs,
                rate,
                l2,
                ..train::Settings::default()
            };
            train_model(&split, &out, settings, dry_run)
        }
        Cmd::Metrics {
            file,
            threshold,
            name,
        } => metrics(&file, threshold, &name),
    }
}

/// Every file of the labelled folders: (path, is spam, is in the test part).
fn labelled_files(a: &SplitArgs) -> anyhow::Result<Vec<(PathBuf, bool, bool)>> {
    let mut out = vec![];
    for (dirs, spam) in [(&a.ham, false), (&a.spam, true)] {
        for d in dirs {
            for f in message_files(d).with_context(|| format!("reading {}", d.display()))? {
                let test = is_test(&f, a.test_percent, a.fold);
                out.push((f, spam, test));
            }
        }
    }
    Ok(out)
}

fn write_split(a: &SplitArgs, out: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let files = labelled_files(a)?;
    for part in ["train", "test"] {
        for label in ["ham", "spam"] {
            let list: String = files
                .iter()
                .filter(|(_, spam, test)| {
                    (*spam == (label == "spam")) && (*test == (part == "test"))
                })
                .map(|(f, _, _)| format!("{}\n", f.display()))
                .collect();
            std::fs::write(out.join(format!("{part}-{label}.txt")), list)?;
        }
    }
    Ok(())
}

fn metrics(file: &std::path::Path, threshold: f64, name: &str) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut s = Scored::default();
    for (n, line) in text.lines().enumerate() {
        let mut f = line.split_whitespace();
        let (Some(label), Some(score)) = (f.next(), f.next().and_then(|v| v.parse::<f64>().ok()))
        else {
            anyhow::bail!("{}:{}: expected `ham|spam <score>`", file.display(), n + 1);
        };
        match label {
            "ham" => s.ham.push(score),
            "spam" => s.spam.push(score),
            _ => anyhow::bail!("{}:{}: label must be ham or spam", file.display(), n + 1),
        }
    }
    println!("test: {} ham, {} spam", s.ham.len(), s.spam.len());
    table_header();
    row(name, &s, threshold, &format!(">= {threshold}"));
    Ok(())
}

/// Learn the model from the train examples and describe it (metrics left empty).
fn fit_model(
    a: &SplitArgs,
    train_set: &[(filterd::model::onnx::Featurised, bool)],
    settings: train::Settings,
) -> (Vec<u8>, filterd::model::onnx::Manifest) {
    use filterd::model::onnx::{Manifest, Metrics, Training, sha256_hex, write_onnx};
    let (w, b) = train::train(train_set, settings);
    let onnx = write_onnx(&w, b);
    let manifest = Manifest {
        format_version: 1,
        featuriser_version: filterd::model::onnx::FEATURISER_VERSION,
        sha256: sha256_hex(&onnx),
        inputs: Manifest::expected_inputs(),
        outputs: Manifest::expected_outputs(),
        dim: filterd::model::onnx::DIM,
        training: Training {
            command: "cargo run --release --bin corpus-tools -- train-model --ham ../shared/corpus/spamassassin/easy_ham --ham ../shared/corpus/spamassassin/easy_ham_2 --ham ../shared/corpus/spamassassin/hard_ham --spam ../shared/corpus/spamassassin/spam --spam ../shared/corpus/spamassassin/spam_2 --out models/spam-lr".into(),
            data: format!(
                "SpamAssassin public corpus, development part (../shared/corpus): the train part of fold {} ({}% held out): {} ham, {} spam",
                a.fold,
                a.test_percent,
                train_set.iter().filter(|e| !e.1).count(),
                train_set.iter().filter(|e| e.1).count()
            ),
            settings: settings.to_string(),
        },
        metrics: Metrics { test_ham: 0, test_spam: 0, one_minus_roca_pct: 0.0, recall_at_0_1_fp_pct: 0.0 },
    };
    (onnx, manifest)
}

/// Load a model through the same validating loader filterd uses, from a temporary folder.
fn load_via_file(
    onnx: &[u8],
    manifest: &filterd::model::onnx::Manifest,
) -> anyhow::Result<filterd::model::onnx::OnnxModel> {
    let tmp = tempdir_in_target()?;
    std::fs::write(tmp.join("model.onnx"), onnx)?;
    std::fs::write(tmp.join("manifest.toml"), toml::to_string(manifest)?)?;
    let model = filterd::model::onnx::OnnxModel::load(&tmp).map_err(|e| anyhow::anyhow!("{e}"));
    let _ = std::fs::remove_dir_all(&tmp);
    model
}

fn train_model(
    a: &SplitArgs,
    out: &std::path::Path,
    settings: train::Settings,
    dry_run: bool,
) -> anyhow::Result<()> {
    use filterd::model::onnx::{Metrics, OnnxModel, featurise};
    let mut train_set = vec![];
    let mut test_set = vec![];
    for (path, spam, test) in labelled_files(a)? {
        let raw = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let raw = strip_from_line(&raw);
        let f = featurise(raw, &Tokens::of_raw(raw));
        if test {
            test_set.push((f, spam))
        } else {
            train_set.push((f, spam))
        }
    }
    let (onnx, mut manifest) = fit_model(a, &train_set, settings);
    // Score the test part through the exported ONNX file, as filterd will.
    let model = load_via_file(&onnx, &manifest)?;
    let mut scored = Scored::default();
    for (f, spam) in &test_set {
        let p = f64::from(model.predict(f).map_err(|e| anyhow::anyhow!("{e}"))?);
        if *spam {
            scored.spam.push(p)
        } else {
            scored.ham.push(p)
        }
    }
    manifest.metrics = Metrics {
        test_ham: scored.ham.len(),
        test_spam: scored.spam.len(),
        one_minus_roca_pct: (scored.one_minus_roca_pct() * 1000.0).round() / 1000.0,
        recall_at_0_1_fp_pct: (scored.recall_at_fp_pct(0.1) * 10.0).round() / 10.0,
    };
    println!(
        "{settings}; train {} messages; test {} ham, {} spam",
        train_set.len(),
        scored.ham.len(),
        scored.spam.len()
    );
    table_header();
    row("model alone (ONNX)", &scored, 0.5, "p >= 0.5");
    if dry_run {
        return Ok(());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("model.onnx"), &onnx)?;
    std::fs::write(out.join("manifest.toml"), toml::to_string(&manifest)?)?;
    // Golden cases: the expected output for each message in golden/, through featuriser + ONNX.
    let model = OnnxModel::load(out).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut golden = String::from(
        "# Expected model outputs for the messages in golden/ (written by train-model).\n",
    );
    let mut files = message_files(&out.join("golden")).unwrap_or_default();
    files.sort();
    for f in files {
        let raw = std::fs::read(&f)?;
        let p = model
            .predict(&featurise(&raw, &Tokens::of_raw(&raw)))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        golden.push_str(&format!("\"{name}\" = {p}\n"));
    }
    std::fs::write(out.join("golden.toml"), golden)?;
    println!("wrote {}", out.display());
    Ok(())
}

fn tempdir_in_target() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("filterd-train-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn table_header() {
    println!(
        "| scorer                       |   FP%  |   FN%  | threshold      | 1-ROCA%  | recall@0.1%FP |"
    );
    println!(
        "|------------------------------|-------:|-------:|----------------|---------:|--------------:|"
    );
}

/// Which model `evaluate` scores with.
enum ModelChoice {
    None,
    Load(PathBuf),
    Train,
}

fn evaluate(
    a: &SplitArgs,
    show_worst: usize,
    model_choice: ModelChoice,
    config: Option<&std::path::Path>,
    hits: Option<usize>,
) -> anyhow::Result<()> {
    use filterd::model::onnx::featurise;
    let (test_percent, fold) = (a.test_percent, a.fold);
    let mut items = vec![];
    for (path, spam, test) in labelled_files(a)? {
        let raw = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        items.push(Item {
            raw: strip_from_line(&raw).to_vec(),
            path,
            spam,
            test,
        });
    }

    // Learn the train part, as filtertrain does.
    let mut store = Store::default();
    for it in items.iter().filter(|i| !i.test) {
        let class = if it.spam { Class::Spam } else { Class::Ham };
        store.learn(message_id(&it.raw), &Tokens::of_raw(&it.raw), class, 0);
    }
    println!(
        "train: {} ham, {} spam ({} tokens); test: {} ham, {} spam (fold {fold}, {test_percent}% held out)",
        store.nham,
        store.nspam,
        store.ntokens(),
        items.iter().filter(|i| i.test && !i.spam).count(),
        items.iter().filter(|i| i.test && i.spam).count(),
    );

    // Score the test part through the daemon's pipeline: header checks only, with Bayes,
    // and with Bayes and the model (the shipped one, or --model).
    let params = BayesParams::default();
    let live = Arc::new(BayesLive::from_store(store, params));
    let base = match config {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => String::new(),
    };
    let mut cfg = Config::parse(&format!(
        "{base}\n[bayes]\nenabled = false\n[model]\nenabled = false\n"
    ))
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    cfg.model = match model_choice {
        ModelChoice::None => None,
        ModelChoice::Load(dir) => Some(Arc::new(
            filterd::model::onnx::OnnxModel::load(&dir).map_err(|e| anyhow::anyhow!("{e}"))?,
        )),
        ModelChoice::Train => {
            let train_set: Vec<_> = items
                .iter()
                .filter(|i| !i.test)
                .map(|i| (featurise(&i.raw, &Tokens::of_raw(&i.raw)), i.spam))
                .collect();
            let (onnx, manifest) = fit_model(a, &train_set, train::Settings::default());
            println!(
                "model: trained on this split's train part, sha256 {}",
                manifest.sha256
            );
            Some(Arc::new(load_via_file(&onnx, &manifest)?))
        }
    };
    let model = cfg.model.take();
    let headers_only = Pipeline::new(&cfg);
    cfg.bayes = Some(live.clone());
    let with_bayes = Pipeline::new(&cfg);
    cfg.model = model.clone();
    let full = Pipeline::new(&cfg);
    let tag2 = cfg.levels.tag2;
    let env = envelope();
    let mut scores: [Scored; 5] = Default::default();
    let mut worst = vec![];
    let mut scanned = vec![];
    for it in items.iter().filter(|i| i.test) {
        let tokens = Tokens::of_raw(&it.raw);
        let b = live
            .classify(&tokens)
            .ok_or_else(|| anyhow::anyhow!("too little learned for Bayes to vote"))?;
        let m = match &model {
            Some(m) => f64::from(
                m.predict(&featurise(&it.raw, &tokens))
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
            None => 0.0,
        };
        let score = |p: &Pipeline| {
            p.scan_at(&env, &it.raw, "corpustools1", 0).report.decisions[0]
                .verdict
                .score
        };
        let verdict = full
            .scan_at(&env, &it.raw, "corpustools1", 0)
            .report
            .decisions[0]
            .verdict
            .clone();
        let c = verdict.score;
        scanned.push((it.spam, verdict, it.path.display().to_string()));
        for (s, v) in
            scores
                .iter_mut()
                .zip([b.prob, score(&headers_only), score(&with_bayes), m, c])
        {
            if it.spam {
                s.spam.push(v)
            } else {
                s.ham.push(v)
            }
        }
        worst.push((
            b.prob,
            it.spam,
            format!(
                "{} p={:.4} model={m:.4} score={c}",
                it.path.display(),
                b.prob
            ),
        ));
    }
    println!();
    table_header();
    let at_tag2 = format!("score >= {tag2}");
    row("Bayes alone", &scores[0], 0.99, "p >= 0.99");
    row("header checks alone", &scores[1], tag2, &at_tag2);
    row("filterd (headers + Bayes)", &scores[2], tag2, &at_tag2);
    if model.is_some() {
        row("model alone", &scores[3], 0.5, "p >= 0.5");
        row("filterd (headers+Bayes+model)", &scores[4], tag2, &at_tag2);
    }
    if let Some(n) = hits {
        hit_counts(&mut scanned, n);
    }
    if show_worst > 0 {
        worst.sort_by(|a, b| a.0.total_cmp(&b.0));
        println!();
        for w in worst.iter().filter(|w| !w.1).rev().take(show_worst) {
            println!("spammiest ham  {:>10.2} {}", w.0, w.2);
        }
        for w in worst.iter().filter(|w| w.1).take(show_worst) {
            println!("hammiest spam  {:>10.2} {}", w.0, w.2);
        }
    }
    Ok(())
}

fn fit_scores(
    a: &SplitArgs,
    nested: u64,
    mut settings: fit::Settings,
    out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use filterd::corpus::nested_group;
    let mut train_part: Vec<(u64, Item)> = vec![];
    let mut test_part: Vec<Item> = vec![];
    for (path, spam, test) in labelled_files(a)? {
        let raw = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let it = Item {
            raw: strip_from_line(&raw).to_vec(),
            path,
            spam,
            test,
        };
        if it.test {
            test_part.push(it);
        } else {
            train_part.push((nested_group(&it.path, a.fold, nested), it));
        }
    }
    let mut train_rows = vec![];
    for g in 0..nested {
        let (inner, outer): (Vec<_>, Vec<_>) = train_part.iter().partition(|(k, _)| *k != g);
        let inner: Vec<&Item> = inner.iter().map(|x| &x.1).collect();
        let outer: Vec<&Item> = outer.iter().map(|x| &x.1).collect();
        train_rows.extend(scan_rows(a, &inner, &outer)?.into_iter().map(|r| r.0));
    }
    let all: Vec<&Item> = train_part.iter().map(|x| &x.1).collect();
    let tests: Vec<&Item> = test_part.iter().collect();
    let test_rows = scan_rows(a, &all, &tests)?;
    let tag2 = Config::defaults()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .levels
        .tag2;
    let fixed = |h: &str| {
        h == "GTUBE"
            || h.starts_with("VIRUS")
            || h.starts_with("RCVD_IN_")
            || h.starts_with("URIBL_")
    };
    settings.tag2 = tag2;
    let fitted = fit::fit(&train_rows, settings, &fixed);
    let mut now = Scored::default();
    let mut then = Scored::default();
    for (r, default_score) in &test_rows {
        let (n, t) = if r.spam {
            (&mut now.spam, &mut then.spam)
        } else {
            (&mut now.ham, &mut then.ham)
        };
        n.push(*default_score);
        t.push(fitted.score(r));
    }
    println!(
        "fit: {} train rows ({nested}-part nested cross-validation, L2 {}{}), {} hits fitted; tag2_level {tag2} at log-odds {:.3} ({:.3} points per log-odd, train ham allowed above: {}%); test: {} ham, {} spam (fold {})",
        train_rows.len(),
        settings.l2,
        if settings.anchor {
            format!(", around the defaults x {:.3}", fitted.defaults_times)
        } else {
            String::new()
        },
        fitted.scores.len(),
        fitted.threshold,
        fitted.scale,
        settings.train_fp * 100.0,
        now.ham.len(),
        now.spam.len(),
        a.fold
    );
    println!();
    table_header();
    let at = format!("score >= {tag2}");
    row("default scores", &now, tag2, &at);
    row("fitted scores", &then, tag2, &at);
    let mut toml = format!(
        "# Written by `corpus-tools fit-scores --fold {}`: scores fitted on the fold's train part.\n[scores]\n",
        a.fold
    );
    for (h, s) in &fitted.scores {
        toml.push_str(&format!("{h} = {s}\n"));
    }
    match out {
        Some(p) => std::fs::write(p, toml).with_context(|| format!("writing {}", p.display()))?,
        None => print!("\n{toml}"),
    }
    Ok(())
}

/// Train Bayes and the model on `train` as `evaluate` does, scan `test` through the whole
/// pipeline with them: each message's hits (with the factor of scaled ones) and its score
/// with the default scores.
fn scan_rows(
    a: &SplitArgs,
    train: &[&Item],
    test: &[&Item],
) -> anyhow::Result<Vec<(fit::Row, f64)>> {
    use filterd::model::onnx::featurise;
    let mut store = Store::default();
    for it in train {
        let class = if it.spam { Class::Spam } else { Class::Ham };
        store.learn(message_id(&it.raw), &Tokens::of_raw(&it.raw), class, 0);
    }
    let examples: Vec<_> = train
        .iter()
        .map(|i| (featurise(&i.raw, &Tokens::of_raw(&i.raw)), i.spam))
        .collect();
    let (onnx, manifest) = fit_model(a, &examples, train::Settings::default());
    let mut cfg = Config::parse("[bayes]\nenabled = false\n[model]\nenabled = false\n")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    cfg.bayes = Some(Arc::new(BayesLive::from_store(
        store,
        BayesParams::default(),
    )));
    cfg.model = Some(Arc::new(load_via_file(&onnx, &manifest)?));
    let pipeline = Pipeline::new(&cfg);
    let defaults = filterd::checks::Registry::default_scores();
    let env = envelope();
    Ok(test
        .iter()
        .map(|it| {
            let v = &pipeline
                .scan_at(&env, &it.raw, "corpustools1", 0)
                .report
                .decisions[0]
                .verdict;
            let hits = v
                .hits
                .iter()
                .map(|(h, s)| match defaults.get(h) {
                    Some(d) if *d != 0.0 => (*h, s / d, *s),
                    _ => (*h, 1.0, *s),
                })
                .collect();
            (
                fit::Row {
                    spam: it.spam,
                    hits,
                },
                v.score,
            )
        })
        .collect())
}

/// How often each hit fires on the test ham and spam, and the `n` highest-scoring ham.
fn hit_counts(scanned: &mut [(bool, filterd::verdict::Verdict, String)], n: usize) {
    let mut counts: std::collections::BTreeMap<&str, (usize, usize, f64)> = Default::default();
    let (nham, nspam) = scanned.iter().fold(
        (0, 0),
        |(h, s), x| {
            if x.0 { (h, s + 1) } else { (h + 1, s) }
        },
    );
    for (spam, v, _) in scanned.iter() {
        for (name, score) in &v.hits {
            let c = counts.entry(name).or_default();
            if *spam {
                c.1 += 1;
            } else {
                c.0 += 1;
            }
            c.2 = *score;
        }
    }
    let pct = |k: usize, of: usize| 100.0 * k as f64 / of.max(1) as f64;
    println!("\n| hit | score | ham% | spam% |\n|---|---:|---:|---:|");
    for (name, (h, s, score)) in &counts {
        println!(
            "| {name} | {score} | {:.2} | {:.2} |",
            pct(*h, nham),
            pct(*s, nspam)
        );
    }
    scanned.sort_by(|a, b| b.1.score.total_cmp(&a.1.score));
    for (_, v, path) in scanned.iter().filter(|x| !x.0).take(n) {
        let hits: Vec<String> = v.hits.iter().map(|(h, s)| format!("{h}={s}")).collect();
        println!("ham {:>8.3} {path} {}", v.score, hits.join(" "));
    }
}
