//! The agent's admin API, served on its own Unix socket
//! (`admin_socket_path`), apart from the Workload API socket workloads reach.
//!
//! This module owns SPIRE's three agent admin services as SPIRE serves them:
//! `spire.agent.debug.v1.Debug` (the agent's own SVID chain, uptime, cache
//! counts, last sync: [`debug`]), `spire.api.agent.logger.v1.Logger` (the
//! process log level at run time: [`logger`]) and
//! `spire.api.agent.delegatedidentity.v1.DelegatedIdentity` (SVIDs and
//! bundles for other workloads, to callers configured as authorized
//! delegates: [`delegated`]). Callers are attested from the credentials
//! taken at accept time, exactly as on the Workload API.
//!
//! It never talks to the server and never mints anything: like the Workload
//! API it serves the manager's [`Snapshot`](crate::cache::Snapshot) and asks
//! the cache's [`JwtMinter`](crate::cache::JwtMinter) for JWT-SVIDs. Access
//! to the socket itself is limited by file mode 0770, as in SPIRE.

pub mod debug;
pub mod delegated;
mod error;
pub mod logger;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use sigil_plugin::clock::Clock;
use sigil_spiffe::SpiffeId;

use crate::attestor::WorkloadAttestor;
use crate::cache::CacheHandle;
use crate::manager::Manager;
use crate::uds::{ConnectionLimits, UdsIncoming};

pub use debug::DebugService;
pub use delegated::DelegatedIdentityService;
pub use error::AdminError;
pub use logger::LoggerService;

/// File mode of the admin socket: owner and group only (SPIRE's choice).
pub const ADMIN_SOCKET_MODE: u32 = 0o770;

/// Bounds of the admin socket: 256 connections in all, 64 from one process.
pub const ADMIN_CONNECTION_LIMITS: ConnectionLimits = ConnectionLimits {
    max_connections: 256,
    max_per_process: 64,
};

/// What the Debug service reports about the agent beyond the snapshot.
/// [`Manager`] is the production implementation.
pub trait AgentStatus: Send + Sync {
    /// The agent SVID's chain, leaf first, DER.
    fn agent_svid_chain(&self) -> Vec<Vec<u8>>;
    /// Unix seconds of the last successful sync with the server, if any.
    fn last_sync_success(&self) -> Option<i64>;
    /// How many JWT-SVIDs are cached.
    fn cached_jwt_svids(&self) -> usize;
}

impl AgentStatus for Manager {
    fn agent_svid_chain(&self) -> Vec<Vec<u8>> {
        Manager::agent_svid_chain(self)
    }

    fn last_sync_success(&self) -> Option<i64> {
        Manager::last_sync_success(self)
    }

    fn cached_jwt_svids(&self) -> usize {
        Manager::cached_jwt_svids(self)
    }
}

/// The parts of the agent configuration the admin API uses.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `authorized_delegates`: SPIFFE IDs allowed to use the Delegated
    /// Identity API.
    pub authorized_delegates: Vec<SpiffeId>,
    /// When the agent started (for the Debug service's uptime).
    pub started_at: SystemTime,
}

/// The three admin services, ready to serve.
#[derive(Debug, Clone)]
pub struct AdminApi {
    debug: DebugService,
    logger: LoggerService,
    delegated: DelegatedIdentityService,
}

impl AdminApi {
    /// Admin services over the manager's cache, the workload attestor, and
    /// the agent status `status` reports.
    pub fn new(
        cfg: AdminConfig,
        cache: CacheHandle,
        attestor: Arc<dyn WorkloadAttestor>,
        status: Arc<dyn AgentStatus>,
        clock: Arc<dyn Clock>,
    ) -> AdminApi {
        AdminApi {
            debug: DebugService::new(cache.clone(), status, clock, cfg.started_at),
            logger: LoggerService::new(),
            delegated: DelegatedIdentityService::new(cache, attestor, cfg.authorized_delegates),
        }
    }

    /// Binds `socket_path` (stale socket replaced, mode 0770) and serves
    /// until the returned future is dropped or the server fails.
    pub async fn serve(self, socket_path: &Path) -> anyhow::Result<()> {
        let incoming = UdsIncoming::bind_with_mode(socket_path, ADMIN_SOCKET_MODE, 0o700)
            .with_context(|| format!("binding the admin socket {}", socket_path.display()))?
            .with_limits(ADMIN_CONNECTION_LIMITS);
        tracing::info!(network = "unix", address = %socket_path.display(), "Starting Admin APIs");
        self.serve_incoming(incoming)
            .await
            .with_context(|| format!("Admin APIs on {} stopped", socket_path.display()))
    }

    /// Serves on an already bound listener.
    pub async fn serve_incoming(
        self,
        incoming: UdsIncoming,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .max_concurrent_streams(crate::workload::MAX_CONCURRENT_STREAMS)
            .add_service(self.debug.into_service())
            .add_service(self.logger.into_service())
            .add_service(self.delegated.into_service())
            .serve_with_incoming(incoming)
            .await
    }
}
