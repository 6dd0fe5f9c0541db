//! `spire.api.server.trustdomain.v1.TrustDomain`: federation relationships
//! (which foreign trust domains we federate with, where their bundle
//! endpoints are and how those authenticate), for administrators only.
//!
//! Relationships live in the datastore; a relationship's foreign bundle is
//! the federated bundle stored under its trust domain (the same record the
//! bundle service manages), so a `trust_domain_bundle` given here is written
//! there and read back from there. Validation order, codes and messages
//! follow SPIRE's trust domain service, including its habit of reporting
//! datastore failures of a batch item (a duplicate, a missing relationship
//! on update) as `Internal` with the datastore's reason appended.
//!
//! Fetching is the [`crate::federation::FederationManager`]'s job: every
//! batch change asks it to re-read relationships, and `RefreshBundle` has it
//! fetch one trust domain's bundle at once (config relationships included,
//! as in SPIRE), answering with the fetch's error.

use std::sync::Arc;

use sigil_datastore::{
    BundleEndpointProfile, DataStoreError, FederationRelationship, FederationRelationshipMask,
    StoredBundle,
};
use sigil_proto::spire::api::server::trustdomain::v1 as pb;
use sigil_proto::spire::api::types;
use sigil_proto::spire::api::types::federation_relationship::BundleEndpointProfile as ProtoProfile;
use sigil_spiffe::{Bundle, IdError, SpiffeId, TrustDomain};
use tonic::{Code, Request, Response, Status};

pub use self::go_url::{GoUrlError, GoUrlSyntaxError};
use super::bundle::{BundleProtoError, batch_status, bundle_from_proto, parse_trust_domain};
use super::convert::bundle_to_proto;
use super::{ApiState, authenticate, require_admin, status_ok};
use crate::ca::{CaError, decode_bundle, encode_bundle};

/// The trust domain service.
#[derive(Debug, Clone)]
pub struct TrustDomainService {
    state: Arc<ApiState>,
}

impl TrustDomainService {
    /// Wraps the shared state.
    pub fn new(state: Arc<ApiState>) -> Self {
        TrustDomainService { state }
    }
}

/// A relationship from the wire, checked as SPIRE's
/// `ProtoToFederationRelationship` checks it, with its foreign bundle when
/// one was given.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingRelationship {
    /// The relationship to store.
    pub relationship: FederationRelationship,
    /// The foreign trust domain's bundle, when the request carried one.
    pub bundle: Option<Bundle>,
}

/// Why a wire federation relationship is not acceptable. The texts are
/// SPIRE's reasons (without its outer `failed to convert federation
/// relationship` prefix), which clients read in batch statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelationshipError {
    /// The relationship's trust domain does not parse.
    #[error("failed to parse trust domain: {0}")]
    TrustDomain(#[source] BundleProtoError),
    /// The bundle endpoint URL is not acceptable.
    #[error(transparent)]
    EndpointUrl(#[from] EndpointUrlError),
    /// The https_spiffe profile's endpoint ID does not parse.
    #[error("failed to parse endpoint SPIFFE ID: {0}")]
    EndpointSpiffeId(#[source] IdError),
    /// No bundle endpoint profile.
    #[error("unsupported bundle endpoint profile type: <nil>")]
    MissingProfile,
    /// The given bundle's trust domain does not parse.
    #[error("failed to parse bundle: invalid trust domain: {0}")]
    BundleTrustDomain(#[source] BundleProtoError),
    /// The given bundle is not acceptable.
    #[error("failed to parse bundle: {0}")]
    Bundle(#[source] BundleProtoError),
    /// The given bundle is of another trust domain than the relationship.
    #[error(
        "trust domain bundle ({}) must match the trust domain of the federation \
         relationship ({})",
        go_quote(.bundle),
        go_quote(.relationship)
    )]
    BundleMismatch {
        /// The bundle's trust domain, as given.
        bundle: String,
        /// The relationship's trust domain.
        relationship: String,
    },
}

/// Why a bundle endpoint URL is not acceptable (SPIRE's texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointUrlError {
    /// Go's `url.Parse` would refuse it.
    #[error("failed to parse bundle endpoint URL: {0}")]
    Parse(#[source] GoUrlError),
    /// The scheme is not https.
    #[error("bundle endpoint URL must use the https scheme")]
    NotHttps,
    /// No host.
    #[error("bundle endpoint URL must specify the host")]
    NoHost,
    /// User info in the authority.
    #[error("bundle endpoint URL must not contain user info")]
    UserInfo,
}

/// Validates a wire relationship in SPIRE's order: trust domain, bundle
/// endpoint URL, profile, then the bundle (which must be of the same trust
/// domain). The error is the reason, without SPIRE's outer
/// `failed to convert federation relationship` prefix.
pub fn relationship_from_proto(
    f: &types::FederationRelationship,
) -> Result<IncomingRelationship, RelationshipError> {
    let trust_domain =
        parse_trust_domain(&f.trust_domain).map_err(RelationshipError::TrustDomain)?;
    let bundle_endpoint_url = check_bundle_endpoint_url(&f.bundle_endpoint_url)?;
    let profile = match &f.bundle_endpoint_profile {
        Some(ProtoProfile::HttpsSpiffe(p)) => {
            let endpoint_spiffe_id = SpiffeId::parse(&p.endpoint_spiffe_id)
                .map_err(RelationshipError::EndpointSpiffeId)?;
            BundleEndpointProfile::HttpsSpiffe { endpoint_spiffe_id }
        }
        Some(ProtoProfile::HttpsWeb(_)) => BundleEndpointProfile::HttpsWeb,
        // Go prints the type of a nil interface as `<nil>`.
        None => return Err(RelationshipError::MissingProfile),
    };
    let bundle = match &f.trust_domain_bundle {
        None => None,
        Some(b) => {
            let bundle_td = parse_trust_domain(&b.trust_domain)
                .map_err(RelationshipError::BundleTrustDomain)?;
            let bundle = bundle_from_proto(&bundle_td, b).map_err(RelationshipError::Bundle)?;
            if bundle_td != trust_domain {
                return Err(RelationshipError::BundleMismatch {
                    bundle: b.trust_domain.clone(),
                    relationship: trust_domain.name().to_owned(),
                });
            }
            Some(bundle)
        }
    };
    Ok(IncomingRelationship {
        relationship: FederationRelationship {
            trust_domain,
            bundle_endpoint_url,
            profile,
        },
        bundle,
    })
}

/// The wire form of a relationship and its bundle, with the fields `mask`
/// leaves out cleared (all are kept without a mask; the trust domain always).
pub fn relationship_to_proto(
    rel: &FederationRelationship,
    bundle: Option<&Bundle>,
    mask: Option<&types::FederationRelationshipMask>,
) -> types::FederationRelationship {
    let mask = mask.copied().unwrap_or(ALL_FIELDS);
    let mut out = types::FederationRelationship {
        trust_domain: rel.trust_domain.name().to_owned(),
        ..Default::default()
    };
    if mask.bundle_endpoint_url {
        out.bundle_endpoint_url = rel.bundle_endpoint_url.clone();
    }
    if mask.bundle_endpoint_profile {
        out.bundle_endpoint_profile = Some(match &rel.profile {
            BundleEndpointProfile::HttpsWeb => ProtoProfile::HttpsWeb(types::HttpsWebProfile {}),
            BundleEndpointProfile::HttpsSpiffe { endpoint_spiffe_id } => {
                ProtoProfile::HttpsSpiffe(types::HttpsspiffeProfile {
                    endpoint_spiffe_id: endpoint_spiffe_id.to_string(),
                })
            }
        });
    }
    if mask.trust_domain_bundle {
        out.trust_domain_bundle = bundle.map(bundle_to_proto);
    }
    out
}

const ALL_FIELDS: types::FederationRelationshipMask = types::FederationRelationshipMask {
    bundle_endpoint_url: true,
    bundle_endpoint_profile: true,
    trust_domain_bundle: true,
};

/// Checks a bundle endpoint URL as SPIRE does (Go's `url.Parse`, then an
/// https scheme, a host and no user info) and returns it as Go's `URL.String`
/// would for it: as given, with the scheme lowercased.
pub fn check_bundle_endpoint_url(raw: &str) -> Result<String, EndpointUrlError> {
    let parsed = go_url::parse(raw).map_err(EndpointUrlError::Parse)?;
    if parsed.scheme != "https" {
        return Err(EndpointUrlError::NotHttps);
    }
    if parsed.host.is_empty() {
        return Err(EndpointUrlError::NoHost);
    }
    if parsed.has_user {
        return Err(EndpointUrlError::UserInfo);
    }
    Ok(format!("{}{}", parsed.scheme, &raw[parsed.scheme.len()..]))
}

/// Go's `%q` for the ASCII text these messages carry.
fn go_quote(s: &str) -> String {
    format!("{s:?}")
}

/// The reason a datastore call failed, without the variant's own prefix
/// (SPIRE appends the datastore's message to its own).
fn ds_reason(e: &DataStoreError) -> String {
    match e {
        DataStoreError::NotFound(m)
        | DataStoreError::AlreadyExists(m)
        | DataStoreError::InvalidArgument(m) => m.clone(),
        other => other.to_string(),
    }
}

/// SPIRE's `MakeErr` for unary RPCs: the message, plus the reason except
/// for NotFound.
fn rpc_error(code: Code, msg: &str, reason: Option<&str>) -> Status {
    match reason {
        Some(r) if code != Code::NotFound => Status::new(code, format!("{msg}: {r}")),
        _ => Status::new(code, msg),
    }
}

/// Why a relationship's bundle record could not be read or written; the
/// text is the reason SPIRE appends to its own message.
#[derive(Debug, thiserror::Error)]
enum BundleRecordError {
    /// The datastore read failed.
    #[error("unable to fetch bundle: {}", ds_reason(.0))]
    Fetch(DataStoreError),
    /// The stored record does not decode.
    #[error("unable to fetch bundle: {0}")]
    Decode(CaError),
    /// The bundle does not encode.
    #[error("unable to set bundle: {0}")]
    Encode(CaError),
    /// The datastore write failed.
    #[error("unable to set bundle: {}", ds_reason(.0))]
    Store(DataStoreError),
}

impl TrustDomainService {
    /// The stored bundle of `td`, when there is one.
    async fn stored_bundle(&self, td: &TrustDomain) -> Result<Option<Bundle>, BundleRecordError> {
        let stored = self
            .state
            .ds
            .get_bundle(td)
            .await
            .map_err(BundleRecordError::Fetch)?;
        stored
            .map(|s| decode_bundle(td, &s.data))
            .transpose()
            .map_err(BundleRecordError::Decode)
    }

    /// The stored bundle of `rel`'s trust domain when the output wants it.
    async fn bundle_for_output(
        &self,
        rel: &FederationRelationship,
        mask: Option<&types::FederationRelationshipMask>,
    ) -> Result<Option<Bundle>, BundleRecordError> {
        if mask.is_some_and(|m| !m.trust_domain_bundle) {
            return Ok(None);
        }
        self.stored_bundle(&rel.trust_domain).await
    }

    async fn store_bundle(&self, b: &Bundle) -> Result<(), BundleRecordError> {
        let data = encode_bundle(b).map_err(BundleRecordError::Encode)?;
        self.state
            .ds
            .set_bundle(StoredBundle {
                trust_domain: b.trust_domain.clone(),
                data,
            })
            .await
            .map_err(BundleRecordError::Store)
    }

    /// An https_spiffe endpoint is authenticated with the bundle of its
    /// SPIFFE ID's trust domain; say so when there is none (as SPIRE warns).
    async fn warn_if_endpoint_bundle_missing(
        &self,
        rel: &FederationRelationship,
        has_bundle: bool,
    ) {
        let BundleEndpointProfile::HttpsSpiffe { endpoint_spiffe_id } = &rel.profile else {
            return;
        };
        if has_bundle {
            return;
        }
        let td = endpoint_spiffe_id.trust_domain();
        match self.state.ds.get_bundle(&td).await {
            Ok(Some(_)) => {}
            Ok(None) => tracing::warn!(
                endpoint_spiffe_id = %endpoint_spiffe_id,
                "bundle not found for the endpoint SPIFFE ID trust domain"
            ),
            Err(e) => tracing::warn!(
                endpoint_spiffe_id = %endpoint_spiffe_id,
                error = %e,
                "failed to check whether a bundle exists for the endpoint SPIFFE ID trust domain"
            ),
        }
    }

    /// One item of BatchCreate.
    async fn create_one(
        &self,
        f: &types::FederationRelationship,
        output_mask: Option<&types::FederationRelationshipMask>,
    ) -> (types::Status, Option<types::FederationRelationship>) {
        let incoming = match relationship_from_proto(f) {
            Ok(v) => v,
            Err(e) => {
                let status = batch_status(
                    Code::InvalidArgument,
                    "failed to convert federation relationship",
                    Some(&e.to_string()),
                );
                return (status, None);
            }
        };
        let rel = incoming.relationship;
        if rel.trust_domain == self.state.td {
            let status = batch_status(
                Code::InvalidArgument,
                "unable to create federation relationship for server trust domain",
                None,
            );
            return (status, None);
        }
        const FAILED: &str = "failed to create federation relationship";
        let created = match self
            .state
            .ds
            .create_federation_relationship(rel.clone())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return (
                    batch_status(Code::Internal, FAILED, Some(&ds_reason(&e))),
                    None,
                );
            }
        };
        // SPIRE writes the bundle and the relationship in one transaction;
        // here they are two records, so a bundle that cannot be stored takes
        // the new relationship back out.
        if let Some(b) = &incoming.bundle
            && let Err(e) = self.store_bundle(b).await
        {
            if let Err(undo) = self
                .state
                .ds
                .delete_federation_relationship(&rel.trust_domain)
                .await
            {
                tracing::error!(trust_domain = %rel.trust_domain, error = %undo,
                    "could not remove a federation relationship whose bundle failed to store");
            }
            return (
                batch_status(Code::Internal, FAILED, Some(&e.to_string())),
                None,
            );
        }
        self.warn_if_endpoint_bundle_missing(&created, incoming.bundle.is_some())
            .await;
        tracing::info!(trust_domain = %created.trust_domain,
            profile = created.profile.name(), "federation relationship created");
        let out = relationship_to_proto(&created, incoming.bundle.as_ref(), output_mask);
        (status_ok(), Some(out))
    }

    /// One item of BatchUpdate.
    async fn update_one(
        &self,
        f: &types::FederationRelationship,
        input_mask: Option<&types::FederationRelationshipMask>,
        output_mask: Option<&types::FederationRelationshipMask>,
    ) -> (types::Status, Option<types::FederationRelationship>) {
        // As in SPIRE, every field is checked, whatever the input mask.
        let incoming = match relationship_from_proto(f) {
            Ok(v) => v,
            Err(e) => {
                let status = batch_status(
                    Code::InvalidArgument,
                    "failed to convert federation relationship",
                    Some(&e.to_string()),
                );
                return (status, None);
            }
        };
        let input = input_mask.copied().unwrap_or(ALL_FIELDS);
        let mask = FederationRelationshipMask {
            bundle_endpoint_url: input.bundle_endpoint_url,
            profile: input.bundle_endpoint_profile,
        };
        const FAILED: &str = "failed to update federation relationship";
        let updated = match self
            .state
            .ds
            .update_federation_relationship(incoming.relationship, &mask)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return (
                    batch_status(Code::Internal, FAILED, Some(&ds_reason(&e))),
                    None,
                );
            }
        };
        if input.trust_domain_bundle
            && let Some(b) = &incoming.bundle
            && let Err(e) = self.store_bundle(b).await
        {
            return (
                batch_status(Code::Internal, FAILED, Some(&e.to_string())),
                None,
            );
        }
        let bundle = match self.stored_bundle(&updated.trust_domain).await {
            Ok(b) => b,
            Err(e) => {
                return (
                    batch_status(Code::Internal, FAILED, Some(&e.to_string())),
                    None,
                );
            }
        };
        self.warn_if_endpoint_bundle_missing(&updated, bundle.is_some())
            .await;
        tracing::info!(trust_domain = %updated.trust_domain,
            profile = updated.profile.name(), "federation relationship updated");
        let out = relationship_to_proto(&updated, bundle.as_ref(), output_mask);
        (status_ok(), Some(out))
    }

    /// One item of BatchDelete; returns the status and the trust domain to
    /// report (its name once parsed, else as given).
    async fn delete_one(&self, name: &str) -> (types::Status, String) {
        if name.is_empty() {
            let status = batch_status(Code::InvalidArgument, "missing trust domain", None);
            return (status, String::new());
        }
        let td = match parse_trust_domain(name) {
            Ok(td) => td,
            Err(e) => {
                let status = batch_status(
                    Code::InvalidArgument,
                    "failed to parse trust domain",
                    Some(&e.to_string()),
                );
                return (status, name.to_owned());
            }
        };
        let status = match self.state.ds.delete_federation_relationship(&td).await {
            Ok(()) => {
                tracing::info!(trust_domain = %td, "federation relationship deleted");
                status_ok()
            }
            Err(DataStoreError::NotFound(_)) => {
                batch_status(Code::NotFound, "federation relationship not found", None)
            }
            Err(e) => batch_status(
                Code::Internal,
                "failed to delete federation relationship",
                Some(&ds_reason(&e)),
            ),
        };
        (status, td.name().to_owned())
    }
}

#[tonic::async_trait]
impl pb::trust_domain_server::TrustDomain for TrustDomainService {
    async fn list_federation_relationships(
        &self,
        request: Request<pb::ListFederationRelationshipsRequest>,
    ) -> Result<Response<pb::ListFederationRelationshipsResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let req = request.into_inner();
        const FAILED: &str = "failed to list federation relationships";
        let page_size = u32::try_from(req.page_size.max(0)).unwrap_or(0);
        let token = if page_size > 0 {
            req.page_token.as_str()
        } else {
            ""
        };
        let (rels, next_page_token) = self
            .state
            .ds
            .list_federation_relationships(page_size, token)
            .await
            .map_err(|e| rpc_error(Code::Internal, FAILED, Some(&ds_reason(&e))))?;
        let mut federation_relationships = Vec::with_capacity(rels.len());
        for rel in &rels {
            let bundle = self
                .bundle_for_output(rel, req.output_mask.as_ref())
                .await
                .map_err(|e| rpc_error(Code::Internal, FAILED, Some(&e.to_string())))?;
            federation_relationships.push(relationship_to_proto(
                rel,
                bundle.as_ref(),
                req.output_mask.as_ref(),
            ));
        }
        Ok(Response::new(pb::ListFederationRelationshipsResponse {
            federation_relationships,
            next_page_token,
        }))
    }

    async fn get_federation_relationship(
        &self,
        request: Request<pb::GetFederationRelationshipRequest>,
    ) -> Result<Response<types::FederationRelationship>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let req = request.into_inner();
        let td = parse_trust_domain(&req.trust_domain).map_err(|e| {
            rpc_error(
                Code::InvalidArgument,
                "failed to parse trust domain",
                Some(&e.to_string()),
            )
        })?;
        const FAILED: &str = "failed to fetch federation relationship";
        let rel = self
            .state
            .ds
            .get_federation_relationship(&td)
            .await
            .map_err(|e| rpc_error(Code::Internal, FAILED, Some(&ds_reason(&e))))?
            .ok_or_else(|| Status::not_found("federation relationship does not exist"))?;
        let bundle = self
            .bundle_for_output(&rel, req.output_mask.as_ref())
            .await
            .map_err(|e| rpc_error(Code::Internal, FAILED, Some(&e.to_string())))?;
        Ok(Response::new(relationship_to_proto(
            &rel,
            bundle.as_ref(),
            req.output_mask.as_ref(),
        )))
    }

    async fn batch_create_federation_relationship(
        &self,
        request: Request<pb::BatchCreateFederationRelationshipRequest>,
    ) -> Result<Response<pb::BatchCreateFederationRelationshipResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let req = request.into_inner();
        let mut results = Vec::with_capacity(req.federation_relationships.len());
        for f in &req.federation_relationships {
            let (status, federation_relationship) =
                self.create_one(f, req.output_mask.as_ref()).await;
            results.push(pb::batch_create_federation_relationship_response::Result {
                status: Some(status),
                federation_relationship,
            });
        }
        self.state.federation.trigger_reload();
        Ok(Response::new(
            pb::BatchCreateFederationRelationshipResponse { results },
        ))
    }

    async fn batch_update_federation_relationship(
        &self,
        request: Request<pb::BatchUpdateFederationRelationshipRequest>,
    ) -> Result<Response<pb::BatchUpdateFederationRelationshipResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let req = request.into_inner();
        let mut results = Vec::with_capacity(req.federation_relationships.len());
        for f in &req.federation_relationships {
            let (status, federation_relationship) = self
                .update_one(f, req.input_mask.as_ref(), req.output_mask.as_ref())
                .await;
            results.push(pb::batch_update_federation_relationship_response::Result {
                status: Some(status),
                federation_relationship,
            });
        }
        self.state.federation.trigger_reload();
        Ok(Response::new(
            pb::BatchUpdateFederationRelationshipResponse { results },
        ))
    }

    async fn batch_delete_federation_relationship(
        &self,
        request: Request<pb::BatchDeleteFederationRelationshipRequest>,
    ) -> Result<Response<pb::BatchDeleteFederationRelationshipResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let req = request.into_inner();
        let mut results = Vec::with_capacity(req.trust_domains.len());
        for name in &req.trust_domains {
            let (status, trust_domain) = self.delete_one(name).await;
            results.push(pb::batch_delete_federation_relationship_response::Result {
                status: Some(status),
                trust_domain,
            });
        }
        self.state.federation.trigger_reload();
        Ok(Response::new(
            pb::BatchDeleteFederationRelationshipResponse { results },
        ))
    }

    async fn refresh_bundle(
        &self,
        request: Request<pb::RefreshBundleRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let req = request.into_inner();
        let td = parse_trust_domain(&req.trust_domain).map_err(|e| {
            rpc_error(
                Code::InvalidArgument,
                "failed to parse trust domain",
                Some(&e.to_string()),
            )
        })?;
        match self.state.federation.refresh_bundle(&td).await {
            Ok(true) => Ok(Response::new(())),
            Ok(false) => Err(Status::not_found(format!(
                "no relationship with trust domain {}",
                go_quote(td.name())
            ))),
            Err(e) => Err(rpc_error(
                Code::Internal,
                "failed to refresh bundle",
                Some(&e.to_string()),
            )),
        }
    }
}

/// The parts of Go's `net/url.Parse` that decide whether SPIRE accepts a
/// bundle endpoint URL, with Go's error texts: control characters, the
/// scheme, the authority (user info, host characters, port) and percent
/// escapes.
mod go_url {
    /// What SPIRE looks at in a parsed URL.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) struct Parsed {
        /// Lowercased; empty when there is none.
        pub(super) scheme: String,
        /// Empty for opaque or authority-less URLs.
        pub(super) host: String,
        /// An `@` appeared in the authority.
        pub(super) has_user: bool,
    }

    /// Go's `*url.Error` for a parse: the URL and what is wrong with it.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("parse {}: {source}", super::go_quote(.url))]
    pub struct GoUrlError {
        /// The text parsed (without the fragment when the rest failed).
        pub url: String,
        /// What Go's parser reports.
        pub source: GoUrlSyntaxError,
    }

    /// The URL syntax errors of Go's `net/url`, with Go's texts.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[non_exhaustive]
    pub enum GoUrlSyntaxError {
        /// A byte below 0x20 or 0x7f.
        #[error("net/url: invalid control character in URL")]
        ControlCharacter,
        /// A relative URL whose first segment holds `:`.
        #[error("first path segment in URL cannot contain colon")]
        ColonInFirstSegment,
        /// User info with a character Go does not allow there.
        #[error("net/url: invalid userinfo")]
        InvalidUserinfo,
        /// A URL starting with `:`.
        #[error("missing protocol scheme")]
        MissingScheme,
        /// An IPv6 literal without its `]`.
        #[error("missing ']' in host")]
        MissingBracket,
        /// A port that is not all digits.
        #[error("invalid port {} after host", super::go_quote(.0))]
        InvalidPort(String),
        /// A `%` not followed by two hex digits, or one a host may not hold.
        #[error("invalid URL escape {}", super::go_quote(.0))]
        InvalidEscape(String),
        /// A host character Go does not allow.
        #[error("invalid character {} in host name", super::go_quote(.0))]
        InvalidHostCharacter(String),
    }

    /// `url.Parse(raw)`; the error reads like Go's `*url.Error`.
    pub(super) fn parse(raw: &str) -> Result<Parsed, GoUrlError> {
        let (without_fragment, fragment) = match raw.split_once('#') {
            Some((u, f)) => (u, Some(f)),
            None => (raw, None),
        };
        let parsed = parse_reference(without_fragment).map_err(|source| GoUrlError {
            url: without_fragment.to_owned(),
            source,
        })?;
        if let Some(f) = fragment {
            unescape(f, false).map_err(|source| GoUrlError {
                url: raw.to_owned(),
                source,
            })?;
        }
        Ok(parsed)
    }

    fn parse_reference(raw: &str) -> Result<Parsed, GoUrlSyntaxError> {
        if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(GoUrlSyntaxError::ControlCharacter);
        }
        let (scheme, rest) = split_scheme(raw)?;
        let mut parsed = Parsed {
            scheme: scheme.to_ascii_lowercase(),
            host: String::new(),
            has_user: false,
        };
        let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
        if !rest.starts_with('/') {
            if !parsed.scheme.is_empty() {
                // Opaque (`https:host`): no authority at all.
                return Ok(parsed);
            }
            let first_segment = rest.split('/').next().unwrap_or("");
            if first_segment.contains(':') {
                return Err(GoUrlSyntaxError::ColonInFirstSegment);
            }
        }
        let mut path = rest;
        if (!parsed.scheme.is_empty() || !rest.starts_with("///")) && rest.starts_with("//") {
            let authority_and_path = &rest[2..];
            let (authority, p) = match authority_and_path.find('/') {
                Some(i) => authority_and_path.split_at(i),
                None => (authority_and_path, ""),
            };
            path = p;
            let (user, host) = match authority.rfind('@') {
                Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
                None => (None, authority),
            };
            parsed.host = parse_host(host)?;
            if let Some(user) = user {
                if !user.bytes().all(valid_userinfo_byte) {
                    return Err(GoUrlSyntaxError::InvalidUserinfo);
                }
                parsed.has_user = true;
            }
        }
        unescape(path, false)?;
        Ok(parsed)
    }

    /// Go's `getScheme`.
    fn split_scheme(raw: &str) -> Result<(&str, &str), GoUrlSyntaxError> {
        for (i, b) in raw.bytes().enumerate() {
            match b {
                b'a'..=b'z' | b'A'..=b'Z' => {}
                b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
                b':' if i == 0 => return Err(GoUrlSyntaxError::MissingScheme),
                b':' => return Ok((&raw[..i], &raw[i + 1..])),
                _ => return Ok(("", raw)),
            }
        }
        Ok(("", raw))
    }

    /// Go's `parseHost`: an optional numeric port, then the host's own
    /// characters and escapes.
    fn parse_host(host: &str) -> Result<String, GoUrlSyntaxError> {
        let port = if host.starts_with('[') {
            let Some(i) = host.rfind(']') else {
                return Err(GoUrlSyntaxError::MissingBracket);
            };
            &host[i + 1..]
        } else {
            host.rfind(':').map_or("", |i| &host[i..])
        };
        let valid_port = port.is_empty()
            || port
                .strip_prefix(':')
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
        if !valid_port {
            return Err(GoUrlSyntaxError::InvalidPort(port.to_owned()));
        }
        unescape(host, true)?;
        Ok(host.to_owned())
    }

    /// Go's `unescape` check, in host mode or not: percent escapes must be
    /// two hex digits, and a host may hold only the characters Go allows.
    fn unescape(s: &str, host: bool) -> Result<(), GoUrlSyntaxError> {
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'%' {
                let escape = bytes
                    .get(i..i + 3)
                    .filter(|e| e[1].is_ascii_hexdigit() && e[2].is_ascii_hexdigit());
                let Some(escape) = escape else {
                    let end = (i + 3).min(bytes.len());
                    return Err(GoUrlSyntaxError::InvalidEscape(
                        String::from_utf8_lossy(&bytes[i..end]).into_owned(),
                    ));
                };
                // In a host only `%25` (or an escape of a byte >= 0x80) may
                // appear.
                if host && escape[1] < b'8' && escape != b"%25" {
                    return Err(GoUrlSyntaxError::InvalidEscape(
                        String::from_utf8_lossy(escape).into_owned(),
                    ));
                }
                i += 3;
                continue;
            }
            if host && b < 0x80 && !valid_host_byte(b) {
                return Err(GoUrlSyntaxError::InvalidHostCharacter(
                    char::from(b).to_string(),
                ));
            }
            i += 1;
        }
        Ok(())
    }

    fn valid_host_byte(b: u8) -> bool {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
                    | b'<'
                    | b'>'
                    | b'"'
                    | b'-'
                    | b'_'
                    | b'.'
                    | b'~'
            )
    }

    fn valid_userinfo_byte(b: u8) -> bool {
        b >= 0x80
            || b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b':'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
                    | b'@'
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web(td: &str, url: &str) -> types::FederationRelationship {
        types::FederationRelationship {
            trust_domain: td.into(),
            bundle_endpoint_url: url.into(),
            bundle_endpoint_profile: Some(ProtoProfile::HttpsWeb(types::HttpsWebProfile {})),
            trust_domain_bundle: None,
        }
    }

    fn convert_err(f: &types::FederationRelationship) -> String {
        relationship_from_proto(f).unwrap_err().to_string()
    }

    #[test]
    fn bundle_endpoint_urls_are_checked_like_spire() {
        let ok = |u: &str| check_bundle_endpoint_url(u).unwrap();
        assert_eq!(ok("https://example.org"), "https://example.org");
        assert_eq!(
            ok("HTTPS://example.org:8443/b?x#y"),
            "https://example.org:8443/b?x#y"
        );
        assert_eq!(ok("https://[::1]:8443/"), "https://[::1]:8443/");
        let err = |u: &str| check_bundle_endpoint_url(u).unwrap_err().to_string();
        assert_eq!(err(""), "bundle endpoint URL must use the https scheme");
        assert_eq!(
            err("http://example.org"),
            "bundle endpoint URL must use the https scheme"
        );
        assert_eq!(
            err("example.org/bundle"),
            "bundle endpoint URL must use the https scheme"
        );
        assert_eq!(
            err("https:///path"),
            "bundle endpoint URL must specify the host"
        );
        assert_eq!(
            err("https:example.org"),
            "bundle endpoint URL must specify the host"
        );
        assert_eq!(
            err("https://user:pw@example.org"),
            "bundle endpoint URL must not contain user info"
        );
        assert_eq!(
            err("://example.org"),
            "failed to parse bundle endpoint URL: parse \"://example.org\": missing protocol scheme"
        );
        assert_eq!(
            err("https://example.org:port"),
            "failed to parse bundle endpoint URL: parse \"https://example.org:port\": \
             invalid port \":port\" after host"
        );
        assert_eq!(
            err("https://exa mple.org"),
            "failed to parse bundle endpoint URL: parse \"https://exa mple.org\": \
             invalid character \" \" in host name"
        );
        assert_eq!(
            err("https://example.org/%zz"),
            "failed to parse bundle endpoint URL: parse \"https://example.org/%zz\": \
             invalid URL escape \"%zz\""
        );
        assert_eq!(
            err("https://example.org/\n"),
            "failed to parse bundle endpoint URL: parse \"https://example.org/\\n\": \
             net/url: invalid control character in URL"
        );
    }

    #[test]
    fn conversion_checks_trust_domain_then_url_then_profile() {
        assert_eq!(
            convert_err(&web("", "http://x")),
            "failed to parse trust domain: trust domain is missing"
        );
        assert_eq!(
            convert_err(&web("a.org", "http://x")),
            "bundle endpoint URL must use the https scheme"
        );
        let mut f = web("a.org", "https://a.org");
        f.bundle_endpoint_profile = None;
        assert_eq!(
            convert_err(&f),
            "unsupported bundle endpoint profile type: <nil>"
        );
        f.bundle_endpoint_profile = Some(ProtoProfile::HttpsSpiffe(types::HttpsspiffeProfile {
            endpoint_spiffe_id: String::new(),
        }));
        assert_eq!(
            convert_err(&f),
            "failed to parse endpoint SPIFFE ID: cannot be empty"
        );
    }

    #[test]
    fn a_bundle_must_belong_to_the_relationship_trust_domain() {
        let mut f = web("spiffe://a.org", "https://a.org");
        f.trust_domain_bundle = Some(types::Bundle {
            trust_domain: "b.org".into(),
            ..Default::default()
        });
        assert_eq!(
            convert_err(&f),
            "trust domain bundle (\"b.org\") must match the trust domain of the federation \
             relationship (\"a.org\")"
        );
        f.trust_domain_bundle = Some(types::Bundle {
            trust_domain: "Not Valid".into(),
            ..Default::default()
        });
        assert!(
            convert_err(&f).starts_with("failed to parse bundle: invalid trust domain: "),
            "{}",
            convert_err(&f)
        );
        f.trust_domain_bundle = Some(types::Bundle {
            trust_domain: "a.org".into(),
            x509_authorities: vec![types::X509Certificate {
                asn1: vec![1, 2, 3],
                tainted: false,
            }],
            ..Default::default()
        });
        assert!(
            convert_err(&f).starts_with("failed to parse bundle: unable to parse X.509 authority"),
            "{}",
            convert_err(&f)
        );
        f.trust_domain_bundle = Some(types::Bundle {
            trust_domain: "a.org".into(),
            refresh_hint: 30,
            ..Default::default()
        });
        let ok = relationship_from_proto(&f).unwrap();
        assert_eq!(ok.relationship.trust_domain.name(), "a.org");
        assert_eq!(ok.bundle.unwrap().refresh_hint_seconds, Some(30));
    }

    #[test]
    fn output_mask_clears_what_it_leaves_out() {
        let rel = FederationRelationship {
            trust_domain: TrustDomain::new("a.org").unwrap(),
            bundle_endpoint_url: "https://a.org".into(),
            profile: BundleEndpointProfile::HttpsSpiffe {
                endpoint_spiffe_id: SpiffeId::parse("spiffe://a.org/s").unwrap(),
            },
        };
        let bundle = Bundle::new(rel.trust_domain.clone());
        let full = relationship_to_proto(&rel, Some(&bundle), None);
        assert_eq!(full.bundle_endpoint_url, "https://a.org");
        assert_eq!(
            full.bundle_endpoint_profile,
            Some(ProtoProfile::HttpsSpiffe(types::HttpsspiffeProfile {
                endpoint_spiffe_id: "spiffe://a.org/s".into()
            }))
        );
        assert_eq!(full.trust_domain_bundle.unwrap().trust_domain, "a.org");
        let bare = relationship_to_proto(
            &rel,
            Some(&bundle),
            Some(&types::FederationRelationshipMask::default()),
        );
        assert_eq!(
            bare,
            types::FederationRelationship {
                trust_domain: "a.org".into(),
                ..Default::default()
            }
        );
    }
}
