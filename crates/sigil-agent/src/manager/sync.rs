//! One synchronization with the server, and the decisions behind it.
//!
//! A sync fetches the bundle and the authorized entries, forgets the SVIDs
//! of entries no longer authorized, and asks for new X509-SVIDs (fresh key
//! per SVID, CSRs in batches of at most [`MAX_BATCH`]) for every entry that
//! has none, whose SVID reached half its lifetime, or whose entry changed in
//! a way the certificate reflects (revision, SPIFFE ID, DNS names, TTL).
//! Selector and hint changes are applied to the cached record in place.
//!
//! This module owns [`SyncState`], the agent's current view. It never
//! publishes or persists anything: the manager builds a [`Snapshot`] from
//! the state after each attempt, successful or not, and publishes it only
//! when it differs from the last one.

use std::collections::BTreeMap;
use std::sync::Arc;

use sigil_crypto::key::{KeyType, Signer, SoftwareKey};
use sigil_plugin::clock::{self, Clock};
use sigil_spiffe::{Bundle, TrustDomain};
use tonic::Status;

use super::api::{AuthorizedEntry, ServerApi};
use super::store::CachedSvid;
use crate::cache::{Snapshot, X509SvidRecord};

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

/// The agent's current view: bundle, authorized entries, workload SVIDs.
#[derive(Debug, Clone)]
pub struct SyncState {
    /// Our trust domain.
    pub td: TrustDomain,
    /// The newest bundle.
    pub bundle: Arc<Bundle>,
    /// SVIDs by entry ID.
    pub svids: BTreeMap<String, CachedSvid>,
    /// Entries from the last successful fetch (`None` before the first).
    pub entries: Option<BTreeMap<String, AuthorizedEntry>>,
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
    /// SVIDs the server refused to issue (the old one, if any, is kept).
    pub failed: usize,
}

impl SyncState {
    /// A state holding `bundle` and previously cached SVIDs.
    pub fn new(td: TrustDomain, bundle: Bundle, svids: Vec<CachedSvid>) -> Self {
        SyncState {
            td,
            bundle: Arc::new(bundle),
            svids: svids
                .into_iter()
                .map(|s| (s.record.entry_id.clone(), s))
                .collect(),
            entries: None,
        }
    }

    /// What the Workload API should serve now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            bundle: self.bundle.clone(),
            federated_bundles: Vec::new(),
            svids: self.svids.values().map(|s| s.record.clone()).collect(),
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

        let now = clock.unix_now();
        let mut stale: Vec<(&AuthorizedEntry, Renewal)> = Vec::new();
        for entry in entries.values() {
            if let Some(c) = self.svids.get_mut(&entry.id) {
                // Not part of the certificate: follow the entry in place.
                if c.record.selectors != entry.selectors {
                    c.record.selectors = entry.selectors.clone();
                }
                if c.record.hint != entry.hint {
                    c.record.hint = entry.hint.clone();
                }
            }
            if let Some(reason) = renewal_reason(entry, self.svids.get(&entry.id), now) {
                stale.push((entry, reason));
            }
        }

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
        self.entries = Some(entries);
        Ok(outcome)
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
        record: X509SvidRecord {
            entry_id: entry.id.clone(),
            spiffe_id: entry.spiffe_id.clone(),
            selectors: entry.selectors.clone(),
            hint: entry.hint.clone(),
            chain,
            key_pkcs8: key.to_pkcs8_der(),
            expires_at: clock::unix(info.not_after),
        },
        issued_at: clock::unix(info.not_before),
        revision_number: entry.revision_number,
        dns_names: entry.dns_names.clone(),
        x509_svid_ttl: entry.x509_svid_ttl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testing::{FakeServer, TestCa, entry};
    use sigil_plugin::clock::ManualClock;
    use std::time::Duration;

    fn start() -> (Arc<FakeServer>, Arc<ManualClock>, SyncState) {
        let server = Arc::new(FakeServer::new("example.org"));
        let clock = server.clock();
        let state = SyncState::new(server.td(), server.bundle(), Vec::new());
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
}
