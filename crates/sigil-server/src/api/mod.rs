//! The SPIRE server API (`spire.api.server.*.v1`) as sigil serves it.
//!
//! Every service reads the caller from the connection (see
//! [`crate::endpoints::CallerInfo`]) and authorizes each RPC the way SPIRE
//! does: the local admin socket and `admin_ids` may administer; attested,
//! unbanned agents presenting their current SVID may fetch what they are
//! authorized for; anyone may attest or read the bundle. Domain errors become
//! gRPC statuses in one place per concern ([`ds_status`], [`ca_status`]).

use std::sync::Arc;
use std::time::Duration;

use sigil_datastore::{AttestedNode, DataStore, DataStoreError, NodeMask, NodeSerials};
use sigil_plugin::clock::Clock;
use sigil_spiffe::{SpiffeId, TrustDomain};
use tokio::sync::watch;
use tonic::{Request, Status};

use crate::ca::{CaError, CaManager};
use crate::endpoints::CallerInfo;

pub mod agent;
pub mod authorized;
pub mod bundle;
pub mod convert;
pub mod debug;
pub mod entry;
pub mod limits;
pub mod localauthority;
pub mod logger;
pub mod svid;
pub mod sync;
pub mod trustdomain;

/// What every service needs.
pub struct ApiState {
    /// Our trust domain.
    pub td: TrustDomain,
    /// `spiffe://<td>/spire/server`.
    pub server_id: SpiffeId,
    /// The datastore.
    pub ds: Arc<dyn DataStore>,
    /// The CA.
    pub ca: Arc<CaManager>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Default X509-SVID lifetime.
    pub default_x509_svid_ttl: Duration,
    /// Default JWT-SVID lifetime.
    pub default_jwt_svid_ttl: Duration,
    /// Lifetime of agent SVIDs.
    pub agent_svid_ttl: Duration,
    /// IDs allowed to administer over mTLS.
    pub admin_ids: Vec<SpiffeId>,
    /// Registration entries and agents in memory, fed by the event feed.
    pub index: Arc<crate::index::EntryIndex>,
    /// Bumped when something agents depend on changes that the index does
    /// not carry (federated bundles): their change streams ask for a full
    /// sync.
    pub changes: watch::Sender<u64>,
    /// The server's own X509-SVID chain (leaf first), as last issued.
    pub server_svid: watch::Receiver<Vec<Vec<u8>>>,
    /// Fetches federated bundles; told when relationships change.
    pub federation: Arc<crate::federation::FederationManager>,
    /// The node attestors (server halves), from the catalog.
    pub node_attestors: Vec<Arc<dyn sigil_plugin::nodeattestor::ServerNodeAttestor>>,
    /// Per-IP rate limits (`server.ratelimit`).
    pub limits: limits::RateLimits,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("td", &self.td)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// Signals a change the index does not carry (federated bundles).
    pub fn notify_changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Applies this server's own entry or agent change to the index at once
    /// (other servers on the database see it at their next poll). The write
    /// already succeeded, so a failure here is only logged: the index's
    /// next poll picks the change up.
    pub async fn entries_changed(&self) {
        if let Err(e) = self.index.refresh().await {
            tracing::warn!(error = %e, "Entry index not refreshed after a change; the next poll will catch up");
        }
    }
}

/// Who is calling, after authentication.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The local admin socket.
    LocalAdmin,
    /// A TLS client whose SVID names an admin.
    Admin(SpiffeId),
    /// An attested agent presenting its current SVID.
    Agent(AttestedNode),
    /// A workload whose SVID is that of a `downstream` entry (a nested
    /// server), allowed to obtain an intermediate CA.
    Downstream(SpiffeId),
    /// A TLS client with an SVID of our trust domain that is neither.
    Other(SpiffeId),
    /// A TLS client without a certificate.
    Anonymous,
}

impl Caller {
    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            Caller::LocalAdmin => "local admin".into(),
            Caller::Admin(id) => format!("admin {id}"),
            Caller::Agent(n) => format!("agent {}", n.spiffe_id),
            Caller::Downstream(id) => format!("downstream {id}"),
            Caller::Other(id) => id.to_string(),
            Caller::Anonymous => "anonymous".into(),
        }
    }
}

/// Works out who the caller is. Agents are checked against the datastore:
/// an agent must be attested, not banned, and present the SVID the server
/// last issued it (or the one before, until it switches).
pub async fn authenticate<T>(state: &ApiState, req: &Request<T>) -> Result<Caller, Status> {
    let info = req
        .extensions()
        .get::<CallerInfo>()
        .cloned()
        .ok_or_else(|| Status::internal("connection carries no caller information"))?;
    let peer = match info {
        CallerInfo::Local(_) => return Ok(Caller::LocalAdmin),
        CallerInfo::Tls { peer: None, .. } => return Ok(Caller::Anonymous),
        CallerInfo::Tls { peer: Some(p), .. } => p,
    };
    let id = peer.spiffe_id;
    // An admin ID of another trust domain reaches here only with an SVID
    // that chained to that trust domain's bundle (see
    // `endpoints::server_tls_configs`), as in SPIRE.
    if state.admin_ids.contains(&id) {
        return Ok(Caller::Admin(id));
    }
    if !id.is_member_of(&state.td) {
        return Ok(Caller::Other(id));
    }
    if id.path().starts_with("/spire/agent/") {
        return authenticate_agent(state, id, &peer.serial)
            .await
            .map(Caller::Agent);
    }
    // An admin entry grants admin rights to workloads holding its SVID.
    let entries = state.index.entries_with_spiffe_id(&id);
    if entries.iter().any(|e| e.admin) {
        return Ok(Caller::Admin(id));
    }
    if entries.iter().any(|e| e.downstream) {
        return Ok(Caller::Downstream(id));
    }
    Ok(Caller::Other(id))
}

/// How many times an agent's promotion is retried when its record changes
/// between the read and the conditional write (each retry means another
/// request of the same agent changed it meanwhile).
const PROMOTION_ATTEMPTS: usize = 4;

/// Checks an agent against its record: attested, not banned, presenting the
/// SVID last issued to it (or the renewed one, which then becomes current).
/// The promotion is a compare-and-set on the serial numbers read, so a ban
/// landing between the read and the write is never undone.
async fn authenticate_agent(
    state: &ApiState,
    id: SpiffeId,
    serial: &str,
) -> Result<AttestedNode, Status> {
    // Within `max_attested_node_info_staleness`, an agent presenting its
    // current SVID is admitted from the index's record; anything else
    // (unknown, banned, a renewed SVID to promote) is judged on the
    // datastore's.
    if let Some(node) = state.index.fresh_node(&id)
        && !node.cert_serial_number.is_empty()
        && serial == node.cert_serial_number
    {
        return Ok((*node).clone());
    }
    for _ in 0..PROMOTION_ATTEMPTS {
        let node = state
            .ds
            .get_attested_node(&id)
            .await
            .map_err(ds_status)?
            .ok_or_else(|| agent_not_attested(&id))?;
        if node.cert_serial_number.is_empty() {
            return Err(agent_banned(&id));
        }
        if serial == node.cert_serial_number {
            return Ok(node);
        }
        if node.new_cert_serial_number.is_empty() || serial != node.new_cert_serial_number {
            return Err(agent_denied(
                DenyReason::AgentNotActive,
                format!(
                    "agent \"{id}\" expected to have serial number \"{}\"; has \"{}\"",
                    convert::serial_to_decimal(&node.cert_serial_number),
                    convert::serial_to_decimal(serial)
                ),
            ));
        }
        // The agent switched to its renewed SVID: make it the current one.
        let expected = NodeSerials::of(&node);
        let mut promoted = node;
        promoted.cert_serial_number = std::mem::take(&mut promoted.new_cert_serial_number);
        promoted.cert_not_after = std::mem::take(&mut promoted.new_cert_not_after);
        let mask = NodeMask {
            cert_serial_number: true,
            cert_not_after: true,
            new_cert_serial_number: true,
            new_cert_not_after: true,
            ..NodeMask::default()
        };
        if let Some(updated) = state
            .ds
            .update_attested_node_if(promoted, &mask, &expected)
            .await
            .map_err(ds_status)?
        {
            return Ok(updated);
        }
        // Changed since the read (banned, deleted, promoted or renewed by
        // another request): judge the agent again on what is stored now.
    }
    Err(Status::aborted(format!(
        "agent \"{id}\" record kept changing while it was being promoted; retry"
    )))
}

fn agent_not_attested(id: &SpiffeId) -> Status {
    agent_denied(
        DenyReason::AgentNotAttested,
        format!("agent \"{id}\" is not attested"),
    )
}

/// The refusal a banned agent gets (SPIRE agents shut down on it).
pub fn agent_banned(id: &SpiffeId) -> Status {
    agent_denied(DenyReason::AgentBanned, format!("agent \"{id}\" is banned"))
}

/// Why an agent is refused, as SPIRE tells its agents (they shut down when
/// banned and re-attest for the other reasons).
pub use sigil_proto::spire::api::types::permission_denied_details::Reason as DenyReason;

/// A PermissionDenied status carrying SPIRE's `PermissionDeniedDetails`.
pub fn agent_denied(reason: DenyReason, message: String) -> Status {
    sigil_proto::status::permission_denied(reason, message)
}

/// Fails unless the caller may administer.
pub fn require_admin(caller: &Caller) -> Result<(), Status> {
    match caller {
        Caller::LocalAdmin | Caller::Admin(_) => Ok(()),
        other => Err(Status::permission_denied(format!(
            "{} is not authorized for this admin operation",
            other.describe()
        ))),
    }
}

/// Fails unless the caller is an attested agent; returns its record.
pub fn require_agent(caller: &Caller) -> Result<&AttestedNode, Status> {
    match caller {
        Caller::Agent(node) => Ok(node),
        other => Err(Status::permission_denied(format!(
            "{} is not an attested agent",
            other.describe()
        ))),
    }
}

/// Maps a datastore error to a gRPC status.
pub fn ds_status(e: DataStoreError) -> Status {
    match e {
        DataStoreError::NotFound(m) => Status::not_found(m),
        DataStoreError::AlreadyExists(m) => Status::already_exists(m),
        DataStoreError::InvalidArgument(m) => Status::invalid_argument(m),
        DataStoreError::Conflict(m) => Status::aborted(m),
        DataStoreError::FailedPrecondition(m) => Status::failed_precondition(m),
        DataStoreError::Unavailable(m) => {
            Status::unavailable(format!("datastore unavailable: {m}"))
        }
        other => Status::internal(format!("datastore: {other}")),
    }
}

/// Maps a CA error to a gRPC status.
pub fn ca_status(e: CaError) -> Status {
    match e {
        CaError::NoAuthority(_) => Status::unavailable(e.to_string()),
        CaError::DataStore(d) => ds_status(d),
        other => Status::internal(other.to_string()),
    }
}

/// A `spire.api.types.Status` for batch results.
pub fn status_ok() -> sigil_proto::spire::api::types::Status {
    sigil_proto::spire::api::types::Status {
        code: 0,
        message: "OK".into(),
    }
}

/// A `spire.api.types.Status` from a tonic status.
pub fn status_from(s: &Status) -> sigil_proto::spire::api::types::Status {
    sigil_proto::spire::api::types::Status {
        code: s.code() as i32,
        message: s.message().to_owned(),
    }
}
