//! The SPIRE server API as an agent sees it, over real mTLS to an
//! in-process server (SQLite datastore, memory keys): join-token attestation,
//! authorization of SVID requests, single-use tokens, bans. No fakes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use sigil_crypto::key::{KeyType, Signer, SoftwareKey};
use sigil_proto::spire::api::server::agent::v1 as agentpb;
use sigil_proto::spire::api::server::bundle::v1 as bundlepb;
use sigil_proto::spire::api::server::entry::v1 as entrypb;
use sigil_proto::spire::api::server::svid::v1 as svidpb;
use sigil_proto::spire::api::types;
use sigil_server::config::ServerConfig;
use tonic::transport::{Channel, Endpoint};

fn config(dir: &Path) -> ServerConfig {
    ServerConfig::parse(&format!(
        r#"
server {{
    bind_address = "127.0.0.1"
    bind_port = "0"
    socket_path = "{dir}/admin.sock"
    trust_domain = "example.org"
    data_dir = "{dir}/data"
}}
plugins {{
    DataStore "sql" {{
        plugin_data {{
            database_type = "sqlite3"
            connection_string = "{dir}/data/ds.sqlite3"
        }}
    }}
    KeyManager "memory" {{
        plugin_data {{}}
    }}
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
}}
"#,
        dir = dir.display()
    ))
    .expect("valid config")
}

async fn admin_channel(sock: &Path) -> Channel {
    let sock = sock.to_path_buf();
    Endpoint::try_from("http://localhost")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let p = sock.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await
        .expect("admin socket")
}

async fn tls_channel(addr: std::net::SocketAddr, cfg: rustls::ClientConfig) -> Channel {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    Endpoint::try_from("http://sigil-server")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = rustls_pki_types::ServerName::try_from("sigil-server").expect("name");
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .expect("TLS channel")
}

struct Agent {
    chain: Vec<Vec<u8>>,
    key: SoftwareKey,
}

async fn attest(
    addr: std::net::SocketAddr,
    roots: Vec<Vec<u8>>,
    token: &str,
) -> Result<Agent, tonic::Status> {
    let server_id = sigil_spiffe::SpiffeId::parse("spiffe://example.org/spire/server").unwrap();
    let cfg = sigil_crypto::tls::client_config(roots, server_id, None).unwrap();
    let mut client = agentpb::agent_client::AgentClient::new(tls_channel(addr, cfg).await);
    let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
    let csr = sigil_crypto::csr::create_csr(&key, None).unwrap();
    let req = agentpb::AttestAgentRequest {
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
    let mut stream = client
        .attest_agent(futures::stream::iter([req]))
        .await?
        .into_inner();
    let resp = stream.message().await?.expect("a response");
    let Some(agentpb::attest_agent_response::Step::Result(result)) = resp.step else {
        panic!("expected a result");
    };
    Ok(Agent {
        chain: result.svid.expect("svid").cert_chain,
        key,
    })
}

fn entry(parent: &str, id: &str) -> types::Entry {
    let split = |s: &str| {
        let rest = s.trim_start_matches("spiffe://");
        let (td, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        types::Spiffeid {
            trust_domain: td.into(),
            path: path.into(),
        }
    };
    types::Entry {
        parent_id: Some(split(parent)),
        spiffe_id: Some(split(id)),
        selectors: vec![types::Selector {
            r#type: "unix".into(),
            value: "uid:1000".into(),
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_gets_svids_only_for_its_authorized_entries() {
    let dir = tempfile::Builder::new()
        .prefix("sgapi")
        .tempdir_in("/tmp")
        .unwrap();
    let running = sigil_server::run::start(config(dir.path()))
        .await
        .expect("server starts");
    let admin = admin_channel(&dir.path().join("admin.sock")).await;
    let mut agent_admin = agentpb::agent_client::AgentClient::new(admin.clone());
    let mut entries = entrypb::entry_client::EntryClient::new(admin.clone());
    let bundle = bundlepb::bundle_client::BundleClient::new(admin.clone())
        .get_bundle(bundlepb::GetBundleRequest::default())
        .await
        .unwrap()
        .into_inner();
    let roots: Vec<Vec<u8>> = bundle
        .x509_authorities
        .iter()
        .map(|a| a.asn1.clone())
        .collect();
    assert!(!roots.is_empty());

    let token = agent_admin
        .create_join_token(agentpb::CreateJoinTokenRequest {
            ttl: 600,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .value;
    let agent_id = format!("spiffe://example.org/spire/agent/join_token/{token}");
    let created = entries
        .batch_create_entry(entrypb::BatchCreateEntryRequest {
            entries: vec![
                entry(&agent_id, "spiffe://example.org/mine"),
                entry(
                    "spiffe://example.org/spire/agent/join_token/other",
                    "spiffe://example.org/not-mine",
                ),
            ],
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<String> = created
        .results
        .iter()
        .map(|r| {
            assert_eq!(r.status.as_ref().unwrap().code, 0, "{:?}", r.status);
            r.entry.as_ref().unwrap().id.clone()
        })
        .collect();

    let agent = attest(running.agent_addr, roots.clone(), &token)
        .await
        .expect("attests");
    let leaf = sigil_crypto::x509::cert_info(&agent.chain[0]).unwrap();
    assert_eq!(leaf.uri_sans, std::slice::from_ref(&agent_id));

    // The same token again: refused, and no second agent appears.
    let reused = attest(running.agent_addr, roots.clone(), &token)
        .await
        .err()
        .expect("refused");
    assert_eq!(reused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        reused.message(),
        "failed to attest: join token does not exist or has already been used"
    );

    // mTLS with the agent SVID.
    let server_id = sigil_spiffe::SpiffeId::parse("spiffe://example.org/spire/server").unwrap();
    let cfg = sigil_crypto::tls::client_config(
        roots.clone(),
        server_id.clone(),
        Some((agent.chain.clone(), agent.key.to_pkcs8_der())),
    )
    .unwrap();
    let ch = tls_channel(running.agent_addr, cfg).await;
    let mut svid = svidpb::svid_client::SvidClient::new(ch.clone());
    let authorized = entrypb::entry_client::EntryClient::new(ch.clone())
        .get_authorized_entries(entrypb::GetAuthorizedEntriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(authorized.entries.len(), 1);
    assert_eq!(authorized.entries[0].id, ids[0]);

    let wkey = SoftwareKey::generate(KeyType::EcP256).unwrap();
    let csr = sigil_crypto::csr::create_csr(&wkey, None).unwrap();
    let mut bad_csr = csr.clone();
    let n = bad_csr.len();
    bad_csr[n - 5] ^= 0xff;
    let resp = svid
        .batch_new_x509svid(svidpb::BatchNewX509svidRequest {
            params: vec![
                svidpb::NewX509svidParams {
                    entry_id: ids[0].clone(),
                    csr: csr.clone(),
                },
                svidpb::NewX509svidParams {
                    entry_id: ids[1].clone(),
                    csr: csr.clone(),
                },
                svidpb::NewX509svidParams {
                    entry_id: ids[0].clone(),
                    csr: bad_csr,
                },
                svidpb::NewX509svidParams {
                    entry_id: "no-such-entry".into(),
                    csr,
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<i32> = resp
        .results
        .iter()
        .map(|r| r.status.as_ref().unwrap().code)
        .collect();
    assert_eq!(
        codes,
        [
            0,
            tonic::Code::NotFound as i32,
            tonic::Code::InvalidArgument as i32,
            tonic::Code::NotFound as i32
        ]
    );
    assert_eq!(
        resp.results[1].status.as_ref().unwrap().message,
        "entry not found or not authorized"
    );
    let issued = resp.results[0].svid.as_ref().unwrap();
    let info = sigil_crypto::x509::cert_info(&issued.cert_chain[0]).unwrap();
    assert_eq!(info.uri_sans, ["spiffe://example.org/mine"]);
    assert_eq!(info.public_key_der, wkey.public_key_der());
    sigil_crypto::x509::verify_chain(&issued.cert_chain, &roots, std::time::SystemTime::now())
        .expect("issued SVID chains to the bundle");

    // JWT for an unauthorized entry: NotFound; for ours: a token.
    let err = svid
        .new_jwtsvid(svidpb::NewJwtsvidRequest {
            entry_id: ids[1].clone(),
            audience: vec!["a".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let jwt = svid
        .new_jwtsvid(svidpb::NewJwtsvidRequest {
            entry_id: ids[0].clone(),
            audience: vec!["a".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!jwt.svid.unwrap().token.is_empty());

    // Without a client certificate the caller is not an agent.
    let anon = sigil_crypto::tls::client_config(roots.clone(), server_id.clone(), None).unwrap();
    let err = svidpb::svid_client::SvidClient::new(tls_channel(running.agent_addr, anon).await)
        .batch_new_x509svid(svidpb::BatchNewX509svidRequest { params: vec![] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // Admin RPCs are refused to agents.
    let err = entrypb::entry_client::EntryClient::new(ch.clone())
        .count_entries(entrypb::CountEntriesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // Banned agents are refused.
    let (td_name, path) = agent_id
        .trim_start_matches("spiffe://")
        .split_once('/')
        .unwrap();
    agent_admin
        .ban_agent(agentpb::BanAgentRequest {
            id: Some(types::Spiffeid {
                trust_domain: td_name.into(),
                path: format!("/{path}"),
            }),
        })
        .await
        .unwrap();
    let err = svid
        .new_jwtsvid(svidpb::NewJwtsvidRequest {
            entry_id: ids[0].clone(),
            audience: vec!["a".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("banned"), "{}", err.message());

    // Nothing was created by the rejected requests.
    let count = entries
        .count_entries(entrypb::CountEntriesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count, 2);
}
