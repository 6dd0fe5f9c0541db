//! Token buckets, alone and one per key, for the rate limits SPIRE's
//! configuration describes: the server's per-IP attestation and signing
//! limits and the agent's per-caller Workload API limits.
//!
//! A bucket holds at most `burst` tokens and refills at `rate` tokens per
//! second; it starts full. Two ways to spend:
//!
//! - [`TokenBucket::try_take`]: now or never (the agent's Workload API
//!   limits, which refuse a call over the limit).
//! - [`TokenBucket::reserve`]: take now and wait for the debt to be repaid,
//!   refused only when the wait would outlast the caller's deadline or when
//!   more than `burst` tokens are asked at once (the server's limits, which
//!   delay a caller over the limit as SPIRE does).
//!
//! Time is passed in, never read here, so tests drive it. This module does
//! no I/O and never sleeps; callers sleep for the returned wait.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often a [`PerKeyLimiter`] forgets keys that were not used since the
/// previous sweep, so a stream of new keys (callers) cannot grow it without
/// bound. A bucket unused for this long has refilled completely anyway.
pub const KEY_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Why tokens were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimitError {
    /// More tokens were asked at once than the bucket can ever hold.
    #[error("rate ({requested}) exceeds burst size ({burst})")]
    ExceedsBurst {
        /// Tokens asked.
        requested: u32,
        /// The bucket's capacity.
        burst: u32,
    },
    /// The caller would have to wait past its deadline.
    #[error("rate: Wait(n={requested}) would exceed context deadline")]
    WouldExceedDeadline {
        /// Tokens asked.
        requested: u32,
    },
    /// No token is available now.
    #[error("rate limit exceeded")]
    Exhausted,
}

/// One token bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: u32,
    /// May go negative: tokens reserved ahead of time.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `per_second` tokens a
    /// second. `per_second` and `burst` must be at least 1 (0 is raised to 1).
    pub fn new(per_second: u32, burst: u32, now: Instant) -> TokenBucket {
        let burst = burst.max(1);
        TokenBucket {
            rate: f64::from(per_second.max(1)),
            burst,
            tokens: f64::from(burst),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(f64::from(self.burst));
    }

    /// Takes `n` tokens if they are all there now.
    pub fn try_take(&mut self, n: u32, now: Instant) -> Result<(), RateLimitError> {
        self.refill(now);
        if self.tokens >= f64::from(n) {
            self.tokens -= f64::from(n);
            Ok(())
        } else {
            Err(RateLimitError::Exhausted)
        }
    }

    /// Takes `n` tokens, possibly ahead of time, and returns how long the
    /// caller must wait before using them. Refuses, taking nothing, when
    /// `n` exceeds the burst or the wait would exceed `max_wait`.
    pub fn reserve(
        &mut self,
        n: u32,
        now: Instant,
        max_wait: Option<Duration>,
    ) -> Result<Duration, RateLimitError> {
        if n > self.burst {
            return Err(RateLimitError::ExceedsBurst {
                requested: n,
                burst: self.burst,
            });
        }
        self.refill(now);
        let after = self.tokens - f64::from(n);
        let wait = if after >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-after / self.rate)
        };
        if max_wait.is_some_and(|max| wait > max) {
            return Err(RateLimitError::WouldExceedDeadline { requested: n });
        }
        self.tokens = after;
        Ok(wait)
    }
}

struct Buckets<K> {
    current: HashMap<K, TokenBucket>,
    previous: HashMap<K, TokenBucket>,
    last_sweep: Instant,
}

/// A token bucket per key (caller IP, caller selector set), all with the
/// same rate and burst, created full on first use. Keys unused for a
/// [`KEY_SWEEP_INTERVAL`] are forgotten.
pub struct PerKeyLimiter<K> {
    per_second: u32,
    burst: u32,
    buckets: Mutex<Buckets<K>>,
}

impl<K> std::fmt::Debug for PerKeyLimiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerKeyLimiter")
            .field("per_second", &self.per_second)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> PerKeyLimiter<K> {
    /// Buckets of `per_second` tokens a second with a burst of the same
    /// size, as SPIRE's limiters are.
    pub fn new(per_second: u32) -> PerKeyLimiter<K> {
        PerKeyLimiter::with_burst(per_second, per_second)
    }

    /// Buckets of `per_second` tokens a second holding at most `burst`.
    pub fn with_burst(per_second: u32, burst: u32) -> PerKeyLimiter<K> {
        PerKeyLimiter {
            per_second: per_second.max(1),
            burst: burst.max(1),
            buckets: Mutex::new(Buckets {
                current: HashMap::new(),
                previous: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// The rate, in tokens a second.
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// The burst, in tokens.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    fn with_bucket<T>(&self, key: &K, now: Instant, f: impl FnOnce(&mut TokenBucket) -> T) -> T {
        let mut guard = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let b = &mut *guard;
        if !b.current.contains_key(key) {
            let bucket = match b.previous.remove(key) {
                Some(bucket) => bucket,
                None => {
                    if now.saturating_duration_since(b.last_sweep) >= KEY_SWEEP_INTERVAL {
                        b.previous = std::mem::take(&mut b.current);
                        b.last_sweep = now;
                    }
                    TokenBucket::new(self.per_second, self.burst, now)
                }
            };
            b.current.insert(key.clone(), bucket);
        }
        let bucket = b
            .current
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::new(self.per_second, self.burst, now));
        f(bucket)
    }

    /// [`TokenBucket::try_take`] on `key`'s bucket.
    pub fn try_take(&self, key: &K, n: u32, now: Instant) -> Result<(), RateLimitError> {
        self.with_bucket(key, now, |b| b.try_take(n, now))
    }

    /// [`TokenBucket::reserve`] on `key`'s bucket.
    pub fn reserve(
        &self,
        key: &K,
        n: u32,
        now: Instant,
        max_wait: Option<Duration>,
    ) -> Result<Duration, RateLimitError> {
        self.with_bucket(key, now, |b| b.reserve(n, now, max_wait))
    }

    /// How many keys are remembered, for tests of the sweep.
    pub fn keys(&self) -> usize {
        let b = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        b.current.len() + b.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_bucket_starts_full_and_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, 2, t0);
        assert_eq!(b.try_take(1, t0), Ok(()));
        assert_eq!(b.try_take(1, t0), Ok(()));
        assert_eq!(b.try_take(1, t0), Err(RateLimitError::Exhausted));
        // Half a second at 2/s is one token.
        assert_eq!(b.try_take(1, t0 + 499 * MS), Err(RateLimitError::Exhausted));
        assert_eq!(b.try_take(1, t0 + 501 * MS), Ok(()));
        // Never more than the burst, however long it rests.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.try_take(2, later), Ok(()));
        assert_eq!(b.try_take(1, later), Err(RateLimitError::Exhausted));
    }

    #[test]
    fn reserving_past_the_tokens_returns_the_wait_until_they_are_repaid() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1, 1, t0);
        assert_eq!(b.reserve(1, t0, None), Ok(Duration::ZERO));
        let wait = b.reserve(1, t0, None).unwrap();
        assert!((999 * MS..=1001 * MS).contains(&wait), "{wait:?}");
        // The next one queues behind it.
        let wait = b.reserve(1, t0, None).unwrap();
        assert!((1999 * MS..=2001 * MS).contains(&wait), "{wait:?}");
    }

    #[test]
    fn a_reservation_longer_than_the_deadline_is_refused_and_takes_nothing() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1, 1, t0);
        assert_eq!(b.reserve(1, t0, Some(100 * MS)), Ok(Duration::ZERO));
        assert_eq!(
            b.reserve(1, t0, Some(100 * MS)),
            Err(RateLimitError::WouldExceedDeadline { requested: 1 })
        );
        // Nothing was taken: a second later one token is there again.
        assert_eq!(
            b.reserve(1, t0 + Duration::from_secs(1), Some(Duration::ZERO)),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn asking_more_than_the_burst_at_once_is_refused_naming_both() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(500, 500, t0);
        let err = b.reserve(501, t0, None).unwrap_err();
        assert_eq!(err.to_string(), "rate (501) exceeds burst size (500)");
        assert_eq!(b.reserve(500, t0, Some(Duration::ZERO)), Ok(Duration::ZERO));
    }

    #[test]
    fn each_key_has_its_own_bucket() {
        let t0 = Instant::now();
        let l = PerKeyLimiter::new(1);
        assert_eq!(l.try_take(&"a", 1, t0), Ok(()));
        assert_eq!(l.try_take(&"a", 1, t0), Err(RateLimitError::Exhausted));
        assert_eq!(l.try_take(&"b", 1, t0), Ok(()));
    }

    #[test]
    fn keys_unused_for_two_sweeps_are_forgotten_and_used_ones_kept() {
        let t0 = Instant::now();
        let l = PerKeyLimiter::new(1);
        for i in 0..100 {
            l.try_take(&i, 1, t0).unwrap();
        }
        let t1 = t0 + KEY_SWEEP_INTERVAL * 2;
        // A new key after the interval moves the 100 to `previous`...
        l.try_take(&1000, 1, t1).unwrap();
        // ...one of which comes back with its state.
        l.try_take(&7, 1, t1).unwrap();
        assert_eq!(l.keys(), 101);
        let t2 = t1 + KEY_SWEEP_INTERVAL * 2;
        l.try_take(&2000, 1, t2).unwrap();
        // The 99 unused since t0 are gone; 1000 and 7 are in `previous`.
        assert_eq!(l.keys(), 3);
    }
}
