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

/// `metadata.creationTimestamp` (RFC 3339) and `metadata.uid` of an object:
/// what decides which of two objects declaring the same thing wins (the
/// older, then the lower UID), as in spire-controller-manager.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Age {
    /// Creation time, RFC 3339.
    pub created: String,
    /// UID.
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
            uid: meta.uid.clone().unwrap_or_default(),
        }
    }
}
