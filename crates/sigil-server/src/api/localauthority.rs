//! `spire.api.server.localauthority.v1.LocalAuthority`: manual rotation of
//! the server's own X.509 and JWT authorities (prepare, activate, taint,
//! revoke), for administrators. The CA ([`crate::ca::CaManager`]) does the
//! work and refuses what SPIRE refuses; this module words each refusal with
//! SPIRE's code and message for the RPC at hand.
//!
//! sigil has no UpstreamAuthority plugins and no WIT-SVIDs yet, so the
//! WIT RPCs answer `Unimplemented`.

use std::sync::Arc;

use sigil_plugin::clock::unix;
use sigil_proto::spire::api::server::localauthority::v1 as pb;
use tonic::{Request, Response, Status};

use super::{ApiState, authenticate, require_admin};
use crate::ca::{AuthorityError, AuthorityState, AuthorityStates, CaError};

/// The local authority service.
#[derive(Debug, Clone)]
pub struct LocalAuthorityService {
    state: Arc<ApiState>,
}

impl LocalAuthorityService {
    /// Wraps the shared state.
    pub fn new(state: Arc<ApiState>) -> Self {
        LocalAuthorityService { state }
    }

    async fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        require_admin(&authenticate(&self.state, request).await?)
    }
}

/// The two kinds of local authority, for SPIRE's wording.
#[derive(Clone, Copy)]
enum Kind {
    X509,
    Jwt,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::X509 => "X.509",
            Kind::Jwt => "JWT",
        }
    }
}

fn state_proto(s: &AuthorityState) -> pb::AuthorityState {
    pb::AuthorityState {
        authority_id: s.authority_id.clone(),
        expires_at: unix(s.expires_at),
        upstream_authority_subject_key_id: s.upstream_authority_id.clone(),
    }
}

fn id_only(id: &str) -> pb::AuthorityState {
    pb::AuthorityState {
        authority_id: id.to_owned(),
        ..pb::AuthorityState::default()
    }
}

type StateParts = (
    Option<pb::AuthorityState>,
    Option<pb::AuthorityState>,
    Option<pb::AuthorityState>,
);

fn states_proto(s: &AuthorityStates) -> Result<StateParts, Status> {
    let active = s
        .active
        .as_ref()
        .ok_or_else(|| Status::unavailable("server is initializing"))?;
    if active.authority_id.is_empty() {
        return Err(Status::internal(
            "current slot does not contain authority ID",
        ));
    }
    Ok((
        Some(state_proto(active)),
        s.prepared.as_ref().map(state_proto),
        s.old.as_ref().map(state_proto),
    ))
}

fn prepare_status(kind: Kind, e: CaError) -> Status {
    match e {
        CaError::NoAuthority(_) => Status::unavailable("server is initializing"),
        other => Status::internal(format!(
            "failed to prepare {} authority: {other}",
            kind.name()
        )),
    }
}

fn activate_status(kind: Kind, e: AuthorityError) -> Status {
    match e {
        AuthorityError::MissingId => Status::invalid_argument("no authority ID provided"),
        AuthorityError::WrongStatus(_) => {
            Status::internal(format!("only Prepared authorities can be activated: {e}"))
        }
        AuthorityError::Ca(inner) => Status::internal(format!(
            "failed to activate {} authority: {inner}",
            kind.name()
        )),
        _ => Status::invalid_argument("unexpected authority ID"),
    }
}

fn taint_status(kind: Kind, e: AuthorityError) -> Status {
    let failed =
        |m: &str| Status::internal(format!("failed to taint {} authority: {m}", kind.name()));
    match e {
        AuthorityError::MissingId => Status::invalid_argument("no authority ID provided"),
        AuthorityError::IsActive => {
            Status::invalid_argument("unable to taint current local authority")
        }
        AuthorityError::WrongStatus(_) => {
            Status::invalid_argument(format!("only Old local authorities can be tainted: {e}"))
        }
        AuthorityError::NotInBundle => failed(match kind {
            Kind::X509 => "no ca found with provided subject key ID",
            Kind::Jwt => "no JWT Key found with provided key ID",
        }),
        AuthorityError::AlreadyTainted => failed(match kind {
            Kind::X509 => "root CA is already tainted",
            Kind::Jwt => "key is already tainted",
        }),
        AuthorityError::Ca(inner) => failed(&inner.to_string()),
        _ => Status::invalid_argument("unexpected authority ID"),
    }
}

fn revoke_status(kind: Kind, e: AuthorityError) -> Status {
    let invalid = |m: &str| Status::invalid_argument(format!("invalid authority ID: {m}"));
    let failed =
        |m: &str| Status::internal(format!("failed to revoke {} authority: {m}", kind.name()));
    match e {
        AuthorityError::MissingId => invalid("no authority ID provided"),
        AuthorityError::IsActive => invalid("unable to use current authority"),
        AuthorityError::IsPrepared => invalid("unable to use a prepared key"),
        AuthorityError::UnknownAuthority => {
            invalid("no JWT authority found with provided authority ID")
        }
        AuthorityError::NotNext | AuthorityError::WrongStatus(_) => {
            invalid("only Old local authority can be revoked")
        }
        AuthorityError::NotInBundle => failed(match kind {
            Kind::X509 => "no root CA found with provided subject key ID",
            Kind::Jwt => "no JWT Key found with provided key ID",
        }),
        AuthorityError::NotTainted => failed(match kind {
            Kind::X509 => "it is not possible to revoke an untainted root CA",
            Kind::Jwt => "it is not possible to revoke an untainted key",
        }),
        AuthorityError::AlreadyTainted => failed(&e.to_string()),
        AuthorityError::Ca(inner) => failed(&inner.to_string()),
    }
}

fn upstream_status(action: &str, e: crate::ca::UpstreamAuthorityError) -> Status {
    use crate::ca::UpstreamAuthorityError as E;
    match e {
        E::NotConfigured => Status::failed_precondition(e.to_string()),
        E::Invalid(reason) => Status::invalid_argument(match action {
            "taint" => format!("provided subject key id is not valid: {reason}"),
            _ => format!("invalid subject key ID: {reason}"),
        }),
        other => Status::internal(match action {
            "taint" => format!("failed to taint upstream authority: {other}"),
            _ => format!("failed to revoke X.509 upstream authority: {other}"),
        }),
    }
}

fn wit_unimplemented() -> Status {
    Status::unimplemented("WIT-SVIDs are not supported by sigil yet")
}

#[tonic::async_trait]
impl pb::local_authority_server::LocalAuthority for LocalAuthorityService {
    async fn get_jwt_authority_state(
        &self,
        request: Request<pb::GetJwtAuthorityStateRequest>,
    ) -> Result<Response<pb::GetJwtAuthorityStateResponse>, Status> {
        self.authorize(&request).await?;
        let (active, prepared, old) = states_proto(&self.state.ca.jwt_state().await)?;
        Ok(Response::new(pb::GetJwtAuthorityStateResponse {
            active,
            prepared,
            old,
        }))
    }

    async fn prepare_jwt_authority(
        &self,
        request: Request<pb::PrepareJwtAuthorityRequest>,
    ) -> Result<Response<pb::PrepareJwtAuthorityResponse>, Status> {
        self.authorize(&request).await?;
        let s = self
            .state
            .ca
            .prepare_jwt_now()
            .await
            .map_err(|e| prepare_status(Kind::Jwt, e))?;
        Ok(Response::new(pb::PrepareJwtAuthorityResponse {
            prepared_authority: Some(state_proto(&s)),
        }))
    }

    async fn activate_jwt_authority(
        &self,
        request: Request<pb::ActivateJwtAuthorityRequest>,
    ) -> Result<Response<pb::ActivateJwtAuthorityResponse>, Status> {
        self.authorize(&request).await?;
        let s = self
            .state
            .ca
            .activate_jwt(&request.get_ref().authority_id)
            .await
            .map_err(|e| activate_status(Kind::Jwt, e))?;
        Ok(Response::new(pb::ActivateJwtAuthorityResponse {
            activated_authority: Some(state_proto(&s)),
        }))
    }

    async fn taint_jwt_authority(
        &self,
        request: Request<pb::TaintJwtAuthorityRequest>,
    ) -> Result<Response<pb::TaintJwtAuthorityResponse>, Status> {
        self.authorize(&request).await?;
        let s = self
            .state
            .ca
            .taint_jwt(&request.get_ref().authority_id)
            .await
            .map_err(|e| taint_status(Kind::Jwt, e))?;
        Ok(Response::new(pb::TaintJwtAuthorityResponse {
            tainted_authority: Some(id_only(&s.authority_id)),
        }))
    }

    async fn revoke_jwt_authority(
        &self,
        request: Request<pb::RevokeJwtAuthorityRequest>,
    ) -> Result<Response<pb::RevokeJwtAuthorityResponse>, Status> {
        self.authorize(&request).await?;
        let s = self
            .state
            .ca
            .revoke_jwt(&request.get_ref().authority_id)
            .await
            .map_err(|e| revoke_status(Kind::Jwt, e))?;
        Ok(Response::new(pb::RevokeJwtAuthorityResponse {
            revoked_authority: Some(id_only(&s.authority_id)),
        }))
    }

    async fn get_x509_authority_state(
        &self,
        request: Request<pb::GetX509AuthorityStateRequest>,
    ) -> Result<Response<pb::GetX509AuthorityStateResponse>, Status> {
        self.authorize(&request).await?;
        let (active, prepared, old) = states_proto(&self.state.ca.x509_state().await)?;
        Ok(Response::new(pb::GetX509AuthorityStateResponse {
            active,
            prepared,
            old,
        }))
    }

    async fn prepare_x509_authority(
        &self,
        request: Request<pb::PrepareX509AuthorityRequest>,
    ) -> Result<Response<pb::PrepareX509AuthorityResponse>, Status> {
        self.authorize(&request).await?;
        let s = self
            .state
            .ca
            .prepare_x509_now()
            .await
            .map_err(|e| prepare_status(Kind::X509, e))?;
        Ok(Response::new(pb::PrepareX509AuthorityResponse {
            prepared_authority: Some(state_proto(&s)),
        }))
    }

    async fn activate_x509_authority(
        &self,
        request: Request<pb::ActivateX509AuthorityRequest>,
    ) -> Result<Response<pb::ActivateX509AuthorityResponse>, Status> {
        self.authorize(&request).await?;
        let s = self
            .state
            .ca
            .activate_x509(&request.get_ref().authority_id)
            .await
            .map_err(|e| activate_status(Kind::X509, e))?;
        Ok(Response::new(pb::ActivateX509AuthorityResponse {
            activated_authority: Some(state_proto(&s)),
        }))
    }

    async fn taint_x509_authority(
        &self,
        request: Request<pb::TaintX509AuthorityRequest>,
    ) -> Result<Response<pb::TaintX509AuthorityResponse>, Status> {
        self.authorize(&request).await?;
        let s = self
            .state
            .ca
            .taint_x509(&request.get_ref().authority_id)
            .await
            .map_err(|e| taint_status(Kind::X509, e))?;
        Ok(Response::new(pb::TaintX509AuthorityResponse {
            tainted_authority: Some(state_proto(&s)),
        }))
    }

    async fn taint_x509_upstream_authority(
        &self,
        request: Request<pb::TaintX509UpstreamAuthorityRequest>,
    ) -> Result<Response<pb::TaintX509UpstreamAuthorityResponse>, Status> {
        self.authorize(&request).await?;
        let skid = self
            .state
            .ca
            .taint_x509_upstream(&request.get_ref().subject_key_id)
            .await
            .map_err(|e| upstream_status("taint", e))?;
        Ok(Response::new(pb::TaintX509UpstreamAuthorityResponse {
            upstream_authority_subject_key_id: skid,
        }))
    }

    async fn revoke_x509_authority(
        &self,
        request: Request<pb::RevokeX509AuthorityRequest>,
    ) -> Result<Response<pb::RevokeX509AuthorityResponse>, Status> {
        self.authorize(&request).await?;
        let s = self
            .state
            .ca
            .revoke_x509(&request.get_ref().authority_id)
            .await
            .map_err(|e| revoke_status(Kind::X509, e))?;
        Ok(Response::new(pb::RevokeX509AuthorityResponse {
            revoked_authority: Some(id_only(&s.authority_id)),
        }))
    }

    async fn revoke_x509_upstream_authority(
        &self,
        request: Request<pb::RevokeX509UpstreamAuthorityRequest>,
    ) -> Result<Response<pb::RevokeX509UpstreamAuthorityResponse>, Status> {
        self.authorize(&request).await?;
        let skid = self
            .state
            .ca
            .revoke_x509_upstream(&request.get_ref().subject_key_id)
            .await
            .map_err(|e| upstream_status("revoke", e))?;
        Ok(Response::new(pb::RevokeX509UpstreamAuthorityResponse {
            upstream_authority_subject_key_id: skid,
        }))
    }

    async fn get_wit_authority_state(
        &self,
        request: Request<pb::GetWitAuthorityStateRequest>,
    ) -> Result<Response<pb::GetWitAuthorityStateResponse>, Status> {
        self.authorize(&request).await?;
        Err(wit_unimplemented())
    }

    async fn prepare_wit_authority(
        &self,
        request: Request<pb::PrepareWitAuthorityRequest>,
    ) -> Result<Response<pb::PrepareWitAuthorityResponse>, Status> {
        self.authorize(&request).await?;
        Err(wit_unimplemented())
    }

    async fn activate_wit_authority(
        &self,
        request: Request<pb::ActivateWitAuthorityRequest>,
    ) -> Result<Response<pb::ActivateWitAuthorityResponse>, Status> {
        self.authorize(&request).await?;
        Err(wit_unimplemented())
    }

    async fn taint_wit_authority(
        &self,
        request: Request<pb::TaintWitAuthorityRequest>,
    ) -> Result<Response<pb::TaintWitAuthorityResponse>, Status> {
        self.authorize(&request).await?;
        Err(wit_unimplemented())
    }

    async fn revoke_wit_authority(
        &self,
        request: Request<pb::RevokeWitAuthorityRequest>,
    ) -> Result<Response<pb::RevokeWitAuthorityResponse>, Status> {
        self.authorize(&request).await?;
        Err(wit_unimplemented())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::SlotStatus;

    #[test]
    fn refusals_use_spire_codes_and_messages() {
        let s = activate_status(Kind::X509, AuthorityError::WrongStatus(SlotStatus::Old));
        assert_eq!(s.code(), tonic::Code::Internal);
        assert_eq!(
            s.message(),
            "only Prepared authorities can be activated: unsupported local authority status: OLD"
        );
        let s = taint_status(Kind::Jwt, AuthorityError::WrongStatus(SlotStatus::Prepared));
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "only Old local authorities can be tainted: unsupported local authority status: PREPARED"
        );
        let s = revoke_status(Kind::X509, AuthorityError::NotTainted);
        assert_eq!(s.code(), tonic::Code::Internal);
        assert_eq!(
            s.message(),
            "failed to revoke X.509 authority: it is not possible to revoke an untainted root CA"
        );
        let s = revoke_status(Kind::Jwt, AuthorityError::IsPrepared);
        assert_eq!(
            s.message(),
            "invalid authority ID: unable to use a prepared key"
        );
    }
}
