//! The `k8s_psat` node attestor against a real kube-apiserver (testkit's
//! control plane, no kubelet): the server half reviews real TokenRequest
//! tokens and reads real pods and nodes; the agent half reads the token from
//! a file, as in a pod. Runs the NodeAttestor conformance suite, then checks
//! each refusal is the precise one. Skips with a notice without
//! `SIGIL_TEST_KUBE_BIN` (outside CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use sigil_plugin::clock::ManualClock;
use sigil_plugin::nodeattestor::conformance::{Pair, run_all};
use sigil_plugin::nodeattestor::k8s_psat::K8sPsatAgent;
use sigil_plugin::nodeattestor::{
    AgentNodeAttestor, DirectChallenges, JoinTokens, NodeAttestorError, ServerNodeAttestor,
};
use sigil_server::catalog::ServerContext;
use sigil_server::plugin::nodeattestor::k8s_psat;
use sigil_spiffe::TrustDomain;
use sigil_testkit::kube::KubeControlPlane;

#[derive(Debug)]
struct NoTokens;

#[async_trait::async_trait]
impl JoinTokens for NoTokens {
    async fn expiry(&self, _: &str) -> Result<Option<i64>, NodeAttestorError> {
        Ok(None)
    }
}

fn ctx() -> ServerContext {
    ServerContext {
        trust_domain: TrustDomain::new("example.org").unwrap(),
        data_dir: std::env::temp_dir(),
        clock: Arc::new(ManualClock::new(std::time::UNIX_EPOCH)),
        join_tokens: Arc::new(NoTokens),
    }
}

/// A pod named `pod` of service account `sa` in `ns` on `node`, running,
/// with host IP 10.1.2.3; returns its UID.
fn pod(kube: &KubeControlPlane, ns: &str, sa: &str, pod: &str, node: &str) -> String {
    let uid = kube.create_pod(
        ns,
        pod,
        sa,
        node,
        &[("app", "spire-agent"), ("secret", "no")],
        &[("agent", "ghcr.io/spiffe/spire-agent:1.15.2")],
    );
    kube.set_pod_status(ns, pod, &json!({"phase": "Running", "hostIP": "10.1.2.3"}));
    uid
}

/// An agent half in `cluster` whose token file holds `token`.
fn agent(dir: &Path, file: &str, cluster: &str, token: &str) -> Arc<dyn AgentNodeAttestor> {
    let path = dir.join(file);
    std::fs::write(&path, token).unwrap();
    Arc::new(K8sPsatAgent::new(cluster.into(), path))
}

async fn attest(
    server: &dyn ServerNodeAttestor,
    agent: &dyn AgentNodeAttestor,
) -> Result<sigil_plugin::nodeattestor::AttestResult, NodeAttestorError> {
    let payload = agent.payload().await?;
    server
        .attest(&payload, &mut DirectChallenges::new(agent))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_psat_passes_the_conformance_suite_against_a_real_apiserver_and_refuses_precisely() {
    let Some(kube) = tokio::task::spawn_blocking(KubeControlPlane::start)
        .await
        .unwrap()
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);

    kube.create_namespace("spire");
    kube.create_service_account("spire", "spire-agent");
    kube.create_service_account("spire", "intruder");
    let node_uid = kube.create_node(
        "node-a",
        &[("topology.kubernetes.io/zone", "zone-a"), ("secret", "no")],
    );
    let agent_uid = pod(&kube, "spire", "spire-agent", "spire-agent-x1", "node-a");
    let intruder_uid = pod(&kube, "spire", "intruder", "intruder-0", "node-a");
    let doomed_uid = pod(&kube, "spire", "spire-agent", "spire-agent-gone", "node-a");
    let replaced_uid = pod(&kube, "spire", "spire-agent", "spire-agent-again", "node-a");

    let token = |sa: &str, pod: &str, uid: &str, aud: &str| {
        kube.token_request("spire", sa, pod, uid, aud, 600)
    };
    let good = token("spire-agent", "spire-agent-x1", &agent_uid, "spire-server");
    let intruder = token("intruder", "intruder-0", &intruder_uid, "spire-server");
    let wrong_audience = token(
        "spire-agent",
        "spire-agent-x1",
        &agent_uid,
        "https://kubernetes.default.svc",
    );
    let doomed = token(
        "spire-agent",
        "spire-agent-gone",
        &doomed_uid,
        "spire-server",
    );
    let replaced = token(
        "spire-agent",
        "spire-agent-again",
        &replaced_uid,
        "spire-server",
    );
    // The tokens are reviewed once (an earlier attestation), then their pods
    // are deleted (one comes back under the same name): for a few seconds
    // the API server's review cache still vouches for them, so only the pod
    // lookup can tell.
    for t in [&doomed, &replaced] {
        assert_eq!(
            kube.token_review(t, &["spire-server"])["authenticated"],
            true
        );
    }
    kube.delete_pod("spire", "spire-agent-gone");
    kube.delete_pod("spire", "spire-agent-again");
    let new_uid = pod(&kube, "spire", "spire-agent", "spire-agent-again", "node-a");

    let server = k8s_psat::build(
        &json!({"clusters": {"prod": {
            "service_account_allow_list": ["spire:spire-agent"],
            "kube_config_file": kubeconfig.to_str().unwrap(),
            "allowed_node_label_keys": ["topology.kubernetes.io/zone"],
            "allowed_pod_label_keys": ["app"],
        }}}),
        &ctx(),
    )
    .unwrap();

    let d = dir.path();
    let refused: Vec<(Arc<dyn AgentNodeAttestor>, NodeAttestorError)> = vec![
        (
            agent(d, "intruder", "prod", &intruder),
            NodeAttestorError::Denied(
                "\"spire:intruder\" is not an allowed service account".into(),
            ),
        ),
        (
            agent(d, "wrong-audience", "prod", &wrong_audience),
            NodeAttestorError::Denied(
                "token not authenticated according to TokenReview API: [invalid bearer token, token audiences [\"https://kubernetes.default.svc\"] is invalid for the target audiences [\"spire-server\"]]"
                    .into(),
            ),
        ),
        (
            agent(d, "other-cluster", "staging", &good),
            NodeAttestorError::Invalid("not configured for cluster \"staging\"".into()),
        ),
        (
            agent(d, "deleted", "prod", &doomed),
            NodeAttestorError::Denied(
                "pod spire/spire-agent-gone named by the token does not exist".into(),
            ),
        ),
        (
            agent(d, "replaced", "prod", &replaced),
            NodeAttestorError::Denied(format!(
                "pod spire/spire-agent-again has UID {new_uid}, the token was issued to pod UID {replaced_uid}"
            )),
        ),
    ];

    let pair = Pair {
        trust_domain: TrustDomain::new("example.org").unwrap(),
        server: server.clone(),
        agent: agent(d, "good", "prod", &good),
        refused: refused.iter().map(|(a, _)| a.clone()).collect(),
    };
    let result = run_all(&pair).await;

    assert_eq!(
        result.agent_id.as_str(),
        format!("spiffe://example.org/spire/agent/k8s_psat/prod/{node_uid}")
    );
    assert!(result.can_reattest);
    let mut selectors: Vec<String> = result.selectors.iter().map(|s| s.to_string()).collect();
    selectors.sort();
    let mut want = vec![
        "k8s_psat:cluster:prod".to_owned(),
        "k8s_psat:agent_ns:spire".into(),
        "k8s_psat:agent_sa:spire-agent".into(),
        "k8s_psat:agent_pod_name:spire-agent-x1".into(),
        format!("k8s_psat:agent_pod_uid:{agent_uid}"),
        "k8s_psat:agent_node_ip:10.1.2.3".into(),
        "k8s_psat:agent_node_name:node-a".into(),
        format!("k8s_psat:agent_node_uid:{node_uid}"),
        "k8s_psat:agent_node_label:topology.kubernetes.io/zone:zone-a".into(),
        "k8s_psat:agent_pod_label:app:spire-agent".into(),
    ];
    want.sort();
    assert_eq!(selectors, want);

    for (agent, expected) in &refused {
        let e = attest(server.as_ref(), agent.as_ref()).await.unwrap_err();
        match (&e, expected) {
            // The API server words audience refusals itself; the kind and
            // the prefix are ours.
            (NodeAttestorError::Denied(got), NodeAttestorError::Denied(want))
                if want.starts_with("token not authenticated") =>
            {
                assert!(
                    got.starts_with("token not authenticated according to TokenReview API")
                        && got.contains("audience"),
                    "{got}"
                );
            }
            _ => assert_eq!(&e, expected),
        }
    }

    // A forged token is refused by the review.
    let forged = agent(d, "forged", "prod", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln");
    let e = attest(server.as_ref(), forged.as_ref()).await.unwrap_err();
    assert!(
        matches!(&e, NodeAttestorError::Denied(m) if m.starts_with("token not authenticated according to TokenReview API")),
        "{e:?}"
    );

    // The token file is read afresh: a rotated token still attests.
    let rotated = token("spire-agent", "spire-agent-x1", &agent_uid, "spire-server");
    std::fs::write(d.join("good"), rotated).unwrap();
    let again = attest(server.as_ref(), pair.agent.as_ref()).await.unwrap();
    assert_eq!(again.agent_id, result.agent_id);
}
