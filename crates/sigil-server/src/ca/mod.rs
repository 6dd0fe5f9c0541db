//! The server's certificate authority: X.509 CA certificates and JWT signing
//! keys, each in two slots (current and next) that rotate at SPIRE's points.
//!
//! A slot is *prepared* when the current authority passes half its lifetime
//! (at most 30 days before expiry): its key is generated, its certificate
//! self-signed (or signed by the UpstreamAuthority), and it is published in
//! the trust bundle before it signs anything. It is *activated* when the
//! current authority has a sixth of its lifetime left (at most 7 days). The
//! previous authority moves to the next slot as *old* and stays in the
//! bundle until it expires. Slots are recorded in a journal file in
//! `data_dir` so a restarted server (with a durable KeyManager) keeps its
//! CA. Administrators can drive the same steps by hand (SPIRE's
//! LocalAuthority API).
//!
//! One job per file, in the manner of SPIRE's `pkg/server/ca` and
//! `ca/manager`:
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | [`CaManager`] (its state, start-up), [`CaConfig`] |
//! | `slot.rs` | the current/next slot state machine and its thresholds, one for both kinds; no I/O |
//! | `authority.rs` | the two kinds, [`X509Ca`] and [`JwtKey`]: minting one, its IDs, its place in the bundle |
//! | `rotation.rs` | the timed steps (prepare, activate, prune) and which authority signs now |
//! | `local_authority.rs` | the LocalAuthority operations: prepare, activate, taint, revoke (and upstream taint/revoke) |
//! | `signing.rs` | X509-SVIDs, JWT-SVIDs, downstream CAs |
//! | `bundle.rs` | our stored bundle and its taints ([`Taints`]); the only writer of both |
//! | `journal.rs` | the journal file |
//! | `error.rs` | [`CaError`] and the refusals of the LocalAuthority operations |
//!
//! This module must never sign with an authority that is not yet in the
//! bundle, and never issue an SVID that outlives its signing authority.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_crypto::key::KeyType;
use sigil_crypto::x509::CaSubject;
use sigil_datastore::DataStore;
use sigil_plugin::clock::Clock;
use sigil_plugin::keymanager::KeyManager;
use sigil_plugin::upstreamauthority::UpstreamAuthority;
use sigil_spiffe::{Bundle, TrustDomain};
use tokio::sync::{Mutex, RwLock, watch};

mod authority;
mod bundle;
mod error;
mod journal;
mod local_authority;
mod rotation;
mod signing;
mod slot;
#[cfg(test)]
mod test_support;

pub use authority::{JwtKey, X509Ca, x509_authority_id, x509_upstream_authority_id};
pub use bundle::{
    Taints, decode_bundle, decode_bundle_with_taints, encode_bundle, encode_bundle_with_taints,
};
pub use error::{
    AuthorityError, CaError, JournalError, StoredBundleError, UpstreamAuthorityError,
    UpstreamCaError,
};
pub use slot::{
    AuthorityState, AuthorityStates, SlotStatus, activation_threshold, preparation_threshold,
};

/// CA and SVID certificates are backdated to tolerate clock skew.
pub const BACKDATE: Duration = Duration::from_secs(10);

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

/// The slots of both kinds of authority.
#[derive(Debug, Default)]
pub(crate) struct State {
    x509: slot::Slots<X509Ca>,
    jwt: slot::Slots<JwtKey>,
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

impl std::fmt::Debug for CaManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaManager")
            .field("trust_domain", &self.cfg.trust_domain)
            .finish_non_exhaustive()
    }
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
        let (bundle, taints) = bundle::load_bundle(ds.as_ref(), &cfg.trust_domain).await?;
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
}

/// RFC 3339 UTC, for logs.
pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{t:?}"))
}
