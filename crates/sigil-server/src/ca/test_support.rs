//! The fixture the CA's unit tests share: a CA on a SQLite datastore, a
//! disk KeyManager and a manual clock, in a temporary directory.

pub(super) use std::sync::Arc;
pub(super) use std::time::{Duration, SystemTime};

pub(super) use sigil_crypto::key::{KeyType, Signer};
pub(super) use sigil_crypto::x509::CaSubject;
pub(super) use sigil_datastore::DataStore;
pub(super) use sigil_plugin::clock::{Clock, ManualClock};
pub(super) use sigil_plugin::keymanager::{DiskKeyManager, KeyManager};
pub(super) use sigil_spiffe::{JwtAuthority, SpiffeId, TrustDomain};

pub(super) use super::*;

pub(super) fn test_ctx(td: &TrustDomain) -> crate::catalog::ServerContext {
    crate::catalog::ServerContext {
        trust_domain: td.clone(),
        data_dir: std::env::temp_dir(),
        clock: Arc::new(sigil_plugin::clock::SystemClock),
        join_tokens: Arc::new(crate::catalog::DataStoreJoinTokens::default()),
    }
}

pub(super) const DAY: Duration = Duration::from_secs(24 * 3600);

pub(super) struct Fixture {
    pub(super) _dir: tempfile::TempDir,
    pub(super) cfg: CaConfig,
    pub(super) km: Arc<dyn KeyManager>,
    pub(super) ds: Arc<dyn DataStore>,
    pub(super) clock: Arc<ManualClock>,
}

pub(super) async fn fixture() -> Fixture {
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

pub(super) async fn start(f: &Fixture) -> Arc<CaManager> {
    CaManager::start(f.cfg.clone(), f.km.clone(), f.ds.clone(), f.clock.clone())
        .await
        .unwrap()
}

pub(super) fn leaf_key() -> sigil_crypto::key::SoftwareKey {
    sigil_crypto::key::SoftwareKey::generate(KeyType::EcP256).unwrap()
}

pub(super) async fn issuer_of(ca: &CaManager, clock: &ManualClock) -> Vec<u8> {
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
