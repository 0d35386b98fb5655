//! `corpus-tools`: reproducible corpus work.
//!
//! `evaluate` splits labelled ham and spam folders deterministically (by a hash of each file
//! name), learns the train part into a fresh Bayes store exactly as `filtertrain` does, scores
//! the test part through filterd's own pipeline (`Pipeline::scan_at`, the code the daemon runs
//! per message), and prints FP% and FN% at the configured thresholds, 1-ROCA% and spam recall
//! at <= 0.1% FP, for Bayes alone, the header checks alone, and filterd's combined score.

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
        Cmd::Evaluate { split, show_worst } => evaluate(&split, show_worst),
        Cmd::Split { split, out } => write_split(&split, &out),
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

fn table_header() {
    println!(
        "| scorer                       |   FP%  |   FN%  | threshold      | 1-ROCA%  | recall@0.1%FP |"
    );
    println!(
        "|------------------------------|-------:|-------:|----------------|---------:|--------------:|"
    );
}

fn evaluate(a: &SplitArgs, show_worst: usize) -> anyhow::Result<()> {
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

    // Score the test part through the daemon's pipeline, with and without Bayes.
    let params = BayesParams::default();
    let live = Arc::new(BayesLive::from_store(store, params));
    let mut with_bayes =
        Config::parse("[bayes]\nenabled = false\n").map_err(|e| anyhow::anyhow!("{e}"))?;
    let headers_only = Pipeline::new(&with_bayes);
    with_bayes.bayes = Some(live.clone());
    let full = Pipeline::new(&with_bayes);
    let tag2 = with_bayes.levels.tag2;
    let env = envelope();
    let (mut bayes, mut headers, mut combined) =
        (Scored::default(), Scored::default(), Scored::default());
    let mut worst = vec![];
    for it in items.iter().filter(|i| i.test) {
        let b = live
            .classify(&Tokens::of_raw(&it.raw))
            .ok_or_else(|| anyhow::anyhow!("too little learned for Bayes to vote"))?;
        let h = headers_only
            .scan_at(&env, &it.raw, "corpustools1", 0)
            .1
            .score;
        let c = full.scan_at(&env, &it.raw, "corpustools1", 0).1.score;
        let push = |s: &mut Scored, v: f64| {
            if it.spam {
                s.spam.push(v)
            } else {
                s.ham.push(v)
            }
        };
        push(&mut bayes, b.prob);
        push(&mut headers, h);
        push(&mut combined, c);
        worst.push((
            b.prob,
            it.spam,
            format!("{} p={:.4} score={c}", it.path.display(), b.prob),
        ));
    }
    println!();
    table_header();
    row("Bayes alone", &bayes, 0.99, "p >= 0.99");
    row(
        "header checks alone",
        &headers,
        tag2,
        &format!("score >= {tag2}"),
    );
    row(
        "filterd (headers + Bayes)",
        &combined,
        tag2,
        &format!("score >= {tag2}"),
    );
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
