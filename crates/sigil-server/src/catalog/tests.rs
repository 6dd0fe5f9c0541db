//! The server catalog: counts, names and options are checked through the
//! same path `validate` and `run` use, with typed errors.

use std::sync::Arc;

use sigil_cli::config::{PluginDecl, Section, parse_plugins};
use sigil_plugin::catalog::{CatalogError, CountError, PluginError, Problem};
use sigil_plugin::clock::SystemClock;
use sigil_spiffe::TrustDomain;

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
    let e = load(r#"BundlePublisher "k8s_configmap" {}"#).unwrap_err();
    assert!(e.to_string().contains("supported: none"), "{e}");
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
