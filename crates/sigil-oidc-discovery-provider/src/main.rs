//! `sigil-oidc-discovery-provider`: see the library documentation.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sigil_oidc_discovery_provider::config::Config;

/// Serves the trust domain's JWT signing keys as an OIDC discovery document.
#[derive(Parser, Debug)]
#[command(name = "sigil-oidc-discovery-provider", disable_version_flag = true)]
struct Args {
    /// Configuration file (SPIRE's oidc-discovery-provider HCL).
    #[arg(long = "config", default_value = "oidc-discovery-provider.conf")]
    config: PathBuf,
    /// Expand $VAR and ${VAR} in the configuration file from the environment.
    #[arg(long = "expandEnv")]
    expand_env: bool,
    /// Print the version and exit.
    #[arg(long = "version")]
    version: bool,
}

fn main() -> ExitCode {
    let args = Args::parse_from(sigil_cli::normalize_go_flags(std::env::args_os()));
    if args.version {
        println!("{}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let cfg = match Config::load(&args.config, args.expand_env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    sigil_cli::init_logging(&cfg.log_level, &cfg.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(sigil_oidc_discovery_provider::run::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "Provider stopped");
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
