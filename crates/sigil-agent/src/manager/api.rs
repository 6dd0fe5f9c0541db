//! The handful of server RPCs the manager needs, behind one trait, in the
//! agent's own types.
//!
//! [`ServerApi`] is implemented by the TLS gRPC client in
//! [`super::client`] and by fakes in tests, so attestation, rotation and
//! sync can be exercised without a server. Wire types never leave the
//! client: entries arrive here already parsed, and the few malformed ones a
//! server might send are dropped there with a warning.

use std::sync::Arc;

use async_trait::async_trait;
use sigil_crypto::key::Signer;
use sigil_plugin::nodeattestor::AgentNodeAttestor;
use sigil_spiffe::{Bundle, Selector, SpiffeId, TrustDomain};
use tonic::Status;

/// A registration entry the agent is authorized for, as far as the agent
/// cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedEntry {
    /// Entry ID.
    pub id: String,
    /// The SPIFFE ID its SVIDs carry.
    pub spiffe_id: SpiffeId,
    /// Selectors a workload must all have.
    pub selectors: Vec<Selector>,
    /// DNS SANs of its X509-SVIDs.
    pub dns_names: Vec<String>,
    /// Hint for workloads holding several SVIDs.
    pub hint: String,
    /// Bumped by the server on every change of the entry.
    pub revision_number: i64,
    /// X509-SVID lifetime asked for by the entry (0: server default).
    pub x509_svid_ttl: i32,
    /// JWT-SVID lifetime asked for by the entry (0: server default).
    pub jwt_svid_ttl: i32,
    /// The SVID is meant for an SVIDStore plugin, not for workloads.
    pub store_svid: bool,
    /// Trust domains whose bundles workloads of this entry receive.
    pub federates_with: Vec<TrustDomain>,
    /// When the server created the entry (unix seconds; 0 when not sent).
    pub created_at: i64,
}

/// The outcome of node attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    /// The agent SVID chain, leaf first, DER.
    pub chain: Vec<Vec<u8>>,
    /// Whether the agent may re-attest by itself instead of renewing.
    pub reattestable: bool,
}

/// An X509-SVID as the server issued it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedX509 {
    /// Certificate chain, leaf first, DER.
    pub chain: Vec<Vec<u8>>,
    /// Leaf expiry, unix seconds.
    pub expires_at: i64,
}

/// A JWT-SVID as the server issued it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedJwt {
    /// The compact JWS.
    pub token: String,
    /// Its subject.
    pub spiffe_id: SpiffeId,
    /// Issue time, unix seconds.
    pub issued_at: i64,
    /// Expiry, unix seconds.
    pub expires_at: i64,
    /// The entry's hint.
    pub hint: String,
}

/// Where an entry stands on the server, as `SyncAuthorizedEntries` lists
/// it in sparse mode: enough to tell whether the copy the agent holds is
/// current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRevision {
    /// Bumped by the server on every change of the entry.
    pub revision_number: i64,
    /// When the server created the entry (unix seconds; 0 when not sent).
    /// An entry deleted and created again under the same ID starts over at
    /// revision 0, so the revision alone cannot tell the two apart.
    pub created_at: i64,
}

impl EntryRevision {
    /// Whether `held` is an out-of-date copy of the entry at `self`. A
    /// server that sends no creation time (0) is compared by revision only.
    pub fn is_newer_than(&self, held: &EntryRevision) -> bool {
        held.revision_number != self.revision_number
            || (self.created_at != 0 && held.created_at != self.created_at)
    }
}

impl AuthorizedEntry {
    /// The entry's revision.
    pub fn revision(&self) -> EntryRevision {
        EntryRevision {
            revision_number: self.revision_number,
            created_at: self.created_at,
        }
    }
}

/// One response of `Entry.SyncAuthorizedEntries`, converted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryPage {
    /// Sparse mode: `(entry ID, revision)` of authorized entries.
    pub revisions: Vec<(String, EntryRevision)>,
    /// Full entries (malformed ones were already dropped with a warning).
    pub entries: Vec<AuthorizedEntry>,
    /// Another page of the same answer follows.
    pub more: bool,
}

/// An open `Entry.SyncAuthorizedEntries` stream whose initial request
/// (with the agent's output mask) has been sent. The diff logic driving it
/// lives in [`super::sync`]; implementations only move messages.
#[async_trait]
pub trait EntrySyncStream: Send {
    /// Asks for the full entries with these IDs (sparse mode).
    async fn request(&mut self, ids: Vec<String>) -> Result<(), Status>;

    /// The next response. A stream the server ended early is an error.
    async fn next_page(&mut self) -> Result<EntryPage, Status>;
}

/// One push from the server (sigil's `Sync.WatchChanges`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    /// Entry changes, when the server sends them (asked for with
    /// `entry_changes`); `None` from servers that only signal.
    pub entries: Option<EntryChanges>,
    /// Our trust domain's bundle, when it changed.
    pub bundle: Option<Bundle>,
    /// Something not carried here changed (a federated bundle): run a full
    /// sync.
    pub resync: bool,
}

impl Change {
    /// A message carrying nothing: an older server's "sync now".
    pub fn is_bare_signal(&self) -> bool {
        self.entries.is_none() && self.bundle.is_none() && !self.resync
    }
}

/// Entry changes for this agent, one page of a group (see `sync.proto`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryChanges {
    /// This group replaces every entry held.
    pub reset: bool,
    /// Entries added or changed, whole.
    pub upserted: Vec<AuthorizedEntry>,
    /// IDs of entries no longer authorized.
    pub removed: Vec<String>,
    /// Another page of the same group follows.
    pub more: bool,
}

/// Pushes from the server (see [`ServerApi::watch_changes`]).
pub type ChangeStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<Change, Status>> + Send>>;

/// How the client authenticates the server.
pub use sigil_crypto::tls::ServerTrust;

/// The agent's own credentials, presented as a TLS client certificate.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    /// The agent SVID chain, leaf first, DER.
    pub chain: Vec<Vec<u8>>,
    /// Its private key.
    pub key: Arc<dyn Signer>,
}

/// The server RPCs the manager uses. Errors are gRPC statuses; transport
/// failures (no connection, TLS failures) arrive as
/// [`tonic::Code::Unavailable`] (or `Unknown`, as tonic reports some).
#[async_trait]
pub trait ServerApi: Send + Sync + std::fmt::Debug {
    /// Switches the credentials used for every later call. Implementations
    /// drop connections made with the old ones.
    fn set_credentials(
        &self,
        trust: ServerTrust,
        identity: Option<AgentIdentity>,
    ) -> Result<(), sigil_crypto::CryptoError>;

    /// `Agent.AttestAgent`: the params message (the attestor's type and
    /// `payload`, the CSR), then one `attestor.respond` per challenge the
    /// server sends, until the result.
    async fn attest_agent(
        &self,
        attestor: &dyn AgentNodeAttestor,
        payload: Vec<u8>,
        csr: Vec<u8>,
    ) -> Result<Attested, Status>;

    /// `Agent.RenewAgent`; returns the new agent SVID chain.
    async fn renew_agent(&self, csr: Vec<u8>) -> Result<Vec<Vec<u8>>, Status>;

    /// `Bundle.GetBundle`: our trust domain's bundle.
    async fn get_bundle(&self) -> Result<Bundle, Status>;

    /// `Bundle.GetFederatedBundle`: the bundle of trust domain `td`, which
    /// must not be ours. `NotFound` when the server has none.
    async fn get_federated_bundle(&self, td: &TrustDomain) -> Result<Bundle, Status>;

    /// Opens `Entry.SyncAuthorizedEntries` and sends its initial request.
    async fn sync_authorized_entries(&self) -> Result<Box<dyn EntrySyncStream>, Status>;

    /// `SVID.BatchNewX509SVID` for `(entry ID, CSR)` pairs; one result per
    /// pair, in order.
    async fn batch_new_x509_svid(
        &self,
        csrs: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<Result<IssuedX509, Status>>, Status>;

    /// `SVID.NewJWTSVID`.
    async fn new_jwt_svid(&self, entry_id: &str, audience: &[String]) -> Result<IssuedJwt, Status>;

    /// A stream with one item per change the server announces (sigil's
    /// push extension), asking for entry changes; servers that predate them
    /// send bare signals. Servers without the extension (SPIRE) answer
    /// `Unimplemented`.
    async fn watch_changes(&self) -> Result<ChangeStream, Status> {
        Err(Status::unimplemented("the server does not push changes"))
    }
}

/// True for errors that mean "could not talk to the server" rather than
/// "the server said no": worth retrying, and no reason to drop state.
pub fn is_transient(status: &Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
    )
}
