//! `spire.api.server.agent.v1.Agent`: node attestation, agent SVID renewal
//! and agent administration. Join tokens are single use: the token is taken
//! (fetched and deleted in one statement) before anything else happens, so
//! two agents racing with one token cannot both succeed.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use sigil_datastore::{
    AttestedNode, DataStoreError, JoinToken, ListNodesRequest, NodeMask, NodeSerials,
    RegistrationEntry,
};
use sigil_plugin::nodeattestor::{Challenges, NodeAttestorError};
use sigil_proto::spire::api::server::agent::v1 as pb;
use sigil_proto::spire::api::types;
use sigil_spiffe::{Selector, SpiffeId};
use tonic::{Request, Response, Status, Streaming};

use super::convert::{
    agent_to_proto, id_from_proto, id_to_proto, match_from_proto, selectors_from_proto,
};
use super::limits::Limit;
use crate::plugin::nodeattestor::join_token;

use super::{ApiState, authenticate, ca_status, ds_status, require_admin, require_agent};

/// The agent service.
#[derive(Debug, Clone)]
pub struct AgentService {
    state: Arc<ApiState>,
}

impl AgentService {
    /// Wraps the shared state.
    pub fn new(state: Arc<ApiState>) -> Self {
        AgentService { state }
    }

    fn agent_id_from_proto(&self, id: Option<&types::Spiffeid>) -> Result<SpiffeId, Status> {
        let id = id_from_proto(id)
            .map_err(|e| Status::invalid_argument(format!("invalid agent ID: {e}")))?;
        if !id.is_member_of(&self.state.td) {
            return Err(Status::invalid_argument(format!(
                "invalid agent ID: \"{id}\" is not a member of trust domain \"{}\"",
                self.state.td
            )));
        }
        if !id.path().starts_with("/spire/agent/") {
            return Err(Status::invalid_argument(format!(
                "invalid agent ID: \"{id}\" is not an agent in trust domain \"{}\"; path is not in the agent namespace",
                self.state.td
            )));
        }
        Ok(id)
    }

    async fn sign_agent_svid(
        &self,
        agent_id: &SpiffeId,
        csr: &[u8],
    ) -> Result<(Vec<Vec<u8>>, String, i64), Status> {
        let csr = sigil_crypto::csr::parse_and_verify_csr(csr)
            .map_err(|e| Status::invalid_argument(format!("failed to parse CSR: {e}")))?;
        let (chain, not_after) = self
            .state
            .ca
            .sign_x509_svid(
                agent_id,
                &csr.public_key_der,
                self.state.agent_svid_ttl,
                &[],
            )
            .await
            .map_err(ca_status)?;
        let leaf = chain
            .first()
            .ok_or_else(|| Status::internal("CA returned an empty chain"))?;
        let info = sigil_crypto::x509::cert_info(leaf)
            .map_err(|e| Status::internal(format!("issued certificate is unreadable: {e}")))?;
        Ok((chain, info.serial_hex, sigil_plugin::clock::unix(not_after)))
    }

    /// Runs one attestation: checks the params, lets the attestor for the
    /// data type judge the evidence (putting challenges over `challenges`),
    /// then signs the agent SVID and records the node.
    async fn attest(
        &self,
        first: pb::AttestAgentRequest,
        challenges: &mut dyn Challenges,
    ) -> Result<pb::AttestAgentResponse, Status> {
        let params = match first.step {
            Some(pb::attest_agent_request::Step::Params(p)) => p,
            _ => return Err(Status::invalid_argument("malformed param: missing params")),
        };
        let data = params
            .data
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("malformed param: missing attestation data"))?;
        let svid_params = params.params.as_ref().ok_or_else(|| {
            Status::invalid_argument("malformed param: missing X509-SVID parameters")
        })?;
        if svid_params.csr.is_empty() {
            return Err(Status::invalid_argument("malformed param: missing CSR"));
        }
        if data.r#type.is_empty() {
            return Err(Status::invalid_argument(
                "malformed param: missing attestation data type",
            ));
        }
        if data.payload.is_empty() {
            return Err(Status::invalid_argument(
                "malformed param: missing attestation data payload",
            ));
        }
        let attestor = self
            .state
            .node_attestors
            .iter()
            .find(|a| a.name() == data.r#type)
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "error getting node attestor: could not find node attestor type {:?}",
                    data.r#type
                ))
            })?;
        let result = attestor
            .attest(&data.payload, challenges)
            .await
            .map_err(attest_status)?;
        let agent_id = result.agent_id;
        if !agent_id.is_member_of(&self.state.td) || !agent_id.path().starts_with("/spire/agent/") {
            return Err(Status::internal(format!(
                "failed to attest: node attestor returned {agent_id}, which is not an agent ID of trust domain {}",
                self.state.td
            )));
        }

        // Refuse a banned agent before signing anything; recording the node
        // checks again, in the same transaction as the write.
        let existing = self
            .state
            .ds
            .get_attested_node(&agent_id)
            .await
            .map_err(ds_status)?;
        if existing.as_ref().is_some_and(|n| n.is_banned()) {
            return Err(attest_banned());
        }
        let (chain, serial, not_after) = self.sign_agent_svid(&agent_id, &svid_params.csr).await?;
        let node = AttestedNode {
            spiffe_id: agent_id.clone(),
            attestation_data_type: attestor.name().into(),
            cert_serial_number: serial,
            cert_not_after: not_after,
            new_cert_serial_number: String::new(),
            new_cert_not_after: 0,
            can_reattest: result.can_reattest,
            selectors: result.selectors,
        };
        // One transaction: the join token (if any) is spent, the selectors
        // and the node are written, or nothing is.
        self.state
            .ds
            .attest_node(node, result.join_token.as_deref())
            .await
            .map_err(|e| match e {
                DataStoreError::NotFound(_) => Status::invalid_argument(
                    "failed to attest: join token does not exist or has already been used",
                ),
                DataStoreError::FailedPrecondition(_) => attest_banned(),
                other => ds_status(other),
            })?;
        self.state.entries_changed().await;
        tracing::info!(agent_id = %agent_id, node_attestor_type = attestor.name(), "Agent attestation request completed");
        Ok(pb::AttestAgentResponse {
            step: Some(pb::attest_agent_response::Step::Result(
                pb::attest_agent_response::Result {
                    svid: Some(types::X509svid {
                        cert_chain: chain,
                        id: Some(id_to_proto(&agent_id)),
                        expires_at: not_after,
                        hint: String::new(),
                    }),
                    reattestable: result.can_reattest,
                },
            )),
        })
    }
}

fn attest_banned() -> Status {
    Status::permission_denied("failed to attest: agent is banned")
}

/// How long the server waits for the agent's answer to one challenge.
const CHALLENGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Challenges carried over the AttestAgent stream, as SPIRE does: each is
/// an `AttestAgentResponse{challenge}` answered by an
/// `AttestAgentRequest{challenge_response}`.
struct StreamChallenges {
    inbound: Streaming<pb::AttestAgentRequest>,
    outbound: tokio::sync::mpsc::Sender<Result<pb::AttestAgentResponse, Status>>,
}

#[tonic::async_trait]
impl Challenges for StreamChallenges {
    async fn challenge(&mut self, challenge: Vec<u8>) -> Result<Vec<u8>, NodeAttestorError> {
        let gone = || NodeAttestorError::Channel("the agent closed the attestation stream".into());
        self.outbound
            .send(Ok(pb::AttestAgentResponse {
                step: Some(pb::attest_agent_response::Step::Challenge(challenge)),
            }))
            .await
            .map_err(|_| gone())?;
        let msg = tokio::time::timeout(CHALLENGE_TIMEOUT, self.inbound.message())
            .await
            .map_err(|_| {
                NodeAttestorError::Channel(format!(
                    "no challenge response within {CHALLENGE_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| {
                NodeAttestorError::Channel(format!(
                    "failed to receive challenge response: {}",
                    e.message()
                ))
            })?
            .ok_or_else(gone)?;
        match msg.step {
            Some(pb::attest_agent_request::Step::ChallengeResponse(r)) => Ok(r),
            _ => Err(NodeAttestorError::Invalid(
                "expected a challenge response".into(),
            )),
        }
    }
}

/// SPIRE's mapping: the attestor's verdict keeps its code, the message
/// says attestation failed.
fn attest_status(e: NodeAttestorError) -> Status {
    let msg = format!("failed to attest: {e}");
    match e {
        NodeAttestorError::Invalid(_)
        | NodeAttestorError::NoEvidence(_)
        | NodeAttestorError::Channel(_) => Status::invalid_argument(msg),
        NodeAttestorError::Denied(_) => Status::permission_denied(msg),
        NodeAttestorError::Internal(_) => Status::internal(msg),
        _ => Status::internal(msg),
    }
}

type AttestStream = Pin<Box<dyn Stream<Item = Result<pb::AttestAgentResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentService {
    async fn count_agents(
        &self,
        request: Request<pb::CountAgentsRequest>,
    ) -> Result<Response<pb::CountAgentsResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let f = request.into_inner().filter.unwrap_or_default();
        let req = nodes_filter(
            &f.by_attestation_type,
            f.by_selector_match.as_ref(),
            f.by_banned,
            f.by_can_reattest,
            &f.by_expires_before,
        )?;
        let n = self
            .state
            .ds
            .count_attested_nodes(&req)
            .await
            .map_err(ds_status)?;
        Ok(Response::new(pb::CountAgentsResponse {
            count: i32::try_from(n).unwrap_or(i32::MAX),
        }))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let r = request.into_inner();
        let f = r.filter.unwrap_or_default();
        let mut req = nodes_filter(
            &f.by_attestation_type,
            f.by_selector_match.as_ref(),
            f.by_banned,
            f.by_can_reattest,
            &f.by_expires_before,
        )?;
        if r.page_size < 0 {
            return Err(Status::invalid_argument("page_size must not be negative"));
        }
        req.page_size = u32::try_from(r.page_size).unwrap_or(0);
        req.page_token = r.page_token;
        let (nodes, next) = self
            .state
            .ds
            .list_attested_nodes(&req)
            .await
            .map_err(ds_status)?;
        Ok(Response::new(pb::ListAgentsResponse {
            agents: nodes
                .iter()
                .map(|n| agent_to_proto(n, r.output_mask.as_ref()))
                .collect(),
            next_page_token: next,
        }))
    }

    async fn get_agent(
        &self,
        request: Request<pb::GetAgentRequest>,
    ) -> Result<Response<types::Agent>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let r = request.into_inner();
        let id = self.agent_id_from_proto(r.id.as_ref())?;
        let node = self
            .state
            .ds
            .get_attested_node(&id)
            .await
            .map_err(ds_status)?
            .ok_or_else(|| Status::not_found("agent not found"))?;
        Ok(Response::new(agent_to_proto(&node, r.output_mask.as_ref())))
    }

    async fn delete_agent(
        &self,
        request: Request<pb::DeleteAgentRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let id = self.agent_id_from_proto(request.get_ref().id.as_ref())?;
        match self.state.ds.delete_attested_node(&id).await {
            Ok(_) => {
                tracing::info!(agent_id = %id, "Agent deleted");
                self.state.entries_changed().await;
                Ok(Response::new(()))
            }
            Err(sigil_datastore::DataStoreError::NotFound(_)) => {
                Err(Status::not_found("agent not found"))
            }
            Err(e) => Err(ds_status(e)),
        }
    }

    async fn ban_agent(
        &self,
        request: Request<pb::BanAgentRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let id = self.agent_id_from_proto(request.get_ref().id.as_ref())?;
        // One unconditional UPDATE: whatever the agent did since anyone
        // read its record, both serial numbers end up empty.
        let banned = AttestedNode {
            spiffe_id: id.clone(),
            attestation_data_type: String::new(),
            cert_serial_number: String::new(),
            cert_not_after: 0,
            new_cert_serial_number: String::new(),
            new_cert_not_after: 0,
            can_reattest: false,
            selectors: Vec::new(),
        };
        let mask = NodeMask {
            cert_serial_number: true,
            new_cert_serial_number: true,
            ..NodeMask::default()
        };
        self.state
            .ds
            .update_attested_node(banned, &mask)
            .await
            .map_err(|e| match e {
                DataStoreError::NotFound(_) => Status::not_found("agent not found"),
                other => ds_status(other),
            })?;
        tracing::info!(agent_id = %id, "Agent banned");
        self.state.entries_changed().await;
        Ok(Response::new(()))
    }

    type AttestAgentStream = AttestStream;

    async fn attest_agent(
        &self,
        request: Request<Streaming<pb::AttestAgentRequest>>,
    ) -> Result<Response<Self::AttestAgentStream>, Status> {
        self.state
            .limits
            .check(Limit::Attestation, &request, 1)
            .await?;
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await
            .map_err(|e| {
                Status::invalid_argument(format!(
                    "failed to receive request from stream: {}",
                    e.message()
                ))
            })?
            .ok_or_else(|| {
                Status::invalid_argument("failed to receive request from stream: stream closed")
            })?;
        // The attestation runs in its own task so challenges can flow over
        // the response stream. Failures before any challenge are returned
        // as the call's status, as with a unary error.
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let svc = self.clone();
        let attestor_type = match &first.step {
            Some(pb::attest_agent_request::Step::Params(p)) => {
                p.data.as_ref().map(|d| d.r#type.clone())
            }
            _ => None,
        }
        .unwrap_or_default();
        tokio::spawn(async move {
            let mut challenges = StreamChallenges {
                inbound: stream,
                outbound: tx.clone(),
            };
            let response = svc.attest(first, &mut challenges).await;
            if let Err(e) = &response {
                tracing::warn!(error = %e.message(), "agent attestation failed");
            }
            // sigil's own: attestations by node attestor type and outcome.
            let status = match &response {
                Ok(_) => "OK",
                Err(e) => sigil_telemetry::metrics::code_name(e.code() as i32),
            };
            metrics::counter!("node_attestation", "attestor" => attestor_type, "status" => status)
                .increment(1);
            let _ = tx.send(response).await;
        });
        let first = match rx.recv().await {
            Some(Ok(msg)) => msg,
            Some(Err(status)) => return Err(status),
            None => return Err(Status::internal("attestation ended without a result")),
        };
        let rest = tokio_stream::wrappers::ReceiverStream::new(rx);
        let out: AttestStream = Box::pin(futures::stream::iter([Ok(first)]).chain(rest));
        Ok(Response::new(out))
    }

    async fn renew_agent(
        &self,
        request: Request<pb::RenewAgentRequest>,
    ) -> Result<Response<pb::RenewAgentResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        let node = require_agent(&caller)?.clone();
        self.state.limits.check(Limit::Signing, &request, 1).await?;
        if node.can_reattest {
            return Err(super::agent_denied(
                super::DenyReason::AgentMustReattest,
                "agent must reattest instead of renew".into(),
            ));
        }
        let params = request
            .into_inner()
            .params
            .ok_or_else(|| Status::invalid_argument("params cannot be nil"))?;
        if params.csr.is_empty() {
            return Err(Status::invalid_argument("missing CSR"));
        }
        let (chain, serial, not_after) = self.sign_agent_svid(&node.spiffe_id, &params.csr).await?;
        let update = AttestedNode {
            new_cert_serial_number: serial,
            new_cert_not_after: not_after,
            ..node.clone()
        };
        let mask = NodeMask {
            new_cert_serial_number: true,
            new_cert_not_after: true,
            ..NodeMask::default()
        };
        // Conditional on the record authenticate read: a ban (or anything
        // else) landing since then wins, and the new SVID is thrown away.
        let stored = self
            .state
            .ds
            .update_attested_node_if(update, &mask, &NodeSerials::of(&node))
            .await
            .map_err(ds_status)?;
        if stored.is_none() {
            let now = self
                .state
                .ds
                .get_attested_node(&node.spiffe_id)
                .await
                .map_err(ds_status)?;
            return Err(match now {
                Some(n) if n.is_banned() => super::agent_banned(&node.spiffe_id),
                None => super::agent_denied(
                    super::DenyReason::AgentNotAttested,
                    format!("agent \"{}\" is not attested", node.spiffe_id),
                ),
                Some(_) => {
                    Status::aborted("the agent's record changed while its SVID was renewed; retry")
                }
            });
        }
        tracing::info!(agent_id = %node.spiffe_id, "Renewed agent SVID");
        Ok(Response::new(pb::RenewAgentResponse {
            svid: Some(types::X509svid {
                cert_chain: chain,
                id: Some(id_to_proto(&node.spiffe_id)),
                expires_at: not_after,
                hint: String::new(),
            }),
        }))
    }

    async fn create_join_token(
        &self,
        request: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<types::JoinToken>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let r = request.into_inner();
        if r.ttl < 1 {
            return Err(Status::invalid_argument(
                "ttl is required, you must provide one",
            ));
        }
        let alias = match r.agent_id.as_ref() {
            None => None,
            Some(id) => Some(
                super::convert::workload_id_from_proto(&self.state.td, Some(id))
                    .map_err(|e| Status::invalid_argument(format!("invalid agent ID: {e}")))?,
            ),
        };
        let token = if r.token.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            r.token
        };
        // The token becomes a path segment of the agent ID; reject tokens
        // that could not.
        let agent_id = join_token::agent_id(&self.state.td, &token).map_err(|e| {
            Status::invalid_argument(format!("join token {token:?} cannot form an agent ID: {e}"))
        })?;
        let expires_at = self.state.clock.unix_now() + i64::from(r.ttl);
        let join_token = JoinToken {
            token: token.clone(),
            expires_at,
        };
        let token_exists = |e| match e {
            DataStoreError::AlreadyExists(_) => {
                Status::already_exists("failed to create token: token already exists")
            }
            other => ds_status(other),
        };
        match alias {
            None => self
                .state
                .ds
                .create_join_token(join_token)
                .await
                .map_err(token_exists)?,
            Some(alias) => {
                let selector = Selector::new("spiffe_id", agent_id.as_str())
                    .map_err(|e| Status::internal(e.to_string()))?;
                let entry = RegistrationEntry {
                    id: String::new(),
                    spiffe_id: alias,
                    parent_id: agent_id,
                    selectors: vec![selector],
                    x509_svid_ttl: 0,
                    jwt_svid_ttl: 0,
                    dns_names: Vec::new(),
                    federates_with: Vec::new(),
                    admin: false,
                    downstream: false,
                    expires_at: 0,
                    hint: String::new(),
                    store_svid: false,
                    revision_number: 0,
                    created_at: 0,
                };
                // Token and alias entry in one transaction: neither is stored
                // without the other.
                let taken = self
                    .state
                    .ds
                    .get_join_token(&token)
                    .await
                    .map_err(ds_status)?
                    .is_some();
                if taken {
                    return Err(token_exists(DataStoreError::AlreadyExists(String::new())));
                }
                self.state
                    .ds
                    .create_join_token_with_entry(join_token, entry)
                    .await
                    .map_err(|e| {
                        Status::internal(format!(
                            "failed to create join token registration entry: {e}"
                        ))
                    })?;
                self.state.entries_changed().await;
            }
        }
        Ok(Response::new(types::JoinToken {
            value: token,
            expires_at,
        }))
    }

    async fn post_status(
        &self,
        request: Request<pb::PostStatusRequest>,
    ) -> Result<Response<pb::PostStatusResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_agent(&caller)?;
        self.state
            .limits
            .check(Limit::PostStatus, &request, 1)
            .await?;
        Ok(Response::new(pb::PostStatusResponse {}))
    }
}

fn nodes_filter(
    by_attestation_type: &str,
    by_selector_match: Option<&types::SelectorMatch>,
    by_banned: Option<bool>,
    by_can_reattest: Option<bool>,
    by_expires_before: &str,
) -> Result<ListNodesRequest, Status> {
    let by_selector_match = match by_selector_match {
        None => None,
        Some(m) => {
            let sels = selectors_from_proto(&m.selectors)
                .map_err(|e| Status::invalid_argument(format!("failed to parse selectors: {e}")))?;
            let mode = match_from_proto(m.r#match).map_err(Status::invalid_argument)?;
            Some((sels, mode))
        }
    };
    let by_expires_before = if by_expires_before.is_empty() {
        None
    } else {
        Some(parse_rfc3339_or_unix(by_expires_before).ok_or_else(|| {
            Status::invalid_argument(format!(
                "failed to parse by_expires_before {by_expires_before:?}: expected RFC 3339 or unix seconds"
            ))
        })?)
    };
    Ok(ListNodesRequest {
        by_banned,
        by_attestation_type: (!by_attestation_type.is_empty())
            .then(|| by_attestation_type.to_owned()),
        by_selector_match,
        by_expires_before,
        by_can_reattest,
        page_size: 0,
        page_token: String::new(),
    })
}

fn parse_rfc3339_or_unix(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}
