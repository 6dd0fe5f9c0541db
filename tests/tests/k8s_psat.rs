//! `k8s_psat` node attestation end to end, against a real kube-apiserver
//! (testkit's control plane; `SIGIL_TEST_KUBE_BIN`): the agent reads a
//! projected-style token from a file, the server reviews it with the
//! TokenReview API and reads the pod and node, as in a cluster.
//!
//! - sigil-agent attests to sigil-server, serves a workload SVID through a
//!   node alias on `k8s_psat:cluster`, re-attests by itself after an evict;
//! - refused agents stop with the server's precise reason;
//! - a real spire-agent attests to sigil-server, and sigil-agent to a real
//!   spire-server (`SIGIL_TEST_SPIRE_BIN`), both configured as SPIRE
//!   documents them.
//!
//! Without the binaries the tests print a skip line (outside CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use sigil_e2e::my_uid;
use sigil_e2e::spire::{self, SpireAgent, SpireServer};
use sigil_testkit::kube::KubeControlPlane;
use sigil_testkit::{CmdResult, Options, TrustDomain, wait_for};

/// A cluster with one node and an agent pod of `spire:spire-agent`, plus
/// what the refusal cases need.
struct Cluster {
    kube: KubeControlPlane,
    kubeconfig: PathBuf,
    node_uid: String,
    /// A token for the agent pod, audience `spire-server`, in `token`.
    token_path: PathBuf,
}

const CLUSTER: &str = "prod";

fn cluster(dir: &Path) -> Option<Cluster> {
    let kube = KubeControlPlane::start()?;
    let kubeconfig = dir.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    kube.create_namespace("spire");
    kube.create_service_account("spire", "spire-agent");
    let node_uid = kube.create_node("node-a", &[("topology.kubernetes.io/zone", "zone-a")]);
    let pod_uid = agent_pod(&kube, "spire-agent-x1");
    let token = kube.token_request(
        "spire",
        "spire-agent",
        "spire-agent-x1",
        &pod_uid,
        "spire-server",
        3600,
    );
    let token_path = dir.join("token");
    std::fs::write(&token_path, token).unwrap();
    Some(Cluster {
        kube,
        kubeconfig,
        node_uid,
        token_path,
    })
}

fn agent_pod(kube: &KubeControlPlane, name: &str) -> String {
    let uid = kube.create_pod(
        "spire",
        name,
        "spire-agent",
        "node-a",
        &[("app", "spire-agent")],
        &[("agent", "ghcr.io/spiffe/spire-agent:1.15.2")],
    );
    kube.set_pod_status(
        "spire",
        name,
        &serde_json::json!({"phase": "Running", "hostIP": "127.0.0.1"}),
    );
    uid
}

impl Cluster {
    fn agent_id(&self) -> String {
        format!(
            "spiffe://example.org/spire/agent/k8s_psat/{CLUSTER}/{}",
            self.node_uid
        )
    }

    /// The server's NodeAttestor block, as SPIRE documents it.
    fn server_block(&self) -> String {
        format!(
            r#"    NodeAttestor "k8s_psat" {{
        plugin_data {{
            clusters = {{
                "{CLUSTER}" = {{
                    service_account_allow_list = ["spire:spire-agent"]
                    kube_config_file = "{}"
                    allowed_node_label_keys = ["topology.kubernetes.io/zone"]
                    allowed_pod_label_keys = ["app"]
                }}
            }}
        }}
    }}
"#,
            self.kubeconfig.display()
        )
    }
}

/// The agent's NodeAttestor block, as SPIRE documents it.
fn agent_block(cluster: &str, token_path: &Path) -> String {
    format!(
        r#"NodeAttestor "k8s_psat" {{
        plugin_data {{
            cluster = "{cluster}"
            token_path = "{}"
        }}
    }}"#,
        token_path.display()
    )
}

/// A node alias for every agent of the cluster, and a workload entry under
/// it for this test's uid; returns the workload's ID.
fn register_under_cluster_alias(server_cli: impl Fn(&[&str]) -> CmdResult) -> String {
    let alias = format!("spiffe://example.org/k8s/{CLUSTER}/nodes");
    server_cli(&[
        "entry",
        "create",
        "-node",
        "-spiffeID",
        &alias,
        "-selector",
        &format!("k8s_psat:cluster:{CLUSTER}"),
    ])
    .ok();
    let id = "spiffe://example.org/workload/on-k8s-node".to_owned();
    server_cli(&[
        "entry",
        "create",
        "-parentID",
        &alias,
        "-spiffeID",
        &id,
        "-selector",
        &format!("unix:uid:{}", my_uid()),
    ])
    .ok();
    id
}

fn k8s_trust_domain(c: &Cluster) -> TrustDomain {
    TrustDomain::with(Options {
        server_extra_plugins: c.server_block(),
        agent_node_attestor: agent_block(CLUSTER, &c.token_path),
        ..Options::default()
    })
}

#[test]
fn sigil_agent_attests_with_k8s_psat_serves_a_workload_under_a_node_alias_and_reattests_after_evict()
 {
    let dir = tempfile::tempdir().unwrap();
    let Some(c) = cluster(dir.path()) else { return };
    let mut td = k8s_trust_domain(&c);
    td.start_server();
    td.start_agent(0, None);

    let agents = td.server_cli(&["agent", "list"]).ok();
    assert!(agents.stdout.contains(&c.agent_id()), "{}", agents.stdout);
    let shown = td
        .server_cli(&["agent", "show", "-spiffeID", &c.agent_id()])
        .ok();
    for s in [
        "k8s_psat:cluster:prod",
        "k8s_psat:agent_ns:spire",
        "k8s_psat:agent_sa:spire-agent",
        "k8s_psat:agent_pod_name:spire-agent-x1",
        "k8s_psat:agent_node_name:node-a",
        "k8s_psat:agent_node_label:topology.kubernetes.io/zone:zone-a",
        "k8s_psat:agent_pod_label:app:spire-agent",
    ] {
        assert!(shown.stdout.contains(s), "{s} missing: {}", shown.stdout);
    }

    let id = register_under_cluster_alias(|a| td.server_cli(a));
    let fetch = |td: &TrustDomain| {
        wait_for(
            "X509-SVID under the node alias",
            Duration::from_secs(60),
            || {
                let out = td.agent_cli(0, &["api", "fetch", "x509"]);
                (out.code == 0 && out.stdout.contains(&id)).then_some(())
            },
        )
    };
    fetch(&td);

    // Evicted, the agent attests again with its (re-read) token and goes on.
    td.server_cli(&["agent", "evict", "-spiffeID", &c.agent_id()])
        .ok();
    let log = td.path().join("agent0.log");
    wait_for("the agent to re-attest", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let listed = td.server_cli(&["agent", "list"]).stdout;
        (text.contains("re-attesting") && listed.contains(&c.agent_id())).then_some(())
    });
    assert_eq!(td.wait_agent_exit(0, Duration::from_secs(2)), None);
    fetch(&td);
}

#[test]
fn refused_k8s_psat_agents_stop_with_the_servers_precise_reason() {
    let dir = tempfile::tempdir().unwrap();
    let Some(c) = cluster(dir.path()) else { return };
    let kube = &c.kube;
    kube.create_service_account("spire", "intruder");
    let intruder_uid = kube.create_pod(
        "spire",
        "intruder-0",
        "intruder",
        "node-a",
        &[],
        &[("x", "example/x:1")],
    );
    let write = |name: &str, token: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, token).unwrap();
        p
    };
    let intruder = write(
        "intruder",
        kube.token_request(
            "spire",
            "intruder",
            "intruder-0",
            &intruder_uid,
            "spire-server",
            600,
        ),
    );
    let pod_uid = agent_pod(kube, "spire-agent-aud");
    let wrong_audience = write(
        "wrong-audience",
        kube.token_request(
            "spire",
            "spire-agent",
            "spire-agent-aud",
            &pod_uid,
            "https://kubernetes.default.svc",
            600,
        ),
    );
    let gone_uid = agent_pod(kube, "spire-agent-gone");
    let gone_token = kube.token_request(
        "spire",
        "spire-agent",
        "spire-agent-gone",
        &gone_uid,
        "spire-server",
        600,
    );
    let deleted = write("deleted", gone_token.clone());

    let mut td = k8s_trust_domain(&c);
    td.start_server();
    // Reviewed once (an earlier attestation), then deleted: for a few
    // seconds the API server's review cache still vouches for the token, so
    // only the pod lookup can refuse it. This case runs first.
    assert_eq!(
        kube.token_review(&gone_token, &["spire-server"])["authenticated"],
        true
    );
    kube.delete_pod("spire", "spire-agent-gone");
    let cases = [
        (
            CLUSTER,
            deleted,
            "pod spire/spire-agent-gone named by the token does not exist",
        ),
        (
            CLUSTER,
            intruder,
            "\"spire:intruder\" is not an allowed service account",
        ),
        (
            CLUSTER,
            wrong_audience,
            "token not authenticated according to TokenReview API",
        ),
        (
            "staging",
            c.token_path.clone(),
            "not configured for cluster \"staging\"",
        ),
        (
            CLUSTER,
            dir.path().join("no-such-token"),
            "unable to load token from",
        ),
    ];
    for (n, (cluster, token, reason)) in cases.into_iter().enumerate() {
        td.opts.agent_node_attestor = agent_block(cluster, &token);
        let out = td.start_agent_expect_exit(n + 1, None, Duration::from_secs(60));
        assert_ne!(out.code, 0, "{}", out.all());
        assert!(out.all().contains(reason), "want {reason:?}: {}", out.all());
    }
    let agents = td.server_cli(&["agent", "list"]).ok();
    assert!(!agents.stdout.contains("k8s_psat"), "{}", agents.stdout);
}

// ---------------------------------------------------------------------------
// Interop with real SPIRE.

#[test]
fn a_real_spire_agent_attests_to_sigil_server_with_k8s_psat() {
    let Some(spire) = spire::bin_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(c) = cluster(dir.path()) else { return };
    let mut td = k8s_trust_domain(&c);
    td.start_server();
    let agent = SpireAgent::start(&mut td, &spire, &agent_block(CLUSTER, &c.token_path), &[]);
    let agents = td.server_cli(&["agent", "list"]).ok();
    assert!(agents.stdout.contains(&c.agent_id()), "{}", agents.stdout);

    let id = register_under_cluster_alias(|a| td.server_cli(a));
    agent.wait_for_x509_svid(&id);
}

#[test]
fn sigil_agent_attests_to_a_real_spire_server_with_k8s_psat() {
    let Some(spire) = spire::bin_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(c) = cluster(dir.path()) else { return };
    let mut td = TrustDomain::with(Options {
        agent_node_attestor: agent_block(CLUSTER, &c.token_path),
        ..Options::default()
    });
    let server = SpireServer::start(&mut td, &spire, &c.server_block());
    server.serve_sigil_agent(&mut td, 0);
    td.start_agent(0, None);

    let agents = server.cli(&["agent", "list"]).ok();
    assert!(agents.stdout.contains(&c.agent_id()), "{}", agents.stdout);
    let id = register_under_cluster_alias(|a| server.cli(a));
    wait_for(
        "X509-SVID from sigil-agent",
        Duration::from_secs(60),
        || {
            let out = td.agent_cli(0, &["api", "fetch", "x509"]);
            (out.code == 0 && out.stdout.contains(&id)).then_some(())
        },
    );
}
