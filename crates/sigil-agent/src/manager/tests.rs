//! Manager lifecycle against the in-memory fake server: attestation,
//! restarts, rotation, outages, persistence, sync triggers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sigil_plugin::clock::Clock;
use sigil_plugin::keymanager::{DiskKeyManager, KeyManager, MemoryKeyManager};

use super::testing::{FakePopAgent, FakeServer, TestCa, entry, federated_entry};
use super::*;
use sigil_spiffe::Selector;

fn config(server: &FakeServer, dir: &Path, trust: TrustBundleSource) -> ManagerConfig {
    ManagerConfig {
        trust_domain: server.td(),
        server: "127.0.0.1:8081".into(),
        data_dir: dir.to_owned(),
        trust_bundle: trust,
        node_attestor: token(Some("tok")),
        workload_key_type: KeyType::EcP256,
        // Long: tests drive syncs themselves unless they trigger one.
        sync_interval: Duration::from_secs(3600),
        bootstrap_timeout: Duration::from_secs(1),
        x509_svid_cache_max_size: crate::config::DEFAULT_SVID_CACHE_MAX_SIZE,
        jwt_svid_cache_max_size: crate::config::DEFAULT_SVID_CACHE_MAX_SIZE,
    }
}

fn token(t: Option<&str>) -> Arc<dyn AgentNodeAttestor> {
    Arc::new(crate::plugin::nodeattestor::join_token::JoinTokenAgent::new(t.map(str::to_owned)))
}

fn bundle_file(server: &FakeServer, dir: &Path) -> TrustBundleSource {
    let path = dir.join("bootstrap.pem");
    std::fs::write(
        &path,
        sigil_crypto::x509::pem_encode_certs(&[server.ca_cert()]),
    )
    .unwrap();
    TrustBundleSource::Path {
        path,
        format: BundleFormat::Pem,
    }
}

fn disk_km(dir: &Path) -> Arc<dyn KeyManager> {
    Arc::new(DiskKeyManager::open(dir.join("keys.json")).unwrap())
}

async fn start(
    server: &Arc<FakeServer>,
    cfg: ManagerConfig,
    km: Arc<dyn KeyManager>,
) -> Result<Manager, ManagerError> {
    Manager::start(cfg, server.clone(), km, server.clock()).await
}

#[tokio::test]
async fn fresh_agent_attests_persists_and_serves_entries() {
    let server = Arc::new(FakeServer::new("example.org"));
    server.add_token("tok");
    server.set_entries(vec![entry("e1", "/web", &["unix:uid:1000"])]);
    let dir = tempfile::tempdir().unwrap();
    let trust = bundle_file(&server, dir.path());
    let m = start(
        &server,
        config(&server, dir.path(), trust),
        disk_km(dir.path()),
    )
    .await
    .unwrap();
    assert_eq!(
        m.agent_id().as_str(),
        "spiffe://example.org/spire/agent/join_token/tok"
    );
    assert!(dir.path().join(store::AGENT_SVID_FILE).is_file());
    assert!(dir.path().join(store::BUNDLE_FILE).is_file());
    assert!(
        dir.path()
            .join(store::SVID_CACHE_DIR)
            .join(store::SVID_CACHE_BUNDLES_FILE)
            .is_file()
    );
    let snap = m.snapshot().unwrap();
    assert_eq!(snap.svids.len(), 1, "first sync ran before start returned");
    assert_eq!(snap.bundle.x509_authorities, vec![server.ca_cert()]);
    // Calls are made with the agent SVID, verifying the server by bundle.
    let creds = server.last_credentials().unwrap();
    assert!(!creds.insecure);
    assert_eq!(creds.roots, vec![server.ca_cert()]);
    assert!(creds.leaf.is_some());
}

#[tokio::test]
async fn restart_with_disk_key_manager_reuses_the_agent_svid() {
    let server = Arc::new(FakeServer::new("example.org"));
    server.add_token("tok");
    let dir = tempfile::tempdir().unwrap();
    let trust = bundle_file(&server, dir.path());
    let first = start(
        &server,
        config(&server, dir.path(), trust.clone()),
        disk_km(dir.path()),
    )
    .await
    .unwrap();
    let id = first.agent_id();
    drop(first);
    // The token is spent; a restart must not need it.
    let mut cfg = config(&server, dir.path(), trust);
    cfg.node_attestor = token(None);
    let second = start(&server, cfg, disk_km(dir.path())).await.unwrap();
    assert_eq!(second.agent_id(), id);
    assert_eq!(server.attestations(), 1);
}

#[tokio::test]
async fn restart_with_memory_key_manager_reattests_and_reports_a_used_token() {
    let server = Arc::new(FakeServer::new("example.org"));
    server.add_token("tok");
    let dir = tempfile::tempdir().unwrap();
    let trust = bundle_file(&server, dir.path());
    let km = || Arc::new(MemoryKeyManager::default()) as Arc<dyn KeyManager>;
    drop(
        start(&server, config(&server, dir.path(), trust.clone()), km())
            .await
            .unwrap(),
    );
    let err = start(&server, config(&server, dir.path(), trust), km())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ManagerError::AttestationRefused {
                code: tonic::Code::InvalidArgument,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("join token does not exist or has already been used"),
        "{err}"
    );
}

#[tokio::test]
async fn missing_join_token_is_a_precise_error() {
    let server = Arc::new(FakeServer::new("example.org"));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server, dir.path(), bundle_file(&server, dir.path()));
    cfg.node_attestor = token(None);
    let err = start(&server, cfg, disk_km(dir.path())).await.unwrap_err();
    assert!(matches!(err, ManagerError::NoEvidence { .. }), "{err}");
    assert!(err.to_string().contains("-joinToken"), "{err}");
}

#[tokio::test]
async fn unreachable_server_at_first_attestation_gives_up_after_the_timeout() {
    let server = Arc::new(FakeServer::new("example.org"));
    server.add_token("tok");
    server.set_reachable(false);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&server, dir.path(), bundle_file(&server, dir.path()));
    let err = start(&server, cfg, disk_km(dir.path())).await.unwrap_err();
    assert!(
        matches!(err, ManagerError::ServerUnreachable { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("127.0.0.1:8081") && msg.contains("connection refused"),
        "{msg}"
    );
}

#[tokio::test]
async fn insecure_bootstrap_only_for_the_first_contact() {
    let server = Arc::new(FakeServer::new("example.org"));
    server.add_token("tok");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&server, dir.path(), TrustBundleSource::InsecureBootstrap);
    let _m = start(&server, cfg, disk_km(dir.path())).await.unwrap();
    // Nothing to serve yet, but the bundle is persisted already.
    assert!(
        dir.path()
            .join(store::SVID_CACHE_DIR)
            .join(store::SVID_CACHE_BUNDLES_FILE)
            .is_file()
    );
    let creds = server.last_credentials().unwrap();
    assert!(!creds.insecure);
    assert_eq!(creds.roots, vec![server.ca_cert()]);
}

#[tokio::test]
async fn agent_svid_rotates_at_half_life_into_the_other_key_slot() {
    let server = Arc::new(FakeServer::new("example.org"));
    server.add_token("tok");
    let dir = tempfile::tempdir().unwrap();
    let km = disk_km(dir.path());
    let cfg = config(&server, dir.path(), bundle_file(&server, dir.path()));
    let m = start(&server, cfg, km.clone()).await.unwrap();
    let before = m.agent_svid_expires_at();
    let stored_before = std::fs::read(dir.path().join(store::AGENT_SVID_FILE)).unwrap();
    server
        .clock()
        .advance(Duration::from_secs(server.agent_ttl() / 2 - 10));
    m.sync_now().await.unwrap();
    assert_eq!(server.renewals(), 0);
    server.clock().advance(Duration::from_secs(20));
    m.sync_now().await.unwrap();
    assert_eq!(server.renewals(), 1);
    assert!(m.agent_svid_expires_at() > before);
    assert_eq!(m.shared.creds().agent.key_id, attest::KEY_B);
    let stored_after = std::fs::read(dir.path().join(store::AGENT_SVID_FILE)).unwrap();
    assert_ne!(stored_before, stored_after);
    // The connection now presents the new SVID.
    let leaf = server.last_credentials().unwrap().leaf.unwrap();
    assert_eq!(leaf, m.shared.creds().agent.chain[0]);
    assert!(km.get_key(attest::KEY_B).await.unwrap().is_some());
}

#[tokio::test]
async fn restarted_agent_serves_persisted_svids_with_the_server_down() {
    let server = Arc::new(FakeServer::new("example.org"));
    server.add_token("tok");
    server.set_entries(vec![entry("e1", "/web", &["unix:uid:1000"])]);
    server.add_jwt_authority("kid-1");
    let dir = tempfile::tempdir().unwrap();
    let trust = bundle_file(&server, dir.path());
    let first = start(
        &server,
        config(&server, dir.path(), trust.clone()),
        disk_km(dir.path()),
    )
    .await
    .unwrap();
    let served = first.snapshot().unwrap();
    drop(first);

    server.set_reachable(false);
    let second = start(
        &server,
        config(&server, dir.path(), trust),
        disk_km(dir.path()),
    )
    .await
    .unwrap();
    let snap = second.snapshot().unwrap();
    assert_eq!(snap.svids, served.svids);
    assert!(
        snap.bundle.find_jwt_authority("kid-1").is_some(),
        "full bundle restored"
    );
    // A failing sync keeps everything.
    assert!(second.sync_now().await.is_err());
    assert_eq!(second.snapshot().unwrap().svids, served.svids);
    // Until it expires.
    server
        .clock()
        .advance(Duration::from_secs(server.x509_ttl() + 1));
    assert!(second.sync_now().await.is_err());
    assert!(second.snapshot().unwrap().svids.is_empty());
}

#[tokio::test]
async fn trigger_sync_publishes_new_entries_without_waiting_for_the_interval() {
    let server = Arc::new(FakeServer::new("example.org"));
    server.add_token("tok");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&server, dir.path(), bundle_file(&server, dir.path()));
    let m = start(&server, cfg, disk_km(dir.path())).await.unwrap();
    let mut handle = m.cache_handle();
    assert!(
        handle
            .snapshots
            .borrow_and_update()
            .as_ref()
            .unwrap()
            .svids
            .is_empty()
    );
    server.set_entries(vec![entry("e1", "/web", &["unix:uid:1000"])]);
    m.trigger_sync();
    tokio::time::timeout(Duration::from_secs(10), handle.snapshots.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handle.snapshots.borrow().as_ref().unwrap().svids.len(), 1);
}

#[tokio::test]
async fn pushed_entry_changes_are_served_without_fetching_entries() {
    let server = Arc::new(FakeServer::new("example.org"));
    server.add_token("tok");
    server.set_entries(vec![entry("e1", "/web", &["unix:uid:1000"])]);
    let push = server.push_channel();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&server, dir.path(), bundle_file(&server, dir.path()));
    let m = start(&server, cfg, disk_km(dir.path())).await.unwrap();
    let mut handle = m.cache_handle();
    handle.snapshots.borrow_and_update();
    let syncs = server.entry_syncs();

    // The server's first group: the whole set, over two pages.
    let e2 = entry("e2", "/db", &["unix:uid:1000"]);
    server.set_entries(vec![entry("e1", "/web", &["unix:uid:1000"]), e2.clone()]);
    push.send(Ok(api::Change {
        entries: Some(EntryChanges {
            reset: true,
            upserted: vec![entry("e1", "/web", &["unix:uid:1000"])],
            removed: Vec::new(),
            more: true,
        }),
        bundle: Some(server.bundle()),
        resync: false,
    }))
    .unwrap();
    push.send(Ok(api::Change {
        entries: Some(EntryChanges {
            upserted: vec![e2],
            ..EntryChanges::default()
        }),
        ..api::Change::default()
    }))
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), handle.snapshots.changed())
        .await
        .unwrap()
        .unwrap();
    let ids = |h: &crate::cache::CacheHandle| -> Vec<String> {
        h.snapshots
            .borrow()
            .as_ref()
            .unwrap()
            .svids
            .iter()
            .map(|s| s.entry_id.clone())
            .collect()
    };
    assert_eq!(ids(&handle), ["e1", "e2"]);

    // A later change: one removal.
    server.set_entries(vec![entry("e2", "/db", &["unix:uid:1000"])]);
    push.send(Ok(api::Change {
        entries: Some(EntryChanges {
            removed: vec!["e1".into()],
            ..EntryChanges::default()
        }),
        ..api::Change::default()
    }))
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), handle.snapshots.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids(&handle), ["e2"]);
    assert_eq!(
        server.entry_syncs(),
        syncs,
        "no entry fetch after the first sync"
    );

    // A bare signal (an older server) syncs as before.
    server.set_entries(vec![entry("e3", "/cache", &["unix:uid:1000"])]);
    push.send(Ok(api::Change::default())).unwrap();
    tokio::time::timeout(Duration::from_secs(10), handle.snapshots.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids(&handle), ["e3"]);
    assert_eq!(server.entry_syncs(), syncs + 1);
}

#[tokio::test]
async fn unchanged_syncs_publish_nothing() {
    let server = Arc::new(FakeServer::new("example.org"));
    server.add_token("tok");
    server.set_entries(vec![entry("e1", "/web", &["unix:uid:1000"])]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&server, dir.path(), bundle_file(&server, dir.path()));
    let m = start(&server, cfg, disk_km(dir.path())).await.unwrap();
    let mut handle = m.cache_handle();
    handle.snapshots.borrow_and_update();
    m.sync_now().await.unwrap();
    assert!(!handle.snapshots.has_changed().unwrap());
    server
        .clock()
        .advance(Duration::from_secs(server.x509_ttl() / 2 + 1));
    m.sync_now().await.unwrap();
    assert!(
        handle.snapshots.has_changed().unwrap(),
        "rotation publishes"
    );
    let _ = server.clock().now();
}

#[tokio::test]
async fn jwt_minter_is_reachable_through_the_cache_handle() {
    let server = Arc::new(FakeServer::new("example.org"));
    server.add_token("tok");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&server, dir.path(), bundle_file(&server, dir.path()));
    let m = start(&server, cfg, disk_km(dir.path())).await.unwrap();
    let handle = m.cache_handle();
    let a = handle.jwt.jwt_svid("e1", &["aud".into()]).await.unwrap();
    let b = handle.jwt.jwt_svid("e1", &["aud".into()]).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(server.jwt_issued(), 1);
}

#[tokio::test]
async fn status_accessors_report_chain_last_sync_and_jwt_cache() {
    let server = Arc::new(FakeServer::new("example.org"));
    server.add_token("tok");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&server, dir.path(), bundle_file(&server, dir.path()));
    let m = start(&server, cfg, disk_km(dir.path())).await.unwrap();
    let chain = m.agent_svid_chain();
    assert_eq!(
        sigil_crypto::x509::verify_chain(&chain, &[server.ca_cert()], server.clock().now())
            .unwrap(),
        m.agent_id()
    );
    let first = m.last_sync_success().expect("the first sync ran at start");
    assert_eq!(first, server.clock().unix_now());

    server.clock().advance(Duration::from_secs(7));
    m.sync_now().await.unwrap();
    assert_eq!(m.last_sync_success(), Some(first + 7));
    server.set_reachable(false);
    server.clock().advance(Duration::from_secs(7));
    assert!(m.sync_now().await.is_err());
    assert_eq!(m.last_sync_success(), Some(first + 7), "failures leave it");
    server.set_reachable(true);

    assert_eq!(m.cached_jwt_svids(), 0);
    m.cache_handle()
        .jwt
        .jwt_svid("e1", &["aud".into()])
        .await
        .unwrap();
    assert_eq!(m.cached_jwt_svids(), 1);
}

#[test]
fn bootstrap_bundle_files_are_read_in_both_formats() {
    let server = FakeServer::new("example.org");
    let td = server.td();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("b.pem");
    std::fs::write(
        &pem,
        sigil_crypto::x509::pem_encode_certs(&[server.ca_cert()]),
    )
    .unwrap();
    let b = load_bootstrap_bundle(&pem, BundleFormat::Pem, &td).unwrap();
    assert_eq!(b.x509_authorities, vec![server.ca_cert()]);
    let jwks = dir.path().join("b.json");
    std::fs::write(&jwks, b.to_jwks()).unwrap();
    let b2 = load_bootstrap_bundle(&jwks, BundleFormat::Spiffe, &td).unwrap();
    assert_eq!(b2.x509_authorities, b.x509_authorities);
    let err = load_bootstrap_bundle(&jwks, BundleFormat::Pem, &td).unwrap_err();
    assert!(err.to_string().contains("b.json"), "{err}");
    let err =
        load_bootstrap_bundle(&dir.path().join("missing"), BundleFormat::Pem, &td).unwrap_err();
    assert!(
        err.to_string().contains("unable to read trust bundle"),
        "{err}"
    );
}

#[tokio::test]
async fn federated_bundles_are_published_and_survive_a_restart_with_the_server_down() {
    let server = Arc::new(FakeServer::new("example.org"));
    server.add_token("tok");
    let partner = TestCa::new("partner.org");
    let mut bundle = sigil_spiffe::Bundle::new(partner.td.clone());
    bundle.x509_authorities.push(partner.cert.clone());
    server.set_federated_bundle(bundle.clone());
    server.set_entries(vec![entry("e1", "/web", &["unix:uid:1000"])]);
    let dir = tempfile::tempdir().unwrap();
    let trust = bundle_file(&server, dir.path());
    let m = start(
        &server,
        config(&server, dir.path(), trust.clone()),
        disk_km(dir.path()),
    )
    .await
    .unwrap();
    assert!(m.snapshot().unwrap().federated_bundles.is_empty());

    let mut updates = m.cache_handle().snapshots;
    updates.borrow_and_update();
    server.set_entries(vec![federated_entry(
        "e1",
        "/web",
        &["unix:uid:1000"],
        &["partner.org"],
    )]);
    m.sync_now().await.unwrap();
    assert!(
        updates.has_changed().unwrap(),
        "a new snapshot was published"
    );
    let snap = m.snapshot().unwrap();
    assert_eq!(snap.federated_bundles.len(), 1);
    assert_eq!(*snap.federated_bundles[0], bundle);
    drop(m);

    server.set_reachable(false);
    let mut cfg = config(&server, dir.path(), trust);
    cfg.node_attestor = token(None);
    let restarted = start(&server, cfg, disk_km(dir.path())).await.unwrap();
    let snap = restarted.snapshot().unwrap();
    assert_eq!(snap.federated_bundles.len(), 1);
    assert_eq!(*snap.federated_bundles[0], bundle);
    assert_eq!(
        snap.svids[0].federates_with,
        vec![sigil_spiffe::TrustDomain::new("partner.org").unwrap()]
    );
}

fn pop(node: &str) -> Arc<dyn AgentNodeAttestor> {
    Arc::new(FakePopAgent(node.into()))
}

/// An agent attested by a re-attestable attestor, with one entry.
async fn pop_agent(server: &Arc<FakeServer>, dir: &Path) -> Manager {
    server.add_pop_node("node-1");
    server.set_entries(vec![entry("e1", "/web", &["unix:uid:1000"])]);
    let mut cfg = config(server, dir, bundle_file(server, dir));
    cfg.node_attestor = pop("node-1");
    start(server, cfg, disk_km(dir)).await.unwrap()
}

#[tokio::test]
async fn evicted_reattestable_agent_attests_again_by_itself_and_keeps_serving() {
    let server = Arc::new(FakeServer::new("example.org"));
    let dir = tempfile::tempdir().unwrap();
    let m = pop_agent(&server, dir.path()).await;
    assert!(m.reattestable());
    let id = m.agent_id();
    assert_eq!(
        id.as_str(),
        "spiffe://example.org/spire/agent/fake_pop/node-1"
    );
    assert_eq!(server.attestations(), 1);

    server.evict();
    m.sync_now().await.unwrap();
    assert_eq!(server.attestations(), 2, "the agent attested again");
    assert_eq!(m.reattestations(), 1);
    assert_eq!(m.agent_id(), id, "same node, same agent ID");
    assert!(m.fatal().borrow().is_none(), "the agent keeps running");
    assert_eq!(
        m.snapshot().unwrap().svids.len(),
        1,
        "workloads keep their SVIDs"
    );
    let creds = server.last_credentials().unwrap();
    assert!(creds.leaf.is_some(), "back on mTLS with the new agent SVID");
}

#[tokio::test]
async fn evicted_join_token_agent_stops_with_the_reason() {
    let server = Arc::new(FakeServer::new("example.org"));
    server.add_token("tok");
    let dir = tempfile::tempdir().unwrap();
    let trust = bundle_file(&server, dir.path());
    let m = start(
        &server,
        config(&server, dir.path(), trust),
        disk_km(dir.path()),
    )
    .await
    .unwrap();
    assert!(!m.reattestable());
    server.evict();
    let err = m.sync_now().await.unwrap_err();
    assert!(matches!(err, ManagerError::MustReattest { .. }), "{err}");
    let reason = m.fatal().borrow().clone().expect("the agent must stop");
    assert!(reason.contains("new join token"), "{reason}");
    assert!(reason.contains("agent is not attested"), "{reason}");
    assert_eq!(server.attestations(), 1, "no attempt with the spent token");
    assert!(!dir.path().join("agent_svid.der").exists());
}

#[tokio::test]
async fn reattestable_agent_rotates_by_attesting_again_not_by_renewing() {
    let server = Arc::new(FakeServer::new("example.org"));
    let dir = tempfile::tempdir().unwrap();
    let m = pop_agent(&server, dir.path()).await;
    let first_expiry = m.agent_svid_expires_at();
    server
        .clock()
        .advance(Duration::from_secs(server.agent_ttl() / 2 + 10));
    m.sync_now().await.unwrap();
    assert_eq!(server.renewals(), 0);
    assert_eq!(server.attestations(), 2);
    assert!(m.agent_svid_expires_at() > first_expiry);
}

#[tokio::test]
async fn agent_svid_expired_during_an_outage_attests_again_or_stops_with_the_reason() {
    let server = Arc::new(FakeServer::new("example.org"));
    let dir = tempfile::tempdir().unwrap();
    let m = pop_agent(&server, dir.path()).await;
    server.set_reachable(false);
    server
        .clock()
        .advance(Duration::from_secs(server.agent_ttl() + 60));
    assert!(m.sync_now().await.is_err(), "server still down");
    assert!(m.fatal().borrow().is_none());
    server.set_reachable(true);
    m.sync_now().await.unwrap();
    assert!(m.agent_svid_expires_at() > server.clock().unix_now());
    assert_eq!(m.reattestations(), 1);

    // A join-token agent cannot: it stops and says why.
    let server = Arc::new(FakeServer::new("example.org"));
    server.add_token("tok");
    let dir = tempfile::tempdir().unwrap();
    let trust = bundle_file(&server, dir.path());
    let m = start(
        &server,
        config(&server, dir.path(), trust),
        disk_km(dir.path()),
    )
    .await
    .unwrap();
    server
        .clock()
        .advance(Duration::from_secs(server.agent_ttl() + 60));
    let err = m.sync_now().await.unwrap_err();
    assert!(matches!(err, ManagerError::SvidExpired { .. }), "{err}");
    let reason = m.fatal().borrow().clone().expect("the agent must stop");
    assert!(reason.contains("expired"), "{reason}");
}

#[tokio::test]
async fn whether_the_agent_may_reattest_survives_a_restart() {
    let server = Arc::new(FakeServer::new("example.org"));
    let dir = tempfile::tempdir().unwrap();
    drop(pop_agent(&server, dir.path()).await);
    let mut cfg = config(&server, dir.path(), bundle_file(&server, dir.path()));
    cfg.node_attestor = pop("node-1");
    let m = start(&server, cfg, disk_km(dir.path())).await.unwrap();
    assert!(m.reattestable());
    assert_eq!(server.attestations(), 1, "the stored SVID was reused");
}

#[tokio::test]
async fn a_node_the_server_does_not_know_is_refused_at_first_attestation() {
    let server = Arc::new(FakeServer::new("example.org"));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server, dir.path(), bundle_file(&server, dir.path()));
    cfg.node_attestor = pop("stranger");
    let err = start(&server, cfg, disk_km(dir.path())).await.unwrap_err();
    assert!(
        matches!(
            err,
            ManagerError::AttestationRefused {
                code: tonic::Code::PermissionDenied,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn propagation_is_the_age_of_the_newest_entry_this_sync_brought() {
    let created = |id: &str, at: i64| {
        (
            id.to_owned(),
            AuthorizedEntry {
                created_at: at,
                ..entry(id, &format!("/{id}"), &["unix:uid:1"])
            },
        )
    };
    let entries: BTreeMap<String, AuthorizedEntry> = [
        created("old", 100),
        created("new1", 990),
        created("new2", 995),
        created("unknown", 0),
    ]
    .into_iter()
    .collect();
    let known: BTreeSet<String> = ["old".to_owned()].into_iter().collect();

    // The newest of the entries not held before: new2, 5 s before now.
    assert_eq!(newest_new_entry_age(Some(&known), &entries, 1000), Some(5));
    // The first sync brings everything; that is no change reaching the agent.
    assert_eq!(newest_new_entry_age(None, &entries, 1000), None);
    // Nothing new, or only entries without a creation time: nothing to report.
    let all: BTreeSet<String> = entries.keys().cloned().collect();
    assert_eq!(newest_new_entry_age(Some(&all), &entries, 1000), None);
    let only_unknown: BTreeSet<String> = ["old", "new1", "new2"].map(String::from).into();
    assert_eq!(
        newest_new_entry_age(Some(&only_unknown), &entries, 1000),
        None
    );
    // A server clock ahead of ours never gives a negative time.
    assert_eq!(newest_new_entry_age(Some(&known), &entries, 900), Some(0));
}

#[tokio::test]
async fn a_caller_beyond_the_cache_size_gets_its_svid_signed_on_demand_and_kept_while_served() {
    let server = Arc::new(FakeServer::new("example.org"));
    server.add_token("tok");
    server.set_entries(
        (0..5)
            .map(|i| {
                entry(
                    &format!("e{i}"),
                    &format!("/w{i}"),
                    &[&format!("unix:uid:{i}")],
                )
            })
            .collect(),
    );
    let dir = tempfile::tempdir().unwrap();
    let trust = bundle_file(&server, dir.path());
    let mut cfg = config(&server, dir.path(), trust);
    cfg.x509_svid_cache_max_size = 2;
    let m = start(&server, cfg, disk_km(dir.path())).await.unwrap();
    let held = |m: &Manager| -> Vec<String> {
        m.snapshot()
            .unwrap()
            .svids
            .iter()
            .map(|s| s.entry_id.clone())
            .collect()
    };
    // Signed ahead of callers up to the cache size, in entry ID order.
    assert_eq!(held(&m), ["e0", "e1"]);
    assert_eq!(m.snapshot().unwrap().unsigned.len(), 3);
    assert_eq!(server.x509_issued(), 2);

    let caller = [Selector::parse("unix:uid:4").unwrap()];
    let cache = m.cache_handle();
    let subscription = tokio::time::timeout(Duration::from_secs(10), cache.subscribe(&caller))
        .await
        .expect("signed on demand well before the timeout");
    let snap = m.snapshot().unwrap();
    assert_eq!(
        snap.svids_for(&caller)
            .iter()
            .map(|s| s.entry_id.as_str())
            .collect::<Vec<_>>(),
        ["e4"]
    );
    // The least recently used SVID made room: still two held.
    assert_eq!(held(&m), ["e0", "e4"]);

    // Syncs keep the served caller's SVID and the cache size.
    m.sync_now().await.unwrap();
    assert_eq!(held(&m), ["e0", "e4"]);

    // Another caller: e1 signed again; e4 is still served, so e0 goes.
    let other = [Selector::parse("unix:uid:1").unwrap()];
    let _second = cache.subscribe(&other).await;
    assert_eq!(held(&m), ["e1", "e4"]);

    // Once e4's caller is gone, it is an SVID like the others.
    drop(subscription);
    m.sync_now().await.unwrap();
    assert_eq!(held(&m).len(), 2);
    assert!(held(&m).contains(&"e1".to_owned()));
}

#[tokio::test]
async fn callers_served_at_once_are_all_kept_beyond_the_cache_size() {
    let server = Arc::new(FakeServer::new("example.org"));
    server.add_token("tok");
    server.set_entries(
        (0..4)
            .map(|i| entry(&format!("e{i}"), &format!("/w{i}"), &["unix:uid:7"]))
            .collect(),
    );
    let dir = tempfile::tempdir().unwrap();
    let trust = bundle_file(&server, dir.path());
    let mut cfg = config(&server, dir.path(), trust);
    cfg.x509_svid_cache_max_size = 1;
    let m = start(&server, cfg, disk_km(dir.path())).await.unwrap();
    assert_eq!(m.snapshot().unwrap().svids.len(), 1);
    let caller = [Selector::parse("unix:uid:7").unwrap()];
    let _served = m.cache_handle().subscribe(&caller).await;
    assert_eq!(m.snapshot().unwrap().svids_for(&caller).len(), 4);
    m.sync_now().await.unwrap();
    assert_eq!(
        m.snapshot().unwrap().svids.len(),
        4,
        "a served workload is never denied"
    );
}

#[tokio::test]
async fn the_svid_cache_on_disk_follows_the_svids_held_one_file_each() {
    let server = Arc::new(FakeServer::new("example.org"));
    server.add_token("tok");
    server.set_entries(
        (0..4)
            .map(|i| {
                entry(
                    &format!("e{i}"),
                    &format!("/w{i}"),
                    &[&format!("unix:uid:{i}")],
                )
            })
            .collect(),
    );
    let dir = tempfile::tempdir().unwrap();
    let trust = bundle_file(&server, dir.path());
    let mut cfg = config(&server, dir.path(), trust);
    cfg.x509_svid_cache_max_size = 2;
    let m = start(&server, cfg, disk_km(dir.path())).await.unwrap();
    let data = store::DataDir::new(dir.path());
    // Read the files as they are (loading the cache would also clean up
    // the agent's in-flight temporary files).
    let stored = || -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(data.svid_cache_dir())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.path()
                    .extension()
                    .is_some_and(|x| x == store::SVID_FILE_EXTENSION)
            })
            .map(|e| {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
                v["entry_id"].as_str().unwrap().to_owned()
            })
            .collect();
        ids.sort();
        ids
    };
    eventually(|| stored() == ["e0", "e1"]).await;
    let _served = m
        .cache_handle()
        .subscribe(&[Selector::parse("unix:uid:3").unwrap()])
        .await;
    // Files are written right after the snapshot is published.
    eventually(|| stored() == ["e0", "e3"]).await;
}

#[tokio::test]
async fn a_single_file_cache_of_an_earlier_version_is_moved_to_the_cache_directory() {
    let server = Arc::new(FakeServer::new("example.org"));
    server.add_token("tok");
    server.set_entries(vec![entry("e1", "/web", &["unix:uid:1000"])]);
    let dir = tempfile::tempdir().unwrap();
    let trust = bundle_file(&server, dir.path());
    let m = start(
        &server,
        config(&server, dir.path(), trust.clone()),
        disk_km(dir.path()),
    )
    .await
    .unwrap();
    let held = m.snapshot().unwrap().svids[0].clone();
    m.shutdown();
    drop(m);
    // What an earlier version left: svid_cache.json, no directory.
    let data = store::DataDir::new(dir.path());
    let loaded = data
        .load_svid_cache(&server.td(), server.clock().unix_now())
        .unwrap();
    let legacy = serde_json::json!({
        "version": 1,
        "trust_domain": "example.org",
        "svids": loaded.svids.iter().map(|s| serde_json::json!({
            "entry_id": s.record.entry_id,
            "spiffe_id": s.record.spiffe_id.to_string(),
            "selectors": s.record.selectors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "chain": s.record.chain.iter().map(|c| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, c)).collect::<Vec<_>>(),
            "key_pkcs8": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &s.record.key_pkcs8),
            "expires_at": s.record.expires_at,
            "issued_at": s.issued_at,
            "revision_number": s.revision_number,
        })).collect::<Vec<_>>(),
    });
    std::fs::remove_dir_all(data.svid_cache_dir()).unwrap();
    std::fs::write(
        dir.path().join(store::LEGACY_SVID_CACHE_FILE),
        legacy.to_string(),
    )
    .unwrap();
    server.set_reachable(false);
    let m = start(
        &server,
        config(&server, dir.path(), trust),
        disk_km(dir.path()),
    )
    .await
    .unwrap();
    // Served from the old file at once, with the server down.
    assert_eq!(m.snapshot().unwrap().svids[0], held);
    // Moved by the first publication, in the background.
    eventually(|| !dir.path().join(store::LEGACY_SVID_CACHE_FILE).exists()).await;
    let moved = data
        .load_svid_cache(&server.td(), server.clock().unix_now())
        .unwrap();
    assert_eq!(moved.svids.len(), 1);
    assert_eq!(moved.svids[0].record, held);
}

/// Waits (up to 10 s) until `f` holds.
async fn eventually(mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition never held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
