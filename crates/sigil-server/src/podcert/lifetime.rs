//! How long a pod certificate lives and when the kubelet starts replacing
//! it.
//!
//! The rule, in the order it is applied:
//! 1. the wanted lifetime is the selecting ClusterSPIFFEID's `ttl`, or the
//!    server's `default_x509_svid_ttl` when it sets none;
//! 2. raised to one hour, the shortest certificate the API accepts;
//! 3. cut to the request's `maxExpirationSeconds`;
//! 4. the CA cuts it to its own expiry, as for every X509-SVID. If that
//!    leaves less than an hour, the request fails (the API would refuse
//!    such a certificate) rather than get one that breaks the rules.
//!
//! `beginRefreshAt` is half-way through the certificate's validity (as the
//! agent rotates SVIDs), rounded down to a second, and always at least ten
//! minutes after `notBefore` and before `notAfter`, as the API requires.
//!
//! Pure arithmetic: no clock, no I/O.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The shortest certificate lifetime the API accepts.
pub const MIN_LIFETIME: Duration = Duration::from_secs(3600);

/// How far `beginRefreshAt` must stay from either end of the validity.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(600);

/// Why an issued certificate's validity cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifetimeError {
    /// Shorter than [`MIN_LIFETIME`] (the CA expires too soon).
    #[error(
        "the certificate would be valid for {lifetime:?}, less than the 1h Kubernetes requires (the X.509 CA expires too soon)"
    )]
    TooShort {
        /// The lifetime the CA allowed.
        lifetime: Duration,
    },
    /// Longer than the request allows (never, unless the CA misbehaves).
    #[error(
        "the certificate would be valid for {lifetime:?}, more than maxExpirationSeconds ({max:?})"
    )]
    TooLong {
        /// The lifetime.
        lifetime: Duration,
        /// The request's limit.
        max: Duration,
    },
    /// `notAfter` is not after `notBefore`.
    #[error("the certificate's notAfter is not after its notBefore")]
    Inverted,
}

/// The lifetime to ask the CA for: `ttl` (the ClusterSPIFFEID's, or the
/// server default), at least [`MIN_LIFETIME`], at most
/// `max_expiration_seconds` (a negative one counts as zero).
pub fn requested(ttl: Duration, max_expiration_seconds: i32) -> Duration {
    let max = Duration::from_secs(u64::try_from(max_expiration_seconds).unwrap_or(0));
    ttl.max(MIN_LIFETIME).min(max)
}

/// Checks the validity the CA gave against the API's rules and returns
/// `beginRefreshAt`.
pub fn begin_refresh_at(
    not_before: SystemTime,
    not_after: SystemTime,
    max: Duration,
) -> Result<SystemTime, LifetimeError> {
    let lifetime = not_after
        .duration_since(not_before)
        .map_err(|_| LifetimeError::Inverted)?;
    if lifetime < MIN_LIFETIME {
        return Err(LifetimeError::TooShort { lifetime });
    }
    if lifetime > max {
        return Err(LifetimeError::TooLong { lifetime, max });
    }
    let half = floor_second(not_before + lifetime / 2);
    Ok(half
        .max(not_before + REFRESH_MARGIN)
        .min(not_after - REFRESH_MARGIN))
}

fn floor_second(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(_) => t,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const H: u64 = 3600;

    #[test]
    fn the_requested_lifetime_is_the_ttl_raised_to_an_hour_and_cut_to_the_maximum() {
        let s = Duration::from_secs;
        // Server default 1h, request allows 24h: 1h.
        assert_eq!(requested(s(H), 86400), s(H));
        // A 5m default is raised to the API's minimum.
        assert_eq!(requested(s(300), 86400), s(H));
        // A 48h ClusterSPIFFEID ttl is cut to the request's 24h.
        assert_eq!(requested(s(48 * H), 86400), s(24 * H));
        // A 6h ttl within a 24h maximum is kept.
        assert_eq!(requested(s(6 * H), 86400), s(6 * H));
        // A maximum under an hour wins (the API forbids it; the result is
        // then refused by begin_refresh_at).
        assert_eq!(requested(s(H), 1800), s(1800));
        assert_eq!(requested(s(H), -5), s(0));
    }

    #[test]
    fn refresh_begins_at_half_life_within_the_api_margins() {
        let nb = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let s = Duration::from_secs;
        // 1h: refresh at 30m.
        assert_eq!(begin_refresh_at(nb, nb + s(H), s(H)).unwrap(), nb + s(1800));
        // 24h: refresh at 12h.
        assert_eq!(
            begin_refresh_at(nb, nb + s(24 * H), s(24 * H)).unwrap(),
            nb + s(12 * H)
        );
        // Odd seconds round down to a whole second.
        assert_eq!(
            begin_refresh_at(nb, nb + s(H + 1), s(2 * H)).unwrap(),
            nb + s(1800)
        );
        // Every result satisfies the API's bounds.
        for secs in [H, H + 7, 2 * H, 91 * 24 * H] {
            let na = nb + s(secs);
            let r = begin_refresh_at(nb, na, s(secs)).unwrap();
            assert!(r >= nb + REFRESH_MARGIN && r <= na - REFRESH_MARGIN);
        }
    }

    #[test]
    fn a_validity_the_api_would_refuse_is_an_error() {
        let nb = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let s = Duration::from_secs;
        assert_eq!(
            begin_refresh_at(nb, nb + s(H - 1), s(24 * H)),
            Err(LifetimeError::TooShort { lifetime: s(H - 1) })
        );
        assert_eq!(
            begin_refresh_at(nb, nb + s(2 * H), s(H)),
            Err(LifetimeError::TooLong {
                lifetime: s(2 * H),
                max: s(H)
            })
        );
        assert_eq!(
            begin_refresh_at(nb + s(1), nb, s(H)),
            Err(LifetimeError::Inverted)
        );
    }
}
