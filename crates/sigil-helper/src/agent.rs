//! The three Workload API calls the helper makes, behind a small trait so
//! the rest of the program (and its tests) need no socket: the X.509-SVID
//! stream, the JWT bundle stream, and one JWT-SVID fetch. The
//! implementation on a Unix socket is [`UnixWorkloadApi`], built on
//! `sigil-workload-client`; it dials afresh for each call, which is what
//! makes a restarted agent transparent.

use std::path::PathBuf;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use sigil_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, X509svidRequest,
    X509svidResponse,
};

/// A stream of complete X.509 states.
pub type X509Stream = BoxStream<'static, Result<X509svidResponse, AgentError>>;
/// A stream of complete JWT bundle sets.
pub type JwtBundleStream = BoxStream<'static, Result<JwtBundlesResponse, AgentError>>;

/// Why a Workload API call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The socket could not be dialed.
    #[error(transparent)]
    Connect(#[from] sigil_workload_client::ConnectError),
    /// The agent answered with an error status.
    #[error("the agent answered {}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// A stream ended without an error (the agent shut down).
    #[error("the agent closed the stream")]
    StreamEnded,
    /// A call was still unanswered at the deadline.
    #[error("the agent did not answer")]
    NoAnswer,
}

impl AgentError {
    /// Whether waiting may help: the agent is not (yet) reachable, or has
    /// no identity for this process yet (an entry not yet synced), as
    /// spiffe-helper retries `PermissionDenied`.
    pub fn is_transient(&self) -> bool {
        match self {
            AgentError::Connect(_) | AgentError::StreamEnded | AgentError::NoAnswer => true,
            AgentError::Status(s) => matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::PermissionDenied | tonic::Code::Unknown
            ),
        }
    }
}

/// The calls the helper needs from a Workload API.
pub trait WorkloadApi: Send + Sync + 'static {
    /// Opens `FetchX509SVID`.
    fn watch_x509(&self) -> BoxFuture<'_, Result<X509Stream, AgentError>>;
    /// Opens `FetchJWTBundles`.
    fn watch_jwt_bundles(&self) -> BoxFuture<'_, Result<JwtBundleStream, AgentError>>;
    /// Calls `FetchJWTSVID` for `audiences`.
    fn fetch_jwt_svids(
        &self,
        audiences: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<Jwtsvid>, AgentError>>;
}

/// The Workload API on a Unix socket.
#[derive(Debug, Clone)]
pub struct UnixWorkloadApi {
    socket: PathBuf,
}

impl UnixWorkloadApi {
    /// The API served at `socket`.
    pub fn new(socket: PathBuf) -> Self {
        UnixWorkloadApi { socket }
    }
}

impl WorkloadApi for UnixWorkloadApi {
    fn watch_x509(&self) -> BoxFuture<'_, Result<X509Stream, AgentError>> {
        Box::pin(async move {
            let mut client = sigil_workload_client::connect(&self.socket).await?;
            let stream = client
                .fetch_x509svid(sigil_workload_client::with_header(X509svidRequest {}))
                .await?
                .into_inner();
            Ok(stream.map(|m| m.map_err(AgentError::from)).boxed())
        })
    }

    fn watch_jwt_bundles(&self) -> BoxFuture<'_, Result<JwtBundleStream, AgentError>> {
        Box::pin(async move {
            let mut client = sigil_workload_client::connect(&self.socket).await?;
            let stream = client
                .fetch_jwt_bundles(sigil_workload_client::with_header(JwtBundlesRequest {}))
                .await?
                .into_inner();
            Ok(stream.map(|m| m.map_err(AgentError::from)).boxed())
        })
    }

    fn fetch_jwt_svids(
        &self,
        audiences: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<Jwtsvid>, AgentError>> {
        Box::pin(async move {
            let mut client = sigil_workload_client::connect(&self.socket).await?;
            let response = client
                .fetch_jwtsvid(sigil_workload_client::with_header(JwtsvidRequest {
                    audience: audiences,
                    spiffe_id: String::new(),
                }))
                .await?
                .into_inner();
            Ok(response.svids)
        })
    }
}
