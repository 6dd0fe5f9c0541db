//! Per-caller rate limits on the Workload API and SDS (SPIRE 1.15's
//! `agent.experimental.ratelimit`).
//!
//! Each limited method has a token bucket per caller, the caller being its
//! attested selector set: workloads with the same selectors share a
//! bucket, workloads with different ones never interfere, and callers with
//! no selectors share one. A limit of N allows N calls (or stream opens) a
//! second with a burst of N; 0 leaves the method unlimited. The check runs
//! after attestation, once per call, so a stream counts once, when opened.
//! Over the limit: `Unavailable`, "rate limit exceeded for <method>", as
//! SPIRE answers.
//!
//! `FetchJWTSVID` is the one that matters most: a JWT-SVID for a new
//! audience misses the agent's cache and costs the server a signature, so
//! without a limit a local caller asking for a fresh audience each time
//! makes the agent ask the server for signatures without bound (the
//! server's own per-IP signing limit then delays every workload on the
//! node).

use std::time::Instant;

use sigil_cli::ratelimit::PerKeyLimiter;
use sigil_spiffe::Selector;

use super::WorkloadError;

/// `agent.experimental.ratelimit`: calls (or stream opens) a second per
/// caller for each method; 0 is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkloadRateLimits {
    /// `fetch_x509_svid`.
    pub fetch_x509_svid: u32,
    /// `fetch_jwt_svid`.
    pub fetch_jwt_svid: u32,
    /// `fetch_x509_bundles`.
    pub fetch_x509_bundles: u32,
    /// `fetch_jwt_bundles`.
    pub fetch_jwt_bundles: u32,
    /// `stream_secrets` (SDS).
    pub stream_secrets: u32,
    /// `fetch_secrets` (SDS).
    pub fetch_secrets: u32,
}

/// A limited Workload API method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    FetchX509Svid,
    FetchJwtSvid,
    FetchX509Bundles,
    FetchJwtBundles,
    StreamSecrets,
    FetchSecrets,
}

impl Method {
    fn full_name(self) -> &'static str {
        match self {
            Method::FetchX509Svid => "/SpiffeWorkloadAPI/FetchX509SVID",
            Method::FetchJwtSvid => "/SpiffeWorkloadAPI/FetchJWTSVID",
            Method::FetchX509Bundles => "/SpiffeWorkloadAPI/FetchX509Bundles",
            Method::FetchJwtBundles => "/SpiffeWorkloadAPI/FetchJWTBundles",
            Method::StreamSecrets => {
                "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"
            }
            Method::FetchSecrets => "/envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets",
        }
    }
}

type Limiter = Option<PerKeyLimiter<Vec<Selector>>>;

/// The limiters of the configured methods.
#[derive(Debug, Default)]
pub(crate) struct WorkloadRateLimiter {
    fetch_x509_svid: Limiter,
    fetch_jwt_svid: Limiter,
    fetch_x509_bundles: Limiter,
    fetch_jwt_bundles: Limiter,
    stream_secrets: Limiter,
    fetch_secrets: Limiter,
}

impl WorkloadRateLimiter {
    pub(crate) fn new(limits: WorkloadRateLimits) -> WorkloadRateLimiter {
        let on = |method: Method, n: u32| {
            (n > 0).then(|| {
                tracing::info!(
                    method = method.full_name(),
                    limit = n,
                    "Workload API rate limiting enabled"
                );
                PerKeyLimiter::new(n)
            })
        };
        WorkloadRateLimiter {
            fetch_x509_svid: on(Method::FetchX509Svid, limits.fetch_x509_svid),
            fetch_jwt_svid: on(Method::FetchJwtSvid, limits.fetch_jwt_svid),
            fetch_x509_bundles: on(Method::FetchX509Bundles, limits.fetch_x509_bundles),
            fetch_jwt_bundles: on(Method::FetchJwtBundles, limits.fetch_jwt_bundles),
            stream_secrets: on(Method::StreamSecrets, limits.stream_secrets),
            fetch_secrets: on(Method::FetchSecrets, limits.fetch_secrets),
        }
    }

    /// Spends one call of `method` for the caller with `selectors`.
    pub(crate) fn check(
        &self,
        method: Method,
        selectors: &[Selector],
    ) -> Result<(), WorkloadError> {
        let limiter = match method {
            Method::FetchX509Svid => &self.fetch_x509_svid,
            Method::FetchJwtSvid => &self.fetch_jwt_svid,
            Method::FetchX509Bundles => &self.fetch_x509_bundles,
            Method::FetchJwtBundles => &self.fetch_jwt_bundles,
            Method::StreamSecrets => &self.stream_secrets,
            Method::FetchSecrets => &self.fetch_secrets,
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        let mut key = selectors.to_vec();
        key.sort();
        key.dedup();
        limiter
            .try_take(&key, 1, Instant::now())
            .map_err(|_| WorkloadError::RateLimited(method.full_name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(v: &str) -> Selector {
        Selector::new("unix", v).unwrap()
    }

    #[test]
    fn callers_with_the_same_selectors_share_a_bucket_in_any_order() {
        let l = WorkloadRateLimiter::new(WorkloadRateLimits {
            fetch_jwt_svid: 2,
            ..Default::default()
        });
        let a = [sel("uid:1"), sel("gid:1")];
        let a_reordered = [sel("gid:1"), sel("uid:1")];
        let b = [sel("uid:2")];
        l.check(Method::FetchJwtSvid, &a).unwrap();
        l.check(Method::FetchJwtSvid, &a_reordered).unwrap();
        let err = l.check(Method::FetchJwtSvid, &a).unwrap_err();
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status.message(),
            "rate limit exceeded for /SpiffeWorkloadAPI/FetchJWTSVID"
        );
        // Another selector set, and another method, are not affected.
        l.check(Method::FetchJwtSvid, &b).unwrap();
        for _ in 0..100 {
            l.check(Method::FetchX509Svid, &a).unwrap();
        }
    }
}
