//! Stand-in for `sigil-workload-client` (being written on another branch)
//! with the same names, so switching is deleting this file and one `use`.

use std::path::{Path, PathBuf};

use sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tonic::transport::{Channel, Endpoint};

/// Why dialing a socket failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {}: {source}", path.display())]
pub struct ConnectError {
    /// The socket dialed.
    pub path: PathBuf,
    /// What the transport reported.
    #[source]
    pub source: tonic::transport::Error,
}

/// A Workload API client on `socket_path`.
pub async fn connect(
    socket_path: &Path,
) -> Result<SpiffeWorkloadApiClient<Channel>, ConnectError> {
    let path = socket_path.to_owned();
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|source| ConnectError {
            path: socket_path.to_owned(),
            source,
        })?;
    Ok(SpiffeWorkloadApiClient::new(channel)
        .max_decoding_message_size(sigil_proto::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(sigil_proto::MAX_MESSAGE_SIZE))
}

/// `message` as a request carrying the Workload API security header.
pub fn with_header<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}
