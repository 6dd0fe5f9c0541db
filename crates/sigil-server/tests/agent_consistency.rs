//! Agent state changes that must be all-or-nothing and must never undo a
//! ban, driven through the real agent API of an in-process server (SQLite
//! datastore, memory keys).
//!
//! The ban races are made deterministic with [`BanAfterRead`]: a datastore
//! that delegates everything to the server's real one and, once, bans the
//! agent right after the server has read its record, as an administrator's
//! BanAgent landing between the server's read and its write would. Nothing
//! else is faked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use common::{Server, attest, roots, start};
use sigil_crypto::key::{KeyType, SoftwareKey};
use sigil_datastore::{
    AttestedNode, DataStore, EntryMask, FederationRelationship, FederationRelationshipMask,
    JoinToken, ListEntriesRequest, ListEntriesResponse, ListNodesRequest, NodeMask, NodeSerials,
    RegistrationEntry, Result, StoredBundle,
};
use sigil_proto::spire::api::server::agent::v1 as agentpb;
use sigil_proto::spire::api::server::agent::v1::agent_server::Agent as _;
use sigil_proto::spire::api::server::entry::v1 as entrypb;
use sigil_proto::spire::api::types;
use sigil_server::api::agent::AgentService;
use sigil_server::api::{ApiState, authenticate};
use sigil_server::endpoints::{CallerInfo, PeerCert};
use sigil_spiffe::{Selector, SpiffeId, TrustDomain};
use tonic::{Code, Request};

/// The server's datastore, plus one ban injected right after the first read
/// of `target`'s record.
struct BanAfterRead {
    inner: Arc<dyn DataStore>,
    target: SpiffeId,
    armed: AtomicBool,
}

async fn ban(ds: &dyn DataStore, id: &SpiffeId) {
    let node = ds.get_attested_node(id).await.unwrap().unwrap();
    let banned = AttestedNode {
        cert_serial_number: String::new(),
        new_cert_serial_number: String::new(),
        ..node
    };
    let mask = NodeMask {
        cert_serial_number: true,
        new_cert_serial_number: true,
        ..NodeMask::default()
    };
    ds.update_attested_node(banned, &mask).await.unwrap();
}

#[async_trait]
impl DataStore for BanAfterRead {
    async fn get_attested_node(&self, spiffe_id: &SpiffeId) -> Result<Option<AttestedNode>> {
        let read = self.inner.get_attested_node(spiffe_id).await;
        if *spiffe_id == self.target && self.armed.swap(false, Ordering::SeqCst) {
            ban(self.inner.as_ref(), spiffe_id).await;
        }
        read
    }

    async fn create_entry(&self, entry: RegistrationEntry) -> Result<RegistrationEntry> {
        self.inner.create_entry(entry).await
    }

    async fn update_entry(
        &self,
        entry: RegistrationEntry,
        mask: &EntryMask,
    ) -> Result<RegistrationEntry> {
        self.inner.update_entry(entry, mask).await
    }

    async fn delete_entry(&self, id: &str) -> Result<RegistrationEntry> {
        self.inner.delete_entry(id).await
    }

    async fn get_entry(&self, id: &str) -> Result<Option<RegistrationEntry>> {
        self.inner.get_entry(id).await
    }

    async fn list_entries(&self, req: &ListEntriesRequest) -> Result<ListEntriesResponse> {
        self.inner.list_entries(req).await
    }

    async fn count_entries(&self, req: &ListEntriesRequest) -> Result<u64> {
        self.inner.count_entries(req).await
    }

    async fn list_entries_by_parents(
        &self,
        parent_ids: &[SpiffeId],
    ) -> Result<Vec<RegistrationEntry>> {
        self.inner.list_entries_by_parents(parent_ids).await
    }

    async fn list_entries_by_selector_subset(
        &self,
        selectors: &[Selector],
    ) -> Result<Vec<RegistrationEntry>> {
        self.inner.list_entries_by_selector_subset(selectors).await
    }

    async fn get_entries(&self, ids: &[String]) -> Result<Vec<RegistrationEntry>> {
        self.inner.get_entries(ids).await
    }

    async fn get_attested_nodes(&self, ids: &[SpiffeId]) -> Result<Vec<AttestedNode>> {
        self.inner.get_attested_nodes(ids).await
    }

    async fn prune_entries(&self, expires_before: i64, limit: u32) -> Result<u64> {
        self.inner.prune_entries(expires_before, limit).await
    }

    async fn list_entry_events_since(&self, after_id: i64) -> Result<Vec<(i64, String)>> {
        self.inner.list_entry_events_since(after_id).await
    }

    async fn latest_entry_event_id(&self) -> Result<i64> {
        self.inner.latest_entry_event_id().await
    }

    async fn prune_entry_events(&self, older_than: i64, limit: u32) -> Result<u64> {
        self.inner.prune_entry_events(older_than, limit).await
    }

    async fn create_attested_node(&self, node: AttestedNode) -> Result<AttestedNode> {
        self.inner.create_attested_node(node).await
    }

    async fn update_attested_node(
        &self,
        node: AttestedNode,
        mask: &NodeMask,
    ) -> Result<AttestedNode> {
        self.inner.update_attested_node(node, mask).await
    }

    async fn update_attested_node_if(
        &self,
        node: AttestedNode,
        mask: &NodeMask,
        expected: &NodeSerials,
    ) -> Result<Option<AttestedNode>> {
        self.inner
            .update_attested_node_if(node, mask, expected)
            .await
    }

    async fn attest_node(
        &self,
        node: AttestedNode,
        join_token: Option<&str>,
    ) -> Result<AttestedNode> {
        self.inner.attest_node(node, join_token).await
    }

    async fn delete_attested_node(&self, spiffe_id: &SpiffeId) -> Result<AttestedNode> {
        self.inner.delete_attested_node(spiffe_id).await
    }

    async fn prune_attested_nodes(
        &self,
        expired_before: i64,
        include_non_reattestable: bool,
        limit: u32,
    ) -> Result<Vec<SpiffeId>> {
        self.inner
            .prune_attested_nodes(expired_before, include_non_reattestable, limit)
            .await
    }

    async fn list_attested_nodes(
        &self,
        req: &ListNodesRequest,
    ) -> Result<(Vec<AttestedNode>, String)> {
        self.inner.list_attested_nodes(req).await
    }

    async fn count_attested_nodes(&self, req: &ListNodesRequest) -> Result<u64> {
        self.inner.count_attested_nodes(req).await
    }

    async fn set_node_selectors(
        &self,
        spiffe_id: &SpiffeId,
        selectors: Vec<Selector>,
    ) -> Result<()> {
        self.inner.set_node_selectors(spiffe_id, selectors).await
    }

    async fn get_node_selectors(&self, spiffe_id: &SpiffeId) -> Result<Vec<Selector>> {
        self.inner.get_node_selectors(spiffe_id).await
    }

    async fn list_node_events_since(&self, after_id: i64) -> Result<Vec<(i64, SpiffeId)>> {
        self.inner.list_node_events_since(after_id).await
    }

    async fn latest_node_event_id(&self) -> Result<i64> {
        self.inner.latest_node_event_id().await
    }

    async fn prune_node_events(&self, older_than: i64, limit: u32) -> Result<u64> {
        self.inner.prune_node_events(older_than, limit).await
    }

    async fn create_join_token(&self, token: JoinToken) -> Result<()> {
        self.inner.create_join_token(token).await
    }

    async fn create_join_token_with_entry(
        &self,
        token: JoinToken,
        entry: RegistrationEntry,
    ) -> Result<RegistrationEntry> {
        self.inner.create_join_token_with_entry(token, entry).await
    }

    async fn get_join_token(&self, token: &str) -> Result<Option<JoinToken>> {
        self.inner.get_join_token(token).await
    }

    async fn take_join_token(&self, token: &str) -> Result<Option<JoinToken>> {
        self.inner.take_join_token(token).await
    }

    async fn prune_join_tokens(&self, expires_before: i64) -> Result<u64> {
        self.inner.prune_join_tokens(expires_before).await
    }

    async fn set_bundle(&self, bundle: StoredBundle) -> Result<()> {
        self.inner.set_bundle(bundle).await
    }

    async fn set_bundle_if(&self, bundle: StoredBundle, expected: Option<&[u8]>) -> Result<bool> {
        self.inner.set_bundle_if(bundle, expected).await
    }

    async fn get_bundle(&self, trust_domain: &TrustDomain) -> Result<Option<StoredBundle>> {
        self.inner.get_bundle(trust_domain).await
    }

    async fn list_bundles(&self) -> Result<Vec<StoredBundle>> {
        self.inner.list_bundles().await
    }

    async fn delete_bundle(&self, trust_domain: &TrustDomain) -> Result<()> {
        self.inner.delete_bundle(trust_domain).await
    }

    async fn create_federation_relationship(
        &self,
        rel: FederationRelationship,
    ) -> Result<FederationRelationship> {
        self.inner.create_federation_relationship(rel).await
    }

    async fn get_federation_relationship(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<FederationRelationship>> {
        self.inner.get_federation_relationship(trust_domain).await
    }

    async fn list_federation_relationships(
        &self,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<FederationRelationship>, String)> {
        self.inner
            .list_federation_relationships(page_size, page_token)
            .await
    }

    async fn update_federation_relationship(
        &self,
        rel: FederationRelationship,
        mask: &FederationRelationshipMask,
    ) -> Result<FederationRelationship> {
        self.inner.update_federation_relationship(rel, mask).await
    }

    async fn delete_federation_relationship(&self, trust_domain: &TrustDomain) -> Result<()> {
        self.inner
            .delete_federation_relationship(trust_domain)
            .await
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

fn agent_id(token: &str) -> SpiffeId {
    SpiffeId::parse(&format!(
        "spiffe://example.org/spire/agent/join_token/{token}"
    ))
    .unwrap()
}

/// The running server's state with its datastore replaced by a
/// [`BanAfterRead`] for `target`.
fn state_banning_after_read(server: &Server, target: &SpiffeId) -> Arc<ApiState> {
    let s = &server.running.state;
    Arc::new(ApiState {
        td: s.td.clone(),
        server_id: s.server_id.clone(),
        ds: Arc::new(BanAfterRead {
            inner: s.ds.clone(),
            target: target.clone(),
            armed: AtomicBool::new(true),
        }),
        ca: s.ca.clone(),
        clock: s.clock.clone(),
        default_x509_svid_ttl: s.default_x509_svid_ttl,
        default_jwt_svid_ttl: s.default_jwt_svid_ttl,
        agent_svid_ttl: s.agent_svid_ttl,
        admin_ids: s.admin_ids.clone(),
        index: s.index.clone(),
        changes: s.changes.clone(),
        server_svid: s.server_svid.clone(),
        federation: s.federation.clone(),
        node_attestors: s.node_attestors.clone(),
        // Attestations in these tests come back to back from one address.
        limits: sigil_server::api::limits::RateLimits::new(
            sigil_server::api::limits::RateLimitConfig {
                attestation: false,
                signing: false,
            },
        ),
    })
}

/// A request as it arrives over mTLS from an agent presenting an SVID
/// with `serial`.
fn from_agent<T>(msg: T, id: &SpiffeId, serial: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.extensions_mut().insert(CallerInfo::Tls {
        addr: "127.0.0.1:1".parse().unwrap(),
        peer: Some(PeerCert {
            spiffe_id: id.clone(),
            serial: serial.into(),
            leaf_der: Vec::new(),
        }),
        goaway_at: None,
    });
    req
}

async fn create_node(server: &Server, id: &SpiffeId, serial: &str, new_serial: &str) {
    server
        .running
        .state
        .ds
        .create_attested_node(AttestedNode {
            spiffe_id: id.clone(),
            attestation_data_type: "join_token".into(),
            cert_serial_number: serial.into(),
            cert_not_after: 4_000_000_000,
            new_cert_serial_number: new_serial.into(),
            new_cert_not_after: if new_serial.is_empty() {
                0
            } else {
                4_000_000_000
            },
            can_reattest: false,
            selectors: Vec::new(),
        })
        .await
        .unwrap();
}

async fn stored(server: &Server, id: &SpiffeId) -> AttestedNode {
    server
        .running
        .state
        .ds
        .get_attested_node(id)
        .await
        .unwrap()
        .unwrap()
}

async fn banned_ids(server: &Server) -> Vec<String> {
    let (nodes, _) = server
        .running
        .state
        .ds
        .list_attested_nodes(&ListNodesRequest {
            by_banned: Some(true),
            ..ListNodesRequest::default()
        })
        .await
        .unwrap();
    nodes.iter().map(|n| n.spiffe_id.to_string()).collect()
}

/// An agent switching to its renewed SVID is promoted (its pending serial
/// becomes the current one). A ban landing between the server's read of
/// the record and that promotion must win: the agent is refused and stays
/// banned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_between_read_and_promotion_is_not_undone() {
    let server = start("sgban1").await;
    let id = agent_id("promoted");
    create_node(&server, &id, "a1", "b2").await;
    let state = state_banning_after_read(&server, &id);

    let result = authenticate(&state, &from_agent((), &id, "b2")).await;

    let err = result.expect_err("a banned agent must not authenticate");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("banned"), "{}", err.message());
    assert!(stored(&server, &id).await.is_banned(), "the ban was undone");
    assert_eq!(banned_ids(&server).await, [id.to_string()]);
}

/// RenewAgent writes the new SVID's serial as pending. A ban landing
/// between the server's read and that write must win: the renewal is
/// refused with PermissionDenied (as SPIRE refuses banned agents) and the
/// agent stays banned and listed as banned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_between_read_and_renewal_is_not_undone() {
    let server = start("sgban2").await;
    let id = agent_id("renewing");
    create_node(&server, &id, "a1", "").await;
    let state = state_banning_after_read(&server, &id);
    let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
    let csr = sigil_crypto::csr::create_csr(&key, None).unwrap();
    let req = agentpb::RenewAgentRequest {
        params: Some(agentpb::AgentX509svidParams { csr }),
    };

    let result = AgentService::new(state)
        .renew_agent(from_agent(req, &id, "a1"))
        .await;

    let err = result.expect_err("a banned agent must not renew");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(stored(&server, &id).await.is_banned(), "the ban was undone");
    assert_eq!(banned_ids(&server).await, [id.to_string()]);
}

async fn create_token(server: &Server, token: &str, alias: Option<&str>) -> tonic::Result<()> {
    agentpb::agent_client::AgentClient::new(server.admin.clone())
        .create_join_token(agentpb::CreateJoinTokenRequest {
            ttl: 600,
            token: token.into(),
            agent_id: alias.map(|path| types::Spiffeid {
                trust_domain: "example.org".into(),
                path: path.into(),
            }),
        })
        .await
        .map(|_| ())
}

/// AttestAgent that fails after the join token was checked (here: the CSR
/// cannot be parsed, so no SVID can be signed) changes nothing: the token
/// is still usable, and no agent was recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attestation_leaves_the_join_token_usable() {
    let server = start("sgatt1").await;
    create_token(&server, "kept", None).await.unwrap();
    let roots = roots(&server.admin).await;
    let addr = server.running.agent_addr;

    let cfg = sigil_crypto::tls::client_config(roots.clone(), common::server_id(), None).unwrap();
    let mut client = agentpb::agent_client::AgentClient::new(common::tls_channel(addr, cfg).await);
    let req = agentpb::AttestAgentRequest {
        step: Some(agentpb::attest_agent_request::Step::Params(
            agentpb::attest_agent_request::Params {
                data: Some(types::AttestationData {
                    r#type: "join_token".into(),
                    payload: b"kept".to_vec(),
                }),
                params: Some(agentpb::AgentX509svidParams {
                    csr: b"not a CSR".to_vec(),
                }),
            },
        )),
    };
    let err = match client.attest_agent(futures::stream::iter([req])).await {
        Err(e) => e,
        Ok(resp) => resp.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(
        server
            .running
            .state
            .ds
            .get_attested_node(&agent_id("kept"))
            .await
            .unwrap(),
        None
    );

    attest(addr, roots, "kept")
        .await
        .expect("the token was not spent by the failed attempt");
}

/// Of concurrent attestations with one join token exactly one succeeds;
/// the others are refused as SPIRE refuses a used token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_attestations_with_one_token_exactly_one_wins() {
    let server = start("sgatt2").await;
    create_token(&server, "contested", None).await.unwrap();
    let roots = roots(&server.admin).await;
    let addr = server.running.agent_addr;
    let tries: Vec<_> = (0..8)
        .map(|_| {
            let roots = roots.clone();
            tokio::spawn(async move { attest(addr, roots, "contested").await.map(|_| ()) })
        })
        .collect();
    let mut won = 0;
    for t in tries {
        match t.await.unwrap() {
            Ok(()) => won += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
                assert!(e.message().contains("join token"), "{}", e.message());
            }
        }
    }
    assert_eq!(won, 1);
}

/// CreateJoinToken with an agent alias stores the token and the alias
/// entry together: when the entry cannot be created (it duplicates an
/// existing one), the token is not stored either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_token_whose_alias_entry_fails_is_not_created() {
    let server = start("sgtok").await;
    let agent = agent_id("aliased");
    let dup = types::Entry {
        parent_id: Some(types::Spiffeid {
            trust_domain: "example.org".into(),
            path: agent.path().into(),
        }),
        spiffe_id: Some(types::Spiffeid {
            trust_domain: "example.org".into(),
            path: "/node/alias".into(),
        }),
        selectors: vec![types::Selector {
            r#type: "spiffe_id".into(),
            value: agent.to_string(),
        }],
        ..Default::default()
    };
    let created = entrypb::entry_client::EntryClient::new(server.admin.clone())
        .batch_create_entry(entrypb::BatchCreateEntryRequest {
            entries: vec![dup],
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.results[0].status.as_ref().unwrap().code, 0);

    let err = create_token(&server, "aliased", Some("/node/alias"))
        .await
        .expect_err("the alias entry duplicates an existing one");
    assert_ne!(err.code(), Code::Ok);

    let err = attest(
        server.running.agent_addr,
        roots(&server.admin).await,
        "aliased",
    )
    .await
    .err()
    .expect("the token must not exist");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}
