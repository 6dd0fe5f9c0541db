//! `spire.api.agent.logger.v1.Logger`: reading and changing the process's
//! log level at run time through [`sigil_cli::log_control`].
//!
//! As in SPIRE, any caller that can open the admin socket may use it; the
//! launch level is the configured `log_level`. tracing has no PANIC or
//! FATAL level: those are applied (and then reported) as ERROR.

use sigil_cli::LogControl;
use sigil_proto::spire::api::agent::logger::v1::logger_server::{Logger, LoggerServer};
use sigil_proto::spire::api::agent::logger::v1::{
    GetLoggerRequest, ResetLogLevelRequest, SetLogLevelRequest,
};
use sigil_proto::spire::api::types::{LogLevel, Logger as ApiLogger};
use tonic::{Request, Response, Status};

use super::AdminError;

/// The Logger service.
#[derive(Debug, Clone, Default)]
pub struct LoggerService {
    _private: (),
}

impl LoggerService {
    /// The service; logs the launch level, as SPIRE does when it starts.
    pub fn new() -> LoggerService {
        if let Some(control) = sigil_cli::log_control() {
            tracing::info!(
                launch_log_level = %control.launch_level().to_ascii_lowercase(),
                "Logger service configured"
            );
        }
        LoggerService { _private: () }
    }

    /// The tonic service to add to a server.
    pub fn into_service(self) -> LoggerServer<LoggerService> {
        LoggerServer::new(self)
    }
}

#[tonic::async_trait]
impl Logger for LoggerService {
    async fn get_logger(
        &self,
        _request: Request<GetLoggerRequest>,
    ) -> Result<Response<ApiLogger>, Status> {
        tracing::info!("GetLogger Called");
        Ok(Response::new(api_logger(&control()?)))
    }

    async fn set_log_level(
        &self,
        request: Request<SetLogLevelRequest>,
    ) -> Result<Response<ApiLogger>, Status> {
        let name = level_from_api(request.get_ref().new_level)?;
        let control = control()?;
        tracing::info!(new_log_level = %name.to_ascii_lowercase(), "SetLogLevel Called");
        control
            .set_level(name)
            .map_err(|_| AdminError::UnsupportedLogLevel)?;
        Ok(Response::new(api_logger(&control)))
    }

    async fn reset_log_level(
        &self,
        _request: Request<ResetLogLevelRequest>,
    ) -> Result<Response<ApiLogger>, Status> {
        let control = control()?;
        tracing::info!(
            launch_log_level = %control.launch_level().to_ascii_lowercase(),
            "ResetLogLevel Called"
        );
        control.reset().map_err(|_| AdminError::LoggingNotSetUp)?;
        Ok(Response::new(api_logger(&control)))
    }
}

fn control() -> Result<LogControl, AdminError> {
    sigil_cli::log_control().ok_or(AdminError::LoggingNotSetUp)
}

fn api_logger(control: &LogControl) -> ApiLogger {
    ApiLogger {
        current_level: level_to_api(&control.level()) as i32,
        launch_level: level_to_api(&control.launch_level()) as i32,
    }
}

/// A level name as `LogControl` reports it (upper case) as the API enum.
pub(super) fn level_to_api(name: &str) -> LogLevel {
    match name {
        "TRACE" => LogLevel::Trace,
        "DEBUG" => LogLevel::Debug,
        "INFO" => LogLevel::Info,
        "WARN" => LogLevel::Warn,
        "ERROR" => LogLevel::Error,
        "FATAL" => LogLevel::Fatal,
        "PANIC" => LogLevel::Panic,
        _ => LogLevel::Unspecified,
    }
}

/// The API enum as a level name `LogControl` accepts, with SPIRE's errors.
fn level_from_api(value: i32) -> Result<&'static str, AdminError> {
    match LogLevel::try_from(value) {
        Ok(LogLevel::Unspecified) => Err(AdminError::LogLevelUnspecified),
        Ok(level) => Ok(level.as_str_name()),
        Err(_) => Err(AdminError::UnsupportedLogLevel),
    }
}
