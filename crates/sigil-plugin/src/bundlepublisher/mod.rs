//! BundlePublisher: pushes the trust domain's bundle somewhere outside the
//! server (a Kubernetes ConfigMap, a bucket) every time it changes, so
//! relying parties that cannot fetch it themselves stay current.

use async_trait::async_trait;
use sigil_spiffe::Bundle;

pub mod conformance;

/// Why a bundle could not be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The destination refused or could not be reached; the server retries
    /// on the next change or tick.
    #[error("publishing the bundle failed: {0}")]
    Destination(String),
}

/// Publishes the bundle of the server's own trust domain.
#[async_trait]
pub trait BundlePublisher: Send + Sync + std::fmt::Debug {
    /// The plugin name.
    fn name(&self) -> &'static str;

    /// Publishes `bundle`, which replaces whatever was published before.
    /// Publishing the same bundle twice must be harmless.
    async fn publish(&self, bundle: &Bundle) -> Result<(), PublishError>;
}
