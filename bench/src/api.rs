//! The server's two APIs as the benchmark drives them, in SPIRE's protocol so
//! the same code measures sigil-server and spire-server: the admin API on the
//! server's Unix socket (bundle, join tokens, entries in bulk) and the agent
//! API over mTLS (join-token attestation, entry sync, SVID signing).
//!
//! This module owns connections and single calls; it keeps no statistics and
//! decides no schedule (that is `fleet.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::ServerName;
use sigil_proto::spire::api::server::agent::v1 as agentpb;
use sigil_proto::spire::api::server::bundle::v1 as bundlepb;
use sigil_proto::spire::api::server::entry::v1 as entrypb;
use sigil_proto::spire::api::server::svid::v1 as svidpb;
use sigil_proto::spire::api::types;
use sigil_spiffe::SpiffeId;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::BenchError;

/// Entries per `BatchCreateEntry`: sigil-server's bound (SPIRE has none).
const ENTRY_BATCH: usize = sigil_proto::MAX_ENTRY_BATCH;
/// IDs asked for per request in a sparse `SyncAuthorizedEntries`; the page
/// size both servers use.
const SYNC_ID_CHUNK: usize = 500;

/// A gRPC channel over a Unix socket; the URI is a placeholder the
/// connector ignores.
pub async fn uds_channel(socket: &Path) -> Result<Channel, BenchError> {
    let path = socket.to_path_buf();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await
        .map_err(|e| BenchError::Connect(format!("{}: {e}", socket.display())))
}

fn rpc_err(what: &'static str) -> impl Fn(tonic::Status) -> BenchError {
    move |s| BenchError::Rpc(what, format!("{:?}: {}", s.code(), s.message()))
}

/// The SPIFFE ID message for `path` in `td`.
pub fn id(td: &str, path: &str) -> types::Spiffeid {
    types::Spiffeid {
        trust_domain: td.to_owned(),
        path: path.to_owned(),
    }
}

/// Path of the agent ID a join token yields (SPIRE's join_token attestor).
pub fn join_token_agent_path(token: &str) -> String {
    format!("/spire/agent/join_token/{token}")
}

/// A workload entry under `parent_path` with one `unix:uid` selector.
pub fn workload_entry(td: &str, parent_path: &str, path: &str, uid: &str) -> types::Entry {
    types::Entry {
        spiffe_id: Some(id(td, path)),
        parent_id: Some(id(td, parent_path)),
        selectors: vec![types::Selector {
            r#type: "unix".into(),
            value: format!("uid:{uid}"),
        }],
        ..Default::default()
    }
}

/// The admin API on the server's Unix socket.
#[derive(Debug, Clone)]
pub struct Admin {
    ch: Channel,
}

impl Admin {
    /// Connects to the admin socket.
    pub async fn connect(socket: &Path) -> Result<Self, BenchError> {
        Ok(Admin {
            ch: uds_channel(socket).await?,
        })
    }

    /// The trust domain's X.509 authorities (DER), to verify the server.
    pub async fn x509_roots(&self) -> Result<Vec<Vec<u8>>, BenchError> {
        let b = bundlepb::bundle_client::BundleClient::new(self.ch.clone())
            .get_bundle(bundlepb::GetBundleRequest { output_mask: None })
            .await
            .map_err(rpc_err("GetBundle"))?
            .into_inner();
        Ok(b.x509_authorities.into_iter().map(|a| a.asn1).collect())
    }

    /// `n` join tokens (TTL one day), created `concurrency` at a time.
    pub async fn join_tokens(
        &self,
        n: usize,
        concurrency: usize,
    ) -> Result<Vec<String>, BenchError> {
        let mut out = Vec::with_capacity(n);
        let mut set = tokio::task::JoinSet::new();
        let mut next = 0usize;
        let conc = concurrency.max(1);
        while out.len() < n {
            while next < n && set.len() < conc {
                let mut c = agentpb::agent_client::AgentClient::new(self.ch.clone());
                set.spawn(async move {
                    c.create_join_token(agentpb::CreateJoinTokenRequest {
                        ttl: 86_400,
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().value)
                    .map_err(rpc_err("CreateJoinToken"))
                });
                next += 1;
            }
            match set.join_next().await {
                Some(Ok(r)) => out.push(r?),
                Some(Err(e)) => return Err(BenchError::Task(e.to_string())),
                None => break,
            }
        }
        Ok(out)
    }

    /// Creates `entries` in batches; returns their IDs in order. Any entry
    /// the server refuses is an error: a benchmark over a partial set would
    /// measure something else.
    pub async fn create_entries(
        &self,
        entries: Vec<types::Entry>,
    ) -> Result<Vec<String>, BenchError> {
        let mut ids = Vec::with_capacity(entries.len());
        let mut client = entrypb::entry_client::EntryClient::new(self.ch.clone());
        let mut rest = entries;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(ENTRY_BATCH));
            let batch = std::mem::replace(&mut rest, tail);
            let resp = client
                .batch_create_entry(entrypb::BatchCreateEntryRequest {
                    entries: batch,
                    output_mask: Some(types::EntryMask::default()),
                })
                .await
                .map_err(rpc_err("BatchCreateEntry"))?
                .into_inner();
            for r in resp.results {
                match (r.status, r.entry) {
                    (Some(s), _) if s.code != 0 => {
                        return Err(BenchError::Rpc("BatchCreateEntry", s.message));
                    }
                    (_, Some(e)) => ids.push(e.id),
                    _ => {
                        return Err(BenchError::Rpc(
                            "BatchCreateEntry",
                            "result without entry".into(),
                        ));
                    }
                }
            }
        }
        Ok(ids)
    }
}

/// Where the agent API listens and how to trust it.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub roots: Vec<Vec<u8>>,
    pub server_id: SpiffeId,
}

impl Target {
    /// The server at `addr` for trust domain `td`, trusted through `roots`.
    pub fn new(addr: SocketAddr, td: &str, roots: Vec<Vec<u8>>) -> Result<Self, BenchError> {
        let server_id = SpiffeId::parse(&format!("spiffe://{td}/spire/server"))
            .map_err(|e| BenchError::Usage(format!("trust domain {td}: {e}")))?;
        Ok(Target {
            addr,
            roots,
            server_id,
        })
    }

    /// One HTTP/2 connection over TLS, presenting `identity` when given.
    pub async fn connect(&self, identity: Option<&Identity>) -> Result<Channel, BenchError> {
        let cfg = sigil_crypto::tls::client_config(
            self.roots.clone(),
            self.server_id.clone(),
            identity.map(|i| (i.chain.clone(), i.key_der.clone())),
        )
        .map_err(|e| BenchError::Tls(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let addr = self.addr;
        Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| BenchError::Usage(e.to_string()))?
            .connect_with_connector(tower::service_fn(move |_| {
                let tls = tls.clone();
                async move {
                    let tcp = tokio::net::TcpStream::connect(addr).await?;
                    tcp.set_nodelay(true)?;
                    let stream = tls
                        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
                        .await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|e| BenchError::Connect(format!("{addr}: {e:?}")))
    }
}

/// An agent's TLS identity: its SVID chain (leaf first) and PKCS#8 key.
#[derive(Debug, Clone)]
pub struct Identity {
    pub chain: Vec<Vec<u8>>,
    pub key_der: Vec<u8>,
}

/// A fresh P-256 key and a CSR for it, DER. The servers take the SPIFFE ID
/// from the entry or attestation, so the CSR names nothing.
pub fn key_and_csr() -> Result<(Vec<u8>, Vec<u8>), BenchError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| BenchError::Tls(e.to_string()))?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .map_err(|e| BenchError::Tls(e.to_string()))?;
    Ok((key.serialize_der(), csr.der().to_vec()))
}

/// Join-token attestation on a connection without a client certificate;
/// returns the agent's identity.
pub async fn attest(target: &Target, token: &str) -> Result<Identity, BenchError> {
    let (key_der, csr) = key_and_csr()?;
    let ch = target.connect(None).await?;
    let mut client = agentpb::agent_client::AgentClient::new(ch);
    let first = agentpb::AttestAgentRequest {
        step: Some(agentpb::attest_agent_request::Step::Params(
            agentpb::attest_agent_request::Params {
                data: Some(types::AttestationData {
                    r#type: "join_token".into(),
                    payload: token.as_bytes().to_vec(),
                }),
                params: Some(agentpb::AgentX509svidParams { csr }),
            },
        )),
    };
    let (tx, rx) = mpsc::channel(1);
    tx.send(first)
        .await
        .map_err(|_| BenchError::Task("attest request channel closed".into()))?;
    let mut stream = client
        .attest_agent(ReceiverStream::new(rx))
        .await
        .map_err(rpc_err("AttestAgent"))?
        .into_inner();
    let resp = stream
        .message()
        .await
        .map_err(rpc_err("AttestAgent"))?
        .ok_or_else(|| BenchError::Rpc("AttestAgent", "stream ended without a result".into()))?;
    drop(tx);
    match resp.step {
        Some(agentpb::attest_agent_response::Step::Result(r)) => {
            let svid = r
                .svid
                .ok_or_else(|| BenchError::Rpc("AttestAgent", "result without SVID".into()))?;
            Ok(Identity {
                chain: svid.cert_chain,
                key_der,
            })
        }
        _ => Err(BenchError::Rpc(
            "AttestAgent",
            "unexpected challenge for join_token".into(),
        )),
    }
}

/// What one sync changed in the agent's view.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    /// Entries the agent is authorized for now.
    pub total: usize,
    /// Entries new or changed since the last sync (IDs).
    pub changed: Vec<String>,
}

/// The agent's view of its authorized entries: ID to revision number.
pub type EntryCache = HashMap<String, i64>;

/// One `SyncAuthorizedEntries` exchange as SPIRE's agent runs it: a full
/// list when the server sends one, otherwise revisions first and then the
/// new or changed entries by ID.
pub async fn sync_entries(ch: &Channel, cache: &mut EntryCache) -> Result<SyncOutcome, BenchError> {
    let err = rpc_err("SyncAuthorizedEntries");
    let mut client = entrypb::entry_client::EntryClient::new(ch.clone())
        .max_decoding_message_size(sigil_proto::MAX_MESSAGE_SIZE);
    let (tx, rx) = mpsc::channel(2);
    tx.send(entrypb::SyncAuthorizedEntriesRequest::default())
        .await
        .map_err(|_| BenchError::Task("sync request channel closed".into()))?;
    let mut stream = client
        .sync_authorized_entries(ReceiverStream::new(rx))
        .await
        .map_err(&err)?
        .into_inner();
    let mut revisions = Vec::new();
    let mut full = Vec::new();
    loop {
        let page = stream.message().await.map_err(&err)?.ok_or_else(|| {
            BenchError::Rpc("SyncAuthorizedEntries", "stream ended mid-listing".into())
        })?;
        revisions.extend(page.entry_revisions);
        full.extend(page.entries);
        if !page.more {
            break;
        }
    }
    let mut out = SyncOutcome::default();
    if revisions.is_empty() {
        // The whole list came at once.
        let mut next = EntryCache::with_capacity(full.len());
        for e in full {
            if cache.get(&e.id) != Some(&e.revision_number) {
                out.changed.push(e.id.clone());
            }
            next.insert(e.id, e.revision_number);
        }
        *cache = next;
        out.total = cache.len();
        drop(tx);
        return Ok(out);
    }
    let wanted: Vec<String> = revisions
        .iter()
        .filter(|r| cache.get(&r.id) != Some(&r.revision_number))
        .map(|r| r.id.clone())
        .collect();
    let live: std::collections::HashSet<&str> = revisions.iter().map(|r| r.id.as_str()).collect();
    cache.retain(|id, _| live.contains(id.as_str()));
    for chunk in wanted.chunks(SYNC_ID_CHUNK) {
        tx.send(entrypb::SyncAuthorizedEntriesRequest {
            output_mask: None,
            ids: chunk.to_vec(),
        })
        .await
        .map_err(|_| BenchError::Rpc("SyncAuthorizedEntries", "server closed the stream".into()))?;
        loop {
            let page = stream.message().await.map_err(&err)?.ok_or_else(|| {
                BenchError::Rpc("SyncAuthorizedEntries", "stream ended mid-fetch".into())
            })?;
            for e in page.entries {
                out.changed.push(e.id.clone());
                cache.insert(e.id, e.revision_number);
            }
            if !page.more {
                break;
            }
        }
    }
    drop(tx);
    out.total = cache.len();
    Ok(out)
}

/// One `GetAuthorizedEntries`: the full list, replacing the cache.
pub async fn get_entries(ch: &Channel, cache: &mut EntryCache) -> Result<SyncOutcome, BenchError> {
    let resp = entrypb::entry_client::EntryClient::new(ch.clone())
        .max_decoding_message_size(sigil_proto::MAX_MESSAGE_SIZE)
        .get_authorized_entries(entrypb::GetAuthorizedEntriesRequest { output_mask: None })
        .await
        .map_err(rpc_err("GetAuthorizedEntries"))?
        .into_inner();
    let mut out = SyncOutcome::default();
    let mut next = EntryCache::with_capacity(resp.entries.len());
    for e in resp.entries {
        if cache.get(&e.id) != Some(&e.revision_number) {
            out.changed.push(e.id.clone());
        }
        next.insert(e.id, e.revision_number);
    }
    *cache = next;
    out.total = cache.len();
    Ok(out)
}

/// `BatchNewX509SVID` with one CSR per entry ID; returns how many SVIDs
/// came back. A per-entry failure is an error.
pub async fn new_x509(ch: &Channel, entry_ids: &[String], csr: &[u8]) -> Result<usize, BenchError> {
    let resp = svidpb::svid_client::SvidClient::new(ch.clone())
        .batch_new_x509svid(svidpb::BatchNewX509svidRequest {
            params: entry_ids
                .iter()
                .map(|id| svidpb::NewX509svidParams {
                    entry_id: id.clone(),
                    csr: csr.to_vec(),
                })
                .collect(),
        })
        .await
        .map_err(rpc_err("BatchNewX509SVID"))?
        .into_inner();
    let mut n = 0;
    for r in resp.results {
        match (r.status, r.svid) {
            (Some(s), _) if s.code != 0 => {
                return Err(BenchError::Rpc("BatchNewX509SVID", s.message));
            }
            (_, Some(_)) => n += 1,
            _ => {
                return Err(BenchError::Rpc(
                    "BatchNewX509SVID",
                    "result without SVID".into(),
                ));
            }
        }
    }
    Ok(n)
}

/// `NewJWTSVID` for `entry_id` and one audience.
pub async fn new_jwt(ch: &Channel, entry_id: &str, audience: String) -> Result<(), BenchError> {
    let resp = svidpb::svid_client::SvidClient::new(ch.clone())
        .new_jwtsvid(svidpb::NewJwtsvidRequest {
            entry_id: entry_id.to_owned(),
            audience: vec![audience],
        })
        .await
        .map_err(rpc_err("NewJWTSVID"))?
        .into_inner();
    match resp.svid {
        Some(s) if !s.token.is_empty() => Ok(()),
        _ => Err(BenchError::Rpc("NewJWTSVID", "no token".into())),
    }
}
