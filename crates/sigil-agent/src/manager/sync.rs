//! One synchronization with the server, and the decisions behind it.
//!
//! A sync fetches the bundle and the authorized entries, forgets the SVIDs
//! of entries no longer authorized, and asks for new X509-SVIDs (fresh key
//! per SVID, CSRs in batches of at most [`MAX_BATCH`]) for every entry that
//! has none, whose SVID reached half its lifetime, or whose entry changed in
//! a way the certificate reflects (revision, SPIFFE ID, DNS names, TTL).
//! Selector, hint and federation changes are applied to the cached record
//! in place.
//!
//! It also keeps the bundles of the trust domains the authorized entries
//! federate with, fetched each sync with `GetFederatedBundle`: a bundle no
//! entry refers to any more is dropped, one the server no longer has
//! (`NotFound`) too, and one whose fetch fails otherwise is kept as it was,
//! so a server hiccup never takes trust away from workloads.
//!
//! Which entries hold an SVID follows `x509_svid_cache_max_size` (see
//! [`super::lru`]): the SVID step ([`SyncState::refresh_svids`]) runs at the
//! end of each sync and, between syncs, when a caller needs an entry the
//! agent holds no SVID for.
//!
//! This module owns [`SyncState`], the agent's current view. It never
//! publishes or persists anything: the manager builds a [`Snapshot`] from
//! the state after each attempt, successful or not, and publishes it only
//! when it differs from the last one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sigil_crypto::key::{KeyType, Signer, SoftwareKey};
use sigil_plugin::clock::{self, Clock};
use sigil_spiffe::{Bundle, TrustDomain};
use tonic::Status;

use super::api::{AuthorizedEntry, ServerApi};
use super::store::CachedSvid;
use crate::cache::{EntryRecord, Snapshot, Subscriptions, X509SvidRecord};

/// Most CSRs sent in one `BatchNewX509SVID` call.
pub const MAX_BATCH: usize = 500;

/// Why an entry needs a new X509-SVID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The entry has no SVID yet.
    Create,
    /// The SVID reached half its lifetime (or expired).
    Expiring,
    /// The entry changed since the SVID was issued.
    EntryChanged,
}

/// True once `now` is at or past the middle of `[not_before, not_after]`,
/// SPIRE's default rotation point.
pub fn should_rotate(now: i64, not_before: i64, not_after: i64) -> bool {
    if now >= not_after || not_before >= not_after {
        return true;
    }
    not_after - now <= (not_after - not_before) / 2
}

/// Whether (and why) `entry` needs a new SVID given the cached one.
pub fn renewal_reason(
    entry: &AuthorizedEntry,
    cached: Option<&CachedSvid>,
    now: i64,
) -> Option<Renewal> {
    let Some(c) = cached else {
        return Some(Renewal::Create);
    };
    if should_rotate(now, c.issued_at, c.record.expires_at) {
        return Some(Renewal::Expiring);
    }
    if c.revision_number != entry.revision_number
        || c.record.spiffe_id != entry.spiffe_id
        || c.dns_names != entry.dns_names
        || c.x509_svid_ttl != entry.x509_svid_ttl
    {
        return Some(Renewal::EntryChanged);
    }
    None
}

/// The agent's current view: bundles, authorized entries, workload SVIDs.
#[derive(Debug, Clone)]
pub struct SyncState {
    /// Our trust domain.
    pub td: TrustDomain,
    /// The newest bundle.
    pub bundle: Arc<Bundle>,
    /// Bundles of the trust domains authorized entries federate with.
    pub federated: BTreeMap<TrustDomain, Arc<Bundle>>,
    /// SVIDs by entry ID.
    pub svids: BTreeMap<String, CachedSvid>,
    /// Entries from the last successful fetch (`None` before the first).
    pub entries: Option<BTreeMap<String, AuthorizedEntry>>,
    /// Most X509-SVIDs held beyond those of callers being served
    /// (`x509_svid_cache_max_size`).
    pub max_svids: usize,
    /// The callers being served, shared with the Workload API.
    pub subscriptions: Arc<Subscriptions>,
}

/// What one sync changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncOutcome {
    /// The bundle differs from before.
    pub bundle_changed: bool,
    /// SVIDs issued in this sync.
    pub issued: usize,
    /// SVIDs dropped because their entries went away.
    pub dropped: usize,
    /// SVIDs dropped because the cache was full (least recently used).
    pub evicted: usize,
    /// SVIDs the server refused to issue (the old one, if any, is kept).
    pub failed: usize,
    /// Federated bundles were added, updated or dropped.
    pub federated_changed: bool,
    /// Federated bundles that could not be fetched (the old copy is kept).
    pub federated_failed: usize,
}

impl SyncState {
    /// A state holding `bundle`, previously stored federated bundles and
    /// previously cached SVIDs. Federated bundles of our own trust domain
    /// are ignored.
    pub fn new(
        td: TrustDomain,
        bundle: Bundle,
        federated: Vec<Bundle>,
        svids: Vec<CachedSvid>,
    ) -> Self {
        SyncState {
            federated: federated
                .into_iter()
                .filter(|b| b.trust_domain != td)
                .map(|b| (b.trust_domain.clone(), Arc::new(b)))
                .collect(),
            td,
            bundle: Arc::new(bundle),
            svids: svids
                .into_iter()
                .map(|s| (s.record.entry_id.clone(), s))
                .collect(),
            entries: None,
            max_svids: usize::MAX,
            subscriptions: Arc::default(),
        }
    }

    /// Bounds the SVID cache to `max_svids` beyond the entries of the
    /// callers `subscriptions` lists.
    pub fn with_svid_cache(mut self, max_svids: usize, subscriptions: Arc<Subscriptions>) -> Self {
        self.max_svids = max_svids;
        self.subscriptions = subscriptions;
        self
    }

    /// What the Workload API should serve now.
    pub fn snapshot(&self) -> Snapshot {
        let unsigned = self
            .entries
            .iter()
            .flat_map(BTreeMap::values)
            .filter(|e| !self.svids.contains_key(&e.id))
            .map(|e| {
                Arc::new(EntryRecord {
                    entry_id: e.id.clone(),
                    spiffe_id: e.spiffe_id.clone(),
                    selectors: e.selectors.clone(),
                    hint: e.hint.clone(),
                    federates_with: e.federates_with.clone(),
                })
            })
            .collect();
        Snapshot {
            bundle: self.bundle.clone(),
            federated_bundles: self.federated.values().cloned().collect(),
            svids: self.svids.values().map(|s| s.record.clone()).collect(),
            unsigned,
        }
    }

    /// Drops SVIDs that have expired at `now`; true if any was.
    pub fn prune_expired(&mut self, now: i64) -> bool {
        let before = self.svids.len();
        self.svids.retain(|id, s| {
            let keep = s.record.expires_at > now;
            if !keep {
                tracing::warn!(entry_id = %id, spiffe_id = %s.record.spiffe_id, "X509-SVID expired; no longer served");
            }
            keep
        });
        self.svids.len() != before
    }

    /// One sync with the server. Changes made before an error stay in the
    /// state (an SVID that was issued is kept even if a later batch fails).
    pub async fn sync(
        &mut self,
        api: &dyn ServerApi,
        clock: &dyn Clock,
        key_type: KeyType,
    ) -> Result<SyncOutcome, Status> {
        let mut outcome = SyncOutcome::default();

        let bundle = api.get_bundle().await?;
        if bundle.x509_authorities.is_empty() {
            return Err(Status::internal(
                "the server returned a bundle without X.509 authorities; keeping the current one",
            ));
        }
        if *self.bundle != bundle {
            tracing::info!(trust_domain = %self.td, sequence_number = bundle.sequence_number, "Trust bundle updated");
            self.bundle = Arc::new(bundle);
            outcome.bundle_changed = true;
        }

        let entries: BTreeMap<String, AuthorizedEntry> = api
            .get_authorized_entries()
            .await?
            .into_iter()
            // SVIDStore entries are for SVIDStore plugins, not workloads.
            .filter(|e| !e.store_svid)
            .map(|e| (e.id.clone(), e))
            .collect();

        self.svids.retain(|id, s| {
            let keep = entries.contains_key(id);
            if !keep {
                tracing::info!(entry_id = %id, spiffe_id = %s.record.spiffe_id, "Entry no longer authorized; dropping its X509-SVID");
                outcome.dropped += 1;
            }
            keep
        });

        self.sync_federated(api, &entries, &mut outcome).await;

        for entry in entries.values() {
            if let Some(c) = self.svids.get_mut(&entry.id) {
                // Not part of the certificate: follow the entry in place.
                if c.record.selectors != entry.selectors
                    || c.record.hint != entry.hint
                    || c.record.federates_with != entry.federates_with
                {
                    let record = Arc::make_mut(&mut c.record);
                    record.selectors = entry.selectors.clone();
                    record.hint = entry.hint.clone();
                    record.federates_with = entry.federates_with.clone();
                }
            }
        }
        self.entries = Some(entries);
        self.refresh_svids(api, clock, key_type, true, &mut outcome)
            .await?;
        Ok(outcome)
    }

    /// The SVID step, on the entries of the last fetch: drops the least
    /// recently used SVIDs beyond the cache size, then signs what is
    /// missing or due (entries of callers being served always; others
    /// while there is room, unless `fill` is false) and renews what is due.
    /// Does nothing before the first fetch.
    pub async fn refresh_svids(
        &mut self,
        api: &dyn ServerApi,
        clock: &dyn Clock,
        key_type: KeyType,
        fill: bool,
        outcome: &mut SyncOutcome,
    ) -> Result<(), Status> {
        let Some(entries) = self.entries.take() else {
            return Ok(());
        };
        let result = self
            .refresh_svids_of(&entries, api, clock, key_type, fill, outcome)
            .await;
        self.entries = Some(entries);
        result
    }

    async fn refresh_svids_of(
        &mut self,
        entries: &BTreeMap<String, AuthorizedEntry>,
        api: &dyn ServerApi,
        clock: &dyn Clock,
        key_type: KeyType,
        fill: bool,
        outcome: &mut SyncOutcome,
    ) -> Result<(), Status> {
        self.subscriptions
            .retain_uses(|id| entries.contains_key(id));
        let callers = self.subscriptions.active();
        let subscribed: BTreeSet<&str> = entries
            .values()
            .filter(|e| {
                callers
                    .iter()
                    .any(|sel| e.selectors.iter().all(|s| sel.contains(s)))
            })
            .map(|e| e.id.as_str())
            .collect();
        let authorized: BTreeSet<&str> = entries.keys().map(String::as_str).collect();
        let cached: BTreeSet<&str> = self.svids.keys().map(String::as_str).collect();
        let plan = super::lru::plan(
            &authorized,
            &cached,
            &subscribed,
            &self.subscriptions.last_use(),
            self.max_svids,
            fill,
        );
        for id in &plan.evict {
            if let Some(s) = self.svids.remove(id) {
                tracing::debug!(entry_id = %id, spiffe_id = %s.record.spiffe_id, "X509-SVID cache full; dropping the least recently used SVID");
                outcome.evicted += 1;
            }
        }

        let now = clock.unix_now();
        let mut stale: Vec<(&AuthorizedEntry, Renewal)> = Vec::new();
        for entry in entries.values() {
            if self.svids.contains_key(&entry.id)
                && let Some(reason) = renewal_reason(entry, self.svids.get(&entry.id), now)
            {
                stale.push((entry, reason));
            }
        }
        stale.extend(
            plan.create
                .iter()
                .filter_map(|id| entries.get(id))
                .map(|e| (e, Renewal::Create)),
        );
        for chunk in stale.chunks(MAX_BATCH) {
            let mut keys: Vec<(SoftwareKey, Vec<u8>)> = Vec::with_capacity(chunk.len());
            for (entry, reason) in chunk {
                match reason {
                    Renewal::Create => {
                        tracing::info!(entry_id = %entry.id, spiffe_id = %entry.spiffe_id, "Creating X509-SVID");
                    }
                    Renewal::Expiring | Renewal::EntryChanged => {
                        let expires_at =
                            self.svids.get(&entry.id).map_or(0, |c| c.record.expires_at);
                        tracing::info!(entry_id = %entry.id, spiffe_id = %entry.spiffe_id, expires_at, reason = ?reason, "Renewing X509-SVID");
                    }
                }
                let key = SoftwareKey::generate(key_type)
                    .map_err(|e| Status::internal(format!("generating a workload key: {e}")))?;
                let csr = sigil_crypto::csr::create_csr(&key, Some(&entry.spiffe_id))
                    .map_err(|e| Status::internal(format!("creating a CSR: {e}")))?;
                keys.push((key, csr));
            }
            let request = chunk
                .iter()
                .zip(&keys)
                .map(|((entry, _), (_, csr))| (entry.id.clone(), csr.clone()))
                .collect();
            let results = api.batch_new_x509_svid(request).await?;
            for (((entry, _), (key, _)), result) in chunk.iter().zip(keys).zip(results) {
                let issued = result.and_then(|svid| {
                    accept_svid(entry, &key, svid.chain).map_err(Status::internal)
                });
                match issued {
                    Ok(svid) => {
                        self.svids.insert(entry.id.clone(), svid);
                        outcome.issued += 1;
                    }
                    Err(status) => {
                        outcome.failed += 1;
                        tracing::warn!(entry_id = %entry.id, spiffe_id = %entry.spiffe_id, code = ?status.code(), error = %status.message(), "X509-SVID not issued");
                    }
                }
            }
        }
        Ok(())
    }

    /// Fetches the bundle of every trust domain `entries` federate with
    /// (concurrently) and drops the ones no entry refers to.
    async fn sync_federated(
        &mut self,
        api: &dyn ServerApi,
        entries: &BTreeMap<String, AuthorizedEntry>,
        outcome: &mut SyncOutcome,
    ) {
        let wanted: BTreeSet<&TrustDomain> = entries
            .values()
            .flat_map(|e| &e.federates_with)
            .filter(|td| **td != self.td)
            .collect();

        let before = self.federated.len();
        self.federated.retain(|td, _| {
            let keep = wanted.contains(td);
            if !keep {
                tracing::info!(trust_domain = %td, "No entry federates with this trust domain any more; dropping its bundle");
            }
            keep
        });
        outcome.federated_changed |= self.federated.len() != before;

        let fetched = futures::future::join_all(
            wanted
                .iter()
                .map(|td| async move { (*td, api.get_federated_bundle(td).await) }),
        )
        .await;
        for (td, result) in fetched {
            match result {
                Ok(bundle) if bundle.trust_domain != *td => {
                    outcome.federated_failed += 1;
                    tracing::warn!(trust_domain = %td, got = %bundle.trust_domain, "The server returned the bundle of another trust domain; keeping the current one");
                }
                Ok(bundle) => {
                    if self.federated.get(td).map(|b| &**b) != Some(&bundle) {
                        tracing::info!(trust_domain = %td, sequence_number = bundle.sequence_number, "Federated bundle updated");
                        self.federated.insert(td.clone(), Arc::new(bundle));
                        outcome.federated_changed = true;
                    }
                }
                Err(status) if status.code() == tonic::Code::NotFound => {
                    // The server has no bundle for it (never set, or
                    // deleted): there is nothing to trust, as in SPIRE.
                    tracing::warn!(trust_domain = %td, "Federated bundle not found");
                    if self.federated.remove(td).is_some() {
                        outcome.federated_changed = true;
                    }
                }
                Err(status) => {
                    outcome.federated_failed += 1;
                    tracing::warn!(trust_domain = %td, code = ?status.code(), error = %status.message(), kept = self.federated.contains_key(td), "Failed to fetch federated bundle; keeping the last good copy");
                }
            }
        }
    }
}

/// Checks what the server issued for `entry` against the key we generated
/// and turns it into a cache record.
fn accept_svid(
    entry: &AuthorizedEntry,
    key: &SoftwareKey,
    chain: Vec<Vec<u8>>,
) -> Result<CachedSvid, String> {
    let leaf = chain.first().ok_or("the server returned an empty chain")?;
    let info = sigil_crypto::x509::cert_info(leaf).map_err(|e| format!("unreadable SVID: {e}"))?;
    if info.public_key_der != key.public_key_der() {
        return Err("the issued SVID does not carry the key of our CSR".into());
    }
    let id = sigil_crypto::x509::leaf_spiffe_id(leaf).map_err(|e| format!("invalid SVID: {e}"))?;
    if id != entry.spiffe_id {
        return Err(format!(
            "the issued SVID is for {id}, the entry is for {}",
            entry.spiffe_id
        ));
    }
    Ok(CachedSvid {
        record: Arc::new(X509SvidRecord {
            entry_id: entry.id.clone(),
            spiffe_id: entry.spiffe_id.clone(),
            selectors: entry.selectors.clone(),
            hint: entry.hint.clone(),
            chain,
            key_pkcs8: key.to_pkcs8_der(),
            expires_at: clock::unix(info.not_after),
            federates_with: entry.federates_with.clone(),
        }),
        issued_at: clock::unix(info.not_before),
        revision_number: entry.revision_number,
        dns_names: entry.dns_names.clone(),
        x509_svid_ttl: entry.x509_svid_ttl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testing::{FakeServer, TestCa, entry, federated_entry};
    use sigil_plugin::clock::ManualClock;
    use std::time::Duration;

    fn start() -> (Arc<FakeServer>, Arc<ManualClock>, SyncState) {
        let server = Arc::new(FakeServer::new("example.org"));
        let clock = server.clock();
        let state = SyncState::new(server.td(), server.bundle(), Vec::new(), Vec::new());
        (server, clock, state)
    }

    #[test]
    fn rotation_is_due_at_half_life() {
        assert!(!should_rotate(100, 100, 200));
        assert!(!should_rotate(149, 100, 200));
        assert!(should_rotate(150, 100, 200));
        assert!(should_rotate(250, 100, 200));
        // A certificate whose notBefore lies after its notAfter is due.
        assert!(should_rotate(100, 300, 200));
    }

    #[test]
    fn renewal_reasons() {
        let ca = TestCa::new("example.org");
        let e = entry("e1", "/web", &["unix:uid:1"]);
        let c = ca.cached_svid("e1", "/web", 1000, 2000);
        assert_eq!(renewal_reason(&e, None, 1000), Some(Renewal::Create));
        assert_eq!(renewal_reason(&e, Some(&c), 1200), None);
        assert_eq!(renewal_reason(&e, Some(&c), 1500), Some(Renewal::Expiring));
        let changed = AuthorizedEntry {
            revision_number: 1,
            ..e.clone()
        };
        assert_eq!(
            renewal_reason(&changed, Some(&c), 1200),
            Some(Renewal::EntryChanged)
        );
        let dns = AuthorizedEntry {
            dns_names: vec!["a.example.org".into()],
            ..e
        };
        assert_eq!(renewal_reason(&dns, Some(&dns_cached(c)), 1200), None);
    }

    fn dns_cached(mut c: CachedSvid) -> CachedSvid {
        c.dns_names = vec!["a.example.org".into()];
        c
    }

    #[tokio::test]
    async fn first_sync_issues_one_svid_per_entry_and_skips_store_entries() {
        let (server, clock, mut state) = start();
        server.set_entries(vec![
            entry("e1", "/web", &["unix:uid:1"]),
            entry("e2", "/db", &["unix:uid:2"]),
            AuthorizedEntry {
                store_svid: true,
                ..entry("e3", "/stored", &["x:y"])
            },
        ]);
        let out = state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        assert_eq!(out.issued, 2);
        let snap = state.snapshot();
        let ids: Vec<_> = snap.svids.iter().map(|s| s.entry_id.as_str()).collect();
        assert_eq!(ids, ["e1", "e2"]);
        let rec = &snap.svids[0];
        assert_eq!(rec.spiffe_id.as_str(), "spiffe://example.org/web");
        // The key we keep is the one in the certificate.
        let key = SoftwareKey::from_pkcs8_der(&rec.key_pkcs8).unwrap();
        let info = sigil_crypto::x509::cert_info(&rec.chain[0]).unwrap();
        assert_eq!(info.public_key_der, key.public_key_der());

        // Nothing to do on the next sync.
        let out = state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        assert_eq!(out, SyncOutcome::default());
        assert_eq!(server.x509_issued(), 2);
    }

    #[tokio::test]
    async fn svids_are_renewed_at_half_life_with_a_new_key() {
        let (server, clock, mut state) = start();
        server.set_entries(vec![entry("e1", "/web", &["unix:uid:1"])]);
        state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        let first = state.snapshot().svids[0].clone();
        clock.advance(Duration::from_secs(server.x509_ttl() / 2 - 60));
        state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        assert_eq!(state.snapshot().svids[0], first, "not yet due");
        clock.advance(Duration::from_secs(61));
        let out = state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        assert_eq!(out.issued, 1);
        let second = state.snapshot().svids[0].clone();
        assert_ne!(second.key_pkcs8, first.key_pkcs8);
        assert!(second.expires_at > first.expires_at);
    }

    #[tokio::test]
    async fn removed_entry_drops_its_svid_and_changed_entry_is_reissued() {
        let (server, clock, mut state) = start();
        server.set_entries(vec![
            entry("e1", "/web", &["unix:uid:1"]),
            entry("e2", "/db", &["unix:uid:2"]),
        ]);
        state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        let mut changed = entry("e1", "/web2", &["unix:uid:7"]);
        changed.revision_number = 1;
        server.set_entries(vec![changed]);
        let out = state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        assert_eq!((out.dropped, out.issued), (1, 1));
        let snap = state.snapshot();
        assert_eq!(snap.svids.len(), 1);
        assert_eq!(
            snap.svids[0].spiffe_id.as_str(),
            "spiffe://example.org/web2"
        );
        assert_eq!(snap.svids[0].selectors[0].to_string(), "unix:uid:7");
    }

    #[tokio::test]
    async fn selector_and_hint_changes_do_not_reissue() {
        let (server, clock, mut state) = start();
        server.set_entries(vec![entry("e1", "/web", &["unix:uid:1"])]);
        state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        let mut e = entry("e1", "/web", &["unix:uid:2"]);
        e.hint = "primary".into();
        server.set_entries(vec![e]);
        let out = state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        assert_eq!(out.issued, 0);
        let rec = &state.snapshot().svids[0];
        assert_eq!(rec.selectors[0].to_string(), "unix:uid:2");
        assert_eq!(rec.hint, "primary");
    }

    #[tokio::test]
    async fn large_entry_sets_go_out_in_batches_of_500() {
        let (server, clock, mut state) = start();
        let entries: Vec<_> = (0..1001)
            .map(|i| entry(&format!("e{i:04}"), &format!("/w/{i}"), &["unix:uid:1"]))
            .collect();
        server.set_entries(entries);
        let out = state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        assert_eq!(out.issued, 1001);
        assert_eq!(server.batch_sizes(), vec![500, 500, 1]);
    }

    #[tokio::test]
    async fn refused_svid_keeps_the_old_one_and_others_proceed() {
        let (server, clock, mut state) = start();
        server.set_entries(vec![
            entry("e1", "/web", &["unix:uid:1"]),
            entry("e2", "/db", &["unix:uid:2"]),
        ]);
        server.refuse_entry("e2");
        let out = state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        assert_eq!((out.issued, out.failed), (1, 1));
        assert_eq!(state.snapshot().svids.len(), 1);
    }

    #[tokio::test]
    async fn unreachable_server_keeps_state_until_svids_expire() {
        let (server, clock, mut state) = start();
        server.set_entries(vec![entry("e1", "/web", &["unix:uid:1"])]);
        state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        let before = state.snapshot();
        server.set_reachable(false);
        clock.advance(Duration::from_secs(server.x509_ttl() - 10));
        let err = state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(!state.prune_expired(clock.unix_now()));
        assert_eq!(state.snapshot(), before);
        clock.advance(Duration::from_secs(20));
        assert!(state.prune_expired(clock.unix_now()));
        assert!(state.snapshot().svids.is_empty());
    }

    #[tokio::test]
    async fn bundle_changes_are_reported() {
        let (server, clock, mut state) = start();
        let out = state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        assert!(!out.bundle_changed);
        server.add_jwt_authority("kid-2");
        let out = state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        assert!(out.bundle_changed);
        assert!(state.bundle.find_jwt_authority("kid-2").is_some());
    }

    fn foreign_bundle(td: &str) -> Bundle {
        let ca = TestCa::new(td);
        let mut b = Bundle::new(ca.td.clone());
        b.x509_authorities.push(ca.cert);
        b
    }

    fn federated_tds(state: &SyncState) -> Vec<String> {
        state
            .snapshot()
            .federated_bundles
            .iter()
            .map(|b| b.trust_domain.name().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn sync_fetches_the_bundles_of_federated_trust_domains_once_each() {
        let (server, clock, mut state) = start();
        let partner = foreign_bundle("partner.org");
        server.set_federated_bundle(partner.clone());
        server.set_federated_bundle(foreign_bundle("unused.org"));
        server.set_entries(vec![
            federated_entry("e1", "/web", &["unix:uid:1"], &["partner.org"]),
            federated_entry(
                "e2",
                "/db",
                &["unix:uid:2"],
                &["partner.org", "example.org"],
            ),
        ]);
        let out = state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        assert!(out.federated_changed);
        // One fetch per trust domain, never our own, nothing unreferenced.
        assert_eq!(
            server.federated_fetches(),
            vec![TrustDomain::new("partner.org").unwrap()]
        );
        let snap = state.snapshot();
        assert_eq!(snap.federated_bundles.len(), 1);
        assert_eq!(*snap.federated_bundles[0], partner);
        assert_eq!(
            snap.svids[0].federates_with,
            vec![TrustDomain::new("partner.org").unwrap()]
        );

        // An unchanged bundle is no change.
        let out = state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        assert!(!out.federated_changed);

        // An updated one is.
        let mut rotated = partner.clone();
        rotated
            .x509_authorities
            .push(TestCa::new("partner.org").cert);
        server.set_federated_bundle(rotated.clone());
        let out = state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        assert!(out.federated_changed);
        assert_eq!(*state.snapshot().federated_bundles[0], rotated);
    }

    #[tokio::test]
    async fn federated_bundle_no_entry_refers_to_is_dropped_and_federation_changes_do_not_reissue()
    {
        let (server, clock, mut state) = start();
        server.set_federated_bundle(foreign_bundle("partner.org"));
        server.set_federated_bundle(foreign_bundle("third.org"));
        server.set_entries(vec![federated_entry(
            "e1",
            "/web",
            &["unix:uid:1"],
            &["partner.org", "third.org"],
        )]);
        state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        assert_eq!(federated_tds(&state), ["partner.org", "third.org"]);

        server.set_entries(vec![federated_entry(
            "e1",
            "/web",
            &["unix:uid:1"],
            &["third.org"],
        )]);
        let out = state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        assert!(out.federated_changed);
        assert_eq!(out.issued, 0, "federation is not in the certificate");
        assert_eq!(federated_tds(&state), ["third.org"]);
        assert_eq!(
            state.snapshot().svids[0].federates_with,
            vec![TrustDomain::new("third.org").unwrap()]
        );

        server.set_entries(vec![entry("e1", "/web", &["unix:uid:1"])]);
        state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        assert!(state.snapshot().federated_bundles.is_empty());
    }

    #[tokio::test]
    async fn failed_federated_fetch_keeps_the_last_good_copy_and_not_found_drops_it() {
        let (server, clock, mut state) = start();
        let partner = foreign_bundle("partner.org");
        server.set_federated_bundle(partner.clone());
        server.set_entries(vec![federated_entry(
            "e1",
            "/web",
            &["unix:uid:1"],
            &["partner.org", "missing.org"],
        )]);
        let out = state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        // The server has no bundle for missing.org: nothing to serve, no error.
        assert_eq!(out.federated_failed, 0);
        assert_eq!(federated_tds(&state), ["partner.org"]);

        server.fail_federated("partner.org", true);
        server.set_federated_bundle(foreign_bundle("partner.org"));
        let out = state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        assert_eq!(out.federated_failed, 1);
        assert!(!out.federated_changed);
        assert_eq!(*state.snapshot().federated_bundles[0], partner);

        server.fail_federated("partner.org", false);
        server.remove_federated_bundle("partner.org");
        let out = state
            .sync(&*server, &*clock, KeyType::EcP256)
            .await
            .unwrap();
        assert!(out.federated_changed);
        assert!(state.snapshot().federated_bundles.is_empty());
    }

    #[test]
    fn stored_federated_bundles_of_our_own_trust_domain_are_ignored() {
        let server = FakeServer::new("example.org");
        let state = SyncState::new(
            server.td(),
            server.bundle(),
            vec![server.bundle(), foreign_bundle("partner.org")],
            Vec::new(),
        );
        assert_eq!(federated_tds(&state), ["partner.org"]);
    }
}
