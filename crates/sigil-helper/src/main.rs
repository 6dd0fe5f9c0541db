//! `sigil-helper [-config helper.conf] [-daemon-mode=true|false]`, with
//! spiffe-helper's flags (`-flag` or `--flag`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use sigil_helper::agent::UnixWorkloadApi;
use sigil_helper::config::HelperConfig;
use sigil_helper::run::{run_daemon, run_once};

#[derive(Parser, Debug)]
#[command(
    name = "sigil-helper",
    version,
    about = "Keeps SPIFFE SVIDs in files for programs that cannot use the Workload API (spiffe-helper compatible)"
)]
struct Cli {
    /// Configuration file path (spiffe-helper's HCL format).
    #[arg(long, value_name = "configFile", default_value = "helper.conf")]
    config: PathBuf,
    /// Run as a daemon keeping the files up to date (true), or fetch once
    /// and exit (false). Overrides daemon_mode in the config file.
    #[arg(
        long = "daemon-mode",
        value_name = "true|false",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = sigil_cli::flags::parse_go_bool
    )]
    daemon_mode: Option<bool>,
    /// One-shot mode: how long to wait for the agent and an identity
    /// before failing (a Go duration; sigil's addition).
    #[arg(long = "fetch-timeout", value_name = "duration", default_value = "1m", value_parser = sigil_cli::parse_duration)]
    fetch_timeout: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(sigil_cli::normalize_go_flags(std::env::args_os()));
    sigil_cli::init_logging("INFO", "text");
    tracing::info!(config = %cli.config.display(), "Using configuration file");
    let endpoint = std::env::var("SPIFFE_ENDPOINT_SOCKET").ok();
    let config = match HelperConfig::load(&cli.config, cli.daemon_mode, endpoint.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration");
            eprintln!("Error: invalid configuration {}: {e}", cli.config.display());
            return ExitCode::FAILURE;
        }
    };
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let api = Arc::new(UnixWorkloadApi::new(config.agent_socket.clone()));
    let result = rt.block_on(async move {
        if config.daemon_mode {
            tracing::info!("Launching daemon");
            run_daemon(config, api, shutdown_signal()).await
        } else {
            tracing::info!("Daemon mode disabled");
            run_once(config, api, cli.fetch_timeout).await
        }
    });
    match result {
        Ok(()) => {
            tracing::info!("Exiting");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "Error starting spiffe-helper");
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            // Without signal handlers, run until killed.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn flags_are_spiffe_helpers_in_go_or_gnu_style() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(sigil_cli::normalize_go_flags(
                std::iter::once("sigil-helper").chain(args.iter().copied()),
            ))
        };
        let c = parse(&[]).map_err(|e| e.to_string());
        assert!(
            matches!(&c, Ok(c) if c.config == Path::new("helper.conf") && c.daemon_mode.is_none())
        );
        for args in [
            &["-config", "x.conf", "-daemon-mode=false"][..],
            &["--config=x.conf", "--daemon-mode=F"][..],
        ] {
            let c = parse(args).map_err(|e| e.to_string());
            assert!(
                matches!(&c, Ok(c) if c.config == Path::new("x.conf") && c.daemon_mode == Some(false)),
                "{args:?}: {c:?}"
            );
        }
        let c = parse(&["-daemon-mode"]).map_err(|e| e.to_string());
        assert!(matches!(&c, Ok(c) if c.daemon_mode == Some(true)), "{c:?}");
        assert!(parse(&["-daemon-mode=maybe"]).is_err());
        assert!(parse(&["-bogus"]).is_err());
    }
}
