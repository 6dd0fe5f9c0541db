//! The `workload_api` source: the first message of the Workload API's
//! `FetchJWTBundles` stream on each poll, from which the configured trust
//! domain's bundle is taken (keyed by trust domain name or its SPIFFE ID).

use futures::StreamExt as _;
use sigil_proto::workload::JwtBundlesRequest;
use sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use sigil_spiffe::{Bundle, JwtAuthority, TrustDomain};
use tonic::transport::Channel;

use super::{PollError, Poller};

const CALL: &str = "SpiffeWorkloadAPI.FetchJWTBundles";

/// Polls an agent's Workload API.
#[derive(Debug)]
pub struct WorkloadApi {
    client: SpiffeWorkloadApiClient<Channel>,
    trust_domain: TrustDomain,
}

impl WorkloadApi {
    /// A poller on `channel` publishing `trust_domain`'s keys.
    pub fn new(channel: Channel, trust_domain: TrustDomain) -> WorkloadApi {
        WorkloadApi {
            client: SpiffeWorkloadApiClient::new(channel)
                .max_decoding_message_size(sigil_proto::MAX_MESSAGE_SIZE),
            trust_domain,
        }
    }
}

fn rpc(status: tonic::Status) -> PollError {
    PollError::Rpc {
        call: CALL,
        status: Box::new(status),
    }
}

#[async_trait::async_trait]
impl Poller for WorkloadApi {
    fn call(&self) -> &'static str {
        CALL
    }

    async fn poll(&mut self) -> Result<Vec<JwtAuthority>, PollError> {
        let mut req = tonic::Request::new(JwtBundlesRequest {});
        req.metadata_mut().insert(
            "workload.spiffe.io",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        let mut stream = self
            .client
            .fetch_jwt_bundles(req)
            .await
            .map_err(rpc)?
            .into_inner();
        let msg = stream
            .next()
            .await
            .ok_or(PollError::NoMessage(CALL))?
            .map_err(rpc)?;
        let td = &self.trust_domain;
        let jwks = msg
            .bundles
            .get(td.name())
            .or_else(|| msg.bundles.get(&td.id_string()))
            .ok_or_else(|| PollError::NoBundle(td.name().to_owned()))?;
        let bundle = Bundle::parse_jwks(td, jwks).map_err(|source| PollError::BadBundle {
            trust_domain: td.name().to_owned(),
            source,
        })?;
        Ok(bundle.jwt_authorities)
    }
}
