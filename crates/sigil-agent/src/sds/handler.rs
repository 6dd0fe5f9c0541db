//! [`SecretDiscovery`]: the `envoy.service.secret.v3.SecretDiscoveryService`
//! gRPC service.
//!
//! Each call attests its caller once (streams keep that attestation for
//! their lifetime, as SPIRE does); a stream is a task that feeds the
//! proxy's requests and the manager's snapshots into a [`StreamState`] and
//! sends what it returns.

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use sigil_spiffe::Selector;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::delta::DeltaState;
use super::resources::{self, WorkloadView};
use super::stream::StreamState;
use super::{SdsConfig, SdsError};
use crate::attestor::WorkloadAttestor;
use crate::cache::CacheHandle;
use crate::workload::{Method, ResponseStream, WorkloadError, WorkloadRateLimiter, attest_caller};

/// Envoy SDS v3 over a [`CacheHandle`] and a workload attestor.
///
/// Serve it with [`SecretDiscovery::into_service`] on a server whose
/// connections carry [`PeerInfo`](crate::uds::PeerInfo) (see
/// [`crate::uds::UdsIncoming`]).
#[derive(Clone)]
pub struct SecretDiscovery {
    cache: CacheHandle,
    attestor: Arc<dyn WorkloadAttestor>,
    config: Arc<SdsConfig>,
    limits: Arc<WorkloadRateLimiter>,
}

impl SecretDiscovery {
    /// SDS serving what `cache` holds to callers `attestor` describes,
    /// with resource names from `config`.
    pub fn new(
        cache: CacheHandle,
        attestor: Arc<dyn WorkloadAttestor>,
        config: SdsConfig,
    ) -> SecretDiscovery {
        SecretDiscovery {
            cache,
            attestor,
            config: Arc::new(config),
            limits: Arc::default(),
        }
    }

    /// Per-caller rate limits (`stream_secrets`, `fetch_secrets`), shared
    /// with the Workload API on the same socket.
    pub(crate) fn with_rate_limiter(
        mut self,
        limiter: Arc<WorkloadRateLimiter>,
    ) -> SecretDiscovery {
        self.limits = limiter;
        self
    }

    /// The tonic service to add to a server, with the shared message size
    /// limit.
    pub fn into_service(self) -> SecretDiscoveryServiceServer<SecretDiscovery> {
        SecretDiscoveryServiceServer::new(self)
            .max_decoding_message_size(sigil_proto::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(sigil_proto::MAX_MESSAGE_SIZE)
    }

    async fn caller<T>(
        &self,
        request: &Request<T>,
        method: Method,
    ) -> Result<Vec<Selector>, WorkloadError> {
        let selectors = attest_caller(self.attestor.as_ref(), request).await?;
        self.limits.check(method, &selectors)?;
        Ok(selectors)
    }
}

impl std::fmt::Debug for SecretDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretDiscovery")
            .field("attestor", &self.attestor.name())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for SecretDiscovery {
    type StreamSecretsStream = ResponseStream<DiscoveryResponse>;
    type DeltaSecretsStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let selectors = self.caller(&request, Method::StreamSecrets).await?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(run_stream(
            StreamState::new(self.config.clone()),
            request.into_inner(),
            self.cache.clone(),
            selectors,
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_secrets(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        // SPIRE has no limit of its own for the delta form; it shares
        // `stream_secrets`'.
        let selectors = self.caller(&request, Method::StreamSecrets).await?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(run_stream(
            DeltaState::new(self.config.clone()),
            request.into_inner(),
            self.cache.clone(),
            selectors,
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let selectors = self.caller(&request, Method::FetchSecrets).await?;
        let _subscription = self.cache.subscribe(&selectors).await;
        let snapshot = self
            .cache
            .snapshots
            .borrow()
            .clone()
            .ok_or(WorkloadError::NotReady)?;
        let view = WorkloadView::of(&snapshot, &selectors);
        let request = request.into_inner();
        let secrets = resources::secrets(
            &self.config,
            &request.resource_names,
            request.node.as_ref(),
            &view,
        )
        .inspect_err(|e| tracing::warn!(resource_names = ?request.resource_names, error = %e, "FetchSecrets failed"))?;
        Ok(Response::new(DiscoveryResponse {
            resources: secrets.iter().map(resources::pack).collect(),
            type_url: request.type_url,
            ..Default::default()
        }))
    }
}

/// The state-of-the-world (`StreamSecrets`) and incremental
/// (`DeltaSecrets`) protocols, as [`run_stream`] drives them.
trait SecretStream: Send + 'static {
    type Request: prost::Message + Default + Send + 'static;
    type Response: Send + 'static;
    fn on_request(&mut self, request: Self::Request) -> Result<Option<Self::Response>, SdsError>;
    fn on_update(&mut self, view: WorkloadView) -> Result<Option<Self::Response>, SdsError>;
}

impl SecretStream for StreamState {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    fn on_request(
        &mut self,
        request: DiscoveryRequest,
    ) -> Result<Option<DiscoveryResponse>, SdsError> {
        StreamState::on_request(self, request)
    }
    fn on_update(&mut self, view: WorkloadView) -> Result<Option<DiscoveryResponse>, SdsError> {
        StreamState::on_update(self, view)
    }
}

impl SecretStream for DeltaState {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    fn on_request(
        &mut self,
        request: DeltaDiscoveryRequest,
    ) -> Result<Option<DeltaDiscoveryResponse>, SdsError> {
        DeltaState::on_request(self, request)
    }
    fn on_update(
        &mut self,
        view: WorkloadView,
    ) -> Result<Option<DeltaDiscoveryResponse>, SdsError> {
        DeltaState::on_update(self, view)
    }
}

/// One stream's life: until the proxy hangs up, the agent stops, or a
/// request cannot be answered (which ends the stream with that error, as
/// in SPIRE).
async fn run_stream<S: SecretStream>(
    mut state: S,
    mut requests: Streaming<S::Request>,
    cache: CacheHandle,
    selectors: Vec<Selector>,
    tx: mpsc::Sender<Result<S::Response, Status>>,
) {
    // An open stream keeps its workload's SVIDs signed and cached.
    let _subscription = cache.subscribe(&selectors).await;
    let mut snapshots = cache.snapshots;
    let current = snapshots.borrow_and_update().clone();
    if let Some(snapshot) = current {
        // Nothing has been asked for yet, so this sends nothing.
        let _ = state.on_update(WorkloadView::of(&snapshot, &selectors));
    }
    loop {
        let step = tokio::select! {
            request = requests.message() => match request {
                Ok(Some(request)) => state.on_request(request),
                Ok(None) => return,
                Err(status) => {
                    if status.code() != tonic::Code::Cancelled {
                        tracing::debug!(error = %status, "SDS request stream failed");
                    }
                    return;
                }
            },
            changed = snapshots.changed() => {
                if changed.is_err() {
                    let _ = tx.send(Err(WorkloadError::ShuttingDown.into())).await;
                    return;
                }
                let Some(snapshot) = snapshots.borrow_and_update().clone() else {
                    // The manager withdrew its snapshot (re-attesting):
                    // the proxy keeps what it has.
                    continue;
                };
                state.on_update(WorkloadView::of(&snapshot, &selectors))
            },
            () = tx.closed() => return,
        };
        match step {
            Ok(None) => {}
            Ok(Some(response)) => {
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "Error building stream secrets response");
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        }
    }
}
