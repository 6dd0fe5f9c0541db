//! The Rust `spiffe` crate (crates.io, unmodified) against a real
//! sigil-agent: X509-SVID, bundles, JWT-SVID, JWT bundles, validation by the
//! agent and local validation, the X509Source/JwtSource helpers, and
//! spiffe-rustls mTLS built from the X509Source.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sigil_e2e::my_uid;
use sigil_testkit::{TrustDomain, wait_for};
use spiffe::{
    JwtSource, JwtSvid, SpiffeId, TrustDomain as SpiffeTd, WorkloadApiClient, X509Source,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_spiffe_crate_fetches_and_validates_from_sigil_agent() {
    let (td, endpoint, id) = tokio::task::block_in_place(|| {
        let mut td = TrustDomain::new();
        td.start_server();
        let token = td.join_token();
        td.start_agent(0, Some(&token));
        let id = "spiffe://example.org/workload/rust-client".to_owned();
        td.server_cli(&[
            "entry",
            "create",
            "-parentID",
            &td.join_token_agent_id(&token),
            "-spiffeID",
            &id,
            "-selector",
            &format!("unix:uid:{}", my_uid()),
        ])
        .ok();
        wait_for("SVID", Duration::from_secs(30), || {
            let out = td.agent_cli(0, &["api", "fetch", "x509"]);
            (out.code == 0 && out.stdout.contains(&id)).then_some(())
        });
        let endpoint = format!("unix:{}", td.agent_socket(0).display());
        (td, endpoint, id)
    });
    let want = SpiffeId::new(&id).unwrap();
    let tdom = SpiffeTd::new("example.org").unwrap();

    let client = WorkloadApiClient::connect_to(&endpoint)
        .await
        .expect("connect");
    let svid = client.fetch_x509_svid().await.expect("X509-SVID");
    assert_eq!(svid.spiffe_id(), &want);
    assert!(!svid.cert_chain().is_empty());
    let bundles = client.fetch_x509_bundles().await.expect("X509 bundles");
    assert!(
        !bundles
            .get(&tdom)
            .expect("our bundle")
            .authorities()
            .is_empty()
    );

    let jwt = client
        .fetch_jwt_svid(["my-audience"], None)
        .await
        .expect("JWT-SVID");
    assert_eq!(jwt.spiffe_id(), &want);
    assert_eq!(jwt.audience(), ["my-audience".to_owned()]);
    let validated = client
        .validate_jwt_token("my-audience", jwt.token())
        .await
        .expect("agent validates the token");
    assert_eq!(validated.spiffe_id(), &want);
    let jwt_bundles = client.fetch_jwt_bundles().await.expect("JWT bundles");
    let local = JwtSvid::parse_and_validate(jwt.token(), &jwt_bundles, &["my-audience"])
        .expect("token verifies locally against the JWT bundle");
    assert_eq!(local.spiffe_id(), &want);
    assert!(
        JwtSvid::parse_and_validate(jwt.token(), &jwt_bundles, &["someone-else"]).is_err(),
        "wrong audience is rejected"
    );

    let source = X509Source::builder()
        .endpoint(&endpoint)
        .build()
        .await
        .expect("X509Source");
    assert_eq!(source.svid().expect("svid").spiffe_id(), &want);
    mtls_with_spiffe_rustls(source.clone(), &id).await;
    source.shutdown().await;

    let jwt_source = JwtSource::builder()
        .endpoint(&endpoint)
        .build()
        .await
        .expect("JwtSource");
    let from_source = jwt_source
        .fetch_jwt_svid(["aud2"])
        .await
        .expect("JWT via source");
    assert_eq!(from_source.spiffe_id(), &want);
    drop(td);
}

/// spiffe-rustls (crates.io, aws-lc-rs provider) builds both ends of an mTLS
/// connection from the X509Source fed by sigil-agent; each side authorizes
/// the exact peer ID, and a client expecting another ID is refused.
async fn mtls_with_spiffe_rustls(source: X509Source, id: &str) {
    let server_cfg = spiffe_rustls::mtls_server(source.clone())
        .authorize(spiffe_rustls::authorizer::exact([id]).unwrap())
        .build()
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server_cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let mut buf = [0u8; 4];
                if tls.read_exact(&mut buf).await.is_ok() {
                    let _ = tls.write_all(b"pong").await;
                    let _ = tls.shutdown().await;
                }
            }
        }
    });
    let connect = |authorized: &str| {
        let cfg = spiffe_rustls::mtls_client(source.clone())
            .authorize(spiffe_rustls::authorizer::exact([authorized]).unwrap())
            .build()
            .expect("client config");
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await?;
            tls.write_all(b"ping").await?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        }
    };
    assert_eq!(
        &connect(id).await.expect("mTLS with the expected peer"),
        b"pong"
    );
    assert!(
        connect("spiffe://example.org/someone-else").await.is_err(),
        "a client expecting another ID refuses the server"
    );
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
}
