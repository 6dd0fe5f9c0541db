//! The server catalog: counts, names and options are checked through the
//! same path `validate` and `run` use, with typed errors.

use std::sync::Arc;

use sigil_cli::config::{PluginDecl, Section, parse_plugins};
use sigil_plugin::catalog::{CatalogError, CountError, PluginError, Problem};
use sigil_plugin::clock::SystemClock;
use sigil_spiffe::{Bundle, JwtAuthority, TrustDomain};

use super::*;

fn ctx() -> ServerContext {
    ServerContext {
        trust_domain: TrustDomain::new("example.org").unwrap(),
        data_dir: std::env::temp_dir(),
        clock: Arc::new(SystemClock),
        join_tokens: Arc::new(DataStoreJoinTokens::default()),
    }
}

fn plugins(text: &str) -> Vec<PluginDecl> {
    let mut top = Section::parse(&format!("plugins {{\n{text}\n}}")).unwrap();
    parse_plugins(top.take_block("plugins").unwrap().unwrap().body).unwrap()
}

const BASE: &str = r#"
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "/tmp/x.sqlite3"
        }
    }
    KeyManager "memory" {
        plugin_data {}
    }
"#;

fn load(extra: &str) -> Result<Catalog, CatalogError> {
    Catalog::load(&plugins(&format!("{BASE}\n{extra}")), &ctx())
}

#[test]
fn spire_default_plugins_load_into_the_catalog() {
    let c = load(
        r#"NodeAttestor "join_token" {
        plugin_data {}
    }"#,
    )
    .unwrap();
    assert_eq!(c.datastore.database_type, "sqlite3");
    assert_eq!(c.key_manager.name(), "memory");
    assert_eq!(c.node_attestors.len(), 1);
    assert!(c.node_attestor("join_token").is_some());
    assert!(c.node_attestor("x509pop").is_none());
    assert!(c.upstream_authority.is_none());
}

#[test]
fn plugin_errors_are_typed_with_kind_name_and_problem() {
    let e = load(
        r#"NodeAttestor "aws_iid" {
        plugin_data {}
    }"#,
    )
    .unwrap_err();
    let CatalogError::Plugin(e) = e else {
        panic!("{e:?}")
    };
    assert_eq!(e.kind, "NodeAttestor");
    assert_eq!(e.plugin, "aws_iid");
    assert!(matches!(e.problem, Problem::UnknownPlugin { .. }));
    assert!(e.to_string().starts_with(
        "NodeAttestor \"aws_iid\": is not supported by sigil yet (supported: join_token"
    ));

    let e = load(
        r#"NodeAttestor "join_token" {
        plugin_data {
            x = 1
        }
    }"#,
    )
    .unwrap_err();
    assert_eq!(
        e,
        CatalogError::Plugin(PluginError::new(
            "NodeAttestor",
            "join_token",
            Problem::UnknownOption("x".into())
        ))
    );
    let e = load(
        r#"NodeAttestor "join_token" {
        plugin_data {}
    }
           NodeAttestor "join_token" {
        plugin_data {}
    }"#,
    )
    .unwrap_err();
    assert!(matches!(
        e,
        CatalogError::Plugin(PluginError {
            problem: Problem::Duplicate,
            ..
        })
    ));
}

#[test]
fn count_rules_follow_spire() {
    let e = Catalog::load(&plugins(r#"KeyManager "memory" {}"#), &ctx()).unwrap_err();
    assert!(
        matches!(
            e,
            CatalogError::Count(CountError::TooFew {
                kind: "DataStore",
                ..
            })
        ),
        "{e}"
    );
    let e = load(
        r#"KeyManager "disk" {
        plugin_data {
            keys_path = "/tmp/k.json"
        }
    }"#,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            CatalogError::Count(CountError::TooMany {
                kind: "KeyManager",
                ..
            })
        ),
        "{e}"
    );
    let e = load(r#"Notifier "k8sbundle" {}"#).unwrap_err();
    assert!(
        matches!(
            e,
            CatalogError::Count(CountError::UnsupportedType {
                kind: "Notifier",
                ..
            })
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .ends_with("this plugin type is not supported by sigil yet")
    );
    // Any number of BundlePublishers, including one with no clusters.
    load(r#"BundlePublisher "k8s_configmap" {}"#).unwrap();
    let e = load(r#"BundlePublisher "aws_s3" {}"#).unwrap_err();
    assert!(e.to_string().contains("supported: k8s_configmap"), "{e}");
    // Any number of server NodeAttestors, including none.
    load("").unwrap();
}

#[test]
fn datastore_options_spire_has_and_sigil_lacks_are_named() {
    let c = plugins(
        r#"DataStore "sql" {
            plugin_data {
                database_type = "postgres"
                connection_string = "dbname=spire"
                max_open_conns = 10
            }
        }
        KeyManager "memory" {}"#,
    );
    let e = Catalog::load(&c, &ctx()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "DataStore \"sql\": option \"max_open_conns\" in plugin_data is not supported by sigil yet"
    );
}

#[test]
fn every_builtin_name_is_listed_once_per_type() {
    for names in [
        datastore::TYPE.names(),
        keymanager::TYPE.names(),
        nodeattestor::TYPE.names(),
        upstreamauthority::TYPE.names(),
        bundlepublisher::TYPE.names(),
    ] {
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "duplicate built-in in {names:?}");
    }
}

/// `plugin_data` that builds each built-in for its conformance suite; a
/// built-in without an entry here fails the test below.
fn fixture(kind: &str, name: &str, dir: &std::path::Path) -> serde_json::Value {
    match (kind, name) {
        ("KeyManager", "memory") => serde_json::json!({}),
        ("KeyManager", "disk") => {
            let f = dir.join(format!("{}.json", uuid::Uuid::new_v4()));
            serde_json::json!({ "keys_path": f.to_string_lossy() })
        }
        ("UpstreamAuthority", "disk") => {
            use sigil_crypto::key::{KeyType, SoftwareKey};
            let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
            let now = std::time::SystemTime::now();
            let root = sigil_crypto::x509::self_signed_ca(
                &key,
                &TrustDomain::new("upstream.test").unwrap(),
                &sigil_crypto::x509::CaSubject::default(),
                now - std::time::Duration::from_secs(60),
                now + std::time::Duration::from_secs(24 * 3600),
            )
            .unwrap();
            let cert = dir.join("upstream.crt");
            let key_path = dir.join("upstream.key");
            std::fs::write(&cert, sigil_crypto::x509::pem_encode_certs(&[root])).unwrap();
            std::fs::write(&key_path, key.to_pkcs8_pem()).unwrap();
            serde_json::json!({
                "cert_file_path": cert.to_string_lossy(),
                "key_file_path": key_path.to_string_lossy(),
            })
        }
        _ => panic!("no conformance fixture for {kind} {name:?}: add one here"),
    }
}

#[tokio::test]
async fn every_builtin_passes_its_types_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let c = ctx();
    for name in keymanager::TYPE.names() {
        let data = || fixture("KeyManager", name, dir.path());
        sigil_plugin::keymanager::conformance::run_all(|| async {
            keymanager::TYPE.build(name, &data(), &c).unwrap()
        })
        .await;
    }
    for name in upstreamauthority::TYPE.names() {
        let ua = upstreamauthority::TYPE
            .build(name, &fixture("UpstreamAuthority", name, dir.path()), &c)
            .unwrap();
        sigil_plugin::upstreamauthority::conformance::run_all(ua, &c.trust_domain).await;
    }
    // The DataStore's suite (sigil-datastore/tests/suite.rs) runs every
    // case on every database type the `sql` built-in opens.
    assert_eq!(datastore::TYPE.names(), ["sql"]);
    // NodeAttestor pairs need both halves: each plugin's tests run
    // `sigil_plugin::nodeattestor::conformance::run_all`. Every built-in
    // must be listed here.
    let mut covered = vec!["join_token", "x509pop", "k8s_psat"];
    covered.sort_unstable();
    let mut names = nodeattestor::TYPE.names();
    names.sort_unstable();
    assert_eq!(names, covered, "a NodeAttestor without a conformance run");
    assert_eq!(
        bundlepublisher::TYPE.names(),
        ["k8s_configmap"],
        "a BundlePublisher without a conformance run"
    );
    k8s_configmap_passes_the_bundlepublisher_suite(&c, dir.path()).await;
}

/// Two different bundles of `td`: X.509 and JWT authorities, as a SPIFFE
/// document reads them back (no `expires_at`).
pub(crate) fn two_bundles(td: &TrustDomain) -> (Bundle, Bundle) {
    use sigil_crypto::key::{KeyType, Signer as _, SoftwareKey};
    let now = std::time::SystemTime::now();
    let ca = |kt| {
        let key = SoftwareKey::generate(kt).unwrap();
        sigil_crypto::x509::self_signed_ca(
            &key,
            td,
            &sigil_crypto::x509::CaSubject::default(),
            now - std::time::Duration::from_secs(60),
            now + std::time::Duration::from_secs(24 * 3600),
        )
        .unwrap()
    };
    let jwt = |kid: &str| JwtAuthority {
        key_id: kid.into(),
        public_key_der: SoftwareKey::generate(KeyType::EcP256)
            .unwrap()
            .public_key_der()
            .to_vec(),
        expires_at: None,
    };
    let mut first = Bundle::new(td.clone());
    first.x509_authorities = vec![ca(KeyType::EcP256)];
    first.jwt_authorities = vec![jwt("kid-1")];
    first.sequence_number = 1;
    let mut second = first.clone();
    second.x509_authorities.push(ca(KeyType::Rsa2048));
    second.jwt_authorities.push(jwt("kid-2"));
    second.sequence_number = 2;
    second.refresh_hint_seconds = Some(300);
    (first, second)
}

/// The suite against a real kube-apiserver (skipped, with a notice, when
/// `SIGIL_TEST_KUBE_BIN` is unset outside CI), reading the ConfigMap back
/// through the API server.
async fn k8s_configmap_passes_the_bundlepublisher_suite(c: &ServerContext, dir: &std::path::Path) {
    use sigil_testkit::kube::KubeControlPlane;
    let Some(kube) = tokio::task::spawn_blocking(KubeControlPlane::start)
        .await
        .unwrap()
    else {
        return;
    };
    let kube = Arc::new(kube);
    let kubeconfig = dir.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    {
        let kube = kube.clone();
        tokio::task::spawn_blocking(move || kube.create_namespace("spire"))
            .await
            .unwrap();
    }
    let publisher = bundlepublisher::TYPE
        .build(
            "k8s_configmap",
            &serde_json::json!({"clusters": {"test": {
                "configmap_name": "trust-bundle",
                "configmap_key": "bundle.spiffe",
                "namespace": "spire",
                "kubeconfig_path": kubeconfig.to_string_lossy(),
                "format": "spiffe",
            }}}),
            c,
        )
        .unwrap();
    let (first, second) = two_bundles(&c.trust_domain);
    let td = c.trust_domain.clone();
    sigil_plugin::bundlepublisher::conformance::run_all(publisher, &first, &second, || {
        let kube = kube.clone();
        let td = td.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let (status, cm) = kube.request(
                    "GET",
                    "/api/v1/namespaces/spire/configmaps/trust-bundle",
                    None,
                );
                if status == 404 {
                    return None;
                }
                assert_eq!(status, 200, "{cm:#}");
                let doc = cm["data"]["bundle.spiffe"].as_str()?;
                Some(Bundle::parse_jwks(&td, doc.as_bytes()).unwrap())
            })
            .await
            .unwrap()
        }
    })
    .await;
}
