//! UpstreamAuthority: a CA outside the server that signs the server's X.509
//! CA, so the trust domain chains up to an existing PKI (or a root kept on
//! disk) instead of a self-signed root per server.

use std::time::Duration;

use async_trait::async_trait;
use sigil_crypto::x509::CaSubject;

pub mod conformance;

/// A request to sign the server's next X.509 CA.
#[derive(Debug, Clone)]
pub struct MintX509CaRequest {
    /// CSR for the CA key (PKCS#10 DER), self-signature checked by the plugin.
    pub csr_der: Vec<u8>,
    /// How long the server would like the CA to live; the plugin may cut it.
    pub preferred_ttl: Duration,
    /// Subject for the CA certificate (server's `ca_subject`).
    pub subject: CaSubject,
}

/// A signed X.509 CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedX509Ca {
    /// The new CA certificate first, then any upstream intermediates needed
    /// to reach a root (never the roots themselves). DER.
    pub ca_chain: Vec<Vec<u8>>,
    /// The upstream roots, which go into the trust bundle. DER.
    pub upstream_roots: Vec<Vec<u8>>,
}

/// What can go wrong upstream.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// `plugin_data` is wrong.
    #[error("UpstreamAuthority {plugin:?}: {reason}")]
    Config {
        /// Plugin name.
        plugin: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The upstream CA's credentials could not be loaded.
    #[error("unable to load upstream CA: {0}")]
    Load(String),
    /// The CSR was refused.
    #[error("invalid CSR: {0}")]
    Csr(String),
    /// Signing failed.
    #[error("unable to sign CSR: {0}")]
    Sign(String),
}

/// Signs the server's intermediate CAs.
#[async_trait]
pub trait UpstreamAuthority: Send + Sync + std::fmt::Debug {
    /// The plugin name (`disk`).
    fn name(&self) -> &'static str;

    /// Signs a CA certificate for the CSR's key.
    async fn mint_x509_ca(&self, req: MintX509CaRequest) -> Result<MintedX509Ca, UpstreamError>;
}
