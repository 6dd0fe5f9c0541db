//! Resource bounds and rate limits of the server's endpoints, driven over
//! real mTLS to an in-process server (SQLite datastore, memory keys): per-IP
//! attestation and signing limits (127.0.0.1 and 127.0.0.2 are both
//! loopback on Linux, so a client can pick its source address), batch
//! bounds, the connection cap, the deadline for a silent client, and the
//! maximum connection age (shortened here; 3 minutes in a real server).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Server, admin_channel, roots, server_id};
use sigil_crypto::key::{KeyType, SoftwareKey};
use sigil_proto::sigil::api::server::sync::v1 as syncpb;
use sigil_proto::spire::api::server::agent::v1 as agentpb;
use sigil_proto::spire::api::server::entry::v1 as entrypb;
use sigil_proto::spire::api::server::svid::v1 as svidpb;
use sigil_proto::spire::api::types;
use sigil_server::config::ServerConfig;
use tokio::io::AsyncReadExt;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

const LOCAL_1: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const LOCAL_2: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// Starts an `example.org` join-token server after `tune` adjusts its config.
async fn start_tuned(prefix: &str, tune: impl FnOnce(&mut ServerConfig)) -> Server {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    let mut cfg = common::config(dir.path(), "example.org");
    tune(&mut cfg);
    let running = sigil_server::run::start(cfg).await.expect("server starts");
    let admin = admin_channel(&dir.path().join("admin.sock")).await;
    Server {
        dir,
        td: "example.org".into(),
        running,
        admin,
    }
}

/// A TLS channel to `addr` from source address `src`; `connections` counts
/// the TCP connections it opens (it reconnects on its own).
async fn channel_from(
    src: IpAddr,
    addr: SocketAddr,
    cfg: rustls::ClientConfig,
    connections: Arc<AtomicUsize>,
) -> Channel {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    Endpoint::try_from("http://sigil-server")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            let connections = connections.clone();
            async move {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(src, 0))?;
                let tcp = socket.connect(addr).await?;
                connections.fetch_add(1, Ordering::SeqCst);
                let name = rustls_pki_types::ServerName::try_from("sigil-server").expect("name");
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .expect("TLS channel")
}

async fn join_token(admin: &Channel) -> String {
    agentpb::agent_client::AgentClient::new(admin.clone())
        .create_join_token(agentpb::CreateJoinTokenRequest {
            ttl: 600,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .value
}

struct Attested {
    chain: Vec<Vec<u8>>,
    key: SoftwareKey,
}

/// Attests with a fresh join token from source address `src`, with a
/// deadline if given.
async fn attest_from(
    server: &Server,
    src: IpAddr,
    deadline: Option<Duration>,
) -> Result<Attested, tonic::Status> {
    let token = join_token(&server.admin).await;
    let roots = roots(&server.admin).await;
    let cfg = sigil_crypto::tls::client_config(roots, server_id(), None).unwrap();
    let ch = channel_from(src, server.running.agent_addr, cfg, Arc::default()).await;
    let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
    let csr = sigil_crypto::csr::create_csr(&key, None).unwrap();
    let first = agentpb::AttestAgentRequest {
        step: Some(agentpb::attest_agent_request::Step::Params(
            agentpb::attest_agent_request::Params {
                data: Some(types::AttestationData {
                    r#type: "join_token".into(),
                    payload: token.into_bytes(),
                }),
                params: Some(agentpb::AgentX509svidParams { csr }),
            },
        )),
    };
    let mut request = tonic::Request::new(futures::stream::iter([first]));
    if let Some(d) = deadline {
        request.set_timeout(d);
    }
    let mut stream = agentpb::agent_client::AgentClient::new(ch)
        .attest_agent(request)
        .await?
        .into_inner();
    let resp = stream.message().await?.expect("a response");
    let Some(agentpb::attest_agent_response::Step::Result(result)) = resp.step else {
        panic!("expected a result");
    };
    Ok(Attested {
        chain: result.svid.expect("svid").cert_chain,
        key,
    })
}

/// An mTLS channel presenting `agent`'s SVID from `src`.
async fn agent_channel_from(
    server: &Server,
    agent: &Attested,
    src: IpAddr,
    connections: Arc<AtomicUsize>,
) -> Channel {
    let roots = roots(&server.admin).await;
    let cfg = sigil_crypto::tls::client_config(
        roots,
        server_id(),
        Some((agent.chain.clone(), agent.key.to_pkcs8_der())),
    )
    .unwrap();
    channel_from(src, server.running.agent_addr, cfg, connections).await
}

fn csr_params(n: usize) -> Vec<svidpb::NewX509svidParams> {
    (0..n)
        .map(|i| svidpb::NewX509svidParams {
            entry_id: format!("no-such-entry-{i}"),
            csr: vec![0x30],
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_attestation_within_a_second_from_one_ip_waits_or_is_refused_and_other_ips_are_not_limited()
 {
    let server = start_tuned("sgrl-att", |_| {}).await;

    attest_from(&server, LOCAL_1, None).await.expect("first");
    // SPIRE delays a caller over its limit; one whose deadline comes first
    // is refused at once.
    let err = attest_from(&server, LOCAL_1, Some(Duration::from_millis(300)))
        .await
        .err()
        .expect("refused");
    common::assert_status(
        err,
        Code::ResourceExhausted,
        "rejecting request due to attest agent rate limiting: rate: Wait(n=1) would exceed context deadline",
    );
    // Another address has its own bucket.
    let t = Instant::now();
    attest_from(&server, LOCAL_2, Some(Duration::from_millis(300)))
        .await
        .expect("another IP attests at once");
    assert!(t.elapsed() < Duration::from_millis(300));
    // Without a deadline the first address is served once its token is back.
    let t = Instant::now();
    attest_from(&server, LOCAL_1, None)
        .await
        .expect("served after waiting");
    attest_from(&server, LOCAL_1, None)
        .await
        .expect("and again, a second later");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratelimit_attestation_false_lets_one_ip_attest_back_to_back() {
    let server = start_tuned("sgrl-off", |c| c.ratelimit.attestation = false).await;
    for _ in 0..3 {
        attest_from(&server, LOCAL_1, Some(Duration::from_millis(300)))
            .await
            .expect("not limited");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_limit_counts_each_svid_of_a_batch() {
    let server = start_tuned("sgrl-sign", |_| {}).await;
    let agent = attest_from(&server, LOCAL_1, None).await.unwrap();
    let ch = agent_channel_from(&server, &agent, LOCAL_1, Arc::default()).await;
    let mut svid = svidpb::svid_client::SvidClient::new(ch);

    // More than the burst in one call can never be served.
    let err = svid
        .batch_new_x509svid(svidpb::BatchNewX509svidRequest {
            params: csr_params(501),
        })
        .await
        .unwrap_err();
    common::assert_status(
        err,
        Code::ResourceExhausted,
        "rejecting request due to certificate signing rate limiting: rate (501) exceeds burst size (500)",
    );
    // 500 spend the whole second's budget (each item answers on its own)...
    let resp = svid
        .batch_new_x509svid(svidpb::BatchNewX509svidRequest {
            params: csr_params(500),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.results.len(), 500);
    // ...so 300 more need about 0.6 s, past a 100 ms deadline.
    let mut req = tonic::Request::new(svidpb::BatchNewX509svidRequest {
        params: csr_params(300),
    });
    req.set_timeout(Duration::from_millis(100));
    let err = svid.batch_new_x509svid(req).await.unwrap_err();
    common::assert_status(
        err,
        Code::ResourceExhausted,
        "rejecting request due to certificate signing rate limiting: rate: Wait(n=300) would exceed context deadline",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_signing_limit_a_batch_past_500_svids_is_invalid_argument_naming_the_limit() {
    let server = start_tuned("sgrl-batch", |c| c.ratelimit.signing = false).await;
    let agent = attest_from(&server, LOCAL_1, None).await.unwrap();
    let ch = agent_channel_from(&server, &agent, LOCAL_1, Arc::default()).await;
    let err = svidpb::svid_client::SvidClient::new(ch)
        .batch_new_x509svid(svidpb::BatchNewX509svidRequest {
            params: csr_params(501),
        })
        .await
        .unwrap_err();
    common::assert_status(
        err,
        Code::InvalidArgument,
        "too many X509-SVID parameters in one request: 501 (the limit is 500)",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_batches_past_1000_are_invalid_argument_naming_the_limit_and_change_nothing() {
    let server = common::start("sgrl-entries").await;
    let mut entries = entrypb::entry_client::EntryClient::new(server.admin.clone());
    let entry = |i: usize| types::Entry {
        parent_id: Some(types::Spiffeid {
            trust_domain: "example.org".into(),
            path: "/node".into(),
        }),
        spiffe_id: Some(types::Spiffeid {
            trust_domain: "example.org".into(),
            path: format!("/w{i}"),
        }),
        selectors: vec![types::Selector {
            r#type: "unix".into(),
            value: format!("uid:{i}"),
        }],
        ..Default::default()
    };
    let err = entries
        .batch_create_entry(entrypb::BatchCreateEntryRequest {
            entries: (0..1001).map(entry).collect(),
            output_mask: None,
        })
        .await
        .unwrap_err();
    common::assert_status(
        err,
        Code::InvalidArgument,
        "too many entries in one request: 1001 (the limit is 1000)",
    );
    let count = entries
        .count_entries(entrypb::CountEntriesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count, 0);
    let err = entries
        .batch_update_entry(entrypb::BatchUpdateEntryRequest {
            entries: (0..1001).map(entry).collect(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = entries
        .batch_delete_entry(entrypb::BatchDeleteEntryRequest {
            ids: (0..1001).map(|i| format!("id-{i}")).collect(),
        })
        .await
        .unwrap_err();
    common::assert_status(
        err,
        Code::InvalidArgument,
        "too many entry IDs in one request: 1001 (the limit is 1000)",
    );
    // A batch at the bound is served.
    let resp = entries
        .batch_create_entry(entrypb::BatchCreateEntryRequest {
            entries: (0..1000).map(entry).collect(),
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.results.len(), 1000);
}

/// Reads from `stream` until EOF or an error; returns how long it took.
async fn time_until_closed(mut stream: impl tokio::io::AsyncRead + Unpin) -> Duration {
    let t = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return t.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server kept a silent connection open for 10 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_silent_after_the_tls_handshake_or_during_it_is_disconnected() {
    let server = start_tuned("sgbd-idle", |c| {
        c.agent_endpoint_bounds.first_byte_timeout = Duration::from_millis(500);
        c.agent_endpoint_bounds.handshake_timeout = Duration::from_millis(500);
    })
    .await;
    let roots = roots(&server.admin).await;
    let cfg = sigil_crypto::tls::client_config(roots, server_id(), None).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));

    // Handshake done, then nothing: closed after the first-byte deadline.
    let tcp = tokio::net::TcpStream::connect(server.running.agent_addr)
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("sigil-server").unwrap();
    let tls = connector.connect(name, tcp).await.expect("handshake");
    let took = time_until_closed(tls).await;
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // No handshake at all: closed after the handshake deadline.
    let tcp = tokio::net::TcpStream::connect(server.running.agent_addr)
        .await
        .unwrap();
    let took = time_until_closed(tcp).await;
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // A client that speaks is served as before.
    let agent = attest_from(&server, LOCAL_1, None).await.expect("attests");
    assert!(!agent.chain.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_until_a_slot_frees() {
    let server = start_tuned("sgbd-cap", |c| {
        c.agent_endpoint_bounds.max_connections = 2;
    })
    .await;
    let roots = roots(&server.admin).await;
    let cfg = sigil_crypto::tls::client_config(roots, server_id(), None).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = || rustls_pki_types::ServerName::try_from("sigil-server").unwrap();
    let connect = || tokio::net::TcpStream::connect(server.running.agent_addr);

    let first = connector.connect(name(), connect().await.unwrap()).await;
    let second = connector.connect(name(), connect().await.unwrap()).await;
    assert!(first.is_ok() && second.is_ok());
    // The third is closed without a handshake.
    let third = connector.connect(name(), connect().await.unwrap()).await;
    assert!(third.is_err(), "a third connection was accepted");
    // One closes; a new connection is served again.
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(tls) = connector.connect(name(), connect().await.unwrap()).await {
            again = Some(tls);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "the freed slot was not reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_max_connection_age_the_server_sends_goaway_in_flight_streams_finish_and_the_client_reconnects()
 {
    let server = start_tuned("sgbd-age", |c| {
        c.agent_endpoint_bounds.max_connection_age = Some(Duration::from_secs(1));
        c.agent_endpoint_bounds.max_connection_age_grace = Duration::from_secs(3);
        c.ratelimit.attestation = false;
    })
    .await;
    let agent = attest_from(&server, LOCAL_1, None).await.unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let ch = agent_channel_from(&server, &agent, LOCAL_1, connections.clone()).await;
    let mut entries = entrypb::entry_client::EntryClient::new(ch.clone());
    let get = entrypb::GetAuthorizedEntriesRequest::default;
    entries
        .get_authorized_entries(get())
        .await
        .expect("first call");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    // A long-lived stream on the first connection.
    let mut watch = syncpb::sync_client::SyncClient::new(ch.clone())
        .watch_changes(syncpb::WatchChangesRequest::default())
        .await
        .expect("watch")
        .into_inner();

    // A unary call in flight across the GOAWAY finishes on the old
    // connection (the rate limit holds it for about 0.9 s: 450 tokens asked
    // right after 500 were spent).
    let mut svid = svidpb::svid_client::SvidClient::new(ch.clone());
    svid.batch_new_x509svid(svidpb::BatchNewX509svidRequest {
        params: csr_params(500),
    })
    .await
    .unwrap();
    let in_flight = tokio::spawn(async move {
        svid.batch_new_x509svid(svidpb::BatchNewX509svidRequest {
            params: csr_params(450),
        })
        .await
    });

    // The watch stream ends cleanly when the connection reaches its age...
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch stream ends at the connection age");
    assert!(matches!(ended, Ok(None)), "{ended:?}");
    // ...the in-flight call still gets its answer...
    let answered = in_flight.await.unwrap().expect("in-flight call answered");
    assert_eq!(answered.into_inner().results.len(), 450);
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    // ...and the next call goes to a new connection without an error
    // reaching the caller.
    tokio::time::sleep(Duration::from_millis(200)).await;
    entries
        .get_authorized_entries(get())
        .await
        .expect("call after the connection age");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_still_busy_after_its_age_and_grace_is_closed() {
    let server = start_tuned("sgbd-grace", |c| {
        c.agent_endpoint_bounds.max_connection_age = Some(Duration::from_millis(300));
        c.agent_endpoint_bounds.max_connection_age_grace = Duration::from_millis(300);
    })
    .await;
    let agent = attest_from(&server, LOCAL_1, None).await.unwrap();
    let ch = agent_channel_from(&server, &agent, LOCAL_1, Arc::default()).await;
    let mut svid = svidpb::svid_client::SvidClient::new(ch);
    svid.batch_new_x509svid(svidpb::BatchNewX509svidRequest {
        params: csr_params(500),
    })
    .await
    .unwrap();
    // Held by the rate limit for about 0.9 s, past age and grace.
    let t = Instant::now();
    let err = svid
        .batch_new_x509svid(svidpb::BatchNewX509svidRequest {
            params: csr_params(450),
        })
        .await
        .unwrap_err();
    assert!(
        t.elapsed() < Duration::from_millis(800),
        "{:?}",
        t.elapsed()
    );
    assert_ne!(err.code(), Code::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_create_and_delete_cli_send_more_than_1000_entries_in_batches() {
    let server = common::start("sgbd-cli").await;
    let entries: Vec<serde_json::Value> = (0..1001)
        .map(|i| {
            serde_json::json!({
                "spiffe_id": format!("spiffe://example.org/w{i}"),
                "parent_id": "spiffe://example.org/node",
                "selectors": [{"type": "unix", "value": format!("uid:{i}")}],
            })
        })
        .collect();
    let data = server.dir.path().join("entries.json");
    std::fs::write(&data, serde_json::json!({ "entries": entries }).to_string()).unwrap();
    let socket = server.socket();
    let cli = |args: Vec<String>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sigil-server"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let sock = socket.display().to_string();
    let created = tokio::task::spawn_blocking({
        let (sock, data) = (sock.clone(), data.display().to_string());
        move || {
            cli(vec![
                "entry".into(),
                "create".into(),
                "-socketPath".into(),
                sock,
                "-data".into(),
                data,
                "-output".into(),
                "json".into(),
            ])
        }
    })
    .await
    .unwrap();
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let ids: Vec<String> = created["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["entry"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1001);
    let mut api = entrypb::entry_client::EntryClient::new(server.admin.clone());
    let count = || entrypb::CountEntriesRequest::default();
    assert_eq!(
        api.count_entries(count()).await.unwrap().into_inner().count,
        1001
    );

    let file = server.dir.path().join("ids.json");
    std::fs::write(&file, serde_json::json!({ "ids": ids }).to_string()).unwrap();
    tokio::task::spawn_blocking(move || {
        cli(vec![
            "entry".into(),
            "delete".into(),
            "-socketPath".into(),
            sock,
            "-file".into(),
            file.display().to_string(),
        ])
    })
    .await
    .unwrap();
    assert_eq!(
        api.count_entries(count()).await.unwrap().into_inner().count,
        0
    );
}
