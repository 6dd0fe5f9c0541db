//! NodeAttestor: how an agent proves which node it runs on.
//!
//! A node attestor is a pair. The agent half ([`AgentNodeAttestor`])
//! produces a payload and answers challenges; the server half
//! ([`ServerNodeAttestor`]) checks them and returns an [`AttestResult`]:
//! the agent's SPIFFE ID, its selectors, and whether it may attest again
//! by itself (SPIRE's `AttestResult{AgentID, Selectors, CanReattest}`).
//! The conversation rides SPIRE's `AttestAgent` stream unchanged: params
//! (type + payload), then any number of challenge / response rounds, then
//! the result. Each half of a built-in lives in one file on its side; a
//! built-in whose agent half needs nothing of the agent (`k8s_psat`) keeps
//! it here, with the formats both halves share, so server tests can pair it.

use async_trait::async_trait;
use sigil_spiffe::{Selector, SpiffeId};

pub mod conformance;
pub mod k8s_psat;
pub mod x509pop;

/// What the server half concludes about an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestResult {
    /// The agent's SPIFFE ID, `spiffe://<td>/spire/agent/<attestor>/...`.
    pub agent_id: SpiffeId,
    /// Facts about the node, as selectors of the attestor's type.
    pub selectors: Vec<Selector>,
    /// Whether the agent may attest again with fresh evidence instead of
    /// renewing its SVID (SPIRE's `CanReattest`).
    pub can_reattest: bool,
    /// Single-use evidence the server must spend when it records the agent:
    /// the join token, deleted in the same datastore transaction that
    /// records the node. If it is gone by then (another attestation spent
    /// it), this attestation fails and nothing is recorded.
    pub join_token: Option<String>,
}

/// Why attestation failed, in terms the server maps to gRPC codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeAttestorError {
    /// The payload or a challenge response is malformed, or names evidence
    /// that does not exist, as an unknown join token (`InvalidArgument`).
    #[error("{0}")]
    Invalid(String),
    /// The evidence is well formed but not acceptable: a wrong audience,
    /// an unknown CA, a token already used (`PermissionDenied`).
    #[error("{0}")]
    Denied(String),
    /// Something the attestor depends on failed (the Kubernetes API, a
    /// file) (`Internal`).
    #[error("{0}")]
    Internal(String),
    /// The agent half has no evidence to offer (no join token, no token
    /// file), which an operator must fix.
    #[error("{0}")]
    NoEvidence(String),
    /// The challenge channel broke (the peer went away or sent the wrong
    /// message).
    #[error("{0}")]
    Channel(String),
}

/// The server half's way to put challenges to the agent during one
/// attestation.
#[async_trait]
pub trait Challenges: Send {
    /// Sends `challenge` to the agent and returns its response.
    async fn challenge(&mut self, challenge: Vec<u8>) -> Result<Vec<u8>, NodeAttestorError>;
}

/// The server half of a node attestor.
#[async_trait]
pub trait ServerNodeAttestor: Send + Sync + std::fmt::Debug {
    /// The attestation data type it answers (`join_token`, `x509pop`).
    fn name(&self) -> &'static str;

    /// Checks the agent's payload, putting challenges to it as needed.
    async fn attest(
        &self,
        payload: &[u8],
        challenges: &mut dyn Challenges,
    ) -> Result<AttestResult, NodeAttestorError>;
}

/// The agent half of a node attestor.
#[async_trait]
pub trait AgentNodeAttestor: Send + Sync + std::fmt::Debug {
    /// The attestation data type it sends (`join_token`, `x509pop`).
    fn name(&self) -> &'static str;

    /// The evidence sent with the attestation params. Called for every
    /// attestation, so evidence that changes (a rotated token file) is read
    /// afresh.
    async fn payload(&self) -> Result<Vec<u8>, NodeAttestorError>;

    /// The answer to one challenge from the server half.
    async fn respond(&self, challenge: &[u8]) -> Result<Vec<u8>, NodeAttestorError> {
        let _ = challenge;
        Err(NodeAttestorError::Channel(format!(
            "the server sent a challenge, which {} attestation does not answer",
            self.name()
        )))
    }
}

/// The server-side store of join tokens, the one capability the
/// `join_token` attestor needs from the datastore.
#[async_trait]
pub trait JoinTokens: Send + Sync + std::fmt::Debug {
    /// The token's expiry (unix seconds), or `None` if it does not exist.
    /// Looking does not spend it: the server spends the token named in
    /// [`AttestResult::join_token`] when it records the agent.
    async fn expiry(&self, token: &str) -> Result<Option<i64>, NodeAttestorError>;
}

/// Challenges answered directly by an agent half, in the same process:
/// what the conformance suite and unit tests use in place of a stream.
#[derive(Debug)]
pub struct DirectChallenges<'a> {
    agent: &'a dyn AgentNodeAttestor,
    /// How many challenges were put.
    pub rounds: usize,
}

impl<'a> DirectChallenges<'a> {
    /// Challenges answered by `agent`.
    pub fn new(agent: &'a dyn AgentNodeAttestor) -> Self {
        DirectChallenges { agent, rounds: 0 }
    }
}

#[async_trait]
impl Challenges for DirectChallenges<'_> {
    async fn challenge(&mut self, challenge: Vec<u8>) -> Result<Vec<u8>, NodeAttestorError> {
        self.rounds += 1;
        self.agent.respond(&challenge).await
    }
}

/// The `/spire/agent/<attestor>/...` path prefix every agent ID of an
/// attestor must start with.
pub fn agent_path_prefix(attestor: &str) -> String {
    format!("/spire/agent/{attestor}/")
}
