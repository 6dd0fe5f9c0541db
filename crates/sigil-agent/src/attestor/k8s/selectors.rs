//! From a pod (as the kubelet reports it) and a container ID to `k8s`
//! selectors, in SPIRE's spelling and order.
//!
//! Pod selectors, in this order: `sa:`, `ns:`, `node-name:`, `pod-uid:`,
//! `pod-name:`, `pod-image-count:` (entries in `status.containerStatuses`),
//! `pod-init-image-count:` (entries in `status.initContainerStatuses`), then
//! `pod-image:` for every distinct `image` and `imageID` of the containers,
//! `pod-init-image:` likewise for init containers, `pod-label:<key>:<value>`
//! for each label, and for each owner reference `pod-owner:<kind>:<name>`
//! followed by `pod-owner-uid:<kind>:<uid>`. Container selectors follow:
//! `container-name:` and `container-image:` for the container's `image` and
//! `imageID`. SPIRE emits the image sets and labels in Go map order (that
//! is, none); here they are sorted, so the output is deterministic.
//!
//! Nothing here reads files or talks to the kubelet.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use sigil_spiffe::{Selector, SelectorError};

/// The selector type of every selector this attestor produces.
pub const SELECTOR_TYPE: &str = "k8s";

/// The status of the container `container_id` in the pod, looked up in
/// `containerStatuses`, then `initContainerStatuses`, as SPIRE does.
/// Ephemeral (`kubectl debug`) containers are never matched, so a debug
/// session cannot pick up the pod's identity. A status's `containerID` is a URL
/// (`containerd://<id>`, `cri-o://<id>`, `docker://<id>`) whose host part
/// is compared; statuses without one (not started yet) never match.
pub fn find_container<'a>(
    status: &'a PodStatus,
    container_id: &str,
) -> Option<&'a ContainerStatus> {
    let lists = [
        status.container_statuses.as_deref(),
        status.init_container_statuses.as_deref(),
    ];
    lists.into_iter().flatten().flatten().find(|s| {
        s.container_id
            .as_deref()
            .and_then(url_host)
            .is_some_and(|host| host == container_id)
    })
}

/// The host (authority less any user info) of `scheme://host/...`, as Go's
/// `url.Parse(..).Host` gives it for these URLs.
fn url_host(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty() {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (!host.is_empty()).then_some(host)
}

/// The pod selectors (see the module docs).
pub fn pod_selectors(pod: &Pod) -> Result<Vec<Selector>, SelectorError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let containers = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let init_containers = status
        .and_then(|s| s.init_container_statuses.as_deref())
        .unwrap_or_default();
    let or_empty = |s: Option<&String>| s.map(String::as_str).unwrap_or_default().to_owned();

    let mut values = vec![
        format!(
            "sa:{}",
            or_empty(spec.and_then(|s| s.service_account_name.as_ref()))
        ),
        format!("ns:{}", or_empty(meta.namespace.as_ref())),
        format!(
            "node-name:{}",
            or_empty(spec.and_then(|s| s.node_name.as_ref()))
        ),
        format!("pod-uid:{}", or_empty(meta.uid.as_ref())),
        format!("pod-name:{}", or_empty(meta.name.as_ref())),
        format!("pod-image-count:{}", containers.len()),
        format!("pod-init-image-count:{}", init_containers.len()),
    ];
    values.extend(
        image_identifiers(containers)
            .into_iter()
            .map(|i| format!("pod-image:{i}")),
    );
    values.extend(
        image_identifiers(init_containers)
            .into_iter()
            .map(|i| format!("pod-init-image:{i}")),
    );
    for (key, value) in meta.labels.iter().flatten() {
        values.push(format!("pod-label:{key}:{value}"));
    }
    for owner in meta.owner_references.iter().flatten() {
        values.push(format!("pod-owner:{}:{}", owner.kind, owner.name));
        values.push(format!("pod-owner-uid:{}:{}", owner.kind, owner.uid));
    }
    to_selectors(values)
}

/// The workload container's selectors (see the module docs).
pub fn container_selectors(status: &ContainerStatus) -> Result<Vec<Selector>, SelectorError> {
    let mut values = vec![format!("container-name:{}", status.name)];
    values.extend(
        image_identifiers(std::slice::from_ref(status))
            .into_iter()
            .map(|i| format!("container-image:{i}")),
    );
    to_selectors(values)
}

/// Every distinct `image` and `imageID`: registrations may name an image by
/// tag (known before the pull) or by digest (reliable). An empty one (a
/// container not pulled yet) is kept, as in SPIRE.
fn image_identifiers(statuses: &[ContainerStatus]) -> BTreeSet<&str> {
    statuses
        .iter()
        .flat_map(|s| [s.image_id.as_str(), s.image.as_str()])
        .collect()
}

fn to_selectors(values: Vec<String>) -> Result<Vec<Selector>, SelectorError> {
    values
        .iter()
        .map(|v| Selector::new(SELECTOR_TYPE, v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod as the kubelet's `/pods` lists it: a ReplicaSet-owned pod with
    /// an init container that ran, two app containers (one still being
    /// pulled, so with no image ID and no container ID) and an ephemeral
    /// debug container.
    pub(crate) const POD: &str = r#"{
      "kind": "Pod",
      "apiVersion": "v1",
      "metadata": {
        "name": "web-7d4b9c8f6-x2kqp",
        "generateName": "web-7d4b9c8f6-",
        "namespace": "shop",
        "uid": "6f1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b",
        "resourceVersion": "88123",
        "creationTimestamp": "2026-03-01T10:00:00Z",
        "labels": {"app": "web", "pod-template-hash": "7d4b9c8f6"},
        "annotations": {"kubernetes.io/config.seen": "2026-03-01T10:00:00Z"},
        "ownerReferences": [{
          "apiVersion": "apps/v1",
          "kind": "ReplicaSet",
          "name": "web-7d4b9c8f6",
          "uid": "0a0b0c0d-1111-4222-8333-444455556666",
          "controller": true,
          "blockOwnerDeletion": true
        }]
      },
      "spec": {
        "serviceAccountName": "web",
        "nodeName": "node-a",
        "initContainers": [{"name": "migrate", "image": "registry.example/migrate:1.2"}],
        "containers": [
          {"name": "app", "image": "registry.example/web:3.1"},
          {"name": "proxy", "image": "registry.example/proxy:9"}
        ]
      },
      "status": {
        "phase": "Running",
        "initContainerStatuses": [{
          "name": "migrate",
          "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
          "ready": true,
          "restartCount": 0,
          "image": "registry.example/migrate:1.2",
          "imageID": "registry.example/migrate@sha256:1111111111111111111111111111111111111111111111111111111111111111",
          "containerID": "containerd://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        }],
        "containerStatuses": [
          {
            "name": "app",
            "state": {"running": {"startedAt": "2026-03-01T10:00:05Z"}},
            "ready": true,
            "restartCount": 0,
            "image": "registry.example/web:3.1",
            "imageID": "registry.example/web@sha256:2222222222222222222222222222222222222222222222222222222222222222",
            "containerID": "containerd://bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
          },
          {
            "name": "proxy",
            "state": {"waiting": {"reason": "ContainerCreating"}},
            "ready": false,
            "restartCount": 0,
            "image": "registry.example/proxy:9",
            "imageID": ""
          }
        ],
        "ephemeralContainerStatuses": [{
          "name": "debugger",
          "state": {"running": {}},
          "ready": false,
          "restartCount": 0,
          "image": "busybox:1.36",
          "imageID": "docker.io/library/busybox@sha256:3333333333333333333333333333333333333333333333333333333333333333",
          "containerID": "cri-o://cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
        }]
      }
    }"#;

    fn pod() -> Pod {
        serde_json::from_str(POD).expect("pod JSON")
    }

    fn values(selectors: &[Selector]) -> Vec<&str> {
        selectors
            .iter()
            .inspect(|s| assert_eq!(s.kind(), "k8s"))
            .map(Selector::value)
            .collect()
    }

    #[test]
    fn pod_selectors_follow_spire_spelling_and_order() {
        let got = pod_selectors(&pod()).expect("selectors");
        assert_eq!(
            values(&got),
            vec![
                "sa:web",
                "ns:shop",
                "node-name:node-a",
                "pod-uid:6f1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b",
                "pod-name:web-7d4b9c8f6-x2kqp",
                "pod-image-count:2",
                "pod-init-image-count:1",
                // The pulling proxy has no image ID yet: SPIRE keeps the empty one.
                "pod-image:",
                "pod-image:registry.example/proxy:9",
                "pod-image:registry.example/web:3.1",
                "pod-image:registry.example/web@sha256:2222222222222222222222222222222222222222222222222222222222222222",
                "pod-init-image:registry.example/migrate:1.2",
                "pod-init-image:registry.example/migrate@sha256:1111111111111111111111111111111111111111111111111111111111111111",
                "pod-label:app:web",
                "pod-label:pod-template-hash:7d4b9c8f6",
                "pod-owner:ReplicaSet:web-7d4b9c8f6",
                "pod-owner-uid:ReplicaSet:0a0b0c0d-1111-4222-8333-444455556666",
            ]
        );
    }

    #[test]
    fn the_container_is_found_among_app_and_init_containers_but_never_ephemeral_ones() {
        let pod = pod();
        let status = pod.status.as_ref().expect("status");
        let name = |id: &str| find_container(status, id).map(|s| s.name.as_str());
        assert_eq!(name(&"b".repeat(64)), Some("app"));
        assert_eq!(name(&"a".repeat(64)), Some("migrate"));
        assert_eq!(name(&"c".repeat(64)), None, "ephemeral debug container");
        assert_eq!(name(&"d".repeat(64)), None);
        assert_eq!(
            name(""),
            None,
            "a status without a container ID never matches"
        );
    }

    #[test]
    fn container_selectors_name_the_container_and_both_image_forms() {
        let pod = pod();
        let status = pod.status.as_ref().expect("status");
        let app = find_container(status, &"b".repeat(64)).expect("app");
        let got = container_selectors(app).expect("selectors");
        assert_eq!(
            values(&got),
            vec![
                "container-name:app",
                "container-image:registry.example/web:3.1",
                "container-image:registry.example/web@sha256:2222222222222222222222222222222222222222222222222222222222222222",
            ]
        );
    }

    #[test]
    fn a_pod_with_little_filled_in_still_gets_every_pod_selector() {
        let pod: Pod = serde_json::from_str(r#"{"metadata":{"uid":"u1"}}"#).expect("pod");
        let got = pod_selectors(&pod).expect("selectors");
        assert_eq!(
            values(&got),
            vec![
                "sa:",
                "ns:",
                "node-name:",
                "pod-uid:u1",
                "pod-name:",
                "pod-image-count:0",
                "pod-init-image-count:0"
            ]
        );
    }

    #[test]
    fn container_id_urls_compare_by_host() {
        assert_eq!(url_host("containerd://abc"), Some("abc"));
        assert_eq!(url_host("docker://abc/extra"), Some("abc"));
        assert_eq!(url_host("abc"), None);
        assert_eq!(url_host("://abc"), None);
        assert_eq!(url_host("cri-o://"), None);
    }
}
