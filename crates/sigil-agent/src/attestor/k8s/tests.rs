//! The `k8s` attestor end to end within one process: configuration, and
//! attestation of this test process (through a fake `/proc` entry naming a
//! pod) against a fake kubelet on loopback, over HTTP and HTTPS. The root-only
//! test with real cgroups is `tests/k8s_workload_attestor.rs`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::json;

use super::*;

const UID: &str = "5b0c7a4e-3f2d-4c1b-9a8e-7d6c5b4a3f2e";
const ID: &str = "3e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f";

// ---------------------------------------------------------------- config --

fn config(data: serde_json::Value) -> Result<K8sAttestorConfig, AttestError> {
    K8sAttestorConfig::from_plugin_data_with_env(&data, |name| {
        (name == "MY_NODE_NAME").then(|| "node-from-env".to_owned())
    })
}

fn config_error(data: serde_json::Value) -> String {
    config(data).expect_err("invalid config").to_string()
}

#[test]
fn defaults_are_spires_secure_port_service_account_ca_and_token() {
    let got = config(json!(null)).expect("defaults");
    assert_eq!(
        got,
        K8sAttestorConfig {
            kubelet: KubeletEndpoint::Secure {
                port: 10250,
                verification: KubeletVerification::CaFile(
                    "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt".into()
                ),
                auth: KubeletAuth::BearerToken {
                    token_path: "/var/run/secrets/kubernetes.io/serviceaccount/token".into()
                },
            },
            node_name: Some("node-from-env".into()),
            max_poll_attempts: 60,
            poll_retry_interval: Duration::from_millis(500),
            reload_interval: Duration::from_secs(60),
            disable_container_selectors: false,
            use_new_container_locator: true,
            verbose_container_locator_logs: false,
        }
    );
    assert_eq!(config(json!({})).expect("empty block"), got);
}

#[test]
fn every_spire_option_is_read() {
    let got = config(json!({
        "kubelet_secure_port": 10443,
        "kubelet_ca_path": "/etc/kubelet/ca.pem",
        "certificate_path": "/etc/agent/cert.pem",
        "private_key_path": "/etc/agent/key.pem",
        "node_name_env": "NODE",
        "max_poll_attempts": 3,
        "poll_retry_interval": "2s",
        "reload_interval": "5m",
        "disable_container_selectors": true,
        "use_new_container_locator": false,
        "verbose_container_locator_logs": true,
        "disable_kubelet_client": false,
        "enable_namespace_labels": false,
    }))
    .expect("valid");
    assert_eq!(
        got.kubelet,
        KubeletEndpoint::Secure {
            port: 10443,
            verification: KubeletVerification::CaFile("/etc/kubelet/ca.pem".into()),
            auth: KubeletAuth::ClientCertificate {
                certificate_path: "/etc/agent/cert.pem".into(),
                private_key_path: "/etc/agent/key.pem".into(),
            },
        }
    );
    assert_eq!(got.node_name, None, "NODE is not set");
    assert_eq!(got.max_poll_attempts, 3);
    assert_eq!(got.poll_retry_interval, Duration::from_secs(2));
    assert_eq!(got.reload_interval, Duration::from_secs(300));
    assert!(got.disable_container_selectors);
    assert!(!got.use_new_container_locator);
    assert!(got.verbose_container_locator_logs);

    let got = config(json!({
        "kubelet_read_only_port": 10255,
        "node_name": "explicit",
        "max_poll_attempts": 0,
        "poll_retry_interval": "0s",
        // Ignored with the read-only port, as in SPIRE.
        "certificate_path": "/only/a/cert.pem",
    }))
    .expect("valid");
    assert_eq!(got.kubelet, KubeletEndpoint::ReadOnly { port: 10255 });
    assert_eq!(got.node_name.as_deref(), Some("explicit"));
    assert_eq!(got.max_poll_attempts, 60, "0 means the default");
    assert_eq!(got.poll_retry_interval, Duration::from_millis(500));

    let got = config(json!({
        "skip_kubelet_verification": true,
        "use_anonymous_authentication": true,
        "token_path": "/ignored",
    }))
    .expect("valid");
    assert_eq!(
        got.kubelet,
        KubeletEndpoint::Secure {
            port: 10250,
            verification: KubeletVerification::Skip,
            auth: KubeletAuth::Anonymous,
        }
    );
}

#[test]
fn config_errors_name_the_option() {
    let err = config_error(json!({"kubelet_read_only_prot": 1, "bogus": true}));
    assert!(
        err.contains("unknown option(s) bogus, kubelet_read_only_prot"),
        "{err}"
    );
    assert!(err.contains("k8s"), "{err}");

    let err = config_error(json!({"kubelet_read_only_port": 10255, "kubelet_secure_port": 10250}));
    assert!(
        err.contains("kubelet_read_only_port") && err.contains("kubelet_secure_port"),
        "{err}"
    );

    for (key, value) in [
        ("sigstore", json!({"rekor_url": "https://rekor.example"})),
        ("experimental", json!({"api_server": {}})),
        ("disable_kubelet_client", json!(true)),
        ("enable_namespace_labels", json!(true)),
    ] {
        let err = config_error(json!({ key: value }));
        assert!(
            err.contains(key) && err.contains("not supported by sigil yet"),
            "{err}"
        );
    }

    for (key, value) in [
        ("kubelet_secure_port", json!(70000)),
        ("kubelet_read_only_port", json!("ten")),
        ("skip_kubelet_verification", json!("yes")),
        ("kubelet_ca_path", json!(5)),
        ("max_poll_attempts", json!(1.5)),
        ("poll_retry_interval", json!("soon")),
        ("reload_interval", json!("1 fortnight")),
        ("use_new_container_locator", json!(1)),
    ] {
        let err = config_error(json!({ key: value }));
        assert!(err.contains(key), "{key}: {err}");
    }

    let err = config_error(json!({"certificate_path": "/c.pem"}));
    assert!(err.contains("private_key_path"), "{err}");
    let err = config_error(json!({"private_key_path": "/k.pem"}));
    assert!(err.contains("certificate_path"), "{err}");
    assert!(config(json!([1])).is_err());
}

#[test]
fn unreadable_credentials_fail_at_configuration_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-token");
    let err = K8sAttestor::from_plugin_data(&json!({
        "skip_kubelet_verification": true,
        "token_path": missing.to_str().expect("utf-8"),
    }))
    .expect_err("missing token")
    .to_string();
    assert!(
        err.contains("token") && err.contains("no-such-token"),
        "{err}"
    );

    let err = K8sAttestor::from_plugin_data(&json!({
        "kubelet_ca_path": dir.path().join("ca.pem").to_str().expect("utf-8"),
    }))
    .expect_err("missing CA")
    .to_string();
    assert!(err.contains("CA") && err.contains("ca.pem"), "{err}");
}

// ------------------------------------------------------------ attestation --

/// A stand-in for the kubelet (which cannot run in a unit test): serves
/// `/pods` on loopback, over TLS when given a server config, answering each
/// request with `respond(n)` (n counts from 1) and recording the
/// `Authorization` header it got.
struct FakeKubelet {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    authorizations: Arc<Mutex<Vec<Option<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

type Respond = Arc<dyn Fn(usize) -> Response<Full<Bytes>> + Send + Sync>;

impl FakeKubelet {
    async fn start(tls: Option<rustls::ServerConfig>, respond: Respond) -> FakeKubelet {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
        let (count, seen) = (requests.clone(), authorizations.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (count, seen, respond) = (count.clone(), seen.clone(), respond.clone());
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: http::Request<_>| {
                        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                        let auth = req
                            .headers()
                            .get(header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        seen.lock().expect("lock").push(auth);
                        let response = respond(n);
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                        }
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                    }
                });
            }
        });
        FakeKubelet {
            addr,
            requests,
            authorizations,
            task,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn ok(body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::from(body)))
}

/// A pod list with our pod, listing the container only when `started`.
fn pod_list(started: bool) -> Vec<u8> {
    let statuses = if started {
        json!([{
            "name": "app", "ready": true, "restartCount": 0,
            "image": "registry.example/app:1",
            "imageID": "registry.example/app@sha256:abcd",
            "containerID": format!("containerd://{ID}"),
        }])
    } else {
        json!([])
    };
    serde_json::to_vec(&json!({
        "kind": "PodList", "apiVersion": "v1", "metadata": {},
        "items": [
            {"metadata": {"uid": "someone-else", "name": "other", "namespace": "x"}},
            {
                "metadata": {"uid": UID, "name": "app-0", "namespace": "prod",
                             "labels": {"app": "app"}},
                "spec": {"serviceAccountName": "app-sa", "nodeName": "node-1", "containers": []},
                "status": {"containerStatuses": statuses},
            }
        ]
    }))
    .expect("json")
}

const POD_SELECTORS: [&str; 9] = [
    "sa:app-sa",
    "ns:prod",
    "node-name:node-1",
    "pod-uid:5b0c7a4e-3f2d-4c1b-9a8e-7d6c5b4a3f2e",
    "pod-name:app-0",
    "pod-image-count:1",
    "pod-init-image-count:0",
    "pod-image:registry.example/app:1",
    "pod-image:registry.example/app@sha256:abcd",
];

fn expected_selectors() -> Vec<String> {
    POD_SELECTORS
        .iter()
        .map(|s| (*s).to_owned())
        .chain([
            "pod-label:app:app".to_owned(),
            "container-name:app".to_owned(),
            "container-image:registry.example/app:1".to_owned(),
            "container-image:registry.example/app@sha256:abcd".to_owned(),
        ])
        .collect()
}

fn values(selectors: &[Selector]) -> Vec<String> {
    selectors.iter().map(|s| s.value().to_owned()).collect()
}

/// A fake procfs whose entry for this test process has `cgroup`.
fn fake_proc(cgroup: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join(std::process::id().to_string());
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("cgroup"), cgroup).expect("cgroup");
    root
}

fn in_pod_cgroup() -> String {
    format!(
        "12:pids:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope\n0::/\n",
        UID.replace('-', "_")
    )
}

fn me() -> PeerInfo {
    PeerInfo::for_process(std::process::id() as i32, 0, 0)
}

fn read_only(kubelet: &FakeKubelet, extra: serde_json::Value) -> K8sAttestorConfig {
    let mut data = json!({
        "kubelet_read_only_port": kubelet.addr.port(),
        "poll_retry_interval": "20ms",
        "max_poll_attempts": 5,
    });
    if let (Some(map), serde_json::Value::Object(extra)) = (data.as_object_mut(), extra) {
        map.extend(extra);
    }
    config(data).expect("config")
}

#[tokio::test]
async fn a_process_in_a_pod_gets_the_pod_and_container_selectors_from_the_read_only_port() {
    let kubelet = FakeKubelet::start(None, Arc::new(|_| ok(pod_list(true)))).await;
    let proc_root = fake_proc(&in_pod_cgroup());
    let attestor = K8sAttestor::new(read_only(&kubelet, json!({})))
        .expect("attestor")
        .with_proc_root(proc_root.path());
    assert_eq!(
        attestor.kubelet_url(),
        format!("http://127.0.0.1:{}/pods", kubelet.addr.port())
    );
    let got = attestor.attest(&me()).await.expect("attest");
    assert!(got.iter().all(|s| s.kind() == "k8s"));
    assert_eq!(values(&got), expected_selectors());
    assert_eq!(kubelet.authorizations.lock().expect("lock")[0], None);
}

#[tokio::test]
async fn a_process_outside_any_pod_gets_no_selectors_and_no_kubelet_request() {
    let kubelet = FakeKubelet::start(None, Arc::new(|_| ok(pod_list(true)))).await;
    let proc_root = fake_proc("12:pids:/user.slice\n0::/user.slice/session-1.scope\n");
    let attestor = K8sAttestor::new(read_only(&kubelet, json!({})))
        .expect("attestor")
        .with_proc_root(proc_root.path());
    assert!(attestor.attest(&me()).await.expect("attest").is_empty());
    assert_eq!(kubelet.requests(), 0);
}

#[tokio::test]
async fn a_container_never_listed_fails_after_max_poll_attempts() {
    let kubelet = FakeKubelet::start(None, Arc::new(|_| ok(pod_list(false)))).await;
    let proc_root = fake_proc(&in_pod_cgroup());
    let attestor = K8sAttestor::new(read_only(&kubelet, json!({"max_poll_attempts": 3})))
        .expect("attestor")
        .with_proc_root(proc_root.path());
    let err = attestor.attest(&me()).await.expect_err("not listed");
    assert!(
        matches!(
            &err,
            AttestError::K8s(K8sError::ContainerNotFound { attempts: 3, container_id, .. })
                if container_id == ID
        ),
        "{err}"
    );
    assert_eq!(kubelet.requests(), 3, "one fresh pod list per attempt");
}

#[tokio::test]
async fn disable_container_selectors_attests_a_known_pod_before_its_container_is_listed() {
    let kubelet = FakeKubelet::start(None, Arc::new(|_| ok(pod_list(false)))).await;
    let proc_root = fake_proc(&in_pod_cgroup());
    let attestor = K8sAttestor::new(read_only(
        &kubelet,
        json!({"disable_container_selectors": true}),
    ))
    .expect("attestor")
    .with_proc_root(proc_root.path());
    let got = values(&attestor.attest(&me()).await.expect("attest"));
    assert_eq!(
        got,
        vec![
            "sa:app-sa",
            "ns:prod",
            "node-name:node-1",
            "pod-uid:5b0c7a4e-3f2d-4c1b-9a8e-7d6c5b4a3f2e",
            "pod-name:app-0",
            "pod-image-count:0",
            "pod-init-image-count:0",
            "pod-label:app:app",
        ]
    );
    assert_eq!(kubelet.requests(), 1);
}

#[tokio::test]
async fn kubelet_failures_are_retried_then_reported() {
    let kubelet = FakeKubelet::start(
        None,
        Arc::new(|n| {
            if n < 3 {
                let mut r = ok(b"kubelet is busy".to_vec());
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                r
            } else {
                ok(pod_list(true))
            }
        }),
    )
    .await;
    let proc_root = fake_proc(&in_pod_cgroup());
    let attestor = K8sAttestor::new(read_only(&kubelet, json!({})))
        .expect("attestor")
        .with_proc_root(proc_root.path());
    assert_eq!(
        values(&attestor.attest(&me()).await.expect("attest")),
        expected_selectors()
    );

    let attestor = K8sAttestor::new(read_only(&kubelet, json!({"max_poll_attempts": 1})))
        .expect("attestor")
        .with_proc_root(proc_root.path());
    drop(kubelet);
    let err = attestor.attest(&me()).await.expect_err("kubelet gone");
    assert!(
        matches!(
            err,
            AttestError::K8s(K8sError::Kubelet {
                source: KubeletError::Connect { .. },
                ..
            })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_pod_list_over_the_size_limit_is_refused_with_a_clear_error() {
    let kubelet = FakeKubelet::start(
        None,
        Arc::new(|_| ok(vec![b' '; kubelet::MAX_POD_LIST_BYTES + 1])),
    )
    .await;
    let proc_root = fake_proc(&in_pod_cgroup());
    let attestor = K8sAttestor::new(read_only(&kubelet, json!({"max_poll_attempts": 1})))
        .expect("attestor")
        .with_proc_root(proc_root.path());
    let err = attestor.attest(&me()).await.expect_err("too large");
    assert!(
        matches!(
            &err,
            AttestError::K8s(K8sError::Kubelet {
                source: KubeletError::TooLarge { .. },
                ..
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("67108864-byte limit"), "{err}");
}

/// A CA, a kubelet serving certificate for `names` and a client
/// certificate, as PEM files in `dir`.
struct Pki {
    ca: std::path::PathBuf,
    server: rustls::ServerConfig,
    client_cert: std::path::PathBuf,
    client_key: std::path::PathBuf,
}

fn make_pki(dir: &Path, names: &[&str], require_client_cert: bool) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let issue = |names: Vec<String>, eku| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![eku];
        let cert = params.signed_by(&key, &ca).expect("sign");
        (cert, key)
    };
    let (server_cert, server_key) = issue(
        names.iter().map(|n| (*n).to_owned()).collect(),
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = issue(vec![], ExtendedKeyUsagePurpose::ClientAuth);
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let server = sigil_crypto::server_config(
        vec![server_cert.der().to_vec()],
        server_key.serialize_der(),
        vec![ca.der().to_vec()],
        if require_client_cert {
            sigil_crypto::ClientAuth::Required
        } else {
            sigil_crypto::ClientAuth::None
        },
    )
    .expect("server config");
    Pki {
        ca: write("ca.pem", ca.pem()),
        server,
        client_cert: write("client.pem", client_cert.pem()),
        client_key: write("client-key.pem", client_key.serialize_pem()),
    }
}

#[tokio::test]
async fn the_secure_port_verifies_the_kubelet_for_the_node_name_and_rereads_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path(), &["localhost"], false);
    let kubelet = FakeKubelet::start(Some(pki.server), Arc::new(|_| ok(pod_list(true)))).await;
    let token = dir.path().join("token");
    std::fs::write(&token, "first-token\n").expect("token");
    let proc_root = fake_proc(&in_pod_cgroup());
    let data = json!({
        "kubelet_secure_port": kubelet.addr.port(),
        "kubelet_ca_path": pki.ca.to_str().expect("utf-8"),
        "token_path": token.to_str().expect("utf-8"),
        "node_name": "localhost",
        "poll_retry_interval": "10ms",
    });
    let attestor = K8sAttestor::from_plugin_data(&data)
        .expect("attestor")
        .with_proc_root(proc_root.path());
    assert_eq!(
        attestor.kubelet_url(),
        format!("https://localhost:{}/pods", kubelet.addr.port())
    );
    assert_eq!(
        values(&attestor.attest(&me()).await.expect("attest")),
        expected_selectors()
    );
    std::fs::write(&token, "rotated-token").expect("token");
    tokio::time::sleep(Duration::from_millis(20)).await;
    attestor.attest(&me()).await.expect("attest again");
    assert_eq!(
        *kubelet.authorizations.lock().expect("lock"),
        vec![
            Some("Bearer first-token".to_owned()),
            Some("Bearer rotated-token".to_owned())
        ]
    );

    // A node name the certificate does not carry is refused.
    let mut wrong = data.clone();
    wrong["node_name"] = json!("127.0.0.1");
    wrong["max_poll_attempts"] = json!(1);
    let err = K8sAttestor::from_plugin_data(&wrong)
        .expect("attestor")
        .with_proc_root(proc_root.path())
        .attest(&me())
        .await
        .expect_err("name mismatch");
    assert!(
        matches!(
            err,
            AttestError::K8s(K8sError::Kubelet {
                source: KubeletError::Handshake { .. },
                ..
            })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn without_a_node_name_the_kubelet_on_127_0_0_1_is_verified_by_chain_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path(), &["kubelet.node-1.example"], true);
    let kubelet = FakeKubelet::start(Some(pki.server), Arc::new(|_| ok(pod_list(true)))).await;
    let proc_root = fake_proc(&in_pod_cgroup());
    let attestor = K8sAttestor::new(
        config(json!({
            "kubelet_secure_port": kubelet.addr.port(),
            "kubelet_ca_path": pki.ca.to_str().expect("utf-8"),
            "certificate_path": pki.client_cert.to_str().expect("utf-8"),
            "private_key_path": pki.client_key.to_str().expect("utf-8"),
            "node_name_env": "UNSET_NODE_NAME_VARIABLE",
            "max_poll_attempts": 1,
        }))
        .expect("config"),
    )
    .expect("attestor")
    .with_proc_root(proc_root.path());
    assert_eq!(
        attestor.kubelet_url(),
        format!("https://127.0.0.1:{}/pods", kubelet.addr.port())
    );
    assert_eq!(
        values(&attestor.attest(&me()).await.expect("attest")),
        expected_selectors()
    );
    assert_eq!(
        kubelet.authorizations.lock().expect("lock")[0],
        None,
        "client certificate, no token"
    );

    // A kubelet whose certificate chains to another CA is refused; with
    // verification skipped it is accepted.
    let other = tempfile::tempdir().expect("tempdir");
    let other_pki = make_pki(other.path(), &["localhost"], false);
    let attest_with = |port: u16, extra: serde_json::Value| {
        let mut data = json!({
            "kubelet_secure_port": port,
            "use_anonymous_authentication": true,
            "node_name_env": "UNSET_NODE_NAME_VARIABLE",
            "max_poll_attempts": 1,
        });
        if let (Some(map), serde_json::Value::Object(extra)) = (data.as_object_mut(), extra) {
            map.extend(extra);
        }
        K8sAttestor::new(config(data).expect("config"))
            .expect("attestor")
            .with_proc_root(proc_root.path())
    };
    drop(kubelet);
    let kubelet =
        FakeKubelet::start(Some(other_pki.server), Arc::new(|_| ok(pod_list(true)))).await;
    let port = kubelet.addr.port();
    let err = attest_with(
        port,
        json!({"kubelet_ca_path": pki.ca.to_str().expect("utf-8")}),
    )
    .attest(&me())
    .await
    .expect_err("wrong CA");
    assert!(
        matches!(
            err,
            AttestError::K8s(K8sError::Kubelet {
                source: KubeletError::Handshake { .. },
                ..
            })
        ),
        "{err}"
    );
    let got = attest_with(port, json!({"skip_kubelet_verification": true}))
        .attest(&me())
        .await
        .expect("unverified");
    assert_eq!(values(&got), expected_selectors());
}

#[tokio::test]
async fn unknown_pid_is_refused() {
    let kubelet = FakeKubelet::start(None, Arc::new(|_| ok(pod_list(true)))).await;
    let attestor = K8sAttestor::new(read_only(&kubelet, json!({}))).expect("attestor");
    let err = attestor
        .attest(&PeerInfo::for_process(0, 0, 0))
        .await
        .expect_err("pid 0");
    assert!(matches!(err, AttestError::PidUnknown { pid: 0 }));
}
