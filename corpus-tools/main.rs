//! `corpus-tools`: reproducible corpus work. `evaluate` splits labelled ham and spam folders
//! deterministically (by a hash of each file name), learns the train part into a fresh Bayes
//! store, scores the test part through filterd's own pipeline, and prints the figures.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use filterd::corpus::metrics::Scored;
use filterd::corpus::{is_test, message_files, strip_from_line};
use filterd::message::tokenize::Tokens;
use filterd::model::bayes::{BayesParams, classify_unchecked};
use filterd::model::bayes_store::{Class, Store, message_id};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Reproducible corpus and model tooling for filterd")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train on one part of labelled folders, score the other, print FP%, FN%, 1-ROCA% and
    /// spam recall at <= 0.1% FP.
    Evaluate {
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
        /// Also list the N spammiest ham and hammiest spam of the test part.
        #[arg(long, default_value_t = 0)]
        show_worst: usize,
    },
}

struct Item {
    path: PathBuf,
    tokens: Tokens,
    id: u128,
    spam: bool,
    test: bool,
}

fn load(
    dirs: &[PathBuf],
    spam: bool,
    test_percent: u64,
    fold: u64,
    out: &mut Vec<Item>,
) -> anyhow::Result<()> {
    for d in dirs {
        for f in message_files(d).with_context(|| format!("reading {}", d.display()))? {
            let raw = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
            let raw = strip_from_line(&raw);
            out.push(Item {
                path: f.clone(),
                tokens: Tokens::of_raw(raw),
                id: message_id(raw),
                spam,
                test: is_test(&f, test_percent, fold),
            });
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.cmd {
        Cmd::Evaluate {
            ham,
            spam,
            test_percent,
            fold,
            show_worst,
        } => {
            let mut items = vec![];
            load(&ham, false, test_percent, fold, &mut items)?;
            load(&spam, true, test_percent, fold, &mut items)?;
            let mut store = Store::default();
            for it in items.iter().filter(|i| !i.test) {
                let class = if it.spam { Class::Spam } else { Class::Ham };
                store.learn(it.id, &it.tokens, class, 0);
            }
            let p = BayesParams::default();
            let mut worst: Vec<(f64, bool, String)> = vec![];
            let mut scored = Scored::default();
            for it in items.iter().filter(|i| i.test) {
                let s = classify_unchecked(&store, &it.tokens, &p);
                worst.push((
                    s.rank,
                    it.spam,
                    format!("{} p={:.4} used={}", it.path.display(), s.prob, s.used),
                ));
                if it.spam {
                    scored.spam.push(s.rank);
                } else {
                    scored.ham.push(s.rank);
                }
            }
            println!(
                "train: {} ham, {} spam; test: {} ham, {} spam; {} tokens",
                store.nham,
                store.nspam,
                scored.ham.len(),
                scored.spam.len(),
                store.ntokens()
            );
            if show_worst > 0 {
                worst.sort_by(|a, b| a.0.total_cmp(&b.0));
                for w in worst.iter().filter(|w| !w.1).rev().take(show_worst) {
                    println!("spammiest ham  {:>10.2} {}", w.0, w.2);
                }
                for w in worst.iter().filter(|w| w.1).take(show_worst) {
                    println!("hammiest spam  {:>10.2} {}", w.0, w.2);
                }
            }
            println!(
                "bayes: 1-ROCA% {:.3}  recall@0.1%FP {:.1}%",
                scored.one_minus_roca_pct(),
                scored.recall_at_fp_pct(0.1)
            );
        }
    }
    Ok(())
}
