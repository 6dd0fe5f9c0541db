//! A real Kubernetes control plane for tests: `etcd` and `kube-apiserver`
//! (built from the Go module proxy by `.ci/install-kubernetes.sh`), run on
//! free 127.0.0.1 ports in a temporary directory, without a kubelet,
//! controller manager or scheduler. Objects are created through the API the
//! way a cluster's components would; [`FakeKubelet`] stands in for the
//! kubelet's `/pods` endpoint.
//!
//! [`KUBE_BIN_ENV`] names the directory holding both binaries. Without it,
//! [`KubeControlPlane::start`] prints a skip notice and returns `None`, except
//! in CI (`CI=true`), where it is required.
//!
//! Every call here blocks the calling thread; from async code, call them
//! through `tokio::task::spawn_blocking`.

use std::convert::Infallible;
use std::fs;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::Full;
use hyper::body::Bytes;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_RSA_SHA256, RsaKeySize, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};

use crate::free_port;

/// Environment variable naming the directory that holds `kube-apiserver` and
/// `etcd` (the last stdout line of `.ci/install-kubernetes.sh`).
pub const KUBE_BIN_ENV: &str = "SIGIL_TEST_KUBE_BIN";

/// Issuer of service account tokens (`--service-account-issuer`), as in a
/// default cluster.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc";

/// Audiences the API server accepts in tokens (`--api-audiences`): its own
/// default and `spire-server`, the audience SPIRE's `k8s_psat` uses.
pub const API_AUDIENCES: [&str; 2] = ["https://kubernetes.default.svc", "spire-server"];

/// The address the fake nodes report as `InternalIP`, where a [`FakeKubelet`]
/// listens.
pub const NODE_INTERNAL_IP: &str = "127.0.0.1";

/// Name of the static-token admin user (in group `system:masters`).
pub const ADMIN_USER: &str = "sigil-test-admin";

/// What went wrong talking to the API server (or to etcd while starting).
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The method string is not an HTTP method.
    #[error("invalid HTTP method {0:?}")]
    Method(String),
    /// The request could not be built (a bad path, for instance).
    #[error("building the request failed: {0}")]
    Request(#[from] http::Error),
    /// Connecting, TLS, or reading the response failed.
    #[error("HTTP exchange with {url} failed: {source}")]
    Http {
        /// The URL requested.
        url: String,
        /// The client's error.
        #[source]
        source: ureq::Error,
    },
    /// The body could not be encoded as JSON.
    #[error("encoding the request body failed: {0}")]
    Encode(#[from] serde_json::Error),
    /// A CA certificate in PEM could not be read.
    #[error("reading the CA certificate failed: {0}")]
    Ca(ureq::Error),
    /// The API server answered with a status the caller did not expect.
    #[error("{request}: HTTP {status}: {body}")]
    Status {
        /// Method and path.
        request: String,
        /// The HTTP status.
        status: u16,
        /// The response body.
        body: Value,
    },
    /// A process of the control plane did not come up.
    #[error("{what}: {problem}")]
    Start {
        /// The process and its address.
        what: String,
        /// What happened.
        problem: StartProblem,
    },
}

/// How a control-plane process failed to come up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartProblem {
    /// It exited first.
    #[error("exited with {0} before it was ready")]
    Exited(std::process::ExitStatus),
    /// It did not answer in time.
    #[error("not ready after {0:?}")]
    NotReady(Duration),
}

/// A blocking HTTPS client for the API server, authenticated with a bearer
/// token and trusting only the cluster CA.
#[derive(Clone)]
struct ApiClient {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl ApiClient {
    fn new(base: String, ca_pem: &str, token: String) -> Result<Self, KubeError> {
        let ca = ureq::tls::Certificate::from_pem(ca_pem.as_bytes()).map_err(KubeError::Ca)?;
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
            .unversioned_rustls_crypto_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .build();
        let config = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build();
        Ok(ApiClient {
            agent: ureq::Agent::new_with_config(config),
            base,
            token,
        })
    }

    /// Sends one request; any status is returned, with the body as JSON
    /// (or as a JSON string when it is not JSON).
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), KubeError> {
        let method = http::Method::from_bytes(method.as_bytes())
            .map_err(|_| KubeError::Method(method.to_owned()))?;
        let url = format!("{}{}", self.base, path);
        let content_type = if method == http::Method::PATCH {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        let builder = http::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.token))
            .header("accept", "application/json");
        let result = match body {
            Some(body) => {
                let bytes = serde_json::to_vec(body)?;
                let req = builder.header("content-type", content_type).body(bytes)?;
                self.agent.run(req)
            }
            None => self.agent.run(builder.body(())?),
        };
        let mut resp = result.map_err(|source| KubeError::Http {
            url: url.clone(),
            source,
        })?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .read_to_vec()
            .map_err(|source| KubeError::Http { url, source })?;
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, value))
    }
}

/// The cluster CA: signs the API server's and fake kubelets' serving
/// certificates.
struct ClusterCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl ClusterCa {
    fn generate() -> Self {
        let key = KeyPair::generate().expect("generate the cluster CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "sigil-test-kubernetes-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign the cluster CA");
        ClusterCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A serving certificate for `common_name` with SANs IP 127.0.0.1,
    /// DNS `localhost` and `dns_names`.
    fn serving_cert(&self, common_name: &str, dns_names: &[&str]) -> ServingCert {
        let key = KeyPair::generate().expect("generate a serving key");
        let mut names = vec!["localhost".to_owned()];
        names.extend(dns_names.iter().map(|n| (*n).to_owned()));
        let mut params = CertificateParams::new(names).expect("serving certificate parameters");
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign a serving certificate");
        ServingCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

/// A serving certificate and its key (PKCS#8), in PEM and DER.
struct ServingCert {
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

/// A running etcd + kube-apiserver pair in a temp dir; both are killed on
/// drop. The API server trusts an admin bearer token (user
/// [`ADMIN_USER`], group `system:masters`), signs service account tokens
/// with an RSA key (RS256) as issuer [`SERVICE_ACCOUNT_ISSUER`], accepts the
/// audiences [`API_AUDIENCES`] and authorizes with RBAC.
pub struct KubeControlPlane {
    dir: tempfile::TempDir,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    url: String,
    ca: ClusterCa,
    admin_token: String,
    client: ApiClient,
}

impl std::fmt::Debug for KubeControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeControlPlane")
            .field("dir", &self.dir.path())
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The processes of one start attempt.
struct Started {
    etcd: Child,
    apiserver: Child,
    url: String,
}

impl KubeControlPlane {
    /// Starts etcd and kube-apiserver from the directory named by
    /// [`KUBE_BIN_ENV`] and waits until the API server is ready. Without that
    /// variable it prints a skip notice and returns `None`, unless `CI=true`,
    /// where it panics. Panics if the control plane does not come up.
    pub fn start() -> Option<KubeControlPlane> {
        match std::env::var_os(KUBE_BIN_ENV) {
            Some(dir) if !dir.is_empty() => Some(Self::start_with_bin(Path::new(&dir))),
            _ => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{KUBE_BIN_ENV} must be set in CI (the directory printed by .ci/install-kubernetes.sh)"
                );
                eprintln!(
                    "skipping: {KUBE_BIN_ENV} not set (build kube-apiserver and etcd with .ci/install-kubernetes.sh)"
                );
                None
            }
        }
    }

    /// Starts the control plane from binaries in `bin_dir` (which must hold
    /// `etcd` and `kube-apiserver`). Panics if it does not come up.
    pub fn start_with_bin(bin_dir: &Path) -> KubeControlPlane {
        let etcd_bin = bin_dir.join("etcd");
        let apiserver_bin = bin_dir.join("kube-apiserver");
        for bin in [&etcd_bin, &apiserver_bin] {
            assert!(
                bin.is_file(),
                "{} not found; build it with .ci/install-kubernetes.sh and set {KUBE_BIN_ENV} to the directory it prints",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("sigil-kube-")
            .tempdir()
            .expect("create a temp dir for the control plane");
        let ca = ClusterCa::generate();
        let admin_token = random_hex(24);
        write_pki(dir.path(), &ca, &admin_token);

        // Ports are picked free and released before the processes bind them;
        // another process can take one in between, so try a few times.
        let mut last_err = String::new();
        for attempt in 1..=3 {
            match start_processes(dir.path(), &etcd_bin, &apiserver_bin, &admin_token, &ca.pem) {
                Ok(started) => {
                    let client = ApiClient::new(started.url.clone(), &ca.pem, admin_token.clone())
                        .expect("API client for the control plane");
                    return KubeControlPlane {
                        dir,
                        etcd: Some(started.etcd),
                        apiserver: Some(started.apiserver),
                        url: started.url,
                        ca,
                        admin_token,
                        client,
                    };
                }
                Err(err) => {
                    eprintln!("kube control plane: attempt {attempt} failed: {err}");
                    last_err = err.to_string();
                }
            }
        }
        print_log_tail(&dir.path().join("etcd.log"));
        print_log_tail(&dir.path().join("kube-apiserver.log"));
        panic!("the Kubernetes control plane did not start: {last_err}");
    }

    /// The API server's base URL, `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster CA certificate (PEM): it signed the API server's serving
    /// certificate and those of [`FakeKubelet`]s, and is the API server's
    /// `--client-ca-file`.
    pub fn ca_pem(&self) -> &str {
        &self.ca.pem
    }

    /// Path of [`ca_pem`](Self::ca_pem) written to the temp dir.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The admin bearer token (user [`ADMIN_USER`], group `system:masters`).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The temp dir holding keys, certificates, data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a kubeconfig (server URL, embedded CA, admin token) to `path`,
    /// for plugins that take `kube_config_file`.
    pub fn write_kubeconfig(&self, path: &Path) {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca.pem.as_bytes());
        let config = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: sigil-test
  cluster:
    server: {url}
    certificate-authority-data: {ca}
users:
- name: {ADMIN_USER}
  user:
    token: {token}
contexts:
- name: sigil-test
  context:
    cluster: sigil-test
    user: {ADMIN_USER}
current-context: sigil-test
",
            url = self.url,
            token = self.admin_token,
        );
        fs::write(path, config)
            .unwrap_or_else(|e| panic!("write kubeconfig {}: {e}", path.display()));
    }

    /// Sends `method path` (e.g. `"GET"`, `"/api/v1/namespaces"`) to the API
    /// server with the admin token and returns the status and the body as
    /// JSON. A `PATCH` body is sent as a JSON merge patch, any other body as
    /// JSON. Panics only if the exchange itself fails; see
    /// [`try_request`](Self::try_request).
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.try_request(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// [`request`](Self::request), returning transport errors.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), KubeError> {
        self.client.request(method, path, body)
    }

    /// [`request`](Self::request) that panics, with the response, unless the
    /// status is 2xx; returns the body.
    pub fn request_ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, value) = self.request(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: HTTP {status}: {value:#}"
        );
        value
    }

    /// Creates a namespace.
    pub fn create_namespace(&self, name: &str) {
        self.request_ok(
            "POST",
            "/api/v1/namespaces",
            Some(&json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": { "name": name },
            })),
        );
    }

    /// Creates a service account in `ns`; returns its UID.
    pub fn create_service_account(&self, ns: &str, name: &str) -> String {
        let sa = self.request_ok(
            "POST",
            &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            Some(&json!({
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": { "name": name, "namespace": ns },
            })),
        );
        uid_of(&sa)
    }

    /// Creates a node with `labels` and sets its status addresses
    /// (`InternalIP` [`NODE_INTERNAL_IP`], `Hostname` the node name) through
    /// the status subresource; returns its UID.
    pub fn create_node(&self, name: &str, labels: &[(&str, &str)]) -> String {
        let node = self.request_ok(
            "POST",
            "/api/v1/nodes",
            Some(&json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": { "name": name, "labels": label_map(labels) },
            })),
        );
        self.request_ok(
            "PATCH",
            &format!("/api/v1/nodes/{name}/status"),
            Some(&json!({
                "status": {
                    "addresses": [
                        { "type": "InternalIP", "address": NODE_INTERNAL_IP },
                        { "type": "Hostname", "address": name },
                    ],
                },
            })),
        );
        uid_of(&node)
    }

    /// Creates a pod in `ns` bound to `node` (`spec.nodeName`, as if
    /// scheduled) running as service account `sa`, with `labels` and
    /// `containers` given as (name, image) pairs; returns its UID. Nothing
    /// runs it: set its status with [`set_pod_status`](Self::set_pod_status).
    pub fn create_pod(
        &self,
        ns: &str,
        name: &str,
        sa: &str,
        node: &str,
        labels: &[(&str, &str)],
        containers: &[(&str, &str)],
    ) -> String {
        let containers: Vec<Value> = containers
            .iter()
            .map(|(name, image)| json!({ "name": name, "image": image }))
            .collect();
        let pod = self.request_ok(
            "POST",
            &format!("/api/v1/namespaces/{ns}/pods"),
            Some(&json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": { "name": name, "namespace": ns, "labels": label_map(labels) },
                "spec": {
                    "serviceAccountName": sa,
                    "nodeName": node,
                    "containers": containers,
                },
            })),
        );
        uid_of(&pod)
    }

    /// Merge-patches `status` into the pod's status subresource (as the
    /// kubelet would report it), e.g. `{"phase": "Running",
    /// "containerStatuses": [...]}`; returns the updated pod.
    pub fn set_pod_status(&self, ns: &str, name: &str, status: &Value) -> Value {
        self.request_ok(
            "PATCH",
            &format!("/api/v1/namespaces/{ns}/pods/{name}/status"),
            Some(&json!({ "status": status })),
        )
    }

    /// Reads a pod; `None` if it does not exist.
    pub fn get_pod(&self, ns: &str, name: &str) -> Option<Value> {
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
        let (status, value) = self.request("GET", &path, None);
        match status {
            200 => Some(value),
            404 => None,
            _ => panic!("GET {path}: HTTP {status}: {value:#}"),
        }
    }

    /// Deletes a pod at once (grace period 0: there is no kubelet to finish
    /// a graceful deletion).
    pub fn delete_pod(&self, ns: &str, name: &str) {
        self.request_ok(
            "DELETE",
            &format!("/api/v1/namespaces/{ns}/pods/{name}?gracePeriodSeconds=0"),
            None,
        );
    }

    /// A service account token for `ns/sa` bound to the pod (TokenRequest
    /// with `boundObjectRef`), for `audience`, valid `expiration_seconds`
    /// (the API server's minimum is 600).
    pub fn token_request(
        &self,
        ns: &str,
        sa: &str,
        pod_name: &str,
        pod_uid: &str,
        audience: &str,
        expiration_seconds: i64,
    ) -> String {
        let tr = self.request_ok(
            "POST",
            &format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"),
            Some(&json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": [audience],
                    "expirationSeconds": expiration_seconds,
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": pod_name,
                        "uid": pod_uid,
                    },
                },
            })),
        );
        tr["status"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("TokenRequest returned no token: {tr:#}"))
            .to_owned()
    }

    /// Reviews `token` for `audiences` (TokenReview, as SPIRE's `k8s_psat`
    /// server plugin does); returns the review's `status`
    /// (`authenticated`, `user`, `audiences`, `error`).
    pub fn token_review(&self, token: &str, audiences: &[&str]) -> Value {
        let review = self.request_ok(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            Some(&json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": { "token": token, "audiences": audiences },
            })),
        );
        review["status"].clone()
    }

    /// The pods bound to `node`, as a `PodList` (what a kubelet's `/pods`
    /// returns).
    pub fn pods_on_node(&self, node: &str) -> Value {
        pods_on_node(&self.client, node)
            .unwrap_or_else(|e| panic!("list the pods on node {node}: {e}"))
    }

    /// Prints the last lines of etcd's and the API server's logs to stderr.
    pub fn dump_logs(&self) {
        print_log_tail(&self.dir.path().join("etcd.log"));
        print_log_tail(&self.dir.path().join("kube-apiserver.log"));
    }
}

impl Drop for KubeControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for child in [self.apiserver.take(), self.etcd.take()]
            .into_iter()
            .flatten()
        {
            kill(child);
        }
    }
}

/// Lists the pods bound to `node` (a field selector on `spec.nodeName`).
fn pods_on_node(client: &ApiClient, node: &str) -> Result<Value, KubeError> {
    let path = format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{node}");
    match client.request("GET", &path, None)? {
        (200, list) => Ok(list),
        (status, body) => Err(KubeError::Status {
            request: format!("GET {path}"),
            status,
            body,
        }),
    }
}

fn uid_of(object: &Value) -> String {
    object["metadata"]["uid"]
        .as_str()
        .unwrap_or_else(|| panic!("object without metadata.uid: {object:#}"))
        .to_owned()
}

fn label_map(labels: &[(&str, &str)]) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect(),
    )
}

/// `n` random bytes from the OS, hex-encoded.
fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the CA, the API server's serving certificate, the service account
/// key pair and the static token file into `dir`.
fn write_pki(dir: &Path, ca: &ClusterCa, admin_token: &str) {
    let write = |name: &str, contents: &str| {
        let path = dir.join(name);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    };
    write("ca.crt", &ca.pem);
    let serving = ca.serving_cert(
        "kube-apiserver",
        &[
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
    );
    write("apiserver.crt", &serving.cert_pem);
    write("apiserver.key", &serving.key_pem);
    // RSA, as the service account keys of most clusters (tokens are RS256).
    let sa_key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)
        .expect("generate the service account signing key");
    write("sa.key", &sa_key.serialize_pem());
    write("sa.pub", &sa_key.public_key_pem());
    // token,user,uid,"group1,group2"
    write(
        "tokens.csv",
        &format!("{admin_token},{ADMIN_USER},{ADMIN_USER},\"system:masters\"\n"),
    );
}

fn log_file(dir: &Path, name: &str) -> fs::File {
    let path = dir.join(name);
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn spawn(cmd: &mut Command, dir: &Path, log: &str) -> Child {
    let out = log_file(dir, log);
    let err = out.try_clone().expect("clone log file handle");
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"))
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts etcd, then the API server, on fresh ports; waits for both.
fn start_processes(
    dir: &Path,
    etcd_bin: &Path,
    apiserver_bin: &Path,
    admin_token: &str,
    ca_pem: &str,
) -> Result<Started, KubeError> {
    let client_port = free_port();
    let peer_port = free_port();
    let metrics_port = free_port();
    let secure_port = free_port();
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let data_dir = dir.join("etcd-data");
    let _ = fs::remove_dir_all(&data_dir);

    let mut etcd = spawn(
        Command::new(etcd_bin)
            .arg("--name=sigil-test")
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=sigil-test={peer_url}"))
            .arg(format!(
                "--listen-metrics-urls=http://127.0.0.1:{metrics_port}"
            ))
            .arg("--log-level=warn")
            // Test data: no need to survive a power cut.
            .arg("--unsafe-no-fsync"),
        dir,
        "etcd.log",
    );
    let plain = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build(),
    );
    let health = format!("{client_url}/health");
    let ready = poll(Duration::from_secs(30), &mut etcd, || {
        let mut resp = plain.get(&health).call().ok()?;
        let body = resp.body_mut().read_to_string().ok()?;
        (resp.status() == 200 && body.contains("\"health\":\"true\"")).then_some(())
    });
    if let Err(e) = ready {
        kill(etcd);
        return Err(KubeError::Start {
            what: format!("etcd on {client_url}"),
            problem: e,
        });
    }

    let path = |name: &str| dir.join(name).display().to_string();
    let mut apiserver = spawn(
        Command::new(apiserver_bin)
            .arg(format!("--etcd-servers={client_url}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={secure_port}"))
            // The default reconciler refuses a loopback advertise address.
            .arg("--endpoint-reconciler-type=none")
            .arg(format!("--cert-dir={}", path("apiserver-certs")))
            .arg(format!("--tls-cert-file={}", path("apiserver.crt")))
            .arg(format!("--tls-private-key-file={}", path("apiserver.key")))
            .arg(format!("--client-ca-file={}", path("ca.crt")))
            .arg(format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"))
            .arg(format!("--service-account-key-file={}", path("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                path("sa.key")
            ))
            .arg(format!("--api-audiences={}", API_AUDIENCES.join(",")))
            .arg("--authorization-mode=RBAC")
            .arg(format!("--token-auth-file={}", path("tokens.csv")))
            .arg("--service-cluster-ip-range=10.96.0.0/24")
            .arg("--allow-privileged=true")
            .arg("--profiling=false"),
        dir,
        "kube-apiserver.log",
    );
    let url = format!("https://127.0.0.1:{secure_port}");
    let client = match ApiClient::new(url.clone(), ca_pem, admin_token.to_owned()) {
        Ok(client) => client,
        Err(e) => {
            kill(apiserver);
            kill(etcd);
            return Err(e);
        }
    };
    let ready = poll(Duration::from_secs(120), &mut apiserver, || {
        matches!(client.request("GET", "/readyz", None), Ok((200, _))).then_some(())
    });
    if let Err(e) = ready {
        kill(apiserver);
        kill(etcd);
        return Err(KubeError::Start {
            what: format!("kube-apiserver on {url}"),
            problem: e,
        });
    }
    Ok(Started {
        etcd,
        apiserver,
        url,
    })
}

/// Polls `f` every 100 ms until it returns `Some`, the child exits, or
/// `timeout` passes.
fn poll<T>(
    timeout: Duration,
    child: &mut Child,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, StartProblem> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(StartProblem::Exited(status));
        }
        if Instant::now() > deadline {
            return Err(StartProblem::NotReady(timeout));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn print_log_tail(path: &Path) {
    const LINES: usize = 60;
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LINES);
            eprintln!(
                "----- last {} lines of {}",
                lines.len() - start,
                path.display()
            );
            for line in &lines[start..] {
                eprintln!("{line}");
            }
        }
        Err(e) => eprintln!("----- {}: {e}", path.display()),
    }
}

/// A fake standing in for the kubelet, which cannot run here (no container
/// runtime, no root cgroups): it serves only `GET /pods`, answering with the
/// API server's list of the pods bound to one node, fetched afresh on each
/// request, as the real kubelet's `/pods` would list them.
///
/// It listens on 127.0.0.1 on two ports, like the kubelet: a secure port
/// (HTTPS, a serving certificate signed by the cluster CA for IP 127.0.0.1,
/// `localhost` and the node name) that requires a bearer token, accepting
/// any non-empty one and recording the last seen ([`last_token`]), and a
/// plain-HTTP read-only port with no authentication. It runs on a background
/// thread and stops on drop.
///
/// [`last_token`]: FakeKubelet::last_token
pub struct FakeKubelet {
    node: String,
    secure_port: u16,
    read_only_port: u16,
    ca_pem: String,
    cert_pem: String,
    state: Arc<KubeletState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeKubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKubelet")
            .field("node", &self.node)
            .field("secure_port", &self.secure_port)
            .field("read_only_port", &self.read_only_port)
            .finish_non_exhaustive()
    }
}

struct KubeletState {
    node: String,
    client: ApiClient,
    last_token: Mutex<Option<String>>,
    requests: Mutex<u64>,
}

type HttpResponse = hyper::Response<Full<Bytes>>;

impl FakeKubelet {
    /// Starts a fake kubelet for `node` that reads pods from `kube`.
    /// Panics if it cannot listen.
    pub fn start(kube: &KubeControlPlane, node: &str) -> FakeKubelet {
        let serving = kube.ca.serving_cert(node, &[node]);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions for the fake kubelet")
            .with_no_client_auth()
            .with_single_cert(
                vec![serving.cert_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(serving.key_der.clone())),
            )
            .expect("TLS config for the fake kubelet");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let bind = || {
            let l = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .expect("bind a port for the fake kubelet");
            l.set_nonblocking(true)
                .expect("non-blocking fake kubelet listener");
            l
        };
        let secure = bind();
        let read_only = bind();
        let port = |l: &std::net::TcpListener| l.local_addr().map(|a| a.port()).expect("port");
        let (secure_port, read_only_port) = (port(&secure), port(&read_only));

        let state = Arc::new(KubeletState {
            node: node.to_owned(),
            client: kube.client.clone(),
            last_token: Mutex::new(None),
            requests: Mutex::new(0),
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread_state = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fake-kubelet-{node}"))
            .spawn(move || serve(secure, read_only, acceptor, thread_state, rx))
            .expect("spawn the fake kubelet thread");
        FakeKubelet {
            node: node.to_owned(),
            secure_port,
            read_only_port,
            ca_pem: kube.ca.pem.clone(),
            cert_pem: serving.cert_pem,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// The node whose pods it serves.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The HTTPS port (the kubelet's 10250).
    pub fn secure_port(&self) -> u16 {
        self.secure_port
    }

    /// The plain-HTTP read-only port (the kubelet's 10255).
    pub fn read_only_port(&self) -> u16 {
        self.read_only_port
    }

    /// `https://127.0.0.1:<secure port>`.
    pub fn secure_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.secure_port)
    }

    /// `http://127.0.0.1:<read-only port>`.
    pub fn read_only_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.read_only_port)
    }

    /// The CA that signed its serving certificate (the cluster CA).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Its serving certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The bearer token of the last request on the secure port, if any.
    pub fn last_token(&self) -> Option<String> {
        self.state
            .last_token
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    /// How many `/pods` requests it has answered (on either port).
    pub fn pod_requests(&self) -> u64 {
        self.state.requests.lock().map(|n| *n).unwrap_or_default()
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The fake kubelet's thread: serves both listeners until `shutdown`.
fn serve(
    secure: std::net::TcpListener,
    read_only: std::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<KubeletState>,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake kubelet: no tokio runtime: {e}");
            return;
        }
    };
    rt.block_on(async move {
        let (secure, read_only) = match (
            tokio::net::TcpListener::from_std(secure),
            tokio::net::TcpListener::from_std(read_only),
        ) {
            (Ok(s), Ok(r)) => (s, r),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("fake kubelet: listener: {e}");
                return;
            }
        };
        let secure_loop = {
            let state = state.clone();
            async move {
                loop {
                    let Ok((tcp, _)) = secure.accept().await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    let state = state.clone();
                    tokio::spawn(async move {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            serve_connection(tls, state, true).await;
                        }
                    });
                }
            }
        };
        let read_only_loop = async move {
            loop {
                let Ok((tcp, _)) = read_only.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                tokio::spawn(serve_connection(tcp, state.clone(), false));
            }
        };
        tokio::select! {
            _ = shutdown => {}
            () = secure_loop => {}
            () = read_only_loop => {}
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
}

async fn serve_connection<S>(io: S, state: Arc<KubeletState>, secure: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(req, state, secure).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await;
}

fn text(status: u16, body: &str) -> HttpResponse {
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body.to_owned())));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
    state: Arc<KubeletState>,
    secure: bool,
) -> HttpResponse {
    if req.uri().path() != "/pods" {
        return text(404, "404 page not found\n");
    }
    if req.method() != http::Method::GET {
        return text(405, "405 method not allowed\n");
    }
    if secure {
        let token = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        let Some(token) = token else {
            return text(401, "Unauthorized\n");
        };
        if let Ok(mut last) = state.last_token.lock() {
            *last = Some(token);
        }
    }
    let fetch_state = state.clone();
    let list =
        tokio::task::spawn_blocking(move || pods_on_node(&fetch_state.client, &fetch_state.node))
            .await;
    match list {
        Ok(Ok(list)) => {
            if let Ok(mut n) = state.requests.lock() {
                *n += 1;
            }
            let mut resp = hyper::Response::new(Full::new(Bytes::from(list.to_string())));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            resp
        }
        Ok(Err(e)) => text(502, &format!("fake kubelet: {e}\n")),
        Err(e) => text(500, &format!("fake kubelet: {e}\n")),
    }
}
