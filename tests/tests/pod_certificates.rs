//! sigil-server as the Kubernetes Pod Certificates signer, against a real
//! kube-apiserver (testkit's control plane; `SIGIL_TEST_KUBE_BIN`, required
//! in CI) and a real sigil-server configured with a `pod_certificates`
//! block.
//!
//! Requests are created as the kubelet creates them (a fresh key, a real
//! PKCS#10 CSR as `stubPKCS10Request`, the pod's name and UID, its service
//! account's and node's names and UIDs, the signer, `maxExpirationSeconds`);
//! there is no kubelet, so nothing mounts the result: the tests read the
//! request's status and the ClusterTrustBundle through the API, as the
//! kubelet would. The server runs as a service account bound to the
//! ClusterRole docs/compatibility.md documents, so the RBAC it needs is
//! proved sufficient.
//!
//! Without the binaries the tests print a skip line (outside CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{Value, json};
use sigil_crypto::key::Signer as _;
use sigil_crypto::{KeyType, SoftwareKey};
use sigil_testkit::kube::KubeControlPlane;
use sigil_testkit::{Options, TrustDomain, wait_for};
use x509_parser::prelude::{FromDer, X509Certificate};

const SIGNER: &str = "spiffe.io/x509-svid";
const BUNDLE: &str = "spiffe.io:x509-svid:example.org";
const PCRS: &str = "/apis/certificates.k8s.io/v1/namespaces/team-a/podcertificaterequests";

fn b64(der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(der)
}

fn apply_crd(kube: &KubeControlPlane) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/helm/sigil/crds/spire.spiffe.io_clusterspiffeids.yaml"
    );
    let crd: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
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

/// The ClusterRole docs/compatibility.md gives the server, bound to a
/// service account whose token goes into the kubeconfig written to `path`.
fn write_server_kubeconfig(kube: &KubeControlPlane, path: &Path) {
    kube.create_namespace("spire");
    kube.create_service_account("spire", "sigil-server");
    kube.request_ok(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        Some(&json!({
            "metadata": { "name": "sigil-server-pod-certificates" },
            "rules": [
                { "apiGroups": ["certificates.k8s.io"], "resources": ["podcertificaterequests"], "verbs": ["get", "list", "watch"] },
                { "apiGroups": ["certificates.k8s.io"], "resources": ["podcertificaterequests/status"], "verbs": ["update"] },
                { "apiGroups": ["certificates.k8s.io"], "resources": ["signers"], "resourceNames": [SIGNER], "verbs": ["sign", "attest"] },
                { "apiGroups": ["certificates.k8s.io"], "resources": ["clustertrustbundles"], "verbs": ["get", "create", "update"] },
                { "apiGroups": [""], "resources": ["pods", "serviceaccounts", "nodes", "namespaces"], "verbs": ["get"] },
                { "apiGroups": ["spire.spiffe.io"], "resources": ["clusterspiffeids"], "verbs": ["list"] },
            ],
        })),
    );
    kube.request_ok(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        Some(&json!({
            "metadata": { "name": "sigil-server-pod-certificates" },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "sigil-server-pod-certificates" },
            "subjects": [{ "kind": "ServiceAccount", "name": "sigil-server", "namespace": "spire" }],
        })),
    );
    let tr = kube.request_ok(
        "POST",
        "/api/v1/namespaces/spire/serviceaccounts/sigil-server/token",
        Some(&json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": { "expirationSeconds": 3600 },
        })),
    );
    let token = tr["status"]["token"].as_str().unwrap();
    std::fs::write(
        path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: {url}
    certificate-authority-data: {ca}
users:
- name: sigil-server
  user:
    token: {token}
contexts:
- name: c
  context:
    cluster: c
    user: sigil-server
current-context: c
",
            url = kube.url(),
            ca = b64(kube.ca_pem().as_bytes()),
        ),
    )
    .unwrap();
}

/// A server signing for [`SIGNER`], with `default_spiffe_id` as given.
fn start_server(kube: &KubeControlPlane, dir: &Path, default_id: bool) -> TrustDomain {
    let kubeconfig = dir.join("server-kubeconfig");
    write_server_kubeconfig(kube, &kubeconfig);
    let mut td = TrustDomain::with(Options {
        server_extra_config: format!(
            r#"    pod_certificates {{
        signer_name = "{SIGNER}"
        kube_config_file = "{k}"
        default_spiffe_id = {default_id}
    }}"#,
            k = kubeconfig.display()
        ),
        ..Options::default()
    });
    td.start_server();
    td
}

struct Cluster {
    sa_uid: String,
    node_uid: String,
}

fn cluster(kube: &KubeControlPlane) -> Cluster {
    kube.create_namespace("team-a");
    let sa_uid = kube.create_service_account("team-a", "web");
    let node_uid = kube.create_node("node-1", &[]);
    Cluster { sa_uid, node_uid }
}

fn pod(kube: &KubeControlPlane, name: &str, labels: &[(&str, &str)]) -> String {
    kube.create_pod(
        "team-a",
        name,
        "web",
        "node-1",
        labels,
        &[("app", "nginx:1.27")],
    )
}

/// The request the kubelet would create for `pod`, with `stub` as the
/// proof of possession.
fn request(c: &Cluster, name: &str, pod: &str, pod_uid: &str, stub: &[u8], max: i64) -> Value {
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "PodCertificateRequest",
        "metadata": { "name": name, "namespace": "team-a" },
        "spec": {
            "signerName": SIGNER,
            "podName": pod,
            "podUID": pod_uid,
            "serviceAccountName": "web",
            "serviceAccountUID": c.sa_uid,
            "nodeName": "node-1",
            "nodeUID": c.node_uid,
            "maxExpirationSeconds": max,
            "stubPKCS10Request": b64(stub),
        },
    })
}

/// Creates a request for `pod` with a fresh key and a real CSR; returns
/// the key.
fn create_request(
    kube: &KubeControlPlane,
    c: &Cluster,
    name: &str,
    pod: &str,
    pod_uid: &str,
    max: i64,
) -> SoftwareKey {
    let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
    let csr = sigil_crypto::create_csr(&key, None).unwrap();
    kube.request_ok(
        "POST",
        PCRS,
        Some(&request(c, name, pod, pod_uid, &csr, max)),
    );
    key
}

/// Waits for a terminal condition on request `name`; returns the request.
fn wait_terminal(kube: &KubeControlPlane, td: &TrustDomain, name: &str) -> Value {
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(
            &format!("a terminal condition on {name}"),
            Duration::from_secs(30),
            || {
                let pcr = kube.request_ok("GET", &format!("{PCRS}/{name}"), None);
                let terminal = pcr["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| !cs.is_empty());
                terminal.then_some(pcr)
            },
        )
    }));
    found.unwrap_or_else(|e| {
        td.dump_logs();
        std::panic::resume_unwind(e)
    })
}

fn condition(pcr: &Value) -> (String, String, String) {
    let c = &pcr["status"]["conditions"][0];
    (
        c["type"].as_str().unwrap().to_owned(),
        c["reason"].as_str().unwrap().to_owned(),
        c["message"].as_str().unwrap_or_default().to_owned(),
    )
}

fn bundle_certs(kube: &KubeControlPlane) -> Option<Vec<Vec<u8>>> {
    let (status, ctb) = kube.request(
        "GET",
        &format!("/apis/certificates.k8s.io/v1/clustertrustbundles/{BUNDLE}"),
        None,
    );
    if status == 404 {
        return None;
    }
    assert_eq!(status, 200, "{ctb:#}");
    assert_eq!(ctb["spec"]["signerName"], SIGNER, "{ctb:#}");
    let pem = ctb["spec"]["trustBundle"].as_str().unwrap();
    Some(sigil_spiffe::bundle::certificates_from_pem(pem.as_bytes()).unwrap())
}

fn unix(rfc3339: &Value) -> i64 {
    time::OffsetDateTime::parse(
        rfc3339.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp()
}

/// Checks an issued request: the chain's leaf carries `want_id`, verifies
/// against the ClusterTrustBundle, certifies `key`, and the status times
/// match the certificate and the lifetime rule (`lifetime` seconds,
/// refresh at half-life).
fn check_issued(
    kube: &KubeControlPlane,
    pcr: &Value,
    key: &SoftwareKey,
    want_id: &str,
    lifetime: i64,
) {
    let (ty, reason, message) = condition(pcr);
    assert_eq!(
        (ty.as_str(), reason.as_str()),
        ("Issued", "Issued"),
        "{pcr:#}"
    );
    assert!(message.contains(want_id), "{message}");
    let st = &pcr["status"];
    let chain = sigil_spiffe::bundle::certificates_from_pem(
        st["certificateChain"].as_str().unwrap().as_bytes(),
    )
    .unwrap();
    let roots = bundle_certs(kube).expect("the ClusterTrustBundle exists");
    let id = sigil_crypto::x509::verify_chain(&chain, &roots, SystemTime::now()).unwrap();
    assert_eq!(id.as_str(), want_id);
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    assert_eq!(leaf.public_key().raw, key.public_key_der());
    let nb = leaf.validity().not_before.timestamp();
    let na = leaf.validity().not_after.timestamp();
    assert_eq!(unix(&st["notBefore"]), nb);
    assert_eq!(unix(&st["notAfter"]), na);
    assert_eq!(na - nb, lifetime, "{st:#}");
    assert_eq!(unix(&st["beginRefreshAt"]), nb + lifetime / 2, "{st:#}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((nb - now).abs() < 120, "notBefore {nb} vs now {now}");
}

#[test]
fn a_pod_gets_an_svid_from_its_cluster_spiffeid_that_chains_to_the_published_cluster_trust_bundle()
{
    let Some(kube) = KubeControlPlane::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    apply_crd(&kube);
    let c = cluster(&kube);
    kube.request_ok(
        "POST",
        "/apis/spire.spiffe.io/v1alpha1/clusterspiffeids",
        Some(&json!({
            "apiVersion": "spire.spiffe.io/v1alpha1",
            "kind": "ClusterSPIFFEID",
            "metadata": { "name": "web" },
            "spec": {
                "spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}/app/{{ .PodMeta.Labels.app }}",
                "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "team-a" } },
                "podSelector": { "matchLabels": { "app": "web" } },
                "ttl": "2h",
            },
        })),
    );
    let td = start_server(&kube, dir.path(), false);
    let uid = pod(&kube, "web-0", &[("app", "web")]);

    // The ClusterSPIFFEID's 2h ttl, within the request's 24h maximum.
    let key = create_request(&kube, &c, "web-0-a", "web-0", &uid, 86400);
    let pcr = wait_terminal(&kube, &td, "web-0-a");
    check_issued(
        &kube,
        &pcr,
        &key,
        "spiffe://example.org/ns/team-a/sa/web/app/web",
        2 * 3600,
    );

    // A request allowing less than the ttl gets exactly its maximum.
    let key = create_request(&kube, &c, "web-0-b", "web-0", &uid, 3600);
    let pcr = wait_terminal(&kube, &td, "web-0-b");
    check_issued(
        &kube,
        &pcr,
        &key,
        "spiffe://example.org/ns/team-a/sa/web/app/web",
        3600,
    );

    // The bundle is the server's: the same authorities `bundle show` prints.
    let shown = td.server_cli(&["bundle", "show"]).ok().stdout;
    assert_eq!(
        bundle_certs(&kube).unwrap(),
        sigil_spiffe::bundle::certificates_from_pem(shown.as_bytes()).unwrap()
    );
}

#[test]
fn requests_with_no_identity_or_for_another_pod_are_denied_with_a_reason_other_signers_requests_are_untouched_and_a_bad_proof_never_gets_in()
 {
    let Some(kube) = KubeControlPlane::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    apply_crd(&kube);
    let c = cluster(&kube);
    kube.request_ok(
        "POST",
        "/apis/spire.spiffe.io/v1alpha1/clusterspiffeids",
        Some(&json!({
            "apiVersion": "spire.spiffe.io/v1alpha1",
            "kind": "ClusterSPIFFEID",
            "metadata": { "name": "web" },
            "spec": {
                "spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/web",
                "podSelector": { "matchLabels": { "app": "web" } },
            },
        })),
    );
    let td = start_server(&kube, dir.path(), false);
    let db_uid = pod(&kube, "db-0", &[("app", "db")]);
    let web_uid = pod(&kube, "web-0", &[("app", "web")]);

    // A request for another signer, filed first: never touched.
    let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
    let csr = sigil_crypto::create_csr(&key, None).unwrap();
    let mut other = request(&c, "web-0-other", "web-0", &web_uid, &csr, 86400);
    other["spec"]["signerName"] = json!("other.example.com/signer");
    kube.request_ok("POST", PCRS, Some(&other));

    // No ClusterSPIFFEID selects db-0 and the default rule is off.
    create_request(&kube, &c, "db-0", "db-0", &db_uid, 86400);
    let pcr = wait_terminal(&kube, &td, "db-0");
    let (ty, reason, message) = condition(&pcr);
    assert_eq!((ty.as_str(), reason.as_str()), ("Denied", "NoIdentity"));
    assert!(message.contains("team-a/db-0"), "{message}");
    assert!(pcr["status"]["certificateChain"].is_null(), "{pcr:#}");

    // A request naming web-0 with another pod's UID.
    create_request(&kube, &c, "web-0-stolen", "web-0", &db_uid, 86400);
    let pcr = wait_terminal(&kube, &td, "web-0-stolen");
    assert_eq!(condition(&pcr).1, "PodUIDMismatch", "{pcr:#}");
    // A pod that does not exist.
    create_request(&kube, &c, "ghost", "ghost-0", &web_uid, 86400);
    let pcr = wait_terminal(&kube, &td, "ghost");
    assert_eq!(condition(&pcr).1, "PodNotFound", "{pcr:#}");

    let other = kube.request_ok("GET", &format!("{PCRS}/web-0-other"), None);
    assert!(other["status"]["conditions"].is_null(), "{other:#}");

    // A CSR whose signature does not verify is refused by the API server
    // at creation: no request exists for the signer to see (the signer's
    // own refusal is the unit test
    // podcert::pop::a_stub_csr_with_a_bad_signature_is_refused_as_invalid_proof).
    let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
    let mut csr = sigil_crypto::create_csr(&key, None).unwrap();
    let last = csr.len() - 1;
    csr[last] ^= 1;
    let (status, body) = kube.request(
        "POST",
        PCRS,
        Some(&request(&c, "web-0-bad", "web-0", &web_uid, &csr, 86400)),
    );
    assert_eq!(status, 422, "{body:#}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("stubPKCS10Request"),
        "{body:#}"
    );
    let (status, _) = kube.request("GET", &format!("{PCRS}/web-0-bad"), None);
    assert_eq!(status, 404);

    // The v1beta1 shape (pkixPublicKey + proofOfPossession) is not part of
    // v1: the API server refuses it without a stub CSR.
    let sig = key
        .sign_sha256_digest(&aws_lc_rs_digest(web_uid.as_bytes()))
        .unwrap();
    let mut beta = request(&c, "web-0-beta", "web-0", &web_uid, &[], 86400);
    let spec = beta["spec"].as_object_mut().unwrap();
    spec.remove("stubPKCS10Request");
    spec.insert("pkixPublicKey".into(), b64(key.public_key_der()).into());
    spec.insert("proofOfPossession".into(), b64(&sig).into());
    let (status, body) = kube.request("POST", PCRS, Some(&beta));
    assert_eq!(status, 422, "{body:#}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("exactly one of (stubPKCS10Request) or (pkixPublicKey, proofOfPossession)"),
        "{body:#}"
    );
    // The API shape the signer is written for: v1 serves the requests, their
    // status and ClusterTrustBundles by default; its spec has only the stub
    // CSR (required); v1beta1 is not served.
    let v1 = kube.request_ok("GET", "/apis/certificates.k8s.io/v1", None);
    let names: Vec<&str> = v1["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for want in [
        "podcertificaterequests",
        "podcertificaterequests/status",
        "clustertrustbundles",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }
    let (status, _) = kube.request("GET", "/apis/certificates.k8s.io/v1beta1", None);
    assert_eq!(status, 404);
    let openapi = kube.request_ok("GET", "/openapi/v3/apis/certificates.k8s.io/v1", None);
    let spec =
        &openapi["components"]["schemas"]["io.k8s.api.certificates.v1.PodCertificateRequestSpec"];
    assert!(
        spec["properties"]["stubPKCS10Request"].is_object(),
        "{spec:#}"
    );
    assert!(spec["properties"]["pkixPublicKey"].is_null(), "{spec:#}");
    assert!(
        spec["required"]
            .as_array()
            .unwrap()
            .contains(&json!("stubPKCS10Request")),
        "{spec:#}"
    );
}

fn aws_lc_rs_digest(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[test]
fn the_cluster_trust_bundle_follows_prepare_and_activate_and_new_certificates_chain_to_the_new_authority()
 {
    let Some(kube) = KubeControlPlane::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // No ClusterSPIFFEID CRD at all: the default rule gives the ID.
    let c = cluster(&kube);
    let td = start_server(&kube, dir.path(), true);
    let uid = pod(&kube, "web-0", &[]);

    let initial = wait_for("the ClusterTrustBundle", Duration::from_secs(30), || {
        bundle_certs(&kube)
    });
    assert_eq!(initial.len(), 1);

    let out = td
        .server_cli(&["localauthority", "x509", "prepare", "-output", "json"])
        .ok();
    let prepared: Value = serde_json::from_str(&out.stdout).unwrap();
    let id = prepared["prepared_authority"]["authority_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let after_prepare = wait_for(
        "the prepared authority published",
        Duration::from_secs(30),
        || bundle_certs(&kube).filter(|b| b.len() == 2),
    );
    assert!(after_prepare.contains(&initial[0]));
    let new: Vec<Vec<u8>> = after_prepare
        .iter()
        .filter(|c| **c != initial[0])
        .cloned()
        .collect();

    td.server_cli(&["localauthority", "x509", "activate", "-authorityID", &id])
        .ok();
    let key = create_request(&kube, &c, "web-0", "web-0", &uid, 86400);
    let pcr = wait_terminal(&kube, &td, "web-0");
    // Default x509 SVID TTL (1h) in the default rule.
    check_issued(
        &kube,
        &pcr,
        &key,
        "spiffe://example.org/ns/team-a/sa/web",
        3600,
    );
    // Issued by the new authority: it verifies against it alone.
    let chain = sigil_spiffe::bundle::certificates_from_pem(
        pcr["status"]["certificateChain"]
            .as_str()
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    sigil_crypto::x509::verify_chain(&chain, &new, SystemTime::now()).unwrap();
    assert!(
        sigil_crypto::x509::verify_chain(&chain, &initial, SystemTime::now()).is_err(),
        "the new certificate must not chain to the old authority"
    );
}

/// `sigil-server validate` checks the block: the signer name's syntax and
/// the kubeconfig (read, not connected to). Needs no cluster.
#[test]
fn validate_refuses_a_bad_signer_name_and_an_unreadable_kubeconfig_and_accepts_a_good_block() {
    let validate = |block: &str| {
        let td = TrustDomain::with(Options {
            server_extra_config: block.to_owned(),
            ..Options::default()
        });
        let out = std::process::Command::new(sigil_testkit::bin("sigil-server"))
            .args(["validate", "-config"])
            .arg(td.server_conf())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = validate(
        r#"pod_certificates {
        signer_name = "kubernetes.io/x509-svid"
    }"#,
    );
    assert!(
        !ok && out.contains("signer_name") && out.contains("reserved"),
        "{out}"
    );
    let (ok, out) = validate(
        r#"pod_certificates {
        signer_name = "spiffe.io/x509-svid"
        kube_config_file = "/nonexistent/kubeconfig"
    }"#,
    );
    assert!(
        !ok && out.contains("pod_certificates") && out.contains("/nonexistent/kubeconfig"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://192.0.2.1:6443
contexts:
- name: c
  context:
    cluster: c
    user: u
users:
- name: u
  user:
    token: t
current-context: c
",
    )
    .unwrap();
    let (ok, out) = validate(&format!(
        r#"pod_certificates {{
        signer_name = "spiffe.io/x509-svid"
        kube_config_file = "{}"
        default_spiffe_id = true
    }}"#,
        kubeconfig.display()
    ));
    assert!(ok, "{out}");
}
