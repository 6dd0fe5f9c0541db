//! The HTTPS client instant-acme talks to the ACME directory through: one
//! HTTP/1.1 connection per request over our rustls config (aws-lc-rs, the
//! [`web_roots`](crate::web_roots)), so no second TLS stack is compiled in.
//! An ACME exchange is a handful of requests, so pooling is not worth it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Uri};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

/// The longest one request may take, connection to response headers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why one ACME HTTP request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("{uri}: not an https URL with a host")]
    Url { uri: Uri },
    #[error("{uri}: connecting: {source}")]
    Connect { uri: Uri, source: std::io::Error },
    #[error("{uri}: TLS handshake: {source}")]
    Tls { uri: Uri, source: std::io::Error },
    #[error("{uri}: {source}")]
    Http { uri: Uri, source: hyper::Error },
    #[error("{uri}: building the request: {source}")]
    Request { uri: Uri, source: http::Error },
    #[error("{uri}: timed out after {REQUEST_TIMEOUT:?}")]
    Timeout { uri: Uri },
}

pub(crate) struct Client {
    tls: Arc<rustls::ClientConfig>,
}

impl Client {
    pub(crate) fn new(roots: Arc<rustls::RootCertStore>) -> Result<Self, rustls::Error> {
        let mut tls = rustls::ClientConfig::builder_with_provider(sigil_crypto::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client { tls: Arc::new(tls) })
    }
}

impl HttpClient for Client {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let tls = self.tls.clone();
        Box::pin(async move {
            let uri = req.uri().clone();
            match tokio::time::timeout(REQUEST_TIMEOUT, send(tls, req)).await {
                Ok(r) => r,
                Err(_) => Err(HttpError::Timeout { uri }),
            }
            .map_err(|e| instant_acme::Error::Other(Box::new(e)))
        })
    }
}

async fn send(
    tls: Arc<rustls::ClientConfig>,
    req: Request<BodyWrapper<Bytes>>,
) -> Result<BytesResponse, HttpError> {
    let uri = req.uri().clone();
    let url_err = || HttpError::Url { uri: uri.clone() };
    if uri.scheme_str() != Some("https") {
        return Err(url_err());
    }
    let authority = uri.authority().ok_or_else(url_err)?.clone();
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_owned();
    let name = ServerName::try_from(host.clone()).map_err(|_| url_err())?;
    let port = authority.port_u16().unwrap_or(443);

    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|source| HttpError::Connect {
            uri: uri.clone(),
            source,
        })?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|source| HttpError::Tls {
            uri: uri.clone(),
            source,
        })?;
    let http_err = |source| HttpError::Http {
        uri: uri.clone(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_err)?;
    // Drives the connection until the body has been read, then ends.
    tokio::spawn(conn);

    // Origin-form request target plus a Host header.
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    parts.uri = path
        .parse()
        .map_err(|e: http::uri::InvalidUri| HttpError::Request {
            uri: uri.clone(),
            source: e.into(),
        })?;
    let host_value =
        http::HeaderValue::from_str(authority.as_str()).map_err(|e| HttpError::Request {
            uri: uri.clone(),
            source: e.into(),
        })?;
    parts.headers.insert(http::header::HOST, host_value);
    let response = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(http_err)?;
    Ok(BytesResponse::from(response))
}
