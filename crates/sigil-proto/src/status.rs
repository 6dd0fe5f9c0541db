//! SPIRE's `PermissionDeniedDetails` carried in a gRPC status. SPIRE servers
//! tell agents why they are refused this way (`grpc-status-details-bin`, a
//! `google.rpc.Status` with an `Any` detail); agents shut down when banned
//! and re-attest for the other reasons.

use prost::Message;

use crate::spire::api::types::PermissionDeniedDetails;
pub use crate::spire::api::types::permission_denied_details::Reason;

const DETAILS_TYPE_URL: &str = "type.googleapis.com/spire.api.types.PermissionDeniedDetails";

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// A PermissionDenied status carrying `reason`.
pub fn permission_denied(reason: Reason, message: impl Into<String>) -> tonic::Status {
    let message = message.into();
    let envelope = RpcStatus {
        code: tonic::Code::PermissionDenied as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: DETAILS_TYPE_URL.into(),
            value: PermissionDeniedDetails {
                reason: reason as i32,
            }
            .encode_to_vec(),
        }],
    };
    tonic::Status::with_details(
        tonic::Code::PermissionDenied,
        message,
        envelope.encode_to_vec().into(),
    )
}

/// The reason of a PermissionDenied status, if it carries one.
pub fn permission_denied_reason(status: &tonic::Status) -> Option<Reason> {
    if status.code() != tonic::Code::PermissionDenied {
        return None;
    }
    let envelope = RpcStatus::decode(status.details()).ok()?;
    envelope
        .details
        .iter()
        .filter(|d| d.type_url == DETAILS_TYPE_URL)
        .find_map(|d| PermissionDeniedDetails::decode(d.value.as_slice()).ok())
        .and_then(|d| Reason::try_from(d.reason).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_round_trips_through_the_status_details() {
        let s = permission_denied(Reason::AgentBanned, "agent \"x\" is banned");
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert_eq!(permission_denied_reason(&s), Some(Reason::AgentBanned));
        assert_eq!(
            permission_denied_reason(&tonic::Status::permission_denied("x")),
            None
        );
        assert_eq!(
            permission_denied_reason(&tonic::Status::internal("x")),
            None
        );
    }
}
