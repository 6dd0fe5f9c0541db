//! `ClusterSPIFFEID` (`spire.spiffe.io/v1alpha1`): its spec as stored in the
//! API server, parsed into templates, selectors and entry settings.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;

use crate::template::{Template, TemplateError};

/// API group of the custom resources.
pub const GROUP: &str = "spire.spiffe.io";
/// Version of the custom resources.
pub const VERSION: &str = "v1alpha1";
/// Kind reconciled here.
pub const KIND: &str = "ClusterSPIFFEID";
/// Plural resource name.
pub const PLURAL: &str = "clusterspiffeids";

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
    /// A duration does not parse.
    #[error("{field}: invalid duration {value:?}: {reason}")]
    Duration {
        /// The spec field.
        field: &'static str,
        /// The value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A trust domain name is invalid.
    #[error("federatesWith: invalid trust domain {0:?}")]
    FederatesWith(String),
    /// A label selector uses an unknown operator or has bad values.
    #[error("{field}: {reason}")]
    Selector {
        /// The spec field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A field sigil does not implement yet.
    #[error("{0} is not supported by sigil-controller-manager yet")]
    Unsupported(&'static str),
}

fn ttl(field: &'static str, value: &Option<String>) -> Result<i32, SpecError> {
    let Some(v) = value.as_deref().filter(|v| !v.is_empty()) else {
        return Ok(0);
    };
    let err = |reason: String| SpecError::Duration {
        field,
        value: v.to_owned(),
        reason,
    };
    let d = sigil_cli::duration::parse_duration(v).map_err(|e| err(e.to_string()))?;
    i32::try_from(d.as_secs()).map_err(|_| err("too long".to_owned()))
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
        if raw.auto_populate_dns_names {
            return Err(SpecError::Unsupported("autoPopulateDNSNames"));
        }
        let spiffe_id =
            Template::parse(&raw.spiffe_id_template).map_err(|source| SpecError::Template {
                field: "spiffeIDTemplate",
                source,
            })?;
        for td in &raw.federates_with {
            sigil_spiffe::TrustDomain::new(td).map_err(|_| SpecError::FederatesWith(td.clone()))?;
        }
        Ok((
            Spec {
                spiffe_id,
                x509_ttl: ttl("ttl", &raw.ttl)?,
                jwt_ttl: ttl("jwtTtl", &raw.jwt_ttl)?,
                dns_names: templates("dnsNameTemplates", &raw.dns_name_templates)?,
                workload_selectors: templates(
                    "workloadSelectorTemplates",
                    &raw.workload_selector_templates,
                )?,
                federates_with: raw.federates_with,
                namespace_selector: Selector::parse(
                    "namespaceSelector",
                    raw.namespace_selector.as_ref(),
                )?,
                pod_selector: Selector::parse("podSelector", raw.pod_selector.as_ref())?,
                admin: raw.admin,
                downstream: raw.downstream,
                fallback: raw.fallback,
                hint: raw.hint,
            },
            raw.class_name,
        ))
    }
}

/// True when an object of class `class` belongs to a controller of class
/// `class_name`: without a class name, only classless objects; with one,
/// objects of that class, and classless ones too when `watch_classless`.
pub fn class_selected(class_name: &str, watch_classless: bool, class: &str) -> bool {
    if class_name.is_empty() {
        class.is_empty()
    } else {
        class == class_name || (watch_classless && class.is_empty())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`); an
/// absent or empty one selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

impl Selector {
    /// Parses a `LabelSelector`, refusing unknown operators as the API
    /// machinery does.
    pub fn parse(field: &'static str, s: Option<&LabelSelector>) -> Result<Selector, SpecError> {
        let Some(s) = s else {
            return Ok(Selector::default());
        };
        let mut reqs: Vec<Requirement> = s
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::Equals(k.clone(), v.clone()))
            .collect();
        for e in s.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let bad = |reason: &str| SpecError::Selector {
                field,
                reason: format!("matchExpressions key {:?}: {reason}", e.key),
            };
            reqs.push(match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(bad("values must be non-empty for In and NotIn"));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(bad("values must be empty for Exists and DoesNotExist"));
                }
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                other => return Err(bad(&format!("{other:?} is not a valid operator"))),
            });
        }
        Ok(Selector(reqs))
    }

    /// True when `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
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
}
