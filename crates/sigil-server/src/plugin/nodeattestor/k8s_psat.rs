//! NodeAttestor "k8s_psat" (server half): an agent in a Kubernetes pod
//! presents its projected service account token; the cluster's TokenReview
//! API says whose it is, for the configured audiences. The service account
//! must be on the cluster's allow list. The pod named by the token is then
//! read, and must still be the pod the token was issued to (same UID): the
//! API server keeps accepting a deleted pod's token for a while from its
//! review cache, so the review alone is not proof the pod lives. The node
//! the pod runs on gives the agent ID and node selectors.
//!
//! Configuration, payload, agent ID and selectors are SPIRE's, so SPIRE
//! agents attest here unchanged. Tokens rotate, so agents may re-attest.
//! This file never decides how a client is made (that is [`crate::k8s`]),
//! and never connects before an agent attests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::PostParams;
use sigil_plugin::catalog::{PluginError, Problem, decode};
use sigil_plugin::nodeattestor::k8s_psat::{self as psat, DEFAULT_AUDIENCE, Payload};
use sigil_plugin::nodeattestor::{AttestResult, Challenges, NodeAttestorError, ServerNodeAttestor};
use sigil_spiffe::{Selector, TrustDomain};

use crate::catalog::ServerContext;
use crate::k8s::{ClusterClient, K8sError};

/// The plugin name and attestation data type.
pub const NAME: &str = psat::NAME;

const POD_NAME_KEY: &str = "authentication.kubernetes.io/pod-name";
const POD_UID_KEY: &str = "authentication.kubernetes.io/pod-uid";

/// Builds the server half from SPIRE's options. Each cluster's client
/// configuration is loaded here (files only, no connection).
pub fn build(
    data: &serde_json::Value,
    ctx: &ServerContext,
) -> Result<Arc<dyn ServerNodeAttestor>, PluginError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Options {
        #[serde(default)]
        clusters: BTreeMap<String, ClusterOptions>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ClusterOptions {
        #[serde(default)]
        service_account_allow_list: Vec<String>,
        /// Absent: `spire-server`; empty: the API server's own audiences.
        audience: Option<Vec<String>>,
        #[serde(default)]
        kube_config_file: String,
        #[serde(default)]
        allowed_node_label_keys: Vec<String>,
        #[serde(default)]
        allowed_pod_label_keys: Vec<String>,
    }
    let err = |p| PluginError::new("NodeAttestor", NAME, p);
    let o: Options = decode("NodeAttestor", NAME, data, &[])?;
    let mut clusters = BTreeMap::new();
    for (name, c) in o.clusters {
        if c.service_account_allow_list.is_empty() {
            return Err(err(Problem::Invalid(format!(
                "cluster {name:?} configuration must have at least one service account allowed"
            ))));
        }
        let client = ClusterClient::load(&c.kube_config_file)
            .map_err(|e| err(Problem::Load(format!("cluster {name:?}: {e}"))))?;
        clusters.insert(
            name,
            Cluster {
                service_accounts: c.service_account_allow_list.into_iter().collect(),
                audience: c
                    .audience
                    .unwrap_or_else(|| vec![DEFAULT_AUDIENCE.to_owned()]),
                allowed_node_label_keys: c.allowed_node_label_keys.into_iter().collect(),
                allowed_pod_label_keys: c.allowed_pod_label_keys.into_iter().collect(),
                client,
            },
        );
    }
    if clusters.is_empty() {
        tracing::info!(
            "k8s_psat: no clusters configured, PSAT attestation is effectively disabled"
        );
    }
    Ok(Arc::new(K8sPsatAttestor {
        td: ctx.trust_domain.clone(),
        clusters,
    }))
}

/// Why an agent's evidence was refused, or could not be checked. Each
/// becomes the [`NodeAttestorError`] variant SPIRE's status code maps to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The payload names a cluster this server is not configured for.
    #[error("not configured for cluster {0:?}")]
    UnknownCluster(String),
    /// TokenReview did not authenticate the token (wrong audience,
    /// expired, forged, or its pod or service account is gone).
    #[error("token not authenticated according to TokenReview API{}", reason(.0))]
    NotAuthenticated(String),
    /// The token's service account is not on the cluster's allow list.
    #[error("{0:?} is not an allowed service account")]
    ServiceAccountNotAllowed(String),
    /// The review's user is not a service account token bound to a pod.
    #[error("token is not a service account token bound to a pod: {0}")]
    NotPodBound(String),
    /// The pod the token was issued to no longer exists.
    #[error("pod {namespace}/{name} named by the token does not exist")]
    PodNotFound {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A pod of that name exists, but it is not the one the token was
    /// issued to (it was deleted and re-created).
    #[error("pod {namespace}/{name} has UID {actual}, the token was issued to pod UID {expected}")]
    PodUidMismatch {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The UID in the token.
        expected: String,
        /// The UID of the pod by that name now.
        actual: String,
    },
    /// The cluster's API could not be asked.
    #[error("{context}: {source}")]
    Api {
        /// What was being asked.
        context: &'static str,
        /// The client's error.
        #[source]
        source: ApiError,
    },
    /// The API answered with something SPIRE would not accept either.
    #[error("{0}")]
    Unexpected(String),
    /// The agent ID or a selector cannot be formed from the cluster's names.
    #[error("{0}")]
    Format(String),
}

/// The client-side failures behind [`Refusal::Api`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The client could not be made.
    #[error(transparent)]
    Client(#[from] K8sError),
    /// The request failed.
    #[error(transparent)]
    Request(#[from] kube::Error),
}

fn reason(r: &str) -> String {
    if r.is_empty() {
        String::new()
    } else {
        format!(": {r}")
    }
}

impl From<Refusal> for NodeAttestorError {
    fn from(r: Refusal) -> Self {
        let msg = r.to_string();
        match r {
            Refusal::UnknownCluster(_) | Refusal::Format(_) => NodeAttestorError::Invalid(msg),
            Refusal::NotAuthenticated(_)
            | Refusal::ServiceAccountNotAllowed(_)
            | Refusal::NotPodBound(_)
            | Refusal::PodNotFound { .. }
            | Refusal::PodUidMismatch { .. } => NodeAttestorError::Denied(msg),
            Refusal::Api { .. } | Refusal::Unexpected(_) => NodeAttestorError::Internal(msg),
        }
    }
}

/// One configured cluster.
#[derive(Debug)]
struct Cluster {
    service_accounts: BTreeSet<String>,
    audience: Vec<String>,
    allowed_node_label_keys: BTreeSet<String>,
    allowed_pod_label_keys: BTreeSet<String>,
    client: ClusterClient,
}

/// The server half.
#[derive(Debug)]
pub struct K8sPsatAttestor {
    td: TrustDomain,
    clusters: BTreeMap<String, Cluster>,
}

#[async_trait]
impl ServerNodeAttestor for K8sPsatAttestor {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn attest(
        &self,
        payload: &[u8],
        _challenges: &mut dyn Challenges,
    ) -> Result<AttestResult, NodeAttestorError> {
        let payload = Payload::parse(payload)?;
        Ok(self.attest_payload(&payload).await?)
    }
}

impl K8sPsatAttestor {
    async fn attest_payload(&self, payload: &Payload) -> Result<AttestResult, Refusal> {
        let cluster = self
            .clusters
            .get(&payload.cluster)
            .ok_or_else(|| Refusal::UnknownCluster(payload.cluster.clone()))?;
        let api = |context| move |e: ApiError| Refusal::Api { context, source: e };
        let client = cluster
            .client
            .client()
            .await
            .map_err(|e| api("unable to validate token with TokenReview API")(e.into()))?;

        let review = TokenReview {
            spec: TokenReviewSpec {
                token: payload.token.clone(),
                audiences: Some(cluster.audience.clone()),
            },
            ..Default::default()
        };
        let status = Api::<TokenReview>::all(client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| api("unable to validate token with TokenReview API")(e.into()))?
            .status
            .unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(Refusal::NotAuthenticated(
                status.error.clone().unwrap_or_default(),
            ));
        }
        let (namespace, sa) = service_account(&status)?;
        let full_sa = format!("{namespace}:{sa}");
        if !cluster.service_accounts.contains(&full_sa) {
            return Err(Refusal::ServiceAccountNotAllowed(full_sa));
        }
        let pod_name = single_extra(&status, POD_NAME_KEY, "pod name")?;
        let pod_uid = single_extra(&status, POD_UID_KEY, "pod UID")?;

        let pod = Api::<Pod>::namespaced(client.clone(), &namespace)
            .get_opt(&pod_name)
            .await
            .map_err(|e| api("fail to get pod from k8s API server")(e.into()))?
            .ok_or_else(|| Refusal::PodNotFound {
                namespace: namespace.clone(),
                name: pod_name.clone(),
            })?;
        let actual_uid = pod.metadata.uid.clone().unwrap_or_default();
        if actual_uid != pod_uid {
            return Err(Refusal::PodUidMismatch {
                namespace,
                name: pod_name,
                expected: pod_uid,
                actual: actual_uid,
            });
        }
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        if node_name.is_empty() {
            return Err(Refusal::Unexpected(format!(
                "pod {namespace}/{pod_name} is not scheduled on a node"
            )));
        }
        let node = Api::<Node>::all(client)
            .get(&node_name)
            .await
            .map_err(|e| api("fail to get node from k8s API server")(e.into()))?;
        let node_uid = node.metadata.uid.clone().unwrap_or_default();
        if node_uid.is_empty() {
            return Err(Refusal::Unexpected("node UID is empty".into()));
        }
        let host_ip = pod
            .status
            .as_ref()
            .and_then(|s| s.host_ip.clone())
            .unwrap_or_default();

        let fixed: [(&str, &str); 8] = [
            ("cluster", &payload.cluster),
            ("agent_ns", &namespace),
            ("agent_sa", &sa),
            ("agent_pod_name", &pod_name),
            ("agent_pod_uid", &pod_uid),
            ("agent_node_ip", &host_ip),
            ("agent_node_name", &node_name),
            ("agent_node_uid", &node_uid),
        ];
        let mut selectors = Vec::new();
        for (name, value) in fixed {
            selectors.push(selector(name, &[value])?);
        }
        let labels = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
                      allowed: &BTreeSet<String>,
                      name: &str|
         -> Result<Vec<Selector>, Refusal> {
            meta.labels
                .iter()
                .flatten()
                .filter(|(k, _)| allowed.contains(*k))
                .map(|(k, v)| selector(name, &[k, v]))
                .collect()
        };
        selectors.extend(labels(
            &node.metadata,
            &cluster.allowed_node_label_keys,
            "agent_node_label",
        )?);
        selectors.extend(labels(
            &pod.metadata,
            &cluster.allowed_pod_label_keys,
            "agent_pod_label",
        )?);

        let agent_id = psat::agent_id(&self.td, &payload.cluster, &node_uid).map_err(|e| {
            Refusal::Format(format!(
                "cluster {:?} and node UID {node_uid:?} cannot form an agent ID: {e}",
                payload.cluster
            ))
        })?;
        Ok(AttestResult {
            agent_id,
            selectors,
            can_reattest: true,
            join_token: None,
        })
    }
}

fn selector(name: &str, values: &[&str]) -> Result<Selector, Refusal> {
    psat::selector(name, values).map_err(|e| Refusal::Format(e.to_string()))
}

/// `system:serviceaccount:<ns>:<sa>` from the review's username.
fn service_account(status: &TokenReviewStatus) -> Result<(String, String), Refusal> {
    let username = status
        .user
        .as_ref()
        .and_then(|u| u.username.as_deref())
        .unwrap_or_default();
    let bad = |why: String| Refusal::NotPodBound(why);
    if username.is_empty() {
        return Err(bad("empty username".into()));
    }
    let parts: Vec<&str> = username.split(':').collect();
    match parts.as_slice() {
        ["system", "serviceaccount", ns, sa] if !ns.is_empty() && !sa.is_empty() => {
            Ok(((*ns).to_owned(), (*sa).to_owned()))
        }
        _ => Err(bad(format!("unexpected username format: {username}"))),
    }
}

/// The one value of `user.extra[key]`.
fn single_extra(status: &TokenReviewStatus, key: &str, what: &str) -> Result<String, Refusal> {
    let values = status
        .user
        .as_ref()
        .and_then(|u| u.extra.as_ref())
        .and_then(|e| e.get(key));
    match values.map(Vec::as_slice) {
        None => Err(Refusal::NotPodBound(format!("missing {what}"))),
        Some([v]) if !v.is_empty() => Ok(v.clone()),
        Some([_]) => Err(Refusal::NotPodBound(format!("{what} is empty"))),
        Some(vs) => Err(Refusal::NotPodBound(format!(
            "expected 1 {what} but got: {}",
            vs.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use sigil_plugin::clock::ManualClock;

    use super::*;

    fn ctx() -> ServerContext {
        #[derive(Debug)]
        struct NoTokens;
        #[async_trait]
        impl sigil_plugin::nodeattestor::JoinTokens for NoTokens {
            async fn expiry(&self, _: &str) -> Result<Option<i64>, NodeAttestorError> {
                Ok(None)
            }
        }
        ServerContext {
            trust_domain: TrustDomain::new("example.org").unwrap(),
            data_dir: std::env::temp_dir(),
            clock: Arc::new(ManualClock::new(std::time::UNIX_EPOCH)),
            join_tokens: Arc::new(NoTokens),
        }
    }

    #[test]
    fn options_are_checked_as_spire_checks_them() {
        let e = build(
            &serde_json::json!({"clusters": {"c": {"kube_config_file": "/x"}}}),
            &ctx(),
        )
        .unwrap_err();
        assert_eq!(
            e.problem,
            Problem::Invalid(
                "cluster \"c\" configuration must have at least one service account allowed".into()
            )
        );
        let e = build(
            &serde_json::json!({"clusters": {"c": {
                "service_account_allow_list": ["ns:sa"], "kube_config_file": "/no/such/file"}}}),
            &ctx(),
        )
        .unwrap_err();
        assert!(
            matches!(&e.problem, Problem::Load(m) if m.contains("/no/such/file")),
            "{e}"
        );
        let e = build(
            &serde_json::json!({"clusters": {"c": {"service_account_allow_list": ["a:b"], "colour": 1}}}),
            &ctx(),
        )
        .unwrap_err();
        assert_eq!(e.problem, Problem::UnknownOption("colour".into()));
        build(&serde_json::json!({}), &ctx()).unwrap();
    }

    #[tokio::test]
    async fn an_unconfigured_cluster_is_refused_before_any_request() {
        let server = build(&serde_json::json!({}), &ctx()).unwrap();
        let agent = psat::K8sPsatAgent::new("c".into(), "/nonexistent".into());
        let mut ch = sigil_plugin::nodeattestor::DirectChallenges::new(&agent);
        let payload = Payload {
            cluster: "other".into(),
            token: "t".into(),
        };
        let e = server
            .attest(&payload.to_json(), &mut ch)
            .await
            .unwrap_err();
        assert_eq!(
            e,
            NodeAttestorError::Invalid("not configured for cluster \"other\"".into())
        );
    }
}
