//! Fetching one foreign trust domain's bundle from its SPIFFE bundle
//! endpoint: `GET <bundle_endpoint_url>` over HTTPS/1.1, the server
//! authenticated by its profile, the body read as a SPIFFE bundle document.
//!
//! - `https_spiffe`: the chain must verify against the X.509 authorities we
//!   hold for the endpoint SPIFFE ID's trust domain, and the leaf must name
//!   exactly that ID; the DNS name is not checked (SPIFFE Federation 5.2).
//! - `https_web`: the chain must verify against the Web PKI roots
//!   (`webpki-roots`, plus the PEM roots named by `SSL_CERT_FILE` and
//!   `SSL_CERT_DIR`, see `sigil_acme::web_roots`) for the URL's host name or
//!   IP address.
//!
//! A body larger than [`MAX_BUNDLE_BYTES`], one that is not a SPIFFE bundle
//! document, or one whose X.509 authorities name another trust domain in
//! their SPIFFE ID URI SAN is refused with a [`FetchError`] saying so; the
//! caller then keeps the bundle it had.
//!
//! This module never touches the datastore; the caller chooses the roots.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use sigil_crypto::tls::ServerIdPolicy;
use sigil_spiffe::{Bundle, BundleError, SpiffeId, TrustDomain};
use tokio::net::TcpStream;

/// How a bundle endpoint proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointAuth {
    /// `https_web`: a certificate from a Web PKI CA for the URL's host.
    Web,
    /// `https_spiffe`: an X509-SVID with exactly `id`, chaining to `roots`
    /// (DER X.509 authorities of `id`'s trust domain).
    Spiffe {
        /// The SPIFFE ID the endpoint must present.
        id: SpiffeId,
        /// The authorities it must chain to.
        roots: Vec<Vec<u8>>,
    },
}

/// Why a bundle could not be fetched. The `Display` texts name the URL and
/// the step that failed, in SPIRE's words where SPIRE has some.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL is not `https://host[:port][/path]`.
    #[error("invalid bundle endpoint URL {url:?}: {source}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        source: UrlError,
    },
    /// No TLS client could be built (for `https_spiffe`: no usable roots).
    #[error("could not configure TLS for {url}: {source}")]
    TlsConfig {
        /// The URL.
        url: String,
        /// Why.
        source: TlsConfigError,
    },
    /// The TCP connection failed.
    #[error("failed to fetch bundle: connecting to {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The TLS handshake failed; for `https_spiffe` this includes a server
    /// that presents another SPIFFE ID or a chain our bundle does not trust.
    #[error("failed to fetch bundle: TLS handshake with {url}: {reason}")]
    Handshake {
        /// The URL.
        url: String,
        /// What rustls reported, with a certificate verifier's own reason
        /// spelled out.
        reason: String,
    },
    /// HTTP failed after the handshake.
    #[error("failed to fetch bundle: {url}: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The endpoint answered with another status than 200.
    #[error("unexpected status {status} fetching bundle: {body}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The first bytes of the body.
        body: String,
    },
    /// The body is not a valid SPIFFE bundle document.
    #[error("failed to decode bundle from {url}: {source}")]
    Decode {
        /// The URL.
        url: String,
        /// The parser's reason.
        source: BundleError,
    },
    /// The body is larger than [`MAX_BUNDLE_BYTES`].
    #[error("failed to fetch bundle: {url}: the body is larger than {MAX_BUNDLE_BYTES} bytes")]
    TooLarge {
        /// The URL.
        url: String,
    },
    /// An X.509 authority of the fetched bundle carries the SPIFFE ID of
    /// another trust domain: the endpoint serves someone else's bundle.
    #[error(
        "bundle from {url} is not for trust domain {expected:?}: its X.509 authority names {found}"
    )]
    WrongTrustDomain {
        /// The URL.
        url: String,
        /// The trust domain we federate with.
        expected: String,
        /// The SPIFFE ID the authority carries.
        found: String,
    },
    /// The whole fetch took longer than [`FETCH_TIMEOUT`].
    #[error("failed to fetch bundle: {url}: timed out after {FETCH_TIMEOUT:?}")]
    Timeout {
        /// The URL.
        url: String,
    },
}

/// The longest a single fetch may take, connection to last byte.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest bundle document accepted.
pub const MAX_BUNDLE_BYTES: usize = 4 << 20;

/// The ALPN protocol both ends of a bundle endpoint use.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Fetches `trust_domain`'s bundle from `url`, authenticating the endpoint
/// as `auth` says.
pub async fn fetch_bundle(
    trust_domain: &TrustDomain,
    url: &str,
    auth: &EndpointAuth,
) -> Result<Bundle, FetchError> {
    match tokio::time::timeout(FETCH_TIMEOUT, fetch(trust_domain, url, auth)).await {
        Ok(r) => r,
        Err(_) => Err(FetchError::Timeout { url: url.into() }),
    }
}

/// Why a bundle endpoint URL cannot be fetched from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Not a URI at all.
    #[error("{0}")]
    Syntax(String),
    /// A scheme other than https.
    #[error("scheme {0:?} is not https")]
    NotHttps(String),
    /// No scheme.
    #[error("the URL has no scheme; it must start with https://")]
    NoScheme,
    /// No host.
    #[error("the URL has no host")]
    NoHost,
    /// User info in the authority.
    #[error("the URL must not contain user info")]
    UserInfo,
    /// The host is neither a DNS name nor an IP address.
    #[error("{host:?} is not a DNS name or IP address: {reason}")]
    ServerName {
        /// The host.
        host: String,
        /// What rustls reported.
        reason: String,
    },
}

/// Why no TLS client config could be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The https_spiffe roots or policy are unusable.
    #[error(transparent)]
    Spiffe(#[from] sigil_crypto::CryptoError),
    /// rustls refused the protocol versions.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

/// The parts of a bundle endpoint URL a fetch needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    /// Host name or IP address, without IPv6 brackets.
    pub host: String,
    /// The port (443 unless given).
    pub port: u16,
    /// Path and query to request (`/` when empty).
    pub path_and_query: String,
    /// The `Host` header value (authority without user info).
    pub authority: String,
}

impl EndpointUrl {
    /// Parses an `https` URL.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| UrlError::Syntax(e.to_string()))?;
        match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => {}
            Some(s) => return Err(UrlError::NotHttps(s.to_owned())),
            None => return Err(UrlError::NoScheme),
        }
        let authority = uri.authority().ok_or(UrlError::NoHost)?;
        if authority.as_str().contains('@') {
            return Err(UrlError::UserInfo);
        }
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        Ok(EndpointUrl {
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(443),
            path_and_query: uri
                .path_and_query()
                .map(|p| p.as_str())
                .filter(|p| !p.is_empty())
                .unwrap_or("/")
                .to_owned(),
            authority: authority.as_str().to_owned(),
        })
    }

    /// The name to verify (https_web) and send as SNI.
    pub fn server_name(&self) -> Result<ServerName<'static>, UrlError> {
        ServerName::try_from(self.host.clone()).map_err(|e| UrlError::ServerName {
            host: self.host.clone(),
            reason: e.to_string(),
        })
    }
}

/// A client config for `auth`, offering HTTP/1.1 only.
pub fn tls_config(auth: &EndpointAuth) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let mut config = match auth {
        EndpointAuth::Spiffe { id, roots } => sigil_crypto::tls::client_config_with_policy(
            roots.clone(),
            ServerIdPolicy::Exact(id.clone()),
            None,
        )?,
        EndpointAuth::Web => {
            rustls::ClientConfig::builder_with_provider(sigil_crypto::tls::provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(sigil_acme::web_roots())
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

async fn fetch(
    trust_domain: &TrustDomain,
    url: &str,
    auth: &EndpointAuth,
) -> Result<Bundle, FetchError> {
    let invalid = |source: UrlError| FetchError::InvalidUrl {
        url: url.into(),
        source,
    };
    let endpoint = EndpointUrl::parse(url).map_err(invalid)?;
    let name = endpoint.server_name().map_err(invalid)?;
    let config = tls_config(auth).map_err(|source| FetchError::TlsConfig {
        url: url.into(),
        source,
    })?;

    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|source| FetchError::Connect {
            url: url.into(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| FetchError::Handshake {
            url: url.into(),
            reason: handshake_reason(&e),
        })?;

    let http_err = |e: &dyn std::fmt::Display| FetchError::Http {
        url: url.into(),
        reason: e.to_string(),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| http_err(&e))?;
    let conn = tokio::spawn(conn);
    let request = http::Request::get(endpoint.path_and_query.as_str())
        .header(http::header::HOST, endpoint.authority.as_str())
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| http_err(&e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| http_err(&e))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BUNDLE_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                FetchError::TooLarge { url: url.into() }
            } else {
                http_err(&format!("reading the body: {e}"))
            }
        })?
        .to_bytes();
    conn.abort();
    if status != http::StatusCode::OK {
        let shown = &body[..body.len().min(1024)];
        return Err(FetchError::Status {
            status: status.as_u16(),
            body: String::from_utf8_lossy(shown).into_owned(),
        });
    }
    let bundle = Bundle::parse_jwks(trust_domain, &body).map_err(|source| FetchError::Decode {
        url: url.into(),
        source,
    })?;
    if let Some(found) = foreign_authority(trust_domain, &bundle) {
        return Err(FetchError::WrongTrustDomain {
            url: url.into(),
            expected: trust_domain.name().into(),
            found: found.to_string(),
        });
    }
    Ok(bundle)
}

/// The first SPIFFE ID of another trust domain found in a URI SAN of
/// `bundle`'s X.509 authorities. SPIRE's and sigil's CAs carry
/// `spiffe://<td>` there; authorities without a SPIFFE ID (an upstream
/// root) say nothing and pass.
fn foreign_authority(trust_domain: &TrustDomain, bundle: &Bundle) -> Option<SpiffeId> {
    bundle
        .x509_authorities
        .iter()
        .filter_map(|der| sigil_crypto::x509::cert_info(der).ok())
        .flat_map(|info| info.uri_sans)
        .filter_map(|uri| SpiffeId::parse(&uri).ok())
        .find(|id| id.trust_domain() != *trust_domain)
}

/// rustls shows a verifier's own error with `Debug`; show it with
/// `Display` so a wrong endpoint SPIFFE ID reads as a sentence.
fn handshake_reason(e: &std::io::Error) -> String {
    use rustls::{CertificateError, Error as TlsError};
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsError>())
    {
        Some(TlsError::InvalidCertificate(CertificateError::Other(other))) => {
            format!("invalid peer certificate: {}", other.0)
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_url_takes_host_port_and_path() {
        let u = EndpointUrl::parse("https://example.org/bundle.json?x=1").unwrap();
        assert_eq!(u.host, "example.org");
        assert_eq!(u.port, 443);
        assert_eq!(u.path_and_query, "/bundle.json?x=1");
        assert_eq!(u.authority, "example.org");
        let u = EndpointUrl::parse("HTTPS://127.0.0.1:8443").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 8443));
        assert_eq!(u.path_and_query, "/");
        let u = EndpointUrl::parse("https://[::1]:9443/b").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9443));
        assert!(matches!(u.server_name().unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(
            EndpointUrl::parse("https://example.org")
                .unwrap()
                .server_name()
                .unwrap(),
            ServerName::DnsName(_)
        ));
    }

    #[test]
    fn endpoint_url_refuses_other_schemes_user_info_and_no_host() {
        let e = EndpointUrl::parse("http://example.org")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "scheme \"http\" is not https");
        let e = EndpointUrl::parse("https://user@example.org")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "the URL must not contain user info");
        assert!(EndpointUrl::parse("example.org/x").is_err());
    }

    #[test]
    fn web_profile_trusts_the_webpki_roots_and_speaks_http1() {
        let c = tls_config(&EndpointAuth::Web).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(!sigil_acme::web_roots().is_empty());
    }

    #[test]
    fn spiffe_profile_without_roots_is_a_config_error() {
        let id = SpiffeId::parse("spiffe://b.org/spire/server").unwrap();
        let e = tls_config(&EndpointAuth::Spiffe { id, roots: vec![] })
            .unwrap_err()
            .to_string();
        assert!(e.contains("trust roots"), "{e}");
    }

    #[tokio::test]
    async fn fetch_names_the_url_when_nothing_listens() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let url = format!("https://{addr}");
        let td = TrustDomain::new("b.org").unwrap();
        let e = fetch_bundle(&td, &url, &EndpointAuth::Web)
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Connect { .. }), "{e}");
        assert!(e.to_string().contains(&url), "{e}");
    }

    mod bad_endpoints {
        use super::super::*;
        use crate::federation::testendpoint::{TestEndpoint, bundle_doc, ca};

        fn b_org() -> TrustDomain {
            TrustDomain::new("b.org").unwrap()
        }

        #[tokio::test]
        async fn a_good_endpoint_yields_its_bundle() {
            let ep = TestEndpoint::start("b.org").await;
            let b = fetch_bundle(&b_org(), &ep.url, &ep.auth()).await.unwrap();
            assert_eq!(b.x509_authorities, vec![ep.root.clone()]);
        }

        #[tokio::test]
        async fn a_garbage_body_is_a_decode_error_naming_the_url() {
            let ep = TestEndpoint::start("b.org").await;
            ep.set_body(b"<html>502 Bad Gateway</html>".to_vec());
            let e = fetch_bundle(&b_org(), &ep.url, &ep.auth())
                .await
                .unwrap_err();
            assert!(matches!(e, FetchError::Decode { .. }), "{e}");
            assert!(e.to_string().contains(&ep.url), "{e}");
            ep.set_body(br#"{"keys": 7}"#.to_vec());
            let e = fetch_bundle(&b_org(), &ep.url, &ep.auth())
                .await
                .unwrap_err();
            assert!(e.to_string().contains("\"keys\""), "{e}");
        }

        #[tokio::test]
        async fn an_oversized_body_is_refused_as_too_large() {
            let ep = TestEndpoint::start("b.org").await;
            let mut huge = br#"{"keys": [], "pad": ""#.to_vec();
            huge.resize(MAX_BUNDLE_BYTES + 10, b'a');
            huge.extend_from_slice(br#""}"#);
            ep.set_body(huge);
            let e = fetch_bundle(&b_org(), &ep.url, &ep.auth())
                .await
                .unwrap_err();
            assert!(matches!(e, FetchError::TooLarge { .. }), "{e}");
            assert!(e.to_string().contains("larger than 4194304 bytes"), "{e}");
        }

        #[tokio::test]
        async fn a_bundle_of_another_trust_domain_is_refused() {
            let ep = TestEndpoint::start("b.org").await;
            let (other_root, _) = ca("c.org");
            ep.set_body(bundle_doc("c.org", &other_root));
            let e = fetch_bundle(&b_org(), &ep.url, &ep.auth())
                .await
                .unwrap_err();
            assert!(matches!(e, FetchError::WrongTrustDomain { .. }), "{e}");
            assert_eq!(
                e.to_string(),
                format!(
                    "bundle from {} is not for trust domain \"b.org\": its X.509 authority names spiffe://c.org",
                    ep.url
                )
            );
        }
    }
}
