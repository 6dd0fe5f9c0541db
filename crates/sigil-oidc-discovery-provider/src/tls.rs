//! HTTPS for the provider: a rustls server configuration around any
//! certificate resolver, and the `serving_cert_file` resolver, which re-reads
//! the certificate and key files every `file_sync_interval` and swaps them in
//! when they change (a failed reload keeps the previous pair, as SPIRE's).
//!
//! ACME plugs in here as another [`ResolvesServerCert`]; nothing else in the
//! crate knows where certificates come from.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Why a certificate and key pair could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("could not read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file has no PEM certificate.
    #[error("no PEM certificate in {0}")]
    NoCertificate(PathBuf),
    /// The key file has no usable PEM private key.
    #[error("no PEM private key in {path}: {reason}")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        reason: String,
    },
    /// The key is of a type rustls cannot sign with.
    #[error("unsupported private key in {path}: {source}")]
    UnsupportedKey {
        /// The file.
        path: PathBuf,
        /// rustls's error.
        #[source]
        source: rustls::Error,
    },
    /// The key does not match the certificate.
    #[error("the key in {key} does not match the certificate in {cert}: {source}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's error.
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the protocol configuration.
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// A rustls server configuration (aws-lc-rs, TLS 1.2 and 1.3, HTTP/1.1)
/// whose certificate comes from `resolver`.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves the certificate and key from two PEM files, reloaded on change.
#[derive(Debug)]
pub struct FileCertResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Loaded>,
}

#[derive(Debug, Clone)]
struct Loaded {
    key: Arc<CertifiedKey>,
    digest: [u8; 32],
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn digest(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(cert);
    h.update([0]);
    h.update(key);
    h.finalize().into()
}

fn parse(
    cert_path: &Path,
    key_path: &Path,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_path.to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::NoKey {
        path: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|source| {
        TlsError::UnsupportedKey {
            path: key_path.to_owned(),
            source,
        }
    })?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match().map_err(|source| TlsError::Mismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        source,
    })?;
    Ok(Arc::new(ck))
}

impl FileCertResolver {
    /// Loads the pair now; an error here stops startup.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<FileCertResolver, TlsError> {
        let (c, k) = (read(cert_path)?, read(key_path)?);
        let key = parse(cert_path, key_path, &c, &k)?;
        Ok(FileCertResolver {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Loaded {
                key,
                digest: digest(&c, &k),
            }),
        })
    }

    /// Re-reads both files; swaps the pair in if they changed and parse.
    /// Returns whether a new pair is now served.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (c, k) = (read(&self.cert_path)?, read(&self.key_path)?);
        let d = digest(&c, &k);
        if self.loaded().digest == d {
            return Ok(false);
        }
        let key = parse(&self.cert_path, &self.key_path, &c, &k)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Loaded { key, digest: d };
        Ok(true)
    }

    /// Reloads every `interval`, forever (run it as a task).
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.reload() {
                Ok(true) => tracing::info!(
                    cert_file_path = %self.cert_path.display(),
                    "Serving certificate reloaded"
                ),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "Failed to reload the serving certificate; keeping the previous one")
                }
            }
        }
    }

    fn loaded(&self) -> Loaded {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for FileCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.loaded().key)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let kp = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&kp)
            .unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, kp.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn reload_swaps_in_changed_files_and_keeps_the_old_pair_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = write_pair(dir.path(), "one.test");
        let r = FileCertResolver::load(&c, &k).unwrap();
        let first = r.loaded().key;
        assert!(!r.reload().unwrap());
        write_pair(dir.path(), "two.test");
        assert!(r.reload().unwrap());
        let second = r.loaded().key;
        assert_ne!(first.cert[0], second.cert[0]);
        std::fs::write(&k, "not a key").unwrap();
        assert!(matches!(r.reload(), Err(TlsError::NoKey { .. })));
        assert_eq!(r.loaded().key.cert[0], second.cert[0]);
    }

    #[test]
    fn missing_or_mismatched_files_are_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            FileCertResolver::load(&dir.path().join("none"), &dir.path().join("none")),
            Err(TlsError::Read { .. })
        ));
        let (c, _) = write_pair(dir.path(), "one.test");
        let other = dir.path().join("other.pem");
        std::fs::write(&other, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        assert!(matches!(
            FileCertResolver::load(&c, &other),
            Err(TlsError::Mismatch { .. })
        ));
    }
}
