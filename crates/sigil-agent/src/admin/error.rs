//! Why an admin API call failed, and the one place those reasons become
//! gRPC statuses. Codes and messages are SPIRE's agent's, since its CLI and
//! delegates (Cilium, for one) react to them.

use tonic::Status;

use crate::attestor::AttestError;
use crate::cache::JwtError;

/// A failed admin API call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The connection carries no peer credentials (the service is not
    /// being served through [`crate::uds::UdsIncoming`]).
    #[error(
        "caller credentials are unavailable; the admin API must be served on the agent's Unix socket"
    )]
    NoPeerCredentials,
    /// The caller, or the process a delegate named by PID, could not be
    /// attested; the details are logged, not sent.
    #[error("workload attestation failed")]
    Attestation(#[source] AttestError),
    /// The agent has nothing to serve yet.
    #[error("the agent is not ready to serve SVIDs yet (node attestation has not completed)")]
    NotReady,
    /// No registration entry matches the caller (or the named workload).
    #[error("no identity issued")]
    NoIdentity,
    /// The caller has identities, none of them in `authorized_delegates`.
    #[error("caller not configured as an authorized delegate")]
    NotAuthorizedDelegate,
    /// A delegated-identity request named neither or both of selectors and
    /// a PID.
    #[error("must provide either selectors or non-zero PID, but not both")]
    SelectorsOrPid,
    /// A selector in the request is malformed.
    #[error("could not parse provided selectors")]
    BadSelectors,
    /// `audience` is empty.
    #[error("audience must be specified")]
    MissingAudience,
    /// The manager could not produce a JWT-SVID.
    #[error("could not fetch JWT-SVID: {0}")]
    JwtFetch(#[source] JwtError),
    /// The agent SVID does not chain to the trust bundle.
    #[error("failed to verify agent SVID: {0}")]
    AgentSvidUnverified(String),
    /// A number does not fit the response's field (SPIRE's wording).
    #[error("{0}")]
    OutOfRange(String),
    /// `SetLogLevel` with `UNSPECIFIED`.
    #[error("newLevel value cannot be LogLevel_UNSPECIFIED")]
    LogLevelUnspecified,
    /// `SetLogLevel` with a value outside the enum.
    #[error("unsupported log level")]
    UnsupportedLogLevel,
    /// The process has no log level control (logging was not set up with
    /// `sigil_cli::init_logging`).
    #[error("the agent's logging is not set up; the log level cannot be changed")]
    LoggingNotSetUp,
}

impl From<AdminError> for Status {
    fn from(e: AdminError) -> Status {
        let message = e.to_string();
        match e {
            AdminError::SelectorsOrPid
            | AdminError::BadSelectors
            | AdminError::MissingAudience
            | AdminError::LogLevelUnspecified
            | AdminError::UnsupportedLogLevel => Status::invalid_argument(message),
            AdminError::NoIdentity | AdminError::NotAuthorizedDelegate => {
                Status::permission_denied(message)
            }
            AdminError::Attestation(_) | AdminError::NotReady | AdminError::JwtFetch(_) => {
                Status::unavailable(message)
            }
            AdminError::NoPeerCredentials
            | AdminError::AgentSvidUnverified(_)
            | AdminError::LoggingNotSetUp => Status::internal(message),
            // SPIRE returns these as plain Go errors, which gRPC sends as
            // Unknown.
            AdminError::OutOfRange(_) => Status::unknown(message),
        }
    }
}
