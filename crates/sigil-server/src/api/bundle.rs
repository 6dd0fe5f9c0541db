//! `spire.api.server.bundle.v1.Bundle`: our trust bundle. Federated bundle
//! management is not implemented yet and says so.

use std::sync::Arc;

use sigil_proto::spire::api::server::bundle::v1 as pb;
use sigil_proto::spire::api::types;
use tonic::{Request, Response, Status};

use super::convert::bundle_to_proto;
use super::{ApiState, authenticate, require_admin};

/// The bundle service.
#[derive(Debug, Clone)]
pub struct BundleService {
    state: Arc<ApiState>,
}

impl BundleService {
    /// Wraps the shared state.
    pub fn new(state: Arc<ApiState>) -> Self {
        BundleService { state }
    }
}

fn federation_unimplemented() -> Status {
    Status::unimplemented("federated bundles are not supported by sigil yet")
}

#[tonic::async_trait]
impl pb::bundle_server::Bundle for BundleService {
    async fn count_bundles(
        &self,
        request: Request<pb::CountBundlesRequest>,
    ) -> Result<Response<pb::CountBundlesResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let n = self
            .state
            .ds
            .list_bundles()
            .await
            .map_err(super::ds_status)?
            .len();
        Ok(Response::new(pb::CountBundlesResponse {
            count: i32::try_from(n).unwrap_or(i32::MAX),
        }))
    }

    async fn get_bundle(
        &self,
        request: Request<pb::GetBundleRequest>,
    ) -> Result<Response<types::Bundle>, Status> {
        // Anyone may read the bundle, as in SPIRE.
        let _ = authenticate(&self.state, &request).await?;
        Ok(Response::new(bundle_to_proto(&self.state.ca.bundle())))
    }

    async fn append_bundle(
        &self,
        _request: Request<pb::AppendBundleRequest>,
    ) -> Result<Response<types::Bundle>, Status> {
        Err(Status::unimplemented(
            "AppendBundle is not supported by sigil yet",
        ))
    }

    async fn publish_jwt_authority(
        &self,
        _request: Request<pb::PublishJwtAuthorityRequest>,
    ) -> Result<Response<pb::PublishJwtAuthorityResponse>, Status> {
        Err(Status::unimplemented(
            "PublishJWTAuthority is not supported by sigil yet",
        ))
    }

    async fn publish_wit_authority(
        &self,
        _request: Request<pb::PublishWitAuthorityRequest>,
    ) -> Result<Response<pb::PublishWitAuthorityResponse>, Status> {
        Err(Status::unimplemented(
            "WIT-SVIDs are not supported by sigil yet",
        ))
    }

    async fn list_federated_bundles(
        &self,
        _request: Request<pb::ListFederatedBundlesRequest>,
    ) -> Result<Response<pb::ListFederatedBundlesResponse>, Status> {
        Err(federation_unimplemented())
    }

    async fn get_federated_bundle(
        &self,
        _request: Request<pb::GetFederatedBundleRequest>,
    ) -> Result<Response<types::Bundle>, Status> {
        Err(federation_unimplemented())
    }

    async fn batch_create_federated_bundle(
        &self,
        _request: Request<pb::BatchCreateFederatedBundleRequest>,
    ) -> Result<Response<pb::BatchCreateFederatedBundleResponse>, Status> {
        Err(federation_unimplemented())
    }

    async fn batch_update_federated_bundle(
        &self,
        _request: Request<pb::BatchUpdateFederatedBundleRequest>,
    ) -> Result<Response<pb::BatchUpdateFederatedBundleResponse>, Status> {
        Err(federation_unimplemented())
    }

    async fn batch_set_federated_bundle(
        &self,
        _request: Request<pb::BatchSetFederatedBundleRequest>,
    ) -> Result<Response<pb::BatchSetFederatedBundleResponse>, Status> {
        Err(federation_unimplemented())
    }

    async fn batch_delete_federated_bundle(
        &self,
        _request: Request<pb::BatchDeleteFederatedBundleRequest>,
    ) -> Result<Response<pb::BatchDeleteFederatedBundleResponse>, Status> {
        Err(federation_unimplemented())
    }
}
