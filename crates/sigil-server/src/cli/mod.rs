//! The admin commands of `sigil-server` (`token`, `entry`, `agent`, `bundle`,
//! `localauthority`, `upstreamauthority`, `logger`, `debug`, `x509`, `jwt`,
//! `healthcheck`): SPIRE's `spire-server` CLI, same flags, same output.
//!
//! Every command talks to a running server over its admin Unix socket with the
//! SPIRE server API. Each one is split the same way so it can be tested
//! without a server: a pure function turns flags into a request (all local
//! validation, with SPIRE's error messages, happens there and nothing is sent
//! when it fails), the RPC is made, and a pure function renders the response
//! as SPIRE prints it (`pretty`, or protobuf JSON with `-output json`).
//!
//! This module owns only the client side; it never touches server state
//! except through the API.

mod agent;
mod bundle;
mod debug;
mod entry;
mod federation;
mod fmt;
mod healthcheck;
mod json;
mod localauthority;
mod logger;
mod mint;
mod rpc;
mod token;
mod upstreamauthority;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tonic::transport::Channel;

pub use agent::AgentCommand;
pub use bundle::BundleCommand;
pub use debug::DebugCommand;
pub use entry::EntryCommand;
pub use federation::FederationCommand;
pub use healthcheck::HealthcheckArgs;
pub use localauthority::LocalAuthorityCommand;
pub use logger::LoggerCommand;
pub use mint::{JwtCommand, X509Command};
pub use token::TokenCommand;
pub use upstreamauthority::UpstreamAuthorityCommand;

/// Where the admin socket is when `-socketPath` is not given (SPIRE's default).
pub const DEFAULT_SOCKET_PATH: &str = "/tmp/spire-server/private/api.sock";

/// Environment variable naming the admin socket (SPIRE's name), used when
/// `-socketPath` is left at its default.
pub const SOCKET_ENV: &str = "SPIRE_SERVER_PRIVATE_SOCKET";

/// Environment variable holding a socket path template with `%i`, filled in
/// by `-instance` (SPIRE's name).
pub const SOCKET_TEMPLATE_ENV: &str = "SPIRE_SERVER_PRIVATE_SOCKET_TEMPLATE";

/// The admin subcommands of `sigil-server`.
#[derive(clap::Subcommand, Debug)]
pub enum AdminCommand {
    /// Manage join tokens
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage registration entries
    #[command(subcommand)]
    Entry(EntryCommand),
    /// Manage attested agents
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Manage the server's and federated trust bundles
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Determines server health status
    Healthcheck(HealthcheckArgs),
    /// Manage dynamic federation relationships
    #[command(subcommand)]
    Federation(FederationCommand),
    /// Manage the local X.509 and JWT authorities
    #[command(subcommand, name = "localauthority")]
    LocalAuthority(LocalAuthorityCommand),
    /// Manage X.509 upstream authorities
    #[command(subcommand, name = "upstreamauthority")]
    UpstreamAuthority(UpstreamAuthorityCommand),
    /// Get or change the server's log level
    #[command(subcommand)]
    Logger(LoggerCommand),
    /// Debug information about the server
    #[command(subcommand)]
    Debug(DebugCommand),
    /// Mint X509-SVIDs
    #[command(subcommand)]
    X509(X509Command),
    /// Mint JWT-SVIDs
    #[command(subcommand)]
    Jwt(JwtCommand),
}

/// Runs one admin command: prints its output on stdout/stderr as SPIRE does
/// and returns the process exit code (1 on any error, after printing
/// `Error: <message>` on stderr).
pub async fn run(cmd: AdminCommand) -> ExitCode {
    let result = match cmd {
        AdminCommand::Token(c) => token::run(c).await,
        AdminCommand::Entry(c) => entry::run(c).await,
        AdminCommand::Agent(c) => agent::run(c).await,
        AdminCommand::Bundle(c) => bundle::run(c).await,
        AdminCommand::Healthcheck(a) => healthcheck::run(a).await,
        AdminCommand::Federation(c) => federation::run(c).await,
        AdminCommand::LocalAuthority(c) => localauthority::run(c).await,
        AdminCommand::UpstreamAuthority(c) => upstreamauthority::run(c).await,
        AdminCommand::Logger(c) => logger::run(c).await,
        AdminCommand::Debug(c) => debug::run(c).await,
        AdminCommand::X509(c) => mint::run_x509(c).await,
        AdminCommand::Jwt(c) => mint::run_jwt(c).await,
    };
    let (outcome, error) = match result {
        Ok(outcome) => {
            let error = outcome.error.clone();
            (outcome, error)
        }
        Err(e) => (Outcome::default(), Some(e.to_string())),
    };
    // A closed stdout (`| head`) is not worth failing over.
    let _ = std::io::stdout()
        .lock()
        .write_all(outcome.stdout.as_bytes());
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(outcome.stderr.as_bytes());
    match error {
        Some(message) => {
            let _ = writeln!(stderr, "Error: {message}");
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}

/// Opens a gRPC channel to the server's admin API over the Unix socket at
/// `socket_path`, connecting now so an absent server is reported at once.
///
/// The error reads like grpc-go's (what SPIRE prints), naming the socket:
/// `rpc error: code = Unavailable desc = connection error: desc = "transport:
/// Error while dialing: dial unix /path: connect: no such file or directory"`.
pub async fn admin_channel(socket_path: &Path) -> Result<Channel, DialError> {
    sigil_workload_client::unix_channel(socket_path)
        .await
        .map_err(|e| DialError {
            socket_path: socket_path.to_owned(),
            reason: dial_reason(&e.source),
        })
}

/// The admin socket could not be dialled. `Display` is grpc-go's wording,
/// which SPIRE's CLI prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "rpc error: code = Unavailable desc = connection error: desc = {}",
    fmt::go_quote(&format!(
        "transport: Error while dialing: dial unix {}: connect: {}",
        .socket_path.display(),
        .reason
    ))
)]
pub struct DialError {
    /// The socket dialled.
    pub socket_path: PathBuf,
    /// The errno text (Go's spelling) or the transport's message.
    pub reason: String,
}

/// An `-output` value other than SPIRE's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad formatter flag: unknown format option: {}", fmt::go_quote(.0))]
pub struct UnknownOutputFormat(pub String);

/// A boolean flag value Go's `strconv.ParseBool` would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parse error: invalid boolean value {}", fmt::go_quote(.0))]
pub struct InvalidGoBool(pub String);

/// The `-output` flag: how a command prints its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Human-readable text (SPIRE's default).
    #[default]
    Pretty,
    /// The response message as protobuf JSON with the proto field names.
    Json,
}

/// Flags every command that talks to the server has.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnArgs {
    /// Path to the SPIRE Server API socket
    #[arg(long = "socketPath", default_value = DEFAULT_SOCKET_PATH)]
    pub socket_path: String,
    /// Instance name to substitute into socket templates (env
    /// SPIRE_SERVER_PRIVATE_SOCKET_TEMPLATE).
    #[arg(long = "instance", default_value = "", hide_default_value = true)]
    pub instance: String,
}

impl Default for ConnArgs {
    fn default() -> Self {
        ConnArgs {
            socket_path: DEFAULT_SOCKET_PATH.to_owned(),
            instance: String::new(),
        }
    }
}

/// Why an admin command failed. Its `Display` is what follows `Error: `.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Flags or input files were wrong; nothing was sent to the server.
    #[error("{0}")]
    Invalid(String),
    /// The admin socket could not be reached.
    #[error("{0}")]
    Connect(String),
    /// The server answered an RPC with an error status; `context` says which
    /// step failed, when SPIRE says so.
    #[error("{}{}", context_prefix(.context), fmt::rpc_error(.status))]
    Rpc {
        /// What was being done, e.g. `error fetching entries`.
        context: Option<String>,
        /// The status the server returned.
        status: tonic::Status,
    },
    /// The server's answer could not be printed (e.g. a bundle with an
    /// unparseable certificate).
    #[error("{0}")]
    Output(String),
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        CliError::Rpc {
            context: None,
            status,
        }
    }
}

/// What a command printed, and the error it ends with if some result failed
/// (SPIRE prints successes, then failures, then `Error: ...` and exits 1).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Text for stdout.
    pub stdout: String,
    /// Text for stderr (before any final `Error:` line).
    pub stderr: String,
    /// The final error message, without the `Error: ` prefix.
    pub error: Option<String>,
}

impl Outcome {
    fn stdout(stdout: String) -> Self {
        Outcome {
            stdout,
            ..Outcome::default()
        }
    }
}

/// Parses `-output` as SPIRE does: `pretty` (or `prettyprint`) and `json`,
/// any case.
pub fn parse_output_format(s: &str) -> Result<OutputFormat, UnknownOutputFormat> {
    match s.to_ascii_lowercase().as_str() {
        "json" => Ok(OutputFormat::Json),
        "pretty" | "prettyprint" => Ok(OutputFormat::Pretty),
        _ => Err(UnknownOutputFormat(s.to_owned())),
    }
}

/// Parses a Go boolean flag value (`-admin=false`): the spellings Go's
/// `strconv.ParseBool` takes.
pub fn parse_go_bool(s: &str) -> Result<bool, InvalidGoBool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(InvalidGoBool(s.to_owned())),
    }
}

/// Picks the socket path as SPIRE does: an explicit `-socketPath` wins, then
/// `-instance` filled into the template, then the environment, then the
/// default.
pub fn resolve_socket_path(
    conn: &ConnArgs,
    template_env: Option<&str>,
    socket_env: Option<&str>,
) -> Result<PathBuf, CliError> {
    let template = template_env.unwrap_or("");
    if !conn.instance.is_empty() {
        if template.is_empty() {
            return Err(CliError::Invalid(format!(
                "you must define {SOCKET_TEMPLATE_ENV} to use the instance flag"
            )));
        }
        if !template.contains("%i") {
            return Err(CliError::Invalid(format!(
                "failed to find %i in {SOCKET_TEMPLATE_ENV}"
            )));
        }
    }
    let path = if conn.socket_path != DEFAULT_SOCKET_PATH {
        conn.socket_path.clone()
    } else if !conn.instance.is_empty() {
        template.replace("%i", &conn.instance)
    } else {
        match socket_env {
            Some(s) if !s.is_empty() => s.to_owned(),
            _ => DEFAULT_SOCKET_PATH.to_owned(),
        }
    };
    Ok(PathBuf::from(path))
}

/// Resolves the socket from flags and environment and connects to it.
async fn connect(conn: &ConnArgs) -> Result<Channel, CliError> {
    let template = std::env::var(SOCKET_TEMPLATE_ENV).ok();
    let socket = std::env::var(SOCKET_ENV).ok();
    let path = resolve_socket_path(conn, template.as_deref(), socket.as_deref())?;
    admin_channel(&path)
        .await
        .map_err(|e| CliError::Connect(e.to_string()))
}

fn context_prefix(context: &Option<String>) -> String {
    context
        .as_ref()
        .map(|c| format!("{c}: "))
        .unwrap_or_default()
}

/// The reason grpc-go gives for a failed dial: the underlying I/O error's
/// errno text when there is one.
fn dial_reason(err: &(dyn std::error::Error + 'static)) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut reason = None;
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            reason = Some(fmt::go_errno_text(io));
            break;
        }
        source = e.source();
    }
    reason.unwrap_or_else(|| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(socket: &str, instance: &str) -> ConnArgs {
        ConnArgs {
            socket_path: socket.to_owned(),
            instance: instance.to_owned(),
        }
    }

    #[test]
    fn explicit_socket_path_beats_environment() {
        let p = resolve_socket_path(&conn("/x.sock", ""), None, Some("/env.sock")).unwrap();
        assert_eq!(p, PathBuf::from("/x.sock"));
    }

    #[test]
    fn default_socket_path_yields_to_environment() {
        let c = conn(DEFAULT_SOCKET_PATH, "");
        assert_eq!(
            resolve_socket_path(&c, None, Some("/env.sock")).unwrap(),
            PathBuf::from("/env.sock")
        );
        assert_eq!(
            resolve_socket_path(&c, None, None).unwrap(),
            PathBuf::from(DEFAULT_SOCKET_PATH)
        );
    }

    #[test]
    fn instance_fills_the_template_or_explains_why_not() {
        let c = conn(DEFAULT_SOCKET_PATH, "a");
        assert_eq!(
            resolve_socket_path(&c, Some("/run/%i/api.sock"), None).unwrap(),
            PathBuf::from("/run/a/api.sock")
        );
        assert_eq!(
            resolve_socket_path(&c, None, None).unwrap_err().to_string(),
            "you must define SPIRE_SERVER_PRIVATE_SOCKET_TEMPLATE to use the instance flag"
        );
        assert_eq!(
            resolve_socket_path(&c, Some("/run/api.sock"), None)
                .unwrap_err()
                .to_string(),
            "failed to find %i in SPIRE_SERVER_PRIVATE_SOCKET_TEMPLATE"
        );
    }

    #[test]
    fn output_flag_accepts_spire_spellings() {
        assert_eq!(parse_output_format("JSON").unwrap(), OutputFormat::Json);
        assert_eq!(
            parse_output_format("prettyprint").unwrap(),
            OutputFormat::Pretty
        );
        assert_eq!(
            parse_output_format("yaml").unwrap_err().to_string(),
            "bad formatter flag: unknown format option: \"yaml\""
        );
    }

    #[tokio::test]
    async fn missing_socket_error_names_the_path_like_grpc_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.sock");
        let err = admin_channel(&path).await.unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial unix {}: connect: no such file or directory\"",
                path.display()
            )
        );
    }

    #[test]
    fn rpc_errors_read_like_grpc_go_with_context() {
        let e = CliError::Rpc {
            context: Some("error fetching entry ID x".into()),
            status: tonic::Status::not_found("no such registration entry"),
        };
        assert_eq!(
            e.to_string(),
            "error fetching entry ID x: rpc error: code = NotFound desc = no such registration entry"
        );
    }
}
