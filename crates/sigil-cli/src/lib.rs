//! The operator surface shared by `sigil-server` and `sigil-agent`.
//!
//! SPIRE's users type Go-style flags (`-spiffeID`), write Go durations (`1h30m`)
//! and keep HCL config files; this crate turns those into values the binaries
//! can use, with errors that name exactly what was wrong. It also owns the
//! rules for files and sockets other local users must not touch
//! ([`secure_fs`]), and the token buckets both programs rate-limit callers
//! with ([`ratelimit`]). It owns no behaviour of either program.
#![forbid(unsafe_code)]

pub mod config;
pub mod duration;
pub mod flags;
pub mod logging;
pub mod ratelimit;
pub mod secure_fs;

pub use config::{Block, ConfigError, PluginDecl, Section};
pub use duration::{DurationError, format_duration, parse_duration};
pub use flags::normalize_go_flags;
pub use logging::{LogControl, init_logging, log_control};
