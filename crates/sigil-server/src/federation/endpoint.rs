//! Our SPIFFE bundle endpoint: `GET /` over HTTPS answers with the current
//! bundle of our trust domain as a SPIFFE bundle document,
//! `spiffe_refresh_hint` set to the configured hint.
//!
//! How it authenticates is the profile's business ([`ServingCert`]):
//! - `https_spiffe`: the server's own X509-SVID (`spiffe://<td>/spire/server`),
//!   the same one the agent endpoint presents and rotated with it: each TLS
//!   config the agent endpoint publishes is turned into one without client
//!   authentication that offers HTTP/1.1.
//! - `https_web`: a Web PKI certificate from a resolver that always has the
//!   current one (ACME or files, see [`super::serving`]). With ACME the
//!   listener also offers `acme-tls/1`, and a connection that negotiated it
//!   (the CA validating us) is closed after the handshake.
//!
//! Like SPIRE's, it answers `405` to other methods and `404` to other paths,
//! and it never reads client certificates.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::server::ResolvesServerCert;
use sigil_spiffe::Bundle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::client::ALPN_HTTP1;

/// Where the endpoint's certificate comes from.
pub enum ServingCert {
    /// `https_spiffe`: the agent endpoint's TLS config stream (the server
    /// SVID).
    Spiffe(watch::Receiver<Arc<rustls::ServerConfig>>),
    /// `https_web`: a resolver serving the current Web PKI certificate.
    Web {
        /// The resolver.
        resolver: Arc<dyn ResolvesServerCert>,
        /// Whether to answer ACME TLS-ALPN-01 validation (`acme-tls/1`).
        acme: bool,
    },
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServingCert::Spiffe(_) => f.write_str("ServingCert::Spiffe"),
            ServingCert::Web { acme, .. } => write!(f, "ServingCert::Web {{ acme: {acme} }}"),
        }
    }
}

/// Serves the bundle endpoint on `listener` until the task is dropped.
/// `bundles` is our trust domain's bundle as the CA publishes it.
pub fn spawn(
    listener: TcpListener,
    serving: ServingCert,
    bundles: watch::Receiver<Arc<Bundle>>,
    refresh_hint: Duration,
) -> Result<tokio::task::JoinHandle<()>, rustls::Error> {
    let tls = match serving {
        ServingCert::Spiffe(agent_tls) => follow_tls(agent_tls)?,
        ServingCert::Web { resolver, acme } => watch::channel(Arc::new(web_tls(resolver, acme)?)).1,
    };
    let hint = i64::try_from(refresh_hint.as_secs()).unwrap_or(i64::MAX);
    Ok(tokio::spawn(async move {
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "bundle endpoint accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.borrow().clone());
            let bundles = bundles.clone();
            tokio::spawn(serve_connection(acceptor, tcp, addr, bundles, hint));
        }
    }))
}

/// The bundle document served for `bundle`: its content with
/// `spiffe_refresh_hint` replaced by `refresh_hint_seconds`.
pub fn bundle_document(bundle: &Bundle, refresh_hint_seconds: i64) -> Vec<u8> {
    let mut b = bundle.clone();
    b.refresh_hint_seconds = Some(refresh_hint_seconds);
    b.to_jwks()
}

/// The bundle endpoint's TLS config for one agent endpoint config: the same
/// certificate resolver (the server SVID), no client authentication,
/// HTTP/1.1.
pub fn endpoint_tls(agent: &rustls::ServerConfig) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(sigil_crypto::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(agent.cert_resolver.clone());
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// The `https_web` TLS config: `resolver`'s certificate, no client
/// authentication, HTTP/1.1 (and `acme-tls/1` when `acme`).
pub fn web_tls(
    resolver: Arc<dyn ResolvesServerCert>,
    acme: bool,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(sigil_crypto::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    if acme {
        config
            .alpn_protocols
            .push(sigil_acme::ACME_TLS_ALPN.to_vec());
    }
    Ok(config)
}

fn follow_tls(
    mut agent_tls: watch::Receiver<Arc<rustls::ServerConfig>>,
) -> Result<watch::Receiver<Arc<rustls::ServerConfig>>, rustls::Error> {
    let first = endpoint_tls(&agent_tls.borrow_and_update())?;
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        while agent_tls.changed().await.is_ok() {
            let next = endpoint_tls(&agent_tls.borrow_and_update());
            match next {
                Ok(cfg) => {
                    if tx.send(Arc::new(cfg)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not rebuild the bundle endpoint TLS config")
                }
            }
        }
    });
    Ok(rx)
}

async fn serve_connection(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    addr: SocketAddr,
    bundles: watch::Receiver<Arc<Bundle>>,
    hint: i64,
) {
    let stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "bundle endpoint TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%addr, "bundle endpoint TLS handshake timed out");
            return;
        }
    };
    if stream.get_ref().1.alpn_protocol() == Some(sigil_acme::ACME_TLS_ALPN) {
        // An ACME CA checked our TLS-ALPN-01 answer; nothing follows.
        tracing::debug!(%addr, "answered an ACME TLS-ALPN-01 validation");
        return;
    }
    let service = hyper::service::service_fn(move |req| {
        let bundle = bundles.borrow().clone();
        async move { Ok::<_, Infallible>(respond(&req, &bundle, hint)) }
    });
    // SPIRE's ReadHeaderTimeout.
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(%addr, error = %e, "bundle endpoint connection ended with an error");
    }
}

fn respond(
    req: &http::Request<Incoming>,
    bundle: &Bundle,
    hint: i64,
) -> http::Response<Full<Bytes>> {
    // Go's http.Error and http.NotFound texts, as SPIRE answers.
    if req.method() != http::Method::GET {
        return text(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "405 method not allowed\n",
        );
    }
    if req.uri().path() != "/" {
        return text(http::StatusCode::NOT_FOUND, "404 page not found\n");
    }
    let mut resp = http::Response::new(Full::new(Bytes::from(bundle_document(bundle, hint))));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn text(status: http::StatusCode, body: &'static str) -> http::Response<Full<Bytes>> {
    let mut resp = http::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        "x-content-type-options",
        http::HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_spiffe::TrustDomain;

    #[test]
    fn bundle_document_overrides_the_refresh_hint_and_keeps_the_rest() {
        let td = TrustDomain::new("a.org").unwrap();
        let mut b = Bundle::new(td.clone());
        b.sequence_number = 7;
        b.refresh_hint_seconds = Some(1);
        let doc = bundle_document(&b, 300);
        let parsed = Bundle::parse_jwks(&td, &doc).unwrap();
        assert_eq!(parsed.refresh_hint_seconds, Some(300));
        assert_eq!(parsed.sequence_number, 7);
    }
}
