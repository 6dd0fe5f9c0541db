//! sigil-controller-manager: keeps a SPIRE-compatible server (sigil-server
//! or spire-server) in step with the `spire.spiffe.io/v1alpha1` custom
//! resources, as SPIRE's spire-controller-manager does, through the SPIRE
//! server APIs on the server's admin socket: registration entries for the
//! pods `ClusterSPIFFEID` objects select and for `ClusterStaticEntry`
//! objects, and federation relationships for `ClusterFederatedTrustDomain`
//! objects.
#![forbid(unsafe_code)]

pub mod cluster_federated_trust_domain;
pub mod cluster_spiffe_id;
pub mod cluster_static_entry;
pub mod config;
pub mod controller;
pub mod crd;
pub mod entries;
pub mod health;
pub mod label_selector;
pub mod service_dns;
pub mod spire;
pub mod template;
