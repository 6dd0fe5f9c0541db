//! sigil-controller-manager against a real kube-apiserver and a real
//! sigil-server: the ClusterSPIFFEID CRD from `deploy/helm/sigil/crds/` applies, one
//! entry per selected pod appears with the templated ID, parented to the
//! node's `k8s_psat` agent ID, and entries follow the pods (create, relabel,
//! delete); the object's status counts what was done. Needs
//! `SIGIL_TEST_KUBE_BIN` (required in CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use sigil_testkit::kube::KubeControlPlane;
use sigil_testkit::{TrustDomain, bin, wait_for};

const CLUSTER: &str = "prod";

fn apply_crd(kube: &KubeControlPlane) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/helm/sigil/crds/spire.spiffe.io_clusterspiffeids.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let crd: Value = serde_saphyr::from_str(&text).unwrap();
    kube.request_ok(
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        Some(&crd),
    );
    wait_for("CRD established", Duration::from_secs(30), || {
        let (status, _) = kube.request(
            "GET",
            "/apis/spire.spiffe.io/v1alpha1/clusterspiffeids",
            None,
        );
        (status == 200).then_some(())
    });
}

fn running_pod(kube: &KubeControlPlane, name: &str, labels: &[(&str, &str)]) -> String {
    let uid = kube.create_pod(
        "team-a",
        name,
        "web",
        "node-1",
        labels,
        &[("app", "nginx:1.27")],
    );
    kube.set_pod_status("team-a", name, &json!({ "phase": "Running" }));
    uid
}

/// The entries the server holds, as `entry show -output json` prints them.
fn entries(td: &TrustDomain) -> Vec<Value> {
    let r = td.server_cli(&["entry", "show", "-output", "json"]).ok();
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    v["entries"].as_array().cloned().unwrap_or_default()
}

fn ids(entries: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = entries
        .iter()
        .map(|e| {
            format!(
                "spiffe://{}{}",
                e["spiffe_id"]["trust_domain"].as_str().unwrap(),
                e["spiffe_id"]["path"].as_str().unwrap()
            )
        })
        .collect();
    ids.sort();
    ids
}

fn wait_ids(td: &TrustDomain, want: &[&str], within: Duration) -> Vec<Value> {
    wait_for(&format!("entries {want:?}"), within, || {
        let e = entries(td);
        (ids(&e) == want).then_some(e)
    })
}

#[test]
fn cluster_spiffeid_entries_follow_pods_through_create_relabel_and_delete() {
    let Some(kube) = KubeControlPlane::start() else {
        return;
    };
    apply_crd(&kube);
    kube.create_namespace("team-a");
    kube.create_service_account("team-a", "web");
    let node_uid = kube.create_node("node-1", &[]);

    let mut td = TrustDomain::new();
    td.start_server();
    let kubeconfig = td.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    let mut cmd = Command::new(bin("sigil-controller-manager"));
    cmd.arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--trust-domain", "example.org", "--cluster-name", CLUSTER])
        .arg("--spire-server-socket-path")
        .arg(td.server_socket());
    td.spawn_process("controller-manager", cmd);

    // An entry nobody declares that the controller does not own: untouched.
    td.server_cli(&[
        "entry",
        "create",
        "-parentID",
        "spiffe://example.org/spire/agent/x509pop/other",
        "-spiffeID",
        "spiffe://example.org/manual",
        "-selector",
        "unix:uid:1000",
    ])
    .ok();

    kube.request_ok(
        "POST",
        "/apis/spire.spiffe.io/v1alpha1/clusterspiffeids",
        Some(&json!({
            "apiVersion": "spire.spiffe.io/v1alpha1",
            "kind": "ClusterSPIFFEID",
            "metadata": { "name": "web" },
            "spec": {
                "spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}/{{ .PodMeta.Name }}",
                "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "team-a" } },
                "podSelector": { "matchLabels": { "app": "web" } },
                "workloadSelectorTemplates": ["k8s:ns:{{ .PodMeta.Namespace }}"],
                "ttl": "1h",
                "hint": "web",
            },
        })),
    );
    let uid_a = running_pod(&kube, "web-a", &[("app", "web")]);
    running_pod(&kube, "web-b", &[("app", "web")]);
    running_pod(&kube, "web-c", &[("app", "web")]);
    running_pod(&kube, "db-0", &[("app", "db")]);

    let all = wait_ids(
        &td,
        &[
            "spiffe://example.org/manual",
            "spiffe://example.org/ns/team-a/sa/web/web-a",
            "spiffe://example.org/ns/team-a/sa/web/web-b",
            "spiffe://example.org/ns/team-a/sa/web/web-c",
        ],
        Duration::from_secs(15),
    );
    let a = all
        .iter()
        .find(|e| e["spiffe_id"]["path"] == "/ns/team-a/sa/web/web-a")
        .unwrap();
    assert_eq!(
        a["parent_id"]["path"],
        format!("/spire/agent/k8s_psat/{CLUSTER}/{node_uid}"),
        "{a:#}"
    );
    let mut sel: Vec<String> = a["selectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s["type"].as_str().unwrap(),
                s["value"].as_str().unwrap()
            )
        })
        .collect();
    sel.sort();
    assert_eq!(
        sel,
        ["k8s:ns:team-a".to_owned(), format!("k8s:pod-uid:{uid_a}")]
    );
    assert_eq!(a["x509_svid_ttl"], 3600, "{a:#}");
    assert_eq!(a["hint"], "web", "{a:#}");

    // A new pod's entry comes from the watch, not a poll (gcInterval 10s).
    let t = std::time::Instant::now();
    running_pod(&kube, "web-d", &[("app", "web")]);
    wait_for("web-d's entry", Duration::from_secs(5), || {
        ids(&entries(&td))
            .contains(&"spiffe://example.org/ns/team-a/sa/web/web-d".to_owned())
            .then_some(())
    });
    assert!(t.elapsed() < Duration::from_secs(5));
    kube.delete_pod("team-a", "web-d");

    // Relabel web-c out of the selector, delete web-b.
    kube.request_ok(
        "PATCH",
        "/api/v1/namespaces/team-a/pods/web-c",
        Some(&json!({ "metadata": { "labels": { "app": "other" } } })),
    );
    kube.delete_pod("team-a", "web-b");
    wait_ids(
        &td,
        &[
            "spiffe://example.org/manual",
            "spiffe://example.org/ns/team-a/sa/web/web-a",
        ],
        Duration::from_secs(15),
    );

    let stats = wait_for("status stats", Duration::from_secs(15), || {
        let obj = kube.request_ok(
            "GET",
            "/apis/spire.spiffe.io/v1alpha1/clusterspiffeids/web",
            None,
        );
        let s = obj["status"]["stats"].clone();
        (s["podsSelected"] == 1).then_some(s)
    });
    assert_eq!(
        stats,
        json!({
            "namespacesSelected": 1,
            "namespacesIgnored": 0,
            "podsSelected": 1,
            "podEntryRenderFailures": 0,
            "entriesMasked": 0,
            "entriesToSet": 1,
            "entryFailures": 0,
        })
    );

    // An unsupported template is refused with the reason in the status.
    kube.request_ok(
        "POST",
        "/apis/spire.spiffe.io/v1alpha1/clusterspiffeids",
        Some(&json!({
            "apiVersion": "spire.spiffe.io/v1alpha1",
            "kind": "ClusterSPIFFEID",
            "metadata": { "name": "bad" },
            "spec": { "spiffeIDTemplate": "spiffe://example.org/{{ .PodSpec.Containers }}" },
        })),
    );
    let err = wait_for("status error", Duration::from_secs(15), || {
        let obj = kube.request_ok(
            "GET",
            "/apis/spire.spiffe.io/v1alpha1/clusterspiffeids/bad",
            None,
        );
        obj["status"]["error"].as_str().map(str::to_owned)
    });
    assert!(err.contains(".PodSpec.Containers"), "{err}");
    assert_eq!(ids(&entries(&td)).len(), 2);
}
