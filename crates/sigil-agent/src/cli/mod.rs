//! The agent's client commands, shaped like `spire-agent`'s: `api fetch
//! x509`, `api fetch jwt`, `api validate jwt`, `api watch` and
//! `healthcheck`, with SPIRE's flag names, output formats and messages, so
//! scripts written for SPIRE keep working.
//!
//! This module owns talking to a running agent over its Workload API socket
//! (every request carries `workload.spiffe.io: true`) and presenting what
//! comes back. It never reads the agent's config or state: everything it
//! knows comes over the socket. Flags are clap long names spelled as in
//! SPIRE (`--socketPath`); the binary rewrites Go-style `-socketPath` before
//! clap parses them.

mod client;
mod format;
mod healthcheck;
mod jwt;
mod x509;

#[cfg(test)]
mod tests;

use std::io::Write;
use std::process::ExitCode;

pub use client::{CliError, workload_channel};
pub use format::{go_duration, go_time};
pub use healthcheck::{HealthcheckArgs, run_healthcheck, run_healthcheck_with};
pub use jwt::{FetchJwtArgs, ValidateJwtArgs};
pub use x509::{FetchX509Args, WatchArgs};

/// Where `spire-agent` (and so sigil-agent) listens by default.
pub const DEFAULT_SOCKET_PATH: &str = "/tmp/spire-agent/public/api.sock";

/// `sigil-agent api ...`.
#[derive(clap::Subcommand, Debug)]
pub enum ApiCommand {
    /// Fetches SVIDs from the Workload API (`api fetch` alone is `api fetch
    /// x509`, as in SPIRE).
    Fetch(FetchArgs),
    /// Validates SVIDs through the Workload API.
    #[command(subcommand)]
    Validate(ValidateCommand),
    /// Attaches to the Workload API and prints updates as they're received.
    Watch(WatchArgs),
}

/// `sigil-agent api fetch [x509|jwt] ...`: without a subcommand it takes
/// `x509`'s flags and does what `x509` does, like `spire-agent api fetch`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FetchArgs {
    /// `x509` or `jwt`; absent means `x509`.
    #[command(subcommand)]
    pub command: Option<FetchCommand>,
    /// The flags of the `x509` alias.
    #[command(flatten)]
    pub x509: FetchX509Args,
}

impl FetchArgs {
    /// The command to run, with the alias resolved.
    pub fn into_command(self) -> FetchCommand {
        self.command.unwrap_or(FetchCommand::X509(self.x509))
    }
}

/// `sigil-agent api fetch ...`.
#[derive(clap::Subcommand, Debug)]
pub enum FetchCommand {
    /// Fetches X509 SVIDs from the Workload API.
    X509(FetchX509Args),
    /// Fetches a JWT SVID from the Workload API.
    Jwt(FetchJwtArgs),
}

/// `sigil-agent api validate ...`.
#[derive(clap::Subcommand, Debug)]
pub enum ValidateCommand {
    /// Validates a JWT SVID.
    Jwt(ValidateJwtArgs),
}

/// `-output`: SPIRE's CLI output formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// Human-readable text.
    #[default]
    Pretty,
    /// The response messages as JSON (protobuf field names).
    Json,
}

/// Runs an `api` command against the agent, printing to stdout and stderr.
/// Exit code 0 on success, 1 on any failure (the reason is on stderr).
pub async fn run_api(cmd: ApiCommand) -> ExitCode {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    run_api_with(cmd, &mut out, &mut err).await
}

/// [`run_api`] with explicit output streams. `api watch` runs until Ctrl-C.
pub async fn run_api_with(
    cmd: ApiCommand,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> ExitCode {
    let result = match cmd {
        ApiCommand::Fetch(fetch) => match fetch.into_command() {
            FetchCommand::X509(args) => x509::fetch(&args, out).await,
            FetchCommand::Jwt(args) => jwt::fetch(&args, out).await,
        },
        ApiCommand::Validate(ValidateCommand::Jwt(args)) => jwt::validate(&args, out).await,
        ApiCommand::Watch(args) => {
            let interrupted = async {
                // Without a signal handler there is nothing to wait for but
                // the process being killed.
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            x509::watch(&args, out, err, interrupted).await
        }
    };
    finish(result, err)
}

/// Prints a failure the way SPIRE's CLI does (one line on stderr) and picks
/// the exit code.
fn finish(result: Result<(), CliError>, err: &mut (dyn Write + Send)) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Nothing sensible remains to be done if stderr is gone.
            let _ = writeln!(err, "{e}");
            ExitCode::FAILURE
        }
    }
}
