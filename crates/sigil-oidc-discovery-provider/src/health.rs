//! Readiness and liveness probes on their own listener (SPIRE's
//! `health_checks` block): both answer 200 while keys were fetched within
//! the threshold; liveness also passes during the first threshold after
//! start, before any fetch succeeded. Failures are 500, as SPIRE's.
//!
//! The threshold is five poll intervals, at least three minutes (SPIRE's
//! documented rule).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use http::StatusCode;

use crate::config::HealthChecks;
use crate::keys::KeyStore;

/// How long after the last successful poll the provider stays healthy.
pub fn threshold(poll_interval: Duration) -> Duration {
    (poll_interval * 5).max(Duration::from_secs(180))
}

#[derive(Debug)]
struct Probe {
    keys: KeyStore,
    threshold: Duration,
    started: Instant,
}

impl Probe {
    fn recent(&self, now: Instant) -> Option<bool> {
        self.keys
            .last_success()
            .map(|t| now.saturating_duration_since(t) < self.threshold)
    }

    fn ready(&self, now: Instant) -> bool {
        self.recent(now).unwrap_or(false)
    }

    fn live(&self, now: Instant) -> bool {
        self.recent(now)
            .unwrap_or_else(|| now.saturating_duration_since(self.started) < self.threshold)
    }
}

fn status(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

async fn ready(State(p): State<Arc<Probe>>) -> StatusCode {
    status(p.ready(Instant::now()))
}

async fn live(State(p): State<Arc<Probe>>) -> StatusCode {
    status(p.live(Instant::now()))
}

async fn method_not_allowed() -> StatusCode {
    StatusCode::METHOD_NOT_ALLOWED
}

/// The probe router for `cfg`'s paths.
pub fn router(cfg: &HealthChecks, keys: KeyStore, poll_interval: Duration) -> Router {
    let probe = Arc::new(Probe {
        keys,
        threshold: threshold(poll_interval),
        started: Instant::now(),
    });
    Router::new()
        .route(&cfg.ready_path, get(ready).fallback(method_not_allowed))
        .route(&cfg.live_path, get(live).fallback(method_not_allowed))
        .with_state(probe)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn threshold_is_five_polls_but_at_least_three_minutes() {
        assert_eq!(threshold(Duration::from_secs(10)), Duration::from_secs(180));
        assert_eq!(threshold(Duration::from_secs(60)), Duration::from_secs(300));
    }

    #[test]
    fn not_ready_before_the_first_poll_but_live_within_the_threshold() {
        let p = Probe {
            keys: KeyStore::new(false),
            threshold: Duration::from_secs(180),
            started: Instant::now(),
        };
        let now = Instant::now();
        assert!(!p.ready(now));
        assert!(p.live(now));
        assert!(!p.live(now + Duration::from_secs(181)));
        p.keys.publish(&[]);
        assert!(p.ready(Instant::now()));
        assert!(!p.ready(Instant::now() + Duration::from_secs(181)));
        assert!(!p.live(Instant::now() + Duration::from_secs(181)));
    }
}
