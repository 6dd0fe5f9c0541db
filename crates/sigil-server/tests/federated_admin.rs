//! `admin_ids` of a federated trust domain, as SPIRE supports them: a caller
//! over mTLS whose SVID names such an admin ID and chains to that trust
//! domain's bundle, as the server holds it, may use the admin APIs. Another
//! ID of that trust domain, or the admin ID on an SVID from a CA the server
//! does not hold for it, may not. In-process server, real TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_crypto::key::{KeyType, Signer, SoftwareKey};
use sigil_crypto::x509::{CaSubject, X509SvidParams};
use sigil_proto::spire::api::server::bundle::v1 as bundlepb;
use sigil_proto::spire::api::server::entry::v1 as entrypb;
use sigil_proto::spire::api::types;
use sigil_server::config::ServerConfig;
use sigil_spiffe::{SpiffeId, TrustDomain};
use tonic::transport::Endpoint;

/// A CA of `other.org`, as that trust domain's server would have.
struct ForeignCa {
    key: SoftwareKey,
    cert: Vec<u8>,
}

impl ForeignCa {
    fn new(td: &str) -> ForeignCa {
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let now = SystemTime::now();
        let cert = sigil_crypto::x509::self_signed_ca(
            &key,
            &TrustDomain::new(td).unwrap(),
            &CaSubject::default(),
            now - Duration::from_secs(60),
            now + Duration::from_secs(3600),
        )
        .unwrap();
        ForeignCa { key, cert }
    }

    /// An X509-SVID for `id` (chain, PKCS#8 key).
    fn svid(&self, id: &str) -> (Vec<Vec<u8>>, Vec<u8>) {
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let now = SystemTime::now();
        let leaf = sigil_crypto::x509::sign_x509_svid(
            &self.cert,
            &self.key,
            &X509SvidParams::new(
                SpiffeId::parse(id).unwrap(),
                key.public_key_der().to_vec(),
                now - Duration::from_secs(60),
                now + Duration::from_secs(600),
            ),
        )
        .unwrap();
        (vec![leaf], key.to_pkcs8_der())
    }
}

fn with_foreign_admin(dir: &Path, td: &str) -> ServerConfig {
    let mut cfg = common::config(dir, td);
    cfg.admin_ids = vec![SpiffeId::parse("spiffe://other.org/admin").unwrap()];
    cfg
}

/// Why a CountEntries call failed: in the connection (TLS handshake
/// included) or as a gRPC status.
#[derive(Debug)]
enum CallError {
    Connect(#[allow(dead_code)] tonic::transport::Error),
    Status(#[allow(dead_code)] tonic::Status),
}

/// CountEntries (an admin RPC) over mTLS presenting `svid`.
async fn count_entries(
    addr: std::net::SocketAddr,
    roots: Vec<Vec<u8>>,
    svid: (Vec<Vec<u8>>, Vec<u8>),
) -> Result<i32, CallError> {
    let cfg = sigil_crypto::tls::client_config(roots, common::server_id(), Some(svid)).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let channel = Endpoint::try_from("http://sigil-server")
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
        .map_err(CallError::Connect)?;
    entrypb::entry_client::EntryClient::new(channel)
        .count_entries(entrypb::CountEntriesRequest::default())
        .await
        .map(|r| r.into_inner().count)
        .map_err(CallError::Status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_admin_id_administers_only_with_an_svid_from_its_trust_domains_bundle() {
    let server = common::start_with("sgfadm", "example.org", with_foreign_admin).await;
    let other = ForeignCa::new("other.org");
    let impostor = ForeignCa::new("other.org");
    bundlepb::bundle_client::BundleClient::new(server.admin.clone())
        .batch_set_federated_bundle(bundlepb::BatchSetFederatedBundleRequest {
            bundle: vec![types::Bundle {
                trust_domain: "other.org".into(),
                x509_authorities: vec![types::X509Certificate {
                    asn1: other.cert.clone(),
                    tainted: false,
                }],
                ..Default::default()
            }],
            output_mask: None,
        })
        .await
        .unwrap();
    let roots = common::roots(&server.admin).await;
    let addr = server.running.agent_addr;

    // The server re-reads foreign admins' bundles every few seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match count_entries(addr, roots.clone(), other.svid("spiffe://other.org/admin")).await {
            Ok(n) => {
                assert_eq!(n, 0);
                break;
            }
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!("the federated admin was never let in: {e:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }

    let someone = count_entries(
        addr,
        roots.clone(),
        other.svid("spiffe://other.org/someone"),
    )
    .await;
    assert!(someone.is_err(), "a non-admin ID of other.org: {someone:?}");

    let forged = count_entries(
        addr,
        roots.clone(),
        impostor.svid("spiffe://other.org/admin"),
    )
    .await;
    assert!(
        forged.is_err(),
        "the admin ID from a CA the server does not hold: {forged:?}"
    );
}
