//! The `sigil-server` command: `run`, `validate`, `dev`, and the admin
//! commands (`token`, `entry`, `agent`, `bundle`, `healthcheck`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sigil_server::cli::AdminCommand;
use sigil_server::config::{LoadError, ServerConfig};

#[derive(Parser, Debug)]
#[command(
    name = "sigil-server",
    version,
    about = "sigil-server: the SPIFFE trust domain's CA and registry (SPIRE-compatible)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the server
    Run(RunArgs),
    /// Validates a server configuration file
    Validate(ConfigArgs),
    /// Brings up a complete local trust domain (server, agent, an entry for you)
    Dev(sigil_server::dev::DevArgs),
    #[command(flatten)]
    Admin(Box<AdminCommand>),
}

#[derive(clap::Args, Debug)]
struct ConfigArgs {
    /// Path to a SPIRE-format server configuration file
    #[arg(long = "config", default_value = "conf/server/server.conf")]
    config: PathBuf,
    /// Expand environment variables ($VAR, ${VAR}) in the config file
    #[arg(long = "expandEnv")]
    expand_env: bool,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Overrides server.log_level
    #[arg(long = "logLevel")]
    log_level: Option<String>,
}

fn main() -> ExitCode {
    let args = sigil_cli::normalize_go_flags(std::env::args_os());
    let cli = Cli::parse_from(args);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        match cli.cmd {
            Command::Run(args) => run(args).await,
            Command::Validate(args) => validate(args),
            Command::Dev(args) => sigil_server::dev::run(args).await,
            Command::Admin(cmd) => sigil_server::cli::run(*cmd).await,
        }
    })
}

fn load(args: &ConfigArgs) -> Result<ServerConfig, LoadError> {
    let text = std::fs::read_to_string(&args.config).map_err(|source| LoadError::Read {
        path: args.config.clone(),
        source,
    })?;
    let text = if args.expand_env {
        sigil_cli::config::expand_env(&text)
    } else {
        text
    };
    ServerConfig::parse(&text).map_err(|source| LoadError::Parse {
        path: args.config.clone(),
        source,
    })
}

/// Why `validate` found the config unusable.
#[derive(Debug, thiserror::Error)]
enum ValidateFailure {
    /// The file could not be read or parsed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The config parsed but its plugins or options do not hold together.
    #[error(transparent)]
    Invalid(#[from] sigil_server::run::ValidateError),
}

fn validate(args: ConfigArgs) -> ExitCode {
    let checked = load(&args)
        .map_err(ValidateFailure::from)
        .and_then(|cfg| Ok(sigil_server::run::validate(&cfg)?));
    match checked {
        Ok(()) => {
            println!("SPIRE server configuration file is valid.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("SPIRE server configuration file is invalid: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> ExitCode {
    let mut cfg = match load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(level) = args.log_level {
        cfg.log_level = level;
    }
    sigil_cli::init_logging(&cfg.log_level, &cfg.log_format);
    let running = match sigil_server::run::start(cfg).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "Server crashed");
            eprintln!("Error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let _ = running;
    wait_for_shutdown().await;
    tracing::info!("Server stopped gracefully");
    ExitCode::SUCCESS
}

async fn wait_for_shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
