//! The SPIRE server APIs on the server's admin Unix socket: one lazily
//! connecting channel (it reconnects by itself when the server restarts),
//! one module per service.

pub mod entry;
pub mod trustdomain;

use std::path::Path;

use tonic::transport::{Channel, Endpoint};

/// Why a batch call failed as a whole.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {status}")]
pub struct ApiError {
    /// The RPC.
    pub call: &'static str,
    /// The server's status.
    #[source]
    pub status: tonic::Status,
}

/// Makes a lazily connecting channel to the socket at `path`.
pub fn connect(path: &Path) -> Channel {
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

/// The per-entry outcome of a batch: `None` when it succeeded, else the
/// server's message.
pub type Outcomes = Vec<Option<String>>;

fn outcome(s: Option<sigil_proto::spire::api::types::Status>) -> Option<String> {
    match s {
        Some(s) if s.code == 0 => None,
        Some(s) => Some(format!("code {}: {}", s.code, s.message)),
        None => Some("no status in the response".to_owned()),
    }
}
