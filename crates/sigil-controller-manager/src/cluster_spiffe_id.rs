//! `ClusterSPIFFEID` (`spire.spiffe.io/v1alpha1`): its spec parsed into
//! templates, selectors and entry settings, the entry it declares for each
//! pod it selects, and the counts its status reports.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::{Deserialize, Serialize};
use sigil_proto::spire::api::types::Entry;

use crate::config::Config;
use crate::crd::{Age, Crd};
use crate::entries::{self, Declared, EntryError};
use crate::label_selector::{Selector, SelectorError};
use crate::service_dns::ServiceNames;
use crate::template::{Data, RenderError, Template, TemplateError};

/// The kind.
pub const CRD: Crd = Crd {
    kind: "ClusterSPIFFEID",
    plural: "clusterspiffeids",
};

/// The spec as written (field names as spire-controller-manager's).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawSpec {
    #[serde(rename = "spiffeIDTemplate", default)]
    spiffe_id_template: String,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    jwt_ttl: Option<String>,
    #[serde(default)]
    dns_name_templates: Vec<String>,
    #[serde(default)]
    workload_selector_templates: Vec<String>,
    #[serde(default)]
    federates_with: Vec<String>,
    #[serde(default)]
    namespace_selector: Option<LabelSelector>,
    #[serde(default)]
    pod_selector: Option<LabelSelector>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    downstream: bool,
    #[serde(rename = "autoPopulateDNSNames", default)]
    auto_populate_dns_names: bool,
    /// Which controller class acts on the object.
    #[serde(default)]
    pub class_name: String,
    #[serde(default)]
    fallback: bool,
    #[serde(default)]
    hint: String,
}

/// A spec ready to render entries from.
#[derive(Debug, Clone)]
pub struct Spec {
    /// SPIFFE ID template.
    pub spiffe_id: Template,
    /// X509-SVID TTL in seconds (0: server default).
    pub x509_ttl: i32,
    /// JWT-SVID TTL in seconds (0: server default).
    pub jwt_ttl: i32,
    /// DNS name templates.
    pub dns_names: Vec<Template>,
    /// Extra workload selector templates.
    pub workload_selectors: Vec<Template>,
    /// Federated trust domains.
    pub federates_with: Vec<String>,
    /// Namespace selector.
    pub namespace_selector: Selector,
    /// Pod selector.
    pub pod_selector: Selector,
    /// Admin entries.
    pub admin: bool,
    /// Downstream entries.
    pub downstream: bool,
    /// Fallback: only when no other object selects the pod.
    pub fallback: bool,
    /// Entry hint.
    pub hint: String,
    /// Add the DNS names of the services whose endpoints list the pod.
    pub auto_populate_dns_names: bool,
}

/// Why a spec cannot be used. The message goes into the object's status.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpecError {
    /// The object's spec is not shaped like a ClusterSPIFFEID's.
    #[error("invalid spec: {0}")]
    Shape(String),
    /// `spiffeIDTemplate` is empty.
    #[error("spiffeIDTemplate is required")]
    NoSpiffeIdTemplate,
    /// A template is malformed or uses something unsupported.
    #[error("{field}: {source}")]
    Template {
        /// The spec field.
        field: &'static str,
        /// What is wrong.
        #[source]
        source: TemplateError,
    },
    /// A TTL or federated trust domain is invalid.
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// A label selector uses an unknown operator or has bad values.
    #[error(transparent)]
    Selector(#[from] SelectorError),
}

fn templates(field: &'static str, list: &[String]) -> Result<Vec<Template>, SpecError> {
    list.iter()
        .map(|s| Template::parse(s).map_err(|source| SpecError::Template { field, source }))
        .collect()
}

impl Spec {
    /// Parses the `spec` of a ClusterSPIFFEID object.
    pub fn parse(spec: &serde_json::Value) -> Result<(Spec, String), SpecError> {
        let raw: RawSpec =
            serde_json::from_value(spec.clone()).map_err(|e| SpecError::Shape(e.to_string()))?;
        if raw.spiffe_id_template.is_empty() {
            return Err(SpecError::NoSpiffeIdTemplate);
        }
        let spiffe_id =
            Template::parse(&raw.spiffe_id_template).map_err(|source| SpecError::Template {
                field: "spiffeIDTemplate",
                source,
            })?;
        Ok((
            Spec {
                spiffe_id,
                x509_ttl: entries::ttl("ttl", raw.ttl.as_deref())?,
                jwt_ttl: entries::ttl("jwtTtl", raw.jwt_ttl.as_deref())?,
                dns_names: templates("dnsNameTemplates", &raw.dns_name_templates)?,
                workload_selectors: templates(
                    "workloadSelectorTemplates",
                    &raw.workload_selector_templates,
                )?,
                federates_with: entries::federates_with(&raw.federates_with)?,
                namespace_selector: Selector::parse(
                    "namespaceSelector",
                    raw.namespace_selector.as_ref(),
                )?,
                pod_selector: Selector::parse("podSelector", raw.pod_selector.as_ref())?,
                admin: raw.admin,
                downstream: raw.downstream,
                fallback: raw.fallback,
                auto_populate_dns_names: raw.auto_populate_dns_names,
                hint: raw.hint,
            },
            raw.class_name,
        ))
    }
}

/// The statistics spire-controller-manager reports in `status.stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Namespaces selected by the namespace selector.
    pub namespaces_selected: u32,
    /// Selected namespaces skipped by `ignoreNamespaces`.
    pub namespaces_ignored: u32,
    /// Pods selected in the remaining namespaces.
    pub pods_selected: u32,
    /// Pods whose entry could not be rendered.
    pub pod_entry_render_failures: u32,
    /// Entries masked by an older object's identical entry.
    pub entries_masked: u32,
    /// Entries this object should have on the server.
    pub entries_to_set: u32,
    /// Entries the server refused to create or update.
    pub entry_failures: u32,
}

impl Stats {
    /// Adds what the entry plan and the server said about this object's
    /// entries.
    pub fn add(&mut self, c: &entries::Counts) {
        self.entries_to_set += c.to_set;
        self.entries_masked += c.masked;
        self.entry_failures += c.failures;
    }
}

/// A ClusterSPIFFEID as the reconciler sees it.
#[derive(Debug, Clone)]
pub struct Object {
    /// `metadata.name`.
    pub name: String,
    /// Which of two objects declaring the same entry wins.
    pub age: Age,
    /// The parsed spec, or why it cannot be used.
    pub spec: Result<Spec, SpecError>,
}

/// Why one pod's entry cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum PodRenderError {
    /// A template failed.
    #[error(transparent)]
    Template(#[from] RenderError),
    /// The rendered entry is invalid.
    #[error(transparent)]
    Entry(#[from] EntryError),
}

/// The parent ID of entries for pods on a node: the agent ID `k8s_psat`
/// gives that node's agent.
pub fn parent_id(cfg: &Config, node_uid: &str) -> String {
    format!(
        "spiffe://{}/spire/agent/k8s_psat/{}/{}",
        cfg.trust_domain, cfg.cluster_name, node_uid
    )
}

/// Renders the entry `spec` declares for `pod` on `node`; `service_names`
/// are the DNS names of the services whose endpoints list the pod (added
/// after the templated names when `autoPopulateDNSNames` is set).
pub fn render(
    cfg: &Config,
    spec: &Spec,
    pod: &Pod,
    node: &Node,
    service_names: &[String],
) -> Result<Entry, PodRenderError> {
    let pod_spec = pod.spec.clone().unwrap_or_default();
    let node_spec = node.spec.clone().unwrap_or_default();
    let data = Data {
        trust_domain: &cfg.trust_domain,
        cluster_name: &cfg.cluster_name,
        cluster_domain: &cfg.cluster_domain,
        pod_meta: &pod.metadata,
        pod_spec: &pod_spec,
        node_meta: &node.metadata,
        node_spec: &node_spec,
    };
    let pod_uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let node_uid = node.metadata.uid.as_deref().unwrap_or_default();
    let id = entries::spiffe_id(
        "spiffeIDTemplate",
        &spec.spiffe_id.render(&data)?,
        Some(&cfg.trust_domain),
    )?;
    let parent = match &cfg.parent_id_template {
        Some(t) => entries::spiffe_id(
            "parentIDTemplate",
            &t.render(&data)?,
            Some(&cfg.trust_domain),
        )?,
        None => entries::spiffe_id("parent ID", &parent_id(cfg, node_uid), None)?,
    };
    let mut selectors = vec![entries::selector(&format!("k8s:pod-uid:{pod_uid}"))?];
    for t in &spec.workload_selectors {
        selectors.push(entries::selector(&t.render(&data)?)?);
    }
    let mut dns_names: Vec<String> = Vec::new();
    let mut add = |d: String| {
        if !dns_names.contains(&d) {
            dns_names.push(d);
        }
    };
    for t in &spec.dns_names {
        add(t.render(&data)?);
    }
    if spec.auto_populate_dns_names {
        service_names.iter().cloned().for_each(&mut add);
    }
    Ok(Entry {
        spiffe_id: Some(id),
        parent_id: Some(parent),
        selectors,
        x509_svid_ttl: spec.x509_ttl,
        jwt_svid_ttl: spec.jwt_ttl,
        federates_with: spec.federates_with.clone(),
        admin: spec.admin,
        downstream: spec.downstream,
        dns_names,
        hint: spec.hint.clone(),
        ..Entry::default()
    })
}

fn labels(m: &Option<BTreeMap<String, String>>) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    m.as_ref().unwrap_or(&EMPTY)
}

/// What the cluster looks like to one reconciliation.
#[derive(Debug, Clone, Copy)]
pub struct Cluster<'a> {
    /// Every namespace.
    pub namespaces: &'a [Namespace],
    /// Every pod.
    pub pods: &'a [Pod],
    /// Every node.
    pub nodes: &'a [Node],
    /// Service DNS names by pod.
    pub services: &'a ServiceNames,
}

/// The entries `objects` declare for the pods they select, each declared by
/// `first + <index in objects>`, and each object's selection counts. A
/// `fallback` object's entry for a pod is dropped when a non-fallback object
/// also renders one for it.
pub fn declare(
    cfg: &Config,
    objects: &[Object],
    first: usize,
    cluster: Cluster<'_>,
) -> (Vec<Declared>, Vec<Stats>) {
    let nodes_by_name: HashMap<&str, &Node> = cluster
        .nodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, n)))
        .collect();
    let mut stats = vec![Stats::default(); objects.len()];
    // Declared entries per pod: (entry, object index, fallback).
    let mut per_pod: BTreeMap<String, Vec<(Entry, usize, bool)>> = BTreeMap::new();
    for (i, obj) in objects.iter().enumerate() {
        let Ok(spec) = &obj.spec else { continue };
        for ns in cluster.namespaces {
            let ns_name = ns.metadata.name.as_deref().unwrap_or_default();
            if !spec.namespace_selector.matches(labels(&ns.metadata.labels)) {
                continue;
            }
            stats[i].namespaces_selected += 1;
            if cfg.is_ignored(ns_name) {
                stats[i].namespaces_ignored += 1;
                continue;
            }
            for pod in cluster.pods {
                if pod.metadata.namespace.as_deref() != Some(ns_name)
                    || !spec.pod_selector.matches(labels(&pod.metadata.labels))
                {
                    continue;
                }
                stats[i].pods_selected += 1;
                // A pod not (yet) on a known node has no agent to parent
                // its entry: skipped without counting a failure.
                let node_name = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .unwrap_or_default();
                let Some(node) = nodes_by_name.get(node_name) else {
                    continue;
                };
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let names = cluster.services.dns_names(&uid, &cfg.cluster_domain);
                match render(cfg, spec, pod, node, &names) {
                    Ok(entry) => {
                        per_pod
                            .entry(uid)
                            .or_default()
                            .push((entry, first + i, spec.fallback))
                    }
                    Err(e) => {
                        tracing::warn!(
                            cluster_spiffe_id = %obj.name,
                            pod = %pod.metadata.name.as_deref().unwrap_or_default(),
                            error = %e,
                            "Failed to render entry"
                        );
                        stats[i].pod_entry_render_failures += 1;
                    }
                }
            }
        }
    }
    let mut declared = Vec::new();
    for (_, entries) in per_pod {
        let has_primary = entries.iter().any(|(_, _, fb)| !fb);
        for (entry, by, fallback) in entries {
            if !(fallback && has_primary) {
                declared.push(Declared { entry, by });
            }
        }
    }
    (declared, stats)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_spec_and_matches_selectors() {
        let (spec, class) = Spec::parse(&json!({
            "spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}",
            "ttl": "1h",
            "podSelector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}],
            },
            "className": "c",
        }))
        .unwrap();
        assert_eq!(class, "c");
        assert_eq!(spec.x509_ttl, 3600);
        let l = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(spec.pod_selector.matches(&l(&[("app", "web")])));
        assert!(
            !spec
                .pod_selector
                .matches(&l(&[("app", "web"), ("tier", "db")]))
        );
        assert!(!spec.pod_selector.matches(&l(&[("app", "db")])));
        assert!(spec.namespace_selector.matches(&l(&[])));
        let e = Spec::parse(&json!({
            "spiffeIDTemplate": "x",
            "podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]},
        }))
        .unwrap_err();
        assert!(e.to_string().contains("Near"), "{e}");
        let e = Spec::parse(&json!({"spiffeIDTemplate": "{{ .PodSpec.Volumes }}"})).unwrap_err();
        assert!(e.to_string().contains("spiffeIDTemplate"), "{e}");
    }

    fn config(extra: &str) -> Config {
        let f: crate::config::FileConfig = serde_saphyr::from_str(&format!(
            "trustDomain: example.org\nclusterName: prod\nclusterDomain: cluster.local\n{extra}"
        ))
        .unwrap();
        Config::resolve(f).unwrap()
    }

    fn object(name: &str, created: &str, spec: serde_json::Value) -> Object {
        Object {
            name: name.to_owned(),
            age: Age {
                created: created.to_owned(),
                uid: name.to_owned(),
                ..Age::default()
            },
            spec: Spec::parse(&spec).map(|(s, _)| s),
        }
    }

    #[test]
    fn pods_get_templated_entries_with_service_names_and_fallbacks_yield() {
        let namespaces: Vec<Namespace> = serde_json::from_value(json!([
            {"metadata": {"name": "shop", "labels": {"kubernetes.io/metadata.name": "shop"}}},
            {"metadata": {"name": "kube-system"}},
        ]))
        .unwrap();
        let pods: Vec<Pod> = serde_json::from_value(json!([
            {"metadata": {"name": "web-0", "namespace": "shop", "uid": "p1", "labels": {"app": "web"}},
             "spec": {"nodeName": "n1", "serviceAccountName": "web", "containers": []}},
            {"metadata": {"name": "job-0", "namespace": "shop", "uid": "p2", "labels": {"app": "job"}},
             "spec": {"nodeName": "n1", "containers": []}},
            {"metadata": {"name": "pending", "namespace": "shop", "uid": "p3", "labels": {"app": "web"}},
             "spec": {"containers": []}},
            {"metadata": {"name": "dns", "namespace": "kube-system", "uid": "p4", "labels": {"app": "web"}},
             "spec": {"nodeName": "n1", "containers": []}},
        ]))
        .unwrap();
        let nodes: Vec<Node> = serde_json::from_value(json!([
            {"metadata": {"name": "n1", "uid": "node-uid-1"}, "spec": {"providerID": "i-1"}},
        ]))
        .unwrap();
        let endpoints: Vec<k8s_openapi::api::core::v1::Endpoints> = serde_json::from_value(json!([
            {"metadata": {"name": "web", "namespace": "shop"}, "subsets": [
                {"addresses": [{"ip": "10.0.0.1", "targetRef": {"kind": "Pod", "uid": "p1"}}]}]},
        ]))
        .unwrap();
        let services = ServiceNames::index(&endpoints);
        let cluster = Cluster {
            namespaces: &namespaces,
            pods: &pods,
            nodes: &nodes,
            services: &services,
        };
        let objects = [
            object(
                "web",
                "2026-01-01T00:00:00Z",
                json!({
                    "spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/sa/{{ .PodSpec.ServiceAccountName }}",
                    "podSelector": {"matchLabels": {"app": "web"}},
                    "dnsNameTemplates": ["{{ .PodMeta.Name }}.example.org", "web"],
                    "autoPopulateDNSNames": true,
                }),
            ),
            object(
                "default",
                "2026-01-02T00:00:00Z",
                json!({"spiffeIDTemplate": "spiffe://example.org/pod/{{ .PodMeta.Name }}", "fallback": true}),
            ),
        ];
        let cfg = config("");
        let (declared, stats) = declare(&cfg, &objects, 3, cluster);
        let mut got: Vec<(String, usize, Vec<String>, String)> = declared
            .iter()
            .map(|d| {
                let id = d.entry.spiffe_id.clone().unwrap();
                let parent = d.entry.parent_id.clone().unwrap();
                (id.path, d.by, d.entry.dns_names.clone(), parent.path)
            })
            .collect();
        got.sort();
        let parent = "/spire/agent/k8s_psat/prod/node-uid-1".to_owned();
        assert_eq!(
            got,
            [
                ("/pod/job-0".to_owned(), 4, vec![], parent.clone()),
                (
                    "/sa/web".to_owned(),
                    3,
                    [
                        "web-0.example.org",
                        "web",
                        "web.shop",
                        "web.shop.svc",
                        "web.shop.svc.cluster.local"
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                    parent
                ),
            ]
        );
        // kube-system is ignored; the pod without a node is selected but
        // has no entry.
        assert_eq!(
            (
                stats[0].namespaces_selected,
                stats[0].namespaces_ignored,
                stats[0].pods_selected
            ),
            (2, 1, 2)
        );
        assert_eq!(stats[1].pods_selected, 3);

        // parentIDTemplate renders from the node.
        let cfg = config(
            "entryIDPrefix: east\nparentIDTemplate: 'spiffe://example.org/node/{{ .NodeMeta.Name }}/{{ .NodeSpec.ProviderID }}'\n",
        );
        let (declared, _) = declare(&cfg, &objects[..1], 0, cluster);
        assert_eq!(
            declared[0].entry.parent_id.clone().unwrap().path,
            "/node/n1/i-1"
        );
    }
}
