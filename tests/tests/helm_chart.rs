//! The Helm chart in `deploy/helm/sigil`, checked with a real helm v4
//! (`SIGIL_TEST_HELM_BIN`, the directory printed by `.ci/install-helm.sh`):
//! `helm lint` (also `--strict`) passes; `helm template` renders with the
//! default values and with PostgreSQL values; every rendered manifest is
//! accepted by a real kube-apiserver (testkit's control plane,
//! `SIGIL_TEST_KUBE_BIN`) in a dry-run create with strict field validation;
//! the RBAC it grants is what the plugins need and no more (checked with
//! SubjectAccessReviews); and the rendered `server.conf` / `agent.conf` pass
//! `sigil-server validate` / `sigil-agent validate`, with the paths that only
//! exist in a pod moved into a temporary directory.
//!
//! Without the binaries the tests print a skip line (outside CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use sigil_testkit::CmdResult;
use sigil_testkit::kube::KubeControlPlane;

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
        let chart = chart_dir();
        let mut args = vec![
            "template",
            RELEASE,
            chart.to_str().unwrap(),
            "--namespace",
            NAMESPACE,
        ];
        if let Some(v) = values {
            args.extend(["--values", v.to_str().unwrap()]);
        }
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

/// The API path of an object's collection, and whether it is namespaced.
fn collection(doc: &Value) -> String {
    let api_version = doc["apiVersion"].as_str().unwrap();
    let (plural, namespaced) = match doc["kind"].as_str().unwrap() {
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
    };
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

/// Creates every document with `dryRun=All` and strict field validation
/// (unknown or duplicate fields are errors), or for real when `dry_run` is
/// false.
fn create_all(kube: &KubeControlPlane, docs: &[Value], dry_run: bool) {
    for doc in docs {
        let query = if dry_run {
            "?dryRun=All&fieldValidation=Strict&fieldManager=helm-chart-test"
        } else {
            "?fieldValidation=Strict&fieldManager=helm-chart-test"
        };
        let path = format!("{}{query}", collection(doc));
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
                collection(doc),
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
            "ClusterRole/sigil-server",
            "ClusterRoleBinding/sigil-agent",
            "ClusterRoleBinding/sigil-server",
            "ConfigMap/sigil-agent",
            "ConfigMap/sigil-bundle",
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
fn every_rendered_manifest_is_accepted_by_the_api_server() {
    let Some(helm) = Helm::find() else {
        return;
    };
    let Some(kube) = KubeControlPlane::start() else {
        return;
    };
    kube.create_namespace(NAMESPACE);
    let defaults = helm.template(None);
    let pg = helm.values_file("postgres.yaml", POSTGRES_VALUES);
    let postgres = helm.template(Some(&pg));
    create_all(&kube, &defaults, true);
    create_all(&kube, &postgres, true);

    // For real this time, to check what the RBAC grants.
    create_all(&kube, &defaults, false);
    // (service account, verb, resource, namespace, name, allowed)
    let tokenreviews = "tokenreviews.authentication.k8s.io";
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
    for (sa, verb, resource, ns, name, want) in cases {
        assert_eq!(
            allowed(&kube, sa, verb, resource, ns, name),
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
    let root = dir.path();
    let kubeconfig = root.join("kubeconfig");
    fs::write(&kubeconfig, KUBECONFIG).unwrap();
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
    assert_eq!(
        out.code,
        0,
        "sigil-server validate refused\n{conf}\n{}",
        out.all()
    );

    // The agent: its trust bundle (a CA certificate) where the ConfigMap is
    // mounted, and the projected token.
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
