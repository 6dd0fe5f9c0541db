//! `spire.api.server.bundle.v1.Bundle`: our trust bundle (read, append,
//! JWT authorities published by downstream servers) and the bundles of
//! federated trust domains (create, update, set, delete, list).
//!
//! Our own bundle belongs to the CA ([`crate::ca::CaManager`]): every change
//! to it goes through the CA so its cache, its taints and its subscribers
//! stay right. Federated bundles are stored in the datastore in the same
//! encoding, under their trust domain; this module never writes our own
//! trust domain's record directly. Authorization, validation order, codes
//! and messages follow SPIRE's bundle service.

use std::sync::Arc;

use sigil_datastore::DataStoreError;
use sigil_datastore::{EntryMask, ListEntriesRequest, MatchMode, RegistrationEntry, StoredBundle};
use sigil_proto::spire::api::server::bundle::v1 as pb;
use sigil_proto::spire::api::types;
use sigil_spiffe::jwk::JwkError;
use sigil_spiffe::{Bundle, IdError, JwtAuthority, TrustDomain};
use tonic::{Code, Request, Response, Status};

use super::convert::bundle_to_proto;
use super::{ApiState, Caller, authenticate, ds_status, require_admin, status_from, status_ok};
use crate::ca::{CaError, Taints, decode_bundle, encode_bundle};

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

/// A wire bundle from ours, with tainted authorities flagged.
pub fn bundle_to_proto_with_taints(b: &Bundle, taints: &Taints) -> types::Bundle {
    let mut out = bundle_to_proto(b);
    for a in &mut out.x509_authorities {
        a.tainted = taints.is_x509_tainted(&a.asn1);
    }
    for a in &mut out.jwt_authorities {
        a.tainted = taints.is_jwt_tainted(&a.key_id);
    }
    out
}

/// Clears the fields `mask` leaves out (all are kept without a mask); the
/// trust domain is always kept, as in SPIRE.
pub fn apply_bundle_mask(b: &mut types::Bundle, mask: Option<&types::BundleMask>) {
    let Some(m) = mask else { return };
    if !m.refresh_hint {
        b.refresh_hint = 0;
    }
    if !m.sequence_number {
        b.sequence_number = 0;
    }
    if !m.x509_authorities {
        b.x509_authorities.clear();
    }
    if !m.jwt_authorities {
        b.jwt_authorities.clear();
    }
    if !m.wit_authorities {
        b.wit_authorities.clear();
    }
}

/// Why a wire trust domain, authority or bundle is not acceptable. The texts
/// are SPIRE's: they reach clients inside `InvalidArgument` statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleProtoError {
    /// An empty trust domain argument.
    #[error("trust domain is missing")]
    MissingTrustDomain,
    /// A trust domain argument that does not parse.
    #[error(transparent)]
    InvalidTrustDomain(#[from] IdError),
    /// An X.509 authority that is not a DER certificate.
    #[error("x509: malformed certificate: {0}")]
    MalformedCertificate(String),
    /// An X.509 authority with bytes after the certificate.
    #[error("x509: malformed certificate: {0} trailing bytes")]
    CertificateTrailingBytes(usize),
    /// A JWT authority whose key is not a PKIX public key sigil can publish.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(#[source] JwkError),
    /// A JWT authority without a key ID.
    #[error("missing key ID")]
    MissingKeyId,
    /// A bundle's X.509 authority is not acceptable.
    #[error("unable to parse X.509 authority: {0}")]
    X509Authority(Box<BundleProtoError>),
    /// A bundle's JWT authority is not acceptable.
    #[error("unable to parse JWT authority: {0}")]
    JwtAuthority(Box<BundleProtoError>),
    /// Two JWT authorities of one bundle share a key ID, which the bundle
    /// format cannot hold.
    #[error("unable to parse JWT authority: duplicate key ID {0:?}")]
    DuplicateKeyId(String),
}

/// Parses a trust domain argument as go-spiffe does (a name or a SPIFFE ID).
pub fn parse_trust_domain(s: &str) -> Result<TrustDomain, BundleProtoError> {
    if s.is_empty() {
        return Err(BundleProtoError::MissingTrustDomain);
    }
    Ok(TrustDomain::new(s)?)
}

/// Wire X.509 authorities: each must be one DER certificate.
pub fn x509_authorities_from_proto(
    certs: &[types::X509Certificate],
) -> Result<Vec<Vec<u8>>, BundleProtoError> {
    certs
        .iter()
        .map(|c| {
            let (rest, _) = x509_parser::parse_x509_certificate(&c.asn1)
                .map_err(|e| BundleProtoError::MalformedCertificate(e.to_string()))?;
            if !rest.is_empty() {
                return Err(BundleProtoError::CertificateTrailingBytes(rest.len()));
            }
            Ok(c.asn1.clone())
        })
        .collect()
}

/// Wire JWT authorities: a PKIX public key sigil can publish, and a key ID.
pub fn jwt_authorities_from_proto(
    keys: &[types::JwtKey],
) -> Result<Vec<JwtAuthority>, BundleProtoError> {
    keys.iter()
        .map(|k| {
            sigil_spiffe::jwk::JwkPublicKey::from_spki_der(&k.public_key)
                .map_err(BundleProtoError::InvalidPublicKey)?;
            if k.key_id.is_empty() {
                return Err(BundleProtoError::MissingKeyId);
            }
            Ok(JwtAuthority {
                key_id: k.key_id.clone(),
                public_key_der: k.public_key.clone(),
                expires_at: (k.expires_at != 0).then_some(k.expires_at),
            })
        })
        .collect()
}

/// A federated bundle from the wire (SPIRE's `ProtoToBundle`).
pub(crate) fn bundle_from_proto(
    td: &TrustDomain,
    b: &types::Bundle,
) -> Result<Bundle, BundleProtoError> {
    let x509 = x509_authorities_from_proto(&b.x509_authorities)
        .map_err(|e| BundleProtoError::X509Authority(Box::new(e)))?;
    let jwt = jwt_authorities_from_proto(&b.jwt_authorities)
        .map_err(|e| BundleProtoError::JwtAuthority(Box::new(e)))?;
    let mut bundle = Bundle::new(td.clone());
    for der in x509 {
        if !bundle.x509_authorities.contains(&der) {
            bundle.x509_authorities.push(der);
        }
    }
    for a in jwt {
        if bundle.find_jwt_authority(&a.key_id).is_some() {
            return Err(BundleProtoError::DuplicateKeyId(a.key_id));
        }
        bundle.jwt_authorities.push(a);
    }
    bundle.refresh_hint_seconds = (b.refresh_hint != 0).then_some(b.refresh_hint);
    bundle.sequence_number = b.sequence_number;
    Ok(bundle)
}

/// Why a federated bundle could not be written; the text is the inner
/// error's, which SPIRE appends to its own message.
#[derive(Debug, thiserror::Error)]
enum StoreBundleError {
    /// The bundle does not encode.
    #[error(transparent)]
    Encode(CaError),
    /// The datastore refused the write.
    #[error(transparent)]
    DataStore(DataStoreError),
}

fn invalid(msg: &str, err: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{msg}: {err}"))
}

/// A SPIRE batch status: `msg`, plus the inner error's message except for
/// NotFound (SPIRE's `MakeStatus`).
pub(crate) fn batch_status(code: Code, msg: &str, err: Option<&str>) -> types::Status {
    let message = match err {
        Some(e) if code != Code::NotFound => format!("{msg}: {e}"),
        _ => msg.to_owned(),
    };
    status_from(&Status::new(code, message))
}

/// Which federated-bundle operation a batch item is, for SPIRE's wording.
#[derive(Clone, Copy)]
enum Op {
    Create,
    Update,
    Set,
}

impl Op {
    fn own_td_message(self) -> &'static str {
        match self {
            Op::Create => {
                "creating a federated bundle for the server's own trust domain is not allowed"
            }
            Op::Update => {
                "updating a federated bundle for the server's own trust domain is not allowed"
            }
            Op::Set => {
                "setting a federated bundle for the server's own trust domain is not allowed"
            }
        }
    }
}

impl BundleService {
    fn own_bundle_proto(&self) -> types::Bundle {
        bundle_to_proto_with_taints(&self.state.ca.bundle(), &self.state.ca.bundle_taints())
    }

    async fn load_federated(&self, td: &TrustDomain) -> Result<Option<Bundle>, Status> {
        let stored = self
            .state
            .ds
            .get_bundle(td)
            .await
            .map_err(|e| Status::internal(format!("failed to fetch bundle: {e}")))?;
        match stored {
            None => Ok(None),
            Some(stored) => decode_bundle(td, &stored.data)
                .map(Some)
                .map_err(|e| Status::internal(format!("failed to convert bundle: {e}"))),
        }
    }

    async fn store_federated(&self, b: &Bundle) -> Result<(), StoreBundleError> {
        let data = encode_bundle(b).map_err(StoreBundleError::Encode)?;
        self.state
            .ds
            .set_bundle(StoredBundle {
                trust_domain: b.trust_domain.clone(),
                data,
            })
            .await
            .map_err(StoreBundleError::DataStore)
    }

    /// One item of BatchCreate/Update/Set.
    async fn write_federated(
        &self,
        op: Op,
        b: &types::Bundle,
        input_mask: Option<&types::BundleMask>,
        output_mask: Option<&types::BundleMask>,
    ) -> (types::Status, Option<types::Bundle>) {
        let td = match parse_trust_domain(&b.trust_domain) {
            Ok(td) => td,
            Err(e) => {
                return (
                    batch_status(
                        Code::InvalidArgument,
                        "trust domain argument is not valid",
                        Some(&e.to_string()),
                    ),
                    None,
                );
            }
        };
        if td == self.state.td {
            return (
                batch_status(Code::InvalidArgument, op.own_td_message(), None),
                None,
            );
        }
        let incoming = match bundle_from_proto(&td, b) {
            Ok(v) => v,
            Err(e) => {
                return (
                    batch_status(
                        Code::InvalidArgument,
                        "failed to convert bundle",
                        Some(&e.to_string()),
                    ),
                    None,
                );
            }
        };
        let existing = match self.load_federated(&td).await {
            Ok(v) => v,
            Err(s) => return (status_from(&s), None),
        };
        let stored = match (op, existing) {
            (Op::Create, Some(_)) => {
                return (
                    batch_status(Code::AlreadyExists, "bundle already exists", None),
                    None,
                );
            }
            (Op::Update, None) => {
                return (batch_status(Code::NotFound, "bundle not found", None), None);
            }
            (Op::Update, Some(mut cur)) => {
                let all = types::BundleMask {
                    x509_authorities: true,
                    jwt_authorities: true,
                    refresh_hint: true,
                    sequence_number: true,
                    wit_authorities: true,
                };
                let m = input_mask.unwrap_or(&all);
                if m.refresh_hint {
                    cur.refresh_hint_seconds = incoming.refresh_hint_seconds;
                }
                if m.x509_authorities {
                    cur.x509_authorities = incoming.x509_authorities;
                }
                if m.jwt_authorities {
                    cur.jwt_authorities = incoming.jwt_authorities;
                }
                if m.sequence_number {
                    cur.sequence_number = incoming.sequence_number;
                }
                cur
            }
            (Op::Create | Op::Set, _) => incoming,
        };
        if let Err(e) = self.store_federated(&stored).await {
            let msg = match op {
                Op::Create => "unable to create bundle",
                Op::Update => "failed to update bundle",
                Op::Set => "failed to set bundle",
            };
            return (
                batch_status(Code::Internal, msg, Some(&e.to_string())),
                None,
            );
        }
        tracing::info!(trust_domain = %td, "federated bundle written");
        let mut out = bundle_to_proto(&stored);
        apply_bundle_mask(&mut out, output_mask);
        (status_ok(), Some(out))
    }

    /// One item of BatchDelete.
    async fn delete_federated(&self, name: &str, mode: DeleteMode) -> types::Status {
        let td = match parse_trust_domain(name) {
            Ok(td) => td,
            Err(e) => {
                return batch_status(
                    Code::InvalidArgument,
                    "trust domain argument is not valid",
                    Some(&e.to_string()),
                );
            }
        };
        if td == self.state.td {
            return batch_status(
                Code::InvalidArgument,
                "removing the bundle for the server trust domain is not allowed",
                None,
            );
        }
        match self.state.ds.get_bundle(&td).await {
            Ok(Some(_)) => {}
            Ok(None) => return batch_status(Code::NotFound, "bundle not found", None),
            Err(e) => return status_from(&ds_status(e)),
        }
        if let Err(s) = self.release_entries(&td, mode).await {
            return batch_status(
                s.code(),
                "failed to delete federated bundle",
                Some(s.message()),
            );
        }
        match self.state.ds.delete_bundle(&td).await {
            Ok(()) => {
                tracing::info!(trust_domain = %td, mode = mode.name(), "federated bundle deleted");
                status_ok()
            }
            Err(sigil_datastore::DataStoreError::NotFound(_)) => {
                batch_status(Code::NotFound, "bundle not found", None)
            }
            Err(e) => {
                let s = ds_status(e);
                batch_status(
                    s.code(),
                    "failed to delete federated bundle",
                    Some(s.message()),
                )
            }
        }
    }

    /// What happens to entries federating with `td` before its bundle goes:
    /// RESTRICT refuses while there are any, DISSOCIATE drops `td` from
    /// them, DELETE deletes them.
    async fn release_entries(&self, td: &TrustDomain, mode: DeleteMode) -> Result<(), Status> {
        let req = ListEntriesRequest {
            by_federates_with: Some((vec![td.clone()], MatchMode::Any)),
            ..ListEntriesRequest::default()
        };
        let ds = &self.state.ds;
        if mode == DeleteMode::Restrict {
            let n = ds.count_entries(&req).await.map_err(ds_status)?;
            if n > 0 {
                return Err(Status::failed_precondition(format!(
                    "datastore-sql: cannot delete bundle; federated with {n} registration entries"
                )));
            }
            return Ok(());
        }
        let entries = ds.list_entries(&req).await.map_err(ds_status)?.entries;
        if entries.is_empty() {
            return Ok(());
        }
        for e in entries {
            match mode {
                DeleteMode::Delete => {
                    ds.delete_entry(&e.id).await.map_err(ds_status)?;
                }
                DeleteMode::Dissociate => {
                    let id = e.id.clone();
                    let updated = RegistrationEntry {
                        federates_with: e.federates_with.into_iter().filter(|t| t != td).collect(),
                        ..e
                    };
                    let mask = EntryMask {
                        federates_with: true,
                        ..EntryMask::default()
                    };
                    match ds.update_entry(updated, &mask).await {
                        Ok(_) | Err(sigil_datastore::DataStoreError::NotFound(_)) => {}
                        Err(err) => {
                            tracing::warn!(entry_id = %id, error = %err, "could not dissociate entry");
                            return Err(ds_status(err));
                        }
                    }
                }
                DeleteMode::Restrict => {}
            }
        }
        self.state.notify_changed();
        Ok(())
    }
}

/// A delete mode value outside the wire enum (SPIRE's message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unhandled delete mode \"{0}\"")]
struct UnknownDeleteMode(i32);

/// SPIRE's deletion modes for federated bundles still referenced by entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeleteMode {
    Restrict,
    Delete,
    Dissociate,
}

impl DeleteMode {
    fn from_proto(mode: i32) -> Result<Self, UnknownDeleteMode> {
        use pb::batch_delete_federated_bundle_request::Mode;
        match Mode::try_from(mode) {
            Ok(Mode::Restrict) => Ok(DeleteMode::Restrict),
            Ok(Mode::Delete) => Ok(DeleteMode::Delete),
            Ok(Mode::Dissociate) => Ok(DeleteMode::Dissociate),
            Err(_) => Err(UnknownDeleteMode(mode)),
        }
    }

    fn name(self) -> &'static str {
        match self {
            DeleteMode::Restrict => "RESTRICT",
            DeleteMode::Delete => "DELETE",
            DeleteMode::Dissociate => "DISSOCIATE",
        }
    }
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
            .map_err(|e| Status::internal(format!("failed to count bundles: {e}")))?
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
        let mut out = self.own_bundle_proto();
        apply_bundle_mask(&mut out, request.get_ref().output_mask.as_ref());
        Ok(Response::new(out))
    }

    async fn append_bundle(
        &self,
        request: Request<pb::AppendBundleRequest>,
    ) -> Result<Response<types::Bundle>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let req = request.into_inner();
        if req.jwt_authorities.is_empty() && req.x509_authorities.is_empty() {
            return Err(Status::invalid_argument("no authorities to append"));
        }
        let jwt = jwt_authorities_from_proto(&req.jwt_authorities)
            .map_err(|e| invalid("failed to convert JWT authority", e))?;
        let x509 = x509_authorities_from_proto(&req.x509_authorities)
            .map_err(|e| invalid("failed to convert X.509 authority", e))?;
        self.state
            .ca
            .append_to_bundle(x509, jwt)
            .await
            .map_err(|e| match e {
                CaError::ConflictingAuthority(m) => invalid("failed to convert JWT authority", m),
                other => Status::internal(format!("failed to append bundle: {other}")),
            })?;
        tracing::info!(caller = %caller.describe(), "authorities appended to the bundle");
        let mut out = self.own_bundle_proto();
        apply_bundle_mask(&mut out, req.output_mask.as_ref());
        Ok(Response::new(out))
    }

    async fn publish_jwt_authority(
        &self,
        request: Request<pb::PublishJwtAuthorityRequest>,
    ) -> Result<Response<pb::PublishJwtAuthorityResponse>, Status> {
        // SPIRE lets downstream servers publish their JWT keys. sigil has no
        // downstream servers yet, so only administrators may.
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        self.state
            .limits
            .check(super::limits::Limit::PushKey, &request, 1)
            .await?;
        let key = request
            .into_inner()
            .jwt_authority
            .ok_or_else(|| Status::invalid_argument("missing JWT authority"))?;
        let keys = jwt_authorities_from_proto(std::slice::from_ref(&key))
            .map_err(|e| invalid("invalid JWT authority", e))?;
        self.state
            .ca
            .append_to_bundle(Vec::new(), keys)
            .await
            .map_err(|e| Status::internal(format!("failed to publish JWT key: {e}")))?;
        if let Caller::Admin(id) = &caller {
            tracing::info!(caller = %id, kid = %key.key_id, "JWT authority published");
        }
        Ok(Response::new(pb::PublishJwtAuthorityResponse {
            jwt_authorities: self.own_bundle_proto().jwt_authorities,
        }))
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
        request: Request<pb::ListFederatedBundlesRequest>,
    ) -> Result<Response<pb::ListFederatedBundlesResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let req = request.into_inner();
        let all = self
            .state
            .ds
            .list_bundles()
            .await
            .map_err(|e| Status::internal(format!("failed to list bundles: {e}")))?;
        // Pages run over every stored bundle in trust domain order, ours
        // included, and ours is then left out, as SPIRE pages.
        let after: Vec<StoredBundle> = all
            .into_iter()
            .filter(|b| {
                req.page_token.is_empty() || b.trust_domain.name() > req.page_token.as_str()
            })
            .collect();
        let (page, more) = match usize::try_from(req.page_size) {
            Ok(n) if n > 0 => (after.iter().take(n).collect::<Vec<_>>(), after.len() > n),
            _ => (after.iter().collect(), false),
        };
        let next_page_token = match page.last() {
            Some(last) if more => last.trust_domain.name().to_owned(),
            _ => String::new(),
        };
        let mut bundles = Vec::new();
        for stored in page {
            if stored.trust_domain == self.state.td {
                continue;
            }
            let b = decode_bundle(&stored.trust_domain, &stored.data)
                .map_err(|e| Status::internal(format!("failed to convert bundle: {e}")))?;
            let mut out = bundle_to_proto(&b);
            apply_bundle_mask(&mut out, req.output_mask.as_ref());
            bundles.push(out);
        }
        Ok(Response::new(pb::ListFederatedBundlesResponse {
            bundles,
            next_page_token,
        }))
    }

    async fn get_federated_bundle(
        &self,
        request: Request<pb::GetFederatedBundleRequest>,
    ) -> Result<Response<types::Bundle>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        if !matches!(caller, Caller::Agent(_)) {
            require_admin(&caller)?;
        }
        let req = request.into_inner();
        let td = parse_trust_domain(&req.trust_domain)
            .map_err(|e| invalid("trust domain argument is not valid", e))?;
        if td == self.state.td {
            return Err(Status::invalid_argument(
                "getting a federated bundle for the server's own trust domain is not allowed",
            ));
        }
        let b = self
            .load_federated(&td)
            .await?
            .ok_or_else(|| Status::not_found("bundle not found"))?;
        let mut out = bundle_to_proto(&b);
        apply_bundle_mask(&mut out, req.output_mask.as_ref());
        Ok(Response::new(out))
    }

    async fn batch_create_federated_bundle(
        &self,
        request: Request<pb::BatchCreateFederatedBundleRequest>,
    ) -> Result<Response<pb::BatchCreateFederatedBundleResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let req = request.into_inner();
        let mut results = Vec::with_capacity(req.bundle.len());
        for b in &req.bundle {
            let (status, bundle) = self
                .write_federated(Op::Create, b, None, req.output_mask.as_ref())
                .await;
            results.push(pb::batch_create_federated_bundle_response::Result {
                status: Some(status),
                bundle,
            });
        }
        Ok(Response::new(pb::BatchCreateFederatedBundleResponse {
            results,
        }))
    }

    async fn batch_update_federated_bundle(
        &self,
        request: Request<pb::BatchUpdateFederatedBundleRequest>,
    ) -> Result<Response<pb::BatchUpdateFederatedBundleResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let req = request.into_inner();
        let mut results = Vec::with_capacity(req.bundle.len());
        for b in &req.bundle {
            let (status, bundle) = self
                .write_federated(
                    Op::Update,
                    b,
                    req.input_mask.as_ref(),
                    req.output_mask.as_ref(),
                )
                .await;
            results.push(pb::batch_update_federated_bundle_response::Result {
                status: Some(status),
                bundle,
            });
        }
        Ok(Response::new(pb::BatchUpdateFederatedBundleResponse {
            results,
        }))
    }

    async fn batch_set_federated_bundle(
        &self,
        request: Request<pb::BatchSetFederatedBundleRequest>,
    ) -> Result<Response<pb::BatchSetFederatedBundleResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let req = request.into_inner();
        let mut results = Vec::with_capacity(req.bundle.len());
        for b in &req.bundle {
            let (status, bundle) = self
                .write_federated(Op::Set, b, None, req.output_mask.as_ref())
                .await;
            results.push(pb::batch_set_federated_bundle_response::Result {
                status: Some(status),
                bundle,
            });
        }
        Ok(Response::new(pb::BatchSetFederatedBundleResponse {
            results,
        }))
    }

    async fn batch_delete_federated_bundle(
        &self,
        request: Request<pb::BatchDeleteFederatedBundleRequest>,
    ) -> Result<Response<pb::BatchDeleteFederatedBundleResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let req = request.into_inner();
        let mode = DeleteMode::from_proto(req.mode)
            .map_err(|e| invalid("failed to parse deletion mode", e))?;
        let mut results = Vec::with_capacity(req.trust_domains.len());
        for name in &req.trust_domains {
            let status = self.delete_federated(name, mode).await;
            results.push(pb::batch_delete_federated_bundle_response::Result {
                status: Some(status),
                trust_domain: name.clone(),
            });
        }
        Ok(Response::new(pb::BatchDeleteFederatedBundleResponse {
            results,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_clear_what_they_leave_out_and_keep_the_trust_domain() {
        let mut b = types::Bundle {
            trust_domain: "example.org".into(),
            x509_authorities: vec![types::X509Certificate {
                asn1: vec![1],
                tainted: false,
            }],
            jwt_authorities: vec![types::JwtKey::default()],
            refresh_hint: 5,
            sequence_number: 7,
            wit_authorities: vec![],
        };
        let full = b.clone();
        apply_bundle_mask(&mut b, None);
        assert_eq!(b, full);
        apply_bundle_mask(
            &mut b,
            Some(&types::BundleMask {
                sequence_number: true,
                ..Default::default()
            }),
        );
        assert_eq!(b.trust_domain, "example.org");
        assert_eq!(b.sequence_number, 7);
        assert_eq!(b.refresh_hint, 0);
        assert!(b.x509_authorities.is_empty() && b.jwt_authorities.is_empty());
    }

    #[test]
    fn trust_domain_arguments_parse_like_go_spiffe() {
        assert_eq!(
            parse_trust_domain("").unwrap_err().to_string(),
            "trust domain is missing"
        );
        assert_eq!(
            parse_trust_domain("spiffe://other.org").unwrap().name(),
            "other.org"
        );
        assert!(parse_trust_domain("Bad Domain").is_err());
    }

    #[test]
    fn jwt_authorities_need_a_valid_key_then_a_key_id() {
        let key =
            sigil_crypto::key::SoftwareKey::generate(sigil_crypto::key::KeyType::EcP256).unwrap();
        use sigil_crypto::key::Signer;
        let ok = types::JwtKey {
            public_key: key.public_key_der().to_vec(),
            key_id: "kid".into(),
            expires_at: 0,
            tainted: false,
        };
        let parsed = jwt_authorities_from_proto(std::slice::from_ref(&ok)).unwrap();
        assert_eq!(parsed[0].expires_at, None);
        let no_kid = types::JwtKey {
            key_id: String::new(),
            ..ok.clone()
        };
        assert_eq!(
            jwt_authorities_from_proto(&[no_kid])
                .unwrap_err()
                .to_string(),
            "missing key ID"
        );
        let bad_key = types::JwtKey {
            public_key: vec![1, 2, 3],
            key_id: String::new(),
            ..ok
        };
        assert!(
            jwt_authorities_from_proto(&[bad_key])
                .unwrap_err()
                .to_string()
                .starts_with("invalid public key")
        );
    }

    #[test]
    fn unknown_delete_modes_are_refused_like_spire() {
        assert_eq!(
            DeleteMode::from_proto(9).unwrap_err().to_string(),
            "unhandled delete mode \"9\""
        );
        assert_eq!(DeleteMode::from_proto(2).unwrap(), DeleteMode::Dissociate);
    }
}
