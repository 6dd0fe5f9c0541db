//! Shared helpers for the end-to-end tests in `tests/tests/*.rs`: a raw
//! Workload API client over a Unix socket, for checks that need exact gRPC
//! status codes and stream timing.
#![forbid(unsafe_code)]

use std::path::Path;

use sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tonic::transport::{Channel, Endpoint};

/// A channel to a Workload API socket.
pub async fn workload_channel(path: &Path) -> Channel {
    let path = path.to_path_buf();
    Endpoint::try_from("http://localhost")
        .expect("static URI")
        .connect_with_connector(tower::service_fn(move |_| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await
        .expect("connect to the Workload API socket")
}

/// A Workload API client.
pub async fn workload_client(path: &Path) -> SpiffeWorkloadApiClient<Channel> {
    SpiffeWorkloadApiClient::new(workload_channel(path).await)
}

/// Wraps a message in a request carrying the `workload.spiffe.io: true` header.
pub fn with_header<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    req
}

/// The uid of this test process (entries select it with `unix:uid:<uid>`).
pub fn my_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|u| u.parse().ok())
        .expect("uid from /proc/self/status")
}
