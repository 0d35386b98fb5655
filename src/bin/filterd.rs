//! `filterd`: the daemon. Parses flags, loads the configuration (embedded defaults without
//! `--config`), sets up logging and signals, and serves until SIGTERM/SIGINT.

use clap::Parser;
use filterd::config::Config;
use filterd::exit::{self, Failure};
use filterd::server::{BindError, Server};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc: a scan makes many small allocations, and glibc's malloc took about a tenth of
/// filterd's CPU per message (measured with `perf`; see README, Performance).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_max_object_size` (KiB) in mimalloc v3's `mimalloc.h`, the 46th option;
/// libmimalloc-sys has no name for it (the test below checks the index by its default).
const MI_OPTION_ARENA_MAX_OBJECT_SIZE: libmimalloc_sys::mi_option_t = 45;

/// Memory for big messages as with glibc: no transparent huge pages for this process
/// (mimalloc asks for them, and then keeps and purges memory in 2 MB pages), and blocks over
/// 256 KiB (message buffers) straight from the OS, returned to it when freed. Inside
/// mimalloc's arenas with huge pages, eight concurrent 40 MB messages peaked over 400 MB RSS;
/// this way about 350 MB (the hardening test checks it).
fn tune_allocator() {
    // SAFETY: sets one of mimalloc's process-wide integer options; no pointers involved.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_MAX_OBJECT_SIZE, 256) }
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        // Only memory use is at stake (a kernel without the prctl, a seccomp filter).
        eprintln!(
            "filterd: cannot turn transparent huge pages off ({e}); memory use may be higher"
        );
    }
}

/// A content filter for Postfix (the amavisd-new slot): listens for SMTP from Postfix,
/// scores and tags each message, and relays it to the next hop.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// TOML configuration file; without it the embedded defaults are used
    /// (listen 127.0.0.1:10024, next hop 127.0.0.1:10025).
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Validate the configuration, print every problem, and exit (0 valid, 78 invalid).
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Make a DKIM signing key: writes the private key (mode 0600, never over an existing
    /// file) and prints the DNS TXT record to publish and the [[dkim.keys]] table to add.
    DkimKeygen {
        /// The signing domain (d=).
        #[arg(long)]
        domain: String,
        /// The selector (s=); the record goes to SELECTOR._domainkey.DOMAIN.
        #[arg(long)]
        selector: String,
        /// rsa (rsa-sha256, what every verifier supports) or ed25519 (RFC 8463).
        #[arg(long, default_value = "rsa")]
        algorithm: String,
        /// RSA key size in bits.
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// Where to write the private key [default: DOMAIN.SELECTOR.pem].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// The rule engine: check the rule files, or see which rules a message fires.
    Rules {
        #[command(subcommand)]
        action: RulesAction,
    },
}

#[derive(clap::Subcommand, Debug)]
enum RulesAction {
    /// Compile the shipped rules and the `[rules] dirs` of --config; list every problem
    /// with file and line (exit 78), or what was loaded.
    Lint,
    /// Score a message as filterd would (the configured model and Bayes store, no DNS) and
    /// say which rules fired and on what text.
    Test {
        /// The message, as a file (`-`: standard input).
        file: PathBuf,
    },
}

/// `filterd rules lint|test`.
fn rules(config: Option<&PathBuf>, action: &RulesAction) -> Result<u8, Failure> {
    let config = match config {
        Some(path) => Config::load(path),
        None => Config::defaults(),
    }
    .map_err(|e| Failure::msg(exit::CONFIG, format!("configuration is invalid:\n{e}")))?;
    match action {
        RulesAction::Lint => match filterd::rules::cli::lint(&config.rules) {
            Ok(report) => {
                print!("{report}");
                Ok(exit::OK)
            }
            Err(problems) => Err(Failure::msg(exit::CONFIG, problems.join("\n"))),
        },
        RulesAction::Test { file } => {
            let raw = if file.as_os_str() == "-" {
                let mut v = vec![];
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut v).map(|_| v)
            } else {
                std::fs::read(file)
            }
            .map_err(|e| Failure::msg(exit::NOINPUT, format!("{}: {e}", file.display())))?;
            let now = filterd::clock::now_unix() as i64;
            let scorer = filterd::rules::cli::Scorer {
                rules: &config.rules,
                bayes: config.bayes.clone(),
                model: config.model.clone(),
                levels: config.levels,
            };
            print!("{}", filterd::rules::cli::test(&scorer, &raw, now));
            Ok(exit::OK)
        }
    }
}

fn dkim_keygen(
    domain: &str,
    selector: &str,
    algorithm: &str,
    bits: usize,
    out: Option<PathBuf>,
) -> Result<u8, Failure> {
    use filterd::auth::sign::{GeneratedKey, KeyAlgorithm};
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let Some(alg) = KeyAlgorithm::parse(algorithm) else {
        return Err(Failure::msg(
            exit::USAGE,
            format!("--algorithm must be rsa or ed25519, not `{algorithm}`"),
        ));
    };
    if alg == KeyAlgorithm::Rsa && !(1024..=8192).contains(&bits) {
        return Err(Failure::msg(
            exit::USAGE,
            "--bits must be between 1024 and 8192 (2048 recommended)",
        ));
    }
    let path = out.unwrap_or_else(|| PathBuf::from(format!("{domain}.{selector}.pem")));
    let key = GeneratedKey::generate(alg, bits).map_err(|e| Failure::msg(exit::OSERR, e))?;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| {
            f.write_all(key.private_pem.as_bytes())?;
            f.sync_all()
        });
    if let Err(e) = written {
        let why = if e.kind() == std::io::ErrorKind::AlreadyExists {
            "exists; not overwriting a key (remove it first, or pick another --out)".to_string()
        } else {
            e.to_string()
        };
        return Err(Failure::msg(
            exit::CANTCREAT,
            format!("{}: {why}", path.display()),
        ));
    }
    let shown = std::fs::canonicalize(&path).unwrap_or(path);
    println!("Wrote the private key to {} (mode 0600).", shown.display());
    println!(
        "\nPublish this DNS record:\n{}",
        key.zone_line(domain, selector)
    );
    println!(
        "\nThen add to filterd.toml:\n[[dkim.keys]]\ndomain = \"{domain}\"\nselector = \"{selector}\"\nalgorithm = \"{}\"\nkey_file = \"{}\"",
        alg.dns_name(),
        shown.display()
    );
    Ok(exit::OK)
}

fn main() -> ExitCode {
    tune_allocator();
    if let Some(code) =
        filterd::docs::handle(<Args as clap::CommandFactory>::command().name("filterd"))
    {
        return code;
    }
    let args = Args::parse();
    if let Some(Command::DkimKeygen {
        domain,
        selector,
        algorithm,
        bits,
        out,
    }) = &args.command
    {
        let (domain, selector, algorithm, bits, out) = (
            domain.clone(),
            selector.clone(),
            algorithm.clone(),
            *bits,
            out.clone(),
        );
        return exit::run("filterd dkim-keygen", || {
            dkim_keygen(&domain, &selector, &algorithm, bits, out)
        });
    }
    if let Some(Command::Rules { action }) = &args.command {
        return exit::run("filterd rules", || rules(args.config.as_ref(), action));
    }
    exit::run("filterd", || serve(&args))
}

/// Log to stderr, or natively to the journal (`[log] journald`), and, when configured, to
/// syslog: the syslog lines carry no time or level of their own (syslog adds the time, the
/// level is the priority), so the mail log reads like amavisd-new's. In the journal each
/// message line carries its fields; stderr and syslog get the plain line.
fn init_logging(
    filter: tracing_subscriber::EnvFilter,
    syslog: Option<&str>,
    journald: filterd::config::Journald,
) {
    use filterd::report::logline::{JOURNAL_FIELDS, PLAIN_LINE};
    use std::sync::atomic::Ordering;
    use syslog_tracing::{Facility, Options, Syslog};
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::filter_fn;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let plain = || filter_fn(|m| m.target() != "filterd::journal");
    let (journal, journal_error) = match journald_wanted(journald) {
        false => (None, None),
        true => match tracing_journald::layer() {
            Ok(l) => (
                Some(
                    l.with_field_prefix(Some("FILTERD".into()))
                        .with_syslog_identifier("filterd".into())
                        .with_filter(filter_fn(|m| m.target() != "filterd::message")),
                ),
                None,
            ),
            Err(e) => (None, Some(e)),
        },
    };
    let stderr = journal.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(plain())
    });
    let facility = syslog.map(|f| match f {
        "daemon" => Facility::Daemon,
        "user" => Facility::User,
        "local0" => Facility::Local0,
        "local1" => Facility::Local1,
        "local2" => Facility::Local2,
        "local3" => Facility::Local3,
        "local4" => Facility::Local4,
        "local5" => Facility::Local5,
        "local6" => Facility::Local6,
        "local7" => Facility::Local7,
        _ => Facility::Mail,
    });
    let syslog = facility
        .and_then(|f| Syslog::new(c"filterd", Options::LOG_PID, f))
        .map(|w| {
            tracing_subscriber::fmt::layer()
                .with_writer(w)
                .with_ansi(false)
                .without_time()
                .with_level(false)
                .with_target(false)
                .with_filter(plain())
        });
    JOURNAL_FIELDS.store(journal.is_some(), Ordering::Relaxed);
    PLAIN_LINE.store(stderr.is_some() || syslog.is_some(), Ordering::Relaxed);
    tracing_subscriber::registry()
        .with(filter)
        .with(journal)
        .with(stderr)
        .with(syslog)
        .init();
    if let Some(e) = journal_error {
        tracing::error!(
            "log.journald = \"on\" but the journal cannot be reached ({e}); logging to stderr"
        );
    }
}

/// Whether `[log] journald` asks for the journal: `auto` when systemd connected stderr to
/// it (`$JOURNAL_STREAM` is stderr's device and inode, as sd_journal_stream_fd(3) says).
fn journald_wanted(journald: filterd::config::Journald) -> bool {
    use filterd::config::Journald;
    use std::os::unix::fs::MetadataExt as _;
    match journald {
        Journald::On => true,
        Journald::Off => false,
        Journald::Auto => {
            let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
                return false;
            };
            let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
                return false;
            };
            stream.to_string_lossy() == format!("{}:{}", meta.dev(), meta.ino())
        }
    }
}

/// Load the configuration, check it, or serve with it.
fn serve(args: &Args) -> Result<u8, Failure> {
    let invalid = |e: &dyn std::fmt::Display| {
        Failure::msg(exit::CONFIG, format!("configuration is invalid:\n{e}"))
    };
    let config = match &args.config {
        Some(path) => Config::load(path),
        None => Config::defaults(),
    }
    .map_err(|e| invalid(&e))?;
    if args.check_config {
        if let Some(q) = &config.quarantine
            && let Err(e) = q.store.check()
        {
            return Err(invalid(&format!("  - quarantine: {e}")));
        }
        println!("filterd: configuration OK");
        println!("filterd: {}", config.local.summary);
        return Ok(exit::OK);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    init_logging(filter, config.log_syslog.as_deref(), config.log_journald);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .map_err(|e| Failure::msg(exit::OSERR, format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        let shutdown = shutdown_signal();
        let server = Server::bind(config).await.map_err(|e| {
            let code = match e {
                BindError::Quarantine(_) => exit::CONFIG,
                BindError::Listen(..) => exit::OSERR,
            };
            Failure::new(code, e)
        })?;
        server.serve(shutdown).await;
        tracing::info!("filterd stopped");
        Ok(exit::OK)
    })
}

/// Resolves on SIGTERM or SIGINT.
/// Install the SIGTERM and SIGINT handlers now, before the listeners are bound and READY=1
/// goes to systemd (a stop right after the start must drain, not kill), and return the
/// future that ends at the first of the two signals.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}

#[cfg(test)]
mod tests {
    /// The option index names mimalloc's arena_max_object_size: its default is 2 GiB in KiB
    /// (no other option's is), and setting it takes.
    #[test]
    fn the_allocator_option_is_the_arena_object_size() {
        let get =
            || unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_ARENA_MAX_OBJECT_SIZE) };
        assert_eq!(get(), 2 * 1024 * 1024);
        super::tune_allocator();
        assert_eq!(get(), 256);
    }
}
