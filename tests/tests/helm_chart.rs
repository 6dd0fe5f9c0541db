//! The Helm chart in `deploy/helm/sigil`, checked with a real helm v4
//! (`SIGIL_TEST_HELM_BIN`, the directory printed by `.ci/install-helm.sh`):
//! `helm lint` (also `--strict`) passes; `helm template` renders with the
//! default values, PostgreSQL values, Pod Certificates values and without
//! the controller manager; every rendered manifest, CRDs included
//! (`--include-crds`), is accepted by a real kube-apiserver (testkit's
//! control plane, `SIGIL_TEST_KUBE_BIN`): the CRDs created for real, every
//! other object (ClusterSPIFFEIDs from values included) in a dry-run
//! create with strict field validation; the RBAC it grants is what the
//! plugins, the controller manager and the Pod Certificates signer need
//! and no more (checked with SubjectAccessReviews); the rendered
//! `server.conf` / `agent.conf` pass `sigil-server validate` /
//! `sigil-agent validate`, with the paths that only exist in a pod moved
//! into a temporary directory; and sigil-controller-manager, run with the
//! rendered configuration and the chart's RBAC, registers a pod.
//!
//! Without the binaries the tests print a skip line (outside CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};
use sigil_testkit::kube::KubeControlPlane;
use sigil_testkit::{CmdResult, TrustDomain, wait_for};

/// Environment variable naming the directory holding `helm`.
const HELM_BIN_ENV: &str = "SIGIL_TEST_HELM_BIN";

/// Namespace and release name the chart is rendered for.
const NAMESPACE: &str = "sigil-system";
const RELEASE: &str = "sigil";

/// Values selecting the PostgreSQL datastore, with the connection string
/// given by value (the chart stores it in a Secret).
const POSTGRES_VALUES: &str = r#"
trustDomain: prod.example.com
clusterName: prod-east
logLevel: DEBUG
server:
  dataStore:
    type: postgres
    postgres:
      connectionString: "postgres://sigil:secret@db.example.com:5432/sigil?sslmode=require"
  persistence:
    enabled: false
  resources:
    requests:
      cpu: 100m
      memory: 128Mi
agent:
  kubelet:
    skipVerification: false
    caPath: /run/kubelet-ca/ca.crt
  tolerations:
    - operator: Exists
  nodeSelector:
    kubernetes.io/os: linux
"#;

/// Values turning the Pod Certificates signer on, and replacing the
/// default ClusterSPIFFEID by one using more of the spec (with a class).
const POD_CERTIFICATES_VALUES: &str = r#"
server:
  podCertificates:
    enabled: true
    defaultSpiffeID: false
controllerManager:
  className: team-a
  entryIDPrefix: "k8s."
  ignoreNamespaces: ["kube-.*"]
  identities:
    clusterSPIFFEIDs:
      default:
        enabled: false
      web:
        spiffeIDTemplate: "spiffe://{{ .TrustDomain }}/web/{{ .PodMeta.Name }}"
        podSelector:
          matchLabels:
            app: web
        namespaceSelector:
          matchExpressions:
            - key: kubernetes.io/metadata.name
              operator: In
              values: [team-a, team-b]
        dnsNameTemplates: ["{{ .PodMeta.Name }}.web.svc"]
        workloadSelectorTemplates: ["k8s:ns:{{ .PodMeta.Namespace }}"]
        ttl: 1h
        jwtTtl: 5m
        hint: web
"#;

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/sigil")
}

/// A helm runner with its own config, cache and data directories, so the
/// test reads nothing from, and writes nothing to, the user's home.
struct Helm {
    bin: PathBuf,
    home: tempfile::TempDir,
}

impl Helm {
    /// The helm from `SIGIL_TEST_HELM_BIN`; `None` (with a skip notice)
    /// when it is not set, except in CI, where it is required.
    fn find() -> Option<Helm> {
        match std::env::var_os(HELM_BIN_ENV) {
            Some(dir) if !dir.is_empty() => {
                let bin = Path::new(&dir).join("helm");
                assert!(bin.is_file(), "{} does not exist", bin.display());
                Some(Helm {
                    bin,
                    home: tempfile::tempdir().unwrap(),
                })
            }
            _ => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{HELM_BIN_ENV} must be set in CI (the directory printed by .ci/install-helm.sh)"
                );
                eprintln!("skipping: {HELM_BIN_ENV} not set (build helm with .ci/install-helm.sh)");
                None
            }
        }
    }

    fn run(&self, args: &[&str]) -> CmdResult {
        let home = self.home.path();
        let out = Command::new(&self.bin)
            .args(args)
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env_remove("KUBECONFIG")
            .output()
            .expect("run helm");
        result(out)
    }

    /// Writes `values` to a file and returns its path.
    fn values_file(&self, name: &str, values: &str) -> PathBuf {
        let path = self.home.path().join(name);
        fs::write(&path, values).unwrap();
        path
    }

    /// `helm template` of the chart, split into documents (as JSON).
    fn template(&self, values: Option<&Path>) -> Vec<Value> {
        match values {
            Some(v) => self.template_with(&["--values", v.to_str().unwrap()]),
            None => self.template_with(&[]),
        }
    }

    /// `helm template` of the chart with extra arguments (`--include-crds`,
    /// `--set`, `--values`), split into documents (as JSON).
    fn template_with(&self, extra: &[&str]) -> Vec<Value> {
        let chart = chart_dir();
        let mut args = vec![
            "template",
            RELEASE,
            chart.to_str().unwrap(),
            "--namespace",
            NAMESPACE,
        ];
        args.extend_from_slice(extra);
        let out = self.run(&args).ok();
        documents(&out.stdout)
    }
}

fn result(out: Output) -> CmdResult {
    CmdResult {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The YAML documents of a helm render, as JSON values (empty ones left out).
fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("rendered YAML")
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the render"))
}

fn kinds(docs: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = docs
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    k.sort();
    k
}

/// The API path of an object's collection. Kinds of the chart's own CRDs
/// (`crds`, as rendered) are looked up there.
fn collection(doc: &Value, crds: &[Value]) -> String {
    let api_version = doc["apiVersion"].as_str().unwrap();
    let kind = doc["kind"].as_str().unwrap();
    let custom = crds
        .iter()
        .find(|c| c["spec"]["names"]["kind"] == kind)
        .map(|c| {
            (
                c["spec"]["names"]["plural"].as_str().unwrap(),
                c["spec"]["scope"] == "Namespaced",
            )
        });
    let (plural, namespaced) = custom.unwrap_or_else(|| match kind {
        "ConfigMap" => ("configmaps", true),
        "Secret" => ("secrets", true),
        "Service" => ("services", true),
        "ServiceAccount" => ("serviceaccounts", true),
        "StatefulSet" => ("statefulsets", true),
        "DaemonSet" => ("daemonsets", true),
        "Role" => ("roles", true),
        "RoleBinding" => ("rolebindings", true),
        "ClusterRole" => ("clusterroles", false),
        "ClusterRoleBinding" => ("clusterrolebindings", false),
        other => panic!("the test does not know kind {other}: add it to collection()"),
    });
    let prefix = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    if namespaced {
        let ns = doc["metadata"]["namespace"]
            .as_str()
            .expect("namespaced objects name their namespace");
        assert_eq!(ns, NAMESPACE);
        format!("{prefix}/namespaces/{ns}/{plural}")
    } else {
        assert!(doc["metadata"]["namespace"].is_null());
        format!("{prefix}/{plural}")
    }
}

/// The CustomResourceDefinitions of a render (`--include-crds`).
fn crds_of(docs: &[Value]) -> Vec<Value> {
    docs.iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .cloned()
        .collect()
}

/// The documents of a render other than CRDs.
fn objects_of(docs: &[Value]) -> Vec<Value> {
    docs.iter()
        .filter(|d| d["kind"] != "CustomResourceDefinition")
        .cloned()
        .collect()
}

/// Creates the CRDs (for real, strict field validation) and waits until
/// each is established and its resource is served.
fn create_crds(kube: &KubeControlPlane, crds: &[Value]) {
    for crd in crds {
        let (status, body) = kube.request(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions?fieldValidation=Strict",
            Some(crd),
        );
        assert_eq!(
            status, 201,
            "the API server refused CRD {}: {body:#}",
            crd["metadata"]["name"]
        );
    }
    for crd in crds {
        let name = crd["metadata"]["name"].as_str().unwrap();
        wait_for(
            &format!("CRD {name} established"),
            Duration::from_secs(30),
            || {
                let got = kube.request_ok(
                    "GET",
                    &format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"),
                    None,
                );
                let established = got["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Established" && c["status"] == "True");
                let group = crd["spec"]["group"].as_str().unwrap();
                let plural = crd["spec"]["names"]["plural"].as_str().unwrap();
                let served = crd["spec"]["versions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|v| v["served"] == true)
                    .all(|v| {
                        let path =
                            format!("/apis/{group}/{}/{plural}", v["name"].as_str().unwrap());
                        kube.request("GET", &path, None).0 == 200
                    });
                (established && served).then_some(())
            },
        );
    }
}

/// Creates every document with `dryRun=All` and strict field validation
/// (unknown or duplicate fields are errors), or for real when `dry_run` is
/// false. Custom resources need their CRDs (`crds`) created first.
fn create_all(kube: &KubeControlPlane, docs: &[Value], crds: &[Value], dry_run: bool) {
    for doc in docs {
        let query = if dry_run {
            "?dryRun=All&fieldValidation=Strict&fieldManager=helm-chart-test"
        } else {
            "?fieldValidation=Strict&fieldManager=helm-chart-test"
        };
        let path = format!("{}{query}", collection(doc, crds));
        let (status, body) = kube.request("POST", &path, Some(doc));
        assert_eq!(
            status, 201,
            "the API server refused {} {}: {body:#}",
            doc["kind"], doc["metadata"]["name"]
        );
        assert_eq!(body["kind"], doc["kind"]);
        if dry_run {
            // Nothing was stored.
            let get = format!(
                "{}/{}",
                collection(doc, crds),
                doc["metadata"]["name"].as_str().unwrap()
            );
            assert_eq!(kube.request("GET", &get, None).0, 404, "{get}");
        }
    }
}

/// Whether service account `sa` of the release namespace may do `verb` on
/// `resource`, written `plural[.group][/subresource]` (`nodes/proxy`,
/// `tokenreviews.authentication.k8s.io`), in `namespace` ("" for cluster
/// scope) and named `name` ("" for any).
fn allowed(
    kube: &KubeControlPlane,
    sa: &str,
    verb: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> bool {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let (resource, group) = resource.split_once('.').unwrap_or((resource, ""));
    let review = kube.request_ok(
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        Some(&json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": format!("system:serviceaccount:{NAMESPACE}:{sa}"),
                "groups": [
                    "system:serviceaccounts",
                    format!("system:serviceaccounts:{NAMESPACE}"),
                    "system:authenticated",
                ],
                "resourceAttributes": {
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "subresource": subresource,
                    "namespace": namespace,
                    "name": name,
                },
            },
        })),
    );
    review["status"]["allowed"] == true
}

#[test]
fn helm_lint_passes_also_strict_and_with_postgres_values() {
    let Some(helm) = Helm::find() else {
        return;
    };
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    let out = helm.run(&["lint", chart]).ok();
    assert!(out.stdout.contains("0 chart(s) failed"), "{}", out.all());
    helm.run(&["lint", "--strict", chart]).ok();
    let pg = helm.values_file("postgres.yaml", POSTGRES_VALUES);
    helm.run(&["lint", "--strict", chart, "--values", pg.to_str().unwrap()])
        .ok();

    // Inconsistent values fail the render with a message naming the value.
    let bad = helm.run(&["template", chart, "--set", "server.dataStore.type=postgres"]);
    assert!(
        bad.failed()
            .all()
            .contains("server.dataStore.postgres.connectionString"),
        "postgres without a connection string"
    );
    let bad = helm.run(&["template", chart, "--set", "server.replicaCount=2"]);
    assert!(
        bad.failed()
            .all()
            .contains("each replica would have its own SQLite")
    );

    // Pod certificates and a non-default controller configuration lint.
    let pc = helm.values_file("pod-certificates.yaml", POD_CERTIFICATES_VALUES);
    helm.run(&["lint", "--strict", chart, "--values", pc.to_str().unwrap()])
        .ok();
    helm.run(&[
        "lint",
        "--strict",
        chart,
        "--set",
        "controllerManager.enabled=false",
    ])
    .ok();
    // One controller per server replica would race (no leader election).
    let bad = helm.run(&[
        "template",
        chart,
        "--values",
        pg.to_str().unwrap(),
        "--set",
        "server.replicaCount=2",
    ]);
    assert!(
        bad.failed()
            .all()
            .contains("controllerManager.enabled needs server.replicaCount=1")
    );
    helm.run(&[
        "template",
        chart,
        "--values",
        pg.to_str().unwrap(),
        "--set",
        "server.replicaCount=2",
        "--set",
        "controllerManager.enabled=false",
    ])
    .ok();
    let bad = helm.run(&[
        "template",
        chart,
        "--set",
        "server.podCertificates.enabled=true",
        "--set",
        "server.podCertificates.signerName=x509-svid",
    ]);
    assert!(
        bad.failed()
            .all()
            .contains("server.podCertificates.signerName must be <domain>/<path>")
    );
}

/// The volume mounted at `path` in `container`, by volume name.
fn mount_at<'a>(container: &'a Value, path: &str) -> &'a Value {
    container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == path)
        .unwrap_or_else(|| panic!("nothing mounted at {path}: {container:#}"))
}

/// The directory and file name of the server's admin socket, from the
/// rendered server.conf.
fn admin_socket(docs: &[Value]) -> String {
    let conf = find(docs, "ConfigMap", "sigil-server")["data"]["server.conf"]
        .as_str()
        .unwrap();
    let line = conf
        .lines()
        .find(|l| l.trim_start().starts_with("socket_path = "))
        .unwrap();
    line.split('"').nth(1).unwrap().to_owned()
}

#[test]
fn the_controller_manager_runs_in_the_server_pod_sharing_the_admin_socket() {
    let Some(helm) = Helm::find() else {
        return;
    };
    let docs = helm.template(None);
    let sts = find(&docs, "StatefulSet", "sigil-server");
    let pod = &sts["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    let (server, cm) = (&containers[0], &containers[1]);
    assert_eq!(server["name"], "server");
    assert_eq!(cm["name"], "controller-manager");
    assert_eq!(cm["image"], "sigil-controller-manager:0.1.0");
    assert_eq!(cm["command"], json!(["sigil-controller-manager"]));
    // Probed on the health endpoints its config makes it serve.
    assert_eq!(cm["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(cm["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(cm["ports"][0]["containerPort"], 8083);
    assert_eq!(cm["securityContext"]["readOnlyRootFilesystem"], true);

    // Both mount the same emptyDir above the admin socket's directory:
    // the server makes that directory itself (0700, its own), because an
    // emptyDir is world-writable and sigil refuses to put its socket
    // straight into a directory every user may write (sigil_cli::secure_fs).
    let socket = admin_socket(&docs);
    let dir = Path::new(&socket)
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_str()
        .unwrap();
    let volume = mount_at(server, dir)["name"].clone();
    assert_eq!(mount_at(cm, dir)["name"], volume);
    assert_eq!(mount_at(cm, dir)["readOnly"], true);
    let vol = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == volume)
        .unwrap();
    assert_eq!(vol["emptyDir"], json!({}));

    // Its config file is the ConfigMap's, and names that socket.
    assert_eq!(cm["args"][0], "--config");
    let path = Path::new(cm["args"][1].as_str().unwrap());
    let mount = mount_at(cm, path.parent().unwrap().to_str().unwrap());
    let vol = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(vol["configMap"]["name"], "sigil-controller-manager");
    let file = path.file_name().unwrap().to_str().unwrap();
    let text = find(&docs, "ConfigMap", "sigil-controller-manager")["data"][file]
        .as_str()
        .unwrap();
    let config: Value = serde_saphyr::from_str(text).unwrap();
    assert_eq!(
        config,
        json!({
            "apiVersion": "spire.spiffe.io/v1alpha1",
            "kind": "ControllerManagerConfig",
            "trustDomain": "example.org",
            "clusterName": "kubernetes",
            "clusterDomain": "cluster.local",
            "spireServerSocketPath": socket,
            "ignoreNamespaces": ["kube-system", "kube-public", NAMESPACE],
            "className": "",
            "watchClassless": false,
            "entryIDPrefix": "",
            "gcInterval": "10s",
            "logLevel": "INFO",
            "health": { "healthProbeBindAddress": ":8083" },
        })
    );
    assert!(
        sts["spec"]["template"]["metadata"]["annotations"]["checksum/controller-manager-config"]
            .is_string()
    );

    // The default ClusterSPIFFEID keeps the controller's Go templates
    // literally (helm does not render values).
    let csid = find(&docs, "ClusterSPIFFEID", "sigil-default");
    assert!(csid["metadata"]["namespace"].is_null(), "cluster-scoped");
    assert_eq!(
        csid["spec"],
        json!({
            "spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}",
        })
    );

    // Other values: the class goes to the config and the chart's objects.
    let pc = helm.values_file("pod-certificates.yaml", POD_CERTIFICATES_VALUES);
    let docs = helm.template(Some(&pc));
    assert!(
        !docs
            .iter()
            .any(|d| d["metadata"]["name"] == "sigil-default"),
        "enabled: false leaves it out"
    );
    let csid = find(&docs, "ClusterSPIFFEID", "sigil-web");
    assert_eq!(csid["spec"]["className"], "team-a");
    assert_eq!(
        csid["spec"]["dnsNameTemplates"],
        json!(["{{ .PodMeta.Name }}.web.svc"])
    );
    assert!(csid["spec"].get("enabled").is_none());
    let text = find(&docs, "ConfigMap", "sigil-controller-manager")["data"][file]
        .as_str()
        .unwrap();
    let config: Value = serde_saphyr::from_str(text).unwrap();
    assert_eq!(config["className"], "team-a");
    assert_eq!(config["entryIDPrefix"], "k8s.");
    assert_eq!(config["ignoreNamespaces"], json!(["kube-.*", NAMESPACE]));

    // Turned off: no container, ConfigMap, RBAC or ClusterSPIFFEID.
    let docs = helm.template_with(&["--set", "controllerManager.enabled=false"]);
    let sts = find(&docs, "StatefulSet", "sigil-server");
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        !kinds(&docs)
            .iter()
            .any(|k| k.contains("controller-manager") || k.starts_with("ClusterSPIFFEID/")),
        "{:?}",
        kinds(&docs)
    );
}

#[test]
fn the_default_render_has_the_expected_objects() {
    let Some(helm) = Helm::find() else {
        return;
    };
    let docs = helm.template(None);
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole/sigil-agent",
            "ClusterRole/sigil-controller-manager",
            "ClusterRole/sigil-server",
            "ClusterRoleBinding/sigil-agent",
            "ClusterRoleBinding/sigil-controller-manager",
            "ClusterRoleBinding/sigil-server",
            "ClusterSPIFFEID/sigil-default",
            "ConfigMap/sigil-agent",
            "ConfigMap/sigil-bundle",
            "ConfigMap/sigil-controller-manager",
            "ConfigMap/sigil-server",
            "DaemonSet/sigil-agent",
            "Role/sigil-server",
            "RoleBinding/sigil-server",
            "Service/sigil-server",
            "ServiceAccount/sigil-agent",
            "ServiceAccount/sigil-server",
            "StatefulSet/sigil-server",
        ]
    );
    let sts = find(&docs, "StatefulSet", "sigil-server");
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "data",
        "SQLite on a PVC by default"
    );
    let ds = find(&docs, "DaemonSet", "sigil-agent");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let token = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "psat-token")
        .unwrap();
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "spire-server"
    );
    let probe = &pod["containers"][0]["livenessProbe"]["exec"]["command"];
    assert_eq!(probe[0], "sigil-agent");
    assert_eq!(probe[1], "healthcheck");

    // The PostgreSQL render: a Secret with the string, given to the server
    // through the environment; no PVC.
    let pg = helm.values_file("postgres.yaml", POSTGRES_VALUES);
    let docs = helm.template(Some(&pg));
    let secret = find(&docs, "Secret", "sigil-server-datastore");
    assert_eq!(
        secret["stringData"]["connection-string"],
        "postgres://sigil:secret@db.example.com:5432/sigil?sslmode=require"
    );
    let sts = find(&docs, "StatefulSet", "sigil-server");
    assert!(sts["spec"]["volumeClaimTemplates"].is_null());
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["env"][0]["valueFrom"]["secretKeyRef"]["name"],
        "sigil-server-datastore"
    );
    assert!(
        container["args"]
            .as_array()
            .unwrap()
            .contains(&json!("-expandEnv"))
    );
    let conf = find(&docs, "ConfigMap", "sigil-server")["data"]["server.conf"]
        .as_str()
        .unwrap();
    assert!(
        !conf.contains("secret@"),
        "the password stays in the Secret"
    );
}

#[test]
fn every_rendered_manifest_crds_included_is_accepted_by_the_api_server() {
    let Some(helm) = Helm::find() else {
        return;
    };
    let Some(kube) = KubeControlPlane::start() else {
        return;
    };
    kube.create_namespace(NAMESPACE);
    let pg = helm.values_file("postgres.yaml", POSTGRES_VALUES);
    let pc = helm.values_file("pod-certificates.yaml", POD_CERTIFICATES_VALUES);
    let defaults = helm.template_with(&["--include-crds"]);
    let renders = [
        defaults.clone(),
        helm.template_with(&["--include-crds", "--values", pg.to_str().unwrap()]),
        helm.template_with(&["--include-crds", "--values", pc.to_str().unwrap()]),
        helm.template_with(&["--include-crds", "--set", "controllerManager.enabled=false"]),
    ];

    // Every file of crds/ is rendered, and the CRDs are created for real
    // (established and served) before anything that needs them.
    let crds = crds_of(&defaults);
    let mut files: Vec<String> = fs::read_dir(chart_dir().join("crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(files.contains(&"spire.spiffe.io_clusterspiffeids.yaml".to_owned()));
    assert_eq!(
        crds.len(),
        files.len(),
        "one CRD per file of crds/: {files:?}"
    );
    create_crds(&kube, &crds);

    // Every other object, for every set of values, in a strict dry run:
    // the ClusterSPIFFEIDs rendered from values included.
    for render in &renders {
        assert_eq!(crds_of(render), crds);
        create_all(&kube, &objects_of(render), &crds, true);
    }
    assert!(
        objects_of(&renders[2])
            .iter()
            .any(|d| d["kind"] == "ClusterSPIFFEID" && d["metadata"]["name"] == "sigil-web")
    );

    // For real, without the controller first, to check what the RBAC grants.
    let without_controller = objects_of(&renders[3]);
    create_all(&kube, &without_controller, &crds, false);
    let tokenreviews = "tokenreviews.authentication.k8s.io";
    let csids = "clusterspiffeids.spire.spiffe.io";
    let signers = "signers.certificates.k8s.io";
    let signer = "spiffe.io/x509-svid";
    // (service account, verb, resource, namespace, name, allowed)
    let cases = [
        // NodeAttestor k8s_psat on the server: review tokens, get the pod
        // and node they name; nothing else.
        ("sigil-server", "create", tokenreviews, "", "", true),
        ("sigil-server", "get", "pods", "default", "p", true),
        ("sigil-server", "get", "nodes", "", "n", true),
        ("sigil-server", "list", "pods", "default", "", false),
        ("sigil-server", "get", "secrets", NAMESPACE, "s", false),
        // BundlePublisher k8s_configmap: the bundle ConfigMap, in the
        // release namespace only.
        (
            "sigil-server",
            "get",
            "configmaps",
            NAMESPACE,
            "sigil-bundle",
            true,
        ),
        (
            "sigil-server",
            "patch",
            "configmaps",
            NAMESPACE,
            "sigil-bundle",
            true,
        ),
        ("sigil-server", "create", "configmaps", NAMESPACE, "", true),
        (
            "sigil-server",
            "patch",
            "configmaps",
            NAMESPACE,
            "sigil-server",
            false,
        ),
        (
            "sigil-server",
            "get",
            "configmaps",
            "default",
            "sigil-bundle",
            false,
        ),
        ("sigil-server", "create", "configmaps", "default", "", false),
        // No controller, no custom resources; pod certificates are off.
        ("sigil-server", "list", csids, "", "", false),
        ("sigil-server", "sign", signers, "", signer, false),
        // WorkloadAttestor k8s on the agent: the kubelet's /pods.
        ("sigil-agent", "get", "nodes/proxy", "", "n", true),
        ("sigil-agent", "get", "pods", "default", "p", true),
        ("sigil-agent", "create", tokenreviews, "", "", false),
        (
            "sigil-agent",
            "get",
            "configmaps",
            NAMESPACE,
            "sigil-bundle",
            false,
        ),
        ("sigil-agent", "create", "pods", "default", "", false),
    ];
    check_access(&kube, &cases);

    // The default render adds the controller manager (as the server's
    // service account, since it is a container of the server pod).
    let existing = kinds(&without_controller);
    let added: Vec<Value> = objects_of(&defaults)
        .into_iter()
        .filter(|d| !existing.contains(&kinds(std::slice::from_ref(d))[0]))
        .collect();
    assert_eq!(
        kinds(&added),
        [
            "ClusterRole/sigil-controller-manager",
            "ClusterRoleBinding/sigil-controller-manager",
            "ClusterSPIFFEID/sigil-default",
            "ConfigMap/sigil-controller-manager",
        ]
    );
    create_all(&kube, &added, &crds, false);
    let endpointslices = "endpointslices.discovery.k8s.io";
    let cases = [
        // Watches of what entries are rendered from, cluster-wide.
        ("sigil-server", "list", "pods", "", "", true),
        ("sigil-server", "watch", "pods", "", "", true),
        ("sigil-server", "list", "nodes", "", "", true),
        ("sigil-server", "watch", "namespaces", "", "", true),
        // autoPopulateDNSNames.
        ("sigil-server", "watch", "endpoints", "", "", true),
        ("sigil-server", "list", endpointslices, "", "", true),
        // The custom resources: read them, write their status only.
        ("sigil-server", "watch", csids, "", "", true),
        ("sigil-server", "get", csids, "", "sigil-default", true),
        (
            "sigil-server",
            "patch",
            &format!("{csids}/status"),
            "",
            "x",
            true,
        ),
        (
            "sigil-server",
            "update",
            &format!("{csids}/status"),
            "",
            "x",
            true,
        ),
        (
            "sigil-server",
            "list",
            "clusterstaticentries.spire.spiffe.io",
            "",
            "",
            true,
        ),
        (
            "sigil-server",
            "patch",
            "clusterfederatedtrustdomains.spire.spiffe.io/status",
            "",
            "x",
            true,
        ),
        ("sigil-server", "create", csids, "", "", false),
        ("sigil-server", "patch", csids, "", "x", false),
        ("sigil-server", "delete", csids, "", "x", false),
        // Nothing else cluster-wide.
        ("sigil-server", "list", "services", "", "", false),
        ("sigil-server", "list", "secrets", "", "", false),
        ("sigil-server", "list", "configmaps", "", "", false),
        ("sigil-server", "delete", "pods", "default", "p", false),
        ("sigil-server", "patch", "nodes", "", "n", false),
        (
            "sigil-server",
            "create",
            "leases.coordination.k8s.io",
            NAMESPACE,
            "",
            false,
        ),
        ("sigil-server", "sign", signers, "", signer, false),
        // The agent gets none of it.
        ("sigil-agent", "list", csids, "", "", false),
        ("sigil-agent", "list", "pods", "", "", false),
    ];
    check_access(&kube, &cases);

    // Pod certificates: the signer's RBAC, limited to its signer name.
    let pod_certificates: Vec<Value> = objects_of(&renders[2])
        .into_iter()
        .filter(|d| {
            d["metadata"]["name"]
                .as_str()
                .unwrap()
                .ends_with("-pod-certificates")
        })
        .collect();
    assert_eq!(
        kinds(&pod_certificates),
        [
            "ClusterRole/sigil-server-pod-certificates",
            "ClusterRoleBinding/sigil-server-pod-certificates",
        ]
    );
    create_all(&kube, &pod_certificates, &crds, false);
    let pcrs = "podcertificaterequests.certificates.k8s.io";
    let ctbs = "clustertrustbundles.certificates.k8s.io";
    let cases = [
        // The attributes Kubernetes checks before a PCR's certificate
        // chain is written ("sign") and before a ClusterTrustBundle with a
        // signerName is written ("attest"): the signer's name, and
        // "<domain>/*" as the fallback, which is not granted.
        ("sigil-server", "sign", signers, "", signer, true),
        ("sigil-server", "attest", signers, "", signer, true),
        ("sigil-server", "sign", signers, "", "spiffe.io/*", false),
        (
            "sigil-server",
            "attest",
            signers,
            "",
            "spiffe.io/other",
            false,
        ),
        (
            "sigil-server",
            "sign",
            signers,
            "",
            "kubernetes.io/kube-apiserver-client",
            false,
        ),
        ("sigil-server", "approve", signers, "", signer, false),
        // The requests: watch them, write their status only.
        ("sigil-server", "watch", pcrs, "", "", true),
        ("sigil-server", "list", pcrs, "team-a", "", true),
        (
            "sigil-server",
            "update",
            &format!("{pcrs}/status"),
            "team-a",
            "r",
            true,
        ),
        (
            "sigil-server",
            "patch",
            &format!("{pcrs}/status"),
            "team-a",
            "r",
            true,
        ),
        ("sigil-server", "update", pcrs, "team-a", "r", false),
        ("sigil-server", "create", pcrs, "team-a", "", false),
        ("sigil-server", "delete", pcrs, "team-a", "r", false),
        // The trust bundle.
        ("sigil-server", "create", ctbs, "", "", true),
        ("sigil-server", "update", ctbs, "", "b", true),
        ("sigil-server", "delete", ctbs, "", "b", true),
        ("sigil-server", "watch", ctbs, "", "", true),
        // Not the other certificate APIs.
        (
            "sigil-server",
            "list",
            "certificatesigningrequests.certificates.k8s.io",
            "",
            "",
            false,
        ),
        (
            "sigil-server",
            "update",
            "certificatesigningrequests.certificates.k8s.io/status",
            "",
            "c",
            false,
        ),
        ("sigil-agent", "sign", signers, "", signer, false),
        ("sigil-agent", "list", pcrs, "", "", false),
    ];
    check_access(&kube, &cases);
}

/// Asserts each (service account, verb, resource, namespace, name,
/// allowed) with a SubjectAccessReview.
fn check_access(kube: &KubeControlPlane, cases: &[(&str, &str, &str, &str, &str, bool)]) {
    for &(sa, verb, resource, ns, name, want) in cases {
        assert_eq!(
            allowed(kube, sa, verb, resource, ns, name),
            want,
            "{sa} {verb} {resource} in {ns:?} named {name:?}"
        );
    }
}

/// A kubeconfig for the plugins' clients, which `validate` loads but does
/// not use (outside a cluster the in-cluster configuration is an error).
const KUBECONFIG: &str = r#"apiVersion: v1
kind: Config
clusters:
  - name: test
    cluster:
      server: https://127.0.0.1:6443
      insecure-skip-tls-verify: true
users:
  - name: test
    user:
      token: not-a-real-token
contexts:
  - name: test
    context:
      cluster: test
      user: test
current-context: test
"#;

/// Moves every in-pod path of a rendered configuration under `root`.
fn relocate(conf: &str, root: &Path) -> String {
    let root = root.display().to_string();
    let mut conf = conf.to_owned();
    for prefix in [
        "/run/sigil/",
        "/tmp/spire-server/",
        "/var/run/secrets/",
        "/run/kubelet-ca/",
    ] {
        conf = conf.replace(&format!("\"{prefix}"), &format!("\"{root}{prefix}"));
    }
    conf
}

fn replace_once(conf: &str, from: &str, to: &str) -> String {
    assert_eq!(conf.matches(from).count(), 1, "{from:?} in\n{conf}");
    conf.replace(from, to)
}

/// Runs `validate` for both rendered configurations of `docs`.
fn validate_configs(docs: &[Value], env: &[(&str, &str)], expand_env: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (out, conf) = validate_server(dir.path(), docs, env, expand_env);
    assert_eq!(
        out.code,
        0,
        "sigil-server validate refused\n{conf}\n{}",
        out.all()
    );
    validate_agent(dir.path(), docs);
}

/// Writes a kubeconfig under `root` for the plugins' clients; its path.
fn fake_kubeconfig(root: &Path) -> PathBuf {
    let kubeconfig = root.join("kubeconfig");
    fs::write(&kubeconfig, KUBECONFIG).unwrap();
    kubeconfig
}

/// Runs `sigil-server validate` on the rendered server.conf of `docs`,
/// with its in-pod paths under `root`; the result and the configuration.
fn validate_server(
    root: &Path,
    docs: &[Value],
    env: &[(&str, &str)],
    expand_env: bool,
) -> (CmdResult, String) {
    let kubeconfig = fake_kubeconfig(root);
    let k = kubeconfig.display();

    // The server: both Kubernetes plugins get the kubeconfig.
    let server_conf = find(docs, "ConfigMap", "sigil-server")["data"]["server.conf"]
        .as_str()
        .unwrap();
    let mut conf = relocate(server_conf, root);
    conf = replace_once(
        &conf,
        "service_account_allow_list = [",
        &format!(
            "kube_config_file = \"{k}\"\n                        service_account_allow_list = ["
        ),
    );
    conf = replace_once(
        &conf,
        "format = \"pem\"",
        &format!("format = \"pem\"\n                        kubeconfig_path = \"{k}\""),
    );
    if conf.contains("kube_config_file = \"\"") {
        // pod_certificates: in-cluster credentials in the pod.
        conf = replace_once(
            &conf,
            "kube_config_file = \"\"",
            &format!("kube_config_file = \"{k}\""),
        );
    }
    fs::create_dir_all(root.join("run/sigil/data")).unwrap();
    fs::create_dir_all(root.join("tmp/spire-server/private")).unwrap();
    let path = root.join("server.conf");
    fs::write(&path, &conf).unwrap();
    let mut cmd = Command::new(sigil_testkit::bin("sigil-server"));
    cmd.args(["validate", "-config", path.to_str().unwrap()]);
    if expand_env {
        cmd.arg("-expandEnv");
    }
    let out = result(cmd.envs(env.iter().copied()).output().unwrap());
    (out, conf)
}

/// Runs `sigil-agent validate` on the rendered agent.conf of `docs`, with
/// its in-pod paths under `root`, and asserts it passes.
fn validate_agent(root: &Path, docs: &[Value]) {
    // Its trust bundle (a CA certificate) where the ConfigMap is mounted,
    // and the projected token.
    let agent_conf = find(docs, "ConfigMap", "sigil-agent")["data"]["agent.conf"]
        .as_str()
        .unwrap();
    let conf = relocate(agent_conf, root);
    let ca = rcgen::generate_simple_self_signed(vec!["ca".to_owned()]).unwrap();
    fs::create_dir_all(root.join("run/sigil/bundle")).unwrap();
    fs::write(root.join("run/sigil/bundle/bundle.crt"), ca.cert.pem()).unwrap();
    fs::create_dir_all(root.join("run/kubelet-ca")).unwrap();
    fs::write(root.join("run/kubelet-ca/ca.crt"), ca.cert.pem()).unwrap();
    fs::create_dir_all(root.join("var/run/secrets/tokens")).unwrap();
    fs::write(root.join("var/run/secrets/tokens/spire-agent"), "token").unwrap();
    fs::create_dir_all(root.join("var/run/secrets/kubernetes.io/serviceaccount")).unwrap();
    fs::write(
        root.join("var/run/secrets/kubernetes.io/serviceaccount/token"),
        "token",
    )
    .unwrap();
    fs::create_dir_all(root.join("run/sigil/sockets")).unwrap();
    fs::create_dir_all(root.join("run/sigil/data")).unwrap();
    let path = root.join("agent.conf");
    fs::write(&path, &conf).unwrap();
    let out = result(
        Command::new(sigil_testkit::bin("sigil-agent"))
            .args(["validate", "-config", path.to_str().unwrap()])
            .env("MY_NODE_NAME", "node-1")
            .output()
            .unwrap(),
    );
    assert_eq!(
        out.code,
        0,
        "sigil-agent validate refused\n{conf}\n{}",
        out.all()
    );
}

#[test]
fn the_rendered_configs_pass_validate() {
    let Some(helm) = Helm::find() else {
        return;
    };
    let docs = helm.template(None);
    validate_configs(&docs, &[], false);

    let pg = helm.values_file("postgres.yaml", POSTGRES_VALUES);
    let docs = helm.template(Some(&pg));
    let conf = find(&docs, "ConfigMap", "sigil-server")["data"]["server.conf"]
        .as_str()
        .unwrap();
    assert!(conf.contains("database_type = \"postgres\""), "{conf}");
    validate_configs(
        &docs,
        &[(
            "SIGIL_DATASTORE_CONNECTION_STRING",
            "postgres://sigil:secret@db.example.com:5432/sigil?sslmode=require",
        )],
        true,
    );
}

#[test]
fn pod_certificates_values_render_the_signer_block_into_server_conf() {
    let Some(helm) = Helm::find() else {
        return;
    };
    let conf_of = |docs: &[Value]| {
        find(docs, "ConfigMap", "sigil-server")["data"]["server.conf"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // Off by default: no block, no RBAC.
    let docs = helm.template(None);
    assert!(!conf_of(&docs).contains("pod_certificates"));
    assert!(!kinds(&docs).iter().any(|k| k.contains("pod-certificates")));

    let pc = helm.values_file("pod-certificates.yaml", POD_CERTIFICATES_VALUES);
    let docs = helm.template(Some(&pc));
    let conf = conf_of(&docs);
    let block = concat!(
        "    pod_certificates {\n",
        "        signer_name = \"spiffe.io/x509-svid\"\n",
        "        kube_config_file = \"\"\n",
        "        default_spiffe_id = false\n",
        "        cluster_name = \"kubernetes\"\n",
        "        cluster_domain = \"cluster.local\"\n",
        "        class_name = \"team-a\"\n",
        "    }\n",
        "}\n",
    );
    assert!(conf.starts_with("server {\n"), "{conf}");
    let server_block = &conf[..conf.find("\nplugins {").unwrap()];
    assert!(server_block.ends_with(block), "{conf}");
    let signer_role = find(&docs, "ClusterRole", "sigil-server-pod-certificates");
    let signers = signer_role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"] == json!(["signers"]))
        .unwrap();
    assert_eq!(signers["resourceNames"], json!(["spiffe.io/x509-svid"]));
    let docs_custom = helm.template_with(&[
        "--values",
        pc.to_str().unwrap(),
        "--set",
        "server.podCertificates.signerName=example.com/workloads",
    ]);
    assert!(conf_of(&docs_custom).contains("signer_name = \"example.com/workloads\""));
    let role = find(&docs_custom, "ClusterRole", "sigil-server-pod-certificates");
    assert!(
        role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["resourceNames"] == json!(["example.com/workloads"]))
    );

    let dir = tempfile::tempdir().unwrap();
    let (out, conf) = validate_server(dir.path(), &docs, &[], false);
    assert_eq!(
        out.code,
        0,
        "sigil-server validate refused\n{conf}\n{}",
        out.all()
    );
}

/// A token of service account `sa` of the release namespace, for the API
/// server's own audience (TokenRequest without a bound object).
fn service_account_token(kube: &KubeControlPlane, sa: &str) -> String {
    let tr = kube.request_ok(
        "POST",
        &format!("/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{sa}/token"),
        Some(&json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": { "expirationSeconds": 3600 },
        })),
    );
    tr["status"]["token"].as_str().unwrap().to_owned()
}

/// The SPIFFE IDs of the server's entries, sorted, and the entries.
fn server_entries(td: &TrustDomain) -> (Vec<String>, Vec<Value>) {
    let r = td.server_cli(&["entry", "show", "-output", "json"]).ok();
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let entries = v["entries"].as_array().cloned().unwrap_or_default();
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
    (ids, entries)
}

/// The chart installed in a real kube-apiserver (CRDs, RBAC, the default
/// ClusterSPIFFEID), then sigil-controller-manager run with the rendered
/// ControllerManagerConfig (only the admin socket path moved to a test
/// server's) and the credentials of the server's service account: the
/// chart's RBAC is enough for it to watch, to register the pod the default
/// ClusterSPIFFEID selects, and to write that object's status; the release
/// namespace is ignored. No kubelet or pod runs here: pods are API objects.
#[test]
fn the_controller_with_the_chart_config_and_rbac_registers_pods() {
    let Some(helm) = Helm::find() else {
        return;
    };
    let Some(kube) = KubeControlPlane::start() else {
        return;
    };
    kube.create_namespace(NAMESPACE);
    let docs = helm.template_with(&["--include-crds"]);
    let crds = crds_of(&docs);
    create_crds(&kube, &crds);
    let objects = objects_of(&docs);
    create_all(&kube, &objects, &crds, false);

    kube.create_namespace("team-a");
    kube.create_service_account("team-a", "web");
    let node_uid = kube.create_node("node-1", &[]);
    for (ns, name, sa) in [
        ("team-a", "web-0", "web"),
        (NAMESPACE, "agent-0", "sigil-agent"),
    ] {
        kube.create_pod(ns, name, sa, "node-1", &[], &[("app", "app:1")]);
        kube.set_pod_status(ns, name, &json!({ "phase": "Running" }));
    }

    let mut td = TrustDomain::new();
    td.start_server();
    let text =
        find(&objects, "ConfigMap", "sigil-controller-manager")["data"]["controller-manager.yaml"]
            .as_str()
            .unwrap();
    let socket = admin_socket(&objects);
    let config = replace_once(text, &socket, td.server_socket().to_str().unwrap());
    // The chart's health port, moved to a free loopback port for the test.
    let health_port = sigil_testkit::free_port();
    let config = replace_once(
        &config,
        "healthProbeBindAddress: :8083",
        &format!("healthProbeBindAddress: 127.0.0.1:{health_port}"),
    );
    let config_path = td.path().join("controller-manager.yaml");
    fs::write(&config_path, config).unwrap();
    let kubeconfig = td.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    let admin = fs::read_to_string(&kubeconfig).unwrap();
    let token = service_account_token(&kube, "sigil-server");
    fs::write(
        &kubeconfig,
        replace_once(&admin, kube.admin_token(), &token),
    )
    .unwrap();
    let mut cmd = Command::new(sigil_testkit::bin("sigil-controller-manager"));
    cmd.arg("--config")
        .arg(&config_path)
        .arg("--kubeconfig")
        .arg(&kubeconfig);
    let controller = td.spawn_process("controller-manager", cmd);

    let want = ["spiffe://example.org/ns/team-a/sa/web".to_owned()];
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("the pod's entry", Duration::from_secs(30), || {
            let (ids, entries) = server_entries(&td);
            (ids == want).then_some(entries)
        })
    }));
    let entries = found.unwrap_or_else(|e| {
        td.dump_logs();
        std::panic::resume_unwind(e)
    });
    assert_eq!(
        entries[0]["parent_id"]["path"],
        format!("/spire/agent/k8s_psat/kubernetes/{node_uid}")
    );
    let status = wait_for(
        "the status of sigil-default",
        Duration::from_secs(15),
        || {
            let csid = kube.request_ok(
                "GET",
                "/apis/spire.spiffe.io/v1alpha1/clusterspiffeids/sigil-default",
                None,
            );
            (csid["status"]["stats"]["entriesToSet"] == 1).then(|| csid["status"].clone())
        },
    );
    assert_eq!(status["stats"]["podsSelected"], 1, "{status:#}");
    assert!(
        td.process_running(controller),
        "the controller kept running"
    );
    // The paths the chart's probes call answer.
    for path in ["/healthz", "/readyz"] {
        let status = ureq::get(&format!("http://127.0.0.1:{health_port}{path}"))
            .call()
            .unwrap()
            .status();
        assert_eq!(status, 200, "{path}");
    }
}

/// Values whose content is free-form (passed through to Kubernetes or to
/// a ClusterSPIFFEID spec): documented as a whole.
const FREE_FORM_VALUES: [&str; 9] = [
    "server.podSecurityContext",
    "server.securityContext",
    "server.livenessProbe",
    "server.readinessProbe",
    "controllerManager.securityContext",
    "agent.securityContext",
    "agent.livenessProbe",
    "agent.readinessProbe",
    "agent.updateStrategy",
];

fn value_keys(prefix: &str, v: &Value, out: &mut Vec<String>) {
    match v.as_object() {
        Some(map) if !map.is_empty() && !FREE_FORM_VALUES.contains(&prefix) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                value_keys(&key, v, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

#[test]
fn the_chart_readme_documents_every_value() {
    let chart = chart_dir();
    let values: Value =
        serde_saphyr::from_str(&fs::read_to_string(chart.join("values.yaml")).unwrap()).unwrap();
    let readme = fs::read_to_string(chart.join("README.md")).unwrap();
    let mut keys = Vec::new();
    value_keys("", &values, &mut keys);
    assert!(keys.contains(
        &"controllerManager.identities.clusterSPIFFEIDs.default.spiffeIDTemplate".to_owned()
    ));
    assert!(keys.contains(&"server.podCertificates.signerName".to_owned()));
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !readme.contains(&format!("| `{k}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "values missing from the README's table: {missing:?}"
    );
}
