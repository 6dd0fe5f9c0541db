//! The agent's gRPC client to the server: mutual TLS over TCP with the
//! agent SVID as client certificate, the server authenticated by SPIFFE ID
//! (`spiffe://<td>/spire/server`) against the current trust bundle.
//!
//! TLS is done here rather than by tonic, through a custom connector, so
//! the agent key can stay inside its KeyManager (rustls signs through
//! [`sigil_crypto::key::Signer`]) and so insecure bootstrap can relax
//! exactly one check. Credentials change (agent SVID rotation, bundle
//! updates) by swapping in a new lazily connecting [`Channel`]; calls
//! already in flight finish on the old one.
//!
//! Insecure bootstrap (SPIRE's `insecure_bootstrap`): the chain is not
//! verified, only the leaf's SPIFFE ID is compared with the server's, and a
//! warning is logged on every such handshake. Handshake signatures are still
//! checked, so the peer at least holds the key of the certificate it shows.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use sigil_crypto::CryptoError;
use sigil_plugin::nodeattestor::AgentNodeAttestor;
use sigil_proto::MAX_MESSAGE_SIZE;
use sigil_proto::sigil::api::server::sync::v1 as sync_pb;
use sigil_proto::spire::api::server::agent::v1 as agent_pb;
use sigil_proto::spire::api::server::bundle::v1 as bundle_pb;
use sigil_proto::spire::api::server::entry::v1 as entry_pb;
use sigil_proto::spire::api::server::svid::v1 as svid_pb;
use sigil_proto::spire::api::types;
use sigil_spiffe::bundle::JwtAuthority;
use sigil_spiffe::{Bundle, Selector, SpiffeId, TrustDomain};
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use super::api::{
    AgentIdentity, Attested, AuthorizedEntry, Change, EntryChanges, EntryPage, EntryRevision,
    EntrySyncStream, IssuedJwt, IssuedX509, ServerApi, ServerTrust,
};

/// How long establishing a connection (TCP + TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one RPC may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// [`ServerApi`] over gRPC/mTLS to a SPIRE-compatible server.
#[derive(Debug)]
pub struct TonicServerApi {
    host: String,
    port: u16,
    trust_domain: TrustDomain,
    server_id: SpiffeId,
    channel: RwLock<Option<Channel>>,
}

impl TonicServerApi {
    /// A client for `host:port`, serving trust domain `trust_domain`. It has
    /// no credentials until [`ServerApi::set_credentials`] is called.
    pub fn new(host: &str, port: u16, trust_domain: TrustDomain) -> Self {
        TonicServerApi {
            host: host.to_owned(),
            port,
            server_id: crate::config::server_id(&trust_domain),
            trust_domain,
            channel: RwLock::new(None),
        }
    }

    fn channel(&self) -> Result<Channel, Status> {
        self.channel
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| Status::failed_precondition("the agent has no server credentials yet"))
    }

    fn build_channel(&self, tls: Arc<ClientConfig>) -> Result<Channel, CryptoError> {
        // The URI only has to be well formed: the connector below dials
        // host:port itself and does the TLS.
        let uri = format!("http://{}", authority(&self.host, self.port));
        let endpoint = Endpoint::from_shared(uri.clone())
            .or_else(|_| Endpoint::from_shared(format!("http://localhost:{}", self.port)))
            .map_err(|e| CryptoError::TlsConfig {
                reason: format!("server address {uri:?}: {e}"),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true);
        let server_name =
            ServerName::try_from(self.host.clone()).map_err(|e| CryptoError::TlsConfig {
                reason: format!(
                    "server_address {:?} is not a valid host name: {e}",
                    self.host
                ),
            })?;
        let host = self.host.clone();
        let port = self.port;
        let connector = tower::service_fn(move |_uri: http::Uri| {
            let tls = tls.clone();
            let host = host.clone();
            let server_name = server_name.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let stream = tokio_rustls::TlsConnector::from(tls)
                    .connect(server_name, tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        });
        Ok(endpoint.connect_with_connector_lazy(connector))
    }
}

#[async_trait]
impl ServerApi for TonicServerApi {
    fn set_credentials(
        &self,
        trust: ServerTrust,
        identity: Option<AgentIdentity>,
    ) -> Result<(), CryptoError> {
        let tls = Arc::new(client_tls_config(
            &trust,
            self.server_id.clone(),
            identity.as_ref(),
        )?);
        let channel = self.build_channel(tls)?;
        *self.channel.write().unwrap_or_else(|p| p.into_inner()) = Some(channel);
        Ok(())
    }

    async fn attest_agent(
        &self,
        attestor: &dyn AgentNodeAttestor,
        payload: Vec<u8>,
        csr: Vec<u8>,
    ) -> Result<Attested, Status> {
        let mut client = agent_pb::agent_client::AgentClient::new(self.channel()?)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let params = agent_pb::AttestAgentRequest {
            step: Some(agent_pb::attest_agent_request::Step::Params(
                agent_pb::attest_agent_request::Params {
                    data: Some(types::AttestationData {
                        r#type: attestor.name().to_owned(),
                        payload,
                    }),
                    params: Some(agent_pb::AgentX509svidParams { csr }),
                },
            )),
        };
        // The request stream stays open for challenge responses; it holds
        // at most one message waiting, as the server asks one challenge at
        // a time.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(params)
            .await
            .map_err(|_| Status::internal("attestation request stream closed"))?;
        let mut responses = client
            .attest_agent(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        loop {
            let response = responses.message().await?.ok_or_else(|| {
                Status::unavailable("the server closed the attestation stream without a result")
            })?;
            match response.step {
                Some(agent_pb::attest_agent_response::Step::Result(result)) => {
                    let svid = result
                        .svid
                        .ok_or_else(|| Status::internal("attest response is missing SVID"))?;
                    if svid.cert_chain.is_empty() {
                        return Err(Status::internal(
                            "attest response has an empty SVID cert chain",
                        ));
                    }
                    return Ok(Attested {
                        chain: svid.cert_chain,
                        reattestable: result.reattestable,
                    });
                }
                Some(agent_pb::attest_agent_response::Step::Challenge(challenge)) => {
                    let answer = attestor.respond(&challenge).await.map_err(|e| {
                        Status::failed_precondition(format!(
                            "the {} node attestor could not answer the server's challenge: {e}",
                            attestor.name()
                        ))
                    })?;
                    tx.send(agent_pb::AttestAgentRequest {
                        step: Some(agent_pb::attest_agent_request::Step::ChallengeResponse(
                            answer,
                        )),
                    })
                    .await
                    .map_err(|_| Status::unavailable("attestation request stream closed"))?;
                }
                None => {
                    return Err(Status::internal(
                        "attest response has neither result nor challenge",
                    ));
                }
            }
        }
    }

    async fn renew_agent(&self, csr: Vec<u8>) -> Result<Vec<Vec<u8>>, Status> {
        let mut client = agent_pb::agent_client::AgentClient::new(self.channel()?)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let response = client
            .renew_agent(agent_pb::RenewAgentRequest {
                params: Some(agent_pb::AgentX509svidParams { csr }),
            })
            .await?
            .into_inner();
        let svid = response
            .svid
            .ok_or_else(|| Status::internal("renew response is missing SVID"))?;
        if svid.cert_chain.is_empty() {
            return Err(Status::internal(
                "renew response has an empty SVID cert chain",
            ));
        }
        Ok(svid.cert_chain)
    }

    async fn get_bundle(&self) -> Result<Bundle, Status> {
        let mut client = bundle_pb::bundle_client::BundleClient::new(self.channel()?)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let bundle = client
            .get_bundle(bundle_pb::GetBundleRequest { output_mask: None })
            .await?
            .into_inner();
        bundle_from_proto(&self.trust_domain, bundle).map_err(Status::internal)
    }

    async fn get_federated_bundle(&self, td: &TrustDomain) -> Result<Bundle, Status> {
        let mut client = bundle_pb::bundle_client::BundleClient::new(self.channel()?)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let bundle = client
            .get_federated_bundle(bundle_pb::GetFederatedBundleRequest {
                trust_domain: td.name().to_owned(),
                output_mask: None,
            })
            .await?
            .into_inner();
        bundle_from_proto(td, bundle).map_err(Status::internal)
    }

    async fn sync_authorized_entries(&self) -> Result<Box<dyn EntrySyncStream>, Status> {
        let mut client = entry_pb::entry_client::EntryClient::new(self.channel()?)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        // The agent asks for one batch of IDs at a time and reads the
        // answer before the next, so one request waits at most.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(entry_pb::SyncAuthorizedEntriesRequest {
            output_mask: Some(entry_output_mask()),
            ids: Vec::new(),
        })
        .await
        .map_err(|_| Status::internal("entry sync request stream closed"))?;
        let responses = client
            .sync_authorized_entries(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Box::new(TonicEntrySync { tx, responses }))
    }

    async fn batch_new_x509_svid(
        &self,
        csrs: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<Result<IssuedX509, Status>>, Status> {
        let mut client = svid_pb::svid_client::SvidClient::new(self.channel()?)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let n = csrs.len();
        let response = client
            .batch_new_x509svid(svid_pb::BatchNewX509svidRequest {
                params: csrs
                    .into_iter()
                    .map(|(entry_id, csr)| svid_pb::NewX509svidParams { entry_id, csr })
                    .collect(),
            })
            .await?
            .into_inner();
        if response.results.len() != n {
            return Err(Status::internal(format!(
                "the server answered {} results for {n} CSRs",
                response.results.len()
            )));
        }
        Ok(response
            .results
            .into_iter()
            .map(|r| {
                let status = r.status.unwrap_or_default();
                if status.code != 0 {
                    return Err(Status::new(tonic::Code::from(status.code), status.message));
                }
                match r.svid {
                    Some(svid) if !svid.cert_chain.is_empty() => Ok(IssuedX509 {
                        chain: svid.cert_chain,
                        expires_at: svid.expires_at,
                    }),
                    _ => Err(Status::internal("the server returned OK without an SVID")),
                }
            })
            .collect())
    }

    async fn new_jwt_svid(&self, entry_id: &str, audience: &[String]) -> Result<IssuedJwt, Status> {
        let mut client = svid_pb::svid_client::SvidClient::new(self.channel()?)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let response = client
            .new_jwtsvid(svid_pb::NewJwtsvidRequest {
                entry_id: entry_id.to_owned(),
                audience: audience.to_vec(),
            })
            .await?
            .into_inner();
        let svid = response
            .svid
            .ok_or_else(|| Status::internal("NewJWTSVID response is missing the SVID"))?;
        let spiffe_id = id_from_proto(svid.id.as_ref()).map_err(Status::internal)?;
        Ok(IssuedJwt {
            token: svid.token,
            spiffe_id,
            issued_at: svid.issued_at,
            expires_at: svid.expires_at,
            hint: svid.hint,
        })
    }
    async fn watch_changes(&self) -> Result<super::api::ChangeStream, Status> {
        use futures::StreamExt;
        let mut client = sync_pb::sync_client::SyncClient::new(self.channel()?)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let stream = client
            .watch_changes(sync_pb::WatchChangesRequest {
                entry_changes: true,
            })
            .await?
            .into_inner();
        let td = self.trust_domain.clone();
        Ok(Box::pin(
            stream.map(move |r| r.map(|msg| change_from_proto(&td, msg))),
        ))
    }
}

/// How long the agent waits for one `SyncAuthorizedEntries` response.
const ENTRY_PAGE_TIMEOUT: Duration = REQUEST_TIMEOUT;

/// The fields of an entry the agent uses (SPIRE's agent asks for the same
/// ones, plus DNS names and TTLs, which sigil's agent compares to decide
/// whether an SVID must be re-issued).
fn entry_output_mask() -> types::EntryMask {
    types::EntryMask {
        spiffe_id: true,
        selectors: true,
        x509_svid_ttl: true,
        federates_with: true,
        admin: true,
        downstream: true,
        dns_names: true,
        revision_number: true,
        store_svid: true,
        jwt_svid_ttl: true,
        hint: true,
        created_at: true,
        ..Default::default()
    }
}

/// [`EntrySyncStream`] over a gRPC bidirectional stream.
struct TonicEntrySync {
    tx: tokio::sync::mpsc::Sender<entry_pb::SyncAuthorizedEntriesRequest>,
    responses: tonic::Streaming<entry_pb::SyncAuthorizedEntriesResponse>,
}

#[async_trait]
impl EntrySyncStream for TonicEntrySync {
    async fn request(&mut self, ids: Vec<String>) -> Result<(), Status> {
        self.tx
            .send(entry_pb::SyncAuthorizedEntriesRequest {
                output_mask: None,
                ids,
            })
            .await
            .map_err(|_| Status::unavailable("the server closed the entry sync stream"))
    }

    async fn next_page(&mut self) -> Result<EntryPage, Status> {
        let msg = tokio::time::timeout(ENTRY_PAGE_TIMEOUT, self.responses.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no SyncAuthorizedEntries response in time"))??
            .ok_or_else(|| {
                Status::unavailable("the server ended SyncAuthorizedEntries before the last page")
            })?;
        Ok(EntryPage {
            revisions: msg
                .entry_revisions
                .into_iter()
                .filter_map(|r| {
                    if r.id.is_empty() || r.revision_number < 0 {
                        tracing::warn!(entry_id = %r.id, revision_number = r.revision_number, "Ignoring malformed entry revision");
                        return None;
                    }
                    Some((
                        r.id,
                        EntryRevision {
                            revision_number: r.revision_number,
                            created_at: r.created_at,
                        },
                    ))
                })
                .collect(),
            entries: entries_from_proto(msg.entries),
            more: msg.more,
        })
    }
}

/// Converts entries, dropping (with a warning) the malformed ones.
fn entries_from_proto(entries: Vec<types::Entry>) -> Vec<AuthorizedEntry> {
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let id = entry.id.clone();
        match entry_from_proto(entry) {
            Ok(e) => out.push(e),
            Err(reason) => {
                tracing::warn!(entry_id = %id, error = %reason, "Ignoring malformed authorized entry");
            }
        }
    }
    out
}

/// Converts one `WatchChanges` message. A bundle the agent cannot use is
/// left out and turned into a resync, so the full sync fetches it again.
fn change_from_proto(td: &TrustDomain, msg: sync_pb::WatchChangesResponse) -> Change {
    let mut resync = msg.resync;
    let bundle = msg.bundle.and_then(|b| match bundle_from_proto(td, b) {
        Ok(b) => Some(b),
        Err(reason) => {
            tracing::warn!(error = %reason, "Ignoring an unusable pushed bundle; syncing instead");
            resync = true;
            None
        }
    });
    Change {
        entries: msg.entries.map(|e| EntryChanges {
            reset: e.reset,
            upserted: entries_from_proto(e.upserted),
            removed: e.removed,
            more: e.more,
        }),
        bundle,
        resync,
    }
}

/// The rustls client configuration for talking to the server (see
/// [`sigil_crypto::tls::client_config_with_signer`]).
pub fn client_tls_config(
    trust: &ServerTrust,
    server_id: SpiffeId,
    identity: Option<&AgentIdentity>,
) -> Result<ClientConfig, CryptoError> {
    if matches!(trust, ServerTrust::InsecureBootstrap) {
        tracing::warn!("Insecure bootstrap enabled; skipping server certificate verification");
    }
    sigil_crypto::tls::client_config_with_signer(
        trust,
        server_id,
        identity.map(|i| sigil_crypto::tls::SignerIdentity {
            chain: i.chain.clone(),
            key: i.key.clone(),
        }),
    )
}

/// Converts a `spire.api.types.Bundle` that must be trust domain `td`'s.
pub fn bundle_from_proto(td: &TrustDomain, b: types::Bundle) -> Result<Bundle, String> {
    if b.trust_domain != td.name() {
        return Err(format!(
            "the server sent the bundle of trust domain {:?}, expected {:?}",
            b.trust_domain,
            td.name()
        ));
    }
    let mut bundle = Bundle::new(td.clone());
    for a in b.x509_authorities {
        if !bundle.x509_authorities.contains(&a.asn1) {
            bundle.x509_authorities.push(a.asn1);
        }
    }
    bundle.jwt_authorities = b
        .jwt_authorities
        .into_iter()
        .map(|k| JwtAuthority {
            key_id: k.key_id,
            public_key_der: k.public_key,
            expires_at: (k.expires_at != 0).then_some(k.expires_at),
        })
        .collect();
    bundle.refresh_hint_seconds = (b.refresh_hint != 0).then_some(b.refresh_hint);
    bundle.sequence_number = b.sequence_number;
    Ok(bundle)
}

/// Converts a `spire.api.types.Entry`.
pub fn entry_from_proto(e: types::Entry) -> Result<AuthorizedEntry, String> {
    if e.id.is_empty() {
        return Err("entry has no ID".into());
    }
    let spiffe_id = id_from_proto(e.spiffe_id.as_ref())?;
    let selectors = e
        .selectors
        .iter()
        .map(|s| Selector::new(&s.r#type, &s.value).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    // The API carries names; IDs (`spiffe://td`) are accepted too, as SPIRE
    // parses them with TrustDomainFromString.
    let federates_with = e
        .federates_with
        .iter()
        .map(|t| {
            TrustDomain::new(t)
                .map_err(|err| format!("invalid federated trust domain {t:?}: {err}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AuthorizedEntry {
        id: e.id,
        spiffe_id,
        selectors,
        dns_names: e.dns_names,
        hint: e.hint,
        revision_number: e.revision_number,
        x509_svid_ttl: e.x509_svid_ttl,
        jwt_svid_ttl: e.jwt_svid_ttl,
        store_svid: e.store_svid,
        federates_with,
        created_at: e.created_at,
    })
}

fn id_from_proto(id: Option<&types::Spiffeid>) -> Result<SpiffeId, String> {
    let id = id.ok_or("SPIFFE ID missing")?;
    SpiffeId::parse(&format!("spiffe://{}{}", id.trust_domain, id.path))
        .map_err(|e| format!("invalid SPIFFE ID: {e}"))
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_crypto::key::{KeyType, Signer, SoftwareKey};
    use sigil_crypto::tls::{ClientAuth, server_config};
    use sigil_crypto::x509::{CaSubject, X509SvidParams, self_signed_ca, sign_x509_svid};
    use std::time::SystemTime;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Pki {
        ca: Vec<u8>,
        server_chain: Vec<Vec<u8>>,
        server_key: Vec<u8>,
        agent: AgentIdentity,
    }

    fn pki(server_path: &str) -> Pki {
        let td = TrustDomain::new("example.org").unwrap();
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let ca_key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let ca =
            self_signed_ca(&ca_key, &td, &CaSubject::default(), now - hour, now + hour).unwrap();
        let leaf = |path: &str, key: &SoftwareKey| {
            sign_x509_svid(
                &ca,
                &ca_key,
                &X509SvidParams::new(
                    td.id_with_path(path).unwrap(),
                    key.public_key_der().to_vec(),
                    now - hour,
                    now + hour,
                ),
            )
            .unwrap()
        };
        let server_key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let agent_key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        Pki {
            server_chain: vec![leaf(server_path, &server_key)],
            server_key: server_key.to_pkcs8_der(),
            agent: AgentIdentity {
                chain: vec![leaf("/spire/agent/join_token/t", &agent_key)],
                key: Arc::new(agent_key),
            },
            ca,
        }
    }

    /// Runs one TLS handshake between our client config and a rustls
    /// server requiring client certs; returns the client's result and the
    /// client certificate the server saw.
    async fn handshake(pki: &Pki, trust: ServerTrust) -> (Result<(), String>, Option<Vec<u8>>) {
        let server_cfg = server_config(
            pki.server_chain.clone(),
            pki.server_key.clone(),
            vec![pki.ca.clone()],
            ClientAuth::Required,
        )
        .unwrap();
        let td = TrustDomain::new("example.org").unwrap();
        let client_cfg =
            client_tls_config(&trust, crate::config::server_id(&td), Some(&pki.agent)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg))
                .accept(tcp)
                .await
                .ok()?;
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec());
            let mut buf = [0u8; 1];
            tls.read_exact(&mut buf).await.ok()?;
            peer
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let client = tokio_rustls::TlsConnector::from(Arc::new(client_cfg))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await;
        let result = match client {
            Ok(mut s) => {
                s.write_all(b"x").await.unwrap();
                s.flush().await.unwrap();
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        };
        let seen = server.await.unwrap();
        (result, seen)
    }

    #[tokio::test]
    async fn mtls_with_keymanager_signer_and_bundle_verification() {
        let pki = pki("/spire/server");
        let (result, seen) = handshake(&pki, ServerTrust::Bundle(vec![pki.ca.clone()])).await;
        result.unwrap();
        assert_eq!(seen.as_deref(), Some(pki.agent.chain[0].as_slice()));
    }

    #[tokio::test]
    async fn server_with_another_spiffe_id_is_rejected() {
        let pki = pki("/not/the/server");
        let (result, _) = handshake(&pki, ServerTrust::Bundle(vec![pki.ca.clone()])).await;
        let e = result.unwrap_err();
        assert!(e.contains("spire/server"), "{e}");
        let (result, _) = handshake(&pki, ServerTrust::InsecureBootstrap).await;
        assert!(
            result.is_err(),
            "insecure bootstrap still checks the server ID"
        );
    }

    #[tokio::test]
    async fn insecure_bootstrap_accepts_an_unknown_ca_but_bundle_mode_does_not() {
        let pki = pki("/spire/server");
        let other = pki_other_ca();
        let (result, _) = handshake(&pki, ServerTrust::Bundle(vec![other])).await;
        assert!(result.is_err());
        let (result, _) = handshake(&pki, ServerTrust::InsecureBootstrap).await;
        result.unwrap();
    }

    fn pki_other_ca() -> Vec<u8> {
        let td = TrustDomain::new("example.org").unwrap();
        let now = SystemTime::now();
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        self_signed_ca(
            &key,
            &td,
            &CaSubject::default(),
            now - Duration::from_secs(60),
            now + Duration::from_secs(3600),
        )
        .unwrap()
    }

    #[test]
    fn proto_entries_and_bundles_convert_and_reject_garbage() {
        let td = TrustDomain::new("example.org").unwrap();
        let e = entry_from_proto(types::Entry {
            id: "e1".into(),
            spiffe_id: Some(types::Spiffeid {
                trust_domain: "example.org".into(),
                path: "/web".into(),
            }),
            selectors: vec![types::Selector {
                r#type: "unix".into(),
                value: "uid:1000".into(),
            }],
            revision_number: 3,
            federates_with: vec!["partner.org".into(), "spiffe://other.org".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(e.spiffe_id.as_str(), "spiffe://example.org/web");
        assert_eq!(
            e.federates_with,
            [
                TrustDomain::new("partner.org").unwrap(),
                TrustDomain::new("other.org").unwrap()
            ]
        );
        let bad_federation = types::Entry {
            id: "e3".into(),
            spiffe_id: Some(types::Spiffeid {
                trust_domain: "example.org".into(),
                path: "/web".into(),
            }),
            federates_with: vec!["Not A Domain".into()],
            ..Default::default()
        };
        assert!(entry_from_proto(bad_federation).is_err());
        assert_eq!(e.selectors[0].to_string(), "unix:uid:1000");
        assert_eq!(e.revision_number, 3);
        assert!(
            entry_from_proto(types::Entry {
                id: "e2".into(),
                ..Default::default()
            })
            .is_err()
        );

        let b = bundle_from_proto(
            &td,
            types::Bundle {
                trust_domain: "example.org".into(),
                x509_authorities: vec![types::X509Certificate {
                    asn1: vec![1, 2],
                    tainted: false,
                }],
                sequence_number: 7,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(b.x509_authorities, vec![vec![1, 2]]);
        assert_eq!(b.sequence_number, 7);
        assert!(
            bundle_from_proto(
                &td,
                types::Bundle {
                    trust_domain: "evil.org".into(),
                    ..Default::default()
                }
            )
            .is_err()
        );
    }
}
