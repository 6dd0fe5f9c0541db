//! The subset of Go's `text/template` that ClusterSPIFFEID templates use:
//! literal text and `{{ .Field }}` actions naming one of a fixed set of
//! fields of the pod, its node and the controller's configuration. Anything
//! else (pipelines, functions, conditionals, other fields) is refused when
//! the template is parsed, naming the action, so a spec we cannot render
//! exactly as spire-controller-manager would is never half-rendered.

use std::collections::BTreeMap;

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
    /// `.PodMeta.Labels.<key>`
    PodLabel(String),
    /// `.PodMeta.Annotations.<key>`
    PodAnnotation(String),
    /// `.PodSpec.ServiceAccountName`
    PodServiceAccountName,
    /// `.PodSpec.NodeName`
    PodNodeName,
    /// `.NodeMeta.Name`
    NodeName,
    /// `.NodeMeta.UID`
    NodeUid,
    /// `.NodeMeta.Labels.<key>`
    NodeLabel(String),
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
        "template {template:?}: unsupported action {{{{{action}}}}} (supported: .TrustDomain, .ClusterName, .ClusterDomain, .PodMeta.Namespace, .PodMeta.Name, .PodMeta.UID, .PodMeta.Labels.<key>, .PodMeta.Annotations.<key>, .PodSpec.ServiceAccountName, .PodSpec.NodeName, .NodeMeta.Name, .NodeMeta.UID, .NodeMeta.Labels.<key>)"
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
        /// `pod label`, `pod annotation` or `node label`.
        what: &'static str,
        /// The key.
        key: String,
    },
}

/// What a template is rendered against.
#[derive(Debug, Clone, Copy)]
pub struct Data<'a> {
    /// Trust domain name.
    pub trust_domain: &'a str,
    /// Cluster name from the configuration.
    pub cluster_name: &'a str,
    /// Cluster domain from the configuration.
    pub cluster_domain: &'a str,
    /// Pod namespace.
    pub pod_namespace: &'a str,
    /// Pod name.
    pub pod_name: &'a str,
    /// Pod UID.
    pub pod_uid: &'a str,
    /// Pod labels.
    pub pod_labels: &'a BTreeMap<String, String>,
    /// Pod annotations.
    pub pod_annotations: &'a BTreeMap<String, String>,
    /// `spec.serviceAccountName`.
    pub pod_service_account_name: &'a str,
    /// `spec.nodeName`.
    pub pod_node_name: &'a str,
    /// Node name.
    pub node_name: &'a str,
    /// Node UID.
    pub node_uid: &'a str,
    /// Node labels.
    pub node_labels: &'a BTreeMap<String, String>,
}

fn parse_field(action: &str) -> Option<Field> {
    let path = action.strip_prefix('.')?;
    let key = |rest: &str| {
        // Go reaches map keys with `.Key` only when they are identifiers.
        (!rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .then(|| rest.to_owned())
    };
    Some(match path {
        "TrustDomain" => Field::TrustDomain,
        "ClusterName" => Field::ClusterName,
        "ClusterDomain" => Field::ClusterDomain,
        "PodMeta.Namespace" => Field::PodNamespace,
        "PodMeta.Name" => Field::PodName,
        "PodMeta.UID" => Field::PodUid,
        "PodSpec.ServiceAccountName" => Field::PodServiceAccountName,
        "PodSpec.NodeName" => Field::PodNodeName,
        "NodeMeta.Name" => Field::NodeName,
        "NodeMeta.UID" => Field::NodeUid,
        _ => {
            if let Some(k) = path.strip_prefix("PodMeta.Labels.") {
                Field::PodLabel(key(k)?)
            } else if let Some(k) = path.strip_prefix("PodMeta.Annotations.") {
                Field::PodAnnotation(key(k)?)
            } else if let Some(k) = path.strip_prefix("NodeMeta.Labels.") {
                Field::NodeLabel(key(k)?)
            } else {
                return None;
            }
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

    /// Renders the template against `data`.
    pub fn render(&self, data: &Data<'_>) -> Result<String, RenderError> {
        let mut out = String::new();
        for part in &self.parts {
            let lookup = |map: &BTreeMap<String, String>, what: &'static str, k: &String| {
                map.get(k).cloned().ok_or_else(|| RenderError::MissingKey {
                    template: self.source.clone(),
                    what,
                    key: k.clone(),
                })
            };
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(f) => match f {
                    Field::TrustDomain => out.push_str(data.trust_domain),
                    Field::ClusterName => out.push_str(data.cluster_name),
                    Field::ClusterDomain => out.push_str(data.cluster_domain),
                    Field::PodNamespace => out.push_str(data.pod_namespace),
                    Field::PodName => out.push_str(data.pod_name),
                    Field::PodUid => out.push_str(data.pod_uid),
                    Field::PodServiceAccountName => out.push_str(data.pod_service_account_name),
                    Field::PodNodeName => out.push_str(data.pod_node_name),
                    Field::NodeName => out.push_str(data.node_name),
                    Field::NodeUid => out.push_str(data.node_uid),
                    Field::PodLabel(k) => out.push_str(&lookup(data.pod_labels, "pod label", k)?),
                    Field::PodAnnotation(k) => {
                        out.push_str(&lookup(data.pod_annotations, "pod annotation", k)?)
                    }
                    Field::NodeLabel(k) => {
                        out.push_str(&lookup(data.node_labels, "node label", k)?)
                    }
                },
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn renders_the_supported_fields_and_refuses_the_rest() {
        let labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        let empty = BTreeMap::new();
        let data = Data {
            trust_domain: "example.org",
            cluster_name: "prod",
            cluster_domain: "cluster.local",
            pod_namespace: "team-a",
            pod_name: "web-0",
            pod_uid: "u1",
            pod_labels: &labels,
            pod_annotations: &empty,
            pod_service_account_name: "web",
            pod_node_name: "node-1",
            node_name: "node-1",
            node_uid: "n1",
            node_labels: &empty,
        };
        let t = Template::parse(
            "spiffe://{{ .TrustDomain }}/ns/{{.PodMeta.Namespace}}/sa/{{ .PodSpec.ServiceAccountName }}/{{ .PodMeta.Labels.app }}/{{ .NodeMeta.UID }}",
        )
        .unwrap();
        assert_eq!(
            t.render(&data).unwrap(),
            "spiffe://example.org/ns/team-a/sa/web/web/n1"
        );
        let missing = Template::parse("{{ .PodMeta.Labels.tier }}").unwrap();
        assert!(matches!(
            missing.render(&data),
            Err(RenderError::MissingKey { .. })
        ));
        for bad in [
            "{{ .PodSpec.Containers }}",
            "{{ printf \"%s\" .TrustDomain }}",
            "{{ if .Admin }}x{{ end }}",
            "x{{ .TrustDomain",
        ] {
            let e = Template::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
