//! Built-in UpstreamAuthority plugins.

use std::sync::Arc;

use sigil_plugin::upstreamauthority::{UpstreamAuthority, UpstreamError};
use sigil_spiffe::TrustDomain;

pub mod disk;

/// Builds the named UpstreamAuthority from its `plugin_data`.
pub fn build(
    name: &str,
    data: &serde_json::Value,
    td: &TrustDomain,
) -> Result<Arc<dyn UpstreamAuthority>, UpstreamError> {
    match name {
        "disk" => Ok(Arc::new(disk::DiskUpstreamAuthority::from_plugin_data(
            data,
            td.clone(),
        )?)),
        other => Err(UpstreamError::Config {
            plugin: "catalog",
            reason: format!(
                "UpstreamAuthority {other:?} is not supported by sigil yet (supported: disk)"
            ),
        }),
    }
}
