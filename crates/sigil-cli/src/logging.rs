//! Logging set up from SPIRE's `log_level` and `log_format` options.

/// Installs the global subscriber. `level` is SPIRE's (`DEBUG`, `INFO`,
/// `WARN`, `ERROR`); `RUST_LOG`, when set, overrides it. `format` is `text`
/// or `json`. Logs go to stderr. Calling it twice is harmless.
pub fn init_logging(level: &str, format: &str) {
    let level = match level.to_ascii_uppercase().as_str() {
        "TRACE" => "trace",
        "DEBUG" => "debug",
        "WARN" | "WARNING" => "warn",
        "ERROR" => "error",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{level},h2=warn,hyper=warn,tower=warn,sqlx=warn,rustls=warn"
        ))
    });
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if format.eq_ignore_ascii_case("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
