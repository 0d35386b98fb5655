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
}

fn main() -> ExitCode {
    let args = Args::parse();
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
