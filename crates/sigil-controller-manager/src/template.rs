//! The subset of Go's `text/template` that ClusterSPIFFEID templates use:
//! literal text and `{{ .Field }}` actions naming one of a fixed set of
//! fields of the pod, its node and the controller's configuration. Anything
//! else (pipelines, functions, conditionals, other fields) is refused when
//! the template is parsed, naming the action, so a spec we cannot render
//! exactly as spire-controller-manager would is never half-rendered.

use k8s_openapi::api::core::v1::{NodeSpec, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// A string-to-string map of the pod or node a template may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Map {
    /// `.PodMeta.Labels`
    PodLabels,
    /// `.PodMeta.Annotations`
    PodAnnotations,
    /// `.NodeMeta.Labels`
    NodeLabels,
    /// `.NodeMeta.Annotations`
    NodeAnnotations,
}

impl Map {
    fn parse(path: &str) -> Option<Map> {
        Some(match path {
            ".PodMeta.Labels" => Map::PodLabels,
            ".PodMeta.Annotations" => Map::PodAnnotations,
            ".NodeMeta.Labels" => Map::NodeLabels,
            ".NodeMeta.Annotations" => Map::NodeAnnotations,
            _ => return None,
        })
    }

    fn describe(self) -> &'static str {
        match self {
            Map::PodLabels => "pod label",
            Map::PodAnnotations => "pod annotation",
            Map::NodeLabels => "node label",
            Map::NodeAnnotations => "node annotation",
        }
    }
}

/// A field a template may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `.TrustDomain`
    TrustDomain,
    /// `.ClusterName`
    ClusterName,
    /// `.ClusterDomain`
    ClusterDomain,
    /// `.PodMeta.Namespace`
    PodNamespace,
    /// `.PodMeta.Name`
    PodName,
    /// `.PodMeta.UID`
    PodUid,
    /// `.PodSpec.ServiceAccountName`
    PodServiceAccountName,
    /// `.PodSpec.NodeName`
    PodNodeName,
    /// `.PodSpec.Hostname`
    PodHostname,
    /// `.PodSpec.Subdomain`
    PodSubdomain,
    /// `.PodSpec.SchedulerName`
    PodSchedulerName,
    /// `.PodSpec.PriorityClassName`
    PodPriorityClassName,
    /// `.NodeMeta.Name`
    NodeName,
    /// `.NodeMeta.UID`
    NodeUid,
    /// `.NodeSpec.ProviderID`
    NodeProviderId,
    /// `.NodeSpec.PodCIDR`
    NodePodCidr,
    /// `.PodMeta.Labels.<key>`, `index .PodMeta.Labels "<key>"` and the
    /// same for `.PodMeta.Annotations`, `.NodeMeta.Labels`,
    /// `.NodeMeta.Annotations`.
    Key(Map, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Field),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// Why a template cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without a matching `}}`.
    #[error("template {template:?}: unclosed action")]
    Unclosed {
        /// The template.
        template: String,
    },
    /// An action other than a supported field.
    #[error(
        "template {template:?}: unsupported action {{{{{action}}}}} (supported: .TrustDomain, .ClusterName, .ClusterDomain, .PodMeta.Namespace, .PodMeta.Name, .PodMeta.UID, .PodMeta.Labels.<key>, .PodMeta.Annotations.<key>, .PodSpec.ServiceAccountName, .PodSpec.NodeName, .PodSpec.Hostname, .PodSpec.Subdomain, .PodSpec.SchedulerName, .PodSpec.PriorityClassName, .NodeMeta.Name, .NodeMeta.UID, .NodeMeta.Labels.<key>, .NodeMeta.Annotations.<key>, .NodeSpec.ProviderID, .NodeSpec.PodCIDR, index <labels or annotations> \"<key>\")"
    )]
    Unsupported {
        /// The template.
        template: String,
        /// The text between the braces.
        action: String,
    },
}

/// Why a parsed template cannot be rendered for one pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A label or annotation the template names is not on the object (Go
    /// would render `<no value>`, which no ID or selector accepts).
    #[error("template {template:?}: {what} {key:?} is not set")]
    MissingKey {
        /// The template.
        template: String,
        /// `pod label`, `pod annotation`, `node label` or `node annotation`.
        what: &'static str,
        /// The key.
        key: String,
    },
}

/// What a template is rendered against: the configuration, the pod and the
/// node it runs on, as spire-controller-manager's template data.
#[derive(Debug, Clone, Copy)]
pub struct Data<'a> {
    /// Trust domain name.
    pub trust_domain: &'a str,
    /// Cluster name from the configuration.
    pub cluster_name: &'a str,
    /// Cluster domain from the configuration.
    pub cluster_domain: &'a str,
    /// The pod's metadata.
    pub pod_meta: &'a ObjectMeta,
    /// The pod's spec.
    pub pod_spec: &'a PodSpec,
    /// The node's metadata.
    pub node_meta: &'a ObjectMeta,
    /// The node's spec.
    pub node_spec: &'a NodeSpec,
}

fn string_literal(s: &str) -> Option<String> {
    // Go string literals as templates write keys: "..." or `...`, without
    // escapes (a key with a backslash or quote is refused, not guessed at).
    let inner = s
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .or_else(|| s.strip_prefix('`').and_then(|r| r.strip_suffix('`')))?;
    (!inner.is_empty() && !inner.contains(['"', '`', '\\'])).then(|| inner.to_owned())
}

fn parse_field(action: &str) -> Option<Field> {
    if let Some(args) = action.strip_prefix("index ") {
        let mut words = args.split_whitespace();
        let map = Map::parse(words.next()?)?;
        let key = string_literal(words.next()?)?;
        return words.next().is_none().then_some(Field::Key(map, key));
    }
    let key = |rest: &str| {
        // Go reaches map keys with `.Key` only when they are identifiers.
        (!rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .then(|| rest.to_owned())
    };
    Some(match action {
        ".TrustDomain" => Field::TrustDomain,
        ".ClusterName" => Field::ClusterName,
        ".ClusterDomain" => Field::ClusterDomain,
        ".PodMeta.Namespace" => Field::PodNamespace,
        ".PodMeta.Name" => Field::PodName,
        ".PodMeta.UID" => Field::PodUid,
        ".PodSpec.ServiceAccountName" => Field::PodServiceAccountName,
        ".PodSpec.NodeName" => Field::PodNodeName,
        ".PodSpec.Hostname" => Field::PodHostname,
        ".PodSpec.Subdomain" => Field::PodSubdomain,
        ".PodSpec.SchedulerName" => Field::PodSchedulerName,
        ".PodSpec.PriorityClassName" => Field::PodPriorityClassName,
        ".NodeMeta.Name" => Field::NodeName,
        ".NodeMeta.UID" => Field::NodeUid,
        ".NodeSpec.ProviderID" => Field::NodeProviderId,
        ".NodeSpec.PodCIDR" => Field::NodePodCidr,
        _ => {
            let (map, k) = action.rsplit_once('.')?;
            Field::Key(Map::parse(map)?, key(k)?)
        }
    })
}

impl Template {
    /// Parses `source`.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| TemplateError::Unclosed {
                template: source.to_owned(),
            })?;
            let raw = &after[..end];
            let field =
                parse_field(raw.trim_matches(' ')).ok_or_else(|| TemplateError::Unsupported {
                    template: source.to_owned(),
                    action: raw.to_owned(),
                })?;
            parts.push(Part::Field(field));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True when the template reads the pod (`.PodMeta`, `.PodSpec`).
    pub fn reads_pod(&self) -> bool {
        self.parts.iter().any(|p| match p {
            Part::Text(_) => false,
            Part::Field(f) => matches!(
                f,
                Field::PodNamespace
                    | Field::PodName
                    | Field::PodUid
                    | Field::PodServiceAccountName
                    | Field::PodNodeName
                    | Field::PodHostname
                    | Field::PodSubdomain
                    | Field::PodSchedulerName
                    | Field::PodPriorityClassName
                    | Field::Key(Map::PodLabels | Map::PodAnnotations, _)
            ),
        })
    }

    /// Renders the template against `data`.
    pub fn render(&self, data: &Data<'_>) -> Result<String, RenderError> {
        fn s(v: &Option<String>) -> &str {
            v.as_deref().unwrap_or_default()
        }
        let mut out = String::new();
        for part in &self.parts {
            let Part::Field(f) = part else {
                if let Part::Text(t) = part {
                    out.push_str(t);
                }
                continue;
            };
            let (pm, ps, nm, ns) = (data.pod_meta, data.pod_spec, data.node_meta, data.node_spec);
            match f {
                Field::TrustDomain => out.push_str(data.trust_domain),
                Field::ClusterName => out.push_str(data.cluster_name),
                Field::ClusterDomain => out.push_str(data.cluster_domain),
                Field::PodNamespace => out.push_str(s(&pm.namespace)),
                Field::PodName => out.push_str(s(&pm.name)),
                Field::PodUid => out.push_str(s(&pm.uid)),
                Field::PodServiceAccountName => out.push_str(s(&ps.service_account_name)),
                Field::PodNodeName => out.push_str(s(&ps.node_name)),
                Field::PodHostname => out.push_str(s(&ps.hostname)),
                Field::PodSubdomain => out.push_str(s(&ps.subdomain)),
                Field::PodSchedulerName => out.push_str(s(&ps.scheduler_name)),
                Field::PodPriorityClassName => out.push_str(s(&ps.priority_class_name)),
                Field::NodeName => out.push_str(s(&nm.name)),
                Field::NodeUid => out.push_str(s(&nm.uid)),
                Field::NodeProviderId => out.push_str(s(&ns.provider_id)),
                Field::NodePodCidr => out.push_str(s(&ns.pod_cidr)),
                Field::Key(map, k) => {
                    let values = match map {
                        Map::PodLabels => &pm.labels,
                        Map::PodAnnotations => &pm.annotations,
                        Map::NodeLabels => &nm.labels,
                        Map::NodeAnnotations => &nm.annotations,
                    };
                    let v = values.as_ref().and_then(|m| m.get(k)).ok_or_else(|| {
                        RenderError::MissingKey {
                            template: self.source.clone(),
                            what: map.describe(),
                            key: k.clone(),
                        }
                    })?;
                    out.push_str(v);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use super::*;

    fn meta(name: &str, uid: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("team-a".to_owned()),
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

    #[test]
    fn renders_the_supported_fields_and_refuses_the_rest() {
        let pod_meta = meta(
            "web-0",
            "u1",
            &[("app", "web"), ("app.kubernetes.io/name", "shop")],
        );
        let pod_spec = PodSpec {
            service_account_name: Some("web".to_owned()),
            node_name: Some("node-1".to_owned()),
            hostname: Some("h".to_owned()),
            ..PodSpec::default()
        };
        let node_meta = meta("node-1", "n1", &[]);
        let node_spec = NodeSpec {
            provider_id: Some("aws:///eu-west-1a/i-0abc".to_owned()),
            ..NodeSpec::default()
        };
        let data = Data {
            trust_domain: "example.org",
            cluster_name: "prod",
            cluster_domain: "cluster.local",
            pod_meta: &pod_meta,
            pod_spec: &pod_spec,
            node_meta: &node_meta,
            node_spec: &node_spec,
        };
        let t = Template::parse(
            "spiffe://{{ .TrustDomain }}/ns/{{.PodMeta.Namespace}}/sa/{{ .PodSpec.ServiceAccountName }}/{{ .PodMeta.Labels.app }}/{{ .NodeMeta.UID }}/{{ .PodSpec.Hostname }}",
        )
        .unwrap();
        assert_eq!(
            t.render(&data).unwrap(),
            "spiffe://example.org/ns/team-a/sa/web/web/n1/h"
        );
        let t = Template::parse(
            "{{ index .PodMeta.Labels \"app.kubernetes.io/name\" }}|{{ .NodeSpec.ProviderID }}|{{ .NodeSpec.PodCIDR }}",
        )
        .unwrap();
        assert_eq!(t.render(&data).unwrap(), "shop|aws:///eu-west-1a/i-0abc|");
        for missing in [
            "{{ .PodMeta.Labels.tier }}",
            "{{ index .NodeMeta.Annotations `a/b` }}",
        ] {
            let t = Template::parse(missing).unwrap();
            assert!(
                matches!(t.render(&data), Err(RenderError::MissingKey { .. })),
                "{missing}"
            );
        }
        for bad in [
            "{{ .PodSpec.Containers }}",
            "{{ printf \"%s\" .TrustDomain }}",
            "{{ if .Admin }}x{{ end }}",
            "{{ index .PodMeta.Labels \"a\" \"b\" }}",
            "{{ index .PodSpec \"a\" }}",
            "x{{ .TrustDomain",
        ] {
            let e = Template::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
