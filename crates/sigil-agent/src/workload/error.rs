//! Why a Workload API call failed, and the one place those reasons become
//! gRPC statuses. Codes and messages follow SPIRE's agent, since SPIFFE
//! client libraries and operators' scripts react to them.

use sigil_spiffe::IdError;
use tonic::Status;

use crate::attestor::AttestError;
use crate::cache::JwtError;

/// A failed Workload API call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    /// The request lacks `workload.spiffe.io: true`.
    #[error("security header missing from request")]
    MissingSecurityHeader,
    /// The connection carries no peer credentials (the service is not
    /// being served through [`crate::uds::UdsIncoming`]).
    #[error(
        "caller credentials are unavailable; the Workload API must be served on the agent's Unix socket"
    )]
    NoPeerCredentials,
    /// The caller could not be attested; the details are logged, not sent.
    #[error("workload attestation failed")]
    Attestation(#[source] AttestError),
    /// The agent has nothing to serve yet (it has not attested to the server).
    #[error("the agent is not ready to serve SVIDs yet (node attestation has not completed)")]
    NotReady,
    /// The agent is shutting down and will publish no more updates.
    #[error("the agent is shutting down")]
    ShuttingDown,
    /// No registration entry matches the caller.
    #[error("no identity issued")]
    NoIdentity,
    /// `audience` is empty.
    #[error("audience must be specified")]
    MissingAudience,
    /// `svid` is empty.
    #[error("svid must be specified")]
    MissingSvid,
    /// The requested `spiffe_id` is not a SPIFFE ID.
    #[error("invalid requested SPIFFE ID: {0}")]
    InvalidRequestedId(#[source] IdError),
    /// The manager could not produce a JWT-SVID.
    #[error("could not fetch JWT-SVID: {0}")]
    JwtFetch(#[source] JwtError),
    /// A token given for validation is not a valid JWT-SVID.
    #[error("{0}")]
    InvalidToken(String),
    /// WIT-SVIDs are not served yet.
    #[error("WIT-SVIDs are not supported by sigil yet")]
    WitUnsupported,
    /// The caller is over its rate limit for this method (its full gRPC
    /// name).
    #[error("rate limit exceeded for {0}")]
    RateLimited(&'static str),
}

impl From<WorkloadError> for Status {
    fn from(e: WorkloadError) -> Status {
        let message = e.to_string();
        match e {
            WorkloadError::MissingSecurityHeader
            | WorkloadError::MissingAudience
            | WorkloadError::MissingSvid
            | WorkloadError::InvalidRequestedId(_)
            | WorkloadError::InvalidToken(_) => Status::invalid_argument(message),
            WorkloadError::NoPeerCredentials => Status::internal(message),
            WorkloadError::Attestation(_)
            | WorkloadError::NotReady
            | WorkloadError::ShuttingDown
            | WorkloadError::JwtFetch(_)
            | WorkloadError::RateLimited(_) => Status::unavailable(message),
            WorkloadError::NoIdentity => Status::permission_denied(message),
            WorkloadError::WitUnsupported => Status::unimplemented(message),
        }
    }
}
