//! `healthcheck`: asks the server's gRPC health service over the admin socket.

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::{CliError, ConnArgs, Outcome, parse_go_bool};

/// Flags of `healthcheck`.
#[derive(clap::Args, Debug, Clone)]
pub struct HealthcheckArgs {
    /// Perform a less stringent health check
    #[arg(long = "shallow", action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub shallow: bool,
    /// Print verbose information
    #[arg(long = "verbose", action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub verbose: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// What the health check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Health {
    /// The server answered `SERVING`.
    Serving,
    /// The server answered with another status (its proto name).
    Status(String),
    /// No answer: the socket or the RPC failed (the error text).
    Unreachable(String),
}

pub(crate) async fn run(args: HealthcheckArgs) -> Result<Outcome, CliError> {
    let health = match super::connect(&args.conn).await {
        Err(CliError::Connect(e)) => Health::Unreachable(e),
        // A bad `-instance` setup is a usage error, not a health verdict.
        Err(e) => return Err(e),
        Ok(channel) => {
            let resp = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            match resp {
                Ok(r) => match ServingStatus::try_from(r.into_inner().status) {
                    Ok(ServingStatus::Serving) => Health::Serving,
                    Ok(other) => Health::Status(other.as_str_name().to_owned()),
                    Err(_) => Health::Status("UNKNOWN".to_owned()),
                },
                Err(status) => Health::Unreachable(super::fmt::rpc_error(&status)),
            }
        }
    };
    Ok(render(&health, args.verbose))
}

/// SPIRE's output: `Server is healthy.`, or `Error: server is unhealthy: ...`
/// (with the underlying failure on stderr when `-verbose`).
pub(crate) fn render(health: &Health, verbose: bool) -> Outcome {
    let mut out = Outcome::default();
    if verbose {
        out.stdout.push_str("Checking server health...\n");
    }
    match health {
        Health::Serving => out.stdout.push_str("Server is healthy.\n"),
        Health::Status(s) => {
            out.error = Some(format!(
                "server is unhealthy: server returned status \"{s}\""
            ));
        }
        Health::Unreachable(e) => {
            if verbose {
                out.stderr
                    .push_str(&format!("Failed to check health: {e}\n"));
            }
            out.error = Some("server is unhealthy: unable to determine health".into());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_and_unhealthy_texts_match_spire() {
        assert_eq!(
            render(&Health::Serving, false).stdout,
            "Server is healthy.\n"
        );
        assert_eq!(
            render(&Health::Serving, true).stdout,
            "Checking server health...\nServer is healthy.\n"
        );
        let out = render(&Health::Status("NOT_SERVING".into()), false);
        assert_eq!(
            out.error.as_deref(),
            Some("server is unhealthy: server returned status \"NOT_SERVING\"")
        );
        let out = render(&Health::Unreachable("boom".into()), true);
        assert_eq!(out.stderr, "Failed to check health: boom\n");
        assert_eq!(
            out.error.as_deref(),
            Some("server is unhealthy: unable to determine health")
        );
    }

    #[tokio::test]
    async fn missing_socket_is_unhealthy_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let args = HealthcheckArgs {
            shallow: false,
            verbose: true,
            conn: ConnArgs {
                socket_path: dir.path().join("none.sock").display().to_string(),
                instance: String::new(),
            },
        };
        let out = run(args).await.unwrap();
        assert!(
            out.stderr
                .starts_with("Failed to check health: rpc error: code = Unavailable")
        );
        assert_eq!(
            out.error.as_deref(),
            Some("server is unhealthy: unable to determine health")
        );
    }
}
