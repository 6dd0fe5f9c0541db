//! `autoPopulateDNSNames`: the DNS names of the services that route to a
//! pod, as spire-controller-manager finds them. A service's `Endpoints`
//! object (same name and namespace as the service) lists the pods behind it
//! in `subsets[].addresses[].targetRef` and `subsets[].notReadyAddresses[]
//! .targetRef` (kind `Pod`, by UID); each such service gives the pod
//! `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc` and, when the cluster domain is
//! configured, `<svc>.<ns>.svc.<clusterDomain>`.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints};

/// The services (name, namespace) behind each pod UID.
#[derive(Debug, Clone, Default)]
pub struct ServiceNames(HashMap<String, Vec<(String, String)>>);

fn pod_uid(a: &EndpointAddress) -> Option<&str> {
    a.target_ref
        .as_ref()
        .filter(|r| r.kind.as_deref() == Some("Pod"))
        .and_then(|r| r.uid.as_deref())
}

impl ServiceNames {
    /// Indexes `Endpoints` objects by the pods they list.
    pub fn index(endpoints: &[Endpoints]) -> ServiceNames {
        let mut by_pod: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for ep in endpoints {
            let (Some(name), Some(ns)) = (&ep.metadata.name, &ep.metadata.namespace) else {
                continue;
            };
            for subset in ep.subsets.iter().flatten() {
                let addresses = subset.addresses.iter().flatten();
                let not_ready = subset.not_ready_addresses.iter().flatten();
                for uid in addresses.chain(not_ready).filter_map(pod_uid) {
                    let services = by_pod.entry(uid.to_owned()).or_default();
                    let svc = (name.clone(), ns.clone());
                    if !services.contains(&svc) {
                        services.push(svc);
                    }
                }
            }
        }
        ServiceNames(by_pod)
    }

    /// The pod's service DNS names, sorted.
    pub fn dns_names(&self, pod_uid: &str, cluster_domain: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (svc, ns) in self.0.get(pod_uid).into_iter().flatten() {
            out.push(svc.clone());
            out.push(format!("{svc}.{ns}"));
            out.push(format!("{svc}.{ns}.svc"));
            if !cluster_domain.is_empty() {
                out.push(format!("{svc}.{ns}.svc.{cluster_domain}"));
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_gets_the_names_of_every_service_listing_it_ready_or_not() {
        let eps: Vec<Endpoints> = serde_json::from_value(json!([
            {"metadata": {"name": "web", "namespace": "shop"}, "subsets": [
                {"addresses": [{"ip": "10.0.0.1", "targetRef": {"kind": "Pod", "uid": "p1"}}]}]},
            {"metadata": {"name": "api", "namespace": "shop"}, "subsets": [
                {"notReadyAddresses": [{"ip": "10.0.0.1", "targetRef": {"kind": "Pod", "uid": "p1"}}]}]},
            {"metadata": {"name": "other", "namespace": "shop"}, "subsets": [
                {"addresses": [{"ip": "10.0.0.2", "targetRef": {"kind": "Pod", "uid": "p2"}},
                               {"ip": "10.0.0.9", "targetRef": {"kind": "Node", "uid": "p1"}}]}]},
        ]))
        .unwrap();
        let idx = ServiceNames::index(&eps);
        assert_eq!(
            idx.dns_names("p1", "cluster.local"),
            [
                "api",
                "api.shop",
                "api.shop.svc",
                "api.shop.svc.cluster.local",
                "web",
                "web.shop",
                "web.shop.svc",
                "web.shop.svc.cluster.local"
            ]
        );
        assert_eq!(
            idx.dns_names("p2", ""),
            ["other", "other.shop", "other.shop.svc"]
        );
        assert!(idx.dns_names("p3", "cluster.local").is_empty());
    }
}
