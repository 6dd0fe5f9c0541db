//! One reconciliation, as spire-controller-manager does it: render the entry
//! every ClusterSPIFFEID declares for every pod it selects, group declared and
//! current entries by (SPIFFE ID, parent ID, selectors), keep the oldest
//! object's entry where several declare the same one (the others are
//! "masked"), and create, update or delete so the server holds exactly the
//! declared set among the entries this controller owns.
//!
//! [`plan`] is pure (snapshots in, changes and stats out); the controller
//! applies the plan through the entry API.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use serde::Serialize;
use sigil_proto::spire::api::types::{Entry, Selector as PbSelector, Spiffeid as PbId};

use crate::config::Config;
use crate::spec::{Spec, SpecError};
use crate::template::{Data, RenderError};

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

/// A ClusterSPIFFEID as the reconciler sees it.
#[derive(Debug, Clone)]
pub struct Object {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid` (tie-break).
    pub uid: String,
    /// `metadata.creationTimestamp`, RFC 3339 (older wins).
    pub created: String,
    /// The parsed spec, or why it cannot be used.
    pub spec: Result<Spec, SpecError>,
}

/// Changes to make, and the status each object should get.
#[derive(Debug, Default)]
pub struct Plan {
    /// Entries to create, with the index of the object declaring each.
    pub create: Vec<(Entry, usize)>,
    /// Entries to update (ID set), with the declaring object.
    pub update: Vec<(Entry, usize)>,
    /// Owned entries nothing declares.
    pub delete: Vec<Entry>,
    /// Stats per object, in input order.
    pub stats: Vec<Stats>,
}

/// Why one pod's entry cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum PodRenderError {
    /// A template failed.
    #[error(transparent)]
    Template(#[from] RenderError),
    /// The SPIFFE ID is not valid or not in the trust domain.
    #[error("invalid SPIFFE ID {0:?}")]
    SpiffeId(String),
    /// A selector is not `type:value`.
    #[error("invalid workload selector {0:?}")]
    Selector(String),
}

fn labels(m: &Option<BTreeMap<String, String>>) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    m.as_ref().unwrap_or(&EMPTY)
}

/// The parent ID of entries for pods on a node: the agent ID `k8s_psat`
/// gives that node's agent.
pub fn parent_id(cfg: &Config, node_uid: &str) -> String {
    format!(
        "spiffe://{}/spire/agent/k8s_psat/{}/{}",
        cfg.trust_domain, cfg.cluster_name, node_uid
    )
}

fn pb_id(id: &sigil_spiffe::SpiffeId) -> PbId {
    PbId {
        trust_domain: id.trust_domain_name().to_owned(),
        path: id.path().to_owned(),
    }
}

/// The values a template is rendered against for `pod` on `node`, in a
/// cluster named by the three configuration values. Shared with
/// sigil-server's Pod Certificates signer, so both render an ID alike.
pub fn template_data<'a>(
    trust_domain: &'a str,
    cluster_name: &'a str,
    cluster_domain: &'a str,
    pod: &'a Pod,
    node: &'a Node,
) -> Data<'a> {
    let pm = &pod.metadata;
    let ps = pod.spec.as_ref();
    let nm = &node.metadata;
    Data {
        trust_domain,
        cluster_name,
        cluster_domain,
        pod_namespace: pm.namespace.as_deref().unwrap_or_default(),
        pod_name: pm.name.as_deref().unwrap_or_default(),
        pod_uid: pm.uid.as_deref().unwrap_or_default(),
        pod_labels: labels(&pm.labels),
        pod_annotations: labels(&pm.annotations),
        pod_service_account_name: ps
            .and_then(|s| s.service_account_name.as_deref())
            .unwrap_or_default(),
        pod_node_name: ps.and_then(|s| s.node_name.as_deref()).unwrap_or_default(),
        node_name: nm.name.as_deref().unwrap_or_default(),
        node_uid: nm.uid.as_deref().unwrap_or_default(),
        node_labels: labels(&nm.labels),
    }
}

/// Renders `spec`'s SPIFFE ID template against `data`; the result must be
/// a valid SPIFFE ID in `data`'s trust domain.
pub fn render_spiffe_id(
    spec: &Spec,
    data: &Data<'_>,
) -> Result<sigil_spiffe::SpiffeId, PodRenderError> {
    let rendered = spec.spiffe_id.render(data)?;
    sigil_spiffe::SpiffeId::parse(&rendered)
        .ok()
        .filter(|id| id.trust_domain_name() == data.trust_domain)
        .ok_or(PodRenderError::SpiffeId(rendered))
}

/// Renders `spec`'s DNS name templates against `data`, without duplicates,
/// in template order.
pub fn render_dns_names(spec: &Spec, data: &Data<'_>) -> Result<Vec<String>, RenderError> {
    let mut dns_names: Vec<String> = Vec::new();
    for t in &spec.dns_names {
        let d = t.render(data)?;
        if !dns_names.contains(&d) {
            dns_names.push(d);
        }
    }
    Ok(dns_names)
}

/// True when `spec`'s namespace selector matches `ns` and its pod selector
/// matches `pod` (the caller makes sure `pod` is in `ns`).
pub fn selects(spec: &Spec, ns: &Namespace, pod: &Pod) -> bool {
    spec.namespace_selector.matches(labels(&ns.metadata.labels))
        && spec.pod_selector.matches(labels(&pod.metadata.labels))
}

/// The order in which objects declaring the same thing win: the oldest
/// (creation time, then UID) first.
pub fn precedence(o: &Object) -> (&str, &str) {
    (o.created.as_str(), o.uid.as_str())
}

/// Renders the entry `spec` declares for `pod` on `node`.
pub fn render(cfg: &Config, spec: &Spec, pod: &Pod, node: &Node) -> Result<Entry, PodRenderError> {
    let data = template_data(
        &cfg.trust_domain,
        &cfg.cluster_name,
        &cfg.cluster_domain,
        pod,
        node,
    );
    let pod_uid = data.pod_uid;
    let node_uid = data.node_uid;
    let id = render_spiffe_id(spec, &data)?;
    let parent_rendered = parent_id(cfg, node_uid);
    let parent = sigil_spiffe::SpiffeId::parse(&parent_rendered)
        .map_err(|_| PodRenderError::SpiffeId(parent_rendered.clone()))?;
    let mut selectors = vec![PbSelector {
        r#type: "k8s".to_owned(),
        value: format!("pod-uid:{pod_uid}"),
    }];
    for t in &spec.workload_selectors {
        let s = t.render(&data)?;
        match s.split_once(':') {
            Some((ty, value)) if !ty.is_empty() && !value.is_empty() => {
                selectors.push(PbSelector {
                    r#type: ty.to_owned(),
                    value: value.to_owned(),
                })
            }
            _ => return Err(PodRenderError::Selector(s)),
        }
    }
    let dns_names = render_dns_names(spec, &data)?;
    Ok(Entry {
        spiffe_id: Some(pb_id(&id)),
        parent_id: Some(pb_id(&parent)),
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

fn id_str(id: &Option<PbId>) -> String {
    id.as_ref()
        .map(|i| format!("spiffe://{}{}", i.trust_domain, i.path))
        .unwrap_or_default()
}

/// What makes two entries the same one: SPIFFE ID, parent ID and the
/// sorted selectors.
pub type EntryKey = (String, String, Vec<(String, String)>);

/// The identity of an entry for matching declared against current.
pub fn key(e: &Entry) -> EntryKey {
    let mut sel: Vec<(String, String)> = e
        .selectors
        .iter()
        .map(|s| (s.r#type.clone(), s.value.clone()))
        .collect();
    sel.sort();
    (id_str(&e.spiffe_id), id_str(&e.parent_id), sel)
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// True when `current` differs from `declared` in a field updates carry.
pub fn outdated(declared: &Entry, current: &Entry) -> bool {
    declared.x509_svid_ttl != current.x509_svid_ttl
        || declared.jwt_svid_ttl != current.jwt_svid_ttl
        || sorted(&declared.federates_with) != sorted(&current.federates_with)
        || declared.admin != current.admin
        || declared.downstream != current.downstream
        || declared.dns_names != current.dns_names
        || declared.hint != current.hint
}

/// Computes what to change. `current` holds only entries this controller
/// owns.
pub fn plan(
    cfg: &Config,
    objects: &[Object],
    namespaces: &[Namespace],
    pods: &[Pod],
    nodes: &[Node],
    current: Vec<Entry>,
) -> Plan {
    let nodes_by_name: HashMap<&str, &Node> = nodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, n)))
        .collect();
    let mut stats = vec![Stats::default(); objects.len()];
    // Declared entries per pod: (entry, object index, fallback).
    let mut per_pod: BTreeMap<String, Vec<(Entry, usize, bool)>> = BTreeMap::new();
    for (i, obj) in objects.iter().enumerate() {
        let Ok(spec) = &obj.spec else { continue };
        for ns in namespaces {
            let ns_name = ns.metadata.name.as_deref().unwrap_or_default();
            if !spec.namespace_selector.matches(labels(&ns.metadata.labels)) {
                continue;
            }
            stats[i].namespaces_selected += 1;
            if cfg.is_ignored(ns_name) {
                stats[i].namespaces_ignored += 1;
                continue;
            }
            for pod in pods {
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
                match render(cfg, spec, pod, node) {
                    Ok(entry) => {
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        per_pod
                            .entry(uid)
                            .or_default()
                            .push((entry, i, spec.fallback));
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
    // Group declared and current entries by key.
    type Group = (Vec<(Entry, usize)>, Vec<Entry>);
    let mut groups: BTreeMap<EntryKey, Group> = BTreeMap::new();
    for (_, declared) in per_pod {
        let has_primary = declared.iter().any(|(_, _, fb)| !fb);
        for (entry, i, fallback) in declared {
            if fallback && has_primary {
                continue;
            }
            groups.entry(key(&entry)).or_default().0.push((entry, i));
        }
    }
    for entry in current {
        groups.entry(key(&entry)).or_default().1.push(entry);
    }
    let mut out = Plan::default();
    for (_, (mut declared, mut current)) in groups {
        declared.sort_by(|(_, a), (_, b)| precedence(&objects[*a]).cmp(&precedence(&objects[*b])));
        let mut declared = declared.into_iter();
        if let Some((mut entry, i)) = declared.next() {
            stats[i].entries_to_set += 1;
            for (_, other) in declared {
                stats[other].entries_masked += 1;
            }
            if current.is_empty() {
                out.create.push((entry, i));
            } else {
                let existing = current.remove(0);
                if outdated(&entry, &existing) {
                    entry.id = existing.id;
                    out.update.push((entry, i));
                }
            }
        }
        out.delete.extend(current);
    }
    out.stats = stats;
    out
}
