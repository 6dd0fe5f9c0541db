//! The custom resources' group and version, and how each kind is named to
//! the API server. One module per kind holds its schema and rules.

use kube::api::{ApiResource, GroupVersionKind};

/// API group of the custom resources.
pub const GROUP: &str = "spire.spiffe.io";
/// Version of the custom resources.
pub const VERSION: &str = "v1alpha1";

/// A kind of custom resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crd {
    /// Kind, as in `kind:`.
    pub kind: &'static str,
    /// Plural resource name, as in URLs.
    pub plural: &'static str,
}

impl Crd {
    /// The resource for a dynamic client.
    pub fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(GROUP, VERSION, self.kind),
            self.plural,
        )
    }
}

/// The `className` of an object's spec ("" when none or malformed); every
/// kind has the field.
pub fn class_name(spec: &serde_json::Value) -> String {
    spec.get("className")
        .and_then(|c| c.as_str())
        .unwrap_or_default()
        .to_owned()
}

/// What decides which of two objects declaring the same thing wins, as in
/// spire-controller-manager: the older; then one not being deleted; then,
/// of two being deleted, the later deleted; then the lower UID. The derived
/// order is that preference (fields compared in declaration order).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Age {
    /// `metadata.creationTimestamp`, RFC 3339.
    pub created: String,
    /// `metadata.deletionTimestamp`, RFC 3339 (`None` sorts first).
    pub deleted: Option<std::cmp::Reverse<String>>,
    /// `metadata.uid`.
    pub uid: String,
}

impl Age {
    /// Reads an object's age from its metadata.
    pub fn of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Age {
        Age {
            created: meta
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            deleted: meta
                .deletion_timestamp
                .as_ref()
                .map(|t| std::cmp::Reverse(t.0.to_string())),
            uid: meta.uid.clone().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;

    use super::*;

    #[test]
    fn older_then_live_then_later_deleted_then_lower_uid_wins() {
        let age = |created: &str, deleted: Option<&str>, uid: &str| Age {
            created: created.to_owned(),
            deleted: deleted.map(|d| Reverse(d.to_owned())),
            uid: uid.to_owned(),
        };
        let t1 = "2026-01-01T00:00:00Z";
        let t2 = "2026-01-02T00:00:00Z";
        let mut ages = [
            age(t1, Some(t1), "a"),
            age(t2, None, "a"),
            age(t1, None, "b"),
            age(t1, Some(t2), "c"),
            age(t1, None, "a"),
        ];
        ages.sort();
        let order: Vec<(&str, &str)> = ages
            .iter()
            .map(|a| (a.created.as_str(), a.uid.as_str()))
            .collect();
        assert_eq!(
            order,
            [(t1, "a"), (t1, "b"), (t1, "c"), (t1, "a"), (t2, "a")]
        );
        assert_eq!(ages[2].deleted, Some(Reverse(t2.to_owned())));
    }
}
