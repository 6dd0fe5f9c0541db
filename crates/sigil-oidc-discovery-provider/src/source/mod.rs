//! Where the JWT signing keys come from: SPIRE's `server_api` (the server's
//! admin socket) or `workload_api` (an agent's Workload API). Each source
//! polls every `poll_interval` and publishes what it got into the
//! [`KeyStore`]; a failed poll is logged and leaves the published keys as
//! they were. This module never serves HTTP.

pub mod server_api;
pub mod workload_api;

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::config::KeySource;
use crate::keys::KeyStore;

/// Why one poll failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// The RPC failed.
    #[error("{call}: {status}")]
    Rpc {
        /// The RPC.
        call: &'static str,
        /// The status.
        #[source]
        status: Box<tonic::Status>,
    },
    /// The Workload API socket could not be dialed.
    #[error(transparent)]
    Connect(#[from] sigil_workload_client::ConnectError),
    /// The RPC did not answer in time.
    #[error("{0}: timed out")]
    Timeout(&'static str),
    /// The stream ended before its first message.
    #[error("{0}: the stream ended without a message")]
    NoMessage(&'static str),
    /// The answer holds no bundle for the trust domain.
    #[error("no JWT bundle for trust domain {0:?} in the response")]
    NoBundle(String),
    /// The JWT bundle is not a JWKS of keys with key IDs.
    #[error("the JWT bundle for {trust_domain:?} is invalid: {source}")]
    BadBundle {
        /// Whose bundle.
        trust_domain: String,
        /// Why.
        #[source]
        source: workload_api::JwtBundleError,
    },
}

/// Polls `source` forever, publishing into `keys` (run it as a task).
pub async fn run(source: KeySource, keys: KeyStore) {
    let interval = source.poll_interval();
    tracing::debug!(interval = ?interval, "Polling started");
    let mut poller: Box<dyn Poller> = match source {
        KeySource::ServerApi { socket_path, .. } => {
            Box::new(server_api::ServerApi::new(connect(&socket_path)))
        }
        KeySource::WorkloadApi {
            socket_path,
            trust_domain,
            ..
        } => Box::new(workload_api::WorkloadApi::new(socket_path, trust_domain)),
    };
    // A poll may take at most one interval, and never less than 5 seconds.
    let timeout = interval.max(Duration::from_secs(5));
    loop {
        match tokio::time::timeout(timeout, poller.poll()).await {
            Ok(Ok(k)) => keys.publish(&k),
            Ok(Err(e)) => tracing::warn!(error = %e, "Failed to fetch the JWT keys"),
            Err(_) => {
                tracing::warn!(error = %PollError::Timeout(poller.call()), "Failed to fetch the JWT keys")
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// One way of fetching the current JWT authorities.
#[async_trait::async_trait]
trait Poller: Send {
    /// The RPC, for messages.
    fn call(&self) -> &'static str;
    /// Fetches the current JWT authorities once.
    async fn poll(&mut self) -> Result<Vec<sigil_spiffe::JwtAuthority>, PollError>;
}

/// A lazily connecting channel to the server's admin socket (reconnects by
/// itself).
fn connect(path: &Path) -> Channel {
    let path = path.to_owned();
    #[allow(clippy::expect_used)] // a constant, valid URI
    let endpoint = Endpoint::try_from("http://localhost").expect("static URI");
    endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    }))
}
