//! NodeAttestor "join_token" (agent half): the payload is the token an
//! administrator created (`join_token`, `join_token_file` or `-joinToken`).
//! A token is single use, so this attestor cannot attest again by itself.

use std::sync::Arc;

use async_trait::async_trait;
use sigil_plugin::catalog::{PluginError, decode};
use sigil_plugin::nodeattestor::{AgentNodeAttestor, NodeAttestorError};

use crate::catalog::AgentContext;

/// The plugin name and attestation data type.
pub const NAME: &str = "join_token";

/// Builds the agent half. It takes no options; the token comes from the
/// agent's own settings.
pub fn build(
    data: &serde_json::Value,
    ctx: &AgentContext,
) -> Result<Arc<dyn AgentNodeAttestor>, PluginError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Options {}
    let Options {} = decode("NodeAttestor", NAME, data, &[])?;
    Ok(Arc::new(JoinTokenAgent {
        token: ctx.join_token.clone(),
    }))
}

/// The agent half.
#[derive(Debug)]
pub struct JoinTokenAgent {
    token: Option<String>,
}

impl JoinTokenAgent {
    /// An attestor presenting `token`.
    pub fn new(token: Option<String>) -> Self {
        JoinTokenAgent { token }
    }
}

#[async_trait]
impl AgentNodeAttestor for JoinTokenAgent {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn payload(&self) -> Result<Vec<u8>, NodeAttestorError> {
        match &self.token {
            Some(t) if !t.is_empty() => Ok(t.clone().into_bytes()),
            _ => Err(NodeAttestorError::NoEvidence(
                "no join token: set join_token in agent.conf or pass -joinToken".into(),
            )),
        }
    }
}
