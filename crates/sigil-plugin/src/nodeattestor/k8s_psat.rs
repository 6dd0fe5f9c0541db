//! NodeAttestor "k8s_psat": what both halves share, and the agent half.
//!
//! The agent runs in a pod whose service account token is projected into a
//! file for the server's audience (`spire-server`); it sends that token with
//! its cluster name, as SPIRE's JSON `{"cluster": ..., "token": ...}`. The
//! server half (in sigil-server, which owns the Kubernetes client) reviews
//! the token with the cluster's TokenReview API and reads the pod and node.
//!
//! This module owns the wire payload, the agent ID and selector formats
//! (byte for byte SPIRE's, so SPIRE agents and servers interoperate) and the
//! agent half, which reads the token file afresh on every attestation since
//! the kubelet rotates it. It never talks to Kubernetes.

use std::path::PathBuf;

use async_trait::async_trait;
use sigil_spiffe::{IdError, Selector, SelectorError, SpiffeId, TrustDomain};

use super::{AgentNodeAttestor, NodeAttestorError};

/// The plugin name, attestation data type and selector type.
pub const NAME: &str = "k8s_psat";

/// Where the agent reads its token unless `token_path` says otherwise
/// (SPIRE's default projected volume path).
pub const DEFAULT_TOKEN_PATH: &str = "/var/run/secrets/tokens/spire-agent";

/// The audience the server reviews tokens for unless `audience` says
/// otherwise.
pub const DEFAULT_AUDIENCE: &str = "spire-server";

/// The attestation payload, as SPIRE marshals it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Payload {
    /// The cluster name the agent was configured with.
    pub cluster: String,
    /// The projected service account token.
    pub token: String,
}

impl Payload {
    /// The JSON SPIRE sends.
    pub fn to_json(&self) -> Vec<u8> {
        // Two strings always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses an agent's payload, refusing what SPIRE refuses (not JSON,
    /// an empty cluster or token) with SPIRE's words.
    pub fn parse(payload: &[u8]) -> Result<Payload, NodeAttestorError> {
        if payload.is_empty() {
            return Err(NodeAttestorError::Invalid(
                "missing attestation payload".into(),
            ));
        }
        let p: Payload = serde_json::from_slice(payload).map_err(|e| {
            NodeAttestorError::Invalid(format!("failed to unmarshal data payload: {e}"))
        })?;
        if p.cluster.is_empty() {
            return Err(NodeAttestorError::Invalid(
                "missing cluster in attestation data".into(),
            ));
        }
        if p.token.is_empty() {
            return Err(NodeAttestorError::Invalid(
                "missing token in attestation data".into(),
            ));
        }
        Ok(p)
    }
}

/// `spiffe://<td>/spire/agent/k8s_psat/<cluster>/<node-uid>`.
pub fn agent_id(td: &TrustDomain, cluster: &str, node_uid: &str) -> Result<SpiffeId, IdError> {
    td.id_with_path(&format!("/spire/agent/{NAME}/{cluster}/{node_uid}"))
}

/// A `k8s_psat` selector whose value is `name:v1:v2...`
/// (`k8s_psat:agent_node_label:zone:a`).
pub fn selector(name: &str, values: &[&str]) -> Result<Selector, SelectorError> {
    let mut value = String::from(name);
    for v in values {
        value.push(':');
        value.push_str(v);
    }
    Selector::new(NAME, &value)
}

/// The agent half: the cluster name and the token file.
#[derive(Debug, Clone)]
pub struct K8sPsatAgent {
    cluster: String,
    token_path: PathBuf,
}

impl K8sPsatAgent {
    /// An agent in `cluster` reading its token from `token_path`.
    pub fn new(cluster: String, token_path: PathBuf) -> Self {
        K8sPsatAgent {
            cluster,
            token_path,
        }
    }

    /// The cluster name it reports.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The token file it reads.
    pub fn token_path(&self) -> &std::path::Path {
        &self.token_path
    }
}

#[async_trait]
impl AgentNodeAttestor for K8sPsatAgent {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn payload(&self) -> Result<Vec<u8>, NodeAttestorError> {
        let path = self.token_path.display();
        let token = tokio::fs::read_to_string(&self.token_path)
            .await
            .map_err(|e| {
                NodeAttestorError::NoEvidence(format!("unable to load token from {path}: {e}"))
            })?;
        if token.is_empty() {
            return Err(NodeAttestorError::NoEvidence(format!(
                "unable to load token from {path}: {path:?} is empty"
            )));
        }
        Ok(Payload {
            cluster: self.cluster.clone(),
            token,
        }
        .to_json())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_payload_is_spires_json() {
        let p = Payload {
            cluster: "prod".into(),
            token: "a.b.c".into(),
        };
        assert_eq!(p.to_json(), br#"{"cluster":"prod","token":"a.b.c"}"#);
        assert_eq!(Payload::parse(&p.to_json()).unwrap(), p);
        for (bad, why) in [
            (&b""[..], "missing attestation payload"),
            (br#"{"token":"t"}"#, "failed to unmarshal data payload"),
            (
                br#"{"cluster":"","token":"t"}"#,
                "missing cluster in attestation data",
            ),
            (
                br#"{"cluster":"c","token":""}"#,
                "missing token in attestation data",
            ),
        ] {
            let e = Payload::parse(bad).unwrap_err();
            assert!(
                matches!(&e, NodeAttestorError::Invalid(m) if m.starts_with(why)),
                "{e:?}"
            );
        }
    }

    #[test]
    fn agent_ids_and_selectors_are_spires() {
        let td = TrustDomain::new("example.org").unwrap();
        assert_eq!(
            agent_id(&td, "prod", "0b5c-11").unwrap().as_str(),
            "spiffe://example.org/spire/agent/k8s_psat/prod/0b5c-11"
        );
        assert_eq!(
            selector("agent_node_label", &["zone", "a"])
                .unwrap()
                .to_string(),
            "k8s_psat:agent_node_label:zone:a"
        );
        assert_eq!(
            selector("cluster", &["prod"]).unwrap().to_string(),
            "k8s_psat:cluster:prod"
        );
    }

    #[tokio::test]
    async fn the_agent_rereads_its_token_file_and_names_it_when_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let agent = K8sPsatAgent::new("prod".into(), path.clone());
        let e = agent.payload().await.unwrap_err();
        assert!(
            matches!(&e, NodeAttestorError::NoEvidence(m) if m.starts_with(&format!("unable to load token from {}", path.display()))),
            "{e:?}"
        );
        std::fs::write(&path, "").unwrap();
        let e = agent.payload().await.unwrap_err();
        assert!(e.to_string().ends_with("is empty"), "{e}");
        std::fs::write(&path, "one").unwrap();
        assert_eq!(
            Payload::parse(&agent.payload().await.unwrap())
                .unwrap()
                .token,
            "one"
        );
        std::fs::write(&path, "two").unwrap();
        assert_eq!(
            Payload::parse(&agent.payload().await.unwrap())
                .unwrap()
                .token,
            "two"
        );
    }
}
