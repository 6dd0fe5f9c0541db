//! The server's certificate authority: X.509 CA certificates and JWT signing
//! keys, each in two slots (current and next) that rotate at SPIRE's points.
//!
//! A slot is *prepared* when the current authority passes half its lifetime
//! (at most 30 days before expiry): its key is generated, its certificate
//! self-signed, and it is published in the trust bundle before it signs
//! anything. It is *activated* when the current authority has a sixth of its
//! lifetime left (at most 7 days). The previous authority stays in the bundle
//! until it expires. Slots are recorded in a journal file in `data_dir` so a
//! restarted server (with a durable KeyManager) keeps its CA.
//!
//! This module must never sign with an authority that is not yet in the
//! bundle, and never issue an SVID that outlives its signing authority.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sigil_crypto::key::{KeyType, Signer};
use sigil_crypto::x509::CaSubject;
use sigil_datastore::{DataStore, StoredBundle};
use sigil_plugin::clock::{Clock, from_unix, unix};
use sigil_plugin::keymanager::KeyManager;
use sigil_spiffe::{Bundle, JwtAuthority, SpiffeId, TrustDomain};
use tokio::sync::{RwLock, watch};

const PREPARATION_CAP: Duration = Duration::from_secs(30 * 24 * 3600);
const ACTIVATION_CAP: Duration = Duration::from_secs(7 * 24 * 3600);
/// CA and SVID certificates are backdated to tolerate clock skew.
pub const BACKDATE: Duration = Duration::from_secs(10);
/// Expired authorities stay in the bundle this long after expiry.
const BUNDLE_PRUNE_SAFETY: Duration = Duration::from_secs(24 * 3600);

/// What can go wrong in the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// No active authority (the server is still starting, or keys are gone).
    #[error("no active {0} authority")]
    NoAuthority(&'static str),
    /// Key management failed.
    #[error("key manager: {0}")]
    KeyManager(#[from] sigil_plugin::KeyManagerError),
    /// Signing or certificate building failed.
    #[error("crypto: {0}")]
    Crypto(#[from] sigil_crypto::CryptoError),
    /// The datastore failed (bundle updates).
    #[error("datastore: {0}")]
    DataStore(#[from] sigil_datastore::DataStoreError),
    /// The journal could not be written or read.
    #[error("CA journal {path}: {reason}")]
    Journal {
        /// The file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The stored bundle is unreadable.
    #[error("stored bundle: {0}")]
    Bundle(String),
}

/// CA settings from server.conf.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// Trust domain.
    pub trust_domain: TrustDomain,
    /// Lifetime of CA certificates and JWT keys.
    pub ca_ttl: Duration,
    /// X.509 CA key type.
    pub x509_key_type: KeyType,
    /// JWT key type.
    pub jwt_key_type: KeyType,
    /// CA certificate subject.
    pub subject: CaSubject,
    /// `iss` claim for JWT-SVIDs.
    pub jwt_issuer: Option<String>,
    /// Where the journal lives.
    pub journal_path: PathBuf,
}

impl std::fmt::Debug for CaManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaManager")
            .field("trust_domain", &self.cfg.trust_domain)
            .finish_non_exhaustive()
    }
}

/// Lifecycle state of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotStatus {
    /// In the bundle, not yet signing.
    Prepared,
    /// Signing.
    Active,
    /// Replaced; in the bundle until it expires.
    Old,
}

/// An X.509 CA: certificate and signer.
#[derive(Debug, Clone)]
pub struct X509Ca {
    /// Slot `A` or `B`.
    pub slot: String,
    /// DER certificate.
    pub cert_der: Vec<u8>,
    /// The CA key.
    pub signer: Arc<dyn Signer>,
    /// When the slot was prepared.
    pub issued_at: SystemTime,
    /// Certificate expiry.
    pub not_after: SystemTime,
    /// State.
    pub status: SlotStatus,
}

/// A JWT signing key.
#[derive(Debug, Clone)]
pub struct JwtKey {
    /// Slot `A` or `B`.
    pub slot: String,
    /// Key ID (`kid`).
    pub kid: String,
    /// The key.
    pub signer: Arc<dyn Signer>,
    /// When prepared.
    pub issued_at: SystemTime,
    /// Expiry.
    pub not_after: SystemTime,
    /// State.
    pub status: SlotStatus,
}

#[derive(Debug, Default)]
struct State {
    x509_current: Option<X509Ca>,
    x509_next: Option<X509Ca>,
    jwt_current: Option<JwtKey>,
    jwt_next: Option<JwtKey>,
}

/// The certificate authority.
pub struct CaManager {
    cfg: CaConfig,
    km: Arc<dyn KeyManager>,
    ds: Arc<dyn DataStore>,
    clock: Arc<dyn Clock>,
    state: RwLock<State>,
    bundle_tx: watch::Sender<Arc<Bundle>>,
}

impl CaManager {
    /// Loads the journal, restores slots whose keys the KeyManager still
    /// holds, and makes sure an active X.509 CA and JWT key exist.
    pub async fn start(
        cfg: CaConfig,
        km: Arc<dyn KeyManager>,
        ds: Arc<dyn DataStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, CaError> {
        let bundle = load_bundle(ds.as_ref(), &cfg.trust_domain).await?;
        let (bundle_tx, _) = watch::channel(Arc::new(bundle));
        let ca = Arc::new(CaManager {
            cfg,
            km,
            ds,
            clock,
            state: RwLock::new(State::default()),
            bundle_tx,
        });
        ca.load_journal().await?;
        ca.rotate().await?;
        Ok(ca)
    }

    /// Runs rotation checks every `interval` until the task is dropped.
    pub async fn run_rotation(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.rotate().await {
                tracing::error!(error = %e, "CA rotation check failed; will retry");
            }
        }
    }

    /// One rotation step: prepare, activate and prune as due.
    pub async fn rotate(&self) -> Result<(), CaError> {
        let now = self.clock.now();
        let mut st = self.state.write().await;
        let mut journal_dirty = false;

        // X.509 CA.
        let current_usable = st.x509_current.as_ref().is_some_and(|c| c.not_after > now);
        if !current_usable {
            let slot = other_slot(st.x509_next.as_ref().map(|n| n.slot.as_str()));
            let mut ca = match st.x509_next.take() {
                Some(next) if next.not_after > now => next,
                _ => self.prepare_x509(&slot).await?,
            };
            ca.status = SlotStatus::Active;
            tracing::info!(slot = %ca.slot, expiration = %rfc3339(ca.not_after), "X509 CA activated");
            st.x509_current = Some(ca);
            journal_dirty = true;
        } else if let Some(cur) = st.x509_current.clone() {
            if st.x509_next.is_none() && now >= preparation_threshold(cur.issued_at, cur.not_after)
            {
                let next = self.prepare_x509(&other_slot(Some(&cur.slot))).await?;
                st.x509_next = Some(next);
                journal_dirty = true;
            }
            if now >= activation_threshold(cur.issued_at, cur.not_after)
                && let Some(mut next) = st.x509_next.take()
            {
                next.status = SlotStatus::Active;
                tracing::info!(slot = %next.slot, expiration = %rfc3339(next.not_after), "X509 CA activated");
                st.x509_current = Some(next);
                journal_dirty = true;
            }
        }

        // JWT key.
        let current_usable = st.jwt_current.as_ref().is_some_and(|c| c.not_after > now);
        if !current_usable {
            let slot = other_slot(st.jwt_next.as_ref().map(|n| n.slot.as_str()));
            let mut key = match st.jwt_next.take() {
                Some(next) if next.not_after > now => next,
                _ => self.prepare_jwt(&slot).await?,
            };
            key.status = SlotStatus::Active;
            tracing::info!(slot = %key.slot, kid = %key.kid, "JWT key activated");
            st.jwt_current = Some(key);
            journal_dirty = true;
        } else if let Some(cur) = st.jwt_current.clone() {
            if st.jwt_next.is_none() && now >= preparation_threshold(cur.issued_at, cur.not_after) {
                let next = self.prepare_jwt(&other_slot(Some(&cur.slot))).await?;
                st.jwt_next = Some(next);
                journal_dirty = true;
            }
            if now >= activation_threshold(cur.issued_at, cur.not_after)
                && let Some(mut next) = st.jwt_next.take()
            {
                next.status = SlotStatus::Active;
                tracing::info!(slot = %next.slot, kid = %next.kid, "JWT key activated");
                st.jwt_current = Some(next);
                journal_dirty = true;
            }
        }

        if journal_dirty {
            self.write_journal(&st)?;
        }
        drop(st);
        self.prune_bundle(now).await
    }

    /// The active X.509 CA.
    pub async fn x509_ca(&self) -> Result<X509Ca, CaError> {
        self.state
            .read()
            .await
            .x509_current
            .clone()
            .ok_or(CaError::NoAuthority("X.509"))
    }

    /// The active JWT key.
    pub async fn jwt_key(&self) -> Result<JwtKey, CaError> {
        self.state
            .read()
            .await
            .jwt_current
            .clone()
            .ok_or(CaError::NoAuthority("JWT"))
    }

    /// The prepared (next) X.509 CA, if any.
    pub async fn next_x509_ca(&self) -> Option<X509Ca> {
        self.state.read().await.x509_next.clone()
    }

    /// Signs an X509-SVID for `id` over `public_key_der`. The lifetime is
    /// `ttl`, cut short to the CA's own expiry. Returns the chain (leaf first;
    /// the self-signed root is in the bundle, not the chain) and its expiry.
    pub async fn sign_x509_svid(
        &self,
        id: &SpiffeId,
        public_key_der: &[u8],
        ttl: Duration,
        dns_names: &[String],
    ) -> Result<(Vec<Vec<u8>>, SystemTime), CaError> {
        let ca = self.x509_ca().await?;
        let now = self.clock.now();
        let not_after = (now + ttl).min(ca.not_after);
        let params = sigil_crypto::x509::X509SvidParams {
            spiffe_id: id.clone(),
            public_key_der: public_key_der.to_vec(),
            dns_names: dns_names.to_vec(),
            not_before: now - BACKDATE,
            not_after,
            subject: None,
        };
        let leaf = sigil_crypto::x509::sign_x509_svid(&ca.cert_der, ca.signer.as_ref(), &params)?;
        Ok((vec![leaf], not_after))
    }

    /// Signs a JWT-SVID. Returns the token, issued-at and expiry.
    pub async fn sign_jwt_svid(
        &self,
        id: &SpiffeId,
        audience: &[String],
        ttl: Duration,
    ) -> Result<(String, SystemTime, SystemTime), CaError> {
        let key = self.jwt_key().await?;
        let now = self.clock.now();
        let exp = (now + ttl).min(key.not_after);
        let token = sigil_crypto::jwt::sign_jwt_svid(
            key.signer.as_ref(),
            &key.kid,
            id,
            audience,
            now,
            exp,
            self.cfg.jwt_issuer.as_deref(),
        )?;
        Ok((token, now, exp))
    }

    /// The current trust bundle of our trust domain.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.bundle_tx.borrow().clone()
    }

    /// Notified with the new bundle whenever it changes.
    pub fn subscribe_bundle(&self) -> watch::Receiver<Arc<Bundle>> {
        self.bundle_tx.subscribe()
    }

    /// Re-reads the bundle from the datastore (after an admin changed it).
    pub async fn reload_bundle(&self) -> Result<(), CaError> {
        let b = load_bundle(self.ds.as_ref(), &self.cfg.trust_domain).await?;
        self.bundle_tx.send_replace(Arc::new(b));
        Ok(())
    }

    async fn prepare_x509(&self, slot: &str) -> Result<X509Ca, CaError> {
        let now = self.clock.now();
        let signer = self
            .km
            .generate_key(&format!("x509-CA-{slot}"), self.cfg.x509_key_type)
            .await?;
        let not_after = now + self.cfg.ca_ttl;
        let cert_der = sigil_crypto::x509::self_signed_ca(
            signer.as_ref(),
            &self.cfg.trust_domain,
            &self.cfg.subject,
            now - BACKDATE,
            not_after,
        )?;
        // Publish before use: the new root is in the bundle before any SVID
        // it signs can exist.
        self.update_bundle(|b| {
            if !b.x509_authorities.contains(&cert_der) {
                b.x509_authorities.push(cert_der.clone());
            }
        })
        .await?;
        tracing::info!(slot, expiration = %rfc3339(not_after), "X509 CA prepared");
        Ok(X509Ca {
            slot: slot.to_owned(),
            cert_der,
            signer,
            issued_at: now,
            not_after,
            status: SlotStatus::Prepared,
        })
    }

    async fn prepare_jwt(&self, slot: &str) -> Result<JwtKey, CaError> {
        let now = self.clock.now();
        let signer = self
            .km
            .generate_key(&format!("JWT-Signer-{slot}"), self.cfg.jwt_key_type)
            .await?;
        let not_after = now + self.cfg.ca_ttl;
        let kid = new_key_id();
        let authority = JwtAuthority {
            key_id: kid.clone(),
            public_key_der: signer.public_key_der().to_vec(),
            expires_at: Some(unix(not_after)),
        };
        self.update_bundle(|b| {
            if !b
                .jwt_authorities
                .iter()
                .any(|a| a.key_id == authority.key_id)
            {
                b.jwt_authorities.push(authority.clone());
            }
        })
        .await?;
        tracing::info!(slot, kid = %kid, "JWT key prepared");
        Ok(JwtKey {
            slot: slot.to_owned(),
            kid,
            signer,
            issued_at: now,
            not_after,
            status: SlotStatus::Prepared,
        })
    }

    async fn update_bundle(&self, f: impl FnOnce(&mut Bundle)) -> Result<(), CaError> {
        let mut bundle = load_bundle(self.ds.as_ref(), &self.cfg.trust_domain).await?;
        let before = bundle.clone();
        f(&mut bundle);
        if bundle != before {
            bundle.sequence_number += 1;
            self.ds
                .set_bundle(StoredBundle {
                    trust_domain: self.cfg.trust_domain.clone(),
                    data: encode_bundle(&bundle)?,
                })
                .await?;
        }
        self.bundle_tx.send_replace(Arc::new(bundle));
        Ok(())
    }

    async fn prune_bundle(&self, now: SystemTime) -> Result<(), CaError> {
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

    async fn load_journal(&self) -> Result<(), CaError> {
        let path = &self.cfg.journal_path;
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.journal_err(e.to_string())),
        };
        let journal: Journal =
            serde_json::from_slice(&bytes).map_err(|e| self.journal_err(e.to_string()))?;
        let mut st = self.state.write().await;
        for e in journal.x509 {
            let Ok(cert_der) = STANDARD.decode(&e.cert) else {
                continue;
            };
            let Some(signer) = self.km.get_key(&format!("x509-CA-{}", e.slot)).await? else {
                tracing::warn!(slot = %e.slot, "X509 CA key is gone from the KeyManager; slot dropped");
                continue;
            };
            let matches = sigil_crypto::x509::cert_info(&cert_der)
                .map(|i| i.public_key_der == signer.public_key_der())
                .unwrap_or(false);
            if !matches {
                tracing::warn!(slot = %e.slot, "X509 CA key does not match its journal entry; slot dropped");
                continue;
            }
            let ca = X509Ca {
                slot: e.slot,
                cert_der,
                signer,
                issued_at: from_unix(e.issued_at),
                not_after: from_unix(e.not_after),
                status: e.status,
            };
            match e.status {
                SlotStatus::Active => st.x509_current = Some(ca),
                SlotStatus::Prepared => st.x509_next = Some(ca),
                SlotStatus::Old => {}
            }
        }
        for e in journal.jwt {
            let Some(signer) = self.km.get_key(&format!("JWT-Signer-{}", e.slot)).await? else {
                continue;
            };
            let in_bundle = self
                .bundle()
                .jwt_authorities
                .iter()
                .any(|a| a.key_id == e.kid && a.public_key_der == signer.public_key_der());
            if !in_bundle {
                tracing::warn!(slot = %e.slot, "JWT key not in the bundle; slot dropped");
                continue;
            }
            let key = JwtKey {
                slot: e.slot,
                kid: e.kid,
                signer,
                issued_at: from_unix(e.issued_at),
                not_after: from_unix(e.not_after),
                status: e.status,
            };
            match e.status {
                SlotStatus::Active => st.jwt_current = Some(key),
                SlotStatus::Prepared => st.jwt_next = Some(key),
                SlotStatus::Old => {}
            }
        }
        Ok(())
    }

    fn write_journal(&self, st: &State) -> Result<(), CaError> {
        let journal = Journal {
            x509: [&st.x509_current, &st.x509_next]
                .into_iter()
                .flatten()
                .map(|c| X509JournalEntry {
                    slot: c.slot.clone(),
                    issued_at: unix(c.issued_at),
                    not_after: unix(c.not_after),
                    cert: STANDARD.encode(&c.cert_der),
                    status: c.status,
                })
                .collect(),
            jwt: [&st.jwt_current, &st.jwt_next]
                .into_iter()
                .flatten()
                .map(|k| JwtJournalEntry {
                    slot: k.slot.clone(),
                    kid: k.kid.clone(),
                    issued_at: unix(k.issued_at),
                    not_after: unix(k.not_after),
                    status: k.status,
                })
                .collect(),
        };
        let bytes =
            serde_json::to_vec_pretty(&journal).map_err(|e| self.journal_err(e.to_string()))?;
        sigil_plugin::keymanager::disk::write_atomic(&self.cfg.journal_path, &bytes)
            .map_err(|e| self.journal_err(e.to_string()))
    }

    fn journal_err(&self, reason: String) -> CaError {
        CaError::Journal {
            path: self.cfg.journal_path.display().to_string(),
            reason,
        }
    }
}

/// When the next authority should be prepared.
pub fn preparation_threshold(issued_at: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after.duration_since(issued_at).unwrap_or_default();
    not_after - (lifetime / 2).min(PREPARATION_CAP)
}

/// When the next authority should become active.
pub fn activation_threshold(issued_at: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after.duration_since(issued_at).unwrap_or_default();
    not_after - (lifetime / 6).min(ACTIVATION_CAP)
}

async fn load_bundle(ds: &dyn DataStore, td: &TrustDomain) -> Result<Bundle, CaError> {
    match ds.get_bundle(td).await? {
        Some(stored) => decode_bundle(td, &stored.data),
        None => Ok(Bundle::new(td.clone())),
    }
}

/// How the bundle is stored: the SPIFFE JWKS document, plus the expiry of
/// each JWT authority, which the JWKS format has no member for (without it
/// old JWT keys could never be pruned).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredBundleDoc {
    jwks: serde_json::Value,
    #[serde(default)]
    jwt_expiry: std::collections::BTreeMap<String, i64>,
}

/// Serializes a bundle for the datastore.
pub fn encode_bundle(b: &Bundle) -> Result<Vec<u8>, CaError> {
    let jwks: serde_json::Value =
        serde_json::from_slice(&b.to_jwks()).map_err(|e| CaError::Bundle(e.to_string()))?;
    let doc = StoredBundleDoc {
        jwks,
        jwt_expiry: b
            .jwt_authorities
            .iter()
            .filter_map(|a| a.expires_at.map(|e| (a.key_id.clone(), e)))
            .collect(),
    };
    serde_json::to_vec(&doc).map_err(|e| CaError::Bundle(e.to_string()))
}

/// Reads a stored bundle (our document, or a bare SPIFFE JWKS).
pub fn decode_bundle(td: &TrustDomain, bytes: &[u8]) -> Result<Bundle, CaError> {
    let (jwks, expiry) = match serde_json::from_slice::<StoredBundleDoc>(bytes) {
        Ok(doc) => (
            serde_json::to_vec(&doc.jwks).map_err(|e| CaError::Bundle(e.to_string()))?,
            doc.jwt_expiry,
        ),
        Err(_) => (bytes.to_vec(), Default::default()),
    };
    let mut bundle = Bundle::parse_jwks(td, &jwks).map_err(|e| CaError::Bundle(e.to_string()))?;
    for a in &mut bundle.jwt_authorities {
        if let Some(e) = expiry.get(&a.key_id) {
            a.expires_at = Some(*e);
        }
    }
    Ok(bundle)
}

/// RFC 3339 UTC, for logs.
pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{t:?}"))
}

fn other_slot(slot: Option<&str>) -> String {
    match slot {
        Some("A") => "B".into(),
        _ => "A".into(),
    }
}

fn new_key_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Journal {
    x509: Vec<X509JournalEntry>,
    jwt: Vec<JwtJournalEntry>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct X509JournalEntry {
    slot: String,
    issued_at: i64,
    not_after: i64,
    cert: String,
    status: SlotStatus,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct JwtJournalEntry {
    slot: String,
    kid: String,
    issued_at: i64,
    not_after: i64,
    status: SlotStatus,
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_plugin::clock::ManualClock;
    use sigil_plugin::keymanager::DiskKeyManager;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    struct Fixture {
        _dir: tempfile::TempDir,
        cfg: CaConfig,
        km: Arc<dyn KeyManager>,
        ds: Arc<dyn DataStore>,
        clock: Arc<ManualClock>,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ds = sigil_datastore::open("sqlite3", dir.path().join("ds.sqlite3").to_str().unwrap())
            .await
            .unwrap();
        let km: Arc<dyn KeyManager> =
            Arc::new(DiskKeyManager::open(dir.path().join("keys.json")).unwrap());
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        Fixture {
            cfg: CaConfig {
                trust_domain: TrustDomain::new("example.org").unwrap(),
                ca_ttl: DAY,
                x509_key_type: KeyType::EcP256,
                jwt_key_type: KeyType::EcP256,
                subject: CaSubject::default(),
                jwt_issuer: None,
                journal_path: dir.path().join("journal.json"),
            },
            _dir: dir,
            km,
            ds,
            clock: Arc::new(ManualClock::new(start)),
        }
    }

    async fn start(f: &Fixture) -> Arc<CaManager> {
        CaManager::start(f.cfg.clone(), f.km.clone(), f.ds.clone(), f.clock.clone())
            .await
            .unwrap()
    }

    fn leaf_key() -> sigil_crypto::key::SoftwareKey {
        sigil_crypto::key::SoftwareKey::generate(KeyType::EcP256).unwrap()
    }

    async fn issuer_of(ca: &CaManager, clock: &ManualClock) -> Vec<u8> {
        let id = SpiffeId::parse("spiffe://example.org/w").unwrap();
        let key = leaf_key();
        let (chain, _) = ca
            .sign_x509_svid(&id, key.public_key_der(), Duration::from_secs(60), &[])
            .await
            .unwrap();
        // Which bundle authority verifies it?
        let bundle = ca.bundle();
        bundle
            .x509_authorities
            .iter()
            .find(|root| {
                sigil_crypto::x509::verify_chain(&chain, std::slice::from_ref(root), clock.now())
                    .is_ok()
            })
            .cloned()
            .expect("signed by an authority in the bundle")
    }

    #[tokio::test]
    async fn ca_prepares_at_half_life_and_activates_at_five_sixths() {
        let f = fixture().await;
        let ca = start(&f).await;
        let first = ca.x509_ca().await.unwrap();
        assert_eq!(first.status, SlotStatus::Active);
        assert_eq!(ca.bundle().x509_authorities.len(), 1);
        assert_eq!(ca.bundle().jwt_authorities.len(), 1);

        f.clock.advance(DAY / 2 - Duration::from_secs(60));
        ca.rotate().await.unwrap();
        assert!(
            ca.next_x509_ca().await.is_none(),
            "not prepared before half life"
        );

        f.clock.advance(Duration::from_secs(120));
        ca.rotate().await.unwrap();
        let next = ca.next_x509_ca().await.expect("prepared after half life");
        assert_eq!(next.status, SlotStatus::Prepared);
        assert_ne!(next.slot, first.slot);
        // Published before it signs anything, while the old one still signs.
        assert!(ca.bundle().x509_authorities.contains(&next.cert_der));
        assert_eq!(ca.bundle().jwt_authorities.len(), 2);
        assert_eq!(issuer_of(&ca, &f.clock).await, first.cert_der);

        // Activation at notAfter - lifetime/6.
        f.clock
            .set(first.not_after - DAY / 6 - Duration::from_secs(60));
        ca.rotate().await.unwrap();
        assert_eq!(ca.x509_ca().await.unwrap().slot, first.slot);
        f.clock.advance(Duration::from_secs(120));
        ca.rotate().await.unwrap();
        let active = ca.x509_ca().await.unwrap();
        assert_eq!(active.slot, next.slot);
        assert_eq!(issuer_of(&ca, &f.clock).await, next.cert_der);

        // The old authority stays in the bundle until a day after it expires.
        f.clock.set(first.not_after + Duration::from_secs(3600));
        ca.rotate().await.unwrap();
        assert!(ca.bundle().x509_authorities.contains(&first.cert_der));
        f.clock.set(first.not_after + DAY + Duration::from_secs(60));
        ca.rotate().await.unwrap();
        assert!(
            !ca.bundle().x509_authorities.contains(&first.cert_der),
            "pruned"
        );
    }

    #[tokio::test]
    async fn jwt_keys_rotate_and_expired_ones_are_pruned() {
        let f = fixture().await;
        let ca = start(&f).await;
        let first = ca.jwt_key().await.unwrap();
        f.clock.advance(DAY * 5 / 6 + Duration::from_secs(60));
        ca.rotate().await.unwrap(); // prepares
        ca.rotate().await.unwrap(); // activates
        let second = ca.jwt_key().await.unwrap();
        assert_ne!(first.kid, second.kid);
        let id = SpiffeId::parse("spiffe://example.org/w").unwrap();
        let (token, _, _) = ca
            .sign_jwt_svid(&id, &["aud".to_owned()], Duration::from_secs(60))
            .await
            .unwrap();
        assert!(token.split('.').next().is_some());
        let header = sigil_spiffe::JwtSvid::parse_insecure(&token).unwrap();
        assert_eq!(header.header().kid.as_deref(), Some(second.kid.as_str()));
        // Expiry survives storage, so the old key is pruned after expiry + 1 day.
        f.clock.set(first.not_after + DAY + Duration::from_secs(60));
        ca.rotate().await.unwrap();
        let kids: Vec<_> = ca
            .bundle()
            .jwt_authorities
            .iter()
            .map(|a| a.key_id.clone())
            .collect();
        assert!(!kids.contains(&first.kid), "{kids:?}");
        assert!(kids.contains(&second.kid));
    }

    #[tokio::test]
    async fn restart_keeps_the_active_ca_with_a_durable_key_manager() {
        let f = fixture().await;
        let ca = start(&f).await;
        let before = ca.x509_ca().await.unwrap();
        let kid = ca.jwt_key().await.unwrap().kid;
        drop(ca);
        let ca = start(&f).await;
        assert_eq!(ca.x509_ca().await.unwrap().cert_der, before.cert_der);
        assert_eq!(ca.jwt_key().await.unwrap().kid, kid);
        assert_eq!(ca.bundle().x509_authorities.len(), 1, "no second CA minted");
    }

    #[tokio::test]
    async fn svid_lifetime_is_cut_to_the_ca_expiry() {
        let f = fixture().await;
        let ca = start(&f).await;
        let active = ca.x509_ca().await.unwrap();
        let key = leaf_key();
        let id = SpiffeId::parse("spiffe://example.org/w").unwrap();
        let (_, not_after) = ca
            .sign_x509_svid(&id, key.public_key_der(), DAY * 3, &[])
            .await
            .unwrap();
        assert_eq!(not_after, active.not_after);
    }

    #[test]
    fn thresholds_follow_spire_with_caps() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = t0 + DAY;
        assert_eq!(preparation_threshold(t0, end), t0 + DAY / 2);
        assert_eq!(activation_threshold(t0, end), end - DAY / 6);
        let long_end = t0 + DAY * 365;
        assert_eq!(preparation_threshold(t0, long_end), long_end - DAY * 30);
        assert_eq!(activation_threshold(t0, long_end), long_end - DAY * 7);
    }
}
