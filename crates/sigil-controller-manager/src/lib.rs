//! sigil-controller-manager: registers Kubernetes pods with a SPIRE-compatible
//! server (sigil-server or spire-server) from `ClusterSPIFFEID` objects, as
//! SPIRE's spire-controller-manager does, through the SPIRE entry API on the
//! server's admin socket.
#![forbid(unsafe_code)]

pub mod config;
pub mod controller;
pub mod reconcile;
pub mod spec;
pub mod spire;
pub mod template;
