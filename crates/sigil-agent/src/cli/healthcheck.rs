//! `healthcheck`: asks the agent's `grpc.health.v1` service on its public
//! socket and reports in `spire-agent healthcheck`'s words.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::DEFAULT_SOCKET_PATH;
use super::client::workload_channel;

/// `healthcheck`.
#[derive(clap::Args, Debug, Clone)]
pub struct HealthcheckArgs {
    /// Path to the SPIRE Agent API socket
    #[arg(long = "socketPath", default_value = DEFAULT_SOCKET_PATH)]
    pub socket_path: PathBuf,
    /// Perform a less stringent health check (accepted for compatibility;
    /// the agent's check is the same either way, as in SPIRE)
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true")]
    pub shallow: bool,
    /// Print verbose information
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true")]
    pub verbose: bool,
}

/// Runs the health check: `Agent is healthy.` on stdout and exit 0, or
/// `Agent is unhealthy: <reason>` on stderr and exit 1.
pub async fn run_healthcheck(args: HealthcheckArgs) -> ExitCode {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    run_healthcheck_with(&args, &mut out, &mut err).await
}

/// [`run_healthcheck`] with explicit output streams.
pub async fn run_healthcheck_with(
    args: &HealthcheckArgs,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> ExitCode {
    // Failing to print is not something a health check can report better.
    match check(args, out, err).await {
        Ok(()) => match writeln!(out, "Agent is healthy.") {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        },
        Err(reason) => {
            let _ = writeln!(err, "Agent is unhealthy: {reason}");
            ExitCode::FAILURE
        }
    }
}

async fn check(
    args: &HealthcheckArgs,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<(), String> {
    if args.verbose {
        let _ = writeln!(out, "Checking agent health...");
    }
    let response = async {
        let channel = workload_channel(&args.socket_path)
            .await
            .map_err(|e| e.to_string())?;
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| {
                format!(
                    "rpc error: code = {:?} desc = {} (socket {})",
                    s.code(),
                    s.message(),
                    args.socket_path.display()
                )
            })
    }
    .await;
    let response = match response {
        Ok(response) => response,
        Err(detail) => {
            // SPIRE keeps the reason short and gives details with -verbose.
            if args.verbose {
                let _ = writeln!(err, "Failed to check health: {detail}");
            }
            return Err("unable to determine health".to_owned());
        }
    };
    let status = ServingStatus::try_from(response.status).unwrap_or(ServingStatus::Unknown);
    if status != ServingStatus::Serving {
        return Err(format!(
            "agent returned status \"{}\"",
            status.as_str_name()
        ));
    }
    Ok(())
}
