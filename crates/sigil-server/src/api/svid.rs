//! `spire.api.server.svid.v1.SVID`: X509-SVIDs and JWT-SVIDs for agents'
//! authorized entries, and minting for admins. An agent can only obtain an
//! SVID for an entry it is authorized for; the SPIFFE ID comes from the
//! entry, never from the CSR.

use std::sync::Arc;
use std::time::Duration;

use sigil_proto::spire::api::server::svid::v1 as pb;
use sigil_proto::spire::api::types;
use tonic::{Request, Response, Status};

use super::authorized::authorized_entry;
use super::convert::{id_to_proto, workload_id_from_proto};
use super::limits::{Limit, MAX_X509_SVID_BATCH, check_batch};
use super::{
    ApiState, authenticate, ca_status, require_admin, require_agent, status_from, status_ok,
};

/// The SVID service.
#[derive(Debug, Clone)]
pub struct SvidService {
    state: Arc<ApiState>,
}

impl SvidService {
    /// Wraps the shared state.
    pub fn new(state: Arc<ApiState>) -> Self {
        SvidService { state }
    }

    fn x509_ttl(&self, entry_ttl: i32) -> Duration {
        if entry_ttl > 0 {
            Duration::from_secs(u64::from(entry_ttl.unsigned_abs()))
        } else {
            self.state.default_x509_svid_ttl
        }
    }

    fn jwt_ttl(&self, entry_ttl: i32) -> Duration {
        if entry_ttl > 0 {
            Duration::from_secs(u64::from(entry_ttl.unsigned_abs()))
        } else {
            self.state.default_jwt_svid_ttl
        }
    }

    async fn new_x509(
        &self,
        entry: &sigil_datastore::RegistrationEntry,
        csr: &[u8],
    ) -> Result<types::X509svid, Status> {
        if csr.is_empty() {
            return Err(Status::invalid_argument("missing CSR"));
        }
        let parsed = sigil_crypto::csr::parse_and_verify_csr(csr)
            .map_err(|e| Status::invalid_argument(format!("malformed CSR: {e}")))?;
        let (chain, not_after) = self
            .state
            .ca
            .sign_x509_svid(
                &entry.spiffe_id,
                &parsed.public_key_der,
                self.x509_ttl(entry.x509_svid_ttl),
                &entry.dns_names,
            )
            .await
            .map_err(ca_status)?;
        Ok(types::X509svid {
            cert_chain: chain,
            id: Some(id_to_proto(&entry.spiffe_id)),
            expires_at: sigil_plugin::clock::unix(not_after),
            hint: entry.hint.clone(),
        })
    }
}

fn validate_audience(audience: &[String]) -> Result<(), Status> {
    if audience.is_empty() {
        return Err(Status::invalid_argument(
            "at least one audience is required",
        ));
    }
    if audience.iter().any(|a| a.is_empty()) {
        return Err(Status::invalid_argument("audience must not be empty"));
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::svid_server::Svid for SvidService {
    async fn mint_x509svid(
        &self,
        request: Request<pb::MintX509svidRequest>,
    ) -> Result<Response<pb::MintX509svidResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let r = request.into_inner();
        if r.csr.is_empty() {
            return Err(Status::invalid_argument("missing CSR"));
        }
        let csr = sigil_crypto::csr::parse_and_verify_csr(&r.csr)
            .map_err(|e| Status::invalid_argument(format!("malformed CSR: {e}")))?;
        let uri = match csr.uri_sans.as_slice() {
            [one] => one.clone(),
            [] => return Err(Status::invalid_argument("CSR URI SAN is required")),
            _ => return Err(Status::invalid_argument("only one URI SAN is expected")),
        };
        let id = sigil_spiffe::SpiffeId::parse(&uri)
            .map_err(|e| Status::invalid_argument(format!("CSR URI SAN is invalid: {e}")))?;
        let id = workload_id_from_proto(&self.state.td, Some(&id_to_proto(&id)))
            .map_err(|e| Status::invalid_argument(format!("CSR URI SAN is invalid: {e}")))?;
        for n in &csr.dns_names {
            super::convert::validate_dns_name(n).map_err(Status::invalid_argument)?;
        }
        if r.ttl < 0 {
            return Err(Status::invalid_argument("ttl must not be negative"));
        }
        let (chain, not_after) = self
            .state
            .ca
            .sign_x509_svid(
                &id,
                &csr.public_key_der,
                self.x509_ttl(r.ttl),
                &csr.dns_names,
            )
            .await
            .map_err(ca_status)?;
        Ok(Response::new(pb::MintX509svidResponse {
            svid: Some(types::X509svid {
                cert_chain: chain,
                id: Some(id_to_proto(&id)),
                expires_at: sigil_plugin::clock::unix(not_after),
                hint: String::new(),
            }),
        }))
    }

    async fn mint_jwtsvid(
        &self,
        request: Request<pb::MintJwtsvidRequest>,
    ) -> Result<Response<pb::MintJwtsvidResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let r = request.into_inner();
        let id = workload_id_from_proto(&self.state.td, r.id.as_ref())
            .map_err(|e| Status::invalid_argument(format!("invalid SPIFFE ID: {e}")))?;
        validate_audience(&r.audience)?;
        if r.ttl < 0 {
            return Err(Status::invalid_argument("ttl must not be negative"));
        }
        let (token, iat, exp) = self
            .state
            .ca
            .sign_jwt_svid(&id, &r.audience, self.jwt_ttl(r.ttl))
            .await
            .map_err(ca_status)?;
        Ok(Response::new(pb::MintJwtsvidResponse {
            svid: Some(types::Jwtsvid {
                token,
                id: Some(id_to_proto(&id)),
                expires_at: sigil_plugin::clock::unix(exp),
                issued_at: sigil_plugin::clock::unix(iat),
                hint: String::new(),
            }),
        }))
    }

    async fn mint_witsvid(
        &self,
        _request: Request<pb::MintWitsvidRequest>,
    ) -> Result<Response<pb::MintWitsvidResponse>, Status> {
        Err(Status::unimplemented(
            "WIT-SVIDs are not supported by sigil yet",
        ))
    }

    async fn batch_new_x509svid(
        &self,
        request: Request<pb::BatchNewX509svidRequest>,
    ) -> Result<Response<pb::BatchNewX509svidResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        let agent = require_agent(&caller)?.clone();
        if request.get_ref().params.is_empty() {
            return Err(Status::invalid_argument("missing parameters"));
        }
        let n = request.get_ref().params.len();
        self.state.limits.check(Limit::Signing, &request, n).await?;
        check_batch(n, MAX_X509_SVID_BATCH, "X509-SVID parameters")?;
        let r = request.into_inner();
        let mut results = Vec::with_capacity(r.params.len());
        for p in r.params {
            let entry = authorized_entry(&self.state, &agent, &p.entry_id);
            let result = match entry.as_deref() {
                None if p.entry_id.is_empty() => Err(Status::invalid_argument("missing entry ID")),
                None => Err(Status::not_found("entry not found or not authorized")),
                Some(entry) => self.new_x509(entry, &p.csr).await,
            };
            results.push(match result {
                Ok(svid) => pb::batch_new_x509svid_response::Result {
                    status: Some(status_ok()),
                    svid: Some(svid),
                },
                Err(status) => {
                    tracing::warn!(agent_id = %agent.spiffe_id, entry_id = %p.entry_id, error = %status.message(), "X509-SVID not issued");
                    pb::batch_new_x509svid_response::Result {
                        status: Some(status_from(&status)),
                        svid: None,
                    }
                }
            });
        }
        Ok(Response::new(pb::BatchNewX509svidResponse { results }))
    }

    async fn new_jwtsvid(
        &self,
        request: Request<pb::NewJwtsvidRequest>,
    ) -> Result<Response<pb::NewJwtsvidResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        let agent = require_agent(&caller)?.clone();
        self.state
            .limits
            .check(Limit::JwtSigning, &request, 1)
            .await?;
        let r = request.into_inner();
        validate_audience(&r.audience)?;
        if r.entry_id.is_empty() {
            return Err(Status::invalid_argument("missing entry ID"));
        }
        let entry = authorized_entry(&self.state, &agent, &r.entry_id)
            .ok_or_else(|| Status::not_found("entry not found or not authorized"))?;
        let (token, iat, exp) = self
            .state
            .ca
            .sign_jwt_svid(
                &entry.spiffe_id,
                &r.audience,
                self.jwt_ttl(entry.jwt_svid_ttl),
            )
            .await
            .map_err(ca_status)?;
        Ok(Response::new(pb::NewJwtsvidResponse {
            svid: Some(types::Jwtsvid {
                token,
                id: Some(id_to_proto(&entry.spiffe_id)),
                expires_at: sigil_plugin::clock::unix(exp),
                issued_at: sigil_plugin::clock::unix(iat),
                hint: entry.hint.clone(),
            }),
        }))
    }

    async fn batch_new_witsvid(
        &self,
        _request: Request<pb::BatchNewWitsvidRequest>,
    ) -> Result<Response<pb::BatchNewWitsvidResponse>, Status> {
        Err(Status::unimplemented(
            "WIT-SVIDs are not supported by sigil yet",
        ))
    }

    async fn new_downstream_x509ca(
        &self,
        request: Request<pb::NewDownstreamX509caRequest>,
    ) -> Result<Response<pb::NewDownstreamX509caResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        let super::Caller::Downstream(id) = &caller else {
            return Err(Status::permission_denied(format!(
                "{} is not a downstream workload",
                caller.describe()
            )));
        };
        self.state.limits.check(Limit::Signing, &request, 1).await?;
        let r = request.into_inner();
        if r.csr.is_empty() {
            return Err(Status::invalid_argument("missing CSR"));
        }
        let csr = sigil_crypto::csr::parse_and_verify_csr(&r.csr)
            .map_err(|e| Status::invalid_argument(format!("malformed CSR: {e}")))?;
        if r.preferred_ttl < 0 {
            return Err(Status::invalid_argument(
                "preferred_ttl must not be negative",
            ));
        }
        let ttl = Duration::from_secs(u64::from(r.preferred_ttl.unsigned_abs()));
        let chain = self
            .state
            .ca
            .sign_downstream_x509_ca(&csr.public_key_der, ttl)
            .await
            .map_err(|e| Status::internal(format!("failed to sign downstream X.509 CA: {e}")))?;
        tracing::info!(caller = %id, "Signed downstream X509 CA");
        Ok(Response::new(pb::NewDownstreamX509caResponse {
            ca_cert_chain: chain,
            x509_authorities: self.state.ca.bundle().x509_authorities.clone(),
        }))
    }
}
