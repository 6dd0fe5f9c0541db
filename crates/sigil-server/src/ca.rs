//! The server's certificate authority: X.509 CA certificates and JWT signing
//! keys, each in two slots (current and next) that rotate at SPIRE's points.
//!
//! A slot is *prepared* when the current authority passes half its lifetime
//! (at most 30 days before expiry): its key is generated, its certificate
//! self-signed, and it is published in the trust bundle before it signs
//! anything. It is *activated* when the current authority has a sixth of its
//! lifetime left (at most 7 days). The previous authority moves to the next
//! slot as *old* and stays in the bundle until it expires. Slots are recorded
//! in a journal file in `data_dir` so a restarted server (with a durable
//! KeyManager) keeps its CA.
//!
//! Administrators can drive the same steps by hand (SPIRE's LocalAuthority
//! API): prepare now, activate the prepared authority, taint the old one
//! (flagged in the bundle so its SVIDs get replaced) and revoke it (removed
//! from the bundle). Our bundle, with its taints, is changed only here.
//!
//! This module must never sign with an authority that is not yet in the
//! bundle, and never issue an SVID that outlives its signing authority.

use std::collections::BTreeSet;
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
use sigil_plugin::upstreamauthority::{MintX509CaRequest, UpstreamAuthority};
use sigil_spiffe::{Bundle, JwtAuthority, SpiffeId, TrustDomain};
use sigil_telemetry::metrics::CallCounter;
use tokio::sync::{Mutex, RwLock, watch};

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
    /// The UpstreamAuthority failed.
    #[error("upstream authority: {0}")]
    Upstream(String),
    /// The stored bundle is unreadable.
    #[error("stored bundle: {0}")]
    Bundle(String),
    /// An authority offered for the bundle conflicts with one already in it.
    #[error("{0}")]
    ConflictingAuthority(String),
}

/// Why a local authority operation (SPIRE's `LocalAuthority` API) was
/// refused. The API layer words each case the way SPIRE does for its RPC.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// The request named no authority.
    #[error("no authority ID provided")]
    MissingId,
    /// The authority is the active one.
    #[error("authority is the active one")]
    IsActive,
    /// The authority is the prepared one.
    #[error("authority is the prepared one")]
    IsPrepared,
    /// The authority is not the one in the next slot.
    #[error("authority is not in the next slot")]
    NotNext,
    /// The next slot holds the authority, in the wrong state for the operation.
    #[error("unsupported local authority status: {}", .0.spire_name())]
    WrongStatus(SlotStatus),
    /// No JWT authority of the bundle has that key ID (checked before acting).
    #[error("no JWT authority found with provided authority ID")]
    UnknownAuthority,
    /// The bundle holds no authority with that ID (found while acting).
    #[error("authority is not in the bundle")]
    NotInBundle,
    /// The authority is tainted already.
    #[error("authority is already tainted")]
    AlreadyTainted,
    /// Only tainted authorities can be revoked.
    #[error("authority is not tainted")]
    NotTainted,
    /// The CA failed.
    #[error(transparent)]
    Ca(#[from] CaError),
}

/// Why an upstream authority cannot be tainted or revoked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamAuthorityError {
    /// The server has no UpstreamAuthority.
    #[error("upstream authority is not configured")]
    NotConfigured,
    /// The subject key ID is not one that may be used (SPIRE's reasons).
    #[error("{0}")]
    Invalid(&'static str),
    /// No authority of the bundle has that subject key ID.
    #[error("no upstream authority found with provided subject key ID")]
    NotInBundle,
    /// The authority is tainted already.
    #[error("upstream authority is already tainted")]
    AlreadyTainted,
    /// Only tainted authorities can be revoked.
    #[error("it is not possible to revoke an untainted root CA")]
    NotTainted,
    /// The CA failed.
    #[error(transparent)]
    Ca(#[from] CaError),
}

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

/// One local authority as SPIRE's `LocalAuthority` API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityState {
    /// Hex SubjectKeyIdentifier (X.509) or key ID (JWT).
    pub authority_id: String,
    /// When it expires.
    pub expires_at: SystemTime,
    /// Its slot state.
    pub status: SlotStatus,
    /// For an upstream-signed X.509 CA, the hex AuthorityKeyIdentifier of the
    /// upstream authority that signed it; empty otherwise.
    pub upstream_authority_id: String,
}

/// The active authority and the one in the next slot (prepared or old).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorityStates {
    /// Signing now.
    pub active: Option<AuthorityState>,
    /// Published, not yet signing.
    pub prepared: Option<AuthorityState>,
    /// Replaced by the active one; in the bundle until it expires.
    pub old: Option<AuthorityState>,
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
    /// Signs the X.509 CA when set; otherwise the CA is self-signed.
    pub upstream: Option<Arc<dyn UpstreamAuthority>>,
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

impl SlotStatus {
    /// The name SPIRE's journal gives the state (`PREPARED`, `ACTIVE`, `OLD`).
    pub fn spire_name(self) -> &'static str {
        match self {
            SlotStatus::Prepared => "PREPARED",
            SlotStatus::Active => "ACTIVE",
            SlotStatus::Old => "OLD",
        }
    }
}

/// An X.509 CA: certificate and signer.
#[derive(Debug, Clone)]
pub struct X509Ca {
    /// Slot `A` or `B`.
    pub slot: String,
    /// DER certificate.
    pub cert_der: Vec<u8>,
    /// Upstream intermediates between this CA and the upstream roots (empty
    /// for a self-signed CA or one signed directly by an upstream root).
    pub upstream_chain: Vec<Vec<u8>>,
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

impl X509Ca {
    /// SPIRE's authority ID: the certificate's SubjectKeyIdentifier in hex.
    pub fn authority_id(&self) -> String {
        x509_authority_id(&self.cert_der)
    }
}

/// What the slot logic needs of an X.509 CA or a JWT key.
trait SlotLike: Clone {
    fn status(&self) -> SlotStatus;
    fn set_status(&mut self, status: SlotStatus);
    fn authority_id(&self) -> String;
    fn not_after(&self) -> SystemTime;
    fn upstream_authority_id(&self) -> String {
        String::new()
    }
}

impl SlotLike for X509Ca {
    fn status(&self) -> SlotStatus {
        self.status
    }
    fn set_status(&mut self, status: SlotStatus) {
        self.status = status;
    }
    fn authority_id(&self) -> String {
        X509Ca::authority_id(self)
    }
    fn not_after(&self) -> SystemTime {
        self.not_after
    }
    fn upstream_authority_id(&self) -> String {
        x509_upstream_authority_id(&self.cert_der)
    }
}

impl SlotLike for JwtKey {
    fn status(&self) -> SlotStatus {
        self.status
    }
    fn set_status(&mut self, status: SlotStatus) {
        self.status = status;
    }
    fn authority_id(&self) -> String {
        self.kid.clone()
    }
    fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

/// The current slot and the next one. As in SPIRE, the next slot holds either
/// the prepared authority or, after a rotation, the old one (until the next
/// preparation reuses the slot).
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
    taints_tx: watch::Sender<Arc<Taints>>,
    /// Serialises this process's read-modify-writes of the stored bundle
    /// (other servers on the same datastore are covered by the compare-and-set
    /// in `modify_bundle`).
    bundle_lock: Mutex<()>,
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
        let (bundle, taints) = load_bundle(ds.as_ref(), &cfg.trust_domain).await?;
        let (bundle_tx, _) = watch::channel(Arc::new(bundle));
        let (taints_tx, _) = watch::channel(Arc::new(taints));
        let ca = Arc::new(CaManager {
            cfg,
            km,
            ds,
            clock,
            state: RwLock::new(State::default()),
            bundle_tx,
            taints_tx,
            bundle_lock: Mutex::new(()),
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
            let mut ca = match take_prepared(&mut st.x509_next) {
                Some(next) if next.not_after > now => next,
                _ => self.prepare_x509(&slot).await?,
            };
            ca.status = SlotStatus::Active;
            tracing::info!(slot = %ca.slot, expiration = %rfc3339(ca.not_after), "X509 CA activated");
            self.record_x509_activation(&ca);
            st.x509_current = Some(ca);
            journal_dirty = true;
        } else if let Some(cur) = st.x509_current.clone() {
            if !has_prepared(&st.x509_next)
                && now >= preparation_threshold(cur.issued_at, cur.not_after)
            {
                let next = self.prepare_x509(&other_slot(Some(&cur.slot))).await?;
                st.x509_next = Some(next);
                journal_dirty = true;
            }
            if now >= activation_threshold(cur.issued_at, cur.not_after)
                && has_prepared(&st.x509_next)
            {
                let st = &mut *st;
                rotate_slots(&mut st.x509_current, &mut st.x509_next);
                if let Some(active) = &st.x509_current {
                    tracing::info!(slot = %active.slot, expiration = %rfc3339(active.not_after), "X509 CA activated");
                    self.record_x509_activation(active);
                }
                journal_dirty = true;
            }
        }

        // JWT key.
        let current_usable = st.jwt_current.as_ref().is_some_and(|c| c.not_after > now);
        if !current_usable {
            let slot = other_slot(st.jwt_next.as_ref().map(|n| n.slot.as_str()));
            let mut key = match take_prepared(&mut st.jwt_next) {
                Some(next) if next.not_after > now => next,
                _ => self.prepare_jwt(&slot).await?,
            };
            key.status = SlotStatus::Active;
            tracing::info!(slot = %key.slot, kid = %key.kid, "JWT key activated");
            metrics::counter!("manager_jwt_key_activate").increment(1);
            st.jwt_current = Some(key);
            journal_dirty = true;
        } else if let Some(cur) = st.jwt_current.clone() {
            if !has_prepared(&st.jwt_next)
                && now >= preparation_threshold(cur.issued_at, cur.not_after)
            {
                let next = self.prepare_jwt(&other_slot(Some(&cur.slot))).await?;
                st.jwt_next = Some(next);
                journal_dirty = true;
            }
            if now >= activation_threshold(cur.issued_at, cur.not_after)
                && has_prepared(&st.jwt_next)
            {
                let st = &mut *st;
                rotate_slots(&mut st.jwt_current, &mut st.jwt_next);
                if let Some(active) = &st.jwt_current {
                    tracing::info!(slot = %active.slot, kid = %active.kid, "JWT key activated");
                    metrics::counter!("manager_jwt_key_activate").increment(1);
                }
                journal_dirty = true;
            }
        }

        if journal_dirty {
            self.write_journal(&st)?;
        }
        // sigil's own: how long until the active authorities expire, for
        // alerts that fire before SVIDs stop being issued.
        for (name, not_after) in [
            (
                "x509_ca_expires_in_seconds",
                st.x509_current.as_ref().map(|c| c.not_after),
            ),
            (
                "jwt_key_expires_in_seconds",
                st.jwt_current.as_ref().map(|k| k.not_after),
            ),
        ] {
            if let Some(t) = not_after {
                let left = t.duration_since(now).map_or(0.0, |d| d.as_secs_f64());
                metrics::gauge!(name).set(left);
            }
        }
        drop(st);
        self.prune_bundle(now).await
    }

    /// SPIRE's metrics of an X.509 CA activation.
    fn record_x509_activation(&self, ca: &X509Ca) {
        metrics::counter!("ca_manager_x509_ca_activate").increment(1);
        let td = self.cfg.trust_domain.id_string();
        let expiration = ca
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        metrics::gauge!("manager_x509_ca_rotate_expiration", "trust_domain_id" => td.clone())
            .set(expiration);
        let ttl = ca
            .not_after
            .duration_since(self.clock.now())
            .map_or(0.0, |d| d.as_secs_f64());
        metrics::gauge!("manager_x509_ca_rotate_ttl", "trust_domain_id" => td).set(ttl);
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
        self.state
            .read()
            .await
            .x509_next
            .clone()
            .filter(|n| n.status == SlotStatus::Prepared)
    }

    /// The active X.509 authority and the one in the next slot.
    pub async fn x509_state(&self) -> AuthorityStates {
        let st = self.state.read().await;
        slot_states(&st.x509_current, &st.x509_next)
    }

    /// The active JWT authority and the one in the next slot.
    pub async fn jwt_state(&self) -> AuthorityStates {
        let st = self.state.read().await;
        slot_states(&st.jwt_current, &st.jwt_next)
    }

    /// Prepares a new X.509 authority now, in the next slot (replacing a
    /// prepared or old one there), and publishes it in the bundle.
    pub async fn prepare_x509_now(&self) -> Result<AuthorityState, CaError> {
        let mut st = self.state.write().await;
        let cur = active_slot(&st.x509_current).ok_or(CaError::NoAuthority("X.509"))?;
        let next = self.prepare_x509(&other_slot(Some(&cur.slot))).await?;
        let state = slot_state(&next);
        st.x509_next = Some(next);
        self.write_journal(&st)?;
        Ok(state)
    }

    /// Prepares a new JWT key now, in the next slot, and publishes it.
    pub async fn prepare_jwt_now(&self) -> Result<AuthorityState, CaError> {
        let mut st = self.state.write().await;
        let cur = active_slot(&st.jwt_current).ok_or(CaError::NoAuthority("JWT"))?;
        let next = self.prepare_jwt(&other_slot(Some(&cur.slot))).await?;
        let state = slot_state(&next);
        st.jwt_next = Some(next);
        self.write_journal(&st)?;
        Ok(state)
    }

    /// Makes the prepared X.509 authority `authority_id` the active one; the
    /// active one becomes old.
    pub async fn activate_x509(
        &self,
        authority_id: &str,
    ) -> Result<AuthorityState, AuthorityError> {
        let mut st = self.state.write().await;
        check_activation(&st.x509_next, authority_id)?;
        let st = &mut *st;
        rotate_slots(&mut st.x509_current, &mut st.x509_next);
        self.write_journal(st)?;
        let active = st
            .x509_current
            .as_ref()
            .ok_or(CaError::NoAuthority("X.509"))?;
        tracing::info!(slot = %active.slot, authority_id, expiration = %rfc3339(active.not_after), "X509 CA activated");
        Ok(slot_state(active))
    }

    /// Makes the prepared JWT key `authority_id` the active one.
    pub async fn activate_jwt(&self, authority_id: &str) -> Result<AuthorityState, AuthorityError> {
        let mut st = self.state.write().await;
        check_activation(&st.jwt_next, authority_id)?;
        let st = &mut *st;
        rotate_slots(&mut st.jwt_current, &mut st.jwt_next);
        self.write_journal(st)?;
        let active = st.jwt_current.as_ref().ok_or(CaError::NoAuthority("JWT"))?;
        tracing::info!(slot = %active.slot, kid = %active.kid, "JWT key activated");
        Ok(slot_state(active))
    }

    /// Marks the old X.509 authority `authority_id` tainted in the bundle.
    pub async fn taint_x509(&self, authority_id: &str) -> Result<AuthorityState, AuthorityError> {
        let st = self.state.read().await;
        let old = check_old(&st.x509_current, &st.x509_next, authority_id)?;
        self.modify_bundle(|b, taints| {
            let ids: Vec<String> = b
                .x509_authorities
                .iter()
                .map(|der| x509_authority_id(der))
                .collect();
            if !ids.iter().any(|id| id == authority_id) {
                return Err(AuthorityError::NotInBundle);
            }
            if !taints.x509.insert(authority_id.to_owned()) {
                return Err(AuthorityError::AlreadyTainted);
            }
            Ok(())
        })
        .await?;
        tracing::info!(authority_id, "X.509 authority tainted");
        Ok(old)
    }

    /// Marks the old JWT key `authority_id` tainted in the bundle.
    pub async fn taint_jwt(&self, authority_id: &str) -> Result<AuthorityState, AuthorityError> {
        let st = self.state.read().await;
        let old = check_old(&st.jwt_current, &st.jwt_next, authority_id)?;
        self.modify_bundle(|b, taints| {
            if b.find_jwt_authority(authority_id).is_none() {
                return Err(AuthorityError::NotInBundle);
            }
            if !taints.jwt.insert(authority_id.to_owned()) {
                return Err(AuthorityError::AlreadyTainted);
            }
            Ok(())
        })
        .await?;
        tracing::info!(authority_id, "JWT authority tainted");
        Ok(old)
    }

    /// Removes the tainted old X.509 authority `authority_id` from the bundle.
    pub async fn revoke_x509(&self, authority_id: &str) -> Result<AuthorityState, AuthorityError> {
        let st = self.state.read().await;
        let old = check_old(&st.x509_current, &st.x509_next, authority_id)?;
        self.modify_bundle(|b, taints| {
            let tainted = taints.x509.contains(authority_id);
            let mut found = false;
            b.x509_authorities.retain(|der| {
                let hit = x509_authority_id(der) == authority_id;
                found |= hit;
                !hit
            });
            if !found {
                return Err(AuthorityError::NotInBundle);
            }
            if !tainted {
                return Err(AuthorityError::NotTainted);
            }
            Ok(())
        })
        .await?;
        tracing::info!(authority_id, "X.509 authority revoked");
        Ok(old)
    }

    /// Marks the upstream authority `skid` (hex SubjectKeyIdentifier of an
    /// upstream root or intermediate) tainted, as SPIRE does: only one that
    /// signed the old local authority, never the one behind the active CA.
    pub async fn taint_x509_upstream(&self, skid: &str) -> Result<String, UpstreamAuthorityError> {
        let skid = self.check_upstream_target(skid).await?;
        self.modify_bundle(|b, taints| {
            if !b
                .x509_authorities
                .iter()
                .any(|der| x509_authority_id(der) == skid)
            {
                return Err(UpstreamAuthorityError::NotInBundle);
            }
            if !taints.x509.insert(skid.clone()) {
                return Err(UpstreamAuthorityError::AlreadyTainted);
            }
            Ok(())
        })
        .await?;
        tracing::info!(subject_key_id = %skid, "X.509 upstream authority tainted successfully");
        Ok(skid)
    }

    /// Removes the tainted upstream authority `skid` from the bundle.
    pub async fn revoke_x509_upstream(&self, skid: &str) -> Result<String, UpstreamAuthorityError> {
        let skid = self.check_upstream_target(skid).await?;
        self.modify_bundle(|b, taints| {
            if !taints.x509.contains(&skid) {
                return Err(UpstreamAuthorityError::NotTainted);
            }
            let before = b.x509_authorities.len();
            b.x509_authorities
                .retain(|der| x509_authority_id(der) != skid);
            if b.x509_authorities.len() == before {
                return Err(UpstreamAuthorityError::NotInBundle);
            }
            Ok(())
        })
        .await?;
        tracing::info!(subject_key_id = %skid, "X.509 upstream authority successfully revoked");
        Ok(skid)
    }

    async fn check_upstream_target(&self, skid: &str) -> Result<String, UpstreamAuthorityError> {
        if self.cfg.upstream.is_none() {
            return Err(UpstreamAuthorityError::NotConfigured);
        }
        let skid = skid.to_ascii_lowercase();
        if skid.is_empty() {
            return Err(UpstreamAuthorityError::Invalid(
                "no subject key ID provided",
            ));
        }
        let st = self.state.read().await;
        if st
            .x509_current
            .as_ref()
            .is_some_and(|c| x509_upstream_authority_id(&c.cert_der) == skid)
        {
            return Err(UpstreamAuthorityError::Invalid(
                "unable to use upstream authority singing current authority",
            ));
        }
        let Some(next) = st.x509_next.as_ref() else {
            return Err(UpstreamAuthorityError::Invalid(
                "upstream authority didn't sign the old local authority",
            ));
        };
        if x509_upstream_authority_id(&next.cert_der) != skid {
            return Err(UpstreamAuthorityError::Invalid(
                "upstream authority didn't sign the old local authority",
            ));
        }
        if next.status == SlotStatus::Prepared {
            return Err(UpstreamAuthorityError::Invalid(
                "only upstream authorities signing an old authority can be used",
            ));
        }
        Ok(skid)
    }

    /// Removes the tainted JWT key `authority_id` from the bundle. Any key of
    /// the bundle but the active and the prepared one may be revoked, as in
    /// SPIRE.
    pub async fn revoke_jwt(&self, authority_id: &str) -> Result<AuthorityState, AuthorityError> {
        if authority_id.is_empty() {
            return Err(AuthorityError::MissingId);
        }
        let st = self.state.read().await;
        let from_slot = match &st.jwt_next {
            Some(next) if next.kid == authority_id => {
                if next.status == SlotStatus::Prepared {
                    return Err(AuthorityError::IsPrepared);
                }
                Some(slot_state(next))
            }
            _ => None,
        };
        if from_slot.is_none()
            && st
                .jwt_current
                .as_ref()
                .is_some_and(|c| c.kid == authority_id)
        {
            return Err(AuthorityError::IsActive);
        }
        let expires_at = match (&from_slot, self.bundle().find_jwt_authority(authority_id)) {
            (Some(s), _) => s.expires_at,
            (None, Some(a)) => a
                .expires_at
                .map(from_unix)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            (None, None) => return Err(AuthorityError::UnknownAuthority),
        };
        self.modify_bundle(|b, taints| {
            if b.find_jwt_authority(authority_id).is_none() {
                return Err(AuthorityError::NotInBundle);
            }
            if !taints.jwt.contains(authority_id) {
                return Err(AuthorityError::NotTainted);
            }
            b.jwt_authorities.retain(|a| a.key_id != authority_id);
            Ok(())
        })
        .await?;
        tracing::info!(authority_id, "JWT authority revoked");
        Ok(AuthorityState {
            authority_id: authority_id.to_owned(),
            expires_at,
            status: SlotStatus::Old,
            upstream_authority_id: String::new(),
        })
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
        metrics::counter!("server_ca_sign_x509_svid").increment(1);
        let mut chain = vec![leaf];
        // Under an upstream authority the bundle holds its roots, so the
        // chain carries our CA and any upstream intermediates.
        if self.cfg.upstream.is_some() || !ca.upstream_chain.is_empty() {
            chain.push(ca.cert_der.clone());
            chain.extend(ca.upstream_chain.iter().cloned());
        }
        Ok((chain, not_after))
    }

    /// Signs an intermediate CA for a downstream server (a nested trust
    /// domain server) over `public_key_der`. The lifetime is `ttl` (the CA
    /// TTL when zero), cut to our CA's expiry. Returns the chain, new CA
    /// first, built like an SVID chain.
    pub async fn sign_downstream_x509_ca(
        &self,
        public_key_der: &[u8],
        ttl: Duration,
    ) -> Result<Vec<Vec<u8>>, CaError> {
        let ca = self.x509_ca().await?;
        let now = self.clock.now();
        let ttl = if ttl.is_zero() { self.cfg.ca_ttl } else { ttl };
        let cert = sigil_crypto::x509::sign_intermediate_ca(
            &ca.cert_der,
            ca.signer.as_ref(),
            &sigil_crypto::x509::IntermediateCaParams {
                trust_domain: self.cfg.trust_domain.clone(),
                public_key_der: public_key_der.to_vec(),
                subject: self.cfg.subject.clone(),
                not_before: now - BACKDATE,
                not_after: (now + ttl).min(ca.not_after),
                path_len: None,
            },
        )?;
        metrics::counter!("server_ca_sign_x509_ca_svid").increment(1);
        let mut chain = vec![cert];
        if self.cfg.upstream.is_some() || !ca.upstream_chain.is_empty() {
            chain.push(ca.cert_der.clone());
            chain.extend(ca.upstream_chain.iter().cloned());
        }
        Ok(chain)
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
        metrics::counter!("server_ca_sign_jwt_svid").increment(1);
        Ok((token, now, exp))
    }

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

    /// Prepares an X.509 CA in `slot`, counted as SPIRE's
    /// `ca_manager_x509_ca_prepare` call.
    async fn prepare_x509(&self, slot: &str) -> Result<X509Ca, CaError> {
        let call = CallCounter::start("ca_manager_x509_ca_prepare");
        let r = self.prepare_x509_in(slot).await;
        call.finish_result(&r, |_| "Internal".to_owned());
        r
    }

    async fn prepare_x509_in(&self, slot: &str) -> Result<X509Ca, CaError> {
        let now = self.clock.now();
        let signer = self
            .km
            .generate_key(&format!("x509-CA-{slot}"), self.cfg.x509_key_type)
            .await?;
        let (cert_der, upstream_chain, roots, not_after) = match &self.cfg.upstream {
            None => {
                let not_after = now + self.cfg.ca_ttl;
                let cert = sigil_crypto::x509::self_signed_ca(
                    signer.as_ref(),
                    &self.cfg.trust_domain,
                    &self.cfg.subject,
                    now - BACKDATE,
                    not_after,
                )?;
                (cert.clone(), Vec::new(), vec![cert], not_after)
            }
            Some(upstream) => {
                let csr = sigil_crypto::csr::create_csr(
                    signer.as_ref(),
                    Some(&self.cfg.trust_domain.id()),
                )?;
                let minted = upstream
                    .mint_x509_ca(MintX509CaRequest {
                        csr_der: csr,
                        preferred_ttl: self.cfg.ca_ttl,
                        subject: self.cfg.subject.clone(),
                    })
                    .await
                    .map_err(|e| CaError::Upstream(e.to_string()))?;
                let mut chain = minted.ca_chain.into_iter();
                let cert = chain.next().ok_or_else(|| {
                    CaError::Upstream("upstream returned an empty CA chain".into())
                })?;
                let info = sigil_crypto::x509::cert_info(&cert)?;
                if info.public_key_der != signer.public_key_der() {
                    return Err(CaError::Upstream(
                        "upstream signed a CA for a different key than the CSR's".into(),
                    ));
                }
                if minted.upstream_roots.is_empty() {
                    return Err(CaError::Upstream("upstream returned no roots".into()));
                }
                (cert, chain.collect(), minted.upstream_roots, info.not_after)
            }
        };
        // Publish before use: the roots this CA chains to are in the bundle
        // before any SVID it signs can exist.
        self.update_bundle(|b| {
            for root in &roots {
                if !b.x509_authorities.contains(root) {
                    b.x509_authorities.push(root.clone());
                }
            }
        })
        .await?;
        tracing::info!(
            slot,
            expiration = %rfc3339(not_after),
            self_signed = self.cfg.upstream.is_none(),
            "X509 CA prepared"
        );
        Ok(X509Ca {
            slot: slot.to_owned(),
            cert_der,
            upstream_chain,
            signer,
            issued_at: now,
            not_after,
            status: SlotStatus::Prepared,
        })
    }

    /// Prepares a JWT key in `slot`, counted as SPIRE's
    /// `ca_manager_jwt_key_prepare` call.
    async fn prepare_jwt(&self, slot: &str) -> Result<JwtKey, CaError> {
        let call = CallCounter::start("ca_manager_jwt_key_prepare");
        let r = self.prepare_jwt_in(slot).await;
        call.finish_result(&r, |_| "Internal".to_owned());
        r
    }

    async fn prepare_jwt_in(&self, slot: &str) -> Result<JwtKey, CaError> {
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

    async fn update_bundle(&self, mut f: impl FnMut(&mut Bundle)) -> Result<(), CaError> {
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
    async fn modify_bundle<T, E: From<CaError>>(
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
                upstream_chain: e
                    .upstream_chain
                    .iter()
                    .filter_map(|c| STANDARD.decode(c).ok())
                    .collect(),
                signer,
                issued_at: from_unix(e.issued_at),
                not_after: from_unix(e.not_after),
                status: e.status,
            };
            match e.status {
                SlotStatus::Active => st.x509_current = Some(ca),
                SlotStatus::Prepared => st.x509_next = Some(ca),
                SlotStatus::Old if st.x509_next.is_none() => st.x509_next = Some(ca),
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
                SlotStatus::Old if st.jwt_next.is_none() => st.jwt_next = Some(key),
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
                    upstream_chain: c
                        .upstream_chain
                        .iter()
                        .map(|d| STANDARD.encode(d))
                        .collect(),
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
        sigil_cli::secure_fs::write_private_atomic(&self.cfg.journal_path, &bytes)
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

/// How many times a bundle change is redone because another writer (another
/// server on the same datastore) changed the bundle between read and write.
const BUNDLE_WRITE_ATTEMPTS: usize = 32;

/// When the next authority should become active.
pub fn activation_threshold(issued_at: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after.duration_since(issued_at).unwrap_or_default();
    not_after - (lifetime / 6).min(ACTIVATION_CAP)
}

async fn load_bundle(ds: &dyn DataStore, td: &TrustDomain) -> Result<(Bundle, Taints), CaError> {
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
        serde_json::from_slice(&b.to_jwks()).map_err(|e| CaError::Bundle(e.to_string()))?;
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
    serde_json::to_vec(&doc).map_err(|e| CaError::Bundle(e.to_string()))
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
            serde_json::to_vec(&doc.jwks).map_err(|e| CaError::Bundle(e.to_string()))?,
            doc.jwt_expiry,
            Taints {
                x509: doc.tainted_x509,
                jwt: doc.tainted_jwt,
            },
        ),
        Err(_) => (bytes.to_vec(), Default::default(), Taints::default()),
    };
    let mut bundle = Bundle::parse_jwks(td, &jwks).map_err(|e| CaError::Bundle(e.to_string()))?;
    for a in &mut bundle.jwt_authorities {
        if let Some(e) = expiry.get(&a.key_id) {
            a.expires_at = Some(*e);
        }
    }
    Ok((bundle, taints))
}

/// The ID of the upstream authority that signed a CA certificate: its
/// AuthorityKeyIdentifier in lowercase hex (SPIRE's `upstream_authority_id`);
/// empty for a self-signed certificate or one without the extension.
pub fn x509_upstream_authority_id(der: &[u8]) -> String {
    use x509_parser::extensions::ParsedExtension;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return String::new();
    };
    let aki = cert
        .extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki
                .key_identifier
                .as_ref()
                .map(|k| k.0.iter().map(|b| format!("{b:02x}")).collect::<String>()),
            _ => None,
        })
        .unwrap_or_default();
    // Self-signed (names alone can coincide): its own key signed it.
    if aki == x509_authority_id(der) {
        return String::new();
    }
    aki
}

/// SPIRE's authority ID of an X.509 authority: its SubjectKeyIdentifier in
/// lowercase hex, empty when it has none (or is not a certificate).
pub fn x509_authority_id(der: &[u8]) -> String {
    use x509_parser::extensions::ParsedExtension;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return String::new();
    };
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(ski) => {
                Some(ski.0.iter().map(|b| format!("{b:02x}")).collect::<String>())
            }
            _ => None,
        })
        .unwrap_or_default()
}

fn slot_state<S: SlotLike>(s: &S) -> AuthorityState {
    AuthorityState {
        authority_id: s.authority_id(),
        expires_at: s.not_after(),
        status: s.status(),
        upstream_authority_id: s.upstream_authority_id(),
    }
}

fn slot_states<S: SlotLike>(current: &Option<S>, next: &Option<S>) -> AuthorityStates {
    let mut out = AuthorityStates {
        active: active_slot(current).map(slot_state),
        ..AuthorityStates::default()
    };
    if let Some(n) = next {
        match n.status() {
            SlotStatus::Prepared => out.prepared = Some(slot_state(n)),
            SlotStatus::Old => out.old = Some(slot_state(n)),
            SlotStatus::Active => {}
        }
    }
    out
}

fn active_slot<S: SlotLike>(current: &Option<S>) -> Option<&S> {
    current
        .as_ref()
        .filter(|c| c.status() == SlotStatus::Active)
}

fn has_prepared<S: SlotLike>(next: &Option<S>) -> bool {
    next.as_ref()
        .is_some_and(|n| n.status() == SlotStatus::Prepared)
}

fn take_prepared<S: SlotLike>(next: &mut Option<S>) -> Option<S> {
    if has_prepared(next) {
        next.take()
    } else {
        None
    }
}

/// SPIRE's rotation: the prepared authority becomes active and the active
/// one moves to the next slot as old.
fn rotate_slots<S: SlotLike>(current: &mut Option<S>, next: &mut Option<S>) {
    std::mem::swap(current, next);
    if let Some(c) = current {
        c.set_status(SlotStatus::Active);
    }
    if let Some(n) = next {
        n.set_status(SlotStatus::Old);
    }
}

/// SPIRE's checks before activating: the ID names the next slot, which holds
/// a prepared authority.
fn check_activation<S: SlotLike>(
    next: &Option<S>,
    authority_id: &str,
) -> Result<(), AuthorityError> {
    if authority_id.is_empty() {
        return Err(AuthorityError::MissingId);
    }
    let next = next
        .as_ref()
        .filter(|n| n.authority_id() == authority_id)
        .ok_or(AuthorityError::NotNext)?;
    if next.status() != SlotStatus::Prepared {
        return Err(AuthorityError::WrongStatus(next.status()));
    }
    Ok(())
}

/// SPIRE's checks before tainting or revoking: the ID names the next slot,
/// which holds the old authority.
fn check_old<S: SlotLike>(
    current: &Option<S>,
    next: &Option<S>,
    authority_id: &str,
) -> Result<AuthorityState, AuthorityError> {
    if authority_id.is_empty() {
        return Err(AuthorityError::MissingId);
    }
    if current
        .as_ref()
        .is_some_and(|c| c.authority_id() == authority_id)
    {
        return Err(AuthorityError::IsActive);
    }
    let next = next
        .as_ref()
        .filter(|n| n.authority_id() == authority_id)
        .ok_or(AuthorityError::NotNext)?;
    if next.status() != SlotStatus::Old {
        return Err(AuthorityError::WrongStatus(next.status()));
    }
    Ok(slot_state(next))
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
    #[serde(default)]
    upstream_chain: Vec<String>,
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

    fn test_ctx(td: &TrustDomain) -> crate::catalog::ServerContext {
        crate::catalog::ServerContext {
            trust_domain: td.clone(),
            data_dir: std::env::temp_dir(),
            clock: Arc::new(sigil_plugin::clock::SystemClock),
            join_tokens: Arc::new(crate::catalog::DataStoreJoinTokens::default()),
        }
    }
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
                upstream: None,
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

    #[tokio::test]
    async fn x509_authority_goes_prepared_active_old_tainted_revoked() {
        let f = fixture().await;
        let ca = start(&f).await;
        let first = ca.x509_ca().await.unwrap();
        let first_id = first.authority_id();
        assert_eq!(first_id.len(), 40, "hex SubjectKeyIdentifier: {first_id}");
        let st = ca.x509_state().await;
        assert_eq!(st.active.as_ref().unwrap().authority_id, first_id);
        assert!(st.prepared.is_none() && st.old.is_none());
        assert!(matches!(
            ca.taint_x509(&first_id).await,
            Err(AuthorityError::IsActive)
        ));

        let prepared = ca.prepare_x509_now().await.unwrap();
        assert_eq!(prepared.status, SlotStatus::Prepared);
        assert_eq!(ca.bundle().x509_authorities.len(), 2);
        assert_eq!(
            ca.x509_state().await.prepared.unwrap().authority_id,
            prepared.authority_id
        );
        assert!(matches!(
            ca.taint_x509(&prepared.authority_id).await,
            Err(AuthorityError::WrongStatus(SlotStatus::Prepared))
        ));
        assert!(matches!(
            ca.activate_x509("00ff").await,
            Err(AuthorityError::NotNext)
        ));
        assert!(matches!(
            ca.activate_x509("").await,
            Err(AuthorityError::MissingId)
        ));

        let active = ca.activate_x509(&prepared.authority_id).await.unwrap();
        assert_eq!(active.authority_id, prepared.authority_id);
        assert_eq!(active.status, SlotStatus::Active);
        let st = ca.x509_state().await;
        assert_eq!(st.old.as_ref().unwrap().authority_id, first_id);
        assert!(st.prepared.is_none());
        let new_root = ca.x509_ca().await.unwrap().cert_der;
        assert_eq!(issuer_of(&ca, &f.clock).await, new_root);
        assert!(matches!(
            ca.activate_x509(&first_id).await,
            Err(AuthorityError::WrongStatus(SlotStatus::Old))
        ));

        assert!(matches!(
            ca.revoke_x509(&first_id).await,
            Err(AuthorityError::NotTainted)
        ));
        let seq = ca.bundle().sequence_number;
        ca.taint_x509(&first_id).await.unwrap();
        assert!(ca.bundle_taints().is_x509_tainted(&first.cert_der));
        assert!(!ca.bundle_taints().is_x509_tainted(&new_root));
        assert_eq!(ca.bundle().sequence_number, seq + 1, "a taint is a change");
        assert!(matches!(
            ca.taint_x509(&first_id).await,
            Err(AuthorityError::AlreadyTainted)
        ));

        ca.revoke_x509(&first_id).await.unwrap();
        assert_eq!(ca.bundle().x509_authorities, vec![new_root]);
        assert!(ca.bundle_taints().x509.is_empty());
        assert!(matches!(
            ca.revoke_x509(&first_id).await,
            Err(AuthorityError::NotInBundle)
        ));
    }

    #[tokio::test]
    async fn jwt_authority_goes_prepared_active_old_tainted_revoked() {
        let f = fixture().await;
        let ca = start(&f).await;
        let first = ca.jwt_key().await.unwrap().kid;
        let prepared = ca.prepare_jwt_now().await.unwrap();
        assert!(matches!(
            ca.revoke_jwt(&prepared.authority_id).await,
            Err(AuthorityError::IsPrepared)
        ));
        assert!(matches!(
            ca.revoke_jwt(&first).await,
            Err(AuthorityError::IsActive)
        ));
        assert!(matches!(
            ca.revoke_jwt("nope").await,
            Err(AuthorityError::UnknownAuthority)
        ));
        ca.activate_jwt(&prepared.authority_id).await.unwrap();
        assert_eq!(ca.jwt_key().await.unwrap().kid, prepared.authority_id);
        assert_eq!(ca.jwt_state().await.old.unwrap().authority_id, first);
        assert!(matches!(
            ca.revoke_jwt(&first).await,
            Err(AuthorityError::NotTainted)
        ));
        ca.taint_jwt(&first).await.unwrap();
        assert!(ca.bundle_taints().is_jwt_tainted(&first));
        ca.revoke_jwt(&first).await.unwrap();
        assert!(ca.bundle().find_jwt_authority(&first).is_none());
        assert!(
            ca.bundle()
                .find_jwt_authority(&prepared.authority_id)
                .is_some()
        );
    }

    #[tokio::test]
    async fn taints_and_the_old_slot_survive_a_restart() {
        let f = fixture().await;
        let ca = start(&f).await;
        let first = ca.x509_ca().await.unwrap();
        let next = ca.prepare_x509_now().await.unwrap();
        ca.activate_x509(&next.authority_id).await.unwrap();
        ca.taint_x509(&first.authority_id()).await.unwrap();
        drop(ca);
        let ca = start(&f).await;
        assert!(ca.bundle_taints().is_x509_tainted(&first.cert_der));
        let st = ca.x509_state().await;
        assert_eq!(st.active.unwrap().authority_id, next.authority_id);
        assert_eq!(st.old.unwrap().authority_id, first.authority_id());
        ca.revoke_x509(&first.authority_id()).await.unwrap();
    }

    #[tokio::test]
    async fn rotation_reuses_the_old_slot_after_a_manual_activation() {
        let f = fixture().await;
        let ca = start(&f).await;
        let next = ca.prepare_x509_now().await.unwrap();
        ca.activate_x509(&next.authority_id).await.unwrap();
        ca.rotate().await.unwrap();
        assert!(ca.next_x509_ca().await.is_none(), "old is not prepared");
        f.clock.advance(DAY / 2 + Duration::from_secs(60));
        ca.rotate().await.unwrap();
        let prepared = ca.next_x509_ca().await.expect("prepared at half life");
        assert!(ca.x509_state().await.old.is_none(), "slot reused");
        f.clock.advance(DAY / 3);
        ca.rotate().await.unwrap();
        assert_eq!(ca.x509_ca().await.unwrap().cert_der, prepared.cert_der);
    }

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

    #[tokio::test]
    async fn upstream_signed_ca_puts_only_upstream_roots_in_the_bundle() {
        let mut f = fixture().await;
        // The disk plugin signs with real time.
        f.clock.set(SystemTime::now());
        // A self-signed upstream root on disk, as SPIRE's sample config uses.
        let up_key = sigil_crypto::key::SoftwareKey::generate(KeyType::EcP256).unwrap();
        let now = f.clock.now();
        let root = sigil_crypto::x509::self_signed_ca(
            &up_key,
            &f.cfg.trust_domain,
            &CaSubject::default(),
            now - BACKDATE,
            now + DAY * 30,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ca.crt"),
            sigil_crypto::x509::pem_encode_certs(std::slice::from_ref(&root)),
        )
        .unwrap();
        std::fs::write(dir.path().join("ca.key"), up_key.to_pkcs8_pem()).unwrap();
        let data = serde_json::json!({
            "cert_file_path": dir.path().join("ca.crt").to_str().unwrap(),
            "key_file_path": dir.path().join("ca.key").to_str().unwrap(),
        });
        f.cfg.upstream = Some(
            crate::plugin::upstreamauthority::disk::build(&data, &test_ctx(&f.cfg.trust_domain))
                .unwrap(),
        );
        let ca = start(&f).await;
        let active = ca.x509_ca().await.unwrap();
        assert_ne!(active.cert_der, root);
        assert_eq!(
            ca.bundle().x509_authorities,
            vec![root.clone()],
            "only the upstream root"
        );
        let id = SpiffeId::parse("spiffe://example.org/w").unwrap();
        let key = leaf_key();
        let (chain, _) = ca
            .sign_x509_svid(&id, key.public_key_der(), Duration::from_secs(60), &[])
            .await
            .unwrap();
        assert_eq!(chain.len(), 2, "leaf, then our CA");
        assert_eq!(chain[1], active.cert_der);
        sigil_crypto::x509::verify_chain(&chain, std::slice::from_ref(&root), f.clock.now())
            .unwrap();
        // A restart keeps the upstream-signed CA and its chain.
        drop(ca);
        let ca = start(&f).await;
        let (chain, _) = ca
            .sign_x509_svid(&id, key.public_key_der(), Duration::from_secs(60), &[])
            .await
            .unwrap();
        assert_eq!(chain[1], active.cert_der);
        sigil_crypto::x509::verify_chain(&chain, &[root], f.clock.now()).unwrap();
    }

    #[tokio::test]
    async fn upstream_root_rotation_then_taint_and_revoke_of_the_old_root() {
        let mut f = fixture().await;
        f.clock.set(SystemTime::now());
        let dir = tempfile::tempdir().unwrap();
        let write_root = |name: &str| {
            let key = sigil_crypto::key::SoftwareKey::generate(KeyType::EcP256).unwrap();
            let now = SystemTime::now();
            let root = sigil_crypto::x509::self_signed_ca(
                &key,
                &TrustDomain::new(name).unwrap(),
                &CaSubject::default(),
                now - BACKDATE,
                now + DAY * 30,
            )
            .unwrap();
            std::fs::write(
                dir.path().join("ca.crt"),
                sigil_crypto::x509::pem_encode_certs(std::slice::from_ref(&root)),
            )
            .unwrap();
            std::fs::write(dir.path().join("ca.key"), key.to_pkcs8_pem()).unwrap();
            root
        };
        let r1 = write_root("example.org");
        let data = serde_json::json!({
            "cert_file_path": dir.path().join("ca.crt").to_str().unwrap(),
            "key_file_path": dir.path().join("ca.key").to_str().unwrap(),
        });
        f.cfg.upstream = Some(
            crate::plugin::upstreamauthority::disk::build(&data, &test_ctx(&f.cfg.trust_domain))
                .unwrap(),
        );
        let ca = start(&f).await;
        let r1_id = x509_authority_id(&r1);
        assert_eq!(
            ca.x509_state().await.active.unwrap().upstream_authority_id,
            r1_id
        );
        // The active CA's upstream authority cannot be tainted.
        let err = ca.taint_x509_upstream(&r1_id).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to use upstream authority singing current authority"
        );

        // The operator rotates the upstream root on disk; the next CA is
        // signed by it and activated.
        let r2 = write_root("example.org");
        let next = ca.prepare_x509_now().await.unwrap();
        assert_eq!(next.upstream_authority_id, x509_authority_id(&r2));
        // The new root signs only the prepared CA so far.
        let err = ca
            .taint_x509_upstream(&next.upstream_authority_id)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "only upstream authorities signing an old authority can be used"
        );
        ca.activate_x509(&next.authority_id).await.unwrap();
        let err = ca.taint_x509_upstream("abcdef").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "upstream authority didn't sign the old local authority"
        );
        assert!(ca.bundle().x509_authorities.contains(&r1));
        assert!(ca.bundle().x509_authorities.contains(&r2));

        // Revoking needs a taint first; then the old root leaves the bundle.
        let err = ca.revoke_x509_upstream(&r1_id).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "it is not possible to revoke an untainted root CA"
        );
        assert_eq!(
            ca.taint_x509_upstream(&r1_id.to_uppercase()).await.unwrap(),
            r1_id
        );
        assert!(ca.bundle_taints().is_x509_tainted(&r1));
        assert!(matches!(
            ca.taint_x509_upstream(&r1_id).await,
            Err(UpstreamAuthorityError::AlreadyTainted)
        ));
        ca.revoke_x509_upstream(&r1_id).await.unwrap();
        assert!(!ca.bundle().x509_authorities.contains(&r1));
        assert!(ca.bundle().x509_authorities.contains(&r2));
    }

    #[tokio::test]
    async fn upstream_taint_without_upstream_is_a_precondition_error() {
        let f = fixture().await;
        let ca = start(&f).await;
        assert!(matches!(
            ca.taint_x509_upstream("ab").await,
            Err(UpstreamAuthorityError::NotConfigured)
        ));
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
