//! The `k8s` workload attestor on real processes in real cgroups.
//!
//! Each test creates cgroups shaped like the kubelet's (cgroup v2 with the
//! systemd driver: `kubepods.slice/kubepods-besteffort.slice/
//! kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope`; cgroup v1
//! with cgroupfs: `pids/kubepods/besteffort/pod<uid>/<id>`), moves a real
//! `sleep` process into one by writing its PID to `cgroup.procs`, and asks
//! the attestor about it while a fake kubelet serves the pod list. Creating
//! cgroups needs root (CI runs as root); elsewhere the tests print a notice
//! and pass without checking anything.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Response;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sigil_agent::attestor::k8s::K8sAttestor;
use sigil_agent::attestor::{AttestError, WorkloadAttestor};
use sigil_agent::uds::PeerInfo;
use sigil_testkit::cgroup::{Hierarchy, PodCgroup, new_ids};

// ------------------------------------------------------------- fixtures --

/// The tests share parent cgroups (`kubepods...`) that the first to need one
/// creates and removes, so they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether this test can create cgroups; prints why not when it cannot.
fn can_create_cgroups(test: &str) -> bool {
    if !rustix::process::geteuid().is_root() {
        eprintln!("NOTICE: {test} skipped: creating cgroups needs root (CI runs as root)");
        return false;
    }
    true
}

/// A `sleep` child, killed and reaped when dropped.
struct Sleeper(Child);

impl Sleeper {
    fn spawn() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("120")
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn sleep"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn peer(&self) -> PeerInfo {
        PeerInfo::for_process(self.pid() as i32, 0, 0)
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A pod as the kubelet's `/pods` lists it, with its container in the status
/// only once `started`.
fn pod(uid: &str, name: &str, container_id: &str, started: bool) -> Value {
    let statuses = if started {
        json!([{
            "name": "server",
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
            "ready": true,
            "restartCount": 0,
            "image": format!("registry.example/{name}:2.0"),
            "imageID": format!("registry.example/{name}@sha256:{}", "e".repeat(64)),
            "containerID": format!("containerd://{container_id}"),
        }])
    } else {
        json!([])
    };
    json!({
        "metadata": {
            "name": format!("{name}-0"),
            "namespace": "apps",
            "uid": uid,
            "labels": {"app": name},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "StatefulSet", "name": name,
                "uid": "11111111-2222-4333-8444-555555555555", "controller": true
            }]
        },
        "spec": {
            "serviceAccountName": format!("{name}-sa"),
            "nodeName": "node-1",
            "containers": [{"name": "server", "image": format!("registry.example/{name}:2.0")}]
        },
        "status": {"phase": "Running", "containerStatuses": statuses}
    })
}

fn pod_list(pods: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods
    }))
    .expect("json")
}

/// What the attestor must say about the `server` container of `pod(uid,
/// name, ..)`.
fn expected(uid: &str, name: &str) -> Vec<String> {
    let digest = format!("registry.example/{name}@sha256:{}", "e".repeat(64));
    vec![
        format!("sa:{name}-sa"),
        "ns:apps".into(),
        "node-name:node-1".into(),
        format!("pod-uid:{uid}"),
        format!("pod-name:{name}-0"),
        "pod-image-count:1".into(),
        "pod-init-image-count:0".into(),
        format!("pod-image:registry.example/{name}:2.0"),
        format!("pod-image:{digest}"),
        format!("pod-label:app:{name}"),
        format!("pod-owner:StatefulSet:{name}"),
        "pod-owner-uid:StatefulSet:11111111-2222-4333-8444-555555555555".into(),
        "container-name:server".into(),
        format!("container-image:registry.example/{name}:2.0"),
        format!("container-image:{digest}"),
    ]
}

type Respond = Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = Vec<u8>> + Send>> + Send + Sync>;

/// A fake standing in for the kubelet, which cannot run here: it answers
/// `GET /pods` on the read-only port (plain HTTP on 127.0.0.1) with
/// `respond(n)` for the n-th request (from 1), and counts requests.
struct FakeKubelet {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeKubelet {
    async fn start(respond: Respond) -> FakeKubelet {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (count, respond) = (count.clone(), respond.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: http::Request<_>| {
                        assert_eq!(req.uri().path(), "/pods");
                        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                        let body = respond(n);
                        async move {
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from(body.await),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        FakeKubelet {
            addr,
            requests,
            task,
        }
    }

    /// Serves the same pod list to every request, after `delay`.
    async fn serving(body: Vec<u8>, delay: Duration) -> FakeKubelet {
        let body = Arc::new(body);
        FakeKubelet::start(Arc::new(move |_| {
            let body = body.clone();
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                body.to_vec()
            })
        }))
        .await
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn attestor(&self, extra: Value) -> K8sAttestor {
        let mut data = json!({
            "kubelet_read_only_port": self.addr.port(),
            "max_poll_attempts": 20,
            "poll_retry_interval": "50ms",
        });
        if let (Some(map), Value::Object(extra)) = (data.as_object_mut(), extra) {
            map.extend(extra);
        }
        K8sAttestor::from_plugin_data(&data).expect("attestor")
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn attest(attestor: &K8sAttestor, peer: &PeerInfo) -> Result<Vec<String>, AttestError> {
    let selectors = WorkloadAttestor::attest(attestor, peer).await?;
    assert!(selectors.iter().all(|s| s.kind() == "k8s"));
    Ok(selectors.iter().map(|s| s.value().to_owned()).collect())
}

// ---------------------------------------------------------------- tests --

#[tokio::test]
async fn a_process_in_a_pods_container_cgroup_gets_that_pods_and_containers_selectors() {
    if !can_create_cgroups("a_process_in_a_pods_container_cgroup...") {
        return;
    }
    let _turn = SERIAL.lock().await;
    let hierarchy = Hierarchy::detect();
    let (uid, id) = new_ids();
    let cgroup = PodCgroup::create(hierarchy, &uid, &id);
    let workload = Sleeper::spawn();
    cgroup.add(workload.pid());

    let kubelet = FakeKubelet::serving(
        pod_list(vec![pod(&uid, "ledger", &id, true)]),
        Duration::ZERO,
    )
    .await;
    let got = attest(&kubelet.attestor(json!({})), &workload.peer())
        .await
        .unwrap_or_else(|e| panic!("attest in {hierarchy:?}: {e}"));
    assert_eq!(got, expected(&uid, "ledger"), "{hierarchy:?}");
    assert_eq!(kubelet.requests(), 1);
}

#[tokio::test]
async fn a_process_in_another_pods_cgroup_gets_that_other_pods_selectors() {
    if !can_create_cgroups("a_process_in_another_pods_cgroup...") {
        return;
    }
    let _turn = SERIAL.lock().await;
    let hierarchy = Hierarchy::detect();
    let (uid_a, id_a) = new_ids();
    let (uid_b, id_b) = new_ids();
    let cgroup_a = PodCgroup::create(hierarchy, &uid_a, &id_a);
    let cgroup_b = PodCgroup::create(hierarchy, &uid_b, &id_b);
    let in_a = Sleeper::spawn();
    let in_b = Sleeper::spawn();
    cgroup_a.add(in_a.pid());
    cgroup_b.add(in_b.pid());

    let kubelet = FakeKubelet::serving(
        pod_list(vec![
            pod(&uid_a, "ledger", &id_a, true),
            pod(&uid_b, "billing", &id_b, true),
        ]),
        Duration::ZERO,
    )
    .await;
    let attestor = kubelet.attestor(json!({}));
    assert_eq!(
        attest(&attestor, &in_a.peer()).await.expect("attest a"),
        expected(&uid_a, "ledger")
    );
    assert_eq!(
        attest(&attestor, &in_b.peer()).await.expect("attest b"),
        expected(&uid_b, "billing")
    );
}

#[tokio::test]
async fn a_process_outside_any_pod_gets_no_selectors_and_the_kubelet_is_not_asked() {
    if !can_create_cgroups("a_process_outside_any_pod...") {
        return;
    }
    let _turn = SERIAL.lock().await;
    let (uid, id) = new_ids();
    // A pod exists on the node, but this process is not in it.
    let _cgroup = PodCgroup::create(Hierarchy::detect(), &uid, &id);
    let outsider = Sleeper::spawn();
    let kubelet = FakeKubelet::serving(
        pod_list(vec![pod(&uid, "ledger", &id, true)]),
        Duration::ZERO,
    )
    .await;
    let got = attest(&kubelet.attestor(json!({})), &outsider.peer())
        .await
        .expect("attest");
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(kubelet.requests(), 0);
}

#[tokio::test]
async fn a_container_that_appears_in_the_status_only_after_a_few_polls_is_still_attested() {
    if !can_create_cgroups("a_container_that_appears...") {
        return;
    }
    let _turn = SERIAL.lock().await;
    let (uid, id) = new_ids();
    let cgroup = PodCgroup::create(Hierarchy::detect(), &uid, &id);
    let workload = Sleeper::spawn();
    cgroup.add(workload.pid());

    // The kubelet lists the pod at once but the container only from its
    // fourth answer on (the runtime has started it; the status lags).
    let (pod_uid, container) = (uid.clone(), id.clone());
    let kubelet = FakeKubelet::start(Arc::new(move |n| {
        let body = pod_list(vec![pod(&pod_uid, "ledger", &container, n >= 4)]);
        Box::pin(async move { body })
    }))
    .await;
    let got = attest(&kubelet.attestor(json!({})), &workload.peer())
        .await
        .expect("attest after retries");
    assert_eq!(got, expected(&uid, "ledger"));
    assert_eq!(kubelet.requests(), 4, "one pod list per poll, none after");
}

#[tokio::test]
async fn concurrent_attestations_share_one_kubelet_fetch() {
    if !can_create_cgroups("concurrent_attestations_share_one_kubelet_fetch") {
        return;
    }
    let _turn = SERIAL.lock().await;
    let (uid, id) = new_ids();
    let cgroup = PodCgroup::create(Hierarchy::detect(), &uid, &id);
    let workloads: Vec<Sleeper> = (0..8).map(|_| Sleeper::spawn()).collect();
    for w in &workloads {
        cgroup.add(w.pid());
    }
    // A slow kubelet, so that the attestations overlap the request.
    let kubelet = FakeKubelet::serving(
        pod_list(vec![pod(&uid, "ledger", &id, true)]),
        Duration::from_millis(200),
    )
    .await;
    let attestor = kubelet.attestor(json!({"poll_retry_interval": "1s"}));
    let peers: Vec<PeerInfo> = workloads.iter().map(Sleeper::peer).collect();
    let results = futures::future::join_all(peers.iter().map(|p| attest(&attestor, p))).await;
    for result in results {
        assert_eq!(result.expect("attest"), expected(&uid, "ledger"));
    }
    assert_eq!(
        kubelet.requests(),
        1,
        "one /pods request for 8 attestations"
    );
}
