//! The `sigil-agent` command: `run`, `validate`, `healthcheck` and the
//! Workload API client commands under `api`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sigil_agent::cli::{ApiCommand, HealthcheckArgs};
use sigil_agent::run::RunArgs;

#[derive(Parser, Debug)]
#[command(
    name = "sigil-agent",
    version,
    about = "sigil-agent: the SPIFFE node agent and Workload API (SPIRE-compatible)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the agent
    Run(Box<RunArgs>),
    /// Validates an agent configuration file
    Validate(Box<RunArgs>),
    /// Determines agent health status
    Healthcheck(HealthcheckArgs),
    /// Talks to the Workload API as a workload would
    #[command(subcommand)]
    Api(ApiCommand),
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
            Command::Run(args) => sigil_agent::run::run_command(*args).await,
            Command::Validate(args) => sigil_agent::run::validate_command(&args),
            Command::Healthcheck(args) => sigil_agent::cli::run_healthcheck(args).await,
            Command::Api(cmd) => sigil_agent::cli::run_api(cmd).await,
        }
    })
}
