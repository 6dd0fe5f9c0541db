//! Test fixtures for the Workload API and the CLI that talks to it: a real
//! CA and real SVIDs and JWT keys (built with sigil-crypto), a `CacheHandle`
//! fed by a test-owned `watch::Sender`, and two fakes standing in for the
//! agent's moving parts: an attestor that reports whatever selectors the
//! test sets, and a JWT minter that signs real JWT-SVIDs with a test key
//! instead of asking a server.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sigil_crypto::{
    CaSubject, KeyType, Signer, SoftwareKey, X509SvidParams, self_signed_ca, sign_x509_svid,
};
use sigil_spiffe::{Bundle, JwtAuthority, Selector, SpiffeId, TrustDomain};
use tokio::sync::watch;

use super::{WorkloadApi, WorkloadRateLimits};
use crate::attestor::{AttestError, WorkloadAttestor};
use crate::cache::{CacheHandle, JwtError, JwtMinter, JwtSvidRecord, Snapshot, X509SvidRecord};
use crate::uds::{PeerInfo, UdsIncoming};

/// The JWT authority key ID the fake minter signs with.
pub(crate) const JWT_KID: &str = "test-kid";

pub(crate) fn selector(s: &str) -> Selector {
    Selector::parse(s).expect("test selector")
}

/// A trust domain's CA: a self-signed root and a JWT signing key.
pub(crate) struct TestCa {
    pub(crate) td: TrustDomain,
    pub(crate) key: SoftwareKey,
    pub(crate) cert: Vec<u8>,
    pub(crate) jwt_key: Arc<SoftwareKey>,
}

impl TestCa {
    pub(crate) fn new(td: &str) -> TestCa {
        let td = TrustDomain::new(td).expect("trust domain");
        let key = SoftwareKey::generate(KeyType::EcP256).expect("ca key");
        let now = SystemTime::now();
        let cert = self_signed_ca(
            &key,
            &td,
            &CaSubject::default(),
            now - Duration::from_secs(3600),
            now + Duration::from_secs(24 * 3600),
        )
        .expect("ca cert");
        let jwt_key = Arc::new(SoftwareKey::generate(KeyType::EcP256).expect("jwt key"));
        TestCa {
            td,
            key,
            cert,
            jwt_key,
        }
    }

    /// The bundle: the root and the JWT key.
    pub(crate) fn bundle(&self) -> Bundle {
        let mut bundle = Bundle::new(self.td.clone());
        bundle.x509_authorities.push(self.cert.clone());
        bundle.jwt_authorities.push(JwtAuthority {
            key_id: JWT_KID.to_owned(),
            public_key_der: self.jwt_key.public_key_der().to_vec(),
            expires_at: None,
        });
        bundle
    }

    /// An X509-SVID record for `path` in this trust domain, for callers with
    /// all of `selectors`.
    pub(crate) fn svid(&self, entry_id: &str, path: &str, selectors: &[&str]) -> X509SvidRecord {
        let spiffe_id = self.td.id_with_path(path).expect("spiffe id");
        let key = SoftwareKey::generate(KeyType::EcP256).expect("svid key");
        let now = SystemTime::now();
        let not_after = now + Duration::from_secs(3600);
        let cert = sign_x509_svid(
            &self.cert,
            &self.key,
            &X509SvidParams::new(
                spiffe_id.clone(),
                key.public_key_der().to_vec(),
                now - Duration::from_secs(10),
                not_after,
            ),
        )
        .expect("svid cert");
        X509SvidRecord {
            entry_id: entry_id.to_owned(),
            spiffe_id,
            selectors: selectors.iter().map(|s| selector(s)).collect(),
            hint: String::new(),
            chain: vec![cert],
            key_pkcs8: key.to_pkcs8_der(),
            expires_at: unix(not_after),
            federates_with: Vec::new(),
        }
    }
}

/// `record` with its entry federating with `tds`.
pub(crate) fn federating(mut record: X509SvidRecord, tds: &[&str]) -> X509SvidRecord {
    record.federates_with = tds
        .iter()
        .map(|t| TrustDomain::new(t).expect("trust domain"))
        .collect();
    record
}

pub(crate) fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Reports the selectors the test last set, for every caller.
#[derive(Debug, Default)]
pub(crate) struct FakeAttestor {
    pub(crate) selectors: Mutex<Vec<Selector>>,
    pub(crate) fail: Mutex<bool>,
}

impl FakeAttestor {
    pub(crate) fn with(selectors: &[&str]) -> Arc<FakeAttestor> {
        Arc::new(FakeAttestor {
            selectors: Mutex::new(selectors.iter().map(|s| selector(s)).collect()),
            fail: Mutex::new(false),
        })
    }
}

#[async_trait]
impl WorkloadAttestor for FakeAttestor {
    fn name(&self) -> &str {
        "fake"
    }

    async fn attest(&self, peer: &PeerInfo) -> Result<Vec<Selector>, AttestError> {
        if *self.fail.lock().expect("lock") {
            return Err(AttestError::ProcessGone { pid: peer.pid });
        }
        Ok(self.selectors.lock().expect("lock").clone())
    }
}

/// Signs real JWT-SVIDs with the CA's JWT key for the entries it knows.
#[derive(Debug)]
pub(crate) struct FakeMinter {
    pub(crate) key: Arc<SoftwareKey>,
    pub(crate) entries: Mutex<HashMap<String, SpiffeId>>,
}

#[async_trait]
impl JwtMinter for FakeMinter {
    async fn jwt_svid(
        &self,
        entry_id: &str,
        audience: &[String],
    ) -> Result<JwtSvidRecord, JwtError> {
        let spiffe_id = self
            .entries
            .lock()
            .expect("lock")
            .get(entry_id)
            .cloned()
            .ok_or_else(|| JwtError::Refused(format!("unknown entry {entry_id}")))?;
        let now = SystemTime::now();
        let exp = now + Duration::from_secs(300);
        let token = sigil_crypto::sign_jwt_svid(
            self.key.as_ref(),
            JWT_KID,
            &spiffe_id,
            audience,
            now,
            exp,
            None,
        )
        .map_err(|e| JwtError::Refused(e.to_string()))?;
        Ok(JwtSvidRecord {
            spiffe_id,
            token,
            hint: String::new(),
            expires_at: unix(exp),
        })
    }
}

/// A Workload API on a temp Unix socket, with the handles a test drives.
pub(crate) struct TestAgent {
    pub(crate) ca: TestCa,
    pub(crate) snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    pub(crate) attestor: Arc<FakeAttestor>,
    pub(crate) minter: Arc<FakeMinter>,
    pub(crate) socket: PathBuf,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl TestAgent {
    /// Serves `WorkloadApi` (through `UdsIncoming`, as in production) with no
    /// snapshot yet and a caller attested as `unix:uid:1000`.
    pub(crate) async fn start() -> TestAgent {
        TestAgent::start_with(WorkloadRateLimits::default()).await
    }

    /// [`TestAgent::start`] with per-caller rate limits.
    pub(crate) async fn start_with(limits: WorkloadRateLimits) -> TestAgent {
        let ca = TestCa::new("example.org");
        let (snapshots, rx) = watch::channel(None);
        let attestor = FakeAttestor::with(&["unix:uid:1000"]);
        let minter = Arc::new(FakeMinter {
            key: ca.jwt_key.clone(),
            entries: Mutex::new(HashMap::new()),
        });
        let cache = CacheHandle {
            snapshots: rx,
            jwt: minter.clone(),
            subscriptions: Default::default(),
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("api.sock");
        let incoming = UdsIncoming::bind(&socket).expect("bind");
        let api = WorkloadApi::new(cache, attestor.clone()).with_rate_limits(limits);
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(api.into_service())
                .serve_with_incoming(incoming)
                .await
                .expect("server");
        });
        TestAgent {
            ca,
            snapshots,
            attestor,
            minter,
            socket,
            _dir: dir,
            server,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.socket
    }

    /// Publishes a snapshot with our bundle, `svids` and `federated`, and
    /// teaches the minter their entries.
    pub(crate) fn publish(&self, svids: Vec<X509SvidRecord>, federated: Vec<Bundle>) {
        {
            let mut entries = self.minter.entries.lock().expect("lock");
            for svid in &svids {
                entries.insert(svid.entry_id.clone(), svid.spiffe_id.clone());
            }
        }
        self.snapshots.send_replace(Some(Arc::new(Snapshot {
            bundle: Arc::new(self.ca.bundle()),
            federated_bundles: federated.into_iter().map(Arc::new).collect(),
            svids: svids.into_iter().map(Arc::new).collect(),
            unsigned: vec![],
        })));
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.server.abort();
    }
}
