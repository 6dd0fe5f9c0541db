//! Setup shared by the server's integration tests: the config of an
//! in-process server (SQLite datastore, memory keys) in a temp dir, starting
//! it, channels to its admin socket and its agent API (anonymous or as an
//! attested agent), and readers of per-item statuses. Each test file keeps
//! its own helpers for the API it drives.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_crypto::key::{KeyType, SoftwareKey};
use sigil_proto::spire::api::server::agent::v1 as agentpb;
use sigil_proto::spire::api::server::bundle::v1 as bundlepb;
use sigil_proto::spire::api::server::trustdomain::v1 as tdpb;
use sigil_proto::spire::api::types;
use sigil_server::config::ServerConfig;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// Config of a server for `trust_domain` that attests agents by join token:
/// agent API on an ephemeral port, admin socket and data under `dir`.
pub fn config(dir: &Path, trust_domain: &str) -> ServerConfig {
    render_config(
        dir,
        trust_domain,
        "",
        r#"
    NodeAttestor "join_token" {
        plugin_data {}
    }"#,
    )
}

/// Config of a server for `trust_domain` without node attestors that serves
/// its bundle on an `https_spiffe` bundle endpoint (ephemeral port, refresh
/// hint 2m).
pub fn bundle_endpoint_config(dir: &Path, trust_domain: &str) -> ServerConfig {
    render_config(
        dir,
        trust_domain,
        r#"
    federation {
        bundle_endpoint {
            address = "127.0.0.1"
            port = 0
            refresh_hint = "2m"
            profile "https_spiffe" {}
        }
    }"#,
        "",
    )
}

fn render_config(dir: &Path, td: &str, server_extra: &str, plugins_extra: &str) -> ServerConfig {
    ServerConfig::parse(&format!(
        r#"
server {{
    bind_address = "127.0.0.1"
    bind_port = "0"
    socket_path = "{dir}/admin.sock"
    trust_domain = "{td}"
    data_dir = "{dir}/data"{server_extra}
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
    }}{plugins_extra}
}}
"#,
        dir = dir.display()
    ))
    .expect("valid config")
}

/// A running server, its temp dir (removed on drop) and its admin channel.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub td: String,
    pub running: sigil_server::run::Running,
    pub admin: Channel,
}

impl Server {
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    pub fn trust_domains(&self) -> tdpb::trust_domain_client::TrustDomainClient<Channel> {
        tdpb::trust_domain_client::TrustDomainClient::new(self.admin.clone())
    }
}

/// Starts an `example.org` server with [`config`] in a temp dir named
/// `prefix…`.
pub async fn start(prefix: &str) -> Server {
    start_with(prefix, "example.org", config).await
}

/// Starts a server for `td` with `config` in a temp dir named `prefix…`.
pub async fn start_with(prefix: &str, td: &str, config: fn(&Path, &str) -> ServerConfig) -> Server {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    let running = sigil_server::run::start(config(dir.path(), td))
        .await
        .expect("server starts");
    let admin = admin_channel(&dir.path().join("admin.sock")).await;
    Server {
        dir,
        td: td.into(),
        running,
        admin,
    }
}

pub async fn admin_channel(sock: &Path) -> Channel {
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

pub async fn tls_channel(addr: std::net::SocketAddr, cfg: rustls::ClientConfig) -> Channel {
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

pub fn server_id() -> sigil_spiffe::SpiffeId {
    sigil_spiffe::SpiffeId::parse("spiffe://example.org/spire/server").unwrap()
}

/// The server's X.509 authorities (DER), as an agent bootstraps them.
pub async fn roots(admin: &Channel) -> Vec<Vec<u8>> {
    bundlepb::bundle_client::BundleClient::new(admin.clone())
        .get_bundle(bundlepb::GetBundleRequest::default())
        .await
        .unwrap()
        .into_inner()
        .x509_authorities
        .into_iter()
        .map(|a| a.asn1)
        .collect()
}

/// An attested agent's SVID chain and key.
pub struct Agent {
    pub chain: Vec<Vec<u8>>,
    pub key: SoftwareKey,
}

/// Attests an agent with a join token, trusting `roots`.
pub async fn attest(
    addr: std::net::SocketAddr,
    roots: Vec<Vec<u8>>,
    token: &str,
) -> Result<Agent, tonic::Status> {
    attest_to(addr, roots, token, server_id()).await
}

/// Attests an agent with a join token to the server `server_id`.
#[allow(dead_code)]
pub async fn attest_to(
    addr: std::net::SocketAddr,
    roots: Vec<Vec<u8>>,
    token: &str,
    server_id: sigil_spiffe::SpiffeId,
) -> Result<Agent, tonic::Status> {
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

/// Attests an agent with a join token and returns an mTLS channel that
/// presents its SVID.
pub async fn agent_channel(server: &Server) -> Channel {
    let roots = roots(&server.admin).await;
    let token = agentpb::agent_client::AgentClient::new(server.admin.clone())
        .create_join_token(agentpb::CreateJoinTokenRequest {
            ttl: 600,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .value;
    let addr = server.running.agent_addr;
    let agent = attest(addr, roots.clone(), &token).await.unwrap();
    let cfg = sigil_crypto::tls::client_config(
        roots,
        server_id(),
        Some((agent.chain, agent.key.to_pkcs8_der())),
    )
    .unwrap();
    tls_channel(addr, cfg).await
}

/// A CA certificate of another trust domain.
pub fn foreign_ca(td: &str) -> Vec<u8> {
    let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
    let now = SystemTime::now();
    sigil_crypto::x509::self_signed_ca(
        &key,
        &sigil_spiffe::TrustDomain::new(td).unwrap(),
        &sigil_crypto::x509::CaSubject::default(),
        now,
        now + Duration::from_secs(3600),
    )
    .unwrap()
}

/// Per-item statuses of a batch response as (code, message).
pub fn codes(statuses: impl IntoIterator<Item = Option<types::Status>>) -> Vec<(Code, String)> {
    statuses
        .into_iter()
        .map(|s| {
            let s = s.expect("status");
            (Code::from(s.code), s.message)
        })
        .collect()
}

pub fn assert_status(err: tonic::Status, code: Code, message: &str) {
    assert_eq!((err.code(), err.message()), (code, message), "{err:?}");
}
