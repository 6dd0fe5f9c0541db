//! HTTPS for the provider: the rustls server configuration around a
//! certificate resolver, and the ACME resolver for the `acme` section.
//! Where certificates come from (files re-read on change, or an ACME CA) is
//! `sigil-acme`'s job; this module only fits its resolvers to SPIRE's
//! provider configuration.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sigil_acme::{ACME_TLS_ALPN, AcmeConfig, AcmeManager};

use crate::config::Acme;

/// Why HTTPS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The serving certificate files, or the ACME cache, could not be used.
    #[error(transparent)]
    Certificate(#[from] sigil_acme::Error),
    /// A temporary ACME cache directory could not be made (`cache_dir = ""`).
    #[error("could not create a temporary ACME cache directory: {0}")]
    TempCache(#[source] std::io::Error),
    /// rustls refused the protocol configuration.
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// A rustls server configuration (aws-lc-rs, TLS 1.2 and 1.3, HTTP/1.1)
/// whose certificate comes from `resolver`; with `acme`, the TLS-ALPN-01
/// protocol is offered too so the CA can validate on this listener.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    acme: bool,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    if acme {
        cfg.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    Ok(Arc::new(cfg))
}

/// The `acme` section: one certificate per name in `domains` (SPIRE's
/// autocert host whitelist), each obtained and renewed by its own
/// [`AcmeManager`], served by the name the client asks for.
#[derive(Debug)]
pub struct AcmeDomains {
    managers: HashMap<String, Arc<AcmeManager>>,
    /// With `cache_dir = ""` the account and certificates live in a
    /// temporary directory removed at exit, so nothing survives a restart
    /// (SPIRE keeps them in memory).
    _temporary_cache: Option<tempfile::TempDir>,
}

impl AcmeDomains {
    /// Managers for every domain; nothing is obtained until [`Self::start`].
    pub fn new(acme: &Acme, domains: &[String]) -> Result<Arc<AcmeDomains>, TlsError> {
        let (cache_root, temporary) = match &acme.cache_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("sigil-oidc-acme")
                    .tempdir()
                    .map_err(TlsError::TempCache)?;
                (t.path().to_owned(), Some(t))
            }
        };
        let mut managers = HashMap::new();
        for domain in domains {
            let mut config = AcmeConfig::new(
                domain.clone(),
                acme.email.clone(),
                cache_dir_for(&cache_root, domain, domains.len()),
            );
            if let Some(url) = &acme.directory_url {
                config.directory_url = url.clone();
            }
            config.tos_accepted = acme.tos_accepted;
            managers.insert(domain.to_ascii_lowercase(), AcmeManager::new(config)?);
        }
        Ok(Arc::new(AcmeDomains {
            managers,
            _temporary_cache: temporary,
        }))
    }

    /// Starts obtaining and renewing every domain's certificate.
    pub fn start(&self) {
        for manager in self.managers.values() {
            tokio::spawn(manager.clone().run());
        }
    }
}

/// One domain keeps the cache directory itself; several get one
/// subdirectory each, so their accounts and certificates never collide.
fn cache_dir_for(root: &std::path::Path, domain: &str, count: usize) -> PathBuf {
    if count == 1 {
        root.to_owned()
    } else {
        root.join(domain.to_ascii_lowercase())
    }
}

impl ResolvesServerCert for AcmeDomains {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        self.managers.get(&name)?.resolve(hello)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme(cache_dir: Option<PathBuf>) -> Acme {
        Acme {
            cache_dir,
            directory_url: Some("https://127.0.0.1:1/dir".into()),
            email: "admin@d.test".into(),
            tos_accepted: true,
        }
    }

    #[test]
    fn each_domain_gets_its_own_manager_and_cache_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let domains = vec!["a.test".to_owned(), "B.test".to_owned()];
        let d = AcmeDomains::new(&acme(Some(dir.path().join("cache"))), &domains).expect("new");
        let mut names: Vec<&String> = d.managers.keys().collect();
        names.sort();
        assert_eq!(names, ["a.test", "b.test"]);
        assert!(dir.path().join("cache/a.test").is_dir());
        assert!(dir.path().join("cache/b.test").is_dir());
    }

    #[test]
    fn one_domain_uses_the_cache_directory_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = dir.path().join("cache");
        AcmeDomains::new(&acme(Some(cache.clone())), &["a.test".to_owned()]).expect("new");
        assert!(cache.is_dir());
        assert!(!cache.join("a.test").exists());
    }

    #[test]
    fn an_empty_cache_dir_uses_a_temporary_directory_removed_with_the_resolver() {
        let d = AcmeDomains::new(&acme(None), &["a.test".to_owned()]).expect("new");
        let path = d
            ._temporary_cache
            .as_ref()
            .map(|t| t.path().to_owned())
            .expect("temporary cache");
        assert!(path.is_dir());
        drop(d);
        assert!(!path.exists());
    }

    #[test]
    fn acme_listeners_offer_the_tls_alpn_01_protocol_and_others_do_not() {
        let d: Arc<dyn ResolvesServerCert> =
            AcmeDomains::new(&acme(None), &["a.test".to_owned()]).expect("new");
        let with = server_config(d.clone(), true).expect("config");
        assert!(with.alpn_protocols.iter().any(|p| p == ACME_TLS_ALPN));
        let without = server_config(d, false).expect("config");
        assert_eq!(without.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
