//! `filterd`: the daemon. Parses flags, loads the configuration (embedded defaults without
//! `--config`), sets up logging and signals, and serves until SIGTERM/SIGINT.

use clap::Parser;
use filterd::config::Config;
use filterd::server::Server;
use std::path::PathBuf;
use std::process::ExitCode;

/// sysexits.h EX_CONFIG: configuration error.
const EX_CONFIG: u8 = 78;
/// sysexits.h EX_OSERR: could not bind, no runtime.
const EX_OSERR: u8 = 71;

/// A content filter for Postfix (the amavisd-new slot): listens for SMTP from Postfix,
/// scores and tags each message, and relays it to the next hop.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// TOML configuration file; without it the embedded defaults are used
    /// (listen 127.0.0.1:10024, next hop 127.0.0.1:10025).
    #[arg(long, short = 'c', value_name = "FILE")]
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
}

/// sysexits.h EX_USAGE.
const EX_USAGE: u8 = 64;
/// sysexits.h EX_CANTCREAT.
const EX_CANTCREAT: u8 = 73;

fn dkim_keygen(
    domain: &str,
    selector: &str,
    algorithm: &str,
    bits: usize,
    out: Option<PathBuf>,
) -> ExitCode {
    use filterd::auth::sign::{GeneratedKey, KeyAlgorithm};
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let Some(alg) = KeyAlgorithm::parse(algorithm) else {
        eprintln!("filterd dkim-keygen: --algorithm must be rsa or ed25519, not `{algorithm}`");
        return ExitCode::from(EX_USAGE);
    };
    if alg == KeyAlgorithm::Rsa && !(1024..=8192).contains(&bits) {
        eprintln!("filterd dkim-keygen: --bits must be between 1024 and 8192 (2048 recommended)");
        return ExitCode::from(EX_USAGE);
    }
    let path = out.unwrap_or_else(|| PathBuf::from(format!("{domain}.{selector}.pem")));
    let key = match GeneratedKey::generate(alg, bits) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("filterd dkim-keygen: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
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
        eprintln!("filterd dkim-keygen: {}: {why}", path.display());
        return ExitCode::from(EX_CANTCREAT);
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
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::DkimKeygen {
        domain,
        selector,
        algorithm,
        bits,
        out,
    }) = args.command
    {
        return dkim_keygen(&domain, &selector, &algorithm, bits, out);
    }
    let config = match &args.config {
        Some(path) => Config::load(path),
        None => Config::defaults(),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("filterd: configuration is invalid:\n{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if args.check_config {
        if let Some(q) = &config.quarantine
            && let Err(e) = q.store.check()
        {
            eprintln!("filterd: configuration is invalid:\n  - quarantine: {e}");
            return ExitCode::from(EX_CONFIG);
        }
        println!("filterd: configuration OK");
        return ExitCode::SUCCESS;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("filterd: cannot start the runtime: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    runtime.block_on(async move {
        let server = match Server::bind(config.clone()).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("filterd: {e:#}");
                return ExitCode::from(EX_OSERR);
            }
        };
        server.serve(shutdown_signal()).await;
        tracing::info!("filterd stopped");
        ExitCode::SUCCESS
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
