//! `filtertrain`: learns mail into filterd's Bayes store, the way `sa-learn` does for
//! SpamAssassin. Parses flags, resolves the store directory, takes the writers' lock, and
//! calls into the library; a running filterd picks the new store up by itself.

use anyhow::{Context as _, bail};
use clap::{ArgGroup, Parser, ValueEnum};
use filterd::config::Config;
use filterd::corpus::{message_files, split_mbox, strip_from_line};
use filterd::exit::{self, Failure};
use filterd::message::HeaderBlock;
use filterd::message::tokenize::Tokens;
use filterd::model::bayes::{BayesParams, token_prob};
use filterd::model::bayes_redis::RedisBayes;
use filterd::model::bayes_store::{Class, Learned, Store, default_state_dir, message_id};
use filterd::state::RedisStore;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// What to dump.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Dump {
    /// Message counts and store metadata, in sa-learn's format.
    Magic,
    /// One line per token: probability, spam count, ham count, atime, token hash.
    Data,
    /// Both.
    All,
}

/// Learn mail as spam or ham into filterd's Bayes store (mirrors sa-learn).
#[derive(Parser, Debug)]
#[command(version, group(ArgGroup::new("admin").args(["dump", "backup", "restore", "clear", "force_expire"]).conflicts_with_all(["spam", "ham", "forget"])))]
struct Args {
    /// Learn as spam: the paths given here, or the other inputs (a message learned as ham is
    /// moved; one already learned as spam is skipped).
    #[arg(long, num_args = 0.., value_name = "PATH")]
    spam: Option<Vec<PathBuf>>,
    /// Learn as ham: the paths given here, or the other inputs.
    #[arg(long, num_args = 0.., value_name = "PATH")]
    ham: Option<Vec<PathBuf>>,
    /// Unlearn: the paths given here, or the other inputs.
    #[arg(long, num_args = 0.., value_name = "PATH", conflicts_with_all = ["spam", "ham"])]
    forget: Option<Vec<PathBuf>>,
    /// The inputs are mbox files.
    #[arg(long, alias = "mbx")]
    mbox: bool,
    /// A file listing folders, one per line, optionally `ham:mbox:` / `spam:dir:` prefixed.
    #[arg(short = 'f', long, value_name = "FILE")]
    folders: Option<PathBuf>,
    /// Skip messages larger than this many bytes (0: no limit).
    #[arg(long, default_value_t = 500 * 1024, value_name = "BYTES")]
    max_size: usize,
    /// Print the store.
    #[arg(long, value_enum, value_name = "WHAT")]
    dump: Option<Dump>,
    /// Write a text backup of the store to standard output.
    #[arg(long)]
    backup: bool,
    /// Replace the store with a backup.
    #[arg(long, value_name = "FILE")]
    restore: Option<PathBuf>,
    /// Wipe the store.
    #[arg(long)]
    clear: bool,
    /// Expire old, rare tokens now.
    #[arg(long)]
    force_expire: bool,
    /// The store directory (default: `[bayes] state_dir` of --config, else the default state
    /// directory), or a Redis URL (`redis://host:6379/0`, keys under `filterd:`; with
    /// `--config`, `[shared] bayes = "redis"` says so and its key prefix is used).
    #[arg(long, value_name = "DIR")]
    dbpath: Option<PathBuf>,
    /// filterd's configuration file, for the store directory and expiry size.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Show progress (on by default on a terminal).
    #[arg(long, alias = "showdots")]
    progress: bool,
    /// Files, directories (maildirs included), mbox files with --mbox, or `-` for standard input.
    inputs: Vec<PathBuf>,
}

/// One input to learn, with its class (`None`: forget) and format.
struct Source {
    path: PathBuf,
    class: Option<Class>,
    mbox: bool,
}

fn main() -> ExitCode {
    if let Some(code) =
        filterd::docs::handle(<Args as clap::CommandFactory>::command().name("filtertrain"))
    {
        return code;
    }
    let args = Args::parse();
    exit::run("filtertrain", || run(&args))
}

fn run(args: &Args) -> Result<u8, Failure> {
    let (dir, max_tokens) = store_location(args)?;
    if let Some(redis) = redis_store(args)? {
        return run_redis(args, &redis, max_tokens);
    }
    let now = filterd::clock::now_unix();
    if read_only(args, &dir)? {
        return Ok(exit::OK);
    }
    // Everything below writes: one writer at a time.
    let _lock = Store::lock(&dir)?;
    if let Some(file) = &args.restore {
        let store = read_backup(file)?;
        store.save(&dir)?;
        println!(
            "Restored {} token(s), {} spam and {} ham message(s)",
            store.ntokens(),
            store.nspam,
            store.nham
        );
        return Ok(exit::OK);
    }
    if args.clear {
        Store::default().save(&dir)?;
        println!("Cleared the Bayes store in {}", dir.display());
        return Ok(exit::OK);
    }
    let mut store = Store::load_or_empty(&dir)?;
    if args.force_expire {
        let removed = store.expire(max_tokens, now, true);
        store.save(&dir)?;
        println!("Expired {removed} token(s); {} left", store.ntokens());
        return Ok(exit::OK);
    }
    let sources = sources(args)?;
    let mut stats = Stats::default();
    let progress = Progress::new(args.progress, &sources);
    let mut changed = 0;
    let mut sink = |id, tokens: Tokens, class: Option<Class>| {
        let done = match class {
            None => store.forget(id, &tokens),
            Some(class) => store.learn(id, &tokens, class, now) != Learned::Skipped,
        };
        changed += u64::from(done);
    };
    for src in &sources {
        learn_source(src, args.max_size, &mut sink, &mut stats, &progress);
    }
    progress.finish();
    stats.changed = changed;
    store.expire(max_tokens, now, false);
    store.save(&dir)?;
    Ok(stats.summary(args))
}

impl Stats {
    /// Print what was done; the exit code.
    fn summary(&self, args: &Args) -> u8 {
        let verb = if args.forget.is_some() {
            "Forgot"
        } else {
            "Learned"
        };
        println!(
            "{verb} tokens from {} message(s) ({} message(s) examined)",
            self.changed, self.examined
        );
        if self.unreadable > 0 {
            exit::FAILURE
        } else {
            exit::OK
        }
    }
}

/// The Bayes store in Redis, when `--dbpath` is a Redis URL or `--config` puts it there.
fn redis_store(args: &Args) -> Result<Option<RedisBayes>, Failure> {
    let timeout = std::time::Duration::from_secs(30);
    if let Some(url) = args.dbpath.as_ref().and_then(|d| d.to_str()) {
        if !(url.starts_with("redis://") || url.starts_with("unix://")) {
            return Ok(None);
        }
        let redis = RedisStore::new(url, "filterd:", timeout, 86_400)
            .map_err(|e| Failure::msg(exit::CONFIG, format!("--dbpath: {e}")))?;
        let ttl = 90 * 86_400;
        return Ok(Some(RedisBayes::new(
            Arc::new(redis),
            BayesParams::default(),
            ttl,
        )));
    }
    let Some(c) = &args.config else {
        return Ok(None);
    };
    let cfg = Config::load(c)
        .map_err(|e| Failure::msg(exit::CONFIG, format!("configuration is invalid:\n{e}")))?;
    Ok(cfg.bayes_redis.map(|b| b.retimed(timeout)))
}

/// Everything against the store in Redis: learning pipelined 100 messages per round trip,
/// each atomic (so filterd hosts and other runs may learn at the same time).
fn run_redis(args: &Args, store: &RedisBayes, max_tokens: usize) -> Result<u8, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let now = filterd::clock::now_unix();
    let redis = |e: filterd::state::Unavailable| anyhow::anyhow!("{}", e.0);
    if args.dump.is_some() || args.backup {
        let whole = rt.block_on(store.load_all()).map_err(redis)?;
        print_store(args, &whole)?;
        return Ok(exit::OK);
    }
    if let Some(file) = &args.restore {
        let whole = read_backup(file)?;
        rt.block_on(store.replace_with(&whole)).map_err(redis)?;
        println!(
            "Restored {} token(s), {} spam and {} ham message(s) into {}",
            whole.ntokens(),
            whole.nspam,
            whole.nham,
            store.label()
        );
        return Ok(exit::OK);
    }
    if args.clear {
        rt.block_on(store.clear()).map_err(redis)?;
        println!("Cleared the Bayes store in {}", store.label());
        return Ok(exit::OK);
    }
    if args.force_expire {
        let removed = rt
            .block_on(store.force_expire(max_tokens, now))
            .map_err(redis)?;
        println!("Expired {removed} token(s)");
        return Ok(exit::OK);
    }
    let sources = sources(args)?;
    let mut stats = Stats::default();
    let progress = Progress::new(args.progress, &sources);
    let (mut batch, mut changed, mut failed) = (vec![], 0u64, None);
    let mut flush = |batch: &mut Vec<(u128, Tokens, Option<Class>)>| {
        if failed.is_some() || batch.is_empty() {
            batch.clear();
            return;
        }
        let refs: Vec<_> = batch.iter().map(|(id, t, c)| (*id, t, *c)).collect();
        match rt.block_on(store.learn(&refs, now)) {
            Ok(done) => changed += done.iter().filter(|l| **l != Learned::Skipped).count() as u64,
            Err(e) => failed = Some(e),
        }
        batch.clear();
    };
    let mut sink = |id, tokens, class| {
        batch.push((id, tokens, class));
        if batch.len() >= 100 {
            flush(&mut batch);
        }
    };
    for src in &sources {
        learn_source(src, args.max_size, &mut sink, &mut stats, &progress);
    }
    flush(&mut batch);
    progress.finish();
    if let Some(e) = failed {
        return Err(redis(e).into());
    }
    stats.changed = changed;
    Ok(stats.summary(args))
}

/// The store directory and its expiry size: `--dbpath`, else filterd's configuration,
/// else the default state directory.
fn store_location(args: &Args) -> Result<(PathBuf, usize), Failure> {
    Ok(match (&args.dbpath, &args.config) {
        (Some(d), _) => (d.clone(), 150_000),
        (None, Some(c)) => {
            let cfg = Config::load(c).map_err(|e| {
                Failure::msg(exit::CONFIG, format!("configuration is invalid:\n{e}"))
            })?;
            (cfg.bayes_dir, cfg.bayes_max_tokens)
        }
        (None, None) => (default_state_dir(), 150_000),
    })
}

/// `--dump` and `--backup`, which only read the store; true when one of them ran.
fn read_only(args: &Args, dir: &Path) -> anyhow::Result<bool> {
    if args.dump.is_none() && !args.backup {
        return Ok(false);
    }
    print_store(args, &Store::load_or_empty(dir)?)?;
    Ok(true)
}

/// `--dump WHAT` or `--backup` of `store` on standard output.
fn print_store(args: &Args, store: &Store) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if let Some(what) = args.dump {
        if matches!(what, Dump::Magic | Dump::All) {
            out.write_all(store.dump_magic().as_bytes())?;
        }
        if matches!(what, Dump::Data | Dump::All) {
            let p = BayesParams::default();
            let data = store.dump_data(|c| token_prob(c, store.nspam, store.nham, &p));
            out.write_all(data.as_bytes())?;
        }
    } else if args.backup {
        out.write_all(store.backup().as_bytes())?;
    }
    Ok(())
}

/// A `--backup` file, parsed.
fn read_backup(file: &Path) -> anyhow::Result<Store> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Store::restore(&text).with_context(|| format!("restoring {}", file.display()))
}

/// What to learn: the paths given with --spam/--ham/--forget, the bare inputs (learned as
/// the one class given), and --folders.
fn sources(args: &Args) -> anyhow::Result<Vec<Source>> {
    let forget = args.forget.is_some();
    let mut sources: Vec<Source> = vec![];
    let mut bare_class: Option<Option<Class>> = None;
    for (given, class) in [
        (&args.spam, Some(Class::Spam)),
        (&args.ham, Some(Class::Ham)),
        (&args.forget, None),
    ] {
        match given {
            Some(paths) if paths.is_empty() => bare_class = Some(class),
            Some(paths) => sources.extend(paths.iter().map(|p| Source {
                path: p.clone(),
                class,
                mbox: args.mbox,
            })),
            None => {}
        }
    }
    if !args.inputs.is_empty() {
        let Some(class) = bare_class.or_else(|| {
            (sources.len() == 1 || sources.iter().all(|s| s.class == sources[0].class))
                .then(|| sources.first().map(|s| s.class))
                .flatten()
        }) else {
            bail!("say how to learn the inputs: --spam, --ham or --forget");
        };
        sources.extend(args.inputs.iter().map(|p| Source {
            path: p.clone(),
            class,
            mbox: args.mbox,
        }));
    }
    if let Some(f) = &args.folders {
        let default = bare_class.unwrap_or(None);
        sources.extend(read_folders(f, default, args.mbox, forget)?);
    }
    if sources.is_empty() {
        bail!(
            "nothing to learn: give --spam/--ham/--forget with files, directories (maildirs included), mbox files (--mbox), - for standard input, or --folders FILE"
        );
    }
    Ok(sources)
}

#[derive(Default)]
struct Stats {
    examined: u64,
    changed: u64,
    unreadable: u64,
}

/// A progress bar on a terminal; plain lines every 1000 messages otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    count: std::cell::Cell<u64>,
}

impl Progress {
    fn new(forced: bool, sources: &[Source]) -> Self {
        let tty = std::io::stderr().is_terminal();
        if !tty {
            return Progress {
                bar: None,
                plain: forced,
                count: Default::default(),
            };
        }
        // Count the files up front when that is cheap (no mbox, no stdin).
        let total: Option<u64> = sources
            .iter()
            .map(|s| {
                if s.mbox || s.path == Path::new("-") {
                    None
                } else {
                    message_files(&s.path).ok().map(|f| f.len() as u64)
                }
            })
            .sum();
        let bar = match total {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} messages ({per_sec}, {eta} left)",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            None => ProgressBar::new_spinner(),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        Progress {
            bar: Some(bar),
            plain: false,
            count: Default::default(),
        }
    }

    fn tick(&self) {
        let n = self.count.get() + 1;
        self.count.set(n);
        if let Some(b) = &self.bar {
            b.inc(1);
        } else if self.plain && n.is_multiple_of(1000) {
            eprintln!("filtertrain: {n} messages examined");
        }
    }

    fn report(&self, line: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Where each message of `src` goes: `sink(id, tokens, class)` (`None`: forget).
fn learn_source(
    src: &Source,
    max_size: usize,
    sink: &mut dyn FnMut(u128, Tokens, Option<Class>),
    stats: &mut Stats,
    progress: &Progress,
) {
    let mut learn_one = |raw: &[u8], origin: &dyn std::fmt::Display, stats: &mut Stats| {
        stats.examined += 1;
        progress.tick();
        if max_size > 0 && raw.len() > max_size {
            return;
        }
        let raw = strip_from_line(raw);
        if HeaderBlock::parse(raw).fields.is_empty() {
            progress.report(&format!(
                "filtertrain: {origin}: not a mail message (no header), skipped"
            ));
            return;
        }
        sink(message_id(raw), Tokens::of_raw(raw), src.class);
    };
    let unreadable = |e: &dyn std::fmt::Display, stats: &mut Stats| {
        progress.report(&format!("filtertrain: {}: {e}", src.path.display()));
        stats.unreadable += 1;
    };
    if src.path == Path::new("-") {
        let mut buf = Vec::new();
        if let Err(e) = std::io::stdin().read_to_end(&mut buf) {
            return unreadable(&e, stats);
        }
        if src.mbox {
            for m in split_mbox(&buf) {
                learn_one(&m, &"standard input", stats);
            }
        } else {
            learn_one(&buf, &"standard input", stats);
        }
        return;
    }
    let files = match message_files(&src.path) {
        Ok(f) => f,
        Err(e) => return unreadable(&e, stats),
    };
    for f in files {
        match std::fs::read(&f) {
            Ok(data) if src.mbox => {
                for m in split_mbox(&data) {
                    learn_one(&m, &f.display(), stats);
                }
            }
            Ok(data) => learn_one(&data, &f.display(), stats),
            Err(e) => {
                progress.report(&format!("filtertrain: {}: {e}", f.display()));
                stats.unreadable += 1;
            }
        }
    }
}

/// `--folders FILE`: one folder per line, `[ham|spam:][mbox|dir|file:]path`.
fn read_folders(
    file: &Path,
    class: Option<Class>,
    mbox: bool,
    forget: bool,
) -> anyhow::Result<Vec<Source>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut out = vec![];
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut rest = line;
        let mut c = class;
        let mut m = mbox;
        if let Some((head, tail)) = rest.split_once(':') {
            match head {
                "ham" => (c, rest) = (Some(Class::Ham), tail),
                "spam" => (c, rest) = (Some(Class::Spam), tail),
                _ => {}
            }
        }
        if let Some((head, tail)) = rest.split_once(':') {
            match head {
                "mbox" | "mbx" => (m, rest) = (true, tail),
                "dir" | "file" => (m, rest) = (false, tail),
                _ => {}
            }
        }
        if c.is_none() && !forget {
            bail!(
                "{}:{}: no class for `{line}` (prefix ham: or spam:, or give --ham/--spam)",
                file.display(),
                n + 1
            );
        }
        let class = if forget { None } else { c };
        out.push(Source {
            path: PathBuf::from(rest),
            class,
            mbox: m,
        });
    }
    Ok(out)
}
