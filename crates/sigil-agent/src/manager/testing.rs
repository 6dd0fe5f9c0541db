//! Test doubles: a CA and an in-memory [`ServerApi`] that behaves like
//! sigil-server for the calls the manager makes (single-use join tokens,
//! authorized entries, batch issuance, refusals, outages).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sigil_crypto::CryptoError;
use sigil_crypto::key::{KeyType, Signer, SoftwareKey};
use sigil_crypto::x509::{CaSubject, X509SvidParams, self_signed_ca, sign_x509_svid};
use sigil_plugin::clock::{self, Clock, ManualClock};
use sigil_spiffe::bundle::JwtAuthority;
use sigil_spiffe::{Bundle, Selector, SpiffeId, TrustDomain};
use tonic::Status;

use sigil_plugin::nodeattestor::{AgentNodeAttestor, NodeAttestorError};

use super::api::{
    AgentIdentity, Attested, AuthorizedEntry, Change, ChangeStream, EntryPage, EntrySyncStream,
    IssuedJwt, IssuedX509, ServerApi, ServerTrust,
};
use super::store::CachedSvid;
use crate::cache::X509SvidRecord;

/// A throwaway CA.
pub struct TestCa {
    pub td: TrustDomain,
    pub cert: Vec<u8>,
    pub key: SoftwareKey,
}

impl TestCa {
    pub fn new(td: &str) -> Self {
        let td = TrustDomain::new(td).unwrap();
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(86400);
        let cert = self_signed_ca(
            &key,
            &td,
            &CaSubject::default(),
            now - day,
            now + day * 3650,
        )
        .unwrap();
        TestCa { td, cert, key }
    }

    pub fn sign(&self, id: &SpiffeId, spki: &[u8], not_before: i64, not_after: i64) -> Vec<u8> {
        sign_x509_svid(
            &self.cert,
            &self.key,
            &X509SvidParams::new(
                id.clone(),
                spki.to_vec(),
                clock::from_unix(not_before),
                clock::from_unix(not_after),
            ),
        )
        .unwrap()
    }

    /// A leaf valid from `nb` to `na` seconds relative to now.
    pub fn leaf(&self, path: &str, nb: i64, na: i64) -> (Vec<u8>, SoftwareKey) {
        let now = clock::unix(SystemTime::now());
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let id = self.td.id_with_path(path).unwrap();
        (
            self.sign(&id, key.public_key_der(), now + nb, now + na),
            key,
        )
    }

    pub fn cached_svid(&self, entry_id: &str, path: &str, nb: i64, na: i64) -> CachedSvid {
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let id = self.td.id_with_path(path).unwrap();
        let cert = self.sign(&id, key.public_key_der(), nb, na);
        CachedSvid {
            record: std::sync::Arc::new(X509SvidRecord {
                entry_id: entry_id.into(),
                spiffe_id: id,
                selectors: vec![Selector::parse("unix:uid:1").unwrap()],
                hint: String::new(),
                chain: vec![cert],
                key_pkcs8: key.to_pkcs8_der(),
                expires_at: na,
                federates_with: Vec::new(),
            }),
            issued_at: nb,
            revision_number: 0,
            dns_names: Vec::new(),
            x509_svid_ttl: 0,
        }
    }
}

/// An entry for `spiffe://example.org<path>`.
pub fn entry(id: &str, path: &str, selectors: &[&str]) -> AuthorizedEntry {
    AuthorizedEntry {
        id: id.into(),
        spiffe_id: SpiffeId::parse(&format!("spiffe://example.org{path}")).unwrap(),
        selectors: selectors
            .iter()
            .map(|s| Selector::parse(s).unwrap())
            .collect(),
        dns_names: Vec::new(),
        hint: String::new(),
        revision_number: 0,
        x509_svid_ttl: 0,
        jwt_svid_ttl: 0,
        store_svid: false,
        federates_with: Vec::new(),
        created_at: 0,
    }
}

/// `entry` federating with `tds`.
pub fn federated_entry(id: &str, path: &str, selectors: &[&str], tds: &[&str]) -> AuthorizedEntry {
    AuthorizedEntry {
        federates_with: tds.iter().map(|t| TrustDomain::new(t).unwrap()).collect(),
        ..entry(id, path, selectors)
    }
}

/// What `set_credentials` was last given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenCredentials {
    pub insecure: bool,
    pub roots: Vec<Vec<u8>>,
    pub leaf: Option<Vec<u8>>,
}

#[derive(Debug)]
pub struct FakeServer {
    ca_cert: Vec<u8>,
    ca_key: SoftwareKey,
    td: TrustDomain,
    clock: Arc<ManualClock>,
    reachable: AtomicBool,
    entries: Mutex<Vec<AuthorizedEntry>>,
    refused: Mutex<HashSet<String>>,
    tokens: Mutex<HashSet<String>>,
    bundle: Mutex<Bundle>,
    federated: Mutex<BTreeMap<TrustDomain, Bundle>>,
    failing_federated: Mutex<HashSet<TrustDomain>>,
    federated_fetches: Mutex<Vec<TrustDomain>>,
    agent_id: Mutex<Option<SpiffeId>>,
    creds: Mutex<Vec<SeenCredentials>>,
    batch_sizes: Mutex<Vec<usize>>,
    x509_issued: AtomicUsize,
    jwt_issued: AtomicUsize,
    renewals: AtomicUsize,
    attestations: AtomicUsize,
    /// Nodes the `fake_pop` attestor may attest.
    pop_nodes: Mutex<HashSet<String>>,
    /// The agent was attested by `fake_pop` (so it must re-attest, not renew).
    reattestable: AtomicBool,
    /// The agent was evicted: syncs are refused until it attests again.
    evicted: AtomicBool,
    /// `SyncAuthorizedEntries` page size (500, as SPIRE's server).
    entry_page_size: AtomicUsize,
    /// The ID batches agents asked for in sparse mode.
    entry_requests: Arc<Mutex<Vec<Vec<String>>>>,
    /// `SyncAuthorizedEntries` calls.
    entry_syncs: AtomicUsize,
    /// `GetBundle` calls.
    bundle_fetches: AtomicUsize,
    /// The change stream `watch_changes` hands out (once); without one the
    /// fake answers `Unimplemented`, as SPIRE does.
    watch: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Result<Change, Status>>>>,
}

/// The fake's `SyncAuthorizedEntries`: SPIRE's server behaviour (all
/// entries at once when they fit in a page, else revision pages, then the
/// requested entries in pages), over a snapshot of the entries.
struct FakeEntrySync {
    entries: Vec<AuthorizedEntry>,
    page_size: usize,
    pages: VecDeque<EntryPage>,
    requests: Arc<Mutex<Vec<Vec<String>>>>,
}

#[async_trait]
impl EntrySyncStream for FakeEntrySync {
    async fn request(&mut self, ids: Vec<String>) -> Result<(), Status> {
        self.requests.lock().unwrap().push(ids.clone());
        let wanted: Vec<_> = ids
            .iter()
            .filter_map(|id| self.entries.iter().find(|e| e.id == *id).cloned())
            .collect();
        let chunks: Vec<_> = wanted.chunks(self.page_size).collect();
        if chunks.is_empty() {
            self.pages.push_back(EntryPage::default());
        }
        for (i, chunk) in chunks.iter().enumerate() {
            self.pages.push_back(EntryPage {
                revisions: Vec::new(),
                entries: chunk.to_vec(),
                more: i + 1 != chunks.len(),
            });
        }
        Ok(())
    }

    async fn next_page(&mut self) -> Result<EntryPage, Status> {
        self.pages
            .pop_front()
            .ok_or_else(|| Status::unavailable("the fake server has nothing more to send"))
    }
}

/// A re-attestable test node attestor: the payload is the node name and
/// the server's one challenge must be answered with its bytes reversed.
#[derive(Debug)]
pub struct FakePopAgent(pub String);

/// Its attestation type.
pub const FAKE_POP: &str = "fake_pop";

#[async_trait]
impl AgentNodeAttestor for FakePopAgent {
    fn name(&self) -> &'static str {
        FAKE_POP
    }
    async fn payload(&self) -> Result<Vec<u8>, NodeAttestorError> {
        Ok(self.0.clone().into_bytes())
    }
    async fn respond(&self, challenge: &[u8]) -> Result<Vec<u8>, NodeAttestorError> {
        Ok(challenge.iter().rev().copied().collect())
    }
}

impl FakeServer {
    pub fn new(td: &str) -> Self {
        Self::with_clock(td, Arc::new(ManualClock::new(SystemTime::now())))
    }

    pub fn with_clock(td: &str, clock: Arc<ManualClock>) -> Self {
        let ca = TestCa::new(td);
        let mut bundle = Bundle::new(ca.td.clone());
        bundle.x509_authorities.push(ca.cert.clone());
        FakeServer {
            ca_cert: ca.cert,
            ca_key: ca.key,
            td: ca.td,
            clock,
            reachable: AtomicBool::new(true),
            entries: Mutex::new(Vec::new()),
            refused: Mutex::new(HashSet::new()),
            tokens: Mutex::new(HashSet::new()),
            bundle: Mutex::new(bundle),
            federated: Mutex::new(BTreeMap::new()),
            failing_federated: Mutex::new(HashSet::new()),
            federated_fetches: Mutex::new(Vec::new()),
            agent_id: Mutex::new(None),
            creds: Mutex::new(Vec::new()),
            batch_sizes: Mutex::new(Vec::new()),
            x509_issued: AtomicUsize::new(0),
            jwt_issued: AtomicUsize::new(0),
            renewals: AtomicUsize::new(0),
            attestations: AtomicUsize::new(0),
            pop_nodes: Mutex::new(HashSet::new()),
            reattestable: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            entry_page_size: AtomicUsize::new(500),
            entry_requests: Arc::new(Mutex::new(Vec::new())),
            entry_syncs: AtomicUsize::new(0),
            bundle_fetches: AtomicUsize::new(0),
            watch: Mutex::new(None),
        }
    }

    pub fn td(&self) -> TrustDomain {
        self.td.clone()
    }
    pub fn clock(&self) -> Arc<ManualClock> {
        self.clock.clone()
    }
    pub fn ca_cert(&self) -> Vec<u8> {
        self.ca_cert.clone()
    }
    pub fn bundle(&self) -> Bundle {
        self.bundle.lock().unwrap().clone()
    }
    pub fn x509_ttl(&self) -> u64 {
        3600
    }
    pub fn jwt_ttl(&self) -> u64 {
        300
    }
    pub fn agent_ttl(&self) -> u64 {
        3600
    }
    pub fn set_entries(&self, entries: Vec<AuthorizedEntry>) {
        *self.entries.lock().unwrap() = entries;
    }
    /// Sets the `SyncAuthorizedEntries` page size.
    pub fn set_entry_page_size(&self, n: usize) {
        self.entry_page_size.store(n, Ordering::SeqCst);
    }
    /// Takes the ID batches requested in sparse mode so far.
    pub fn take_entry_requests(&self) -> Vec<Vec<String>> {
        std::mem::take(&mut *self.entry_requests.lock().unwrap())
    }
    /// `SyncAuthorizedEntries` calls so far.
    pub fn entry_syncs(&self) -> usize {
        self.entry_syncs.load(Ordering::SeqCst)
    }
    /// `GetBundle` calls so far.
    pub fn bundle_fetches(&self) -> usize {
        self.bundle_fetches.load(Ordering::SeqCst)
    }
    /// Makes `watch_changes` answer with a stream fed through the returned
    /// sender.
    pub fn push_channel(&self) -> tokio::sync::mpsc::UnboundedSender<Result<Change, Status>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self.watch.lock().unwrap() = Some(rx);
        tx
    }
    pub fn refuse_entry(&self, id: &str) {
        self.refused.lock().unwrap().insert(id.into());
    }
    pub fn set_reachable(&self, up: bool) {
        self.reachable.store(up, Ordering::SeqCst);
    }
    pub fn add_pop_node(&self, node: &str) {
        self.pop_nodes.lock().unwrap().insert(node.into());
    }
    /// Deletes the agent, as `agent evict` does: its next call is refused
    /// with SPIRE's "not attested" reason.
    pub fn evict(&self) {
        self.evicted.store(true, Ordering::SeqCst);
    }
    pub fn add_token(&self, token: &str) {
        self.tokens.lock().unwrap().insert(token.into());
    }
    pub fn add_jwt_authority(&self, kid: &str) {
        self.bundle
            .lock()
            .unwrap()
            .jwt_authorities
            .push(JwtAuthority {
                key_id: kid.into(),
                public_key_der: self.ca_key.public_key_der().to_vec(),
                expires_at: None,
            });
    }
    /// Stores (or replaces) the federated bundle of `bundle.trust_domain`.
    pub fn set_federated_bundle(&self, bundle: Bundle) {
        self.federated
            .lock()
            .unwrap()
            .insert(bundle.trust_domain.clone(), bundle);
    }
    pub fn remove_federated_bundle(&self, td: &str) {
        self.federated
            .lock()
            .unwrap()
            .remove(&TrustDomain::new(td).unwrap());
    }
    /// Makes `GetFederatedBundle` for `td` fail with `Internal` (or work
    /// again).
    pub fn fail_federated(&self, td: &str, fail: bool) {
        let td = TrustDomain::new(td).unwrap();
        let mut failing = self.failing_federated.lock().unwrap();
        if fail {
            failing.insert(td);
        } else {
            failing.remove(&td);
        }
    }
    /// Every trust domain `GetFederatedBundle` was called for, in order.
    pub fn federated_fetches(&self) -> Vec<TrustDomain> {
        self.federated_fetches.lock().unwrap().clone()
    }
    pub fn x509_issued(&self) -> usize {
        self.x509_issued.load(Ordering::SeqCst)
    }
    pub fn jwt_issued(&self) -> usize {
        self.jwt_issued.load(Ordering::SeqCst)
    }
    pub fn renewals(&self) -> usize {
        self.renewals.load(Ordering::SeqCst)
    }
    pub fn attestations(&self) -> usize {
        self.attestations.load(Ordering::SeqCst)
    }
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.batch_sizes.lock().unwrap().clone()
    }
    pub fn last_credentials(&self) -> Option<SeenCredentials> {
        self.creds.lock().unwrap().last().cloned()
    }

    fn up(&self) -> Result<(), Status> {
        if self.reachable.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(Status::unavailable("connection refused"))
        }
    }

    fn issue(&self, id: &SpiffeId, csr: &[u8], ttl: u64) -> Result<Vec<Vec<u8>>, Status> {
        let csr = sigil_crypto::csr::parse_and_verify_csr(csr)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let now = self.clock.unix_now();
        let cert = sign_x509_svid(
            &self.ca_cert,
            &self.ca_key,
            &X509SvidParams::new(
                id.clone(),
                csr.public_key_der,
                clock::from_unix(now),
                clock::from_unix(now + ttl as i64),
            ),
        )
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(vec![cert])
    }
}

#[async_trait]
impl ServerApi for FakeServer {
    fn set_credentials(
        &self,
        trust: ServerTrust,
        identity: Option<AgentIdentity>,
    ) -> Result<(), CryptoError> {
        let (insecure, roots) = match trust {
            ServerTrust::Bundle(r) => (false, r),
            ServerTrust::InsecureBootstrap => (true, Vec::new()),
        };
        self.creds.lock().unwrap().push(SeenCredentials {
            insecure,
            roots,
            leaf: identity.map(|i| i.chain[0].clone()),
        });
        Ok(())
    }

    async fn attest_agent(
        &self,
        attestor: &dyn AgentNodeAttestor,
        payload: Vec<u8>,
        csr: Vec<u8>,
    ) -> Result<Attested, Status> {
        self.up()?;
        let name = String::from_utf8(payload).unwrap();
        let reattestable = match attestor.name() {
            "join_token" => {
                if !self.tokens.lock().unwrap().remove(&name) {
                    return Err(Status::invalid_argument(
                        "failed to attest: join token does not exist or has already been used",
                    ));
                }
                false
            }
            FAKE_POP => {
                let answer = attestor.respond(b"nonce").await.unwrap();
                if answer != b"ecnon" || !self.pop_nodes.lock().unwrap().contains(&name) {
                    return Err(Status::permission_denied("failed to attest: not this node"));
                }
                true
            }
            other => panic!("unexpected attestation type {other}"),
        };
        self.attestations.fetch_add(1, Ordering::SeqCst);
        let id = self
            .td
            .id_with_path(&format!("/spire/agent/{}/{name}", attestor.name()))
            .unwrap();
        *self.agent_id.lock().unwrap() = Some(id.clone());
        self.reattestable.store(reattestable, Ordering::SeqCst);
        self.evicted.store(false, Ordering::SeqCst);
        Ok(Attested {
            chain: self.issue(&id, &csr, self.agent_ttl())?,
            reattestable,
        })
    }

    async fn renew_agent(&self, csr: Vec<u8>) -> Result<Vec<Vec<u8>>, Status> {
        self.up()?;
        if self.reattestable.load(Ordering::SeqCst) {
            return Err(sigil_proto::status::permission_denied(
                sigil_proto::status::Reason::AgentMustReattest,
                "agent must reattest instead of renew",
            ));
        }
        let id = self
            .agent_id
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| Status::permission_denied("agent is not attested"))?;
        self.renewals.fetch_add(1, Ordering::SeqCst);
        self.issue(&id, &csr, self.agent_ttl())
    }

    async fn get_bundle(&self) -> Result<Bundle, Status> {
        self.up()?;
        self.bundle_fetches.fetch_add(1, Ordering::SeqCst);
        Ok(self.bundle())
    }

    async fn watch_changes(&self) -> Result<ChangeStream, Status> {
        self.up()?;
        match self.watch.lock().unwrap().take() {
            Some(rx) => Ok(Box::pin(
                tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
            )),
            None => Err(Status::unimplemented("the server does not push changes")),
        }
    }

    async fn get_federated_bundle(&self, td: &TrustDomain) -> Result<Bundle, Status> {
        self.up()?;
        self.federated_fetches.lock().unwrap().push(td.clone());
        if *td == self.td {
            return Err(Status::invalid_argument(
                "getting a federated bundle for the server's own trust domain is not allowed",
            ));
        }
        if self.failing_federated.lock().unwrap().contains(td) {
            return Err(Status::internal("datastore unavailable"));
        }
        self.federated
            .lock()
            .unwrap()
            .get(td)
            .cloned()
            .ok_or_else(|| Status::not_found("bundle not found"))
    }

    async fn sync_authorized_entries(&self) -> Result<Box<dyn EntrySyncStream>, Status> {
        self.up()?;
        if self.evicted.load(Ordering::SeqCst) {
            return Err(sigil_proto::status::permission_denied(
                sigil_proto::status::Reason::AgentNotAttested,
                "agent is not attested",
            ));
        }
        self.entry_syncs.fetch_add(1, Ordering::SeqCst);
        let mut entries = self.entries.lock().unwrap().clone();
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        let page_size = self.entry_page_size.load(Ordering::SeqCst);
        let mut pages = VecDeque::new();
        if entries.len() <= page_size {
            pages.push_back(EntryPage {
                entries: entries.clone(),
                ..EntryPage::default()
            });
        } else {
            let chunks: Vec<_> = entries.chunks(page_size).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                pages.push_back(EntryPage {
                    revisions: chunk.iter().map(|e| (e.id.clone(), e.revision())).collect(),
                    entries: Vec::new(),
                    more: i + 1 != chunks.len(),
                });
            }
        }
        Ok(Box::new(FakeEntrySync {
            entries,
            page_size,
            pages,
            requests: self.entry_requests.clone(),
        }))
    }

    async fn batch_new_x509_svid(
        &self,
        csrs: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<Result<IssuedX509, Status>>, Status> {
        self.up()?;
        self.batch_sizes.lock().unwrap().push(csrs.len());
        let entries = self.entries.lock().unwrap().clone();
        Ok(csrs
            .into_iter()
            .map(|(id, csr)| {
                if self.refused.lock().unwrap().contains(&id) {
                    return Err(Status::not_found("entry not found or not authorized"));
                }
                let entry = entries
                    .iter()
                    .find(|e| e.id == id)
                    .ok_or_else(|| Status::not_found("entry not found or not authorized"))?;
                let chain = self.issue(&entry.spiffe_id, &csr, self.x509_ttl())?;
                self.x509_issued.fetch_add(1, Ordering::SeqCst);
                Ok(IssuedX509 {
                    chain,
                    expires_at: self.clock.unix_now() + self.x509_ttl() as i64,
                })
            })
            .collect())
    }

    async fn new_jwt_svid(&self, entry_id: &str, audience: &[String]) -> Result<IssuedJwt, Status> {
        self.up()?;
        if self.refused.lock().unwrap().contains(entry_id) {
            return Err(Status::not_found("entry not found or not authorized"));
        }
        let n = self.jwt_issued.fetch_add(1, Ordering::SeqCst);
        let now = self.clock.unix_now();
        Ok(IssuedJwt {
            token: format!("jwt-{n}-{}", audience.join(",")),
            spiffe_id: self.td.id_with_path(&format!("/{entry_id}")).unwrap(),
            issued_at: now,
            expires_at: now + self.jwt_ttl() as i64,
            hint: String::new(),
        })
    }
}
