use std::process::ExitCode;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    Run(sigil_agent::run::RunArgs),
    Validate(sigil_agent::run::RunArgs),
    #[command(subcommand)]
    Api(sigil_agent::cli::ApiCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(sigil_cli::normalize_go_flags(std::env::args_os()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Run(a) => sigil_agent::run::run_command(a).await,
            Cmd::Validate(a) => sigil_agent::run::validate_command(&a),
            Cmd::Api(c) => sigil_agent::cli::run_api(c).await,
        }
    })
}
