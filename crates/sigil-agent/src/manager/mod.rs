//! The manager: the agent's side of the conversation with the server.
//!
//! It owns the agent's identity (node attestation, reuse of a stored agent
//! SVID, rotation at half life: [`attest`]), the connection to the server
//! ([`client`]), the periodic sync that keeps workload X509-SVIDs fresh
//! ([`sync`]), JWT-SVID minting with a cache ([`jwt`]) and what survives a
//! restart ([`store`]). It produces the [`Snapshot`]s the Workload API
//! serves, through the `watch` channel in [`CacheHandle`], and publishes
//! only when something changed.
//!
//! The manager never decides which workload gets what: it only keeps the
//! SVIDs of the entries the server authorized, with their selectors. While
//! the server is unreachable it keeps serving what it has, dropping SVIDs
//! as they expire.

pub mod api;
pub mod attest;
pub mod client;
pub mod jwt;
pub mod lru;
pub mod store;
pub mod sync;

#[cfg(test)]
pub(crate) mod testing;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sigil_crypto::key::KeyType;
use sigil_plugin::clock::Clock;
use sigil_plugin::keymanager::{KeyManager, KeyManagerError};
use sigil_plugin::nodeattestor::{AgentNodeAttestor, NodeAttestorError};
use sigil_spiffe::{Bundle, SpiffeId, TrustDomain};
use sigil_telemetry::metrics::{CallCounter, code_name};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use self::api::{AgentIdentity, AuthorizedEntry, Change, EntryChanges, ServerApi, ServerTrust};
use self::attest::{AgentSvid, Retry, retry_transient};
use self::jwt::CachingJwtMinter;
use self::store::{DataDir, StoreError};
use self::sync::{Pushed, SyncState, should_rotate};
use crate::cache::{CacheHandle, JwtMinter, Snapshot, Subscriptions, X509SvidRecord};
use crate::config::{AgentConfig, BundleFormat, TrustBundleSource};

/// How long the first sync after start may hold up [`Manager::start`] when
/// the agent has no cached SVIDs to serve yet.
const FIRST_SYNC_WAIT: Duration = Duration::from_secs(5);

/// Longest wait between sync attempts while they fail.
const MAX_SYNC_BACKOFF: Duration = Duration::from_secs(60);

/// What the manager needs from the configuration.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Our trust domain.
    pub trust_domain: TrustDomain,
    /// `host:port` of the server, for messages.
    pub server: String,
    /// Where `agent_svid.der`, `bundle.der` and `svid_cache/` live.
    pub data_dir: PathBuf,
    /// How the server is authenticated before the agent has a bundle.
    pub trust_bundle: TrustBundleSource,
    /// The node attestor (agent half).
    pub node_attestor: Arc<dyn AgentNodeAttestor>,
    /// Key type of workload X509-SVIDs.
    pub workload_key_type: KeyType,
    /// Time between syncs.
    pub sync_interval: Duration,
    /// How long the first contact with the server is retried.
    pub bootstrap_timeout: Duration,
    /// Most X509-SVIDs held beyond those of callers being served
    /// (`x509_svid_cache_max_size`).
    pub x509_svid_cache_max_size: usize,
    /// Most JWT-SVIDs held (`jwt_svid_cache_max_size`).
    pub jwt_svid_cache_max_size: usize,
}

impl ManagerConfig {
    /// The manager's part of an agent configuration, with the node
    /// attestor from its catalog.
    pub fn from_agent_config(cfg: &AgentConfig, node_attestor: Arc<dyn AgentNodeAttestor>) -> Self {
        ManagerConfig {
            trust_domain: cfg.trust_domain.clone(),
            server: format!("{}:{}", cfg.server_address, cfg.server_port),
            data_dir: cfg.data_dir.clone(),
            trust_bundle: cfg.trust_bundle.clone(),
            node_attestor,
            workload_key_type: cfg.workload_key_type,
            sync_interval: cfg.sync_interval,
            bootstrap_timeout: cfg.bootstrap_timeout,
            x509_svid_cache_max_size: cfg.x509_svid_cache_max_size,
            jwt_svid_cache_max_size: cfg.jwt_svid_cache_max_size,
        }
    }
}

/// Why the manager could not start (or an operation failed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// The bootstrap trust bundle is unusable.
    #[error("load bundle: {0}")]
    Bundle(String),
    /// A file in `data_dir` could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The KeyManager failed.
    #[error("KeyManager: {0}")]
    KeyManager(#[from] KeyManagerError),
    /// Building a CSR or TLS configuration failed.
    #[error(transparent)]
    Crypto(#[from] sigil_crypto::CryptoError),
    /// The agent must attest but its node attestor has no evidence to
    /// offer (no join token, no token file).
    #[error("no usable agent SVID in {} and {reason}", data_dir.display())]
    NoEvidence {
        /// The data directory looked in.
        data_dir: PathBuf,
        /// What the attestor lacks.
        reason: NodeAttestorError,
    },
    /// The node attestor failed.
    #[error("node attestor: {0}")]
    NodeAttestor(NodeAttestorError),
    /// The server requires this agent to attest again.
    #[error("the server requires this agent to attest again: {message}")]
    MustReattest {
        /// The server's message.
        message: String,
    },
    /// The agent SVID expired (a long outage) and cannot be renewed.
    #[error(
        "agent SVID expired at {} (unix time {expired_at}); the agent must attest again",
        utc_rfc3339(*.expired_at)
    )]
    SvidExpired {
        /// When it expired.
        expired_at: i64,
    },
    /// The server refused node attestation.
    #[error("node attestation failed: the server refused: {message} (code {code:?})")]
    AttestationRefused {
        /// The gRPC code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// The server could not be reached in time.
    #[error("{what} failed: server {server} unreachable for {elapsed:.0?}: {last}")]
    ServerUnreachable {
        /// `host:port`.
        server: String,
        /// What was being attempted.
        what: String,
        /// How long it was tried.
        elapsed: Duration,
        /// The last error.
        last: String,
    },
    /// The server answered a bootstrap call with an error.
    #[error("{what} failed: the server refused: {message} (code {code:?})")]
    ServerRefused {
        /// What was being attempted.
        what: String,
        /// The gRPC code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// The server issued an agent SVID the agent cannot use.
    #[error("the server returned an unusable agent SVID: {0}")]
    BadAgentSvid(String),
    /// The agent SVID does not chain to the bundle the server sent.
    #[error("the agent SVID does not chain to the server's trust bundle: {0}")]
    SvidNotTrusted(String),
    /// A sync with the server failed (the last snapshot stays in use).
    #[error("sync with server {server} failed: {message} (code {code:?})")]
    SyncFailed {
        /// `host:port`.
        server: String,
        /// The gRPC code.
        code: tonic::Code,
        /// The error.
        message: String,
    },
    /// Renewing the agent SVID failed.
    #[error("agent SVID rotation failed: {message} (code {code:?})")]
    Rotation {
        /// The gRPC code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
}

/// A running manager. Dropping it stops its background work.
#[derive(Debug)]
pub struct Manager {
    shared: Arc<Shared>,
    jwt: Arc<CachingJwtMinter>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    cfg: ManagerConfig,
    api: Arc<dyn ServerApi>,
    km: Arc<dyn KeyManager>,
    clock: Arc<dyn Clock>,
    data: DataDir,
    jwt: Arc<CachingJwtMinter>,
    /// The callers being served X509-SVIDs (shared with the Workload API).
    subscriptions: Arc<Subscriptions>,
    notify: Notify,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    /// Set when the agent must stop (it was banned).
    fatal: watch::Sender<Option<String>>,
    /// The agent SVID and the roots the server is verified against.
    creds: Mutex<Creds>,
    state: tokio::sync::Mutex<SyncState>,
    /// What `svid_cache/` holds, as far as this process knows.
    persisted: tokio::sync::Mutex<Persisted>,
    /// Unix seconds of the last successful sync; 0 before the first.
    last_sync: AtomicI64,
    /// How many times the agent attested again since start.
    reattestations: std::sync::atomic::AtomicU64,
}

/// What the SVID cache directory holds: publishing writes only what
/// differs (records are compared by pointer: a changed SVID is a new one).
#[derive(Debug, Default)]
struct Persisted {
    /// The bundles last written; `None` before the first write, which also
    /// removes whatever SVID files the agent no longer holds.
    bundles: Option<(Arc<Bundle>, Vec<Arc<Bundle>>)>,
    svids: HashMap<String, Arc<X509SvidRecord>>,
    /// The cache was read from the single-file format of earlier versions.
    legacy: bool,
}

#[derive(Debug, Clone)]
struct Creds {
    agent: AgentSvid,
    roots: Vec<Vec<u8>>,
    /// Whether the server lets this agent attest again by itself (then it
    /// re-attests instead of renewing).
    reattestable: bool,
}

impl Manager {
    /// Establishes the agent's identity and starts syncing.
    ///
    /// Reuses the stored agent SVID when it is valid and its key is in the
    /// KeyManager; otherwise attests with the join token (retrying while the
    /// server is unreachable, for up to `bootstrap_timeout`). Loads the
    /// persisted SVID cache so workloads are served at once. Returns when a
    /// first snapshot is published.
    pub async fn start(
        cfg: ManagerConfig,
        api: Arc<dyn ServerApi>,
        key_manager: Arc<dyn KeyManager>,
        clock: Arc<dyn Clock>,
    ) -> Result<Manager, ManagerError> {
        let data = DataDir::new(&cfg.data_dir);
        let td = cfg.trust_domain.clone();

        let stored_roots = data.load_bundle()?;
        let (bootstrap_trust, mut bundle) = match &stored_roots {
            Some(roots) => {
                tracing::info!(trust_domain = %td, "Bundle loaded");
                let mut b = Bundle::new(td.clone());
                b.x509_authorities = roots.clone();
                (ServerTrust::Bundle(roots.clone()), Some(b))
            }
            None => match &cfg.trust_bundle {
                TrustBundleSource::Path { path, format } => {
                    let b = load_bootstrap_bundle(path, *format, &td)?;
                    (ServerTrust::Bundle(b.x509_authorities.clone()), None)
                }
                TrustBundleSource::InsecureBootstrap => {
                    tracing::warn!(
                        "Insecure bootstrap enabled: the server's identity is not verified until the agent has a trust bundle"
                    );
                    (ServerTrust::InsecureBootstrap, None)
                }
                TrustBundleSource::Stored => {
                    return Err(ManagerError::Bundle(format!(
                        "no trust bundle stored in {} and none configured: trust_bundle_path must be configured unless insecure_bootstrap is set",
                        cfg.data_dir.display()
                    )));
                }
            },
        };

        let (agent, reattestable) =
            match attest::load_stored(&data, key_manager.as_ref(), &td, clock.as_ref()).await? {
                Some(agent) => (agent, data.load_reattestable()?),
                None => {
                    tracing::info!("SVID is not found. Starting node attestation");
                    api.set_credentials(bootstrap_trust.clone(), None)?;
                    let call = CallCounter::start("node_attestor_new_svid");
                    let attested = attest::attest(
                        api.as_ref(),
                        key_manager.as_ref(),
                        &td,
                        cfg.node_attestor.as_ref(),
                        attest::KEY_A,
                        &cfg.server,
                        cfg.bootstrap_timeout,
                    )
                    .await;
                    call.finish_result(&attested, manager_error_status);
                    let (agent, reattestable) = attested.map_err(|e| match e {
                        ManagerError::NodeAttestor(reason @ NodeAttestorError::NoEvidence(_)) => {
                            ManagerError::NoEvidence {
                                data_dir: cfg.data_dir.clone(),
                                reason,
                            }
                        }
                        other => other,
                    })?;
                    data.store_agent_svid(&agent.chain)?;
                    data.store_reattestable(reattestable)?;
                    (agent, reattestable)
                }
            };
        api.set_credentials(
            bootstrap_trust.clone(),
            Some(AgentIdentity {
                chain: agent.chain.clone(),
                key: agent.key.clone(),
            }),
        )?;

        if bundle.is_none() {
            // First contact: take the server's bundle, and make sure our own
            // SVID chains to it before trusting it.
            let fetched = retry_transient(
                &cfg.server,
                "fetching the trust bundle",
                cfg.bootstrap_timeout,
                || api.get_bundle(),
            )
            .await
            .map_err(|e| match e {
                Retry::GaveUp(e) => e,
                Retry::Refused(s) => ManagerError::ServerRefused {
                    what: "fetching the trust bundle".into(),
                    code: s.code(),
                    message: s.message().to_owned(),
                },
            })?;
            sigil_crypto::x509::verify_chain(&agent.chain, &fetched.x509_authorities, clock.now())
                .map_err(|e| ManagerError::SvidNotTrusted(e.to_string()))?;
            data.store_bundle(&fetched.x509_authorities)?;
            bundle = Some(fetched);
        }
        let mut bundle = bundle.expect("the bundle was loaded or fetched above");
        let roots = bundle.x509_authorities.clone();
        api.set_credentials(
            ServerTrust::Bundle(roots.clone()),
            Some(AgentIdentity {
                chain: agent.chain.clone(),
                key: agent.key.clone(),
            }),
        )?;

        let mut persisted = Persisted::default();
        let (federated, cached) = match data.load_svid_cache(&td, clock.unix_now()) {
            Ok(loaded) => {
                persisted.legacy = loaded.legacy;
                if !loaded.legacy {
                    persisted.svids = loaded
                        .svids
                        .iter()
                        .map(|s| (s.record.entry_id.clone(), s.record.clone()))
                        .collect();
                }
                // The stored full bundle carries JWT authorities too; prefer it
                // while its X.509 authorities agree with bundle.der.
                if let Some(b) = loaded.bundle
                    && b.x509_authorities == bundle.x509_authorities
                {
                    bundle = b;
                }
                if !loaded.svids.is_empty() {
                    tracing::info!(count = loaded.svids.len(), "Loaded cached X509-SVIDs");
                }
                if !loaded.federated.is_empty() {
                    tracing::info!(
                        count = loaded.federated.len(),
                        "Loaded cached federated bundles"
                    );
                }
                (loaded.federated, loaded.svids)
            }
            Err(e) => {
                tracing::warn!(error = %e, "Ignoring the stored SVID cache");
                (Vec::new(), Vec::new())
            }
        };
        let has_cached = !cached.is_empty();
        let subscriptions = Arc::new(Subscriptions::default());
        let state = SyncState::new(td.clone(), bundle, federated, cached)
            .with_svid_cache(cfg.x509_svid_cache_max_size, subscriptions.clone());
        let (snapshots, _) = watch::channel(Some(Arc::new(state.snapshot())));
        let jwt = Arc::new(
            CachingJwtMinter::new(api.clone(), clock.clone())
                .with_max_size(cfg.jwt_svid_cache_max_size),
        );

        let shared = Arc::new(Shared {
            cfg,
            api,
            km: key_manager,
            clock,
            data,
            jwt: jwt.clone(),
            subscriptions,
            notify: Notify::new(),
            fatal: watch::channel(None).0,
            snapshots,
            creds: Mutex::new(Creds {
                agent,
                roots,
                reattestable,
            }),
            state: tokio::sync::Mutex::new(state),
            persisted: tokio::sync::Mutex::new(persisted),
            last_sync: AtomicI64::new(0),
            reattestations: std::sync::atomic::AtomicU64::new(0),
        });

        // With cached SVIDs, serve them now and sync in the background.
        let first_ok = if has_cached {
            false
        } else {
            match tokio::time::timeout(FIRST_SYNC_WAIT, shared.tick()).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "First sync failed; will retry");
                    false
                }
                Err(_) => {
                    tracing::warn!("First sync is taking long; continuing in the background");
                    false
                }
            }
        };
        let sync = tokio::spawn(run_loop(shared.clone(), !first_ok));
        let watch = tokio::spawn(watch_loop(shared.clone()));
        let signing = tokio::spawn(signing_loop(shared.clone()));
        Ok(Manager {
            shared,
            jwt,
            tasks: Mutex::new(vec![sync, watch, signing]),
        })
    }

    /// What the Workload API serves from.
    pub fn cache_handle(&self) -> CacheHandle {
        CacheHandle {
            snapshots: self.shared.snapshots.subscribe(),
            jwt: self.jwt.clone() as Arc<dyn JwtMinter>,
            subscriptions: self.shared.subscriptions.clone(),
        }
    }

    /// Receives a reason when the agent must stop (banned, or it must attest again).
    pub fn fatal(&self) -> watch::Receiver<Option<String>> {
        self.shared.fatal.subscribe()
    }

    /// Asks for a sync now (the hook for server push). Several pokes while
    /// a sync runs cause one more sync.
    pub fn trigger_sync(&self) {
        self.shared.notify.notify_one();
    }

    /// The agent's SPIFFE ID.
    pub fn agent_id(&self) -> SpiffeId {
        self.shared.creds().agent.spiffe_id
    }

    /// The agent SVID's expiry, unix seconds.
    pub fn agent_svid_expires_at(&self) -> i64 {
        self.shared.creds().agent.not_after
    }

    /// The agent SVID's certificate chain, leaf first, DER.
    pub fn agent_svid_chain(&self) -> Vec<Vec<u8>> {
        self.shared.creds().agent.chain
    }

    /// When the last sync with the server succeeded, unix seconds; `None`
    /// before the first (an agent serving a cached SVID set has not
    /// synced yet).
    pub fn last_sync_success(&self) -> Option<i64> {
        match self.shared.last_sync.load(Ordering::SeqCst) {
            0 => None,
            t => Some(t),
        }
    }

    /// How many times the agent attested again by itself since start.
    pub fn reattestations(&self) -> u64 {
        self.shared.reattestations.load(Ordering::SeqCst)
    }

    /// Whether the server lets this agent re-attest by itself.
    pub fn reattestable(&self) -> bool {
        self.shared.creds().reattestable
    }

    /// How many JWT-SVIDs the agent holds cached.
    pub fn cached_jwt_svids(&self) -> usize {
        self.jwt.len()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.shared.snapshots.borrow().clone()
    }

    /// Runs one sync (agent SVID rotation if due, then bundle, entries and
    /// SVIDs) and waits for it.
    pub async fn sync_now(&self) -> Result<(), ManagerError> {
        self.shared.tick().await
    }

    /// Stops background work. The last snapshot stays readable.
    pub fn shutdown(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Shared {
    fn creds(&self) -> Creds {
        self.creds.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_creds(&self, creds: Creds) -> Result<(), ManagerError> {
        self.api.set_credentials(
            ServerTrust::Bundle(creds.roots.clone()),
            Some(AgentIdentity {
                chain: creds.agent.chain.clone(),
                key: creds.agent.key.clone(),
            }),
        )?;
        *self.creds.lock().unwrap_or_else(|p| p.into_inner()) = creds;
        Ok(())
    }

    /// Makes sure the agent has a usable SVID (re-attesting when the server
    /// or an expired SVID demands it and the attestor can), rotates it if
    /// due, then syncs; publishes and persists whatever changed, even when
    /// a step failed.
    async fn tick(&self) -> Result<(), ManagerError> {
        let creds = self.creds();
        if self.clock.unix_now() >= creds.agent.not_after {
            // A long outage outlived the agent SVID: renewing needs a valid
            // one, so only fresh attestation helps.
            let expired = ManagerError::SvidExpired {
                expired_at: creds.agent.not_after,
            };
            if !creds.reattestable {
                self.prune_and_publish().await;
                self.stop(
                    "Agent SVID expired and the node attestor cannot re-attest: removing SVID and shutting down",
                    format!("{expired}; it cannot re-attest by itself: restart it with new attestation evidence (a new join token)"),
                );
                return Err(expired);
            }
            tracing::warn!(
                expired_at = creds.agent.not_after,
                "Agent SVID expired; re-attesting"
            );
            if let Err(e) = self.reattest().await {
                self.prune_and_publish().await;
                return Err(e);
            }
        }

        let rotation = self.rotate_agent_if_due().await;
        if let Err(e) = &rotation {
            tracing::error!(error = %e, "Could not rotate the agent SVID; will retry");
        }
        match self.sync_and_publish().await {
            Err(ManagerError::MustReattest { message }) => {
                if !self.creds().reattestable {
                    self.stop(
                        "Agent needs to re-attest, which its node attestor cannot do: removing SVID and shutting down",
                        format!(
                            "the server requires this agent to attest again ({message}); its node attestor cannot re-attest by itself: restart it with new attestation evidence (a new join token)"
                        ),
                    );
                    return Err(ManagerError::MustReattest { message });
                }
                tracing::warn!(reason = %message, "The server requires re-attestation; re-attesting");
                self.reattest().await?;
                self.sync_and_publish().await?;
                rotation
            }
            Err(e) => Err(e),
            Ok(()) => rotation,
        }
    }

    /// Signs the X509-SVIDs callers being served need and the agent does
    /// not hold (beyond the cache size if need be), from the entries of the
    /// last sync, then publishes.
    async fn sign_on_demand(&self) {
        let mut state = self.state.lock().await;
        let mut outcome = sync::SyncOutcome::default();
        let call = CallCounter::start("manager_sign_on_demand");
        let result = state
            .refresh_svids(
                self.api.as_ref(),
                self.clock.as_ref(),
                self.cfg.workload_key_type,
                false,
                &mut outcome,
            )
            .await;
        call.finish_result(&result, |s| code_name(s.code() as i32).to_owned());
        if let Err(status) = &result {
            tracing::warn!(code = ?status.code(), error = %status.message(), "Signing X509-SVIDs on demand failed");
        } else if outcome.issued + outcome.evicted > 0 {
            tracing::debug!(?outcome, "Signed X509-SVIDs on demand");
        }
        state.prune_expired(self.clock.unix_now());
        record_cache_metrics(&state, self.clock.unix_now());
        self.publish(&state).await;
    }

    /// Drops expired SVIDs and publishes, for ticks that cannot reach the
    /// server at all.
    async fn prune_and_publish(&self) {
        let mut state = self.state.lock().await;
        state.prune_expired(self.clock.unix_now());
        self.publish(&state).await;
    }

    /// Attests again with the node attestor, with a new key in the other
    /// slot, over a connection without the (possibly expired or revoked)
    /// agent SVID. On failure the old credentials stay in place.
    async fn reattest(&self) -> Result<(), ManagerError> {
        let creds = self.creds();
        self.api
            .set_credentials(ServerTrust::Bundle(creds.roots.clone()), None)?;
        let call = CallCounter::start("node_attestor_new_svid");
        let attested = attest::attest(
            self.api.as_ref(),
            self.km.as_ref(),
            &self.cfg.trust_domain,
            self.cfg.node_attestor.as_ref(),
            creds.agent.next_key_id(),
            &self.cfg.server,
            Duration::ZERO,
        )
        .await;
        call.finish_result(&attested, manager_error_status);
        let (agent, reattestable) = match attested {
            Ok(a) => a,
            Err(e) => {
                self.set_creds(creds)?;
                return Err(e);
            }
        };
        self.data.store_agent_svid(&agent.chain)?;
        self.data.store_reattestable(reattestable)?;
        self.reattestations.fetch_add(1, Ordering::SeqCst);
        self.set_creds(Creds {
            agent,
            roots: creds.roots,
            reattestable,
        })
    }

    /// One sync with the server: bundle, entries, SVIDs; then publishes
    /// and persists what changed. A banned agent stops here; a refusal
    /// that calls for re-attestation is returned as
    /// [`ManagerError::MustReattest`] for [`Shared::tick`] to handle.
    async fn sync_and_publish(&self) -> Result<(), ManagerError> {
        self.run_step(Step::Full).await
    }

    /// Takes one message of the server's change stream. Entry changes and
    /// bundles are applied to the state, and once a group of entry changes
    /// is complete the SVID part of a sync runs, without fetching entries
    /// or the bundle; a bare signal (older servers), a `resync` (a
    /// federated bundle changed) or changes the agent cannot apply ask the
    /// sync loop for a full sync.
    async fn push(&self, change: Change) {
        if change.is_bare_signal() || change.resync {
            self.notify.notify_one();
        }
        if change.entries.is_none() && change.bundle.is_none() {
            return;
        }
        let step = Step::Push {
            entries: change.entries,
            bundle: change.bundle,
        };
        if let Err(e) = self.run_step(step).await {
            tracing::warn!(error = %e, "Applying pushed changes failed; syncing");
            self.notify.notify_one();
        }
    }

    /// A full sync, or the application of pushed changes; then publishes
    /// and persists what changed (see [`Shared::sync_and_publish`]).
    async fn run_step(&self, step: Step) -> Result<(), ManagerError> {
        let mut state = self.state.lock().await;
        // Entry IDs held before this step; `None` before the first sync.
        let known: Option<BTreeSet<String>> =
            state.entries.as_ref().map(|e| e.keys().cloned().collect());
        let full = matches!(step, Step::Full);
        let result = match step {
            Step::Full => {
                // SPIRE's sync call counter; its `status` tells failed syncs apart.
                let call = CallCounter::start("manager_sync_fetch_entries_updates");
                let result = state
                    .sync(
                        self.api.as_ref(),
                        self.clock.as_ref(),
                        self.cfg.workload_key_type,
                    )
                    .await;
                call.finish_result(&result, |s| code_name(s.code() as i32).to_owned());
                result
            }
            Step::Push { entries, bundle } => {
                let mut apply = false;
                if let Some(bundle) = bundle {
                    match state.push_bundle(bundle) {
                        Ok(changed) => apply |= changed,
                        Err(e) => tracing::warn!(error = %e.message(), "Ignoring pushed bundle"),
                    }
                }
                if let Some(page) = entries {
                    match state.push_entry_changes(page) {
                        Pushed::Applied => apply = true,
                        Pushed::Pending => {}
                        Pushed::NeedsSync => self.notify.notify_one(),
                    }
                }
                if !apply {
                    return Ok(());
                }
                state
                    .refresh(
                        self.api.as_ref(),
                        self.clock.as_ref(),
                        self.cfg.workload_key_type,
                    )
                    .await
            }
        };
        state.prune_expired(self.clock.unix_now());
        record_cache_metrics(&state, self.clock.unix_now());
        if result.is_ok()
            && let Some(age) = state
                .entries
                .as_ref()
                .and_then(|e| newest_new_entry_age(known.as_ref(), e, self.clock.unix_now()))
        {
            metrics::gauge!("entry_propagation_seconds").set(age as f64);
        }

        let roots = &state.bundle.x509_authorities;
        let creds = self.creds();
        if *roots != creds.roots && !roots.is_empty() {
            if let Err(e) = self.data.store_bundle(roots) {
                tracing::warn!(error = %e, "Could not store the trust bundle");
            }
            self.set_creds(Creds {
                roots: roots.clone(),
                ..creds
            })?;
        }

        self.publish(&state).await;
        if result.is_ok() && full {
            self.last_sync
                .store(self.clock.unix_now(), Ordering::SeqCst);
        }
        if result.is_ok()
            && let Some(entries) = &state.entries
        {
            self.jwt
                .retain_entries(&entries.keys().map(String::as_str).collect::<BTreeSet<_>>());
        }
        drop(state);

        match result {
            Ok(outcome) => {
                if outcome.issued + outcome.dropped > 0 || outcome.federated_changed {
                    tracing::debug!(?outcome, "Sync finished");
                }
                Ok(())
            }
            Err(status) => {
                use sigil_proto::status::Reason;
                match sigil_proto::status::permission_denied_reason(&status) {
                    Some(Reason::AgentBanned) => self.stop(
                        "Agent is banned: removing SVID and shutting down",
                        format!("the server banned this agent: {}", status.message()),
                    ),
                    // SPIRE re-attests for these when it can.
                    Some(
                        Reason::AgentNotAttested
                        | Reason::AgentNotActive
                        | Reason::AgentExpired
                        | Reason::AgentMustReattest,
                    ) => {
                        return Err(ManagerError::MustReattest {
                            message: status.message().to_owned(),
                        });
                    }
                    _ => {}
                }
                Err(ManagerError::SyncFailed {
                    server: self.cfg.server.clone(),
                    code: status.code(),
                    message: status.message().to_owned(),
                })
            }
        }
    }

    /// The server refuses this agent for good (banned, or it must attest
    /// again): forget the agent SVID, as SPIRE does, so a restart attests
    /// afresh, and tell whoever runs the agent to stop with `reason`.
    fn stop(&self, log: &str, reason: String) {
        tracing::error!(reason = %reason, "{log}");
        let svid = self.cfg.data_dir.join("agent_svid.der");
        if let Err(e) = std::fs::remove_file(&svid)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, path = %svid.display(), "Could not remove the agent SVID");
        }
        self.fatal.send_replace(Some(reason));
    }

    /// Rotates the agent SVID at half life: re-attests when the agent may
    /// (the server refuses renewal to such agents, as SPIRE does),
    /// otherwise renews it.
    async fn rotate_agent_if_due(&self) -> Result<(), ManagerError> {
        let creds = self.creds();
        let now = self.clock.unix_now();
        if !should_rotate(now, creds.agent.not_before, creds.agent.not_after) {
            return Ok(());
        }
        let call = CallCounter::start("agent_svid_rotate");
        let result = self.rotate_agent(creds).await;
        call.finish_result(&result, manager_error_status);
        result
    }

    async fn rotate_agent(&self, creds: Creds) -> Result<(), ManagerError> {
        if creds.reattestable {
            tracing::debug!("Rotating agent SVID by re-attesting");
            return self.reattest().await;
        }
        let renewed = attest::renew(
            self.api.as_ref(),
            self.km.as_ref(),
            &creds.agent,
            &self.cfg.trust_domain,
        )
        .await?;
        self.data.store_agent_svid(&renewed.chain)?;
        self.set_creds(Creds {
            agent: renewed,
            ..creds
        })
    }

    async fn publish(&self, state: &SyncState) {
        let snapshot = state.snapshot();
        let changed = self.snapshots.send_if_modified(|current| {
            if current.as_deref() == Some(&snapshot) {
                false
            } else {
                *current = Some(Arc::new(snapshot.clone()));
                true
            }
        });
        // The first snapshot is persisted even if unchanged, so the stored
        // bundle carries the JWT authorities from the start.
        let mut persisted = self.persisted.lock().await;
        if !changed && persisted.bundles.is_some() {
            return;
        }
        let federated: Vec<Arc<Bundle>> = state.federated.values().cloned().collect();
        let bundles = (state.bundle.clone(), federated);
        let first = persisted.bundles.is_none();
        let write_bundles = persisted.bundles.as_ref() != Some(&bundles);
        let writes: Vec<store::CachedSvid> = state
            .svids
            .values()
            .filter(|s| {
                persisted
                    .svids
                    .get(&s.record.entry_id)
                    .is_none_or(|r| !Arc::ptr_eq(r, &s.record))
            })
            .cloned()
            .collect();
        let removals: Vec<String> = persisted
            .svids
            .keys()
            .filter(|id| !state.svids.contains_key(*id))
            .cloned()
            .collect();
        let held: Vec<String> = if first {
            state.svids.keys().cloned().collect()
        } else {
            Vec::new()
        };
        let legacy = persisted.legacy;
        let data = self.data.clone();
        let td = state.td.clone();
        let to_write = bundles.clone();
        let written = tokio::task::spawn_blocking(move || {
            let mut report = PersistReport::default();
            if write_bundles {
                let federated: Vec<&Bundle> = to_write.1.iter().map(|b| &**b).collect();
                report.bundles = data.store_svid_cache_bundles(&td, Some(&to_write.0), &federated);
            }
            for svid in writes {
                match data.store_svid(&svid) {
                    Ok(()) => report.written.push(svid.record),
                    Err(e) => report.errors.push(e),
                }
            }
            for id in removals {
                match data.remove_svid(&id) {
                    Ok(()) => report.removed.push(id),
                    Err(e) => report.errors.push(e),
                }
            }
            if first {
                let keep = held.iter().map(String::as_str).collect();
                if let Err(e) = data.remove_svids_except(&keep) {
                    report.errors.push(e);
                }
            }
            if legacy && report.errors.is_empty() && report.bundles.is_ok() {
                report.legacy_removed = data.remove_legacy_svid_cache().is_ok();
            }
            report
        })
        .await;
        let report = match written {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "Could not store the SVID cache");
                return;
            }
        };
        match report.bundles {
            Ok(()) => persisted.bundles = Some(bundles),
            Err(e) => tracing::warn!(error = %e, "Could not store the SVID cache bundles"),
        }
        for record in report.written {
            persisted.svids.insert(record.entry_id.clone(), record);
        }
        for id in report.removed {
            persisted.svids.remove(&id);
        }
        for e in report.errors {
            tracing::warn!(error = %e, "Could not store the SVID cache");
        }
        if report.legacy_removed {
            persisted.legacy = false;
            tracing::info!("SVID cache moved to svid_cache/; removed svid_cache.json");
        }
    }
}

/// What one write of the SVID cache did.
#[derive(Debug)]
struct PersistReport {
    bundles: Result<(), StoreError>,
    written: Vec<Arc<X509SvidRecord>>,
    removed: Vec<String>,
    errors: Vec<StoreError>,
    legacy_removed: bool,
}

impl Default for PersistReport {
    fn default() -> Self {
        PersistReport {
            bundles: Ok(()),
            written: Vec::new(),
            removed: Vec::new(),
            errors: Vec::new(),
            legacy_removed: false,
        }
    }
}

/// What [`Shared::run_step`] does.
#[derive(Debug)]
enum Step {
    /// A full sync with the server.
    Full,
    /// Applies a pushed bundle and a page of pushed entry changes.
    Push {
        entries: Option<EntryChanges>,
        bundle: Option<Bundle>,
    },
}

/// The status label of a failed manager call: the server's gRPC code when
/// the server answered, else `Unavailable` (unreachable) or `Internal`.
fn manager_error_status(e: &ManagerError) -> String {
    let code = match e {
        ManagerError::AttestationRefused { code, .. }
        | ManagerError::ServerRefused { code, .. }
        | ManagerError::SyncFailed { code, .. }
        | ManagerError::Rotation { code, .. } => *code,
        ManagerError::ServerUnreachable { .. } => tonic::Code::Unavailable,
        ManagerError::MustReattest { .. } => tonic::Code::PermissionDenied,
        _ => tonic::Code::Internal,
    };
    code_name(code as i32).to_owned()
}

/// How long ago the newest entry this sync brought for the first time was
/// created on the server: the time the last change took to reach this
/// agent (whole seconds, from the server's clock to this one). `None` when
/// the sync brought no new entry, or only entries without a creation time,
/// and on the first sync (`known` is `None`: everything is new then, not a
/// change).
fn newest_new_entry_age(
    known: Option<&BTreeSet<String>>,
    entries: &BTreeMap<String, AuthorizedEntry>,
    now: i64,
) -> Option<i64> {
    let known = known?;
    entries
        .iter()
        .filter(|(id, e)| e.created_at > 0 && !known.contains(*id))
        .map(|(_, e)| e.created_at)
        .max()
        .map(|created| now.saturating_sub(created).max(0))
}

/// The cache gauges, after every sync: SPIRE's SVID and record map sizes,
/// and sigil's age of the oldest X509-SVID held (how far rotation lags).
fn record_cache_metrics(state: &SyncState, now: i64) {
    metrics::gauge!("lru_cache_svid_map_size").set(state.svids.len() as f64);
    metrics::gauge!("lru_cache_subscribers").set(state.subscriptions.active().len() as f64);
    if let Some(entries) = &state.entries {
        metrics::gauge!("lru_cache_record_map_size").set(entries.len() as f64);
    }
    let oldest = state
        .svids
        .values()
        .map(|s| s.issued_at)
        .min()
        .map_or(0, |issued| now.saturating_sub(issued).max(0));
    metrics::gauge!("oldest_svid_age_seconds").set(oldest as f64);
}

/// Syncs every `sync_interval` and whenever poked, backing off while syncs
/// fail (doubling up to 48 intervals, at most [`MAX_SYNC_BACKOFF`]).
async fn run_loop(shared: Arc<Shared>, sync_first: bool) {
    let interval = shared.cfg.sync_interval;
    let max_backoff = (interval * 48).min(MAX_SYNC_BACKOFF).max(interval);
    let mut delay = if sync_first { Duration::ZERO } else { interval };
    loop {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.notify.notified() => {}
        }
        match shared.tick().await {
            Ok(()) => delay = interval,
            Err(e) => {
                delay = if delay < interval {
                    interval
                } else {
                    (delay * 2).min(max_backoff)
                };
                tracing::warn!(error = %e, retry_in = ?delay, "Synchronize failed");
            }
        }
    }
}

/// Signs on demand whenever a caller needs an SVID the agent does not
/// hold. Requests made while one is being served are served together.
async fn signing_loop(shared: Arc<Shared>) {
    loop {
        shared.subscriptions.signing_requested().await;
        shared.sign_on_demand().await;
    }
}

/// Holds sigil-server's change stream open and applies what it pushes
/// (see [`Shared::push`]), so entry changes arrive at once rather than at
/// the next poll, and without fetching the whole entry list. A server
/// without the extension (SPIRE) answers `Unimplemented`: then polling is
/// all there is, and this task ends.
async fn watch_loop(shared: Arc<Shared>) {
    use futures::StreamExt;
    let mut backoff = Duration::from_secs(1);
    loop {
        match shared.api.watch_changes().await {
            Ok(mut changes) => {
                tracing::debug!("Watching the server for changes");
                backoff = Duration::from_secs(1);
                while let Some(msg) = changes.next().await {
                    match msg {
                        Ok(change) => shared.push(change).await,
                        Err(e) => {
                            tracing::debug!(error = %e, "Change stream ended");
                            break;
                        }
                    }
                }
                // A group cut off with the stream is never completed; the
                // next stream starts with a full set.
                shared.state.lock().await.discard_pending_changes();
            }
            Err(e) if e.code() == tonic::Code::Unimplemented => {
                tracing::info!("Server does not push changes; relying on polling");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "Could not watch the server for changes"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Reads the bootstrap bundle file (`trust_bundle_path`).
pub fn load_bootstrap_bundle(
    path: &std::path::Path,
    format: BundleFormat,
    td: &TrustDomain,
) -> Result<Bundle, ManagerError> {
    let bytes = std::fs::read(path).map_err(|e| {
        ManagerError::Bundle(format!(
            "unable to read trust bundle {}: {e}",
            path.display()
        ))
    })?;
    let bundle = match format {
        BundleFormat::Pem => Bundle::from_pem_certs(td, &bytes),
        BundleFormat::Spiffe => Bundle::parse_jwks(td, &bytes),
    }
    .map_err(|e| {
        ManagerError::Bundle(format!(
            "unable to parse trust bundle {}: {e}",
            path.display()
        ))
    })?;
    if bundle.x509_authorities.is_empty() {
        return Err(ManagerError::Bundle(format!(
            "no certs in bundle {}",
            path.display()
        )));
    }
    Ok(bundle)
}

/// Unix seconds as RFC 3339 UTC, for messages an operator reads.
fn utc_rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("unix time {unix}"))
}

#[cfg(test)]
mod tests;
