//! Why an SDS call failed, and the one place those reasons become gRPC
//! statuses. Codes and messages are SPIRE's, since operators read them in
//! Envoy's logs.

use tonic::Status;

use crate::workload::WorkloadError;

/// A failed SDS call, or a stream ended by a failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdsError {
    /// Attestation, readiness, rate limit or shutdown: the same reasons
    /// and statuses as the Workload API.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// Requested resource names that stand for nothing this caller may
    /// have, sorted.
    #[error("workload is not authorized for the requested identities {}", go_quoted(.0))]
    NotAuthorized(Vec<String>),
    /// The all-bundles name was asked for while validation contexts are
    /// plain trusted CAs (SPIFFE certificate validation disabled, or an
    /// Envoy older than 1.18): only the SPIFFE validator can hold several
    /// trust domains.
    #[error("unable to use \"SPIFFE validator\" on Envoy below 1.17")]
    AllBundlesNeedSpiffeValidator,
}

impl From<SdsError> for Status {
    fn from(e: SdsError) -> Status {
        match e {
            SdsError::Workload(e) => e.into(),
            SdsError::NotAuthorized(_) => Status::invalid_argument(e.to_string()),
            SdsError::AllBundlesNeedSpiffeValidator => Status::internal(e.to_string()),
        }
    }
}

/// A list of strings as Go's `%q` prints a `[]string`: `["a" "b"]`.
fn go_quoted(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    format!("[{}]", quoted.join(" "))
}
