//! The agent's view of what it may hand out, shared between the part that
//! keeps it fresh (the manager: attestation, sync, rotation) and the parts
//! that serve it (Workload API, SDS, CLI).
//!
//! The manager publishes an immutable [`Snapshot`] through a `watch` channel
//! every time anything changes; servers hold a [`CacheHandle`], pick the
//! SVIDs that match a caller's selectors, and push a new message whenever
//! the snapshot changes. JWT-SVIDs are minted on demand through
//! [`JwtMinter`] and cached by the manager.

use std::sync::Arc;

use async_trait::async_trait;
use sigil_spiffe::{Bundle, Selector, SpiffeId, TrustDomain};
use tokio::sync::watch;

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
    pub svids: Vec<X509SvidRecord>,
}

impl Snapshot {
    /// The SVIDs a workload with `selectors` may have, in stable order.
    pub fn svids_for(&self, selectors: &[Selector]) -> Vec<&X509SvidRecord> {
        self.svids.iter().filter(|s| s.matches(selectors)).collect()
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
