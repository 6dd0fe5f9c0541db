//! What sigil-server and sigil-agent share for operating them, as SPIRE's
//! `pkg/common/telemetry` and `pkg/common/health` do for SPIRE:
//!
//! - [`config`]: the top-level `telemetry { }` and `health_checks { }`
//!   blocks, with SPIRE's option names and defaults; sinks sigil does not
//!   have are startup errors naming them.
//! - [`metrics`]: installing the Prometheus recorder (metric prefix and
//!   global labels) and serving `/metrics`.
//! - [`health`]: the `/live` and `/ready` HTTP listener over checks each
//!   binary supplies.
//! - [`rpc`]: a tower layer that counts and times every gRPC call with
//!   SPIRE's metric names (`rpc_<service>_<method>` and `..._elapsed_time`,
//!   labelled with the gRPC `status`).
//!
//! This crate never decides what "ready" means for a binary, and never
//! names a metric of a subsystem other than the RPC layer's: callers do.
#![forbid(unsafe_code)]

pub mod config;
pub mod health;
pub mod metrics;
pub mod rpc;

pub use config::{HealthChecksConfig, PrometheusConfig, TelemetryConfig};

/// Why a listener or the recorder could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// A listener could not bind its address.
    #[error("could not bind the {what} listener on {addr}: {source}")]
    Bind {
        /// `metrics` or `health checks`.
        what: &'static str,
        /// `host:port` as configured.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A metrics recorder was installed already in this process.
    #[error("a metrics recorder is already installed in this process")]
    RecorderInstalled,
}
