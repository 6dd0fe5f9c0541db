//! [`WorkloadApi`]: the `SpiffeWorkloadAPI` gRPC service.
//!
//! Every call checks the security header, then attests the caller once from
//! the [`PeerInfo`] taken at accept time. Streams hold that attestation for
//! their lifetime (as SPIRE does) and re-send the complete current state
//! each time the manager publishes a snapshot that changes what this caller
//! would receive.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt as _, stream};
use sigil_proto::workload::spiffe_workload_api_server::{
    SpiffeWorkloadApi, SpiffeWorkloadApiServer,
};
use sigil_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, WitBundlesRequest, WitBundlesResponse,
    WitsvidRequest, WitsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svidRequest,
    X509svidResponse,
};
use sigil_spiffe::{JwtSvid, Selector, SpiffeId};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::WorkloadError;
use super::compose;
use super::ratelimit::{Method, WorkloadRateLimiter, WorkloadRateLimits};
use crate::attestor::WorkloadAttestor;
use crate::cache::{CacheHandle, Snapshot};
use crate::uds::PeerInfo;

/// The metadata key every Workload API request must carry with value `true`.
pub const SECURITY_HEADER: &str = sigil_workload_client::SECURITY_HEADER;

/// A server-streaming response.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The SPIFFE Workload API over a [`CacheHandle`] and a workload attestor.
///
/// Serve it with [`WorkloadApi::into_service`] on a server whose connections
/// carry [`PeerInfo`] (see [`crate::uds::UdsIncoming`]).
#[derive(Clone)]
pub struct WorkloadApi {
    cache: CacheHandle,
    attestor: Arc<dyn WorkloadAttestor>,
    allowed_foreign_jwt_claims: Arc<BTreeSet<String>>,
    allow_unauthenticated_verifiers: bool,
    limits: Arc<WorkloadRateLimiter>,
}

impl WorkloadApi {
    /// A Workload API serving what `cache` holds to callers `attestor`
    /// describes.
    pub fn new(cache: CacheHandle, attestor: Arc<dyn WorkloadAttestor>) -> WorkloadApi {
        WorkloadApi {
            cache,
            attestor,
            allowed_foreign_jwt_claims: Arc::new(BTreeSet::new()),
            allow_unauthenticated_verifiers: false,
            limits: Arc::default(),
        }
    }

    /// Per-caller rate limits (SPIRE's `experimental.ratelimit`).
    pub fn with_rate_limits(mut self, limits: WorkloadRateLimits) -> WorkloadApi {
        self.limits = Arc::new(WorkloadRateLimiter::new(limits));
        self
    }

    /// Per-caller rate limits shared with another service on the socket.
    pub(crate) fn with_rate_limiter(mut self, limiter: Arc<WorkloadRateLimiter>) -> WorkloadApi {
        self.limits = limiter;
        self
    }

    /// Claims besides `sub`, `exp` and `aud` that `ValidateJWTSVID` returns
    /// for tokens of federated trust domains (SPIRE's
    /// `allowed_foreign_jwt_claims`).
    pub fn with_allowed_foreign_jwt_claims(
        mut self,
        claims: impl IntoIterator<Item = String>,
    ) -> WorkloadApi {
        self.allowed_foreign_jwt_claims = Arc::new(claims.into_iter().collect());
        self
    }

    /// Lets callers without an identity fetch our own trust domain's bundles
    /// (SPIRE's `allow_unauthenticated_verifiers`).
    pub fn with_allow_unauthenticated_verifiers(mut self, allow: bool) -> WorkloadApi {
        self.allow_unauthenticated_verifiers = allow;
        self
    }

    /// The tonic service to add to a server, with the shared message size
    /// limit.
    pub fn into_service(self) -> SpiffeWorkloadApiServer<WorkloadApi> {
        SpiffeWorkloadApiServer::new(self)
            .max_decoding_message_size(sigil_proto::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(sigil_proto::MAX_MESSAGE_SIZE)
    }

    /// Attestation, then the caller's rate limit for `method`.
    async fn limited_caller<T>(
        &self,
        request: &Request<T>,
        method: Method,
    ) -> Result<Vec<Selector>, WorkloadError> {
        let selectors = self.caller(request).await?;
        self.limits.check(method, &selectors)?;
        Ok(selectors)
    }

    /// Header check and attestation, the start of every call.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Vec<Selector>, WorkloadError> {
        check_security_header(request)?;
        attest_caller(self.attestor.as_ref(), request).await
    }

    fn snapshot(&self) -> Result<Arc<Snapshot>, WorkloadError> {
        self.cache
            .snapshots
            .borrow()
            .clone()
            .ok_or(WorkloadError::NotReady)
    }

    /// The first message now, then a new one whenever a snapshot changes it.
    fn updates<T, F>(&self, compose: F) -> Result<ResponseStream<T>, Status>
    where
        T: Clone + PartialEq + Send + 'static,
        F: Fn(&Snapshot) -> Result<T, WorkloadError> + Send + 'static,
    {
        snapshot_updates(self.cache.snapshots.clone(), compose)
    }
}

/// Attests the caller of `request` from the [`PeerInfo`] its connection
/// carries. Shared with SDS, whose callers are attested the same way.
pub(crate) async fn attest_caller<T>(
    attestor: &dyn WorkloadAttestor,
    request: &Request<T>,
) -> Result<Vec<Selector>, WorkloadError> {
    let peer = request
        .extensions()
        .get::<PeerInfo>()
        .ok_or(WorkloadError::NoPeerCredentials)?;
    match attestor.attest(peer).await {
        Ok(selectors) => Ok(selectors),
        Err(e) => {
            tracing::warn!(
                pid = peer.pid,
                uid = peer.uid,
                error = %e,
                "workload attestation failed"
            );
            Err(WorkloadError::Attestation(e))
        }
    }
}

/// A stream of `compose(snapshot)`: the first message at once (`NotReady`
/// while there is no snapshot yet), then a new one each time a published
/// snapshot changes the message. An error from `compose` ends the stream
/// with that error. Shared with the admin API's delegated-identity streams.
pub(crate) fn snapshot_updates<T, E, F>(
    mut snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    compose: F,
) -> Result<ResponseStream<T>, Status>
where
    T: Clone + PartialEq + Send + 'static,
    E: Into<Status> + 'static,
    F: Fn(&Snapshot) -> Result<T, E> + Send + 'static,
{
    let first = {
        let current = snapshots.borrow_and_update().clone();
        compose(current.as_deref().ok_or(WorkloadError::NotReady)?).map_err(Into::into)?
    };
    Ok(Box::pin(
        stream::once(std::future::ready(Ok(first.clone()))).chain(stream::unfold(
            Some(Updates {
                snapshots,
                last: first,
                compose,
            }),
            Updates::next::<E>,
        )),
    ))
}

impl std::fmt::Debug for WorkloadApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadApi")
            .field("attestor", &self.attestor.name())
            .field(
                "allowed_foreign_jwt_claims",
                &self.allowed_foreign_jwt_claims,
            )
            .field(
                "allow_unauthenticated_verifiers",
                &self.allow_unauthenticated_verifiers,
            )
            .finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = ResponseStream<X509svidResponse>;
    type FetchX509BundlesStream = ResponseStream<X509BundlesResponse>;
    type FetchJWTBundlesStream = ResponseStream<JwtBundlesResponse>;
    type FetchWITSVIDStream = ResponseStream<WitsvidResponse>;
    type FetchWITBundlesStream = ResponseStream<WitBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let selectors = self.limited_caller(&request, Method::FetchX509Svid).await?;
        // Held by the stream: its SVIDs stay signed and cached while open.
        let subscription = self.cache.subscribe(&selectors).await;
        let stream = self.updates(move |snapshot| {
            let _held = &subscription;
            compose::x509_svid_response(snapshot, &selectors)
        })?;
        Ok(Response::new(stream))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let selectors = self
            .limited_caller(&request, Method::FetchX509Bundles)
            .await?;
        let subscription = self.cache.subscribe(&selectors).await;
        let allow = self.allow_unauthenticated_verifiers;
        let stream = self.updates(move |snapshot| {
            let _held = &subscription;
            compose::x509_bundles_response(snapshot, &selectors, allow)
        })?;
        Ok(Response::new(stream))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        check_security_header(&request)?;
        let req = request.get_ref();
        if req.audience.is_empty() {
            return Err(WorkloadError::MissingAudience.into());
        }
        let wanted = match req.spiffe_id.as_str() {
            "" => None,
            id => Some(SpiffeId::parse(id).map_err(WorkloadError::InvalidRequestedId)?),
        };
        let selectors = self.limited_caller(&request, Method::FetchJwtSvid).await?;
        let snapshot = self.snapshot()?;
        let mut svids = Vec::new();
        // Entries without an X509-SVID (beyond the cache size) have
        // JWT-SVIDs all the same.
        for identity in compose::jwt_identities(&snapshot, &selectors) {
            if wanted.as_ref().is_some_and(|w| w != identity.spiffe_id) {
                continue;
            }
            let jwt = self
                .cache
                .jwt
                .jwt_svid(identity.entry_id, &request.get_ref().audience)
                .await
                .map_err(WorkloadError::JwtFetch)?;
            svids.push(Jwtsvid {
                spiffe_id: identity.spiffe_id.to_string(),
                svid: jwt.token,
                hint: identity.hint.to_owned(),
            });
        }
        if svids.is_empty() {
            return Err(WorkloadError::NoIdentity.into());
        }
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let selectors = self
            .limited_caller(&request, Method::FetchJwtBundles)
            .await?;
        let subscription = self.cache.subscribe(&selectors).await;
        let allow = self.allow_unauthenticated_verifiers;
        let stream = self.updates(move |snapshot| {
            let _held = &subscription;
            compose::jwt_bundles_response(snapshot, &selectors, allow)
        })?;
        Ok(Response::new(stream))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        check_security_header(&request)?;
        let req = request.get_ref();
        if req.audience.is_empty() {
            return Err(WorkloadError::MissingAudience.into());
        }
        if req.svid.is_empty() {
            return Err(WorkloadError::MissingSvid.into());
        }
        // A verifier needs no identity of its own, but is still attested,
        // as in SPIRE.
        // Only the bundles of the trust domains the caller's entries
        // federate with are trusted, as in SPIRE.
        let selectors = self.caller(&request).await?;
        let snapshot = self.snapshot()?;
        let token = &request.get_ref().svid;
        let invalid = |e: sigil_spiffe::JwtSvidError| WorkloadError::InvalidToken(e.to_string());
        let subject_td = JwtSvid::parse_insecure(token)
            .map_err(invalid)?
            .spiffe_id()
            .trust_domain();
        let callers = compose::identities(&snapshot, &selectors);
        let bundle = compose::caller_bundles(&snapshot, &callers)
            .into_iter()
            .find(|b| b.trust_domain == subject_td)
            .ok_or_else(|| {
                WorkloadError::InvalidToken(format!(
                    "no keys found for trust domain \"{subject_td}\""
                ))
            })?;
        let svid = JwtSvid::validate(
            token,
            bundle,
            std::slice::from_ref(&request.get_ref().audience),
            unix_now(),
            &sigil_crypto::AwsLcJwtVerifier,
        )
        .map_err(invalid)?;
        let foreign = subject_td != snapshot.bundle.trust_domain;
        let claims =
            compose::validated_claims(svid.claims(), foreign, &self.allowed_foreign_jwt_claims);
        tracing::debug!(spiffe_id = %svid.spiffe_id(), "validated JWT-SVID");
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id: svid.spiffe_id().to_string(),
            claims: Some(claims),
        }))
    }

    async fn fetch_witsvid(
        &self,
        request: Request<WitsvidRequest>,
    ) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        check_security_header(&request)?;
        Err(WorkloadError::WitUnsupported.into())
    }

    async fn fetch_wit_bundles(
        &self,
        request: Request<WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        check_security_header(&request)?;
        Err(WorkloadError::WitUnsupported.into())
    }
}

/// State of a stream after its first message.
struct Updates<T, F> {
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    last: T,
    compose: F,
}

impl<T, F> Updates<T, F>
where
    T: Clone + PartialEq,
{
    /// Waits for a snapshot that changes the message; ends the stream after
    /// an error (the caller lost its identity, or the agent is stopping).
    async fn next<E>(state: Option<Self>) -> Option<(Result<T, Status>, Option<Self>)>
    where
        E: Into<Status>,
        F: Fn(&Snapshot) -> Result<T, E>,
    {
        let mut this = state?;
        loop {
            if this.snapshots.changed().await.is_err() {
                return Some((Err(WorkloadError::ShuttingDown.into()), None));
            }
            let Some(snapshot) = this.snapshots.borrow_and_update().clone() else {
                // The manager withdrew its snapshot (re-attesting): keep the
                // caller on what it has until there is something new.
                continue;
            };
            match (this.compose)(&snapshot) {
                Ok(message) if message == this.last => continue,
                Ok(message) => {
                    this.last = message.clone();
                    return Some((Ok(message), Some(this)));
                }
                Err(e) => return Some((Err(e.into()), None)),
            }
        }
    }
}

fn check_security_header<T>(request: &Request<T>) -> Result<(), WorkloadError> {
    let mut values = request.metadata().get_all(SECURITY_HEADER).iter();
    match (values.next(), values.next()) {
        (Some(v), None) if v.as_bytes() == b"true" => Ok(()),
        _ => Err(WorkloadError::MissingSecurityHeader),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
