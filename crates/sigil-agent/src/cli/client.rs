//! Connecting to an agent's Workload API socket, and the errors the client
//! commands report.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tonic::transport::Channel;

use super::format::go_duration;

/// Why a client command failed. `Display` is the line printed on stderr.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Could not connect to the socket.
    #[error("{0}")]
    Connect(String),
    /// The agent answered with an error status (printed as Go's gRPC
    /// client does, which SPIRE's CLI passes through).
    #[error("rpc error: code = {:?} desc = {}", .0.code(), .0.message())]
    Rpc(tonic::Status),
    /// `-timeout` elapsed.
    #[error("rpc error: code = DeadlineExceeded desc = no response from the agent at {} within {}", path.display(), go_duration(*after))]
    Timeout {
        /// The socket asked.
        path: PathBuf,
        /// The `-timeout` value.
        after: Duration,
    },
    /// `api validate jwt`: the agent says the token is not valid.
    #[error("SVID is not valid: {0}")]
    InvalidSvid(String),
    /// `api validate jwt`: validation itself failed.
    #[error("unable to validate JWT SVID: {0}")]
    ValidateFailed(Box<CliError>),
    /// A required flag is missing or empty.
    #[error("{0}")]
    Usage(&'static str),
    /// The agent's response is malformed (SVIDs that do not parse or verify).
    #[error("{0}")]
    BadResponse(String),
    /// Writing an output file failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Writing to stdout failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> CliError {
        CliError::Rpc(status)
    }
}

/// A gRPC channel to the Workload API (or anything else served) on the Unix
/// socket at `socket_path`. Connects now, so a missing or dead socket is
/// reported here, naming the path.
pub async fn workload_channel(socket_path: &Path) -> Result<Channel, CliError> {
    sigil_workload_client::unix_channel(socket_path)
        .await
        .map_err(|e| {
            CliError::Connect(format!(
                "cannot connect to the agent at {}: {}",
                socket_path.display(),
                error_chain(&e.source)
            ))
        })
}

/// Adds the Workload API security header to a request.
pub(crate) fn with_header<T>(message: T) -> tonic::Request<T> {
    sigil_workload_client::with_header(message)
}

/// A Workload API client for `socket_path`.
pub(crate) async fn connect(
    socket_path: &Path,
) -> Result<SpiffeWorkloadApiClient<Channel>, CliError> {
    Ok(
        SpiffeWorkloadApiClient::new(workload_channel(socket_path).await?)
            .max_decoding_message_size(sigil_proto::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(sigil_proto::MAX_MESSAGE_SIZE),
    )
}

/// Runs `work` under `-timeout` (zero means no limit, as in SPIRE).
pub(crate) async fn within<T>(
    socket_path: &Path,
    timeout: Duration,
    work: impl Future<Output = Result<T, CliError>>,
) -> Result<T, CliError> {
    if timeout.is_zero() {
        return work.await;
    }
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| CliError::Timeout {
            path: socket_path.to_owned(),
            after: timeout,
        })?
}

/// An error and its sources, `: `-separated, skipping a source that only
/// repeats its parent (tonic's transport error adds little but a wrapper).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    // "transport error" on its own tells the operator nothing.
    if parts.len() > 1 && parts[0] == "transport error" {
        parts.remove(0);
    }
    parts.join(": ")
}
