//! A serving certificate read from PEM files (SPIRE's `serving_cert_file`,
//! its `diskcertmanager`): loaded once at start (a failure there is fatal),
//! then re-read whenever either file's modification time changes, checked
//! every `file_sync_interval`. A pair that fails to load is logged and the
//! last good one keeps being served.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// SPIRE's default `file_sync_interval`.
pub const DEFAULT_FILE_SYNC_INTERVAL: Duration = Duration::from_secs(3600);

/// Serves the certificate chain in `cert_file_path` with the key in
/// `key_file_path`.
#[derive(Debug)]
pub struct FileCertResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Current>,
}

#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    cert_modified: Option<SystemTime>,
    key_modified: Option<SystemTime>,
}

impl FileCertResolver {
    /// Loads the pair, failing if it is unreadable or invalid.
    pub fn new(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, Error> {
        let (cert_modified, key_modified) = (modified(cert_path), modified(key_path));
        let key = load_pair(cert_path, key_path)?;
        Ok(Arc::new(FileCertResolver {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Current {
                key,
                cert_modified,
                key_modified,
            }),
        }))
    }

    /// The chain served now (leaf first, DER).
    pub fn current_chain(&self) -> Vec<CertificateDer<'static>> {
        self.current().cert.clone()
    }

    /// Re-reads the files if either changed since the last good load.
    /// Returns `Ok(true)` when a new pair is now served, `Ok(false)` when
    /// nothing changed, and the error when the new files are invalid (the
    /// old pair is still served).
    pub fn sync(&self) -> Result<bool, Error> {
        let stat = |p: &Path| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .map_err(|source| Error::Io {
                    path: p.to_owned(),
                    source,
                })
        };
        let (cert_m, key_m) = (stat(&self.cert_path)?, stat(&self.key_path)?);
        {
            let cur = self.lock_read();
            if cur.cert_modified == Some(cert_m) && cur.key_modified == Some(key_m) {
                return Ok(false);
            }
        }
        let key = load_pair(&self.cert_path, &self.key_path)?;
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        *cur = Current {
            key,
            cert_modified: Some(cert_m),
            key_modified: Some(key_m),
        };
        Ok(true)
    }

    /// Calls [`FileCertResolver::sync`] every `interval`, logging what
    /// happened. Runs until the task is dropped.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        tracing::info!(interval = ?interval, "Started watching certificate files");
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            match self.sync() {
                Ok(true) => tracing::info!(
                    cert_file_path = %self.cert_path.display(),
                    "Loaded provided certificate with success"
                ),
                Ok(false) => {}
                Err(e) => tracing::error!(
                    error = %e,
                    "Failed to load certificate; still serving the previous one"
                ),
            }
        }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.lock_read().key.clone()
    }

    fn lock_read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        // A panic while holding the lock cannot leave `Current` half
        // written (it is replaced whole), so a poisoned lock is still good.
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl ResolvesServerCert for FileCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reads a PEM chain and key and checks they belong together.
pub(crate) fn load_pair(cert_path: &Path, key_path: &Path) -> Result<Arc<CertifiedKey>, Error> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| Error::Io {
            path: p.to_owned(),
            source,
        })
    };
    let chain = parse_chain(&read(cert_path)?).map_err(|e| Error::Pem {
        path: cert_path.to_owned(),
        reason: e.to_string(),
    })?;
    let key = PrivateKeyDer::from_pem_slice(&read(key_path)?).map_err(|e| Error::Pem {
        path: key_path.to_owned(),
        reason: format!("no private key: {e}"),
    })?;
    certified_key(chain, key)
}

/// Why PEM text is not a certificate chain; its text is the `reason` of
/// [`Error::Pem`] and [`Error::Order`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChainError {
    /// The PEM framing is broken.
    #[error("malformed PEM: {0}")]
    Malformed(rustls_pki_types::pem::Error),
    /// No `CERTIFICATE` block.
    #[error("no certificate in the file")]
    Empty,
}

pub(crate) fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ChainError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(ChainError::Malformed)?;
    if chain.is_empty() {
        return Err(ChainError::Empty);
    }
    Ok(chain)
}

pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, Error> {
    let ck =
        CertifiedKey::from_der(chain, key, &sigil_crypto::tls::provider()).map_err(Error::Key)?;
    Ok(Arc::new(ck))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, (cert, key): &(String, String)) -> (PathBuf, PathBuf) {
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c, k)
    }

    fn bump_mtime(p: &Path, secs: u64) {
        let f = std::fs::File::options().write(true).open(p).unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn a_missing_or_mismatched_pair_fails_at_start_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = FileCertResolver::new(&dir.path().join("no.pem"), &dir.path().join("k.pem"))
            .unwrap_err();
        assert!(e.to_string().contains("no.pem"), "{e}");

        let (c, _) = write(dir.path(), &pair("a.test"));
        let (_, other_key) = pair("b.test");
        std::fs::write(dir.path().join("other.pem"), other_key).unwrap();
        let e = FileCertResolver::new(&c, &dir.path().join("other.pem")).unwrap_err();
        assert!(matches!(e, Error::Key(_)), "{e}");

        std::fs::write(&c, "garbage").unwrap();
        let e = FileCertResolver::new(&c, &dir.path().join("other.pem")).unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
    }

    #[test]
    fn changed_files_are_served_and_invalid_ones_keep_the_last_good_pair() {
        let dir = tempfile::tempdir().unwrap();
        let first = pair("a.test");
        let (c, k) = write(dir.path(), &first);
        let r = FileCertResolver::new(&c, &k).unwrap();
        let first_der = r.current_chain();
        assert!(!r.sync().unwrap(), "nothing changed yet");

        let second = pair("a.test");
        write(dir.path(), &second);
        bump_mtime(&c, 10);
        assert!(r.sync().unwrap());
        let second_der = r.current_chain();
        assert_ne!(first_der, second_der);

        // A new cert with the old key: refused, the second pair stays.
        std::fs::write(&c, &first.0).unwrap();
        bump_mtime(&c, 20);
        assert!(matches!(r.sync().unwrap_err(), Error::Key(_)));
        assert_eq!(r.current_chain(), second_der);

        // Deleted files: an error, the second pair stays.
        std::fs::remove_file(&k).unwrap();
        assert!(matches!(r.sync().unwrap_err(), Error::Io { .. }));
        assert_eq!(r.current_chain(), second_der);
    }
}
