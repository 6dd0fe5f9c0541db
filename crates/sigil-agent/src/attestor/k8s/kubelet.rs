//! Asking the kubelet for the pods on this node, and sharing the answer.
//!
//! [`KubeletClient`] does one thing: `GET /pods` on the kubelet, as SPIRE
//! does. With the read-only port that is `http://127.0.0.1:<port>`. With the
//! secure port it is `https://<node name>:<port>`, verifying the kubelet's
//! certificate for that name against `kubelet_ca_path`; when no node name is
//! known it is `https://127.0.0.1:<port>` and only the chain is verified
//! (the kubelet's certificate does not name 127.0.0.1). It authenticates with
//! the bearer token in `token_path` (read again for every request, so a
//! rotated service-account token is picked up at once), or a client
//! certificate, or not at all. The CA and client certificate are reloaded
//! from disk once they are older than `reload_interval`. Every request has 10
//! seconds to complete, and a pod list over [`MAX_POD_LIST_BYTES`] is
//! refused.
//!
//! [`SharedPodList`] puts one cache in front of it. Concurrent attestations
//! share one request in flight; a list fetched less than
//! `poll_retry_interval` ago is handed out again; requests start at least
//! `poll_retry_interval` apart; and a caller that has already looked at a
//! list can ask for a newer one (SPIRE's retry while a container is not yet
//! in the status). A kubelet answers `/pods` with the whole node's pods,
//! about a mebibyte on a busy node, so this matters.
//!
//! This module never interprets pods beyond indexing them by UID.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{K8sAttestorConfig, KubeletAuth, KubeletEndpoint, KubeletVerification};

/// The largest pod list accepted from the kubelet.
pub const MAX_POD_LIST_BYTES: usize = 64 << 20;

/// How long one `/pods` request may take, as in SPIRE.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the pod list could not be had from the kubelet. Clonable, because one
/// failed request is the answer to every attestation that waited for it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KubeletError {
    /// A credential or CA file could not be read.
    #[error("reading the kubelet {what} {}: {source}", path.display())]
    ReadFile {
        /// Which file (`CA`, `token`, `client certificate`, `client key`).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },
    /// A credential or CA file holds nothing usable.
    #[error("the kubelet {what} {} is unusable: {reason}", path.display())]
    BadFile {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The node name cannot be used as a TLS server name.
    #[error("node name {0:?} is not a valid DNS name or IP address for the kubelet's certificate")]
    BadNodeName(String),
    /// rustls refused the TLS settings.
    #[error("building the TLS client for the kubelet: {0}")]
    Tls(#[source] Arc<rustls::Error>),
    /// The CA bundle could not be turned into trust anchors.
    #[error("the kubelet CA {}: {source}", path.display())]
    TrustAnchors {
        /// The CA file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Arc<sigil_crypto::CryptoError>,
    },
    /// No TCP connection to the kubelet.
    #[error("connecting to the kubelet at {url}: {source}")]
    Connect {
        /// The pod list URL.
        url: String,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The TLS handshake failed (an untrusted kubelet certificate shows up
    /// here).
    #[error("TLS handshake with the kubelet at {url}: {source}")]
    Handshake {
        /// The pod list URL.
        url: String,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The HTTP exchange failed.
    #[error("requesting {url}: {source}")]
    Http {
        /// The pod list URL.
        url: String,
        /// The underlying error.
        #[source]
        source: Arc<hyper::Error>,
    },
    /// The kubelet answered with something other than 200 OK.
    #[error("unexpected status code on pods response from {url}: {status} {body}")]
    Status {
        /// The pod list URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the response body (at most 1 KiB).
        body: String,
    },
    /// The pod list is larger than [`MAX_POD_LIST_BYTES`].
    #[error("the pod list from {url} exceeds the {limit}-byte limit")]
    TooLarge {
        /// The pod list URL.
        url: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The request did not complete within [`REQUEST_TIMEOUT`].
    #[error("the kubelet at {url} did not answer within {timeout:?}")]
    Timeout {
        /// The pod list URL.
        url: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The body is not a pod list.
    #[error("invalid kubelet response from {url}: {reason}")]
    InvalidPodList {
        /// The pod list URL.
        url: String,
        /// What is wrong.
        #[source]
        reason: PodListError,
    },
    /// The request could not be built (a token that is not a valid header
    /// value, for instance).
    #[error("building the request to {url}: {source}")]
    Request {
        /// The pod list URL.
        url: String,
        /// The underlying error.
        #[source]
        source: Arc<http::Error>,
    },
}

/// Why a kubelet response body is not a pod list.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PodListError {
    /// Not a JSON object.
    #[error("expected a JSON object: {0}")]
    NotAnObject(#[source] Arc<serde_json::Error>),
    /// No `items` array.
    #[error("expected an items array")]
    NoItemsArray,
}

/// The kubelet's pods, indexed by UID and kept as raw JSON until one is
/// needed (most attestations decode one pod out of many).
#[derive(Debug, Default)]
pub struct PodList {
    by_uid: HashMap<String, Box<RawValue>>,
}

impl PodList {
    /// Parses a `PodList` body. `items` must be present (null counts as
    /// empty); items without `metadata.uid` are skipped with a warning.
    pub fn parse(body: &[u8]) -> Result<PodList, PodListError> {
        #[derive(Deserialize)]
        struct Uid {
            metadata: Option<UidMeta>,
        }
        #[derive(Deserialize)]
        struct UidMeta {
            uid: Option<String>,
        }
        let top: HashMap<String, Box<RawValue>> =
            serde_json::from_slice(body).map_err(|e| PodListError::NotAnObject(Arc::new(e)))?;
        let items = top.get("items").ok_or(PodListError::NoItemsArray)?;
        let items: Vec<Box<RawValue>> =
            serde_json::from_str::<Option<Vec<Box<RawValue>>>>(items.get())
                .map_err(|_| PodListError::NoItemsArray)?
                .unwrap_or_default();
        let mut by_uid = HashMap::with_capacity(items.len());
        for item in items {
            let uid = serde_json::from_str::<Uid>(item.get())
                .ok()
                .and_then(|u| u.metadata)
                .and_then(|m| m.uid)
                .filter(|u| !u.is_empty());
            match uid {
                Some(uid) => {
                    by_uid.insert(uid, item);
                }
                None => tracing::warn!("kubelet pod list has a pod without a UID; skipped"),
            }
        }
        Ok(PodList { by_uid })
    }

    /// Number of pods with a UID.
    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    /// Whether the list holds no pods.
    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }

    /// The pod with this UID, decoded.
    pub fn pod(&self, uid: &str) -> Option<Result<Pod, serde_json::Error>> {
        self.by_uid
            .get(uid)
            .map(|raw| serde_json::from_str(raw.get()))
    }

    /// Every pod, decoded lazily, with its UID.
    pub fn pods(&self) -> impl Iterator<Item = (&str, Result<Pod, serde_json::Error>)> {
        self.by_uid
            .iter()
            .map(|(uid, raw)| (uid.as_str(), serde_json::from_str(raw.get())))
    }
}

/// Where and how to reach the kubelet.
#[derive(Debug)]
pub struct KubeletClient {
    host: String,
    port: u16,
    url: String,
    tls: Option<TlsSettings>,
    token_path: Option<PathBuf>,
    reload_interval: Duration,
    loaded: Mutex<Option<(Instant, Arc<ClientConfig>)>>,
}

#[derive(Debug, Clone)]
struct TlsSettings {
    server_name: ServerName<'static>,
    /// The CA file, unless verification is skipped.
    ca_path: Option<PathBuf>,
    /// Whether the certificate must name `server_name` (false when the
    /// kubelet is reached as 127.0.0.1 for want of a node name).
    check_name: bool,
    client_cert: Option<(PathBuf, PathBuf)>,
}

impl KubeletClient {
    /// A client for the configured endpoint. Loads the TLS material and the
    /// token once, so that unreadable files fail configuration (as in SPIRE)
    /// rather than the first attestation.
    pub fn new(config: &K8sAttestorConfig) -> Result<KubeletClient, KubeletError> {
        let client = match &config.kubelet {
            KubeletEndpoint::ReadOnly { port } => KubeletClient {
                host: "127.0.0.1".into(),
                port: *port,
                url: format!("http://127.0.0.1:{port}/pods"),
                tls: None,
                token_path: None,
                reload_interval: config.reload_interval,
                loaded: Mutex::new(None),
            },
            KubeletEndpoint::Secure {
                port,
                verification,
                auth,
            } => {
                let (host, check_name) = match &config.node_name {
                    Some(name) => (name.clone(), true),
                    None => ("127.0.0.1".to_owned(), false),
                };
                let server_name = ServerName::try_from(host.clone())
                    .map_err(|_| KubeletError::BadNodeName(host.clone()))?;
                let url_host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                let (token_path, client_cert) = match auth {
                    KubeletAuth::Anonymous => (None, None),
                    KubeletAuth::BearerToken { token_path } => (Some(token_path.clone()), None),
                    KubeletAuth::ClientCertificate {
                        certificate_path,
                        private_key_path,
                    } => (
                        None,
                        Some((certificate_path.clone(), private_key_path.clone())),
                    ),
                };
                KubeletClient {
                    url: format!("https://{url_host}:{port}/pods"),
                    host,
                    port: *port,
                    tls: Some(TlsSettings {
                        server_name,
                        ca_path: match verification {
                            KubeletVerification::Skip => None,
                            KubeletVerification::CaFile(path) => Some(path.clone()),
                        },
                        check_name,
                        client_cert,
                    }),
                    token_path,
                    reload_interval: config.reload_interval,
                    loaded: Mutex::new(None),
                }
            }
        };
        if let Some(tls) = &client.tls {
            let config = Arc::new(build_tls_config(tls)?);
            *client.loaded.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((Instant::now(), config));
        }
        if let Some(path) = &client.token_path {
            std::fs::read(path).map_err(|e| KubeletError::ReadFile {
                what: "token",
                path: path.clone(),
                source: Arc::new(e),
            })?;
        }
        Ok(client)
    }

    /// The URL pods are fetched from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Fetches and parses `/pods`.
    pub async fn pod_list(&self) -> Result<PodList, KubeletError> {
        let body = tokio::time::timeout(REQUEST_TIMEOUT, self.fetch())
            .await
            .map_err(|_| KubeletError::Timeout {
                url: self.url.clone(),
                timeout: REQUEST_TIMEOUT,
            })??;
        PodList::parse(&body).map_err(|reason| KubeletError::InvalidPodList {
            url: self.url.clone(),
            reason,
        })
    }

    async fn fetch(&self) -> Result<Vec<u8>, KubeletError> {
        let token = self.token().await?;
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| KubeletError::Connect {
                url: self.url.clone(),
                source: Arc::new(e),
            })?;
        match &self.tls {
            None => self.exchange(tcp, token.as_deref()).await,
            Some(tls) => {
                let config = self.tls_config().await?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map_err(|e| KubeletError::Handshake {
                        url: self.url.clone(),
                        source: Arc::new(e),
                    })?;
                self.exchange(stream, token.as_deref()).await
            }
        }
    }

    async fn exchange<S>(&self, io: S, token: Option<&str>) -> Result<Vec<u8>, KubeletError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http = |e| KubeletError::Http {
            url: self.url.clone(),
            source: Arc::new(e),
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(http)?;
        let connection = AbortOnDrop(tokio::spawn(async move {
            // Its errors surface through `send_request` and the body.
            let _ = connection.await;
        }));
        let authority = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut request = Request::get("/pods").header(header::HOST, authority);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| KubeletError::Request {
                url: self.url.clone(),
                source: Arc::new(e),
            })?;
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        let too_large = || KubeletError::TooLarge {
            url: self.url.clone(),
            limit: MAX_POD_LIST_BYTES,
        };
        let declared = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if status == StatusCode::OK && declared.is_some_and(|n| n > MAX_POD_LIST_BYTES as u64) {
            return Err(too_large());
        }
        let limit = if status == StatusCode::OK {
            MAX_POD_LIST_BYTES
        } else {
            1024
        };
        let mut body = response.into_body();
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(frame) => frame,
                // The start of an error body is enough to report.
                Err(_) if status != StatusCode::OK => break,
                Err(e) => return Err(http(e)),
            };
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > limit {
                    if status != StatusCode::OK {
                        out.extend_from_slice(&data[..limit - out.len()]);
                        break;
                    }
                    return Err(too_large());
                }
                out.extend_from_slice(&data);
            }
        }
        drop(connection);
        if status != StatusCode::OK {
            return Err(KubeletError::Status {
                url: self.url.clone(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&out).into_owned(),
            });
        }
        Ok(out)
    }

    /// The bearer token, read afresh and trimmed.
    async fn token(&self) -> Result<Option<String>, KubeletError> {
        let Some(path) = &self.token_path else {
            return Ok(None);
        };
        let text = tokio::fs::read(path)
            .await
            .map_err(|e| KubeletError::ReadFile {
                what: "token",
                path: path.clone(),
                source: Arc::new(e),
            })?;
        Ok(Some(String::from_utf8_lossy(&text).trim().to_owned()))
    }

    /// The TLS configuration, rebuilt from disk when older than the reload
    /// interval.
    async fn tls_config(&self) -> Result<Arc<ClientConfig>, KubeletError> {
        let Some(tls) = &self.tls else {
            return Err(KubeletError::Tls(Arc::new(rustls::Error::General(
                "the read-only port does not use TLS".into(),
            ))));
        };
        let current = self
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some((at, config)) = current
            && at.elapsed() < self.reload_interval
        {
            return Ok(config);
        }
        let settings = tls.clone();
        let config = tokio::task::spawn_blocking(move || build_tls_config(&settings))
            .await
            .map_err(|e| {
                KubeletError::Tls(Arc::new(rustls::Error::General(format!(
                    "loading the TLS files did not complete: {e}"
                ))))
            })??;
        let config = Arc::new(config);
        *self.loaded.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), config.clone()));
        Ok(config)
    }
}

/// Reads the CA and client credentials (blocking file reads).
fn build_tls_config(tls: &TlsSettings) -> Result<ClientConfig, KubeletError> {
    let provider = sigil_crypto::tls::provider();
    let tls_err = |e: rustls::Error| KubeletError::Tls(Arc::new(e));
    let verifier: Arc<dyn ServerCertVerifier> = match &tls.ca_path {
        None => Arc::new(sigil_crypto::tls::UnverifiedServer::new()),
        Some(path) => {
            let pem = read_file("CA", path)?;
            let roots = sigil_crypto::parse_pem_certs(&pem).map_err(|e| KubeletError::BadFile {
                what: "CA",
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let anchor_err = |e| KubeletError::TrustAnchors {
                path: path.clone(),
                source: Arc::new(e),
            };
            if tls.check_name {
                let mut store = RootCertStore::empty();
                for der in &roots {
                    store
                        .add(CertificateDer::from(der.as_slice()).into_owned())
                        .map_err(tls_err)?;
                }
                WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                    .build()
                    .map_err(|e| KubeletError::BadFile {
                        what: "CA",
                        path: path.clone(),
                        reason: e.to_string(),
                    })?
            } else {
                Arc::new(
                    sigil_crypto::tls::SpiffeServerVerifier::chain_only(&roots)
                        .map_err(anchor_err)?,
                )
            }
        }
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match &tls.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert_path, key_path)) => {
            let cert_pem = read_file("client certificate", cert_path)?;
            let key_pem = read_file("client key", key_path)?;
            let chain = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad_file("client certificate", cert_path, e))?;
            if chain.is_empty() {
                return Err(bad_file(
                    "client certificate",
                    cert_path,
                    "no CERTIFICATE block",
                ));
            }
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| bad_file("client key", key_path, e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad_file("client key", key_path, e))
        }
    }
}

fn bad_file(what: &'static str, path: &Path, reason: impl std::fmt::Display) -> KubeletError {
    KubeletError::BadFile {
        what,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, KubeletError> {
    std::fs::read(path).map_err(|e| KubeletError::ReadFile {
        what,
        path: path.to_owned(),
        source: Arc::new(e),
    })
}

/// Ends the connection task when the exchange is over or abandoned (a
/// timeout drops the future).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A pod list and its version: versions grow with every successful fetch.
#[derive(Debug, Clone)]
pub struct VersionedPodList {
    /// Larger is newer.
    pub version: u64,
    /// The pods.
    pub pods: Arc<PodList>,
}

/// One kubelet request shared by everyone who needs the pod list at the same
/// time (see the module docs).
#[derive(Debug, Clone)]
pub struct SharedPodList {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    client: KubeletClient,
    interval: Duration,
    state: Mutex<FetchState>,
    completed: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct FetchState {
    /// The newest successful list and when its request started.
    cached: Option<(Instant, VersionedPodList)>,
    /// The outcome of the last request to complete, numbered.
    last: Option<(u64, Result<VersionedPodList, KubeletError>)>,
    completions: u64,
    versions: u64,
    in_flight: bool,
    last_start: Option<Instant>,
}

impl SharedPodList {
    /// A cache in front of `client`; `interval` is both how long a list is
    /// reused and the least time between two requests.
    pub fn new(client: KubeletClient, interval: Duration) -> SharedPodList {
        SharedPodList {
            inner: Arc::new(Shared {
                client,
                interval,
                state: Mutex::new(FetchState::default()),
                completed: watch::Sender::new(0),
            }),
        }
    }

    /// The kubelet client behind the cache.
    pub fn client(&self) -> &KubeletClient {
        &self.inner.client
    }

    /// A pod list newer than version `after` (0 for any): the cached one if
    /// it is recent enough, else the outcome of the next request, which
    /// starts once `interval` has passed since the previous one. A failed
    /// request is the answer for everyone who was waiting for it.
    pub async fn fetch_newer_than(&self, after: u64) -> Result<VersionedPodList, KubeletError> {
        let mut completed = self.inner.completed.subscribe();
        let asked_at = self.lock().completions;
        loop {
            {
                let mut state = self.lock();
                if let Some((n, outcome)) = &state.last
                    && *n > asked_at
                {
                    return outcome.clone();
                }
                if let Some((started, list)) = &state.cached
                    && list.version > after
                    && started.elapsed() < self.inner.interval
                {
                    return Ok(list.clone());
                }
                if !state.in_flight {
                    state.in_flight = true;
                    let wait = state.last_start.map_or(Duration::ZERO, |at| {
                        self.inner.interval.saturating_sub(at.elapsed())
                    });
                    tokio::spawn(self.clone().fetch_after(wait));
                }
            }
            if completed.changed().await.is_err() {
                // Unreachable while `self` holds the sender; fail safe.
                return Err(KubeletError::Timeout {
                    url: self.inner.client.url.clone(),
                    timeout: REQUEST_TIMEOUT,
                });
            }
        }
    }

    async fn fetch_after(self, wait: Duration) {
        tokio::time::sleep(wait).await;
        let started = Instant::now();
        self.lock().last_start = Some(started);
        let result = self.inner.client.pod_list().await;
        let n = {
            let mut state = self.lock();
            state.in_flight = false;
            state.completions += 1;
            let outcome = result.map(|pods| {
                state.versions += 1;
                VersionedPodList {
                    version: state.versions,
                    pods: Arc::new(pods),
                }
            });
            if let Ok(list) = &outcome {
                state.cached = Some((started, list.clone()));
            }
            state.last = Some((state.completions, outcome));
            state.completions
        };
        self.inner.completed.send_replace(n);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FetchState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_lists_are_indexed_by_uid_and_pods_decoded_on_demand() {
        let body = br#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[
            {"metadata":{"uid":"u1","name":"a"}},
            {"metadata":{"name":"no-uid"}},
            7,
            {"metadata":{"uid":"u2","name":"b"},"spec":{"containers":"not a list"}}
        ]}"#;
        let list = PodList::parse(body).expect("parse");
        assert_eq!(list.len(), 2);
        let a = list.pod("u1").expect("u1").expect("decodes");
        assert_eq!(a.metadata.name.as_deref(), Some("a"));
        assert!(
            list.pod("u2").expect("u2").is_err(),
            "a malformed pod fails only when it is needed"
        );
        assert!(list.pod("u3").is_none());
    }

    #[test]
    fn a_body_that_is_not_a_pod_list_is_refused() {
        assert!(PodList::parse(b"[]").is_err());
        assert!(PodList::parse(b"{}").is_err());
        assert!(PodList::parse(br#"{"items":{}}"#).is_err());
        assert!(PodList::parse(b"not json").is_err());
        assert!(
            PodList::parse(br#"{"items":null}"#)
                .expect("null items")
                .is_empty()
        );
    }
}
