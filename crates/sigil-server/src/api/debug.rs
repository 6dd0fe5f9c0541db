//! `spire.api.server.debug.v1.Debug`: a health summary for operators on the
//! local admin socket (as in SPIRE, admins over mTLS may not call it):
//! uptime, counts of agents, entries and bundles, and the server's own SVID
//! chain as verified against the bundle. Answers are cached for five seconds
//! like SPIRE's, so polling cannot load the datastore.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sigil_datastore::{ListEntriesRequest, ListNodesRequest};
use sigil_plugin::clock::unix;
use sigil_proto::spire::api::server::debug::v1 as pb;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use super::convert::id_to_proto;
use super::{ApiState, Caller, authenticate};

/// How long one GetInfo answer is reused.
const CACHE_EXPIRY: Duration = Duration::from_secs(5);

/// Fails unless the caller came through the local admin socket (SPIRE's
/// `allow_local` without `allow_admin`).
pub fn require_local(caller: &Caller) -> Result<(), Status> {
    match caller {
        Caller::LocalAdmin => Ok(()),
        other => Err(Status::permission_denied(format!(
            "{} is not authorized for this operation; it is only available on the local admin socket",
            other.describe()
        ))),
    }
}

/// The debug service.
#[derive(Debug, Clone)]
pub struct DebugService {
    state: Arc<ApiState>,
    started: Instant,
    cache: Arc<Mutex<Option<(Instant, pb::GetInfoResponse)>>>,
}

impl DebugService {
    /// Wraps the shared state; uptime counts from now (the server builds its
    /// services as the last step of starting).
    pub fn new(state: Arc<ApiState>) -> Self {
        DebugService {
            state,
            started: Instant::now(),
            cache: Arc::new(Mutex::new(None)),
        }
    }

    async fn info(&self) -> Result<pb::GetInfoResponse, Status> {
        let ds = &self.state.ds;
        let agents = ds
            .count_attested_nodes(&ListNodesRequest::default())
            .await
            .map_err(|e| Status::internal(format!("failed to count agents: {e}")))?;
        let entries = ds
            .count_entries(&ListEntriesRequest::default())
            .await
            .map_err(|e| Status::internal(format!("failed to count entries: {e}")))?;
        // SPIRE reports the count of every bundle, its own included, here.
        let bundles = ds
            .list_bundles()
            .await
            .map_err(|e| Status::internal(format!("failed to count bundles: {e}")))?
            .len();
        let svid_chain = self.svid_chain()?;
        Ok(pb::GetInfoResponse {
            svid_chain,
            uptime: clamp(self.started.elapsed().as_secs()),
            agents_count: clamp(agents),
            federated_bundles_count: clamp(bundles as u64),
            entries_count: clamp(entries),
        })
    }

    /// The server SVID and the bundle root it chains to, leaf first.
    fn svid_chain(&self) -> Result<Vec<pb::get_info_response::Cert>, Status> {
        let chain = self.state.server_svid.borrow().clone();
        let bundle = self.state.ca.bundle();
        if bundle.x509_authorities.is_empty() {
            return Err(Status::not_found("trust domain bundle not found"));
        }
        let now = self.state.clock.now();
        let root = bundle
            .x509_authorities
            .iter()
            .find(|root| {
                sigil_crypto::x509::verify_chain(&chain, std::slice::from_ref(root), now).is_ok()
            })
            .ok_or_else(|| {
                Status::internal(
                    "failed verification against bundle: the server SVID does not chain to any X.509 authority",
                )
            })?;
        chain
            .iter()
            .chain(std::iter::once(root))
            .map(|der| cert_entry(der))
            .collect()
    }
}

fn clamp(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn cert_entry(der: &[u8]) -> Result<pb::get_info_response::Cert, Status> {
    let info = sigil_crypto::x509::cert_info(der)
        .map_err(|e| Status::internal(format!("failed to parse certificate: {e}")))?;
    // Like go-spiffe's IDFromCert: exactly one URI SAN, a SPIFFE ID.
    let id = match info.uri_sans.as_slice() {
        [uri] => sigil_spiffe::SpiffeId::parse(uri)
            .ok()
            .map(|id| id_to_proto(&id)),
        _ => None,
    };
    Ok(pb::get_info_response::Cert {
        id,
        expires_at: unix(info.not_after),
        subject: sigil_crypto::pkix::go_subject_string(der),
    })
}

#[tonic::async_trait]
impl pb::debug_server::Debug for DebugService {
    async fn get_info(
        &self,
        request: Request<pb::GetInfoRequest>,
    ) -> Result<Response<pb::GetInfoResponse>, Status> {
        require_local(&authenticate(&self.state, &request).await?)?;
        let mut cache = self.cache.lock().await;
        if let Some((at, resp)) = cache.as_ref()
            && at.elapsed() < CACHE_EXPIRY
        {
            return Ok(Response::new(resp.clone()));
        }
        let resp = self.info().await?;
        *cache = Some((Instant::now(), resp.clone()));
        Ok(Response::new(resp))
    }
}
