//! The `server_api` source: `spire.api.server.bundle.v1.Bundle/GetBundle`
//! with only the JWT authorities in the mask, on the server's admin socket.
//! The server's bundle already lists a *prepared* JWT key, so the provider
//! publishes it before it signs anything.

use sigil_proto::spire::api::server::bundle::v1::GetBundleRequest;
use sigil_proto::spire::api::server::bundle::v1::bundle_client::BundleClient;
use sigil_proto::spire::api::types::BundleMask;
use sigil_spiffe::JwtAuthority;
use tonic::transport::Channel;

use super::{PollError, Poller};

const CALL: &str = "Bundle.GetBundle";

/// Polls a SPIRE-compatible server's `GetBundle`.
#[derive(Debug)]
pub struct ServerApi {
    client: BundleClient<Channel>,
}

impl ServerApi {
    /// A poller on `channel`.
    pub fn new(channel: Channel) -> ServerApi {
        ServerApi {
            client: BundleClient::new(channel)
                .max_decoding_message_size(sigil_proto::MAX_MESSAGE_SIZE),
        }
    }
}

#[async_trait::async_trait]
impl Poller for ServerApi {
    fn call(&self) -> &'static str {
        CALL
    }

    async fn poll(&mut self) -> Result<Vec<JwtAuthority>, PollError> {
        let bundle = self
            .client
            .get_bundle(GetBundleRequest {
                output_mask: Some(BundleMask {
                    jwt_authorities: true,
                    ..BundleMask::default()
                }),
            })
            .await
            .map_err(|status| PollError::Rpc {
                call: CALL,
                status: Box::new(status),
            })?
            .into_inner();
        Ok(bundle
            .jwt_authorities
            .into_iter()
            .map(|k| JwtAuthority {
                key_id: k.key_id,
                public_key_der: k.public_key,
                expires_at: (k.expires_at != 0).then_some(k.expires_at),
            })
            .collect())
    }
}
