//! Web PKI roots: `webpki-roots` plus the operator's extra roots from
//! `SSL_CERT_FILE` (one PEM file) and `SSL_CERT_DIR` (colon-separated
//! directories of PEM files), the variables Go reads on Linux. Go replaces
//! the system roots with them; we add them to the Mozilla set, since we
//! never read the system store.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The roots to verify a Web PKI server with, read once per process.
/// Unreadable extra files and certificates are skipped with a warning.
pub fn web_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            Arc::new(build(
                std::env::var_os("SSL_CERT_FILE").map(PathBuf::from),
                std::env::var_os("SSL_CERT_DIR"),
            ))
        })
        .clone()
}

fn build(file: Option<PathBuf>, dirs: Option<std::ffi::OsString>) -> RootCertStore {
    let mut store = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut files: Vec<PathBuf> = file.into_iter().collect();
    if let Some(dirs) = dirs {
        for dir in std::env::split_paths(&dirs) {
            match std::fs::read_dir(&dir) {
                Ok(entries) => files.extend(entries.flatten().map(|e| e.path())),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "SSL_CERT_DIR: cannot read directory")
                }
            }
        }
    }
    for path in files.iter().filter(|p| p.is_file()) {
        add_file(&mut store, path);
    }
    store
}

fn add_file(store: &mut RootCertStore, path: &Path) {
    let certs = match CertificateDer::pem_file_iter(path) {
        Ok(iter) => iter,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read extra root certificates");
            return;
        }
    };
    let (mut added, mut skipped) = (0usize, 0usize);
    for cert in certs {
        match cert.map(|c| store.add(c)) {
            Ok(Ok(())) => added += 1,
            _ => skipped += 1,
        }
    }
    tracing::debug!(file = %path.display(), added, skipped, "added extra root certificates");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_roots_from_a_file_and_a_directory_are_added_to_the_mozilla_set() {
        let base = build(None, None).len();
        assert!(base > 100, "the webpki-roots set is there");
        let dir = tempfile::tempdir().unwrap();
        let ca = |name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.distinguished_name
                .push(rcgen::DnType::CommonName, name.to_owned());
            p.self_signed(&key).unwrap().pem()
        };
        let file = dir.path().join("one.pem");
        std::fs::write(&file, ca("one")).unwrap();
        let sub = dir.path().join("d");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("two.pem"), ca("two") + &ca("three")).unwrap();
        std::fs::write(sub.join("junk.txt"), "not a certificate").unwrap();
        let store = build(Some(file), Some(sub.into_os_string()));
        assert_eq!(store.len(), base + 3);
    }
}
