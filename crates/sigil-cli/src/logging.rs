//! Logging set up from SPIRE's `log_level` and `log_format` options, with a
//! handle to change the level at run time (SPIRE's `logger.v1` API).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Quiet by default: these crates log per frame or per connection. Audit
/// records (target `audit`) are written whatever the level, so lowering the
/// level never drops them.
const NOISY: &str = "h2=warn,hyper=warn,tower=warn,sqlx=warn,rustls=warn,audit=info";

/// Log lines that could not be written (see [`log_write_failures`]).
static WRITE_FAILURES: AtomicU64 = AtomicU64::new(0);

/// How many log writes have failed since the process started. Callers that
/// must not lose a record (the audit log) compare it before and after.
pub fn log_write_failures() -> u64 {
    WRITE_FAILURES.load(Ordering::SeqCst)
}

/// stderr, counting failed writes instead of forgetting them.
struct CountingStderr;

impl std::io::Write for CountingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write(buf).inspect_err(|_| {
            WRITE_FAILURES.fetch_add(1, Ordering::SeqCst);
        })
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        std::io::stderr().write_all(buf).inspect_err(|_| {
            WRITE_FAILURES.fetch_add(1, Ordering::SeqCst);
        })
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush().inspect_err(|_| {
            WRITE_FAILURES.fetch_add(1, Ordering::SeqCst);
        })
    }
}

/// Changes the process's log level at run time.
#[derive(Debug, Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    launch_level: &'static str,
}

/// Why a level change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogLevelError {
    /// Not one of the known level names.
    #[error("invalid log level {0:?}: use one of TRACE, DEBUG, INFO, WARN, ERROR")]
    Unknown(String),
    /// The subscriber is gone.
    #[error("logging is not set up")]
    NotInitialized,
}

static CONTROL: OnceLock<LogControl> = OnceLock::new();
static CURRENT: Mutex<&'static str> = Mutex::new("info");

/// Maps a SPIRE level name (any case; `WARNING` too) to tracing's.
pub fn level_name(level: &str) -> Option<&'static str> {
    match level.to_ascii_uppercase().as_str() {
        "TRACE" => Some("trace"),
        "DEBUG" => Some("debug"),
        "INFO" => Some("info"),
        "WARN" | "WARNING" => Some("warn"),
        "ERROR" | "FATAL" | "PANIC" => Some("error"),
        _ => None,
    }
}

/// Installs the global subscriber. `level` is SPIRE's (`DEBUG`, `INFO`,
/// `WARN`, `ERROR`; unknown names mean INFO); `RUST_LOG`, when set, overrides
/// it. `format` is `text` or `json`. Logs go to stderr. Returns the level
/// control; calling it again returns the first one.
pub fn init_logging(level: &str, format: &str) -> LogControl {
    CONTROL
        .get_or_init(|| {
            use std::io::IsTerminal;
            let launch_level = level_name(level).unwrap_or("info");
            let filter = EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(format!("{launch_level},{NOISY}")));
            let (filter, handle) = reload::Layer::new(filter);
            let fmt = tracing_subscriber::fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(|| CountingStderr);
            let registry = tracing_subscriber::registry().with(filter);
            let _ = if format.eq_ignore_ascii_case("json") {
                registry.with(fmt.json()).try_init()
            } else {
                registry.with(fmt).try_init()
            };
            *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = launch_level;
            LogControl {
                handle,
                launch_level,
            }
        })
        .clone()
}

/// The control installed by [`init_logging`], if logging was set up.
pub fn log_control() -> Option<LogControl> {
    CONTROL.get().cloned()
}

impl LogControl {
    /// The current level, upper case (`INFO`).
    pub fn level(&self) -> String {
        CURRENT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .to_ascii_uppercase()
    }

    /// The level the process started with, upper case.
    pub fn launch_level(&self) -> String {
        self.launch_level.to_ascii_uppercase()
    }

    /// Sets the level (SPIRE names, any case).
    pub fn set_level(&self, level: &str) -> Result<(), LogLevelError> {
        let name = level_name(level).ok_or_else(|| LogLevelError::Unknown(level.to_owned()))?;
        self.handle
            .reload(EnvFilter::new(format!("{name},{NOISY}")))
            .map_err(|_| LogLevelError::NotInitialized)?;
        *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = name;
        Ok(())
    }

    /// Back to the level the process started with.
    pub fn reset(&self) -> Result<(), LogLevelError> {
        self.set_level(self.launch_level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_control_sets_resets_and_rejects_unknown_levels() {
        let control = init_logging("WARN", "text");
        assert_eq!(control.launch_level(), "WARN");
        control.set_level("debug").unwrap();
        assert_eq!(control.level(), "DEBUG");
        assert!(tracing::enabled!(tracing::Level::DEBUG));
        assert_eq!(
            control.set_level("loud"),
            Err(LogLevelError::Unknown("loud".into()))
        );
        control.reset().unwrap();
        assert_eq!(control.level(), "WARN");
        assert!(!tracing::enabled!(tracing::Level::INFO));
    }
}
