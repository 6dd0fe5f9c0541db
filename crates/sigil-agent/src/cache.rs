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
use sigil_spiffe::{Bundle, Selector, SpiffeId};
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
    /// Federated bundles (empty until federation exists).
    pub federated_bundles: Vec<Arc<Bundle>>,
    /// One X509-SVID per authorized entry that has one, ordered by entry ID.
    pub svids: Vec<X509SvidRecord>,
}

impl Snapshot {
    /// The SVIDs a workload with `selectors` may have, in stable order.
    pub fn svids_for(&self, selectors: &[Selector]) -> Vec<&X509SvidRecord> {
        self.svids.iter().filter(|s| s.matches(selectors)).collect()
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
        };
        assert!(rec.matches(&[s("unix:uid:1000"), s("unix:gid:1000"), s("unix:user:a")]));
        assert!(!rec.matches(&[s("unix:uid:1000")]));
    }
}
