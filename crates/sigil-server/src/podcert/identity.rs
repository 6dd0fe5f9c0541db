//! Who the requesting pod is, and which SPIFFE ID it gets.
//!
//! First the request must describe its pod truthfully: the pod named by
//! `spec.podName` exists with `spec.podUID`, runs as `spec.serviceAccountName`
//! (whose UID is `spec.serviceAccountUID`) on `spec.nodeName` (whose UID is
//! `spec.nodeUID`). Anything else is denied.
//!
//! Then the ID, as sigil-controller-manager would register it (its template
//! and selector code is used here, not copied):
//! - the ClusterSPIFFEIDs of our class (`class_name`; without one, only
//!   objects without a class) whose `namespaceSelector` and `podSelector`
//!   select the pod; `fallback` objects count only when no other does;
//! - of those, the oldest (creation time, then UID) whose `spiffeIDTemplate`
//!   renders to an ID in our trust domain wins; a certificate holds one ID,
//!   so where the controller-manager would register several entries, the
//!   one it keeps when entries collide is the one used;
//! - none selects the pod: `spiffe://<td>/ns/<namespace>/sa/<service account>`
//!   when `default_spiffe_id` is on, otherwise the request is denied.
//!
//! Pure: snapshots of API objects in, a decision out.

use std::time::Duration;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use sigil_controller_manager::cluster_spiffe_id::{Object, Spec};
use sigil_controller_manager::crd::Age;
use sigil_controller_manager::template::{Data, RenderError};
use sigil_spiffe::{SpiffeId, TrustDomain};

/// The condition reason for a request whose pod does not exist.
pub const POD_NOT_FOUND: &str = "PodNotFound";
/// The condition reason for a pod UID that is not the pod's.
pub const POD_UID_MISMATCH: &str = "PodUIDMismatch";
/// The condition reason for a service account that is not the pod's, or
/// does not exist with that UID.
pub const SERVICE_ACCOUNT_MISMATCH: &str = "ServiceAccountMismatch";
/// The condition reason for a node that is not the pod's, or does not
/// exist with that UID.
pub const NODE_MISMATCH: &str = "NodeMismatch";
/// The condition reason when no identity applies to the pod.
pub const NO_IDENTITY: &str = "NoIdentity";
/// The condition reason when the selecting ClusterSPIFFEIDs render no
/// valid ID.
pub const INVALID_IDENTITY: &str = "InvalidIdentity";

/// Why a request is denied: the `Denied` condition's reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// A CamelCase reason (one of this module's constants, or
    /// [`PopError::reason`](super::pop::PopError::reason)).
    pub reason: &'static str,
    /// What exactly was wrong.
    pub message: String,
}

impl Denial {
    fn new(reason: &'static str, message: String) -> Denial {
        Denial { reason, message }
    }
}

/// What the request says about its pod (its `spec`).
#[derive(Debug, Clone, Copy)]
pub struct Claims<'a> {
    /// The request's namespace (the pod's).
    pub namespace: &'a str,
    /// `spec.podName`.
    pub pod_name: &'a str,
    /// `spec.podUID`.
    pub pod_uid: &'a str,
    /// `spec.serviceAccountName`.
    pub service_account_name: &'a str,
    /// `spec.serviceAccountUID`.
    pub service_account_uid: &'a str,
    /// `spec.nodeName`.
    pub node_name: &'a str,
    /// `spec.nodeUID`.
    pub node_uid: &'a str,
}

fn uid<K: kube::Resource>(o: &K) -> &str {
    o.meta().uid.as_deref().unwrap_or_default()
}

/// Checks the claims against the objects as the API server has them
/// (`None`: not found).
pub fn check_claims(
    c: &Claims<'_>,
    pod: Option<&Pod>,
    sa: Option<&ServiceAccount>,
    node: Option<&Node>,
) -> Result<(), Denial> {
    let pod_ref = format!("{}/{}", c.namespace, c.pod_name);
    let Some(pod) = pod else {
        return Err(Denial::new(
            POD_NOT_FOUND,
            format!("pod {pod_ref} does not exist"),
        ));
    };
    if uid(pod) != c.pod_uid {
        return Err(Denial::new(
            POD_UID_MISMATCH,
            format!(
                "pod {pod_ref} has UID {:?}, not the requested {:?}",
                uid(pod),
                c.pod_uid
            ),
        ));
    }
    let spec = pod.spec.as_ref();
    // The API server's admission sets "default" when a pod names none.
    let pod_sa = spec
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    if pod_sa != c.service_account_name {
        return Err(Denial::new(
            SERVICE_ACCOUNT_MISMATCH,
            format!(
                "pod {pod_ref} runs as service account {pod_sa:?}, not the requested {:?}",
                c.service_account_name
            ),
        ));
    }
    match sa {
        None => {
            return Err(Denial::new(
                SERVICE_ACCOUNT_MISMATCH,
                format!(
                    "service account {}/{} does not exist",
                    c.namespace, c.service_account_name
                ),
            ));
        }
        Some(sa) if uid(sa) != c.service_account_uid => {
            return Err(Denial::new(
                SERVICE_ACCOUNT_MISMATCH,
                format!(
                    "service account {}/{} has UID {:?}, not the requested {:?}",
                    c.namespace,
                    c.service_account_name,
                    uid(sa),
                    c.service_account_uid
                ),
            ));
        }
        Some(_) => {}
    }
    let pod_node = spec
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default();
    if pod_node != c.node_name {
        return Err(Denial::new(
            NODE_MISMATCH,
            format!(
                "pod {pod_ref} is on node {pod_node:?}, not the requested {:?}",
                c.node_name
            ),
        ));
    }
    match node {
        None => Err(Denial::new(
            NODE_MISMATCH,
            format!("node {} does not exist", c.node_name),
        )),
        Some(n) if uid(n) != c.node_uid => Err(Denial::new(
            NODE_MISMATCH,
            format!(
                "node {} has UID {:?}, not the requested {:?}",
                c.node_name,
                uid(n),
                c.node_uid
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// A ClusterSPIFFEID as read from the API server.
#[derive(Debug, Clone)]
pub struct ClusterSpiffeId {
    /// Name, UID, creation time and parsed spec.
    pub object: Object,
    /// `spec.className`.
    pub class_name: String,
}

impl ClusterSpiffeId {
    /// Reads an object's metadata and `spec` (as JSON).
    pub fn new(name: &str, uid: &str, created: &str, spec: &serde_json::Value) -> ClusterSpiffeId {
        let class_name = spec
            .get("className")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_owned();
        ClusterSpiffeId {
            object: Object {
                name: name.to_owned(),
                age: Age {
                    created: created.to_owned(),
                    deleted: None,
                    uid: uid.to_owned(),
                },
                spec: Spec::parse(spec).map(|(s, _)| s),
            },
            class_name,
        }
    }
}

/// The settings that shape the decision.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// Our trust domain.
    pub trust_domain: &'a TrustDomain,
    /// `{{ .ClusterName }}`.
    pub cluster_name: &'a str,
    /// `{{ .ClusterDomain }}`.
    pub cluster_domain: &'a str,
    /// Only ClusterSPIFFEIDs of this class ("" for classless ones).
    pub class_name: &'a str,
    /// Fall back to `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub default_spiffe_id: bool,
}

/// Where an identity came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The named ClusterSPIFFEID.
    ClusterSpiffeId(String),
    /// The default rule.
    Default,
}

/// The identity a pod gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The SPIFFE ID (the certificate's URI SAN).
    pub id: SpiffeId,
    /// DNS SANs (from `dnsNameTemplates`).
    pub dns_names: Vec<String>,
    /// The ClusterSPIFFEID's `ttl`, when it sets one.
    pub ttl: Option<Duration>,
    /// Which rule gave it.
    pub source: Source,
}

/// Decides the identity of `pod` (in `ns`, on `node`) from `objects`.
pub fn decide(
    s: &Settings<'_>,
    objects: &[ClusterSpiffeId],
    ns: &Namespace,
    pod: &Pod,
    node: &Node,
) -> Result<Identity, Denial> {
    let mut selecting: Vec<(&Object, &Spec)> = objects
        .iter()
        .filter(|o| class_selected(s.class_name, &o.class_name))
        .filter_map(|o| o.object.spec.as_ref().ok().map(|spec| (&o.object, spec)))
        .filter(|(_, spec)| {
            spec.namespace_selector.matches(labels(&ns.metadata.labels))
                && spec.pod_selector.matches(labels(&pod.metadata.labels))
        })
        .collect();
    if selecting.iter().any(|(_, spec)| !spec.fallback) {
        selecting.retain(|(_, spec)| !spec.fallback);
    }
    selecting.sort_by(|(a, _), (b, _)| a.age.cmp(&b.age));

    let ns_name = ns.metadata.name.as_deref().unwrap_or_default();
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let pod_spec = pod.spec.clone().unwrap_or_default();
    let node_spec = node.spec.clone().unwrap_or_default();
    let data = Data {
        trust_domain: s.trust_domain.name(),
        cluster_name: s.cluster_name,
        cluster_domain: s.cluster_domain,
        pod_meta: &pod.metadata,
        pod_spec: &pod_spec,
        node_meta: &node.metadata,
        node_spec: &node_spec,
    };
    let mut failures = Vec::new();
    for (o, spec) in &selecting {
        let rendered = render_spiffe_id(spec, &data).and_then(|id| {
            let dns = render_dns_names(spec, &data)?;
            Ok((id, dns))
        });
        match rendered {
            Ok((id, dns_names)) => {
                return Ok(Identity {
                    id,
                    dns_names,
                    ttl: u64::try_from(spec.x509_ttl)
                        .ok()
                        .filter(|t| *t > 0)
                        .map(Duration::from_secs),
                    source: Source::ClusterSpiffeId(o.name.clone()),
                });
            }
            Err(e) => failures.push(format!("ClusterSPIFFEID {:?}: {e}", o.name)),
        }
    }
    if !failures.is_empty() {
        return Err(Denial::new(
            INVALID_IDENTITY,
            format!(
                "no ClusterSPIFFEID selecting pod {ns_name}/{pod_name} renders a valid SPIFFE ID in trust domain {}: {}",
                s.trust_domain,
                failures.join("; ")
            ),
        ));
    }
    if s.default_spiffe_id {
        let id = s
            .trust_domain
            .id_with_path(&format!(
                "/ns/{ns_name}/sa/{}",
                pod_spec.service_account_name.as_deref().unwrap_or_default()
            ))
            .map_err(|e| {
                Denial::new(
                    INVALID_IDENTITY,
                    format!("the default SPIFFE ID for pod {ns_name}/{pod_name} is invalid: {e}"),
                )
            })?;
        return Ok(Identity {
            id,
            dns_names: Vec::new(),
            ttl: None,
            source: Source::Default,
        });
    }
    let class = if s.class_name.is_empty() {
        "without a className".to_owned()
    } else {
        format!("with className {:?}", s.class_name)
    };
    Err(Denial::new(
        NO_IDENTITY,
        format!(
            "no ClusterSPIFFEID {class} selects pod {ns_name}/{pod_name}, and default_spiffe_id is off"
        ),
    ))
}

/// Whether an object of class `class` is ours: with a class name, only its
/// objects; without one, only classless objects (as sigil-controller-manager
/// without `watchClassless`).
fn class_selected(ours: &str, class: &str) -> bool {
    class == ours
}

fn labels(m: &Option<BTreeMap<String, String>>) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    m.as_ref().unwrap_or(&EMPTY)
}

/// Why a selecting ClusterSPIFFEID gives no usable identity.
#[derive(Debug, thiserror::Error)]
enum IdentityRenderError {
    /// A template failed.
    #[error(transparent)]
    Template(#[from] RenderError),
    /// The rendered ID is not a SPIFFE ID of our trust domain.
    #[error("spiffeIDTemplate rendered {0:?}, not a SPIFFE ID in this trust domain")]
    SpiffeId(String),
}

/// Renders `spec`'s SPIFFE ID template; the result must be a SPIFFE ID in
/// `data`'s trust domain.
fn render_spiffe_id(spec: &Spec, data: &Data<'_>) -> Result<SpiffeId, IdentityRenderError> {
    let rendered = spec.spiffe_id.render(data)?;
    SpiffeId::parse(&rendered)
        .ok()
        .filter(|id| id.trust_domain_name() == data.trust_domain)
        .ok_or(IdentityRenderError::SpiffeId(rendered))
}

/// Renders `spec`'s DNS name templates, without duplicates, in order.
fn render_dns_names(spec: &Spec, data: &Data<'_>) -> Result<Vec<String>, IdentityRenderError> {
    let mut names: Vec<String> = Vec::new();
    for t in &spec.dns_names {
        let d = t.render(data)?;
        if !names.contains(&d) {
            names.push(d);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde_json::json;

    use super::*;

    fn meta(name: &str, uid: &str, ns: Option<&str>, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: ns.map(str::to_owned),
            uid: Some(uid.to_owned()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ObjectMeta::default()
        }
    }

    fn pod(labels: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: meta("web-0", "pod-uid", Some("team-a"), labels),
            spec: Some(PodSpec {
                service_account_name: Some("web".into()),
                node_name: Some("node-1".into()),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    fn ns(labels: &[(&str, &str)]) -> Namespace {
        Namespace {
            metadata: meta("team-a", "ns-uid", None, labels),
            ..Namespace::default()
        }
    }

    fn node() -> Node {
        Node {
            metadata: meta("node-1", "node-uid", None, &[("zone", "z1")]),
            ..Node::default()
        }
    }

    fn sa() -> ServiceAccount {
        ServiceAccount {
            metadata: meta("web", "sa-uid", Some("team-a"), &[]),
            ..ServiceAccount::default()
        }
    }

    fn csid(name: &str, created: &str, spec: serde_json::Value) -> ClusterSpiffeId {
        ClusterSpiffeId::new(name, &format!("uid-{name}"), created, &spec)
    }

    fn settings<'a>(td: &'a TrustDomain, class: &'a str, default: bool) -> Settings<'a> {
        Settings {
            trust_domain: td,
            cluster_name: "prod",
            cluster_domain: "cluster.local",
            class_name: class,
            default_spiffe_id: default,
        }
    }

    const CLAIMS: Claims<'static> = Claims {
        namespace: "team-a",
        pod_name: "web-0",
        pod_uid: "pod-uid",
        service_account_name: "web",
        service_account_uid: "sa-uid",
        node_name: "node-1",
        node_uid: "node-uid",
    };

    #[test]
    fn a_request_matching_its_pod_service_account_and_node_passes() {
        check_claims(&CLAIMS, Some(&pod(&[])), Some(&sa()), Some(&node())).unwrap();
    }

    #[test]
    fn a_request_that_misdescribes_its_pod_is_denied_with_the_reason() {
        let p = pod(&[]);
        let (s, n) = (sa(), node());
        type Case<'a> = (
            Claims<'a>,
            Option<&'a Pod>,
            Option<&'a ServiceAccount>,
            Option<&'a Node>,
            &'a str,
        );
        let cases: Vec<Case<'_>> = vec![
            (CLAIMS, None, Some(&s), Some(&n), POD_NOT_FOUND),
            (
                Claims {
                    pod_uid: "other",
                    ..CLAIMS
                },
                Some(&p),
                Some(&s),
                Some(&n),
                POD_UID_MISMATCH,
            ),
            (
                Claims {
                    service_account_name: "admin",
                    ..CLAIMS
                },
                Some(&p),
                Some(&s),
                Some(&n),
                SERVICE_ACCOUNT_MISMATCH,
            ),
            (CLAIMS, Some(&p), None, Some(&n), SERVICE_ACCOUNT_MISMATCH),
            (
                Claims {
                    service_account_uid: "other",
                    ..CLAIMS
                },
                Some(&p),
                Some(&s),
                Some(&n),
                SERVICE_ACCOUNT_MISMATCH,
            ),
            (
                Claims {
                    node_name: "node-2",
                    ..CLAIMS
                },
                Some(&p),
                Some(&s),
                Some(&n),
                NODE_MISMATCH,
            ),
            (CLAIMS, Some(&p), Some(&s), None, NODE_MISMATCH),
            (
                Claims {
                    node_uid: "other",
                    ..CLAIMS
                },
                Some(&p),
                Some(&s),
                Some(&n),
                NODE_MISMATCH,
            ),
        ];
        for (c, p, s, n, want) in cases {
            let d = check_claims(&c, p, s, n).unwrap_err();
            assert_eq!(d.reason, want, "{}", d.message);
            assert!(!d.message.is_empty());
        }
    }

    #[test]
    fn a_selecting_cluster_spiffeid_gives_its_rendered_id_dns_names_and_ttl() {
        let td = TrustDomain::new("example.org").unwrap();
        let objects = [
            csid(
                "web",
                "2026-01-01T00:00:00Z",
                json!({
                    "spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/{{ .ClusterName }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}/{{ .NodeMeta.Labels.zone }}",
                    "podSelector": {"matchLabels": {"app": "web"}},
                    "dnsNameTemplates": ["{{ .PodMeta.Name }}.{{ .PodMeta.Namespace }}.svc"],
                    "ttl": "6h",
                }),
            ),
            csid(
                "db",
                "2025-01-01T00:00:00Z",
                json!({
                    "spiffeIDTemplate": "spiffe://example.org/db",
                    "podSelector": {"matchLabels": {"app": "db"}},
                }),
            ),
        ];
        let id = decide(
            &settings(&td, "", false),
            &objects,
            &ns(&[]),
            &pod(&[("app", "web")]),
            &node(),
        )
        .unwrap();
        assert_eq!(
            id.id.as_str(),
            "spiffe://example.org/prod/ns/team-a/sa/web/z1"
        );
        assert_eq!(id.dns_names, ["web-0.team-a.svc"]);
        assert_eq!(id.ttl, Some(Duration::from_secs(6 * 3600)));
        assert_eq!(id.source, Source::ClusterSpiffeId("web".into()));
    }

    #[test]
    fn the_namespace_selector_must_match_the_pods_namespace() {
        let td = TrustDomain::new("example.org").unwrap();
        let objects = [csid(
            "prod-only",
            "2026-01-01T00:00:00Z",
            json!({
                "spiffeIDTemplate": "spiffe://example.org/prod",
                "namespaceSelector": {"matchLabels": {"env": "prod"}},
            }),
        )];
        let s = settings(&td, "", false);
        let got = decide(&s, &objects, &ns(&[("env", "prod")]), &pod(&[]), &node()).unwrap();
        assert_eq!(got.id.as_str(), "spiffe://example.org/prod");
        let d = decide(&s, &objects, &ns(&[("env", "dev")]), &pod(&[]), &node()).unwrap_err();
        assert_eq!(d.reason, NO_IDENTITY);
    }

    #[test]
    fn only_cluster_spiffeids_of_the_configured_class_count() {
        let td = TrustDomain::new("example.org").unwrap();
        let objects = [
            csid(
                "classless",
                "2025-01-01T00:00:00Z",
                json!({"spiffeIDTemplate": "spiffe://example.org/classless"}),
            ),
            csid(
                "ours",
                "2026-01-01T00:00:00Z",
                json!({"spiffeIDTemplate": "spiffe://example.org/ours", "className": "sigil"}),
            ),
        ];
        let (n, p, nd) = (ns(&[]), pod(&[]), node());
        let got = decide(&settings(&td, "sigil", false), &objects, &n, &p, &nd).unwrap();
        assert_eq!(got.id.as_str(), "spiffe://example.org/ours");
        let got = decide(&settings(&td, "", false), &objects, &n, &p, &nd).unwrap();
        assert_eq!(got.id.as_str(), "spiffe://example.org/classless");
        let d = decide(&settings(&td, "other", false), &objects, &n, &p, &nd).unwrap_err();
        assert_eq!(d.reason, NO_IDENTITY);
        assert!(d.message.contains("className \"other\""), "{}", d.message);
    }

    #[test]
    fn the_oldest_selecting_object_wins_and_fallbacks_only_count_alone() {
        let td = TrustDomain::new("example.org").unwrap();
        let s = settings(&td, "", false);
        let (n, p, nd) = (ns(&[]), pod(&[]), node());
        let newer = csid(
            "newer",
            "2026-02-01T00:00:00Z",
            json!({"spiffeIDTemplate": "spiffe://example.org/newer"}),
        );
        let older = csid(
            "older",
            "2026-01-01T00:00:00Z",
            json!({"spiffeIDTemplate": "spiffe://example.org/older"}),
        );
        let fallback = csid(
            "fallback",
            "2020-01-01T00:00:00Z",
            json!({"spiffeIDTemplate": "spiffe://example.org/fallback", "fallback": true}),
        );
        let got = decide(&s, &[newer.clone(), older, fallback.clone()], &n, &p, &nd).unwrap();
        assert_eq!(got.id.as_str(), "spiffe://example.org/older");
        let got = decide(&s, &[fallback, newer], &n, &p, &nd).unwrap();
        assert_eq!(got.id.as_str(), "spiffe://example.org/newer");
    }

    #[test]
    fn the_default_rule_gives_the_namespace_and_service_account_id_only_when_on() {
        let td = TrustDomain::new("example.org").unwrap();
        let (n, p, nd) = (ns(&[]), pod(&[]), node());
        let got = decide(&settings(&td, "", true), &[], &n, &p, &nd).unwrap();
        assert_eq!(got.id.as_str(), "spiffe://example.org/ns/team-a/sa/web");
        assert_eq!(got.source, Source::Default);
        assert_eq!(got.ttl, None);
        let d = decide(&settings(&td, "", false), &[], &n, &p, &nd).unwrap_err();
        assert_eq!(d.reason, NO_IDENTITY);
        assert_eq!(
            d.message,
            "no ClusterSPIFFEID without a className selects pod team-a/web-0, and default_spiffe_id is off"
        );
    }

    #[test]
    fn an_id_outside_the_trust_domain_or_a_missing_label_is_denied_as_invalid() {
        let td = TrustDomain::new("example.org").unwrap();
        let (n, p, nd) = (ns(&[]), pod(&[]), node());
        for template in [
            "spiffe://other.org/x",
            "spiffe://example.org/{{ .PodMeta.Labels.missing }}",
        ] {
            let objects = [csid(
                "bad",
                "2026-01-01T00:00:00Z",
                json!({ "spiffeIDTemplate": template }),
            )];
            // Even with the default rule on: a selecting object that cannot
            // render is an operator error to surface, not to paper over.
            let d = decide(&settings(&td, "", true), &objects, &n, &p, &nd).unwrap_err();
            assert_eq!(d.reason, INVALID_IDENTITY, "{}", d.message);
            assert!(d.message.contains("\"bad\""), "{}", d.message);
        }
    }
}
