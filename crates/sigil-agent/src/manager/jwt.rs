//! JWT-SVIDs for workloads, minted by the server on demand and cached per
//! (entry, audience set) until half their lifetime, like SPIRE's agent.
//! The cache holds at most `jwt_svid_cache_max_size` tokens (a hard
//! limit, as in SPIRE): the least recently used one goes first.
//!
//! When the server cannot be reached, a cached token that has not expired
//! yet is still handed out (with a warning): it is valid, just older than
//! the agent would like.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sigil_plugin::clock::Clock;

use super::api::{ServerApi, is_transient};
use super::sync::should_rotate;
use crate::cache::{JwtError, JwtMinter, JwtSvidRecord};

type Key = (String, Vec<String>);

/// SPIRE's default `jwt_svid_cache_max_size`. A workload asking with a new
/// audience every time cannot grow the agent's memory without bound.
pub const DEFAULT_MAX_CACHED_JWT_SVIDS: usize = 1000;

#[derive(Debug, Clone)]
struct Cached {
    record: JwtSvidRecord,
    issued_at: i64,
    /// When it was last handed out (a counter, larger is more recent).
    used: u64,
}

/// Tokens with their order of use.
#[derive(Debug, Default)]
struct Lru {
    tokens: HashMap<Key, Cached>,
    by_use: BTreeMap<u64, Key>,
    uses: u64,
}

impl Lru {
    fn get(&mut self, key: &Key) -> Option<Cached> {
        self.uses += 1;
        let now = self.uses;
        let c = self.tokens.get_mut(key)?;
        self.by_use.remove(&c.used);
        c.used = now;
        self.by_use.insert(now, key.clone());
        Some(c.clone())
    }

    /// Inserts, dropping the least recently used tokens beyond `max`.
    fn insert(&mut self, key: Key, record: JwtSvidRecord, issued_at: i64, max: usize) {
        self.uses += 1;
        let used = self.uses;
        if let Some(old) = self.tokens.insert(
            key.clone(),
            Cached {
                record,
                issued_at,
                used,
            },
        ) {
            self.by_use.remove(&old.used);
        }
        self.by_use.insert(used, key);
        while self.tokens.len() > max {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            self.tokens.remove(&oldest);
        }
    }

    fn retain(&mut self, keep: impl Fn(&Key, &Cached) -> bool) {
        let by_use = &mut self.by_use;
        self.tokens.retain(|k, c| {
            let kept = keep(k, c);
            if !kept {
                by_use.remove(&c.used);
            }
            kept
        });
    }
}

/// The manager's [`JwtMinter`].
#[derive(Debug)]
pub struct CachingJwtMinter {
    api: Arc<dyn ServerApi>,
    clock: Arc<dyn Clock>,
    max_size: usize,
    cache: Mutex<Lru>,
}

impl CachingJwtMinter {
    /// A minter asking `api`, caching [`DEFAULT_MAX_CACHED_JWT_SVIDS`]
    /// tokens.
    pub fn new(api: Arc<dyn ServerApi>, clock: Arc<dyn Clock>) -> Self {
        CachingJwtMinter {
            api,
            clock,
            max_size: DEFAULT_MAX_CACHED_JWT_SVIDS,
            cache: Mutex::new(Lru::default()),
        }
    }

    /// Caches at most `max_size` tokens (at least one).
    pub fn with_max_size(mut self, max_size: usize) -> Self {
        self.max_size = max_size.max(1);
        self
    }

    /// Forgets tokens of entries not in `entry_ids` and tokens that expired.
    pub fn retain_entries(&self, entry_ids: &BTreeSet<&str>) {
        let now = self.clock.unix_now();
        self.lock()
            .retain(|(id, _), c| entry_ids.contains(id.as_str()) && c.record.expires_at > now);
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.lock().tokens.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl JwtMinter for CachingJwtMinter {
    async fn jwt_svid(
        &self,
        entry_id: &str,
        audience: &[String],
    ) -> Result<JwtSvidRecord, JwtError> {
        let mut normalized: Vec<String> = audience.to_vec();
        normalized.sort();
        normalized.dedup();
        let key = (entry_id.to_owned(), normalized);
        let now = self.clock.unix_now();
        let cached = self.lock().get(&key);
        if let Some(c) = &cached
            && !should_rotate(now, c.issued_at, c.record.expires_at)
        {
            return Ok(c.record.clone());
        }
        match self.api.new_jwt_svid(entry_id, audience).await {
            Ok(issued) => {
                let record = JwtSvidRecord {
                    spiffe_id: issued.spiffe_id,
                    token: issued.token,
                    hint: issued.hint,
                    expires_at: issued.expires_at,
                };
                let mut cache = self.lock();
                if cache.tokens.len() >= self.max_size && !cache.tokens.contains_key(&key) {
                    // Expired tokens go before any valid one.
                    cache.retain(|_, c| c.record.expires_at > now);
                }
                cache.insert(key, record.clone(), issued.issued_at, self.max_size);
                Ok(record)
            }
            Err(status) if is_transient(&status) => match cached {
                Some(c) if c.record.expires_at > now => {
                    tracing::warn!(entry_id, error = %status.message(), "Could not renew JWT-SVID; serving the cached one");
                    Ok(c.record)
                }
                _ => Err(JwtError::Unavailable(status.message().to_owned())),
            },
            Err(status) => Err(JwtError::Refused(format!(
                "{}: {}",
                code_name(status.code()),
                status.message()
            ))),
        }
    }
}

fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testing::FakeServer;
    use sigil_plugin::clock::ManualClock;
    use std::time::{Duration, SystemTime};

    fn minter() -> (Arc<FakeServer>, Arc<ManualClock>, CachingJwtMinter) {
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let server = Arc::new(FakeServer::with_clock("example.org", clock.clone()));
        let m = CachingJwtMinter::new(server.clone(), clock.clone());
        (server, clock, m)
    }

    #[tokio::test]
    async fn tokens_are_cached_per_entry_and_audience_set_until_half_life() {
        let (server, clock, m) = minter();
        let a = m.jwt_svid("e1", &["b".into(), "a".into()]).await.unwrap();
        let again = m
            .jwt_svid("e1", &["a".into(), "b".into(), "a".into()])
            .await
            .unwrap();
        assert_eq!(a, again);
        assert_eq!(server.jwt_issued(), 1);
        m.jwt_svid("e1", &["c".into()]).await.unwrap();
        m.jwt_svid("e2", &["a".into(), "b".into()]).await.unwrap();
        assert_eq!(server.jwt_issued(), 3);
        clock.advance(Duration::from_secs(server.jwt_ttl() / 2));
        let renewed = m.jwt_svid("e1", &["a".into(), "b".into()]).await.unwrap();
        assert_ne!(renewed.token, a.token);
        assert_eq!(server.jwt_issued(), 4);
    }

    #[tokio::test]
    async fn cache_is_bounded_when_every_call_uses_a_new_audience() {
        let (_server, _clock, m) = minter();
        for i in 0..DEFAULT_MAX_CACHED_JWT_SVIDS + 25 {
            m.jwt_svid("e1", &[format!("aud-{i}")]).await.unwrap();
        }
        assert_eq!(m.len(), DEFAULT_MAX_CACHED_JWT_SVIDS);
    }

    #[tokio::test]
    async fn a_full_cache_drops_the_least_recently_used_token() {
        let (server, _clock, m) = minter();
        let m = m.with_max_size(2);
        let a = m.jwt_svid("e1", &["a".into()]).await.unwrap();
        m.jwt_svid("e1", &["b".into()]).await.unwrap();
        // "a" is used again, so "b" is now the least recently used.
        assert_eq!(m.jwt_svid("e1", &["a".into()]).await.unwrap(), a);
        m.jwt_svid("e1", &["c".into()]).await.unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(server.jwt_issued(), 3);
        assert_eq!(m.jwt_svid("e1", &["a".into()]).await.unwrap(), a);
        assert_eq!(server.jwt_issued(), 3, "a stayed cached");
        m.jwt_svid("e1", &["b".into()]).await.unwrap();
        assert_eq!(server.jwt_issued(), 4, "b was dropped and minted again");
    }

    #[tokio::test]
    async fn unreachable_server_serves_valid_cache_else_unavailable() {
        let (server, clock, m) = minter();
        let a = m.jwt_svid("e1", &["x".into()]).await.unwrap();
        server.set_reachable(false);
        clock.advance(Duration::from_secs(server.jwt_ttl() / 2 + 1));
        assert_eq!(m.jwt_svid("e1", &["x".into()]).await.unwrap(), a);
        clock.advance(Duration::from_secs(server.jwt_ttl()));
        assert!(matches!(
            m.jwt_svid("e1", &["x".into()]).await,
            Err(JwtError::Unavailable(_))
        ));
        assert!(matches!(
            m.jwt_svid("e9", &["x".into()]).await,
            Err(JwtError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn refusals_are_reported_and_removed_entries_forgotten() {
        let (server, _clock, m) = minter();
        server.refuse_entry("bad");
        let e = m.jwt_svid("bad", &["x".into()]).await.unwrap_err();
        assert!(
            matches!(e, JwtError::Refused(ref s) if s.contains("NotFound")),
            "{e}"
        );
        m.jwt_svid("e1", &["x".into()]).await.unwrap();
        m.jwt_svid("e2", &["x".into()]).await.unwrap();
        m.retain_entries(&BTreeSet::from(["e2"]));
        assert_eq!(m.len(), 1);
    }
}
