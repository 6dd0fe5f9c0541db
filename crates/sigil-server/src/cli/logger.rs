//! `logger get|set|reset`: the running server's log level, through
//! `spire.api.server.logger.v1`. Level names are logrus's, as SPIRE prints
//! and accepts them.

use sigil_proto::spire::api::server::logger::v1::{
    GetLoggerRequest, ResetLogLevelRequest, SetLogLevelRequest, logger_client::LoggerClient,
};
use sigil_proto::spire::api::types::{LogLevel, Logger};

use super::rpc::{connect, status_in};
use super::{CliError, ConnArgs, Outcome, OutputFormat, fmt, json, parse_output_format};

/// `logger` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum LoggerCommand {
    /// Gets the logger details
    Get(LoggerArgs),
    /// Sets the logger details
    Set(LoggerSetArgs),
    /// Reset the logger details to launch level
    Reset(LoggerArgs),
}

/// Flags of `get` and `reset`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LoggerArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

/// Flags of `set`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LoggerSetArgs {
    /// The new log level, one of (panic, fatal, error, warn, info, debug,
    /// trace)
    #[arg(long = "level", default_value = "", hide_default_value = true)]
    pub level: String,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

pub(crate) async fn run(cmd: LoggerCommand) -> Result<Outcome, CliError> {
    let (logger, output) = match cmd {
        LoggerCommand::Get(args) => {
            let context = Some("error fetching logger");
            let mut client = LoggerClient::new(connect(&args.conn, context).await?);
            let logger = client
                .get_logger(GetLoggerRequest {})
                .await
                .map_err(status_in(context))?;
            (logger.into_inner(), args.output)
        }
        LoggerCommand::Set(args) => {
            let level = set_level(&args.level)?;
            let context = Some("failed to set log level");
            let mut client = LoggerClient::new(connect(&args.conn, context).await?);
            let logger = client
                .set_log_level(SetLogLevelRequest {
                    new_level: level as i32,
                })
                .await
                .map_err(status_in(context))?;
            (logger.into_inner(), args.output)
        }
        LoggerCommand::Reset(args) => {
            let context = Some("failed to reset logger");
            let mut client = LoggerClient::new(connect(&args.conn, context).await?);
            let logger = client
                .reset_log_level(ResetLogLevelRequest {})
                .await
                .map_err(status_in(context))?;
            (logger.into_inner(), args.output)
        }
    };
    Ok(render(&logger, output))
}

/// The `-level` flag as an API level: required, one of logrus's names in
/// any case.
pub(crate) fn set_level(level: &str) -> Result<LogLevel, CliError> {
    if level.is_empty() {
        return Err(CliError::Invalid("a value (-level) must be set".into()));
    }
    match level.to_lowercase().as_str() {
        "panic" => Ok(LogLevel::Panic),
        "fatal" => Ok(LogLevel::Fatal),
        "error" => Ok(LogLevel::Error),
        "warn" | "warning" => Ok(LogLevel::Warn),
        "info" => Ok(LogLevel::Info),
        "debug" => Ok(LogLevel::Debug),
        "trace" => Ok(LogLevel::Trace),
        _ => Err(CliError::Invalid(format!(
            "the value {} is not a valid setting",
            fmt::go_quote(level)
        ))),
    }
}

/// `Logger Level : <current>` and `Launch Level : <launch>` in logrus's
/// spelling, then a blank line.
pub(crate) fn render(logger: &Logger, output: OutputFormat) -> Outcome {
    if output == OutputFormat::Json {
        return Outcome::stdout(json::encode(&json::logger(logger)));
    }
    let Some(current) = logrus_name(logger.current_level) else {
        return Outcome {
            error: Some(
                "internal error: returned current log level is undefined; please report this as a bug"
                    .into(),
            ),
            ..Outcome::default()
        };
    };
    let Some(launch) = logrus_name(logger.launch_level) else {
        return Outcome {
            error: Some(
                "internal error: returned launch log level is undefined; please report this as a bug"
                    .into(),
            ),
            ..Outcome::default()
        };
    };
    Outcome::stdout(format!(
        "Logger Level : {current}\nLaunch Level : {launch}\n\n"
    ))
}

/// logrus's text for a level (`warning`, not `warn`); none for
/// `UNSPECIFIED` or unknown values.
fn logrus_name(level: i32) -> Option<&'static str> {
    Some(match LogLevel::try_from(level).ok()? {
        LogLevel::Unspecified => return None,
        LogLevel::Panic => "panic",
        LogLevel::Fatal => "fatal",
        LogLevel::Error => "error",
        LogLevel::Warn => "warning",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: LoggerCommand,
    }

    fn logger(current: LogLevel, launch: LogLevel) -> Logger {
        Logger {
            current_level: current as i32,
            launch_level: launch as i32,
        }
    }

    #[test]
    fn level_flag_takes_logrus_names_in_any_case() {
        let argv = sigil_cli::normalize_go_flags(["logger", "set", "-level", "DeBuG"]);
        let LoggerCommand::Set(args) = Cli::try_parse_from(argv).unwrap().cmd else {
            panic!("not set");
        };
        assert_eq!(set_level(&args.level).unwrap(), LogLevel::Debug);
        assert_eq!(set_level("warning").unwrap(), LogLevel::Warn);
        assert_eq!(
            set_level("").unwrap_err().to_string(),
            "a value (-level) must be set"
        );
        assert_eq!(
            set_level("Loud").unwrap_err().to_string(),
            "the value \"Loud\" is not a valid setting"
        );
    }

    #[test]
    fn output_matches_spire() {
        let l = logger(LogLevel::Warn, LogLevel::Info);
        assert_eq!(
            render(&l, OutputFormat::Pretty).stdout,
            "Logger Level : warning\nLaunch Level : info\n\n"
        );
        assert_eq!(
            render(&l, OutputFormat::Json).stdout,
            "{\"current_level\":\"WARN\",\"launch_level\":\"INFO\"}\n"
        );
        let out = render(
            &logger(LogLevel::Unspecified, LogLevel::Info),
            OutputFormat::Pretty,
        );
        assert_eq!(out.stdout, "");
        assert_eq!(
            out.error.as_deref(),
            Some(
                "internal error: returned current log level is undefined; please report this as a bug"
            )
        );
    }
}
