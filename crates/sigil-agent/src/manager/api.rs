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

/// Change notifications from the server (see [`ServerApi::watch_changes`]).
pub type ChangeStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<(), Status>> + Send>>;

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

    /// `Entry.GetAuthorizedEntries`.
    async fn get_authorized_entries(&self) -> Result<Vec<AuthorizedEntry>, Status>;

    /// `SVID.BatchNewX509SVID` for `(entry ID, CSR)` pairs; one result per
    /// pair, in order.
    async fn batch_new_x509_svid(
        &self,
        csrs: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<Result<IssuedX509, Status>>, Status>;

    /// `SVID.NewJWTSVID`.
    async fn new_jwt_svid(&self, entry_id: &str, audience: &[String]) -> Result<IssuedJwt, Status>;

    /// A stream with one item per change the server announces (sigil's
    /// push extension). Servers without it answer `Unimplemented`.
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
