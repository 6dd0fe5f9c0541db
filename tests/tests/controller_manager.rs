//! sigil-controller-manager against a real kube-apiserver, run once against
//! a real sigil-server and once against a real spire-server v1.15
//! (`SIGIL_TEST_SPIRE_BIN`), with the same scenario: the CRDs from
//! `deploy/helm/sigil/crds/` apply; a ClusterSPIFFEID gives one entry per
//! selected pod (templated ID, parented to the node's `k8s_psat` agent ID,
//! service DNS names with `autoPopulateDNSNames`), and entries follow the
//! pods (create, relabel, delete) within about a second; a
//! ClusterStaticEntry appears as its entry and a second identical one is
//! masked; a ClusterFederatedTrustDomain appears as a federation
//! relationship, follows its spec (new URL, new trust domain) and goes with
//! its object; entries and relationships made by
//! hand are never touched; the objects' statuses count what was done. Needs
//! `SIGIL_TEST_KUBE_BIN` (required in CI). There is no kubelet or
//! kube-controller-manager: the test writes pod status and the service's
//! `Endpoints` object itself, as those would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sigil_e2e::spire::{self, SpireServer};
use sigil_testkit::kube::KubeControlPlane;
use sigil_testkit::{CmdResult, TrustDomain, bin, wait_for};

const CLUSTER: &str = "prod";
const CRDS: [&str; 3] = [
    "spire.spiffe.io_clusterspiffeids.yaml",
    "spire.spiffe.io_clusterstaticentries.yaml",
    "spire.spiffe.io_clusterfederatedtrustdomains.yaml",
];
const API: &str = "/apis/spire.spiffe.io/v1alpha1";
const FINALIZER: &str = "sigil-controller-manager/federation-relationship";

/// The server under the controller: a sigil-server, or a real spire-server
/// in the same temporary directory.
struct Server {
    td: TrustDomain,
    spire: Option<SpireServer>,
}

impl Server {
    fn cli(&self, args: &[&str]) -> CmdResult {
        match &self.spire {
            Some(s) => s.cli(args),
            None => self.td.server_cli(args),
        }
    }

    fn socket(&self) -> PathBuf {
        match &self.spire {
            Some(s) => s.sock.clone(),
            None => self.td.server_socket(),
        }
    }

    /// The entries the server holds, as `entry show -output json` prints
    /// them.
    fn entries(&self) -> Vec<Value> {
        let r = self.cli(&["entry", "show", "-output", "json"]).ok();
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        v["entries"].as_array().cloned().unwrap_or_default()
    }

    /// The trust domains of the federation relationships on the server.
    fn federations(&self) -> Vec<String> {
        let r = self.cli(&["federation", "list", "-output", "json"]).ok();
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        let mut tds: Vec<String> = v["federation_relationships"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|f| f["trust_domain"].as_str().unwrap().to_owned())
            .collect();
        tds.sort();
        tds
    }

    fn wait_ids(&self, want: &[&str], within: Duration) -> Vec<Value> {
        wait_for(&format!("entries {want:?}"), within, || {
            let e = self.entries();
            (ids(&e) == want).then_some(e)
        })
    }
}

fn apply_crds(kube: &KubeControlPlane) {
    for file in CRDS {
        let path = format!(
            "{}/../deploy/helm/sigil/crds/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap();
        let crd: Value = serde_saphyr::from_str(&text).unwrap();
        kube.request_ok(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            Some(&crd),
        );
        let plural = crd["spec"]["names"]["plural"].as_str().unwrap().to_owned();
        wait_for(
            &format!("CRD {plural} established"),
            Duration::from_secs(30),
            || (kube.request("GET", &format!("{API}/{plural}"), None).0 == 200).then_some(()),
        );
    }
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

fn id_of(v: &Value) -> String {
    format!(
        "spiffe://{}{}",
        v["trust_domain"].as_str().unwrap(),
        v["path"].as_str().unwrap()
    )
}

fn ids(entries: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = entries.iter().map(|e| id_of(&e["spiffe_id"])).collect();
    ids.sort();
    ids
}

fn find<'a>(entries: &'a [Value], path: &str) -> &'a Value {
    entries
        .iter()
        .find(|e| e["spiffe_id"]["path"] == path)
        .unwrap_or_else(|| panic!("no entry {path} in {entries:#?}"))
}

fn selectors(e: &Value) -> Vec<String> {
    let mut sel: Vec<String> = e["selectors"]
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
    sel
}

fn strings(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

fn create(kube: &KubeControlPlane, plural: &str, kind: &str, name: &str, spec: Value) {
    kube.request_ok(
        "POST",
        &format!("{API}/{plural}"),
        Some(&json!({
            "apiVersion": "spire.spiffe.io/v1alpha1",
            "kind": kind,
            "metadata": { "name": name },
            "spec": spec,
        })),
    );
}

fn wait_status(kube: &KubeControlPlane, plural: &str, name: &str, want: &Value) {
    wait_for(
        &format!("{plural}/{name} status {want}"),
        Duration::from_secs(15),
        || {
            let obj = kube.request_ok("GET", &format!("{API}/{plural}/{name}"), None);
            (&obj["status"] == want).then_some(())
        },
    );
}

const MANUAL: &str = "spiffe://example.org/manual";
const WEB_A: &str = "spiffe://example.org/ns/team-a/sa/web/web-a";
const WEB_B: &str = "spiffe://example.org/ns/team-a/sa/web/web-b";
const WEB_C: &str = "spiffe://example.org/ns/team-a/sa/web/web-c";
const WEB_D: &str = "spiffe://example.org/ns/team-a/sa/web/web-d";
const DB: &str = "spiffe://example.org/db";

/// The scenario, the same against either server. `label` names the server
/// in the log lines.
fn scenario(kube: &KubeControlPlane, server: &mut Server, label: &str) {
    apply_crds(kube);
    kube.create_namespace("team-a");
    kube.create_service_account("team-a", "web");
    let node_uid = kube.create_node("node-1", &[]);

    let kubeconfig = server.td.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    let mut cmd = Command::new(bin("sigil-controller-manager"));
    cmd.arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--trust-domain", "example.org", "--cluster-name", CLUSTER])
        .args(["--cluster-domain", "cluster.local"])
        // Long enough that only watches can explain the timings below.
        .args(["--gc-interval", "5m"])
        .arg("--spire-server-socket-path")
        .arg(server.socket());
    server.td.spawn_process("controller-manager", cmd);

    // An entry and a relationship made by hand: never touched.
    server
        .cli(&[
            "entry",
            "create",
            "-parentID",
            "spiffe://example.org/spire/agent/x509pop/other",
            "-spiffeID",
            MANUAL,
            "-selector",
            "unix:uid:1000",
        ])
        .ok();
    server
        .cli(&[
            "federation",
            "create",
            "-trustDomain",
            "manual.org",
            "-bundleEndpointURL",
            "https://127.0.0.1:1/manual",
            "-bundleEndpointProfile",
            "https_web",
        ])
        .ok();

    create(
        kube,
        "clusterspiffeids",
        "ClusterSPIFFEID",
        "web",
        json!({
            "spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}/{{ .PodMeta.Name }}",
            "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "team-a" } },
            "podSelector": { "matchLabels": { "app": "web" } },
            "workloadSelectorTemplates": ["k8s:ns:{{ .PodMeta.Namespace }}"],
            "ttl": "1h",
            "hint": "web",
            "autoPopulateDNSNames": true,
        }),
    );
    let uid_a = running_pod(kube, "web-a", &[("app", "web")]);
    running_pod(kube, "web-b", &[("app", "web")]);
    running_pod(kube, "web-c", &[("app", "web")]);
    running_pod(kube, "db-0", &[("app", "db")]);

    let all = server.wait_ids(&[MANUAL, WEB_A, WEB_B, WEB_C], Duration::from_secs(15));
    let a = find(&all, "/ns/team-a/sa/web/web-a");
    assert_eq!(
        a["parent_id"]["path"],
        format!("/spire/agent/k8s_psat/{CLUSTER}/{node_uid}"),
        "{a:#}"
    );
    assert_eq!(
        selectors(a),
        ["k8s:ns:team-a".to_owned(), format!("k8s:pod-uid:{uid_a}")]
    );
    assert_eq!(a["x509_svid_ttl"], 3600, "{a:#}");
    assert_eq!(a["hint"], "web", "{a:#}");

    // The service in front of web-a (its Endpoints, as the endpoints
    // controller would write them) gives web-a its DNS names.
    kube.request_ok(
        "POST",
        "/api/v1/namespaces/team-a/endpoints",
        Some(&json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": { "name": "web-svc", "namespace": "team-a" },
            "subsets": [{
                "addresses": [{ "ip": "10.0.0.1", "targetRef": {
                    "kind": "Pod", "namespace": "team-a", "name": "web-a", "uid": uid_a,
                } }],
                "ports": [{ "port": 8443 }],
            }],
        })),
    );
    let dns = wait_for("web-a's service DNS names", Duration::from_secs(10), || {
        let names = strings(&find(&server.entries(), "/ns/team-a/sa/web/web-a")["dns_names"]);
        (!names.is_empty()).then_some(names)
    });
    assert_eq!(
        dns,
        [
            "web-svc",
            "web-svc.team-a",
            "web-svc.team-a.svc",
            "web-svc.team-a.svc.cluster.local"
        ]
    );

    // A new pod's entry comes from the watch (gcInterval is 5m).
    let t = Instant::now();
    running_pod(kube, "web-d", &[("app", "web")]);
    server.wait_ids(
        &[MANUAL, WEB_A, WEB_B, WEB_C, WEB_D],
        Duration::from_secs(10),
    );
    eprintln!(
        "[{label}] web-d's entry appeared {} ms after its pod",
        t.elapsed().as_millis()
    );

    // Relabel web-c out of the selector, delete web-b and web-d.
    let t = Instant::now();
    kube.request_ok(
        "PATCH",
        "/api/v1/namespaces/team-a/pods/web-c",
        Some(&json!({ "metadata": { "labels": { "app": "other" } } })),
    );
    kube.delete_pod("team-a", "web-b");
    kube.delete_pod("team-a", "web-d");
    server.wait_ids(&[MANUAL, WEB_A], Duration::from_secs(10));
    eprintln!(
        "[{label}] relabelled and deleted pods' entries went {} ms after the change",
        t.elapsed().as_millis()
    );
    wait_status(
        kube,
        "clusterspiffeids",
        "web",
        &json!({ "stats": {
            "namespacesSelected": 1,
            "namespacesIgnored": 0,
            "podsSelected": 1,
            "podEntryRenderFailures": 0,
            "entriesMasked": 0,
            "entriesToSet": 1,
            "entryFailures": 0,
        } }),
    );

    // A ClusterStaticEntry becomes its entry, parented anywhere; an
    // identical younger one is masked.
    let static_spec = json!({
        "spiffeID": DB,
        "parentID": "spiffe://example.org/spire/agent/x509pop/db-host",
        "selectors": ["unix:uid:999", "unix:gid:999"],
        "x509SVIDTTL": "30m",
        "dnsNames": ["db.example.org"],
        "hint": "db",
    });
    let t = Instant::now();
    create(
        kube,
        "clusterstaticentries",
        "ClusterStaticEntry",
        "db",
        static_spec.clone(),
    );
    let all = server.wait_ids(&[DB, MANUAL, WEB_A], Duration::from_secs(10));
    eprintln!(
        "[{label}] the ClusterStaticEntry's entry appeared {} ms after the object",
        t.elapsed().as_millis()
    );
    let db = find(&all, "/db");
    assert_eq!(
        id_of(&db["parent_id"]),
        "spiffe://example.org/spire/agent/x509pop/db-host"
    );
    assert_eq!(selectors(db), ["unix:gid:999", "unix:uid:999"]);
    assert_eq!(db["x509_svid_ttl"], 1800, "{db:#}");
    assert_eq!(strings(&db["dns_names"]), ["db.example.org"]);
    assert_eq!(db["hint"], "db");
    assert!(
        db["id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("clusterstaticentry.{CLUSTER}.")),
        "{db:#}"
    );
    wait_status(
        kube,
        "clusterstaticentries",
        "db",
        &json!({ "rendered": true, "masked": false, "set": true }),
    );
    // Creation timestamps have one-second resolution.
    std::thread::sleep(Duration::from_millis(1100));
    create(
        kube,
        "clusterstaticentries",
        "ClusterStaticEntry",
        "db-again",
        static_spec,
    );
    wait_status(
        kube,
        "clusterstaticentries",
        "db-again",
        &json!({ "rendered": true, "masked": true, "set": false }),
    );
    create(
        kube,
        "clusterstaticentries",
        "ClusterStaticEntry",
        "broken",
        json!({ "spiffeID": "not-an-id", "parentID": "spiffe://example.org/x", "selectors": ["a:b"] }),
    );
    wait_status(
        kube,
        "clusterstaticentries",
        "broken",
        &json!({ "rendered": false, "masked": false, "set": false }),
    );

    // A ClusterFederatedTrustDomain becomes a relationship and goes with
    // its object; the hand-made one stays.
    let t = Instant::now();
    create(
        kube,
        "clusterfederatedtrustdomains",
        "ClusterFederatedTrustDomain",
        "other",
        json!({
            "trustDomain": "other.org",
            "bundleEndpointURL": "https://127.0.0.1:1/other",
            "bundleEndpointProfile": { "type": "https_web" },
        }),
    );
    wait_for("relationship other.org", Duration::from_secs(10), || {
        (server.federations() == ["manual.org", "other.org"]).then_some(())
    });
    eprintln!(
        "[{label}] the federation relationship appeared {} ms after the object",
        t.elapsed().as_millis()
    );
    let obj = kube.request_ok(
        "GET",
        &format!("{API}/clusterfederatedtrustdomains/other"),
        None,
    );
    assert_eq!(obj["metadata"]["finalizers"], json!([FINALIZER]), "{obj:#}");
    assert_eq!(
        obj["metadata"]["annotations"]["sigil-controller-manager/trust-domain"], "other.org",
        "{obj:#}"
    );
    // A new URL updates the relationship; a new trust domain moves it.
    let other = format!("{API}/clusterfederatedtrustdomains/other");
    kube.request_ok(
        "PATCH",
        &other,
        Some(&json!({ "spec": { "bundleEndpointURL": "https://127.0.0.1:2/other" } })),
    );
    wait_for(
        "relationship other.org updated",
        Duration::from_secs(10),
        || {
            let r = server.cli(&[
                "federation",
                "show",
                "-trustDomain",
                "other.org",
                "-output",
                "json",
            ]);
            (r.code == 0 && r.stdout.contains("https://127.0.0.1:2/other")).then_some(())
        },
    );
    kube.request_ok(
        "PATCH",
        &other,
        Some(&json!({ "spec": { "trustDomain": "moved.org" } })),
    );
    wait_for(
        "relationship moved to moved.org",
        Duration::from_secs(10),
        || (server.federations() == ["manual.org", "moved.org"]).then_some(()),
    );
    kube.request_ok(
        "DELETE",
        &format!("{API}/clusterfederatedtrustdomains/other"),
        None,
    );
    wait_for(
        "relationship other.org gone",
        Duration::from_secs(10),
        || (server.federations() == ["manual.org"]).then_some(()),
    );
    wait_for("object other gone", Duration::from_secs(10), || {
        let (status, _) = kube.request(
            "GET",
            &format!("{API}/clusterfederatedtrustdomains/other"),
            None,
        );
        (status == 404).then_some(())
    });

    // Deleting the static entry objects removes their entry; the hand-made
    // entry is still there.
    for name in ["db", "db-again"] {
        kube.request_ok(
            "DELETE",
            &format!("{API}/clusterstaticentries/{name}"),
            None,
        );
    }
    server.wait_ids(&[MANUAL, WEB_A], Duration::from_secs(10));

    // Nothing went wrong on the way but the broken object.
    let log = std::fs::read_to_string(server.td.path().join("controller-manager.log")).unwrap();
    let unexpected: Vec<&str> = log
        .lines()
        .filter(|l| (l.contains("ERROR") || l.contains("WARN")) && !l.contains("=broken "))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:#?}");
}

#[test]
fn controller_manager_keeps_sigil_server_in_step_with_pods_static_entries_and_federations() {
    let Some(kube) = KubeControlPlane::start() else {
        return;
    };
    let mut td = TrustDomain::new();
    td.start_server();
    let mut server = Server { td, spire: None };
    scenario(&kube, &mut server, "sigil-server");

    // An unsupported template is refused with the reason in the status.
    create(
        &kube,
        "clusterspiffeids",
        "ClusterSPIFFEID",
        "bad",
        json!({ "spiffeIDTemplate": "spiffe://example.org/{{ .PodSpec.Containers }}" }),
    );
    let err = wait_for("status error", Duration::from_secs(15), || {
        let obj = kube.request_ok("GET", &format!("{API}/clusterspiffeids/bad"), None);
        obj["status"]["error"].as_str().map(str::to_owned)
    });
    assert!(err.contains(".PodSpec.Containers"), "{err}");
    assert_eq!(ids(&server.entries()), [MANUAL, WEB_A]);
}

#[test]
fn controller_manager_keeps_a_real_spire_server_in_step_with_pods_static_entries_and_federations() {
    let Some(spire_dir) = spire::bin_dir() else {
        return;
    };
    let Some(kube) = KubeControlPlane::start() else {
        return;
    };
    let mut td = TrustDomain::new();
    let spire = SpireServer::start(
        &mut td,
        &spire_dir,
        r#"NodeAttestor "join_token" {
        plugin_data {
        }
    }"#,
    );
    let mut server = Server {
        td,
        spire: Some(spire),
    };
    scenario(&kube, &mut server, "spire-server");
}
