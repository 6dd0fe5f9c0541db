//! Two servers on one datastore, as in an HA deployment on a shared
//! PostgreSQL database (and, for completeness, one SQLite file): each has
//! its own KeyManager and journal and its own connection pool, and both
//! change the trust bundle at once. No change may be lost: a CA missing
//! from the bundle makes every SVID it signs untrusted.
//!
//! PostgreSQL runs when `SIGIL_TEST_POSTGRES_URL` is set (each run uses a
//! trust domain of its own in that database); without it the case is
//! skipped, unless `CI` is set, where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_crypto::key::{KeyType, Signer, SoftwareKey};
use sigil_crypto::x509::CaSubject;
use sigil_datastore::DataStore;
use sigil_plugin::clock::ManualClock;
use sigil_plugin::keymanager::{DiskKeyManager, KeyManager};
use sigil_server::ca::{CaConfig, CaManager, decode_bundle};
use sigil_spiffe::{JwtAuthority, TrustDomain};

/// Authorities each server appends, one change at a time.
const APPENDS: usize = 12;

async fn start_server(
    dir: &std::path::Path,
    name: &str,
    td: &TrustDomain,
    ds: Arc<dyn DataStore>,
) -> Arc<CaManager> {
    let km: Arc<dyn KeyManager> =
        Arc::new(DiskKeyManager::open(dir.join(format!("{name}-keys.json"))).unwrap());
    let cfg = CaConfig {
        trust_domain: td.clone(),
        ca_ttl: Duration::from_secs(24 * 3600),
        x509_key_type: KeyType::EcP256,
        jwt_key_type: KeyType::EcP256,
        subject: CaSubject::default(),
        jwt_issuer: None,
        journal_path: dir.join(format!("{name}-journal.json")),
        upstream: None,
    };
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    CaManager::start(cfg, km, ds, clock).await.unwrap()
}

fn authority(kid: String) -> JwtAuthority {
    let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
    JwtAuthority {
        key_id: kid,
        public_key_der: key.public_key_der().to_vec(),
        expires_at: None,
    }
}

/// Both servers start at once (each prepares its X.509 CA and JWT key and
/// adds them to the bundle), then each appends [`APPENDS`] JWT authorities
/// while the other does the same. Every one of them is in the stored
/// bundle afterwards.
async fn concurrent_bundle_changes_from_two_servers_all_survive(
    td: TrustDomain,
    ds_a: Arc<dyn DataStore>,
    ds_b: Arc<dyn DataStore>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = tokio::join!(
        start_server(dir.path(), "a", &td, ds_a.clone()),
        start_server(dir.path(), "b", &td, ds_b),
    );
    let append = |ca: Arc<CaManager>, name: &'static str| {
        tokio::spawn(async move {
            let mut kids = Vec::new();
            for i in 0..APPENDS {
                let kid = format!("{name}-{i}");
                ca.append_to_bundle(Vec::new(), vec![authority(kid.clone())])
                    .await
                    .unwrap();
                kids.push(kid);
            }
            kids
        })
    };
    let (kids_a, kids_b) = tokio::join!(append(a.clone(), "a"), append(b.clone(), "b"));
    let mut expected: Vec<String> = kids_a.unwrap();
    expected.extend(kids_b.unwrap());
    for ca in [&a, &b] {
        expected.push(ca.jwt_key().await.unwrap().kid);
    }

    let stored = ds_a
        .get_bundle(&td)
        .await
        .unwrap()
        .expect("a stored bundle");
    let bundle = decode_bundle(&td, &stored.data).unwrap();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|kid| bundle.find_jwt_authority(kid).is_none())
        .collect();
    assert!(missing.is_empty(), "lost JWT authorities: {missing:?}");
    for ca in [&a, &b] {
        let cert = ca.x509_ca().await.unwrap().cert_der;
        assert!(
            bundle.x509_authorities.contains(&cert),
            "an X.509 CA prepared at startup is missing from the bundle"
        );
    }
    ds_a.delete_bundle(&td).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_two_servers_concurrent_bundle_changes_all_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.sqlite3");
    let path = path.to_str().unwrap();
    let ds_a = sigil_datastore::open("sqlite3", path).await.unwrap();
    let ds_b = sigil_datastore::open("sqlite3", path).await.unwrap();
    concurrent_bundle_changes_from_two_servers_all_survive(
        TrustDomain::new("example.org").unwrap(),
        ds_a,
        ds_b,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_servers_concurrent_bundle_changes_all_survive() {
    let Ok(url) = std::env::var("SIGIL_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "SIGIL_TEST_POSTGRES_URL is not set, and CI is: PostgreSQL tests must run in CI"
        );
        eprintln!("skipping PostgreSQL case: SIGIL_TEST_POSTGRES_URL is not set");
        return;
    };
    let ds_a = sigil_datastore::open("postgres", &url).await.unwrap();
    let ds_b = sigil_datastore::open("postgres", &url).await.unwrap();
    let td = TrustDomain::new(&format!("t{}.example", uuid::Uuid::new_v4().simple())).unwrap();
    concurrent_bundle_changes_from_two_servers_all_survive(td, ds_a, ds_b).await;
}
