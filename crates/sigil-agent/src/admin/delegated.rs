//! `spire.api.agent.delegatedidentity.v1.DelegatedIdentity`: SVIDs and
//! bundles handed to a trusted local process (a node-wide proxy, a CNI)
//! that acts for other workloads.
//!
//! Authorization is SPIRE's: the caller is attested like any workload, and
//! at least one of the SPIFFE IDs its selectors match in the snapshot must
//! be listed in `authorized_delegates`. Streams keep the caller's selectors
//! from the start of the call and check them again against every new
//! snapshot, so a delegate whose entry is removed is cut off. The workload
//! is named by selectors (trusted as given) or by a PID (attested here);
//! the delegate answers for that PID not being reused meanwhile.
//!
//! Unlike the Workload API, entries sharing a hint are all returned, as
//! SPIRE does here.

use std::collections::HashMap;
use std::sync::Arc;

use sigil_proto::spire::api::agent::delegatedidentity::v1::delegated_identity_server::{
    DelegatedIdentity, DelegatedIdentityServer,
};
use sigil_proto::spire::api::agent::delegatedidentity::v1::{
    FetchJwtsviDsRequest, FetchJwtsviDsResponse, SubscribeToJwtBundlesRequest,
    SubscribeToJwtBundlesResponse, SubscribeToX509BundlesRequest, SubscribeToX509BundlesResponse,
    SubscribeToX509sviDsRequest, SubscribeToX509sviDsResponse, X509svidWithKey,
};
use sigil_proto::spire::api::types::{
    Jwtsvid, Selector as ApiSelector, Spiffeid, X509svid as ApiX509svid,
};
use sigil_spiffe::{Bundle, JwtSvid, Selector, SpiffeId};
use tonic::{Request, Response, Status};

use super::AdminError;
use crate::attestor::{AttestError, WorkloadAttestor};
use crate::cache::{CacheHandle, Snapshot};
use crate::uds::PeerInfo;
use crate::workload::compose::concat;
use crate::workload::{ResponseStream, snapshot_updates, standard_jwks};

/// The Delegated Identity service.
#[derive(Clone)]
pub struct DelegatedIdentityService {
    cache: CacheHandle,
    attestor: Arc<dyn WorkloadAttestor>,
    delegates: Arc<[SpiffeId]>,
}

impl DelegatedIdentityService {
    /// Serves what `cache` holds to callers `attestor` attests whose
    /// identities include one of `authorized_delegates`.
    pub fn new(
        cache: CacheHandle,
        attestor: Arc<dyn WorkloadAttestor>,
        authorized_delegates: Vec<SpiffeId>,
    ) -> DelegatedIdentityService {
        DelegatedIdentityService {
            cache,
            attestor,
            delegates: authorized_delegates.into(),
        }
    }

    /// The tonic service to add to a server.
    pub fn into_service(self) -> DelegatedIdentityServer<DelegatedIdentityService> {
        DelegatedIdentityServer::new(self)
    }

    /// Attests the caller and checks it is an authorized delegate now;
    /// returns its selectors, for re-checks on later snapshots.
    async fn authorize<T>(&self, request: &Request<T>) -> Result<Vec<Selector>, AdminError> {
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .ok_or(AdminError::NoPeerCredentials)?;
        let selectors = self.attest(peer).await?;
        let snapshot = self.snapshot()?;
        check_delegate(&snapshot, &selectors, &self.delegates)?;
        Ok(selectors)
    }

    async fn attest(&self, peer: &PeerInfo) -> Result<Vec<Selector>, AdminError> {
        self.attestor.attest(peer).await.map_err(|e| {
            tracing::error!(pid = peer.pid, error = %e, "Workload attestation failed");
            AdminError::Attestation(e)
        })
    }

    /// The workload a request names: its selectors as given, or those of
    /// the process with its PID. Exactly one of the two must be set.
    async fn workload(
        &self,
        selectors: &[ApiSelector],
        pid: i32,
    ) -> Result<Vec<Selector>, AdminError> {
        match (selectors.is_empty(), pid) {
            (false, 0) => selectors_from_api(selectors),
            (true, pid) if pid != 0 => {
                let peer = process_peer(pid).await.map_err(|e| {
                    tracing::error!(pid, error = %e, "Workload attestation failed");
                    AdminError::Attestation(e)
                })?;
                self.attest(&peer).await
            }
            _ => {
                tracing::error!(
                    "Invalid argument; must provide either selectors or non-zero PID, but not both"
                );
                Err(AdminError::SelectorsOrPid)
            }
        }
    }

    fn snapshot(&self) -> Result<Arc<Snapshot>, AdminError> {
        self.cache
            .snapshots
            .borrow()
            .clone()
            .ok_or(AdminError::NotReady)
    }
}

impl std::fmt::Debug for DelegatedIdentityService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegatedIdentityService")
            .field("attestor", &self.attestor.name())
            .field("authorized_delegates", &self.delegates)
            .finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl DelegatedIdentity for DelegatedIdentityService {
    type SubscribeToX509SVIDsStream = ResponseStream<SubscribeToX509sviDsResponse>;
    type SubscribeToX509BundlesStream = ResponseStream<SubscribeToX509BundlesResponse>;
    type SubscribeToJWTBundlesStream = ResponseStream<SubscribeToJwtBundlesResponse>;

    async fn subscribe_to_x509svi_ds(
        &self,
        request: Request<SubscribeToX509sviDsRequest>,
    ) -> Result<Response<Self::SubscribeToX509SVIDsStream>, Status> {
        let caller = self.authorize(&request).await?;
        let req = request.get_ref();
        let workload = self.workload(&req.selectors, req.pid).await?;
        tracing::debug!(
            delegate_selectors = ?caller,
            request_selectors = ?workload,
            "Subscribing to cache changes"
        );
        let delegates = self.delegates.clone();
        // The workload's SVIDs are signed on demand and kept while the
        // delegate streams them, as for a workload of its own.
        let subscription = self.cache.subscribe(&workload).await;
        let stream = snapshot_updates(self.cache.snapshots.clone(), move |snapshot| {
            let _held = &subscription;
            check_delegate(snapshot, &caller, &delegates)?;
            Ok::<_, AdminError>(x509_svids_response(snapshot, &workload))
        })?;
        Ok(Response::new(stream))
    }

    async fn subscribe_to_x509_bundles(
        &self,
        request: Request<SubscribeToX509BundlesRequest>,
    ) -> Result<Response<Self::SubscribeToX509BundlesStream>, Status> {
        let caller = self.authorize(&request).await?;
        let delegates = self.delegates.clone();
        let stream = snapshot_updates(self.cache.snapshots.clone(), move |snapshot| {
            check_delegate(snapshot, &caller, &delegates)?;
            Ok::<_, AdminError>(SubscribeToX509BundlesResponse {
                ca_certificates: all_bundles(snapshot, |b| concat(&b.x509_authorities)),
            })
        })?;
        Ok(Response::new(stream))
    }

    async fn fetch_jwtsvi_ds(
        &self,
        request: Request<FetchJwtsviDsRequest>,
    ) -> Result<Response<FetchJwtsviDsResponse>, Status> {
        if request.get_ref().audience.is_empty() {
            tracing::error!("Missing required audience parameter");
            return Err(AdminError::MissingAudience.into());
        }
        self.authorize(&request).await?;
        let req = request.get_ref();
        let workload = self.workload(&req.selectors, req.pid).await?;
        let snapshot = self.snapshot()?;
        let mut svids = Vec::new();
        for record in crate::workload::compose::matching_entries(&snapshot, &workload) {
            let jwt = self
                .cache
                .jwt
                .jwt_svid(record.entry_id, &req.audience)
                .await
                .map_err(|e| {
                    tracing::error!(spiffe_id = %record.spiffe_id, error = %e, "Could not fetch JWT-SVID");
                    AdminError::JwtFetch(e)
                })?;
            let issued_at = JwtSvid::parse_insecure(&jwt.token)
                .ok()
                .and_then(|t| t.issued_at())
                .unwrap_or(0);
            svids.push(Jwtsvid {
                token: jwt.token,
                id: Some(api_id(record.spiffe_id)),
                expires_at: jwt.expires_at,
                issued_at,
                hint: record.hint.to_owned(),
            });
        }
        if svids.is_empty() {
            tracing::error!("No identity issued");
            return Err(AdminError::NoIdentity.into());
        }
        Ok(Response::new(FetchJwtsviDsResponse { svids }))
    }

    async fn subscribe_to_jwt_bundles(
        &self,
        request: Request<SubscribeToJwtBundlesRequest>,
    ) -> Result<Response<Self::SubscribeToJWTBundlesStream>, Status> {
        let caller = self.authorize(&request).await?;
        let delegates = self.delegates.clone();
        let stream = snapshot_updates(self.cache.snapshots.clone(), move |snapshot| {
            check_delegate(snapshot, &caller, &delegates)?;
            Ok::<_, AdminError>(SubscribeToJwtBundlesResponse {
                bundles: all_bundles(snapshot, standard_jwks),
            })
        })?;
        Ok(Response::new(stream))
    }
}

/// SPIRE's delegate check: the caller must have an identity, and one of its
/// identities must be an authorized delegate.
fn check_delegate(
    snapshot: &Snapshot,
    caller: &[Selector],
    delegates: &[SpiffeId],
) -> Result<(), AdminError> {
    // The caller's entries, held X509-SVID or not (beyond the cache size),
    // as SPIRE matches registration entries here.
    let identities = crate::workload::compose::matching_entries(snapshot, caller);
    let Some(first) = identities.first() else {
        tracing::error!(delegate_selectors = ?caller, "No identity issued");
        return Err(AdminError::NoIdentity);
    };
    if let Some(delegate) = identities
        .iter()
        .find(|identity| delegates.contains(identity.spiffe_id))
    {
        tracing::debug!(delegate_id = %delegate.spiffe_id, "Caller authorized as delegate");
        return Ok(());
    }
    tracing::error!(
        delegate_selectors = ?caller,
        num_registered_entries = identities.len(),
        default_id = %first.spiffe_id,
        "Permission denied; caller not configured as an authorized delegate."
    );
    Err(AdminError::NotAuthorizedDelegate)
}

/// The X509-SVIDs (with keys) of the workload with `selectors`, and the
/// trust domain IDs its entries federate with (those the agent has bundles
/// for), sorted. An empty list is a
/// valid message: the workload has nothing (yet).
fn x509_svids_response(
    snapshot: &Snapshot,
    selectors: &[Selector],
) -> SubscribeToX509sviDsResponse {
    let svids = snapshot.svids_for(selectors);
    // SPIRE lists the trust domains whose bundles this workload receives:
    // those its entries federate with and the agent has a bundle for.
    let mut federates_with: Vec<String> = snapshot
        .federated_bundles_for(&svids)
        .into_iter()
        .map(|b| b.trust_domain.id_string())
        .collect();
    federates_with.sort();
    let x509_svids: Vec<X509svidWithKey> = svids
        .into_iter()
        .map(|svid| X509svidWithKey {
            x509_svid: Some(ApiX509svid {
                cert_chain: svid.chain.clone(),
                id: Some(api_id(&svid.spiffe_id)),
                expires_at: svid.expires_at,
                hint: svid.hint.clone(),
            }),
            x509_svid_key: svid.key_pkcs8.clone(),
        })
        .collect();
    SubscribeToX509sviDsResponse {
        x509_svids,
        federates_with,
    }
}

/// Our bundle and every federated one the agent holds, keyed by trust
/// domain ID (SPIRE's delegated bundle streams are not per workload).
fn all_bundles(
    snapshot: &Snapshot,
    encode: impl Fn(&Bundle) -> Vec<u8>,
) -> HashMap<String, Vec<u8>> {
    std::iter::once(&snapshot.bundle)
        .chain(&snapshot.federated_bundles)
        .map(|b| (b.trust_domain.id_string(), encode(b)))
        .collect()
}

fn api_id(id: &SpiffeId) -> Spiffeid {
    Spiffeid {
        trust_domain: id.trust_domain_name().to_owned(),
        path: id.path().to_owned(),
    }
}

/// SPIRE's `SelectorsFromProto`: a type without `:`, and a value.
fn selectors_from_api(selectors: &[ApiSelector]) -> Result<Vec<Selector>, AdminError> {
    selectors
        .iter()
        .map(|s| {
            if s.r#type.contains(':') {
                return Err(AdminError::BadSelectors);
            }
            Selector::new(&s.r#type, &s.value).map_err(|_| AdminError::BadSelectors)
        })
        .collect::<Result<Vec<_>, _>>()
        .inspect_err(|_| {
            tracing::error!("Invalid argument; could not parse provided selectors");
        })
}

/// A [`PeerInfo`] for a process a delegate named: its pidfd opened now and
/// its effective IDs read from `/proc/<pid>/status`.
async fn process_peer(pid: i32) -> Result<PeerInfo, AttestError> {
    if pid <= 0 {
        return Err(AttestError::PidUnknown { pid });
    }
    // The pidfd first, so the IDs read after it belong to the process the
    // attestor will check is still alive.
    let mut peer = PeerInfo::for_process(pid, 0, 0);
    let path = std::path::PathBuf::from(format!("/proc/{pid}/status"));
    let status = tokio::fs::read_to_string(&path)
        .await
        .map_err(|source| AttestError::Proc {
            pid,
            path: path.clone(),
            source,
        })?;
    let effective = |field: &'static str| {
        status
            .lines()
            .find_map(|line| {
                let (key, rest) = line.split_once(':')?;
                (key.trim() == field).then(|| {
                    let ids: Vec<&str> = rest.split_whitespace().collect();
                    ids.get(1).or(ids.first())?.parse::<u32>().ok()
                })?
            })
            .ok_or(AttestError::MalformedStatus {
                pid,
                path: path.clone(),
                field,
            })
    };
    peer.uid = effective("Uid")?;
    peer.gid = effective("Gid")?;
    Ok(peer)
}
