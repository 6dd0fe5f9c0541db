//! Rate limits per caller IP address and bounds on batch sizes.
//!
//! The rate limits are SPIRE's (`pkg/server/endpoints/middleware.go`,
//! `pkg/server/api/limits`): a token bucket per caller IP address whose
//! rate and burst are the same number, for
//!
//! | RPC | limit | switch |
//! |---|---|---|
//! | `AttestAgent` | 1/s | `ratelimit.attestation` |
//! | `BatchNewX509SVID` (each SVID), `NewJWTSVID`, `NewDownstreamX509CA`, `RenewAgent` | 500/s | `ratelimit.signing` |
//! | `PublishJWTAuthority` | 500/s | always |
//! | `PostStatus` | 10/s | always |
//!
//! As in SPIRE, a caller over the limit is delayed until its tokens are
//! there, not refused; it gets `ResourceExhausted` when that wait would
//! outlast its deadline (`grpc-timeout`) or when one call asks for more
//! than the burst (a `BatchNewX509SVID` of more than 500). Callers on the
//! admin socket have no IP address and are not limited.
//!
//! This module owns the limits and the batch bounds; the handlers call
//! [`RateLimits::check`] and [`check_batch`] first thing.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use sigil_cli::ratelimit::PerKeyLimiter;
use tonic::{Request, Status};

use crate::endpoints::CallerInfo;

/// SPIRE's attestation limit per IP address and second.
pub const ATTEST_LIMIT_PER_IP: u32 = 1;
/// SPIRE's signing limit per IP address and second.
pub const SIGN_LIMIT_PER_IP: u32 = 500;
/// SPIRE's JWT-authority publishing limit per IP address and second.
pub const PUSH_KEY_LIMIT_PER_IP: u32 = 500;
/// SPIRE's `PostStatus` limit per IP address and second.
pub const POST_STATUS_LIMIT_PER_IP: u32 = 10;

pub use sigil_proto::MAX_ENTRY_BATCH;
/// Most SVIDs one `BatchNewX509SVID` may ask for: SPIRE's signing burst, so
/// a batch SPIRE would sign with its default limits is never refused.
pub const MAX_X509_SVID_BATCH: usize = SIGN_LIMIT_PER_IP as usize;

/// SPIRE's `server.ratelimit` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// `attestation`: limit `AttestAgent` per IP (default true).
    pub attestation: bool,
    /// `signing`: limit signing RPCs per IP (default true).
    pub signing: bool,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            attestation: true,
            signing: true,
        }
    }
}

/// Which limit an RPC spends from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `AttestAgent`.
    Attestation,
    /// X.509 signing: `BatchNewX509SVID`, `NewDownstreamX509CA`, `RenewAgent`.
    Signing,
    /// `NewJWTSVID` (its own bucket of the same size, as in SPIRE).
    JwtSigning,
    /// `PublishJWTAuthority`.
    PushKey,
    /// `PostStatus`.
    PostStatus,
}

/// The server's per-IP limiters.
#[derive(Debug)]
pub struct RateLimits {
    attestation: Option<PerKeyLimiter<IpAddr>>,
    signing: Option<PerKeyLimiter<IpAddr>>,
    jwt_signing: Option<PerKeyLimiter<IpAddr>>,
    push_key: PerKeyLimiter<IpAddr>,
    post_status: PerKeyLimiter<IpAddr>,
}

impl RateLimits {
    /// The limiters `cfg` turns on.
    pub fn new(cfg: RateLimitConfig) -> RateLimits {
        let on = |enabled: bool, n: u32| enabled.then(|| PerKeyLimiter::new(n));
        RateLimits {
            attestation: on(cfg.attestation, ATTEST_LIMIT_PER_IP),
            signing: on(cfg.signing, SIGN_LIMIT_PER_IP),
            jwt_signing: on(cfg.signing, SIGN_LIMIT_PER_IP),
            push_key: PerKeyLimiter::new(PUSH_KEY_LIMIT_PER_IP),
            post_status: PerKeyLimiter::new(POST_STATUS_LIMIT_PER_IP),
        }
    }

    /// Spends `count` tokens of `limit` for the caller of `request`,
    /// waiting for them if needed. The error is SPIRE's status for the RPC.
    pub async fn check<T>(
        &self,
        limit: Limit,
        request: &Request<T>,
        count: usize,
    ) -> Result<(), Status> {
        let (limiter, what) = match limit {
            Limit::Attestation => (self.attestation.as_ref(), "attest agent rate limiting"),
            Limit::Signing => (self.signing.as_ref(), "certificate signing rate limiting"),
            Limit::JwtSigning => (
                self.jwt_signing.as_ref(),
                "JWT signing request rate limiting",
            ),
            Limit::PushKey => (Some(&self.push_key), "key publishing rate limiting"),
            Limit::PostStatus => (Some(&self.post_status), "post status rate limiting"),
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        let Some(CallerInfo::Tls { addr, .. }) = request.extensions().get::<CallerInfo>() else {
            return Ok(());
        };
        let ip = addr.ip();
        let n = u32::try_from(count).unwrap_or(u32::MAX);
        let deadline = grpc_timeout(request.metadata());
        match limiter.reserve(&ip, n, Instant::now(), deadline) {
            Ok(wait) => {
                if !wait.is_zero() {
                    tracing::debug!(%ip, ?wait, ?limit, "delaying caller over its rate limit");
                    tokio::time::sleep(wait).await;
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(%ip, ?limit, error = %e, "rejecting request over its rate limit");
                Err(Status::resource_exhausted(format!(
                    "rejecting request due to {what}: {e}"
                )))
            }
        }
    }
}

/// Refuses a batch of more than `max` items with `InvalidArgument` naming
/// the limit.
pub fn check_batch(len: usize, max: usize, items: &str) -> Result<(), Status> {
    if len > max {
        return Err(Status::invalid_argument(format!(
            "too many {items} in one request: {len} (the limit is {max})"
        )));
    }
    Ok(())
}

/// The caller's deadline from the `grpc-timeout` header (`<digits><unit>`,
/// units `H M S m u n`), if it sent one we can read.
fn grpc_timeout(md: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let v = md.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(v: &str) -> tonic::metadata::MetadataMap {
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert("grpc-timeout", v.parse().unwrap());
        md
    }

    #[test]
    fn grpc_timeout_header_is_read_in_each_unit_and_junk_ignored() {
        assert_eq!(grpc_timeout(&md("2S")), Some(Duration::from_secs(2)));
        assert_eq!(
            grpc_timeout(&md("1500m")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(grpc_timeout(&md("3M")), Some(Duration::from_secs(180)));
        assert_eq!(grpc_timeout(&md("10u")), Some(Duration::from_micros(10)));
        assert_eq!(grpc_timeout(&md("S")), None);
        assert_eq!(grpc_timeout(&md("12x")), None);
        assert_eq!(grpc_timeout(&tonic::metadata::MetadataMap::new()), None);
    }

    #[test]
    fn a_batch_over_its_bound_is_invalid_argument_naming_the_limit() {
        assert!(check_batch(1000, MAX_ENTRY_BATCH, "entries").is_ok());
        let err = check_batch(1001, MAX_ENTRY_BATCH, "entries").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            err.message(),
            "too many entries in one request: 1001 (the limit is 1000)"
        );
    }
}
