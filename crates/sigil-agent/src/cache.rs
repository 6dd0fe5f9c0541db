//! The agent's view of what it may hand out, shared between the part that
//! keeps it fresh (the manager: attestation, sync, rotation) and the parts
//! that serve it (Workload API, SDS, CLI).
//!
//! The manager publishes an immutable [`Snapshot`] through a `watch` channel
//! every time anything changes; servers hold a [`CacheHandle`], pick the
//! SVIDs that match a caller's selectors, and push a new message whenever
//! the snapshot changes. JWT-SVIDs are minted on demand through
//! [`JwtMinter`] and cached by the manager.
//!
//! The agent holds X509-SVIDs for a bounded number of entries (SPIRE's
//! `x509_svid_cache_max_size`): the snapshot also lists the authorized
//! entries it holds none for ([`Snapshot::unsigned`]). A server that hands
//! out X509-SVIDs first takes a [`Subscription`] through
//! [`CacheHandle::subscribe`]: while it lives, the caller's entries are
//! always signed and never evicted, and subscribing waits (at most
//! [`SIGN_ON_DEMAND_TIMEOUT`]) for the manager to sign the ones missing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sigil_spiffe::{Bundle, Selector, SpiffeId, TrustDomain};
use tokio::sync::{Notify, watch};

/// How long a caller waits for the X509-SVIDs of its entries to be signed
/// on demand before it is served what the agent holds (SPIRE waits for the
/// caller's own deadline; a bound keeps a refused entry from holding a
/// call forever).
pub const SIGN_ON_DEMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// An authorized entry, as far as serving workloads is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    /// The entry ID.
    pub entry_id: String,
    /// Its SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// Its selectors (a workload must have all of them).
    pub selectors: Vec<Selector>,
    /// Its hint.
    pub hint: String,
    /// The trust domains it federates with.
    pub federates_with: Vec<TrustDomain>,
}

impl EntryRecord {
    /// True when every selector of the entry is among `workload`'s.
    pub fn matches(&self, workload: &[Selector]) -> bool {
        self.selectors.iter().all(|s| workload.contains(s))
    }
}

/// An X509-SVID the agent holds for one registration entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509SvidRecord {
    /// The entry it was issued for.
    pub entry_id: String,
    /// Its SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The entry's selectors (a workload must have all of them).
    pub selectors: Vec<Selector>,
    /// The entry's hint.
    pub hint: String,
    /// Certificate chain, leaf first, DER.
    pub chain: Vec<Vec<u8>>,
    /// Private key, PKCS#8 DER.
    pub key_pkcs8: Vec<u8>,
    /// Leaf expiry, unix seconds.
    pub expires_at: i64,
    /// The trust domains the entry federates with: their bundles go to
    /// workloads holding this SVID.
    pub federates_with: Vec<TrustDomain>,
}

impl X509SvidRecord {
    /// True when every selector of the entry is among `workload`'s.
    pub fn matches(&self, workload: &[Selector]) -> bool {
        self.selectors.iter().all(|s| workload.contains(s))
    }
}

/// Everything the agent can currently serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Our trust domain's bundle.
    pub bundle: Arc<Bundle>,
    /// The bundles of the trust domains authorized entries federate with,
    /// ordered by trust domain. Never holds our own trust domain.
    pub federated_bundles: Vec<Arc<Bundle>>,
    /// One X509-SVID per authorized entry that has one, ordered by entry ID.
    /// Shared with the manager's cache: publishing copies no key or chain.
    pub svids: Vec<Arc<X509SvidRecord>>,
    /// The authorized entries the agent holds no X509-SVID for (beyond
    /// the cache size, or not signed yet), ordered by entry ID.
    pub unsigned: Vec<Arc<EntryRecord>>,
}

impl Snapshot {
    /// The SVIDs a workload with `selectors` may have, in stable order.
    pub fn svids_for(&self, selectors: &[Selector]) -> Vec<&X509SvidRecord> {
        self.svids
            .iter()
            .filter(|s| s.matches(selectors))
            .map(|s| &**s)
            .collect()
    }

    /// The entries a workload with `selectors` matches that have no
    /// X509-SVID yet.
    pub fn unsigned_for(&self, selectors: &[Selector]) -> Vec<&EntryRecord> {
        self.unsigned
            .iter()
            .filter(|e| e.matches(selectors))
            .map(|e| &**e)
            .collect()
    }

    /// The federated bundles a holder of `svids` gets: those of the trust
    /// domains any of them federates with, ordered by trust domain. A trust
    /// domain whose bundle the agent does not have is left out, as SPIRE
    /// does.
    pub fn federated_bundles_for<'a>(&'a self, svids: &[&X509SvidRecord]) -> Vec<&'a Arc<Bundle>> {
        self.federated_bundles
            .iter()
            .filter(|b| b.trust_domain != self.bundle.trust_domain)
            .filter(|b| {
                svids
                    .iter()
                    .any(|s| s.federates_with.contains(&b.trust_domain))
            })
            .collect()
    }
}

/// A JWT-SVID as handed to a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSvidRecord {
    /// Its SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The compact JWS.
    pub token: String,
    /// The entry's hint.
    pub hint: String,
    /// Expiry, unix seconds.
    pub expires_at: i64,
}

/// Why a JWT-SVID could not be had.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The server is unreachable and no cached token is valid.
    #[error("server unavailable: {0}")]
    Unavailable(String),
    /// The server refused.
    #[error("server refused: {0}")]
    Refused(String),
}

/// Mints (or returns cached) JWT-SVIDs for an entry.
#[async_trait]
pub trait JwtMinter: Send + Sync + std::fmt::Debug {
    /// A JWT-SVID for `entry_id` with exactly these audiences.
    async fn jwt_svid(
        &self,
        entry_id: &str,
        audience: &[String],
    ) -> Result<JwtSvidRecord, JwtError>;
}

/// What the serving side holds.
#[derive(Debug, Clone)]
pub struct CacheHandle {
    /// Always the newest snapshot; `None` until the agent has attested.
    pub snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    /// JWT-SVID source.
    pub jwt: Arc<dyn JwtMinter>,
    /// The callers currently being served X509-SVIDs, shared with the
    /// manager.
    pub subscriptions: Arc<Subscriptions>,
}

impl CacheHandle {
    /// Registers a caller with `selectors` as served (an open stream or a
    /// fetch in progress) until the returned [`Subscription`] is dropped,
    /// marks its entries as just used, and, when some of them have no
    /// X509-SVID, asks the manager to sign them and waits until the
    /// snapshot holds them (at most [`SIGN_ON_DEMAND_TIMEOUT`]).
    pub async fn subscribe(&self, selectors: &[Selector]) -> Subscription {
        self.subscribe_within(selectors, SIGN_ON_DEMAND_TIMEOUT)
            .await
    }

    /// [`CacheHandle::subscribe`] with another bound on the wait.
    pub async fn subscribe_within(&self, selectors: &[Selector], wait: Duration) -> Subscription {
        let subscription = self.subscriptions.subscribe(selectors.to_vec());
        let mut snapshots = self.snapshots.clone();
        let deadline = tokio::time::Instant::now() + wait;
        let mut asked = false;
        loop {
            let missing = {
                let current = snapshots.borrow_and_update();
                let Some(snapshot) = current.as_deref() else {
                    return subscription;
                };
                if !asked {
                    self.subscriptions.touch(
                        snapshot
                            .svids_for(selectors)
                            .iter()
                            .map(|s| s.entry_id.as_str())
                            .chain(
                                snapshot
                                    .unsigned_for(selectors)
                                    .iter()
                                    .map(|e| e.entry_id.as_str()),
                            ),
                    );
                }
                !snapshot.unsigned_for(selectors).is_empty()
            };
            if !missing {
                return subscription;
            }
            if !asked {
                self.subscriptions.request_signing();
                asked = true;
            }
            match tokio::time::timeout_at(deadline, snapshots.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!(
                        ?selectors,
                        "X509-SVIDs of the caller's entries not signed in time; serving what the agent holds"
                    );
                    return subscription;
                }
            }
        }
    }
}

/// The callers being served X509-SVIDs right now, and when each entry's
/// SVID was last asked for: what the manager's LRU rules read.
#[derive(Debug, Default)]
pub struct Subscriptions {
    inner: Mutex<SubscriptionsInner>,
    signing: Notify,
}

#[derive(Debug, Default)]
struct SubscriptionsInner {
    next_id: u64,
    active: HashMap<u64, Vec<Selector>>,
    /// A counter, not a clock: only the order of uses matters.
    uses: u64,
    last_use: HashMap<String, u64>,
}

impl Subscriptions {
    /// Registers a caller with `selectors` until the guard is dropped.
    pub fn subscribe(self: &Arc<Self>, selectors: Vec<Selector>) -> Subscription {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.active.insert(id, selectors);
        Subscription {
            subscriptions: self.clone(),
            id,
        }
    }

    /// The selector sets of the callers being served now.
    pub fn active(&self) -> Vec<Vec<Selector>> {
        self.lock().active.values().cloned().collect()
    }

    /// Records a use of these entries' SVIDs, most recent last.
    pub fn touch<'a>(&self, entry_ids: impl IntoIterator<Item = &'a str>) {
        let mut inner = self.lock();
        for id in entry_ids {
            inner.uses += 1;
            let tick = inner.uses;
            inner.last_use.insert(id.to_owned(), tick);
        }
    }

    /// When each entry's SVID was last used (a counter; larger is more
    /// recent). Entries never used are absent.
    pub fn last_use(&self) -> HashMap<String, u64> {
        self.lock().last_use.clone()
    }

    /// Forgets the use of entries `keep` says no.
    pub fn retain_uses(&self, keep: impl Fn(&str) -> bool) {
        self.lock().last_use.retain(|id, _| keep(id));
    }

    /// Asks the manager to sign the entries of the callers being served
    /// that have no X509-SVID.
    pub fn request_signing(&self) {
        self.signing.notify_one();
    }

    /// Completes when signing was asked for.
    pub async fn signing_requested(&self) {
        self.signing.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SubscriptionsInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A caller being served; dropping it ends the registration.
#[derive(Debug)]
pub struct Subscription {
    subscriptions: Arc<Subscriptions>,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.subscriptions.lock().active.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_matches_when_its_selectors_are_a_subset_of_the_workloads() {
        let s = |v: &str| Selector::parse(v).unwrap();
        let rec = X509SvidRecord {
            entry_id: "e".into(),
            spiffe_id: SpiffeId::parse("spiffe://td/w").unwrap(),
            selectors: vec![s("unix:uid:1000"), s("unix:gid:1000")],
            hint: String::new(),
            chain: vec![],
            key_pkcs8: vec![],
            expires_at: 0,
            federates_with: vec![],
        };
        assert!(rec.matches(&[s("unix:uid:1000"), s("unix:gid:1000"), s("unix:user:a")]));
        assert!(!rec.matches(&[s("unix:uid:1000")]));
    }

    #[test]
    fn federated_bundles_for_is_the_union_of_the_records_federations() {
        let td = |n: &str| TrustDomain::new(n).unwrap();
        let record = |tds: &[&str]| X509SvidRecord {
            entry_id: "e".into(),
            spiffe_id: SpiffeId::parse("spiffe://example.org/w").unwrap(),
            selectors: vec![],
            hint: String::new(),
            chain: vec![],
            key_pkcs8: vec![],
            expires_at: 0,
            federates_with: tds.iter().map(|t| td(t)).collect(),
        };
        let snapshot = Snapshot {
            bundle: Arc::new(Bundle::new(td("example.org"))),
            federated_bundles: ["a.org", "b.org", "c.org"]
                .iter()
                .map(|t| Arc::new(Bundle::new(td(t))))
                .collect(),
            svids: vec![],
            unsigned: vec![],
        };
        let names = |bundles: Vec<&Arc<Bundle>>| -> Vec<String> {
            bundles
                .iter()
                .map(|b| b.trust_domain.name().to_owned())
                .collect()
        };
        let (one, two, none) = (record(&["a.org"]), record(&["c.org", "x.org"]), record(&[]));
        assert_eq!(
            names(snapshot.federated_bundles_for(&[&one, &two])),
            ["a.org", "c.org"]
        );
        assert!(snapshot.federated_bundles_for(&[&none]).is_empty());
        assert!(snapshot.federated_bundles_for(&[]).is_empty());
    }
}
