//! The Prometheus recorder and its `/metrics` listener.
//!
//! [`start`] installs a process-wide recorder for the `metrics` crate's
//! macros (so instrumented code anywhere records into it) with the metric
//! prefix and global labels of the `telemetry { }` block, and serves the
//! text exposition format on `Prometheus { host, port }`. Without a
//! `Prometheus` block nothing is installed and every `metrics` macro is a
//! no-op.
//!
//! Call counters follow SPIRE: a counter named for the call and a summary
//! of its duration in milliseconds, `<name>_elapsed_time`, both labelled
//! with `status` (see [`CallCounter`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::layers::{Layer, PrefixLayer};

use crate::{TelemetryConfig, TelemetryError};

/// How often summaries are rotated and idle histograms drained.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the recorder and serves `/metrics` when `cfg` has a
/// `Prometheus` block; returns the bound address then, `None` otherwise.
/// `default_prefix` is `spire_server` or `spire_agent`; `trust_domain` is
/// the `trust_domain_id` label's value when `EnableTrustDomainLabel` is set.
pub async fn start(
    cfg: &TelemetryConfig,
    default_prefix: &str,
    trust_domain: &str,
) -> Result<Option<SocketAddr>, TelemetryError> {
    let Some(prom) = &cfg.prometheus else {
        return Ok(None);
    };
    let addr = format!("{}:{}", prom.host, prom.port);
    let listener = tokio::net::TcpListener::bind((prom.host.as_str(), prom.port))
        .await
        .map_err(|source| TelemetryError::Bind {
            what: "metrics",
            addr: addr.clone(),
            source,
        })?;
    let local = listener
        .local_addr()
        .map_err(|source| TelemetryError::Bind {
            what: "metrics",
            addr,
            source,
        })?;
    let handle = install(cfg, default_prefix, trust_domain)?;
    // SPIRE's `started` and `uptime_in_ms` gauges.
    metrics::gauge!(
        "started",
        "version" => env!("CARGO_PKG_VERSION"),
        "trust_domain_id" => trust_domain.to_owned()
    )
    .set(1.0);
    let started = Instant::now();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            metrics::gauge!("uptime_in_ms").set(started.elapsed().as_millis() as f64);
            n += 1;
            if n.is_multiple_of(UPKEEP_INTERVAL.as_secs()) {
                upkeep.run_upkeep();
            }
        }
    });
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    handle.render(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    });
    tracing::info!(address = %local, "Serving Prometheus metrics on /metrics");
    Ok(Some(local))
}

fn install(
    cfg: &TelemetryConfig,
    default_prefix: &str,
    trust_domain: &str,
) -> Result<PrometheusHandle, TelemetryError> {
    let mut builder = PrometheusBuilder::new();
    if cfg.enable_hostname_label {
        builder = builder.add_global_label("host", hostname());
    }
    if cfg.enable_trust_domain_label {
        builder = builder.add_global_label("trust_domain_id", trust_domain);
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    let prefix = cfg.metric_prefix.as_deref().unwrap_or(default_prefix);
    let recorder = PrefixLayer::new(prefix).layer(recorder);
    metrics::set_global_recorder(recorder).map_err(|_| TelemetryError::RecorderInstalled)?;
    Ok(handle)
}

/// This machine's host name, as the `host` label carries it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// SPIRE's call counter: started before a call, finished with its outcome.
/// Finishing counts the call in `<name>` and records its duration (in
/// milliseconds, as SPIRE) in `<name>_elapsed_time`, both labelled
/// `status` (a gRPC code name such as `OK` or `Unavailable`).
#[derive(Debug)]
pub struct CallCounter {
    name: String,
    labels: Vec<(&'static str, String)>,
    started: Instant,
}

impl CallCounter {
    /// Starts timing a call named `name` (without the prefix, `.`-free:
    /// `manager_sync_fetch_entries_updates`).
    pub fn start(name: impl Into<String>) -> Self {
        CallCounter {
            name: name.into(),
            labels: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Adds a label to both metrics.
    pub fn with_label(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.labels.push((key, value.into()));
        self
    }

    /// Records the call with `status`.
    pub fn finish(self, status: &str) {
        let elapsed_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let mut labels: Vec<metrics::Label> = self
            .labels
            .into_iter()
            .map(|(k, v)| metrics::Label::new(k, v))
            .collect();
        labels.push(metrics::Label::new("status", status.to_owned()));
        metrics::counter!(self.name.clone(), labels.clone()).increment(1);
        metrics::histogram!(format!("{}_elapsed_time", self.name), labels).record(elapsed_ms);
    }

    /// Records `OK` or the error's status.
    pub fn finish_result<T, E>(self, result: &Result<T, E>, status_of: impl Fn(&E) -> String) {
        match result {
            Ok(_) => self.finish("OK"),
            Err(e) => self.finish(&status_of(e)),
        }
    }
}

/// A gRPC code as SPIRE's status labels spell it (Go's `codes.Code`
/// names: `OK`, `Canceled`, `Unknown`, `InvalidArgument`, ...).
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_gos() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(1), "Canceled");
        assert_eq!(code_name(7), "PermissionDenied");
        assert_eq!(code_name(14), "Unavailable");
        assert_eq!(code_name(99), "Unknown");
    }
}
