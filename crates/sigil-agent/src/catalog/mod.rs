//! The agent's plugin catalog (SPIRE's `pkg/agent/catalog`): one file per
//! plugin type, each with its count rule and its built-ins.
//! [`Catalog::load`] is the one place a `plugins { }` section becomes
//! running plugins; `validate` and `run` both go through it.
//!
//! This module never names a plugin: names live in the plugins' own files,
//! and each type file lists them once.

pub mod keymanager;
pub mod nodeattestor;
pub mod workloadattestor;

use std::path::PathBuf;
use std::sync::Arc;

use sigil_cli::PluginDecl;
use sigil_plugin::catalog::{CatalogError, CountRule, Declaration, UnsupportedType, check_counts};
use sigil_plugin::keymanager::KeyManager;
use sigil_plugin::nodeattestor::AgentNodeAttestor;
use sigil_spiffe::TrustDomain;

use crate::attestor::WorkloadAttestor;

/// What the agent hands its plugins when building them.
#[derive(Debug, Clone)]
pub struct AgentContext {
    /// The agent's trust domain.
    pub trust_domain: TrustDomain,
    /// The agent's `data_dir`.
    pub data_dir: PathBuf,
    /// The join token from `join_token`, `join_token_file` or `-joinToken`,
    /// for the `join_token` node attestor.
    pub join_token: Option<String>,
}

/// SPIRE agent plugin types sigil does not implement yet.
const UNSUPPORTED: &[UnsupportedType] = &[UnsupportedType("SVIDStore")];

/// Every plugin the configuration declares, built.
#[derive(Clone)]
pub struct Catalog {
    /// The KeyManager holding the agent's own key.
    pub key_manager: Arc<dyn KeyManager>,
    /// The node attestor (agent half).
    pub node_attestor: Arc<dyn AgentNodeAttestor>,
    /// The workload attestors, in declaration order.
    pub workload_attestors: Vec<Arc<dyn WorkloadAttestor>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("key_manager", &self.key_manager.name())
            .field("node_attestor", &self.node_attestor.name())
            .field(
                "workload_attestors",
                &self
                    .workload_attestors
                    .iter()
                    .map(|w| w.name().to_owned())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Catalog {
    /// Checks the declared plugins against every type's count rule, then
    /// builds each one.
    pub fn load(plugins: &[PluginDecl], ctx: &AgentContext) -> Result<Catalog, CatalogError> {
        let declared: Vec<Declaration<'_>> = plugins
            .iter()
            .map(|p| Declaration {
                kind: &p.kind,
                name: &p.name,
                data: &p.data,
            })
            .collect();
        check_counts(&declared, &rules(), UNSUPPORTED)?;
        let key_manager = keymanager::TYPE
            .build_all(&declared, ctx)?
            .into_iter()
            .next();
        let node_attestor = nodeattestor::TYPE
            .build_all(&declared, ctx)?
            .into_iter()
            .next();
        let (Some(key_manager), Some(node_attestor)) = (key_manager, node_attestor) else {
            unreachable!("check_counts requires exactly one KeyManager and one NodeAttestor")
        };
        Ok(Catalog {
            key_manager,
            node_attestor,
            workload_attestors: workloadattestor::TYPE.build_all(&declared, ctx)?,
        })
    }
}

/// Every type's count rule.
fn rules() -> [(&'static str, CountRule); 3] {
    [
        keymanager::TYPE.rule(),
        nodeattestor::TYPE.rule(),
        workloadattestor::TYPE.rule(),
    ]
}

#[cfg(test)]
mod tests;
