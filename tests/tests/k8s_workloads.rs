//! Pods get their identities from a real sigil-agent through the `k8s`
//! workload attestor: pods and their status live in a real kube-apiserver,
//! workload processes are real processes in kubelet-shaped cgroups, and
//! the agent asks the testkit's fake kubelet (a stand-in for the kubelet,
//! which cannot run here; it serves the apiserver's pod list for the node)
//! for `/pods`. Needs root for the cgroups and the control plane
//! (`SIGIL_TEST_KUBE_BIN`); in CI both are there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use sigil_testkit::cgroup::{Hierarchy, PodCgroup, can_create_cgroups, new_ids};
use sigil_testkit::kube::{FakeKubelet, KubeControlPlane};
use sigil_testkit::{CmdResult, Options, TrustDomain, bin, wait_for};

/// Creates a running pod whose one container has `container_id`, and
/// returns the pod's UID.
fn running_pod(
    kube: &KubeControlPlane,
    ns: &str,
    name: &str,
    sa: &str,
    labels: &[(&str, &str)],
    container_id: &str,
) -> String {
    let uid = kube.create_pod(ns, name, sa, "node-1", labels, &[("app", "nginx:1.27")]);
    kube.set_pod_status(
        ns,
        name,
        &json!({
            "phase": "Running",
            "containerStatuses": [{
                "name": "app",
                "image": "nginx:1.27",
                "imageID": "docker.io/library/nginx@sha256:1111111111111111111111111111111111111111111111111111111111111111",
                "containerID": format!("containerd://{container_id}"),
                "ready": true,
                "restartCount": 0,
                "state": { "running": { "startedAt": "2026-01-01T00:00:00Z" } },
            }],
        }),
    );
    uid
}

/// Runs `sigil-agent api fetch x509` from inside `cgroup`, as a process of
/// that container would.
fn fetch_from(td: &TrustDomain, cgroup: &PodCgroup) -> CmdResult {
    let script = format!(
        "echo $$ > {procs} && exec {agent} api fetch x509 -socketPath {sock}",
        procs = cgroup.path().join("cgroup.procs").display(),
        agent = bin("sigil-agent").display(),
        sock = td.agent_socket(0).display(),
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("run sh");
    CmdResult {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_process_in_pod_a_gets_the_svid_of_its_k8s_entry_and_a_process_in_pod_b_does_not() {
    if !can_create_cgroups() {
        eprintln!(
            "NOTICE: k8s workload e2e skipped: creating cgroups needs root (CI runs as root)"
        );
        return;
    }
    let Some(kube) = KubeControlPlane::start() else {
        return;
    };
    kube.create_namespace("team-a");
    kube.create_service_account("team-a", "web");
    kube.create_service_account("team-a", "db");
    kube.create_node("node-1", &[]);
    let (_, id_a) = new_ids();
    let (_, id_b) = new_ids();
    let uid_a = running_pod(&kube, "team-a", "web-0", "web", &[("app", "web")], &id_a);
    let uid_b = running_pod(&kube, "team-a", "db-0", "db", &[("app", "db")], &id_b);
    let kubelet = FakeKubelet::start(&kube, "node-1");
    let hierarchy = Hierarchy::detect();
    let cgroup_a = PodCgroup::create(hierarchy, &uid_a, &id_a);
    let cgroup_b = PodCgroup::create(hierarchy, &uid_b, &id_b);

    let mut td = TrustDomain::with(Options {
        agent_extra_plugins: format!(
            "WorkloadAttestor \"k8s\" {{\n        plugin_data {{\n            kubelet_read_only_port = {}\n        }}\n    }}",
            kubelet.read_only_port()
        ),
        ..Options::default()
    });
    td.start_server();
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    let agent_id = td.join_token_agent_id(&token);
    td.server_cli(&[
        "entry",
        "create",
        "-parentID",
        &agent_id,
        "-spiffeID",
        "spiffe://example.org/team-a/web",
        "-selector",
        "k8s:ns:team-a",
        "-selector",
        "k8s:sa:web",
        "-selector",
        "k8s:pod-label:app:web",
    ])
    .ok();

    let a = wait_for("pod A's SVID", Duration::from_secs(20), || {
        let r = fetch_from(&td, &cgroup_a);
        (r.code == 0).then_some(r)
    });
    assert!(
        a.stdout
            .contains("SPIFFE ID:\t\tspiffe://example.org/team-a/web"),
        "{}",
        a.all()
    );

    let b = fetch_from(&td, &cgroup_b);
    if b.code == 0 {
        td.dump_logs();
    }
    assert_ne!(b.code, 0, "pod B must get nothing: {}", b.all());
    assert!(
        b.all().contains("no identity issued") || b.all().contains("PermissionDenied"),
        "{}",
        b.all()
    );
    assert!(kubelet.pod_requests() >= 1, "the agent asked the kubelet");
}
