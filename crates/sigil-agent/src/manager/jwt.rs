//! JWT-SVIDs for workloads, minted by the server on demand and cached per
//! (entry, audience set) until half their lifetime, like SPIRE's agent.
//!
//! When the server cannot be reached, a cached token that has not expired
//! yet is still handed out (with a warning): it is valid, just older than
//! the agent would like.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sigil_plugin::clock::Clock;

use super::api::{ServerApi, is_transient};
use super::sync::should_rotate;
use crate::cache::{JwtError, JwtMinter, JwtSvidRecord};

type Key = (String, Vec<String>);

/// At most this many tokens are cached (SPIRE caps its JWT-SVID cache at
/// 1000 too). A workload asking with a new audience every time cannot grow
/// the agent's memory without bound.
pub const MAX_CACHED_JWT_SVIDS: usize = 1000;

#[derive(Debug, Clone)]
struct Cached {
    record: JwtSvidRecord,
    issued_at: i64,
}

/// The manager's [`JwtMinter`].
#[derive(Debug)]
pub struct CachingJwtMinter {
    api: Arc<dyn ServerApi>,
    clock: Arc<dyn Clock>,
    cache: Mutex<HashMap<Key, Cached>>,
}

impl CachingJwtMinter {
    /// A minter asking `api`.
    pub fn new(api: Arc<dyn ServerApi>, clock: Arc<dyn Clock>) -> Self {
        CachingJwtMinter {
            api,
            clock,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets tokens of entries not in `entry_ids` and tokens that expired.
    pub fn retain_entries(&self, entry_ids: &BTreeSet<&str>) {
        let now = self.clock.unix_now();
        self.lock()
            .retain(|(id, _), c| entry_ids.contains(id.as_str()) && c.record.expires_at > now);
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Cached>> {
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
        let cached = self.lock().get(&key).cloned();
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
                if cache.len() >= MAX_CACHED_JWT_SVIDS && !cache.contains_key(&key) {
                    // Expired tokens go first; if none, the oldest one.
                    cache.retain(|_, c| c.record.expires_at > now);
                    if cache.len() >= MAX_CACHED_JWT_SVIDS
                        && let Some(oldest) = cache
                            .iter()
                            .min_by_key(|(_, c)| c.issued_at)
                            .map(|(k, _)| k.clone())
                    {
                        cache.remove(&oldest);
                    }
                }
                cache.insert(
                    key,
                    Cached {
                        record: record.clone(),
                        issued_at: issued.issued_at,
                    },
                );
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
        for i in 0..MAX_CACHED_JWT_SVIDS + 25 {
            m.jwt_svid("e1", &[format!("aud-{i}")]).await.unwrap();
        }
        assert_eq!(m.len(), MAX_CACHED_JWT_SVIDS);
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
