//! NodeAttestor "join_token" (server half): the agent presents a token an
//! administrator created; the attestor checks it exists and has not
//! expired, and names it in the result for the server to spend in the same
//! datastore transaction that records the agent, so two agents racing with
//! one token cannot both succeed, and a failed attestation leaves it
//! usable. The agent ID embeds the token, and a token is single use, so the
//! agent cannot attest again by itself.

use std::sync::Arc;

use async_trait::async_trait;
use sigil_plugin::catalog::{PluginError, decode};
use sigil_plugin::clock::Clock;
use sigil_plugin::nodeattestor::{
    AttestResult, Challenges, JoinTokens, NodeAttestorError, ServerNodeAttestor,
};
use sigil_spiffe::{IdError, SpiffeId, TrustDomain};

use crate::catalog::ServerContext;

/// The plugin name and attestation data type.
pub const NAME: &str = "join_token";

/// `spiffe://<td>/spire/agent/join_token/<token>`; fails for tokens that
/// cannot be a path segment.
pub fn agent_id(td: &TrustDomain, token: &str) -> Result<SpiffeId, IdError> {
    td.id_with_path(&format!("/spire/agent/{NAME}/{token}"))
}

/// Builds the server half. It takes no options.
pub fn build(
    data: &serde_json::Value,
    ctx: &ServerContext,
) -> Result<Arc<dyn ServerNodeAttestor>, PluginError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Options {}
    let Options {} = decode("NodeAttestor", NAME, data, &[])?;
    Ok(Arc::new(JoinTokenAttestor {
        td: ctx.trust_domain.clone(),
        tokens: ctx.join_tokens.clone(),
        clock: ctx.clock.clone(),
    }))
}

/// The server half.
#[derive(Debug)]
pub struct JoinTokenAttestor {
    td: TrustDomain,
    tokens: Arc<dyn JoinTokens>,
    clock: Arc<dyn Clock>,
}

#[async_trait]
impl ServerNodeAttestor for JoinTokenAttestor {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn attest(
        &self,
        payload: &[u8],
        _challenges: &mut dyn Challenges,
    ) -> Result<AttestResult, NodeAttestorError> {
        let token = std::str::from_utf8(payload)
            .map_err(|_| NodeAttestorError::Invalid("join token is not valid UTF-8".into()))?;
        if token.is_empty() {
            return Err(NodeAttestorError::Invalid("join token is empty".into()));
        }
        // Check the token can form an agent ID before spending it.
        let agent_id = agent_id(&self.td, token).map_err(|e| {
            NodeAttestorError::Invalid(format!("join token cannot form an agent ID: {e}"))
        })?;
        let Some(expires_at) = self.tokens.expiry(token).await? else {
            return Err(NodeAttestorError::Invalid(
                "join token does not exist or has already been used".into(),
            ));
        };
        if expires_at < self.clock.unix_now() {
            return Err(NodeAttestorError::Invalid("join token expired".into()));
        }
        Ok(AttestResult {
            agent_id,
            selectors: Vec::new(),
            can_reattest: false,
            join_token: Some(token.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use sigil_plugin::clock::ManualClock;
    use sigil_plugin::nodeattestor::conformance::{Pair, run_all};

    use super::*;

    /// Join tokens in memory.
    #[derive(Debug, Default)]
    pub(crate) struct MemoryTokens(pub Mutex<BTreeMap<String, i64>>);

    #[async_trait]
    impl JoinTokens for MemoryTokens {
        async fn expiry(&self, token: &str) -> Result<Option<i64>, NodeAttestorError> {
            Ok(self
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(token)
                .copied())
        }
    }

    fn ctx(tokens: &[(&str, i64)]) -> ServerContext {
        let store = MemoryTokens::default();
        for (t, exp) in tokens {
            store.0.lock().unwrap().insert((*t).into(), *exp);
        }
        ServerContext {
            trust_domain: TrustDomain::new("example.org").unwrap(),
            data_dir: std::env::temp_dir(),
            clock: Arc::new(ManualClock::new(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000),
            )),
            join_tokens: Arc::new(store),
        }
    }

    fn agent(token: &str) -> Arc<dyn sigil_plugin::nodeattestor::AgentNodeAttestor> {
        Arc::new(TokenAgent(token.into()))
    }

    /// The agent half, as simple as it is.
    #[derive(Debug)]
    struct TokenAgent(String);

    #[async_trait]
    impl sigil_plugin::nodeattestor::AgentNodeAttestor for TokenAgent {
        fn name(&self) -> &'static str {
            NAME
        }
        async fn payload(&self) -> Result<Vec<u8>, NodeAttestorError> {
            Ok(self.0.clone().into_bytes())
        }
    }

    #[tokio::test]
    async fn join_token_passes_the_node_attestor_conformance_suite() {
        let ctx = ctx(&[("good", 2000), ("old", 10)]);
        let pair = Pair {
            trust_domain: ctx.trust_domain.clone(),
            server: build(&serde_json::json!({}), &ctx).unwrap(),
            agent: agent("good"),
            refused: vec![agent("unknown"), agent("old"), agent("a/b/../c")],
        };
        let r = run_all(&pair).await;
        assert_eq!(
            r.agent_id.as_str(),
            "spiffe://example.org/spire/agent/join_token/good"
        );
        assert!(!r.can_reattest);
    }

    #[tokio::test]
    async fn expired_and_unknown_tokens_are_refused_with_spire_messages() {
        let ctx = ctx(&[("old", 10)]);
        let server = build(&serde_json::json!({}), &ctx).unwrap();
        let a = agent("old");
        let mut ch = sigil_plugin::nodeattestor::DirectChallenges::new(a.as_ref());
        let e = server.attest(b"old", &mut ch).await.unwrap_err();
        assert_eq!(e, NodeAttestorError::Invalid("join token expired".into()));
        let e = server.attest(b"unknown", &mut ch).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "join token does not exist or has already been used"
        );
    }

    #[tokio::test]
    async fn attestation_names_the_token_to_spend_and_leaves_it_to_the_server() {
        let ctx = ctx(&[("good", 2000)]);
        let server = build(&serde_json::json!({}), &ctx).unwrap();
        let a = agent("good");
        let mut ch = sigil_plugin::nodeattestor::DirectChallenges::new(a.as_ref());
        let r = server.attest(b"good", &mut ch).await.unwrap();
        assert_eq!(r.join_token.as_deref(), Some("good"));
        // Once the server spent it (recording the agent), it is refused.
        assert_eq!(ctx.join_tokens.expiry("good").await.unwrap(), Some(2000));
        let ctx2 = super::tests::ctx(&[]);
        let spent = build(&serde_json::json!({}), &ctx2).unwrap();
        let e = spent.attest(b"good", &mut ch).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "join token does not exist or has already been used"
        );
    }

    #[test]
    fn join_token_takes_no_options() {
        let e = build(&serde_json::json!({"x": 1}), &ctx(&[])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "NodeAttestor \"join_token\": unknown option \"x\" in plugin_data"
        );
    }
}
