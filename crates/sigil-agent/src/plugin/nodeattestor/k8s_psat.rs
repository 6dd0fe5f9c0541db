//! NodeAttestor "k8s_psat" (agent half): built from `plugin_data`
//! (`cluster`, `token_path`); the attestor itself lives in
//! `sigil_plugin::nodeattestor::k8s_psat` beside the payload it sends.

use std::path::PathBuf;
use std::sync::Arc;

use sigil_plugin::catalog::{PluginError, Problem, decode};
use sigil_plugin::nodeattestor::AgentNodeAttestor;
use sigil_plugin::nodeattestor::k8s_psat::{DEFAULT_TOKEN_PATH, K8sPsatAgent};

use crate::catalog::AgentContext;

/// The plugin name and attestation data type.
pub const NAME: &str = sigil_plugin::nodeattestor::k8s_psat::NAME;

/// Builds the agent half. `cluster` is required; `token_path` defaults to
/// SPIRE's projected token path. The file is read at each attestation, not
/// here.
pub fn build(
    data: &serde_json::Value,
    _ctx: &AgentContext,
) -> Result<Arc<dyn AgentNodeAttestor>, PluginError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Options {
        #[serde(default)]
        cluster: String,
        #[serde(default)]
        token_path: String,
    }
    let o: Options = decode("NodeAttestor", NAME, data, &[])?;
    if o.cluster.is_empty() {
        return Err(PluginError::new(
            "NodeAttestor",
            NAME,
            Problem::MissingOption("cluster".into()),
        ));
    }
    let token_path = if o.token_path.is_empty() {
        DEFAULT_TOKEN_PATH
    } else {
        &o.token_path
    };
    Ok(Arc::new(K8sPsatAgent::new(
        o.cluster,
        PathBuf::from(token_path),
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use sigil_spiffe::TrustDomain;

    use super::*;

    fn ctx() -> AgentContext {
        AgentContext {
            trust_domain: TrustDomain::new("example.org").unwrap(),
            data_dir: std::env::temp_dir(),
            join_token: None,
        }
    }

    #[test]
    fn cluster_is_required_and_token_path_defaults_to_spires() {
        let e = build(&serde_json::json!({}), &ctx()).unwrap_err();
        assert_eq!(e.problem, Problem::MissingOption("cluster".into()));
        let e = build(
            &serde_json::json!({"cluster": "c", "tokenpath": "x"}),
            &ctx(),
        )
        .unwrap_err();
        assert_eq!(e.problem, Problem::UnknownOption("tokenpath".into()));
        let a = build(&serde_json::json!({"cluster": "c"}), &ctx()).unwrap();
        assert_eq!(a.name(), "k8s_psat");
        assert!(format!("{a:?}").contains(DEFAULT_TOKEN_PATH), "{a:?}");
    }
}
