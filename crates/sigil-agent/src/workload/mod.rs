//! The SPIFFE Workload API, served on the agent's public Unix socket.
//!
//! This module owns the Workload API's behaviour as workloads see it: the
//! `workload.spiffe.io: true` security header, attesting the caller once per
//! call from the credentials taken at accept time, choosing the caller's
//! SVIDs from the manager's [`Snapshot`](crate::cache::Snapshot), streaming
//! the complete current state again whenever it changes, and the
//! `grpc.health.v1` service `spire-agent healthcheck` asks. It never talks to
//! the server and never mints anything itself: X509-SVIDs come from the
//! snapshot, JWT-SVIDs from the cache's [`JwtMinter`](crate::cache::JwtMinter).
//! Envoy's SDS ([`crate::sds`]) shares the socket, the attestation and the
//! rate limiter.

pub(crate) mod compose;
mod error;
mod handler;
mod ratelimit;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

use std::path::Path;

use anyhow::Context as _;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::cache::{CacheHandle, Snapshot};
use crate::uds::{ConnectionLimits, UdsIncoming};

/// Bounds of the Workload API socket: 4096 connections in all, 128 from
/// one process, 256 streams (calls) on one connection.
pub const CONNECTION_LIMITS: ConnectionLimits = ConnectionLimits {
    max_connections: 4096,
    max_per_process: 128,
};
/// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` of the Workload API socket.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;

pub use compose::standard_jwks;
pub use error::WorkloadError;
pub use handler::{ResponseStream, SECURITY_HEADER, WorkloadApi};
pub(crate) use handler::{attest_caller, snapshot_updates};
pub use ratelimit::WorkloadRateLimits;
pub(crate) use ratelimit::{Method, WorkloadRateLimiter};

/// Serves the Workload API, Envoy SDS v3 (unless `sds` is `None`, SPIRE's
/// `disable_sds_api`) and `grpc.health.v1` on a Unix socket at
/// `socket_path` until the returned future is dropped.
///
/// The socket is bound with [`UdsIncoming`] (stale socket replaced, mode
/// 0777, grpc-core `:authority` repaired), within [`CONNECTION_LIMITS`] and
/// [`MAX_CONCURRENT_STREAMS`]; callers are rate-limited by `limits`. Health
/// is `NOT_SERVING` until the manager has published a first snapshot,
/// `SERVING` from then on.
pub async fn serve(
    socket_path: &Path,
    cache: CacheHandle,
    attestor: std::sync::Arc<dyn crate::attestor::WorkloadAttestor>,
    limits: WorkloadRateLimits,
    sds: Option<crate::sds::SdsConfig>,
) -> anyhow::Result<()> {
    let incoming = UdsIncoming::bind(socket_path)
        .with_context(|| format!("binding the Workload API socket {}", socket_path.display()))?
        .with_limits(CONNECTION_LIMITS)
        .with_connection_metrics("workload_api");
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let snapshots = cache.snapshots.clone();
    let limiter = std::sync::Arc::new(WorkloadRateLimiter::new(limits));
    let sds = sds.map(|config| {
        crate::sds::SecretDiscovery::new(cache.clone(), attestor.clone(), config)
            .with_rate_limiter(limiter.clone())
            .into_service()
    });
    let api = WorkloadApi::new(cache, attestor).with_rate_limiter(limiter);
    tracing::info!(path = %socket_path.display(), sds = sds.is_some(), "serving the Workload API");
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .layer(sigil_telemetry::rpc::RpcMetricsLayer)
        .add_service(health)
        .add_service(api.into_service())
        .add_optional_service(sds)
        .serve_with_incoming(incoming);
    tokio::select! {
        result = server => result.with_context(|| {
            format!("Workload API server on {} failed", socket_path.display())
        }),
        never = track_health(reporter, snapshots) => match never {},
    }
}

/// Keeps the overall health status in step with whether there is anything
/// to serve. Never completes: once the manager is gone the last status stays.
async fn track_health(
    reporter: HealthReporter,
    mut snapshots: watch::Receiver<Option<std::sync::Arc<Snapshot>>>,
) -> std::convert::Infallible {
    let mut serving = false;
    loop {
        let ready = snapshots.borrow_and_update().is_some();
        if ready != serving {
            serving = ready;
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
        }
        if snapshots.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}
