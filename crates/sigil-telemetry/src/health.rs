//! The `health_checks` HTTP listener: `live_path` and `ready_path`, as
//! SPIRE's `pkg/common/health` serves them.
//!
//! Each binary hands in its [`Check`]s (the server: datastore and CA; the
//! agent: its SVID and the Workload API). `ready_path` runs every check (each
//! within [`CHECK_TIMEOUT`]) and answers 200 when all pass, 500 otherwise,
//! with a JSON body naming each check and, for a failing one, why.
//! `live_path` answers 200 while the process serves it: like SPIRE, a
//! subsystem that is not ready is still live (it can recover without a
//! restart). The listener starts before the binary's slow start-up steps,
//! so an agent still attesting answers "not ready" rather than nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use futures::future::BoxFuture;

use crate::{HealthChecksConfig, TelemetryError};

/// The longest a single readiness check may take before it counts as
/// failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcome of one readiness check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// The subsystem can do its job.
    Ready,
    /// It cannot, and why (for the response body and the log).
    NotReady(String),
}

/// A subsystem whose readiness the listener reports.
pub trait Check: Send + Sync {
    /// Its name in the JSON body (`datastore`, `ca`, `agent_svid`, ...).
    fn name(&self) -> &'static str;
    /// Checks it now.
    fn check(&self) -> BoxFuture<'_, Readiness>;
}

/// Serves the health endpoints when `cfg.listener_enabled`; returns the
/// bound address then, `None` otherwise.
pub async fn start(
    cfg: &HealthChecksConfig,
    checks: Vec<Arc<dyn Check>>,
) -> Result<Option<SocketAddr>, TelemetryError> {
    if !cfg.listener_enabled {
        return Ok(None);
    }
    let addr = format!("{}:{}", cfg.bind_address, cfg.bind_port);
    let bind_err = |source| TelemetryError::Bind {
        what: "health checks",
        addr: addr.clone(),
        source,
    };
    let listener = tokio::net::TcpListener::bind((cfg.bind_address.as_str(), cfg.bind_port))
        .await
        .map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    let checks: Arc<[Arc<dyn Check>]> = checks.into();
    let live_checks = checks.clone();
    let app = axum::Router::new()
        .route(
            &cfg.ready_path,
            get(move || {
                let checks = checks.clone();
                async move { ready(&checks).await }
            }),
        )
        .route(
            &cfg.live_path,
            get(move || {
                let checks = live_checks.clone();
                async move { live(&checks) }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "Error serving health checks");
        }
    });
    tracing::info!(address = %local, "Serving health checks");
    Ok(Some(local))
}

type JsonResponse = (StatusCode, [(http::HeaderName, &'static str); 1], String);

fn json(status: StatusCode, body: serde_json::Value) -> JsonResponse {
    (
        status,
        [(http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn ready(checks: &[Arc<dyn Check>]) -> JsonResponse {
    let results = futures::future::join_all(checks.iter().map(|c| async move {
        let r = match tokio::time::timeout(CHECK_TIMEOUT, c.check()).await {
            Ok(r) => r,
            Err(_) => Readiness::NotReady(format!("check did not finish within {CHECK_TIMEOUT:?}")),
        };
        (c.name(), r)
    }))
    .await;
    let (status, body) = ready_body(&results);
    json(status, body)
}

/// The status and body of a readiness answer.
fn ready_body(results: &[(&'static str, Readiness)]) -> (StatusCode, serde_json::Value) {
    let mut all = true;
    let mut body = serde_json::Map::new();
    for (name, r) in results {
        let details = match r {
            Readiness::Ready => serde_json::json!({ "ready": true }),
            Readiness::NotReady(why) => {
                all = false;
                serde_json::json!({ "ready": false, "error": why })
            }
        };
        body.insert((*name).to_owned(), details);
    }
    let status = if all {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (status, serde_json::Value::Object(body))
}

fn live(checks: &[Arc<dyn Check>]) -> JsonResponse {
    let body: serde_json::Map<_, _> = checks
        .iter()
        .map(|c| (c.name().to_owned(), serde_json::json!({ "live": true })))
        .collect();
    json(StatusCode::OK, serde_json::Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_is_and_the_body_names_the_failing_one() {
        let (s, body) = ready_body(&[("ca", Readiness::Ready), ("datastore", Readiness::Ready)]);
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            body,
            serde_json::json!({"ca": {"ready": true}, "datastore": {"ready": true}})
        );
        let (s, body) = ready_body(&[
            ("ca", Readiness::Ready),
            (
                "datastore",
                Readiness::NotReady("connection refused".into()),
            ),
        ]);
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body["datastore"],
            serde_json::json!({"ready": false, "error": "connection refused"})
        );
    }
}
