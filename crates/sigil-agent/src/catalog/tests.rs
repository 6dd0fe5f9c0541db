//! The agent catalog: SPIRE's count rules and typed plugin errors, through
//! the same path `validate` and `run` use.

use sigil_cli::config::{PluginDecl, Section, parse_plugins};
use sigil_plugin::catalog::{CatalogError, CountError, PluginError, Problem};

use super::*;

fn ctx(token: Option<&str>) -> AgentContext {
    AgentContext {
        trust_domain: TrustDomain::new("example.org").unwrap(),
        data_dir: std::env::temp_dir(),
        join_token: token.map(str::to_owned),
    }
}

fn plugins(text: &str) -> Vec<PluginDecl> {
    let mut top = Section::parse(&format!("plugins {{\n{text}\n}}")).unwrap();
    parse_plugins(top.take_block("plugins").unwrap().unwrap().body).unwrap()
}

fn load(text: &str) -> Result<Catalog, CatalogError> {
    Catalog::load(&plugins(text), &ctx(Some("tok")))
}

const BASE: &str = r#"
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data {}
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
"#;

#[tokio::test]
async fn spire_default_plugins_load_and_the_token_reaches_the_attestor() {
    let c = load(BASE).unwrap();
    assert_eq!(c.node_attestor.name(), "join_token");
    assert_eq!(c.node_attestor.payload().await.unwrap(), b"tok");
    assert_eq!(c.key_manager.name(), "memory");
    assert_eq!(c.workload_attestors.len(), 1);
    let no_token = Catalog::load(&plugins(BASE), &ctx(None)).unwrap();
    assert!(matches!(
        no_token.node_attestor.payload().await,
        Err(sigil_plugin::nodeattestor::NodeAttestorError::NoEvidence(_))
    ));
}

#[test]
fn agent_count_rules_follow_spire() {
    let e = load(&format!("{BASE}\nNodeAttestor \"join_token\" {{}}")).unwrap_err();
    assert!(
        matches!(
            e,
            CatalogError::Count(CountError::TooMany {
                kind: "NodeAttestor",
                ..
            })
        ),
        "{e}"
    );
    let e = load(
        r#"NodeAttestor "join_token" {}
                    KeyManager "memory" {}"#,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            CatalogError::Count(CountError::TooFew {
                kind: "WorkloadAttestor",
                ..
            })
        ),
        "{e}"
    );
    let e = load(&format!("{BASE}\nSVIDStore \"aws_secretsmanager\" {{}}")).unwrap_err();
    assert!(
        matches!(
            e,
            CatalogError::Count(CountError::UnsupportedType {
                kind: "SVIDStore",
                ..
            })
        ),
        "{e}"
    );
}

#[test]
fn plugin_errors_name_kind_plugin_and_problem() {
    let e = load(&BASE.replace(
        "KeyManager \"memory\" {
        plugin_data {}
    }",
        "KeyManager \"disk\" {\n plugin_data {\n dir = \"/x\"\n }\n }",
    ))
    .unwrap_err();
    assert_eq!(
        e,
        CatalogError::Plugin(PluginError::new(
            "KeyManager",
            "disk",
            Problem::UnknownOption("dir".into())
        ))
    );
    let e = load(&BASE.replace(
        "WorkloadAttestor \"unix\" {
        plugin_data {}
    }",
        "WorkloadAttestor \"unix\" {\n plugin_data {\n bogus = 1\n }\n }",
    ))
    .unwrap_err();
    assert!(
        e.to_string().starts_with("WorkloadAttestor \"unix\": "),
        "{e}"
    );
    assert!(e.to_string().contains("bogus"), "{e}");
}

/// `plugin_data` that builds each built-in for its conformance suite; a
/// built-in without an entry here fails the test below.
fn fixture(kind: &str, name: &str, dir: &std::path::Path) -> serde_json::Value {
    match (kind, name) {
        ("KeyManager", "memory") | ("WorkloadAttestor", "unix") => serde_json::json!({}),
        ("KeyManager", "disk") => {
            let d = dir.join(uuid::Uuid::new_v4().to_string());
            serde_json::json!({ "directory": d.to_string_lossy() })
        }
        // The test process is in no pod, so the kubelet is never asked.
        ("WorkloadAttestor", "k8s") => serde_json::json!({ "kubelet_read_only_port": 1 }),
        _ => panic!("no conformance fixture for {kind} {name:?}: add one here"),
    }
}

#[tokio::test]
async fn every_builtin_passes_its_types_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let c = ctx(Some("tok"));
    for name in keymanager::TYPE.names() {
        let data = || fixture("KeyManager", name, dir.path());
        sigil_plugin::keymanager::conformance::run_all(|| async {
            keymanager::TYPE.build(name, &data(), &c).unwrap()
        })
        .await;
    }
    for name in workloadattestor::TYPE.names() {
        let a = workloadattestor::TYPE
            .build(name, &fixture("WorkloadAttestor", name, dir.path()), &c)
            .unwrap();
        crate::attestor::conformance::run_all(a.as_ref()).await;
    }
    // NodeAttestor pairs need both halves: each plugin's tests run
    // `sigil_plugin::nodeattestor::conformance::run_all` (join_token in
    // sigil-server's plugin file). Every agent half must be listed here.
    let mut covered = vec!["join_token", "x509pop", "k8s_psat"];
    covered.sort_unstable();
    let mut names = nodeattestor::TYPE.names();
    names.sort_unstable();
    assert_eq!(names, covered, "a NodeAttestor without a conformance run");
}
