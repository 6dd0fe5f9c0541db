//! The bundle store: our trust domain's bundle and its taints as kept in the
//! datastore, and the CA's copy that subscribers watch.
//!
//! It owns the stored format (the SPIFFE JWKS plus JWT expiries and taints,
//! [`encode_bundle_with_taints`], [`decode_bundle_with_taints`]), every
//! read-modify-write of our stored bundle (a compare-and-set, redone when
//! another server on the same datastore wrote meanwhile), pruning of expired
//! authorities, and operators' additions (SPIRE's AppendBundle and
//! PublishJWTAuthority). Our bundle, with its taints, is changed only
//! through this module; it never decides which authorities belong in it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_datastore::{DataStore, StoredBundle};
use sigil_plugin::clock::from_unix;
use sigil_spiffe::{Bundle, JwtAuthority, TrustDomain};
use tokio::sync::watch;

use super::CaManager;
use super::authority::x509_authority_id;
use super::error::{CaError, StoredBundleError};

/// Expired authorities stay in the bundle this long after expiry.
const BUNDLE_PRUNE_SAFETY: Duration = Duration::from_secs(24 * 3600);

/// How many times a bundle change is redone because another writer (another
/// server on the same datastore) changed the bundle between read and write.
const BUNDLE_WRITE_ATTEMPTS: usize = 32;

/// Authorities of our bundle marked tainted (SPIRE's `tainted` flag): agents
/// and downstream servers replace SVIDs they signed. Stored with the bundle,
/// so taints survive restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Taints {
    /// Authority IDs (hex SubjectKeyIdentifier) of tainted X.509 authorities.
    pub x509: BTreeSet<String>,
    /// Key IDs of tainted JWT authorities.
    pub jwt: BTreeSet<String>,
}

impl Taints {
    /// Whether the X.509 authority `der` is tainted.
    pub fn is_x509_tainted(&self, der: &[u8]) -> bool {
        if self.x509.is_empty() {
            return false;
        }
        let id = x509_authority_id(der);
        !id.is_empty() && self.x509.contains(&id)
    }

    /// Whether the JWT authority `kid` is tainted.
    pub fn is_jwt_tainted(&self, kid: &str) -> bool {
        self.jwt.contains(kid)
    }

    /// Forgets taints of authorities that are no longer in `bundle`.
    fn retain_present(&mut self, bundle: &Bundle) {
        if !self.x509.is_empty() {
            let present: BTreeSet<String> = bundle
                .x509_authorities
                .iter()
                .map(|der| x509_authority_id(der))
                .collect();
            self.x509.retain(|id| present.contains(id));
        }
        self.jwt
            .retain(|kid| bundle.find_jwt_authority(kid).is_some());
    }
}

impl CaManager {
    /// The current trust bundle of our trust domain.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.bundle_tx.borrow().clone()
    }

    /// Which authorities of the current bundle are tainted.
    pub fn bundle_taints(&self) -> Arc<Taints> {
        self.taints_tx.borrow().clone()
    }

    /// Notified with the new bundle whenever it changes.
    pub fn subscribe_bundle(&self) -> watch::Receiver<Arc<Bundle>> {
        self.bundle_tx.subscribe()
    }

    /// Re-reads the bundle from the datastore (after an admin changed it).
    pub async fn reload_bundle(&self) -> Result<(), CaError> {
        let (b, taints) = load_bundle(self.ds.as_ref(), &self.cfg.trust_domain).await?;
        self.taints_tx.send_replace(Arc::new(taints));
        self.bundle_tx.send_replace(Arc::new(b));
        Ok(())
    }

    /// Adds X.509 and JWT authorities to our bundle (SPIRE's AppendBundle and
    /// PublishJWTAuthority). Ones already present are skipped; a JWT key whose
    /// key ID is taken by a different key is refused, since a bundle cannot
    /// hold two keys under one ID. Returns the resulting bundle.
    pub async fn append_to_bundle(
        &self,
        x509: Vec<Vec<u8>>,
        jwt: Vec<JwtAuthority>,
    ) -> Result<Arc<Bundle>, CaError> {
        self.modify_bundle(|b, _| {
            for a in &jwt {
                match b.find_jwt_authority(&a.key_id) {
                    Some(have) if have.public_key_der != a.public_key_der => {
                        return Err(CaError::ConflictingAuthority(format!(
                            "a different JWT authority with key ID {:?} is already in the bundle",
                            a.key_id
                        )));
                    }
                    _ => {}
                }
            }
            for der in &x509 {
                if !b.x509_authorities.contains(der) {
                    b.x509_authorities.push(der.clone());
                }
            }
            for a in &jwt {
                if b.find_jwt_authority(&a.key_id).is_none() {
                    b.jwt_authorities.push(a.clone());
                }
            }
            Ok(())
        })
        .await?;
        Ok(self.bundle())
    }

    /// A change of the bundle that cannot fail by itself.
    pub(super) async fn update_bundle(
        &self,
        mut f: impl FnMut(&mut Bundle),
    ) -> Result<(), CaError> {
        self.modify_bundle(|b, _| {
            f(b);
            Ok::<_, CaError>(())
        })
        .await
    }

    /// Read-modify-write of our stored bundle and its taints. A change bumps
    /// the sequence number (as SPIRE does for every bundle change, taints
    /// included); subscribers hear of it only when the bundle they hold
    /// differs. Nothing is written when `f` fails.
    ///
    /// The write is a compare-and-set on the bytes read, so it is atomic in
    /// the database, not only in this process: when another server sharing
    /// the datastore changed the bundle meanwhile, the change is redone on
    /// what it wrote (`f` runs again), and neither change is lost.
    pub(super) async fn modify_bundle<T, E: From<CaError>>(
        &self,
        mut f: impl FnMut(&mut Bundle, &mut Taints) -> Result<T, E>,
    ) -> Result<T, E> {
        let _guard = self.bundle_lock.lock().await;
        let td = &self.cfg.trust_domain;
        let mut attempts = 0;
        let (out, bundle, taints) =
            loop {
                attempts += 1;
                let stored = self.ds.get_bundle(td).await.map_err(CaError::from)?;
                let (mut bundle, mut taints) = match &stored {
                    Some(s) => decode_bundle_with_taints(td, &s.data)?,
                    None => (Bundle::new(td.clone()), Taints::default()),
                };
                let before = (bundle.clone(), taints.clone());
                let out = f(&mut bundle, &mut taints)?;
                taints.retain_present(&bundle);
                if (&bundle, &taints) == (&before.0, &before.1) {
                    break (out, bundle, taints);
                }
                bundle.sequence_number += 1;
                let written = self
                    .ds
                    .set_bundle_if(
                        StoredBundle {
                            trust_domain: td.clone(),
                            data: encode_bundle_with_taints(&bundle, &taints)?,
                        },
                        stored.as_ref().map(|s| s.data.as_slice()),
                    )
                    .await
                    .map_err(CaError::from)?;
                if written {
                    break (out, bundle, taints);
                }
                if attempts >= BUNDLE_WRITE_ATTEMPTS {
                    return Err(CaError::from(sigil_datastore::DataStoreError::Conflict(format!(
                    "the bundle of {td} kept changing under {attempts} attempts to update it"
                )))
                .into());
                }
                tracing::debug!(
                    attempt = attempts,
                    "bundle changed concurrently; redoing the change"
                );
            };
        self.taints_tx.send_if_modified(|cur| {
            let changed = **cur != taints;
            if changed {
                *cur = Arc::new(taints);
            }
            changed
        });
        self.bundle_tx.send_if_modified(|cur| {
            let changed = **cur != bundle;
            if changed {
                *cur = Arc::new(bundle);
            }
            changed
        });
        Ok(out)
    }

    /// Drops authorities that expired more than a day before `now`.
    pub(super) async fn prune_bundle(&self, now: SystemTime) -> Result<(), CaError> {
        let cutoff = now
            .checked_sub(BUNDLE_PRUNE_SAFETY)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        self.update_bundle(|b| {
            b.x509_authorities.retain(|der| {
                sigil_crypto::x509::cert_info(der)
                    .map(|i| i.not_after > cutoff)
                    .unwrap_or(true)
            });
            b.jwt_authorities
                .retain(|a| a.expires_at.is_none_or(|exp| from_unix(exp) > cutoff));
        })
        .await
    }
}

/// Our bundle and its taints as stored, or an empty bundle.
pub(super) async fn load_bundle(
    ds: &dyn DataStore,
    td: &TrustDomain,
) -> Result<(Bundle, Taints), CaError> {
    match ds.get_bundle(td).await? {
        Some(stored) => decode_bundle_with_taints(td, &stored.data),
        None => Ok((Bundle::new(td.clone()), Taints::default())),
    }
}

/// How the bundle is stored: the SPIFFE JWKS document, plus the expiry of
/// each JWT authority, which the JWKS format has no member for (without it
/// old JWT keys could never be pruned), and which authorities are tainted.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredBundleDoc {
    jwks: serde_json::Value,
    #[serde(default)]
    jwt_expiry: std::collections::BTreeMap<String, i64>,
    /// Authority IDs of tainted X.509 authorities.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    tainted_x509: BTreeSet<String>,
    /// Key IDs of tainted JWT authorities.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    tainted_jwt: BTreeSet<String>,
}

/// Serializes a bundle for the datastore.
pub fn encode_bundle(b: &Bundle) -> Result<Vec<u8>, CaError> {
    encode_bundle_with_taints(b, &Taints::default())
}

/// Serializes a bundle and its taints for the datastore.
pub fn encode_bundle_with_taints(b: &Bundle, taints: &Taints) -> Result<Vec<u8>, CaError> {
    let jwks: serde_json::Value =
        serde_json::from_slice(&b.to_jwks()).map_err(StoredBundleError::from)?;
    let doc = StoredBundleDoc {
        jwks,
        jwt_expiry: b
            .jwt_authorities
            .iter()
            .filter_map(|a| a.expires_at.map(|e| (a.key_id.clone(), e)))
            .collect(),
        tainted_x509: taints.x509.clone(),
        tainted_jwt: taints.jwt.clone(),
    };
    Ok(serde_json::to_vec(&doc).map_err(StoredBundleError::from)?)
}

/// Reads a stored bundle (our document, or a bare SPIFFE JWKS).
pub fn decode_bundle(td: &TrustDomain, bytes: &[u8]) -> Result<Bundle, CaError> {
    decode_bundle_with_taints(td, bytes).map(|(b, _)| b)
}

/// Reads a stored bundle and its taints.
pub fn decode_bundle_with_taints(
    td: &TrustDomain,
    bytes: &[u8],
) -> Result<(Bundle, Taints), CaError> {
    let (jwks, expiry, taints) = match serde_json::from_slice::<StoredBundleDoc>(bytes) {
        Ok(doc) => (
            serde_json::to_vec(&doc.jwks).map_err(StoredBundleError::from)?,
            doc.jwt_expiry,
            Taints {
                x509: doc.tainted_x509,
                jwt: doc.tainted_jwt,
            },
        ),
        Err(_) => (bytes.to_vec(), Default::default(), Taints::default()),
    };
    let mut bundle = Bundle::parse_jwks(td, &jwks).map_err(StoredBundleError::from)?;
    for a in &mut bundle.jwt_authorities {
        if let Some(e) = expiry.get(&a.key_id) {
            a.expires_at = Some(*e);
        }
    }
    Ok((bundle, taints))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[tokio::test]
    async fn appended_authorities_are_deduplicated_and_kid_clashes_refused() {
        let f = fixture().await;
        let ca = start(&f).await;
        let key = leaf_key();
        let a = JwtAuthority {
            key_id: "ext".into(),
            public_key_der: key.public_key_der().to_vec(),
            expires_at: Some(2_000_000_000),
        };
        let seq = ca.bundle().sequence_number;
        let b = ca.append_to_bundle(vec![], vec![a.clone()]).await.unwrap();
        assert_eq!(b.jwt_authorities.len(), 2);
        assert_eq!(b.sequence_number, seq + 1);
        let b = ca.append_to_bundle(vec![], vec![a.clone()]).await.unwrap();
        assert_eq!(b.sequence_number, seq + 1, "nothing new, no change");
        let clash = JwtAuthority {
            public_key_der: leaf_key().public_key_der().to_vec(),
            ..a
        };
        assert!(matches!(
            ca.append_to_bundle(vec![], vec![clash]).await,
            Err(CaError::ConflictingAuthority(_))
        ));
        let stored = f.ds.get_bundle(&f.cfg.trust_domain).await.unwrap().unwrap();
        let decoded = decode_bundle(&f.cfg.trust_domain, &stored.data).unwrap();
        assert_eq!(
            decoded.find_jwt_authority("ext").unwrap().expires_at,
            Some(2_000_000_000)
        );
    }
}
