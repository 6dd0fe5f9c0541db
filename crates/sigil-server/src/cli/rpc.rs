//! How a failed call reads: SPIRE wraps most RPC errors with what it was
//! doing (`could not taint X.509 authority: rpc error: ...`). grpc-go dials
//! lazily, so an unreachable socket surfaces at the first RPC and gets the
//! same prefix; [`connect`] reproduces that.

use tonic::transport::Channel;

use super::{CliError, ConnArgs};

/// Prefixes an RPC or connection error with `context`, as SPIRE's
/// `fmt.Errorf("<context>: %w", err)` does. Other errors pass unchanged.
pub(crate) fn in_context(context: &str) -> impl Fn(CliError) -> CliError + '_ {
    move |e| match e {
        CliError::Rpc {
            context: None,
            status,
        } => CliError::Rpc {
            context: Some(context.to_owned()),
            status,
        },
        CliError::Connect(message) => CliError::Connect(format!("{context}: {message}")),
        other => other,
    }
}

/// Connects to the admin socket; a failure reads like the first RPC's would
/// (`<context>: rpc error: code = Unavailable ...`), or bare without context.
pub(crate) async fn connect(conn: &ConnArgs, context: Option<&str>) -> Result<Channel, CliError> {
    let result = super::connect(conn).await;
    match context {
        Some(c) => result.map_err(in_context(c)),
        None => result,
    }
}

/// Turns an RPC's status into a [`CliError`] with `context`, when SPIRE
/// gives one.
pub(crate) fn status_in(context: Option<&str>) -> impl Fn(tonic::Status) -> CliError + '_ {
    move |status| CliError::Rpc {
        context: context.map(str::to_owned),
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_prefixes_rpc_and_connection_errors_only() {
        let ctx = in_context("could not prepare X.509 authority");
        assert_eq!(
            ctx(CliError::from(tonic::Status::internal("boom"))).to_string(),
            "could not prepare X.509 authority: rpc error: code = Internal desc = boom"
        );
        assert_eq!(
            ctx(CliError::Connect("rpc error: code = Unavailable".into())).to_string(),
            "could not prepare X.509 authority: rpc error: code = Unavailable"
        );
        assert_eq!(ctx(CliError::Invalid("bad".into())).to_string(), "bad");
        assert_eq!(
            status_in(None)(tonic::Status::not_found("x")).to_string(),
            "rpc error: code = NotFound desc = x"
        );
    }
}
