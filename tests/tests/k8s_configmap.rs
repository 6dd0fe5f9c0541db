//! BundlePublisher `k8s_configmap` end to end, against a real
//! kube-apiserver (testkit's control plane; `SIGIL_TEST_KUBE_BIN`): a real
//! sigil-server configured as SPIRE documents the plugin keeps its trust
//! bundle in a ConfigMap key, in SPIRE's formats, through an X.509
//! authority rotation driven with the `localauthority` CLI. The ConfigMap
//! is read back through the API server, as a workload in the cluster would.
//!
//! Without the binaries the test prints a skip line (outside CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sigil_spiffe::{Bundle, TrustDomain as Td};
use sigil_testkit::kube::KubeControlPlane;
use sigil_testkit::{Options, TrustDomain, wait_for};

/// The plugin block, as SPIRE documents it: two "clusters" (the same API
/// server), one ConfigMap in `spiffe` format, one in `pem`.
fn publisher_block(kubeconfig: &Path) -> String {
    format!(
        r#"    BundlePublisher "k8s_configmap" {{
        plugin_data {{
            clusters = {{
                "example-cluster-1" = {{
                    configmap_name = "example.org"
                    configmap_key = "bundle"
                    namespace = "spire"
                    kubeconfig_path = "{k}"
                    format = "spiffe"
                }},
                "example-cluster-2" = {{
                    configmap_name = "example.org-pem"
                    configmap_key = "bundle.crt"
                    namespace = "spire"
                    kubeconfig_path = "{k}"
                    format = "pem"
                }}
            }}
        }}
    }}
"#,
        k = kubeconfig.display()
    )
}

fn configmap_key(kube: &KubeControlPlane, name: &str, key: &str) -> Option<String> {
    let (status, cm) = kube.request(
        "GET",
        &format!("/api/v1/namespaces/spire/configmaps/{name}"),
        None,
    );
    if status == 404 {
        return None;
    }
    assert_eq!(status, 200, "{cm:#}");
    cm["data"][key].as_str().map(str::to_owned)
}

fn td() -> Td {
    Td::new("example.org").unwrap()
}

/// What `sigil-server bundle show -format spiffe` prints, parsed.
fn shown_bundle(t: &TrustDomain) -> Bundle {
    let out = t.server_cli(&["bundle", "show", "-format", "spiffe"]).ok();
    Bundle::parse_jwks(&td(), out.stdout.as_bytes()).unwrap()
}

/// Waits until the ConfigMaps hold `want` (the SPIFFE document, parsed) and
/// its X.509 authorities (the PEM key).
fn wait_published(kube: &KubeControlPlane, want: &Bundle, what: &str) {
    wait_for(what, Duration::from_secs(30), || {
        let doc = configmap_key(kube, "example.org", "bundle")?;
        let got = Bundle::parse_jwks(&td(), doc.as_bytes()).unwrap();
        let pem = configmap_key(kube, "example.org-pem", "bundle.crt")?;
        let pem_certs = sigil_spiffe::bundle::certificates_from_pem(pem.as_bytes()).unwrap();
        (got == *want && pem_certs == want.x509_authorities).then_some(())
    });
}

#[test]
fn the_server_keeps_its_bundle_in_a_configmap_through_an_x509_rotation() {
    let Some(kube) = KubeControlPlane::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    kube.create_namespace("spire");
    // One ConfigMap exists already with another key, which must survive;
    // the other is created by the publisher.
    kube.request_ok(
        "POST",
        "/api/v1/namespaces/spire/configmaps",
        Some(&serde_json::json!({
            "metadata": {"name": "example.org", "namespace": "spire"},
            "data": {"other": "kept"},
        })),
    );

    let mut t = TrustDomain::with(Options {
        server_extra_plugins: publisher_block(&kubeconfig),
        ..Options::default()
    });
    t.start_server();

    let initial = shown_bundle(&t);
    assert_eq!(initial.x509_authorities.len(), 1);
    wait_published(&kube, &initial, "the initial bundle in the ConfigMaps");
    assert_eq!(
        configmap_key(&kube, "example.org", "other").as_deref(),
        Some("kept")
    );
    // The key is owned by SPIRE's field manager, as SPIRE's plugin writes it.
    let cm = kube.request_ok(
        "GET",
        "/api/v1/namespaces/spire/configmaps/example.org",
        None,
    );
    let managers: Vec<&str> = cm["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(
        managers.contains(&"spire-bundlepublisher-k8s_configmap"),
        "{managers:?}"
    );

    // Prepare: the new authority joins the bundle, and the ConfigMap.
    let out = t
        .server_cli(&["localauthority", "x509", "prepare", "-output", "json"])
        .ok();
    let prepared: Value = serde_json::from_str(&out.stdout).unwrap();
    let id = prepared["prepared_authority"]["authority_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let after_prepare = shown_bundle(&t);
    assert_eq!(after_prepare.x509_authorities.len(), 2);
    wait_published(
        &kube,
        &after_prepare,
        "the prepared authority in the ConfigMaps",
    );

    // Activate: the ConfigMap still matches what the server shows.
    t.server_cli(&["localauthority", "x509", "activate", "-authorityID", &id])
        .ok();
    let after_activate = shown_bundle(&t);
    wait_published(&kube, &after_activate, "the bundle after activation");
    assert_eq!(
        configmap_key(&kube, "example.org", "other").as_deref(),
        Some("kept")
    );
}
