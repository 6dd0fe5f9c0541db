//! SPIFFE federation between two real in-process servers, `a.org` and
//! `b.org` (SQLite datastores, memory keys), each serving its bundle on an
//! `https_spiffe` bundle endpoint. Operators bootstrap each side with the
//! other's bundle through the federated-bundle API and create
//! relationships through the trust domain API, as `bundle set` and
//! `federation create` would; the checks read results back through the same
//! APIs and, for the endpoint itself, over HTTPS as a foreign server would.
//! No fakes: both servers, their endpoints and the fetches are real.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Server, bundle_endpoint_config, start_with};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use sigil_proto::spire::api::server::bundle::v1 as bundlepb;
use sigil_proto::spire::api::server::localauthority::v1 as lapb;
use sigil_proto::spire::api::server::trustdomain::v1 as tdpb;
use sigil_proto::spire::api::types;
use sigil_proto::spire::api::types::federation_relationship::BundleEndpointProfile;
use sigil_server::federation::client::{self, EndpointAuth};
use sigil_spiffe::{Bundle, SpiffeId, TrustDomain};
use tonic::Code;
use tonic::transport::Channel;

impl Server {
    fn url(&self) -> String {
        format!("https://{}", self.running.bundle_endpoint_addr.unwrap())
    }

    fn bundles(&self) -> bundlepb::bundle_client::BundleClient<Channel> {
        bundlepb::bundle_client::BundleClient::new(self.admin.clone())
    }

    async fn own_bundle(&self) -> types::Bundle {
        self.bundles()
            .get_bundle(bundlepb::GetBundleRequest::default())
            .await
            .unwrap()
            .into_inner()
    }

    async fn federated(&self, td: &str) -> Option<types::Bundle> {
        match self
            .bundles()
            .get_federated_bundle(bundlepb::GetFederatedBundleRequest {
                trust_domain: td.into(),
                output_mask: None,
            })
            .await
        {
            Ok(b) => Some(b.into_inner()),
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => panic!("{s:?}"),
        }
    }

    /// Waits for the background fetch: a fetched copy carries the
    /// endpoint's refresh hint (120s), a bootstrapped one does not.
    async fn wait_fetched(&self, td: &str) -> types::Bundle {
        for _ in 0..100 {
            if let Some(f) = self.federated(td).await
                && f.refresh_hint == 120
            {
                return f;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} never fetched the bundle of {td}", self.td)
    }

    async fn refresh(&self, td: &str) -> Result<(), tonic::Status> {
        self.trust_domains()
            .refresh_bundle(tdpb::RefreshBundleRequest {
                trust_domain: td.into(),
            })
            .await
            .map(|_| ())
    }

    /// `bundle set` of another server's current bundle.
    async fn bootstrap(&self, other: &types::Bundle) {
        let resp = self
            .bundles()
            .batch_set_federated_bundle(bundlepb::BatchSetFederatedBundleRequest {
                bundle: vec![other.clone()],
                output_mask: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.results[0].status.as_ref().unwrap().code, 0);
    }

    /// `federation create` (or update) with the https_spiffe profile.
    async fn federate(&self, td: &str, url: &str, endpoint_id: &str, update: bool) {
        let rel = types::FederationRelationship {
            trust_domain: td.into(),
            bundle_endpoint_url: url.into(),
            bundle_endpoint_profile: Some(BundleEndpointProfile::HttpsSpiffe(
                types::HttpsspiffeProfile {
                    endpoint_spiffe_id: endpoint_id.into(),
                },
            )),
            trust_domain_bundle: None,
        };
        let code = if update {
            self.trust_domains()
                .batch_update_federation_relationship(
                    tdpb::BatchUpdateFederationRelationshipRequest {
                        federation_relationships: vec![rel],
                        input_mask: None,
                        output_mask: None,
                    },
                )
                .await
                .unwrap()
                .into_inner()
                .results[0]
                .status
                .as_ref()
                .unwrap()
                .code
        } else {
            self.trust_domains()
                .batch_create_federation_relationship(
                    tdpb::BatchCreateFederationRelationshipRequest {
                        federation_relationships: vec![rel],
                        output_mask: None,
                    },
                )
                .await
                .unwrap()
                .into_inner()
                .results[0]
                .status
                .as_ref()
                .unwrap()
                .code
        };
        assert_eq!(code, 0);
    }
}

/// A server for `td` serving its bundle on an `https_spiffe` endpoint.
async fn start(td: &str) -> Server {
    start_with("sgfed", td, bundle_endpoint_config).await
}

/// X.509 authorities (DER) and JWT authorities (key ID, key).
type Authorities = (BTreeSet<Vec<u8>>, BTreeSet<(String, Vec<u8>)>);

/// What two bundles must share to be "the same bundle": their authorities.
fn authorities(b: &types::Bundle) -> Authorities {
    (
        b.x509_authorities.iter().map(|a| a.asn1.clone()).collect(),
        b.jwt_authorities
            .iter()
            .map(|k| (k.key_id.clone(), k.public_key.clone()))
            .collect(),
    )
}

fn server_id(td: &str) -> String {
    format!("spiffe://{td}/spire/server")
}

/// Two servers that trust each other's current bundle and federate.
async fn federated_pair() -> (Server, Server) {
    let (a, b) = tokio::join!(start("a.org"), start("b.org"));
    a.bootstrap(&b.own_bundle().await).await;
    b.bootstrap(&a.own_bundle().await).await;
    a.federate("b.org", &b.url(), &server_id("b.org"), false)
        .await;
    b.federate("a.org", &a.url(), &server_id("a.org"), false)
        .await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_server_fetches_the_others_bundle_after_rotation_and_refresh() {
    let (a, b) = federated_pair().await;

    // Creating the relationship starts fetching without a refresh: the
    // fetched copy carries the endpoint's refresh hint, the bootstrapped one
    // had none.
    for (me, other) in [(&a, &b), (&b, &a)] {
        let fetched = me.wait_fetched(&other.td).await;
        assert_eq!(
            authorities(&fetched),
            authorities(&other.own_bundle().await)
        );
    }

    // Rotation: each side prepares a new X.509 authority, which joins its
    // bundle; a refresh on the other side brings it over.
    for s in [&a, &b] {
        lapb::local_authority_client::LocalAuthorityClient::new(s.admin.clone())
            .prepare_x509_authority(lapb::PrepareX509AuthorityRequest {})
            .await
            .unwrap();
        assert_eq!(s.own_bundle().await.x509_authorities.len(), 2);
    }
    for (me, other) in [(&a, &b), (&b, &a)] {
        me.refresh(&other.td).await.unwrap();
        let current = other.own_bundle().await;
        let held = me.federated(&other.td).await.unwrap();
        assert_eq!(
            authorities(&held),
            authorities(&current),
            "{} of {}",
            me.td,
            other.td
        );
        assert_eq!(held.x509_authorities.len(), 2);
    }

    // Unknown trust domains are NotFound, as in SPIRE.
    let err = a.refresh("c.org").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "no relationship with trust domain \"c.org\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_endpoint_spiffe_id_fails_the_refresh_and_keeps_the_stored_bundle() {
    let (a, b) = federated_pair().await;
    b.wait_fetched("a.org").await;
    b.federate("a.org", &a.url(), "spiffe://a.org/not-the-server", true)
        .await;
    let before = b.federated("a.org").await.unwrap();
    let err = b.refresh("a.org").await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert_eq!(
        err.message(),
        format!(
            "failed to refresh bundle: failed to fetch federated bundle from endpoint: failed \
             to fetch bundle: TLS handshake with {}: invalid peer certificate: server SPIFFE ID \
             spiffe://a.org/spire/server does not satisfy policy: exactly \
             spiffe://a.org/not-the-server",
            a.url()
        )
    );
    assert_eq!(b.federated("a.org").await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_spiffe_needs_a_bootstrapped_bundle_for_the_endpoint() {
    let (a, b) = tokio::join!(start("a.org"), start("b.org"));
    b.federate("a.org", &a.url(), &server_id("a.org"), false)
        .await;
    let err = b.refresh("a.org").await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(
        err.message().starts_with(
            "failed to refresh bundle: can't perform SPIFFE Authentication: local copy of \
             bundle for \"a.org\" not found"
        ),
        "{err:?}"
    );
    assert!(b.federated("a.org").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_endpoint_serves_the_bundle_as_json_with_the_configured_hint() {
    let a = start("a.org").await;
    let own = a.own_bundle().await;
    let td = TrustDomain::new("a.org").unwrap();
    let roots: Vec<Vec<u8>> = own
        .x509_authorities
        .iter()
        .map(|x| x.asn1.clone())
        .collect();
    let auth = EndpointAuth::Spiffe {
        id: SpiffeId::parse(&server_id("a.org")).unwrap(),
        roots,
    };

    let fetched: Bundle = client::fetch_bundle(&td, &a.url(), &auth).await.unwrap();
    assert_eq!(fetched.refresh_hint_seconds, Some(120));
    assert_eq!(
        fetched.x509_authorities,
        own.x509_authorities
            .iter()
            .map(|x| x.asn1.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(fetched.jwt_authorities.len(), own.jwt_authorities.len());

    // The raw HTTP answers, as a Go client would see them.
    let get = |method: http::Method, path: &'static str| {
        let auth = auth.clone();
        let addr = a.running.bundle_endpoint_addr.unwrap();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let tls = tokio_rustls::TlsConnector::from(client::tls_config(&auth).unwrap())
                .connect(name, tcp)
                .await
                .unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let resp = sender
                .send_request(
                    http::Request::builder()
                        .method(method)
                        .uri(path)
                        .header("host", addr.to_string())
                        .body(Empty::<Bytes>::new())
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let ctype = resp.headers()["content-type"].to_str().unwrap().to_owned();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, ctype, body)
        }
    };
    let (status, ctype, body) = get(http::Method::GET, "/").await;
    assert_eq!((status, ctype.as_str()), (200, "application/json"));
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["spiffe_refresh_hint"], 120);
    let (status, _, body) = get(http::Method::GET, "/other").await;
    assert_eq!((status, &body[..]), (404, &b"404 page not found\n"[..]));
    let (status, _, body) = get(http::Method::POST, "/").await;
    assert_eq!((status, &body[..]), (405, &b"405 method not allowed\n"[..]));
}
