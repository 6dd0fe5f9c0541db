//! Talking to a local gRPC server over a Unix socket: the SPIFFE Workload
//! API of an agent (sigil-agent or spire-agent), or an admin socket.
//!
//! This crate owns the connection (socket addresses as SPIFFE and SPIRE
//! write them, dialing, the Workload API's security header and message size
//! limits) and nothing else: it does not parse or verify what comes back.
//! Programs that consume SVIDs (`sigil-helper`, the OIDC discovery
//! provider, the agent's `api` commands) build on it so there is one way to
//! reach an agent.

use std::path::{Path, PathBuf};

use sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tonic::transport::{Channel, Endpoint};

/// The metadata key every Workload API request must carry with value `true`.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// A Workload API client over a Unix socket.
pub type WorkloadClient = SpiffeWorkloadApiClient<Channel>;

/// Why a socket address cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The address is empty.
    #[error("socket address is empty")]
    Empty,
    /// A URL scheme other than `unix`.
    #[error("socket address {0:?}: scheme must be \"unix\"")]
    Scheme(String),
    /// `unix://host/path`: a Unix socket address has no authority.
    #[error("socket address {0:?}: a unix address must not have a host (write unix:///path)")]
    Authority(String),
    /// The path is not absolute.
    #[error("socket address {0:?}: the socket path must be absolute")]
    Relative(String),
}

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

impl ConnectError {
    /// The operating-system error behind the failure, when there is one
    /// (`ENOENT` for a missing socket, `ECONNREFUSED` for a dead one), for
    /// callers that word it their own way.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&self.source);
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return Some(io);
            }
            source = e.source();
        }
        None
    }
}

/// The socket path of a Workload API address as `SPIFFE_ENDPOINT_SOCKET`
/// and SPIRE's tools accept it: `unix:///path`, `unix:/path`, or a bare
/// absolute path.
pub fn parse_address(address: &str) -> Result<PathBuf, AddressError> {
    if address.is_empty() {
        return Err(AddressError::Empty);
    }
    let path = match address.split_once(':') {
        Some((scheme, rest)) if !scheme.contains('/') => {
            if scheme != "unix" {
                return Err(AddressError::Scheme(address.to_owned()));
            }
            match rest.strip_prefix("//") {
                Some(after) if !after.starts_with('/') => {
                    return Err(AddressError::Authority(address.to_owned()));
                }
                Some(after) => after,
                None => rest,
            }
        }
        _ => address,
    };
    if !path.starts_with('/') {
        return Err(AddressError::Relative(address.to_owned()));
    }
    Ok(PathBuf::from(path))
}

/// A gRPC channel to whatever serves the Unix socket at `socket_path`.
/// Connects now, so a missing or dead socket is reported here.
pub async fn unix_channel(socket_path: &Path) -> Result<Channel, ConnectError> {
    let path = socket_path.to_owned();
    // A fixed, valid URI: the connector ignores it and dials the socket.
    let endpoint = Endpoint::from_static("http://localhost");
    endpoint
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
        })
}

/// A Workload API client on `socket_path`, with sigil's message size limit
/// both ways.
pub async fn connect(socket_path: &Path) -> Result<WorkloadClient, ConnectError> {
    Ok(
        SpiffeWorkloadApiClient::new(unix_channel(socket_path).await?)
            .max_decoding_message_size(sigil_proto::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(sigil_proto::MAX_MESSAGE_SIZE),
    )
}

/// `message` as a request carrying the Workload API security header.
pub fn with_header<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        SECURITY_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_accepted_in_the_three_spellings_spiffe_tools_use() {
        for address in ["unix:///run/a.sock", "unix:/run/a.sock", "/run/a.sock"] {
            assert_eq!(
                parse_address(address),
                Ok(PathBuf::from("/run/a.sock")),
                "{address}"
            );
        }
    }

    #[test]
    fn addresses_that_are_not_absolute_unix_paths_are_refused_with_the_reason() {
        assert_eq!(parse_address(""), Err(AddressError::Empty));
        assert_eq!(
            parse_address("tcp://127.0.0.1:8081"),
            Err(AddressError::Scheme("tcp://127.0.0.1:8081".into()))
        );
        assert_eq!(
            parse_address("unix://host/a.sock"),
            Err(AddressError::Authority("unix://host/a.sock".into()))
        );
        assert_eq!(
            parse_address("unix:a.sock"),
            Err(AddressError::Relative("unix:a.sock".into()))
        );
        assert_eq!(
            parse_address("run/a.sock"),
            Err(AddressError::Relative("run/a.sock".into()))
        );
    }

    #[tokio::test]
    async fn a_missing_socket_is_reported_with_its_path_and_os_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent.sock");
        let err = connect(&path).await.expect_err("nothing listens");
        assert_eq!(err.path, path);
        assert_eq!(
            err.io_error().map(std::io::Error::kind),
            Some(std::io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn requests_carry_the_security_header() {
        let request = with_header(());
        assert_eq!(
            request
                .metadata()
                .get(SECURITY_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("true")
        );
    }
}
