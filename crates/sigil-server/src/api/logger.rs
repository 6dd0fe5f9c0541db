//! `spire.api.server.logger.v1.Logger`: reading and changing the server's
//! log level at run time, for callers on the local admin socket only (as in
//! SPIRE). The level itself lives in `sigil_cli`'s logging set-up; this
//! module only translates between it and SPIRE's `LogLevel` enum.

use std::sync::Arc;

use sigil_proto::spire::api::server::logger::v1 as pb;
use sigil_proto::spire::api::types;
use tonic::{Request, Response, Status};

use super::debug::require_local;
use super::{ApiState, authenticate};

/// The logger service.
#[derive(Debug, Clone)]
pub struct LoggerService {
    state: Arc<ApiState>,
}

impl LoggerService {
    /// Wraps the shared state.
    pub fn new(state: Arc<ApiState>) -> Self {
        LoggerService { state }
    }
}

/// SPIRE's `LogLevel` for a level name (`INFO`, any case); `UNSPECIFIED`
/// for names it does not know.
pub fn level_to_proto(name: &str) -> types::LogLevel {
    match name.to_ascii_uppercase().as_str() {
        "PANIC" => types::LogLevel::Panic,
        "FATAL" => types::LogLevel::Fatal,
        "ERROR" => types::LogLevel::Error,
        "WARN" | "WARNING" => types::LogLevel::Warn,
        "INFO" => types::LogLevel::Info,
        "DEBUG" => types::LogLevel::Debug,
        "TRACE" => types::LogLevel::Trace,
        _ => types::LogLevel::Unspecified,
    }
}

/// The level name for a wire `LogLevel` value, or SPIRE's refusal.
pub fn level_from_proto(value: i32) -> Result<&'static str, Status> {
    match types::LogLevel::try_from(value) {
        Ok(types::LogLevel::Unspecified) => Err(Status::invalid_argument(
            "newLevel value cannot be LogLevel_UNSPECIFIED",
        )),
        Ok(level) => Ok(level.as_str_name()),
        Err(_) => Err(Status::invalid_argument("unsupported log level")),
    }
}

fn control() -> Result<sigil_cli::LogControl, Status> {
    sigil_cli::log_control()
        .ok_or_else(|| Status::unavailable("logging is not set up in this process"))
}

fn logger_proto(c: &sigil_cli::LogControl) -> types::Logger {
    types::Logger {
        current_level: level_to_proto(&c.level()) as i32,
        launch_level: level_to_proto(&c.launch_level()) as i32,
    }
}

#[tonic::async_trait]
impl pb::logger_server::Logger for LoggerService {
    async fn get_logger(
        &self,
        request: Request<pb::GetLoggerRequest>,
    ) -> Result<Response<types::Logger>, Status> {
        require_local(&authenticate(&self.state, &request).await?)?;
        Ok(Response::new(logger_proto(&control()?)))
    }

    async fn set_log_level(
        &self,
        request: Request<pb::SetLogLevelRequest>,
    ) -> Result<Response<types::Logger>, Status> {
        require_local(&authenticate(&self.state, &request).await?)?;
        let name = level_from_proto(request.get_ref().new_level)?;
        let c = control()?;
        c.set_level(name)
            .map_err(|e| Status::internal(format!("failed to set log level: {e}")))?;
        tracing::info!(new_log_level = name, "SetLogLevel called");
        Ok(Response::new(logger_proto(&c)))
    }

    async fn reset_log_level(
        &self,
        request: Request<pb::ResetLogLevelRequest>,
    ) -> Result<Response<types::Logger>, Status> {
        require_local(&authenticate(&self.state, &request).await?)?;
        let c = control()?;
        c.reset()
            .map_err(|e| Status::internal(format!("failed to reset log level: {e}")))?;
        tracing::info!(launch_log_level = %c.launch_level(), "ResetLogLevel called");
        Ok(Response::new(logger_proto(&c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spire_level_maps_both_ways() {
        for v in 1..=7 {
            let name = level_from_proto(v).unwrap();
            assert_eq!(level_to_proto(name) as i32, v, "{name}");
        }
        assert_eq!(
            level_from_proto(0).unwrap_err().message(),
            "newLevel value cannot be LogLevel_UNSPECIFIED"
        );
        assert_eq!(
            level_from_proto(42).unwrap_err().message(),
            "unsupported log level"
        );
        assert_eq!(level_to_proto("warning"), types::LogLevel::Warn);
    }
}
