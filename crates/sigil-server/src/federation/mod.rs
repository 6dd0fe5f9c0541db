//! SPIFFE federation: serving our bundle ([`endpoint`]) and keeping the
//! bundles of the trust domains we federate with fresh ([`client`] and the
//! [`FederationManager`] here).
//!
//! The manager follows SPIRE's bundle client manager: the relationships are
//! the ones in the datastore (managed through the trust domain API) merged
//! with the `federates_with` ones of the config, which win and are never
//! written to the datastore. They are re-read every
//! [`CONFIG_RELOAD_INTERVAL`] and whenever the API changes one. Each managed
//! trust domain has one task that fetches its bundle, stores it when its
//! content changed, and sleeps a quarter of the bundle's refresh hint (at
//! least [`MINIMUM_REFRESH_HINT`]; [`DEFAULT_REFRESH_INTERVAL`] when there is
//! no hint) so a failed attempt is retried several times per hint.
//!
//! The manager never touches our own trust domain's bundle.

pub mod client;
pub mod endpoint;
pub mod serving;
#[cfg(test)]
mod testendpoint;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sigil_datastore::{
    BundleEndpointProfile, DataStore, DataStoreError, FederationRelationship, StoredBundle,
};
use sigil_spiffe::{Bundle, TrustDomain};
use tokio::sync::{Mutex, Notify, watch};

use crate::ca::{CaError, decode_bundle, encode_bundle};
use client::{EndpointAuth, FetchError};

/// The smallest refresh hint honoured (SPIRE's `MinimumRefreshHint`).
pub const MINIMUM_REFRESH_HINT: Duration = Duration::from_secs(60);

/// How long to wait between fetches when the bundle has no refresh hint.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);

/// How often relationships are re-read.
pub const CONFIG_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Fetch attempts per refresh hint period.
const ATTEMPTS_PER_REFRESH_HINT: u32 = 4;

/// Why one bundle update failed. Texts follow SPIRE's, so
/// `federation refresh` prints what SPIRE would.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// The bundle of the endpoint SPIFFE ID's trust domain could not be read.
    #[error("failed to fetch local copy of bundle for {trust_domain:?}: {source}")]
    EndpointBundle {
        /// The endpoint's trust domain.
        trust_domain: String,
        /// Why.
        source: BundleRecordError,
    },
    /// `https_spiffe` with no bundle for the endpoint's trust domain to
    /// authenticate it with: an operator must bootstrap one first.
    #[error(
        "can't perform SPIFFE Authentication: local copy of bundle for {0:?} not found \
         (set it with `bundle set` or the relationship's trust_domain_bundle)"
    )]
    NoEndpointBundle(String),
    /// The stored bundle of the federated trust domain could not be read.
    #[error("failed to fetch local federated bundle: {0}")]
    LocalBundle(#[source] BundleRecordError),
    /// Fetching from the endpoint failed.
    #[error("failed to fetch federated bundle from endpoint: {0}")]
    Fetch(#[source] FetchError),
    /// The fetched bundle could not be stored.
    #[error("failed to store fetched federated bundle: {0}")]
    Store(#[source] BundleRecordError),
}

/// Why a stored bundle record could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleRecordError {
    /// The datastore call failed.
    #[error(transparent)]
    DataStore(#[from] DataStoreError),
    /// The record does not decode, or the bundle does not encode.
    #[error(transparent)]
    Codec(#[from] CaError),
}

/// Keeps one updater task per federated trust domain.
pub struct FederationManager {
    ds: Arc<dyn DataStore>,
    own_td: TrustDomain,
    static_relationships: Vec<FederationRelationship>,
    updaters: Mutex<BTreeMap<TrustDomain, Updater>>,
    reload: Notify,
    stored: watch::Sender<u64>,
}

impl std::fmt::Debug for FederationManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederationManager")
            .field("own_td", &self.own_td)
            .field("static_relationships", &self.static_relationships)
            .finish_non_exhaustive()
    }
}

struct Updater {
    /// Dropping it stops the task.
    config: watch::Sender<FederationRelationship>,
    /// Serializes the periodic task and on-demand refreshes.
    running: Arc<Mutex<()>>,
}

impl FederationManager {
    /// A manager for `own_td` reading relationships from `ds` and
    /// `static_relationships` (the config's, which win). `stored` is bumped
    /// whenever a fetched bundle is stored, so agent syncs wake up.
    pub fn new(
        ds: Arc<dyn DataStore>,
        own_td: TrustDomain,
        static_relationships: Vec<FederationRelationship>,
        stored: watch::Sender<u64>,
    ) -> Arc<Self> {
        Arc::new(FederationManager {
            ds,
            own_td,
            static_relationships,
            updaters: Mutex::new(BTreeMap::new()),
            reload: Notify::new(),
            stored,
        })
    }

    /// Re-reads relationships every [`CONFIG_RELOAD_INTERVAL`] and when
    /// [`FederationManager::trigger_reload`] is called. Runs forever.
    pub async fn run(self: Arc<Self>) {
        loop {
            if let Err(e) = self.reload_relationships().await {
                tracing::error!(error = %e, "Failed to reload configs");
            }
            tokio::select! {
                _ = tokio::time::sleep(CONFIG_RELOAD_INTERVAL) => {}
                _ = self.reload.notified() => {}
            }
        }
    }

    /// Asks [`FederationManager::run`] to re-read relationships now.
    pub fn trigger_reload(&self) {
        self.reload.notify_one();
    }

    /// The relationships in effect: the datastore's, overridden by the
    /// config's.
    pub async fn relationships(
        &self,
    ) -> Result<BTreeMap<TrustDomain, FederationRelationship>, DataStoreError> {
        let (stored, _) = self.ds.list_federation_relationships(0, "").await?;
        let mut all: BTreeMap<TrustDomain, FederationRelationship> = stored
            .into_iter()
            .map(|r| (r.trust_domain.clone(), r))
            .collect();
        for r in &self.static_relationships {
            all.insert(r.trust_domain.clone(), r.clone());
        }
        all.remove(&self.own_td);
        Ok(all)
    }

    /// Fetches `td`'s bundle now (after re-reading relationships) and
    /// stores it if it changed. `Ok(false)` when `td` is not federated with.
    pub async fn refresh_bundle(&self, td: &TrustDomain) -> Result<bool, UpdateError> {
        if let Err(e) = self.reload_relationships().await {
            tracing::error!(error = %e, "Failed to reload configs");
        }
        let (rel, running) = {
            let updaters = self.updaters.lock().await;
            match updaters.get(td) {
                None => return Ok(false),
                Some(u) => (u.config.borrow().clone(), u.running.clone()),
            }
        };
        let _guard = running.lock().await;
        let (_, result) = update_bundle(self.ds.as_ref(), &rel).await;
        if let Ok(Some(_)) = &result {
            self.bump();
        }
        result.map(|_| true)
    }

    async fn reload_relationships(&self) -> Result<(), DataStoreError> {
        let mut wanted = self.relationships().await?;
        let mut updaters = self.updaters.lock().await;
        updaters.retain(|td, updater| match wanted.remove(td) {
            Some(rel) => {
                if *updater.config.borrow() != rel {
                    tracing::info!(
                        trust_domain = %td,
                        bundle_endpoint_url = %rel.bundle_endpoint_url,
                        bundle_endpoint_profile = rel.profile.name(),
                        "Updated configuration for managed trust domain"
                    );
                    updater.config.send_replace(rel);
                }
                true
            }
            None => {
                tracing::info!(trust_domain = %td, "Trust domain no longer managed");
                false
            }
        });
        for (td, rel) in wanted {
            tracing::info!(
                trust_domain = %td,
                bundle_endpoint_url = %rel.bundle_endpoint_url,
                bundle_endpoint_profile = rel.profile.name(),
                "Trust domain is now managed"
            );
            let (config, rx) = watch::channel(rel);
            let running = Arc::new(Mutex::new(()));
            tokio::spawn(run_updater(
                self.ds.clone(),
                rx,
                running.clone(),
                self.stored.clone(),
            ));
            updaters.insert(td, Updater { config, running });
        }
        Ok(())
    }

    fn bump(&self) {
        self.stored.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// How long to wait before the next fetch, given the bundle the last
/// attempt ended with (SPIRE's `calculateNextUpdate`).
pub fn next_refresh(bundle: Option<&Bundle>) -> Duration {
    let Some(bundle) = bundle else {
        // Nothing to authenticate with or to take a hint from yet: retry
        // soon, so a freshly bootstrapped bundle is picked up quickly.
        return MINIMUM_REFRESH_HINT;
    };
    match bundle.refresh_hint_seconds {
        None => DEFAULT_REFRESH_INTERVAL,
        Some(secs) => {
            let hint = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
            hint.max(MINIMUM_REFRESH_HINT) / ATTEMPTS_PER_REFRESH_HINT
        }
    }
}

/// One update of `rel.trust_domain`'s bundle, in SPIRE's order: pick the
/// endpoint's roots, read the stored bundle, fetch, store if different.
/// Returns the stored bundle as it was (when it could be read) and the
/// fetched bundle if it was new and stored.
pub async fn update_bundle(
    ds: &dyn DataStore,
    rel: &FederationRelationship,
) -> (Option<Bundle>, Result<Option<Bundle>, UpdateError>) {
    let auth = match &rel.profile {
        BundleEndpointProfile::HttpsWeb => EndpointAuth::Web,
        BundleEndpointProfile::HttpsSpiffe { endpoint_spiffe_id } => {
            let endpoint_td = endpoint_spiffe_id.trust_domain();
            match load_bundle(ds, &endpoint_td).await {
                Ok(Some(b)) => EndpointAuth::Spiffe {
                    id: endpoint_spiffe_id.clone(),
                    roots: b.x509_authorities,
                },
                Ok(None) => {
                    return (
                        None,
                        Err(UpdateError::NoEndpointBundle(endpoint_td.name().into())),
                    );
                }
                Err(source) => {
                    return (
                        None,
                        Err(UpdateError::EndpointBundle {
                            trust_domain: endpoint_td.name().into(),
                            source,
                        }),
                    );
                }
            }
        }
    };
    let local = match load_bundle(ds, &rel.trust_domain).await {
        Ok(b) => b,
        Err(e) => return (None, Err(UpdateError::LocalBundle(e))),
    };
    let fetched =
        match client::fetch_bundle(&rel.trust_domain, &rel.bundle_endpoint_url, &auth).await {
            Ok(b) => b,
            Err(e) => return (local, Err(UpdateError::Fetch(e))),
        };
    if local
        .as_ref()
        .is_some_and(|l| l.to_jwks() == fetched.to_jwks())
    {
        return (local, Ok(None));
    }
    let stored = encode_bundle(&fetched).map_err(BundleRecordError::from);
    let stored = match stored {
        Ok(data) => ds
            .set_bundle(StoredBundle {
                trust_domain: rel.trust_domain.clone(),
                data,
            })
            .await
            .map_err(BundleRecordError::from),
        Err(e) => Err(e),
    };
    match stored {
        Ok(()) => (local, Ok(Some(fetched))),
        Err(e) => (local, Err(UpdateError::Store(e))),
    }
}

async fn load_bundle(
    ds: &dyn DataStore,
    td: &TrustDomain,
) -> Result<Option<Bundle>, BundleRecordError> {
    match ds.get_bundle(td).await? {
        None => Ok(None),
        Some(s) => Ok(Some(decode_bundle(td, &s.data)?)),
    }
}

async fn run_updater(
    ds: Arc<dyn DataStore>,
    mut config: watch::Receiver<FederationRelationship>,
    running: Arc<Mutex<()>>,
    stored: watch::Sender<u64>,
) {
    loop {
        let rel = config.borrow_and_update().clone();
        let td = rel.trust_domain.name().to_owned();
        let next = {
            let _guard = running.lock().await;
            tracing::debug!(trust_domain = %td, "Polling for bundle update");
            let (local, result) = update_bundle(ds.as_ref(), &rel).await;
            match result {
                Ok(Some(fetched)) => {
                    tracing::info!(
                        trust_domain = %td,
                        sequence = fetched.sequence_number,
                        "Bundle refreshed"
                    );
                    stored.send_modify(|n| *n = n.wrapping_add(1));
                    next_refresh(Some(&fetched))
                }
                Ok(None) => next_refresh(local.as_ref()),
                Err(e) => {
                    tracing::error!(trust_domain = %td, error = %e, "Error updating bundle");
                    next_refresh(local.as_ref())
                }
            }
        };
        tracing::debug!(
            trust_domain = %td,
            in_secs = next.as_secs(),
            "Scheduling next bundle refresh"
        );
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            changed = config.changed() => {
                // A new configuration is fetched with at once; a dropped
                // sender means the relationship is gone.
                if changed.is_err() {
                    tracing::info!(trust_domain = %td, "No longer polling for updates");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(hint: Option<i64>) -> Bundle {
        let mut b = Bundle::new(TrustDomain::new("b.org").unwrap());
        b.refresh_hint_seconds = hint;
        b
    }

    #[test]
    fn next_refresh_is_a_quarter_of_the_hint_clamped_to_a_minute() {
        assert_eq!(
            next_refresh(Some(&bundle(Some(300)))),
            Duration::from_secs(75)
        );
        assert_eq!(
            next_refresh(Some(&bundle(Some(1)))),
            Duration::from_secs(15)
        );
        assert_eq!(
            next_refresh(Some(&bundle(Some(-5)))),
            Duration::from_secs(15)
        );
        assert_eq!(next_refresh(Some(&bundle(None))), DEFAULT_REFRESH_INTERVAL);
        assert_eq!(next_refresh(None), MINIMUM_REFRESH_HINT);
    }

    /// A relationship with `b.org` over `https_spiffe`, with `b.org`'s
    /// bundle bootstrapped in `ds`, as an operator would.
    async fn federated_store(
        ep: &testendpoint::TestEndpoint,
    ) -> (
        tempfile::TempDir,
        Arc<dyn DataStore>,
        FederationRelationship,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let ds = sigil_datastore::open("sqlite3", dir.path().join("ds.sqlite3").to_str().unwrap())
            .await
            .unwrap();
        let td = TrustDomain::new("b.org").unwrap();
        let mut first = Bundle::new(td.clone());
        first.x509_authorities = vec![ep.root.clone()];
        ds.set_bundle(StoredBundle {
            trust_domain: td.clone(),
            data: encode_bundle(&first).unwrap(),
        })
        .await
        .unwrap();
        let rel = FederationRelationship {
            trust_domain: td,
            bundle_endpoint_url: ep.url.clone(),
            profile: BundleEndpointProfile::HttpsSpiffe {
                endpoint_spiffe_id: sigil_spiffe::SpiffeId::parse("spiffe://b.org/spire/server")
                    .unwrap(),
            },
        };
        (dir, ds, rel)
    }

    #[tokio::test]
    async fn bad_endpoint_answers_never_replace_the_last_good_bundle() {
        let ep = testendpoint::TestEndpoint::start("b.org").await;
        let (_dir, ds, rel) = federated_store(&ep).await;
        // A good fetch stores the endpoint's bundle (it has a refresh hint,
        // so it differs from the bootstrapped one).
        let (_, r) = update_bundle(ds.as_ref(), &rel).await;
        let good = r.unwrap().expect("the fetched bundle is new and stored");
        let stored = || {
            let (ds, td) = (ds.clone(), rel.trust_domain.clone());
            async move { load_bundle(ds.as_ref(), &td).await.unwrap().unwrap() }
        };
        assert_eq!(stored().await.to_jwks(), good.to_jwks());

        let (other_root, _) = testendpoint::ca("c.org");
        let mut huge = vec![b' '; client::MAX_BUNDLE_BYTES + 1];
        huge.extend_from_slice(b"{}");
        for (what, body) in [
            ("garbage", b"not json at all".to_vec()),
            ("oversized", huge),
            (
                "wrong trust domain",
                testendpoint::bundle_doc("c.org", &other_root),
            ),
        ] {
            ep.set_body(body);
            let (local, r) = update_bundle(ds.as_ref(), &rel).await;
            let e = r.expect_err(what);
            assert!(matches!(e, UpdateError::Fetch(_)), "{what}: {e}");
            assert!(
                e.to_string()
                    .starts_with("failed to fetch federated bundle from endpoint: "),
                "{what}: {e}"
            );
            assert_eq!(local.unwrap().to_jwks(), good.to_jwks(), "{what}");
            assert_eq!(
                stored().await.to_jwks(),
                good.to_jwks(),
                "{what} kept the last good bundle"
            );
        }
    }
}
