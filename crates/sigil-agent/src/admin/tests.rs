//! Admin API behaviour as a client sees it: a real tonic server on a temp
//! Unix socket (through `UdsIncoming`, so the caller's `PeerInfo` is real)
//! and real tonic clients. The agent's moving parts are fakes: the snapshot
//! is published by the test through a `watch::Sender`, the attestor reports
//! selectors the test assigned per PID (the caller is this test process),
//! the JWT minter signs real tokens with a test key (see
//! [`crate::workload::testutil`]), and the agent status and clock are
//! set by hand. One test drives the real `unix` attestor on a child process.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sigil_plugin::clock::{Clock, ManualClock};
use sigil_proto::spire::api::agent::debug::v1::GetInfoRequest;
use sigil_proto::spire::api::agent::debug::v1::debug_client::DebugClient;
use sigil_proto::spire::api::agent::delegatedidentity::v1::delegated_identity_client::DelegatedIdentityClient;
use sigil_proto::spire::api::agent::delegatedidentity::v1::{
    FetchJwtsviDsRequest, SubscribeToJwtBundlesRequest, SubscribeToX509BundlesRequest,
    SubscribeToX509sviDsRequest, SubscribeToX509sviDsResponse,
};
use sigil_proto::spire::api::agent::logger::v1::logger_client::LoggerClient;
use sigil_proto::spire::api::agent::logger::v1::{
    GetLoggerRequest, ResetLogLevelRequest, SetLogLevelRequest,
};
use sigil_proto::spire::api::types::{LogLevel, Selector as ApiSelector, Spiffeid};
use sigil_spiffe::{Bundle, Selector};
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

use super::{AdminApi, AdminConfig, AgentStatus};
use crate::attestor::{AttestError, UnixAttestor, UnixAttestorConfig, WorkloadAttestor};
use crate::cache::{CacheHandle, Snapshot, X509SvidRecord};
use crate::uds::{PeerInfo, UdsIncoming};
use crate::workload::standard_jwks;
use crate::workload::testutil::{FakeMinter, TestCa, federating, selector};

const TIMEOUT: Duration = Duration::from_secs(10);
const DELEGATE: &str = "/delegate";

/// Selectors per PID; this test process is attested as `unix:uid:1000`
/// unless the test says otherwise. Records every peer it was asked about.
#[derive(Debug, Default)]
struct PidAttestor {
    by_pid: Mutex<HashMap<i32, Vec<Selector>>>,
    seen: Mutex<Vec<PeerInfo>>,
}

impl PidAttestor {
    fn set(&self, pid: i32, selectors: &[&str]) {
        self.by_pid
            .lock()
            .unwrap()
            .insert(pid, selectors.iter().map(|s| selector(s)).collect());
    }
}

#[async_trait]
impl WorkloadAttestor for PidAttestor {
    fn name(&self) -> &str {
        "fake"
    }

    async fn attest(&self, peer: &PeerInfo) -> Result<Vec<Selector>, AttestError> {
        self.seen.lock().unwrap().push(peer.clone());
        self.by_pid
            .lock()
            .unwrap()
            .get(&peer.pid)
            .cloned()
            .ok_or(AttestError::ProcessGone { pid: peer.pid })
    }
}

/// Agent status set by the test.
#[derive(Debug, Default)]
struct FakeStatus {
    chain: Mutex<Vec<Vec<u8>>>,
    last_sync: Mutex<Option<i64>>,
    jwt: Mutex<usize>,
}

impl AgentStatus for FakeStatus {
    fn agent_svid_chain(&self) -> Vec<Vec<u8>> {
        self.chain.lock().unwrap().clone()
    }
    fn last_sync_success(&self) -> Option<i64> {
        *self.last_sync.lock().unwrap()
    }
    fn cached_jwt_svids(&self) -> usize {
        *self.jwt.lock().unwrap()
    }
}

/// An admin API on a temp socket with the handles a test drives.
struct TestAdmin {
    ca: TestCa,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    attestor: Arc<PidAttestor>,
    minter: Arc<FakeMinter>,
    status: Arc<FakeStatus>,
    clock: Arc<ManualClock>,
    socket: PathBuf,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl TestAdmin {
    async fn start() -> TestAdmin {
        let attestor = Arc::new(PidAttestor::default());
        attestor.set(my_pid(), &["unix:uid:1000"]);
        TestAdmin::start_with(attestor.clone(), attestor).await
    }

    async fn start_with(
        attestor: Arc<PidAttestor>,
        serving: Arc<dyn WorkloadAttestor>,
    ) -> TestAdmin {
        let ca = TestCa::new("example.org");
        let (snapshots, rx) = watch::channel(None);
        let minter = Arc::new(FakeMinter {
            key: ca.jwt_key.clone(),
            entries: Mutex::new(HashMap::new()),
        });
        let status = Arc::new(FakeStatus::default());
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let cache = CacheHandle {
            snapshots: rx,
            jwt: minter.clone(),
            subscriptions: Default::default(),
        };
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let incoming = UdsIncoming::bind(&socket).unwrap();
        let api = AdminApi::new(
            AdminConfig {
                authorized_delegates: vec![ca.td.id_with_path(DELEGATE).unwrap()],
                started_at: clock.now() - Duration::from_secs(42),
            },
            cache,
            serving,
            status.clone(),
            clock.clone(),
        );
        let server = tokio::spawn(async move {
            api.serve_incoming(incoming).await.unwrap();
        });
        TestAdmin {
            ca,
            snapshots,
            attestor,
            minter,
            status,
            clock,
            socket,
            _dir: dir,
            server,
        }
    }

    async fn channel(&self) -> Channel {
        crate::cli::workload_channel(&self.socket).await.unwrap()
    }

    async fn delegated(&self) -> DelegatedIdentityClient<Channel> {
        DelegatedIdentityClient::new(self.channel().await)
    }

    /// The caller's own entry (an authorized delegate unless `path` says
    /// otherwise) plus `others`.
    fn publish(&self, delegate_path: Option<&str>, others: Vec<X509SvidRecord>, fed: Vec<Bundle>) {
        let mut svids = others;
        if let Some(path) = delegate_path {
            svids.push(self.ca.svid("delegate", path, &["unix:uid:1000"]));
        }
        svids.sort_by(|a, b| a.entry_id.cmp(&b.entry_id));
        {
            let mut entries = self.minter.entries.lock().unwrap();
            for svid in &svids {
                entries.insert(svid.entry_id.clone(), svid.spiffe_id.clone());
            }
        }
        self.snapshots.send_replace(Some(Arc::new(Snapshot {
            bundle: Arc::new(self.ca.bundle()),
            federated_bundles: fed.into_iter().map(Arc::new).collect(),
            svids: svids.into_iter().map(Arc::new).collect(),
            unsigned: vec![],
        })));
    }
}

impl Drop for TestAdmin {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn my_pid() -> i32 {
    std::process::id() as i32
}

fn api_selectors(selectors: &[(&str, &str)]) -> Vec<ApiSelector> {
    selectors
        .iter()
        .map(|(t, v)| ApiSelector {
            r#type: (*t).into(),
            value: (*v).into(),
        })
        .collect()
}

fn x509_req(selectors: &[(&str, &str)], pid: i32) -> SubscribeToX509sviDsRequest {
    SubscribeToX509sviDsRequest {
        selectors: api_selectors(selectors),
        pid,
    }
}

fn jwt_req(audience: &[&str], selectors: &[(&str, &str)], pid: i32) -> FetchJwtsviDsRequest {
    FetchJwtsviDsRequest {
        audience: audience.iter().map(|a| (*a).into()).collect(),
        selectors: api_selectors(selectors),
        pid,
    }
}

async fn next<T>(stream: &mut Streaming<T>) -> Result<Option<T>, tonic::Status> {
    tokio::time::timeout(TIMEOUT, stream.message())
        .await
        .expect("a message in time")
}

fn ids(message: &SubscribeToX509sviDsResponse) -> Vec<String> {
    message
        .x509_svids
        .iter()
        .map(|s| {
            let id = s.x509_svid.as_ref().unwrap().id.as_ref().unwrap();
            format!("spiffe://{}{}", id.trust_domain, id.path)
        })
        .collect()
}

/// A child that lives until killed.
struct Child(std::process::Child);

impl Child {
    fn spawn() -> Child {
        Child(
            std::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .unwrap(),
        )
    }
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn authorized_delegate_streams_x509_svids_by_selectors_and_gets_pushes() {
    let admin = TestAdmin::start().await;
    let other = TestCa::new("other.org").bundle();
    admin.publish(
        Some(DELEGATE),
        vec![federating(
            admin.ca.svid("web", "/web", &["k8s:ns:web"]),
            &["other.org"],
        )],
        vec![other.clone()],
    );
    let mut stream = admin
        .delegated()
        .await
        .subscribe_to_x509svi_ds(x509_req(&[("k8s", "ns:web")], 0))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await.unwrap().unwrap();
    assert_eq!(ids(&first), ["spiffe://example.org/web"]);
    assert_eq!(first.federates_with, ["spiffe://other.org"]);
    let svid = &first.x509_svids[0];
    let web = admin.ca.svid("web", "/web", &["k8s:ns:web"]);
    assert_eq!(svid.x509_svid.as_ref().unwrap().cert_chain.len(), 1);
    sigil_crypto::x509::verify_chain(
        &svid.x509_svid.as_ref().unwrap().cert_chain,
        std::slice::from_ref(&admin.ca.cert),
        SystemTime::now(),
    )
    .unwrap();
    assert!(svid.x509_svid.as_ref().unwrap().expires_at >= web.expires_at - 5);
    sigil_crypto::SoftwareKey::from_pkcs8_der(&svid.x509_svid_key).unwrap();

    // A second entry for the workload arrives: a new complete message.
    admin.publish(
        Some(DELEGATE),
        vec![
            admin.ca.svid("web", "/web", &["k8s:ns:web"]),
            admin.ca.svid("web2", "/web2", &["k8s:ns:web", "k8s:sa:x"]),
            admin.ca.svid("web3", "/web3", &["k8s:ns:web"]),
        ],
        vec![other],
    );
    let second = next(&mut stream).await.unwrap().unwrap();
    assert_eq!(
        ids(&second),
        ["spiffe://example.org/web", "spiffe://example.org/web3"]
    );
}

#[tokio::test]
async fn workload_without_entries_gets_an_empty_message_not_an_error() {
    let admin = TestAdmin::start().await;
    admin.publish(
        Some(DELEGATE),
        vec![],
        vec![TestCa::new("other.org").bundle()],
    );
    let mut stream = admin
        .delegated()
        .await
        .subscribe_to_x509svi_ds(x509_req(&[("k8s", "ns:none")], 0))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await.unwrap().unwrap();
    assert!(first.x509_svids.is_empty());
    assert!(first.federates_with.is_empty());
}

#[tokio::test]
async fn caller_that_is_not_an_authorized_delegate_is_denied_on_every_rpc() {
    for (delegate_path, message) in [
        (
            Some("/not-a-delegate"),
            "caller not configured as an authorized delegate",
        ),
        (None, "no identity issued"),
    ] {
        let admin = TestAdmin::start().await;
        admin.publish(
            delegate_path,
            vec![admin.ca.svid("web", "/web", &["k8s:ns:web"])],
            vec![],
        );
        let mut c = admin.delegated().await;
        let statuses = [
            c.subscribe_to_x509svi_ds(x509_req(&[("k8s", "ns:web")], 0))
                .await
                .err(),
            c.subscribe_to_x509_bundles(SubscribeToX509BundlesRequest {})
                .await
                .err(),
            c.fetch_jwtsvi_ds(jwt_req(&["aud"], &[("k8s", "ns:web")], 0))
                .await
                .err(),
            c.subscribe_to_jwt_bundles(SubscribeToJwtBundlesRequest {})
                .await
                .err(),
        ];
        for status in statuses {
            let status = status.expect("denied");
            assert_eq!(status.code(), Code::PermissionDenied);
            assert_eq!(status.message(), message);
        }
    }
}

#[tokio::test]
async fn unattestable_caller_is_unavailable() {
    let admin = TestAdmin::start().await;
    admin.attestor.by_pid.lock().unwrap().clear();
    admin.publish(Some(DELEGATE), vec![], vec![]);
    let status = admin
        .delegated()
        .await
        .subscribe_to_x509_bundles(SubscribeToX509BundlesRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "workload attestation failed");
}

#[tokio::test]
async fn requests_must_name_selectors_or_a_pid_but_not_both() {
    let admin = TestAdmin::start().await;
    admin.publish(Some(DELEGATE), vec![], vec![]);
    let mut c = admin.delegated().await;
    let both_or_neither = "must provide either selectors or non-zero PID, but not both";
    let cases = [
        (
            c.subscribe_to_x509svi_ds(x509_req(&[("k8s", "ns:web")], 1))
                .await
                .err(),
            both_or_neither,
        ),
        (
            c.subscribe_to_x509svi_ds(x509_req(&[], 0)).await.err(),
            both_or_neither,
        ),
        (
            c.fetch_jwtsvi_ds(jwt_req(&["aud"], &[("k8s", "ns:web")], 1))
                .await
                .err(),
            both_or_neither,
        ),
        (
            c.fetch_jwtsvi_ds(jwt_req(&["aud"], &[], 0)).await.err(),
            both_or_neither,
        ),
        (
            c.subscribe_to_x509svi_ds(x509_req(&[("k8s:ns", "web")], 0))
                .await
                .err(),
            "could not parse provided selectors",
        ),
        (
            c.subscribe_to_x509svi_ds(x509_req(&[("k8s", "")], 0))
                .await
                .err(),
            "could not parse provided selectors",
        ),
        (
            c.fetch_jwtsvi_ds(jwt_req(&[], &[("k8s", "ns:web")], 0))
                .await
                .err(),
            "audience must be specified",
        ),
    ];
    for (status, message) in cases {
        let status = status.expect("rejected");
        assert_eq!(status.code(), Code::InvalidArgument, "{message}");
        assert_eq!(status.message(), message);
    }
}

#[tokio::test]
async fn pid_requests_attest_that_process_with_its_ids_from_proc() {
    let admin = TestAdmin::start().await;
    let child = Child::spawn();
    admin.attestor.set(child.pid(), &["k8s:pod:child"]);
    admin.publish(
        Some(DELEGATE),
        vec![admin.ca.svid("pod", "/pod", &["k8s:pod:child"])],
        vec![],
    );
    let mut c = admin.delegated().await;
    let mut stream = c
        .subscribe_to_x509svi_ds(x509_req(&[], child.pid()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ids(&next(&mut stream).await.unwrap().unwrap()),
        ["spiffe://example.org/pod"]
    );
    let jwt = c
        .fetch_jwtsvi_ds(jwt_req(&["aud"], &[], child.pid()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jwt.svids.len(), 1);

    let seen = admin.attestor.seen.lock().unwrap().clone();
    let attested_child = seen
        .iter()
        .find(|p| p.pid == child.pid())
        .expect("the child was attested");
    assert_eq!(attested_child.uid, rustix::process::geteuid().as_raw());
    assert_eq!(attested_child.gid, rustix::process::getegid().as_raw());
    assert!(attested_child.has_pidfd());

    // A PID with no process behind it cannot be attested.
    let status = c
        .fetch_jwtsvi_ds(jwt_req(&["aud"], &[], i32::MAX))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "workload attestation failed");
}

#[tokio::test]
async fn real_unix_attestor_authorizes_the_caller_and_attests_a_pid() {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let admin = TestAdmin::start_with(
        Arc::new(PidAttestor::default()),
        Arc::new(UnixAttestor::new(UnixAttestorConfig::default())),
    )
    .await;
    let uid_sel = format!("unix:uid:{uid}");
    let gid_sel = format!("unix:gid:{gid}");
    let mut svids = vec![admin.ca.svid("delegate", DELEGATE, &[uid_sel.as_str()])];
    svids.push(
        admin
            .ca
            .svid("w", "/w", &[uid_sel.as_str(), gid_sel.as_str()]),
    );
    {
        let mut entries = admin.minter.entries.lock().unwrap();
        for svid in &svids {
            entries.insert(svid.entry_id.clone(), svid.spiffe_id.clone());
        }
    }
    admin.snapshots.send_replace(Some(Arc::new(Snapshot {
        bundle: Arc::new(admin.ca.bundle()),
        federated_bundles: vec![],
        svids: svids.into_iter().map(Arc::new).collect(),
        unsigned: vec![],
    })));
    let child = Child::spawn();
    let jwt = admin
        .delegated()
        .await
        .fetch_jwtsvi_ds(jwt_req(&["aud"], &[], child.pid()))
        .await
        .unwrap()
        .into_inner();
    let mut got: Vec<String> = jwt
        .svids
        .iter()
        .map(|s| s.id.as_ref().unwrap().path.clone())
        .collect();
    got.sort();
    assert_eq!(got, [DELEGATE, "/w"]);
}

#[tokio::test]
async fn stream_ends_with_permission_denied_when_the_delegate_loses_its_entry() {
    let admin = TestAdmin::start().await;
    let web = admin.ca.svid("web", "/web", &["k8s:ns:web"]);
    admin.publish(Some(DELEGATE), vec![web.clone()], vec![]);
    let mut c = admin.delegated().await;
    let mut svids = c
        .subscribe_to_x509svi_ds(x509_req(&[("k8s", "ns:web")], 0))
        .await
        .unwrap()
        .into_inner();
    let mut bundles = c
        .subscribe_to_jwt_bundles(SubscribeToJwtBundlesRequest {})
        .await
        .unwrap()
        .into_inner();
    next(&mut svids).await.unwrap().unwrap();
    next(&mut bundles).await.unwrap().unwrap();

    admin.publish(Some("/demoted"), vec![web], vec![]);
    for status in [
        next(&mut svids).await.unwrap_err(),
        next(&mut bundles).await.unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(
            status.message(),
            "caller not configured as an authorized delegate"
        );
    }
}

#[tokio::test]
async fn bundle_streams_carry_every_trust_domain_and_push_changes() {
    let admin = TestAdmin::start().await;
    let other = TestCa::new("other.org").bundle();
    admin.publish(Some(DELEGATE), vec![], vec![]);
    let mut c = admin.delegated().await;
    let mut x509 = c
        .subscribe_to_x509_bundles(SubscribeToX509BundlesRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut jwt = c
        .subscribe_to_jwt_bundles(SubscribeToJwtBundlesRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut x509).await.unwrap().unwrap();
    assert_eq!(
        first.ca_certificates,
        HashMap::from([("spiffe://example.org".to_owned(), admin.ca.cert.clone())])
    );
    let first = next(&mut jwt).await.unwrap().unwrap();
    assert_eq!(
        first.bundles,
        HashMap::from([(
            "spiffe://example.org".to_owned(),
            standard_jwks(&admin.ca.bundle())
        )])
    );

    admin.publish(Some(DELEGATE), vec![], vec![other.clone()]);
    let second = next(&mut x509).await.unwrap().unwrap();
    assert_eq!(second.ca_certificates.len(), 2);
    assert_eq!(
        second.ca_certificates["spiffe://other.org"],
        other.x509_authorities.concat()
    );
    let second = next(&mut jwt).await.unwrap().unwrap();
    assert_eq!(second.bundles["spiffe://other.org"], standard_jwks(&other));
}

#[tokio::test]
async fn fetch_jwt_svids_returns_real_tokens_for_the_named_workload() {
    let admin = TestAdmin::start().await;
    admin.publish(
        Some(DELEGATE),
        vec![admin.ca.svid("web", "/web", &["k8s:ns:web"])],
        vec![],
    );
    let mut c = admin.delegated().await;
    let resp = c
        .fetch_jwtsvi_ds(jwt_req(&["aud-1", "aud-2"], &[("k8s", "ns:web")], 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.svids.len(), 1);
    let svid = &resp.svids[0];
    assert_eq!(
        svid.id,
        Some(Spiffeid {
            trust_domain: "example.org".into(),
            path: "/web".into()
        })
    );
    let token = sigil_spiffe::JwtSvid::validate(
        &svid.token,
        &admin.ca.bundle(),
        &["aud-2".to_owned()],
        svid.issued_at,
        &sigil_crypto::AwsLcJwtVerifier,
    )
    .unwrap();
    assert_eq!(token.spiffe_id().path(), "/web");
    assert_eq!(svid.expires_at, token.expiry());
    assert!(svid.issued_at > 0 && svid.issued_at < svid.expires_at);

    let status = c
        .fetch_jwtsvi_ds(jwt_req(&["aud"], &[("k8s", "ns:nobody")], 0))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "no identity issued");
}

#[tokio::test]
async fn logger_gets_sets_and_resets_the_process_level() {
    // Whichever test initialised logging first fixed the launch level; ERROR
    // keeps the other tests' output quiet.
    let control = sigil_cli::init_logging("ERROR", "text");
    let launch = super::logger::level_to_api(&control.launch_level()) as i32;
    let other = if launch == LogLevel::Warn as i32 {
        LogLevel::Error
    } else {
        LogLevel::Warn
    };
    let admin = TestAdmin::start().await;
    let mut c = LoggerClient::new(admin.channel().await);

    let got = c
        .get_logger(GetLoggerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.launch_level, launch);

    let set = c
        .set_log_level(SetLogLevelRequest {
            new_level: other as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.current_level, other as i32);
    assert_eq!(set.launch_level, launch);
    assert_eq!(control.level(), other.as_str_name());

    for (value, message) in [
        (0, "newLevel value cannot be LogLevel_UNSPECIFIED"),
        (99, "unsupported log level"),
    ] {
        let status = c
            .set_log_level(SetLogLevelRequest { new_level: value })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), message);
    }

    let reset = c
        .reset_log_level(ResetLogLevelRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reset.current_level, launch);
    let got = c
        .get_logger(GetLoggerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.current_level, launch);
}

#[tokio::test]
async fn debug_info_reports_chain_uptime_counts_and_last_sync_cached_for_five_seconds() {
    let admin = TestAdmin::start().await;
    let agent = admin
        .ca
        .svid("agent", "/spire/agent/join_token/t", &["unix:uid:0"]);
    *admin.status.chain.lock().unwrap() = agent.chain.clone();
    *admin.status.last_sync.lock().unwrap() = Some(1_700_000_000);
    *admin.status.jwt.lock().unwrap() = 3;
    admin.publish(
        Some(DELEGATE),
        vec![admin.ca.svid("web", "/web", &["k8s:ns:web"])],
        vec![],
    );
    let mut c = DebugClient::new(admin.channel().await);

    let info = c.get_info(GetInfoRequest {}).await.unwrap().into_inner();
    let chain: Vec<(String, String)> = info
        .svid_chain
        .iter()
        .map(|cert| {
            let id = cert.id.as_ref().unwrap();
            (id.trust_domain.clone(), id.path.clone())
        })
        .collect();
    assert_eq!(
        chain,
        [
            ("example.org".into(), "/spire/agent/join_token/t".into()),
            ("example.org".into(), String::new()),
        ],
        "leaf, then the bundle root it chains to"
    );
    assert_eq!(info.svid_chain[0].expires_at, agent.expires_at);
    assert_eq!(info.svid_chain[1].subject, "O=SPIFFE,C=US");
    assert_eq!(info.uptime, 42);
    assert_eq!(info.cached_x509_svids_count, 2);
    #[allow(deprecated)]
    let old_count = info.svids_count;
    assert_eq!(old_count, 2);
    assert_eq!(info.cached_jwt_svids_count, 3);
    assert_eq!(info.cached_svidstore_x509_svids_count, 0);
    assert_eq!(info.last_sync_success, 1_700_000_000);

    *admin.status.jwt.lock().unwrap() = 4;
    admin.clock.advance(Duration::from_secs(4));
    let cached = c.get_info(GetInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(cached, info, "within five seconds the answer is reused");
    admin.clock.advance(Duration::from_secs(1));
    let fresh = c.get_info(GetInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(fresh.cached_jwt_svids_count, 4);
    assert_eq!(fresh.uptime, 47);
}

#[tokio::test]
async fn debug_info_is_internal_error_when_the_agent_svid_does_not_chain() {
    let admin = TestAdmin::start().await;
    let stranger = TestCa::new("example.org").svid("agent", "/spire/agent/x", &[]);
    *admin.status.chain.lock().unwrap() = stranger.chain;
    admin.publish(Some(DELEGATE), vec![], vec![]);
    let status = DebugClient::new(admin.channel().await)
        .get_info(GetInfoRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert!(
        status
            .message()
            .starts_with("failed to verify agent SVID: "),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn serve_binds_the_socket_owner_and_group_only() {
    let admin = TestAdmin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("admin.sock");
    let api = AdminApi::new(
        AdminConfig {
            authorized_delegates: vec![],
            started_at: SystemTime::now(),
        },
        CacheHandle {
            snapshots: admin.snapshots.subscribe(),
            jwt: admin.minter.clone(),
            subscriptions: Default::default(),
        },
        admin.attestor.clone(),
        admin.status.clone(),
        admin.clock.clone(),
    );
    let serving = {
        let path = path.clone();
        tokio::spawn(async move { api.serve(&path).await })
    };
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mode = loop {
        if let Ok(meta) = std::fs::metadata(&path)
            && meta.permissions().mode() & 0o777 == super::ADMIN_SOCKET_MODE
        {
            break meta.permissions().mode() & 0o777;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "socket never appeared"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(mode, 0o770);
    let info = DebugClient::new(crate::cli::workload_channel(&path).await.unwrap())
        .get_info(GetInfoRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        info.code(),
        Code::Unavailable,
        "served, but nothing to report yet"
    );
    serving.abort();
}
