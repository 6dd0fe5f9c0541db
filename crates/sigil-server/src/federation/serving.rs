//! Turns the bundle endpoint's configured profile into the certificate
//! source [`endpoint::spawn`](super::endpoint::spawn) serves with, and
//! starts what keeps that certificate current: the file watcher of
//! `serving_cert_file`, the ACME manager of `acme` (its cache in
//! `<data_dir>/bundle-acme`, where SPIRE keeps it).
//!
//! The certificate machinery itself lives in `sigil-acme`; this module
//! only wires config to it and owns no state.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

use super::endpoint::ServingCert;
use crate::config::{BundleEndpointConfig, EndpointServingProfile};

/// The cache directory of the bundle endpoint's ACME account and
/// certificates, under the server's `data_dir` (SPIRE's name).
pub const ACME_CACHE_DIR: &str = "bundle-acme";

/// Why the bundle endpoint's certificate source could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServingError {
    /// `serving_cert_file`: the files could not be loaded at start.
    #[error("failed to load the bundle endpoint serving certificate: {0}")]
    Files(#[source] sigil_acme::Error),
    /// `acme`: the cache directory could not be prepared.
    #[error("failed to set up the bundle endpoint ACME manager: {0}")]
    Acme(#[source] sigil_acme::Error),
}

/// The certificate source for `be`, with its background task started.
/// `agent_tls` is the agent endpoint's TLS config stream, used by
/// `https_spiffe`.
pub fn serving_cert(
    be: &BundleEndpointConfig,
    data_dir: &Path,
    agent_tls: watch::Receiver<Arc<rustls::ServerConfig>>,
) -> Result<ServingCert, ServingError> {
    match &be.profile {
        EndpointServingProfile::HttpsSpiffe => Ok(ServingCert::Spiffe(agent_tls)),
        EndpointServingProfile::ServingCertFile(f) => {
            let resolver = sigil_acme::FileCertResolver::new(&f.cert_file_path, &f.key_file_path)
                .map_err(ServingError::Files)?;
            tokio::spawn(resolver.clone().watch(f.file_sync_interval));
            Ok(ServingCert::Web {
                resolver,
                acme: false,
            })
        }
        EndpointServingProfile::Acme(a) => {
            let mut config = sigil_acme::AcmeConfig::new(
                a.domain_name.clone(),
                a.email.clone(),
                data_dir.join(ACME_CACHE_DIR),
            );
            config.directory_url = a.directory_url.clone();
            config.tos_accepted = a.tos_accepted;
            let manager = sigil_acme::AcmeManager::new(config).map_err(ServingError::Acme)?;
            tokio::spawn(manager.clone().run());
            Ok(ServingCert::Web {
                resolver: manager,
                acme: true,
            })
        }
    }
}
