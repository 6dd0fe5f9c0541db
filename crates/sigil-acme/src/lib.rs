//! Serving certificates for sigil's public HTTPS listeners (the SPIFFE
//! bundle endpoint's `https_web` profile, the OIDC discovery provider): the
//! certificate a Web PKI client will check, and the roots such a client
//! checks it against.
//!
//! - [`AcmeManager`] obtains and renews a certificate for one DNS name from
//!   an ACME CA (Let's Encrypt by default), answering the CA's TLS-ALPN-01
//!   challenge on the listener that serves the certificate, as SPIRE's
//!   `acme` option does. Account key and certificates are cached in a
//!   directory so a restart neither re-registers nor re-orders.
//! - [`FileCertResolver`] serves a certificate chain and key read from PEM
//!   files and re-reads them when they change (SPIRE's `serving_cert_file`),
//!   keeping the last good pair when the new files are invalid.
//! - [`web_roots`] is the root store for verifying such servers: the Mozilla
//!   roots of `webpki-roots` plus the PEM certificates named by
//!   `SSL_CERT_FILE` / `SSL_CERT_DIR` (as Go, and so SPIRE, honour them).
//!
//! Both serving halves are a rustls [`ResolvesServerCert`]: put it in a
//! `ServerConfig` (with [`ACME_TLS_ALPN`] among the ALPN protocols for
//! ACME) and the listener serves whatever certificate is current. This crate
//! never opens a listener and never reads a config file; its caller does.
//!
//! [`ResolvesServerCert`]: rustls::server::ResolvesServerCert

#![forbid(unsafe_code)]

mod acme;
mod client;
mod files;
mod roots;

pub use acme::{ACME_TLS_ALPN, AcmeConfig, AcmeManager, LETS_ENCRYPT_DIRECTORY};
pub use files::{DEFAULT_FILE_SYNC_INTERVAL, FileCertResolver};
pub use roots::web_roots;

use std::path::PathBuf;

/// Why a serving certificate could not be loaded, obtained or stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing or malformed.
        reason: String,
    },
    /// The certificate and key do not go together, or rustls refused them.
    #[error("invalid certificate or key: {0}")]
    Key(rustls::Error),
    /// A certificate could not be parsed.
    #[error("invalid certificate: {0}")]
    Certificate(String),
    /// A certificate or CSR could not be built.
    #[error("could not build a certificate or CSR: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The ACME server refused a request or could not be reached.
    #[error("ACME: {0}")]
    Acme(#[from] instant_acme::Error),
    /// The terms of service were not accepted (`tos_accepted`), so no
    /// account can be created.
    #[error(
        "ACME Terms of Service have not been accepted for {directory_url}; see the `tos_accepted` configurable"
    )]
    TermsNotAccepted {
        /// The ACME directory.
        directory_url: String,
    },
    /// The CA did not validate our challenge or refused the order.
    #[error("ACME order for {domain} failed: {reason}")]
    Order {
        /// The domain ordered.
        domain: String,
        /// The CA's reason, or the state the order ended in.
        reason: String,
    },
    /// The cached account could not be read or written.
    #[error("ACME account cache {path}: {reason}")]
    AccountCache {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}
