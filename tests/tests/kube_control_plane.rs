//! The test harness's real Kubernetes control plane (kube-apiserver and etcd,
//! built from the Go module proxy by `.ci/install-kubernetes.sh`;
//! `SIGIL_TEST_KUBE_BIN` names their directory) and its fake kubelet do what
//! the Kubernetes plugins' tests will rely on. In CI they are required;
//! elsewhere the tests print a skip line without them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sigil_testkit::kube::{FakeKubelet, KubeControlPlane};

/// A namespace, service account, node and running pod on that node.
struct Workload {
    node_uid: String,
    pod_uid: String,
}

fn create_workload(kube: &KubeControlPlane, ns: &str, node: &str, pod: &str) -> Workload {
    kube.create_namespace(ns);
    kube.create_service_account(ns, "workload");
    let node_uid = kube.create_node(node, &[("topology.kubernetes.io/zone", "zone-a")]);
    let pod_uid = kube.create_pod(
        ns,
        pod,
        "workload",
        node,
        &[("app", "demo")],
        &[("app", "registry.example/demo:1.0")],
    );
    let updated = kube.set_pod_status(
        ns,
        pod,
        &json!({
            "phase": "Running",
            "podIP": "10.0.0.7",
            "containerStatuses": [{
                "name": "app",
                "image": "registry.example/demo:1.0",
                "imageID": "registry.example/demo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "containerID": "containerd://0123456789abcdef",
                "ready": true,
                "restartCount": 0,
                "state": { "running": { "startedAt": "2026-01-01T00:00:00Z" } },
            }],
        }),
    );
    assert_eq!(updated["status"]["phase"], "Running", "{updated:#}");
    Workload { node_uid, pod_uid }
}

#[test]
fn a_token_bound_to_a_pod_is_authenticated_for_spire_server_with_the_pod_in_user_extra() {
    let Some(kube) = KubeControlPlane::start() else {
        return;
    };
    let w = create_workload(&kube, "demo", "node-a", "web-0");

    // The objects are there, as a plugin would read them.
    let pod = kube.get_pod("demo", "web-0").expect("the pod exists");
    assert_eq!(pod["metadata"]["uid"], w.pod_uid.as_str());
    assert_eq!(pod["spec"]["nodeName"], "node-a");
    assert_eq!(pod["spec"]["serviceAccountName"], "workload");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["containerID"],
        "containerd://0123456789abcdef"
    );
    let node = kube.request_ok("GET", "/api/v1/nodes/node-a", None);
    assert_eq!(node["metadata"]["uid"], w.node_uid.as_str());
    assert_eq!(
        node["metadata"]["labels"]["topology.kubernetes.io/zone"],
        "zone-a"
    );
    assert_eq!(
        node["status"]["addresses"][0],
        json!({ "type": "InternalIP", "address": "127.0.0.1" })
    );

    // A projected service account token for spire-server, as k8s_psat uses.
    let token = kube.token_request("demo", "workload", "web-0", &w.pod_uid, "spire-server", 600);
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    let review = kube.token_review(&token, &["spire-server"]);
    assert_eq!(review["authenticated"], true, "{review:#}");
    assert_eq!(
        review["user"]["username"],
        "system:serviceaccount:demo:workload"
    );
    let extra = &review["user"]["extra"];
    assert_eq!(
        extra["authentication.kubernetes.io/pod-name"],
        json!(["web-0"])
    );
    assert_eq!(
        extra["authentication.kubernetes.io/pod-uid"],
        json!([w.pod_uid])
    );
    assert_eq!(
        extra["authentication.kubernetes.io/node-name"],
        json!(["node-a"])
    );
    assert_eq!(
        extra["authentication.kubernetes.io/node-uid"],
        json!([w.node_uid])
    );

    let wrong = kube.token_review(&token, &["not-spire-server"]);
    assert_ne!(wrong["authenticated"], true, "{wrong:#}");
    assert!(
        wrong["error"].as_str().is_some_and(|e| !e.is_empty()),
        "a refusal says why: {wrong:#}"
    );

    // A kubeconfig names the same API server with the admin token.
    let path = kube.dir().join("kubeconfig.yaml");
    kube.write_kubeconfig(&path);
    let config = std::fs::read_to_string(&path).unwrap();
    assert!(config.contains(&format!("server: {}", kube.url())));
    assert!(config.contains(&format!("token: {}", kube.admin_token())));
    assert!(kube.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
}

/// A client for the fake kubelet that trusts the cluster CA.
fn kubelet_client(ca_pem: &str) -> ureq::Agent {
    let ca = ureq::tls::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .build();
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build(),
    )
}

fn get(agent: &ureq::Agent, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = agent.get(url);
    if let Some(token) = token {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    let mut resp = req.call().unwrap();
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

fn pod_names(list: &Value) -> Vec<String> {
    assert_eq!(list["kind"], "PodList", "{list:#}");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_fake_kubelet_serves_the_pods_bound_to_its_node_and_wants_a_token_on_its_secure_port() {
    let Some(kube) = KubeControlPlane::start() else {
        return;
    };
    let w = create_workload(&kube, "demo", "node-a", "web-0");
    kube.create_node("node-b", &[]);
    kube.create_pod(
        "demo",
        "elsewhere",
        "workload",
        "node-b",
        &[],
        &[("app", "registry.example/other:1.0")],
    );
    assert_eq!(pod_names(&kube.pods_on_node("node-a")), ["web-0"]);

    let kubelet = FakeKubelet::start(&kube, "node-a");
    assert_eq!(kubelet.ca_pem(), kube.ca_pem());
    let agent = kubelet_client(kubelet.ca_pem());
    let pods_url = format!("{}/pods", kubelet.secure_url());

    let (status, _) = get(&agent, &pods_url, None);
    assert_eq!(status, 401, "the secure port wants a token");
    assert_eq!(kubelet.last_token(), None);

    let (status, list) = get(&agent, &pods_url, Some("any-token"));
    assert_eq!(status, 200, "{list:#}");
    assert_eq!(pod_names(&list), ["web-0"]);
    assert_eq!(list["items"][0]["metadata"]["uid"], w.pod_uid.as_str());
    assert_eq!(
        list["items"][0]["status"]["containerStatuses"][0]["containerID"],
        "containerd://0123456789abcdef"
    );
    assert_eq!(kubelet.last_token().as_deref(), Some("any-token"));

    let read_only = format!("{}/pods", kubelet.read_only_url());
    let (status, list) = get(&agent, &read_only, None);
    assert_eq!(status, 200, "{list:#}");
    assert_eq!(pod_names(&list), ["web-0"]);
    assert_eq!(kubelet.pod_requests(), 2);

    let (status, _) = get(
        &agent,
        &format!("{}/healthz", kubelet.read_only_url()),
        None,
    );
    assert_eq!(status, 404, "only /pods is served");

    // Each request reads the API server afresh: a deleted pod is gone at once.
    kube.delete_pod("demo", "web-0");
    assert!(kube.get_pod("demo", "web-0").is_none());
    let (status, list) = get(&agent, &pods_url, Some("another-token"));
    assert_eq!(status, 200, "{list:#}");
    assert!(pod_names(&list).is_empty(), "{list:#}");
    assert_eq!(kubelet.last_token().as_deref(), Some("another-token"));
}
