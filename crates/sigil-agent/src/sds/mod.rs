//! Envoy's Secret Discovery Service v3 (`envoy.service.secret.v3`), served
//! on the Workload API socket as SPIRE's agent serves it.
//!
//! This module owns what Envoy sees: which secrets a resource name stands
//! for (a SPIFFE ID or [`SdsConfig::default_svid_name`] for a TLS
//! certificate; a trust domain ID, [`SdsConfig::default_bundle_name`] or
//! [`SdsConfig::default_all_bundles_name`] for a validation context), how
//! they are encoded (PEM, SPIFFE certificate validator config), and the
//! stream's version/nonce protocol with its NACK and subscription rules.
//! Callers are attested exactly as Workload API callers are (same
//! [`PeerInfo`](crate::uds::PeerInfo), same attestor), but SDS requests do
//! not carry the `workload.spiffe.io` header and are not asked for it, as
//! in SPIRE. Like the Workload API it never talks to the server and never
//! mints anything: everything comes from the manager's
//! [`Snapshot`](crate::cache::Snapshot).

mod delta;
mod error;
mod handler;
mod resources;
mod stream;

#[cfg(test)]
mod tests;

pub use error::SdsError;
pub use handler::SecretDiscovery;

/// SPIRE's default `sds.default_svid_name`.
pub const DEFAULT_SVID_NAME: &str = "default";
/// SPIRE's default `sds.default_bundle_name`.
pub const DEFAULT_BUNDLE_NAME: &str = "ROOTCA";
/// SPIRE's default `sds.default_all_bundles_name`.
pub const DEFAULT_ALL_BUNDLES_NAME: &str = "ALL";

/// The agent's `sds { ... }` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsConfig {
    /// The TLS certificate resource name standing for the caller's first
    /// X509-SVID (`default_svid_name`).
    pub default_svid_name: String,
    /// The validation context resource name standing for our own trust
    /// domain's bundle (`default_bundle_name`).
    pub default_bundle_name: String,
    /// The validation context resource name standing for our bundle and
    /// the federated bundles the caller may use (`default_all_bundles_name`).
    pub default_all_bundles_name: String,
    /// Send plain `trusted_ca` validation contexts instead of Envoy's SPIFFE
    /// certificate validator (`disable_spiffe_cert_validation`); Envoy's
    /// node metadata key of the same name overrides it per proxy.
    pub disable_spiffe_cert_validation: bool,
}

impl Default for SdsConfig {
    fn default() -> Self {
        SdsConfig {
            default_svid_name: DEFAULT_SVID_NAME.to_owned(),
            default_bundle_name: DEFAULT_BUNDLE_NAME.to_owned(),
            default_all_bundles_name: DEFAULT_ALL_BUNDLES_NAME.to_owned(),
            disable_spiffe_cert_validation: false,
        }
    }
}
