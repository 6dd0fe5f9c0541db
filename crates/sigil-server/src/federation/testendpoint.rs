//! A bundle endpoint for unit tests that serves whatever body a test sets:
//! `https_spiffe`, with an SVID for `spiffe://<td>/spire/server` from a
//! throwaway CA whose root carries `spiffe://<td>`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use sigil_spiffe::{Bundle, SpiffeId, TrustDomain};

use super::client::EndpointAuth;

/// A self-signed CA with `spiffe://<td>` as its URI SAN, DER.
pub(crate) fn ca(td: &str) -> (Vec<u8>, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.distinguished_name.push(DnType::CommonName, td);
    p.subject_alt_names = vec![SanType::URI(format!("spiffe://{td}").try_into().unwrap())];
    let cert = p.self_signed(&key).unwrap();
    (cert.der().to_vec(), Issuer::new(p, key))
}

/// A bundle document of `td` holding the CA `root`.
pub(crate) fn bundle_doc(td: &str, root: &[u8]) -> Vec<u8> {
    let mut b = Bundle::new(TrustDomain::new(td).unwrap());
    b.x509_authorities = vec![root.to_vec()];
    b.refresh_hint_seconds = Some(300);
    b.to_jwks()
}

pub(crate) struct TestEndpoint {
    pub url: String,
    pub root: Vec<u8>,
    id: SpiffeId,
    body: Arc<Mutex<Vec<u8>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl TestEndpoint {
    /// Serves `td`'s own bundle until [`TestEndpoint::set_body`].
    pub async fn start(td: &str) -> TestEndpoint {
        let (root, issuer) = ca(td);
        let id = SpiffeId::parse(&format!("spiffe://{td}/spire/server")).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![SanType::URI(id.to_string().try_into().unwrap())];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let leaf = p.signed_by(&leaf_key, &issuer).unwrap();
        let mut tls = rustls::ServerConfig::builder_with_provider(sigil_crypto::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let body = Arc::new(Mutex::new(bundle_doc(td, &root)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let served = body.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let served = served.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |_req| {
                        let b = served.lock().unwrap().clone();
                        async move {
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(b))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TestEndpoint {
            url,
            root,
            id,
            body,
            _task: task,
        }
    }

    pub fn set_body(&self, body: Vec<u8>) {
        *self.body.lock().unwrap() = body;
    }

    pub fn auth(&self) -> EndpointAuth {
        EndpointAuth::Spiffe {
            id: self.id.clone(),
            roots: vec![self.root.clone()],
        }
    }
}
