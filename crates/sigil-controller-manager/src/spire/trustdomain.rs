//! The SPIRE TrustDomain API (`spire.api.server.trustdomain.v1`):
//! federation relationships.

use sigil_proto::spire::api::server::trustdomain::v1 as pb;
use sigil_proto::spire::api::types::{FederationRelationship, FederationRelationshipMask};
use tonic::transport::Channel;

use super::{ApiError, Outcomes, outcome};

/// A trust domain API client on the admin socket.
pub type TrustDomainClient = pb::trust_domain_client::TrustDomainClient<Channel>;

/// Lists every federation relationship, page by page.
pub async fn list(client: &mut TrustDomainClient) -> Result<Vec<FederationRelationship>, ApiError> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let resp = client
            .list_federation_relationships(pb::ListFederationRelationshipsRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .map_err(|status| ApiError {
                call: "ListFederationRelationships",
                status,
            })?
            .into_inner();
        out.extend(resp.federation_relationships);
        if resp.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = resp.next_page_token;
    }
}

/// `BatchCreateFederationRelationship`.
pub async fn create(
    client: &mut TrustDomainClient,
    relationships: Vec<FederationRelationship>,
) -> Result<Outcomes, ApiError> {
    let resp = client
        .batch_create_federation_relationship(pb::BatchCreateFederationRelationshipRequest {
            federation_relationships: relationships,
            ..Default::default()
        })
        .await
        .map_err(|status| ApiError {
            call: "BatchCreateFederationRelationship",
            status,
        })?;
    Ok(resp
        .into_inner()
        .results
        .into_iter()
        .map(|r| outcome(r.status))
        .collect())
}

/// `BatchUpdateFederationRelationship` of the bundle endpoint URL and
/// profile (the bundle is a starting point given at creation; the server
/// keeps it current by fetching).
pub async fn update(
    client: &mut TrustDomainClient,
    relationships: Vec<FederationRelationship>,
) -> Result<Outcomes, ApiError> {
    let resp = client
        .batch_update_federation_relationship(pb::BatchUpdateFederationRelationshipRequest {
            federation_relationships: relationships,
            input_mask: Some(FederationRelationshipMask {
                bundle_endpoint_url: true,
                bundle_endpoint_profile: true,
                trust_domain_bundle: false,
            }),
            ..Default::default()
        })
        .await
        .map_err(|status| ApiError {
            call: "BatchUpdateFederationRelationship",
            status,
        })?;
    Ok(resp
        .into_inner()
        .results
        .into_iter()
        .map(|r| outcome(r.status))
        .collect())
}

/// `BatchDeleteFederationRelationship`.
pub async fn delete(
    client: &mut TrustDomainClient,
    trust_domains: Vec<String>,
) -> Result<Outcomes, ApiError> {
    let resp = client
        .batch_delete_federation_relationship(pb::BatchDeleteFederationRelationshipRequest {
            trust_domains,
        })
        .await
        .map_err(|status| ApiError {
            call: "BatchDeleteFederationRelationship",
            status,
        })?;
    Ok(resp
        .into_inner()
        .results
        .into_iter()
        .map(|r| outcome(r.status))
        .collect())
}
