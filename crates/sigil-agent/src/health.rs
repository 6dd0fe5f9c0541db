//! What "ready" means for the agent, for the `health_checks` listener
//! ([`sigil_telemetry::health`]): as in SPIRE, the agent is ready when it
//! holds a valid agent SVID and its Workload API socket accepts
//! connections. Before attestation finishes neither holds, so the listener
//! (started first) answers "not ready".

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use sigil_plugin::clock::Clock;
use sigil_telemetry::health::{Check, Readiness};

use crate::manager::Manager;

/// The manager, once it has started (and so the agent has an SVID).
pub type ManagerSlot = Arc<OnceLock<Arc<Manager>>>;

/// `agent_svid`: the agent has attested and its SVID has not expired.
pub struct AgentSvidCheck {
    /// Set when [`Manager::start`] returns.
    pub manager: ManagerSlot,
    /// The time source SVID expiry is compared with.
    pub clock: Arc<dyn Clock>,
}

impl Check for AgentSvidCheck {
    fn name(&self) -> &'static str {
        "agent_svid"
    }

    fn check(&self) -> BoxFuture<'_, Readiness> {
        Box::pin(async move {
            let Some(m) = self.manager.get() else {
                return Readiness::NotReady("the agent has no SVID yet (attesting)".into());
            };
            let expires_at = m.agent_svid_expires_at();
            if self.clock.unix_now() >= expires_at {
                Readiness::NotReady(format!("the agent SVID expired at unix time {expires_at}"))
            } else {
                Readiness::Ready
            }
        })
    }
}

/// `workload_api`: the Workload API socket accepts connections.
pub struct WorkloadApiCheck {
    /// The Workload API socket.
    pub socket_path: PathBuf,
}

impl Check for WorkloadApiCheck {
    fn name(&self) -> &'static str {
        "workload_api"
    }

    fn check(&self) -> BoxFuture<'_, Readiness> {
        Box::pin(async move {
            match tokio::net::UnixStream::connect(&self.socket_path).await {
                Ok(_) => Readiness::Ready,
                Err(e) => Readiness::NotReady(format!(
                    "cannot connect to the Workload API socket {}: {e}",
                    self.socket_path.display()
                )),
            }
        })
    }
}
