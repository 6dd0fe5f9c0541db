//! A certificate for one DNS name from an ACME CA, obtained and renewed in
//! the background (what SPIRE's bundle endpoint does with Go's `autocert`).
//!
//! - The CA validates us with TLS-ALPN-01 (RFC 8737): it connects to port
//!   443 of the domain (the listener serving the certificate) offering only
//!   the `acme-tls/1` protocol, and [`AcmeManager`]'s resolver answers with
//!   a self-signed certificate carrying the key authorization digest.
//! - The account key (instant-acme's credentials, JSON) and the issued chain
//!   and key (PEM) are kept in [`AcmeConfig::cache_dir`], private files, so
//!   a restart serves the cached certificate at once.
//! - A certificate is renewed when a third of its lifetime, at most 30 days
//!   (autocert's default), is left. A failed attempt is retried with
//!   backoff from [`FIRST_RETRY`] to [`LAST_RETRY`]; meanwhile the current
//!   certificate, if any, keeps being served.
//! - Terms of service: with `tos_accepted = false` no account is created and
//!   every attempt fails with [`Error::TermsNotAccepted`], logged as SPIRE
//!   logs it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Error;
use crate::files::{certified_key, load_pair};

/// Let's Encrypt's production directory, the default `directory_url`.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The ALPN protocol of TLS-ALPN-01 validation; add it to the listener's
/// `ServerConfig::alpn_protocols` (after the protocols it serves).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// First wait after a failed attempt; doubled each failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(10);
/// Longest wait between failed attempts.
pub const LAST_RETRY: Duration = Duration::from_secs(3600);

/// At most this much before expiry a certificate is renewed (autocert's
/// `RenewBefore` default).
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long one order may wait for the CA to validate and issue.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// What the manager needs to know; [`AcmeConfig::new`] fills SPIRE's
/// defaults.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The ACME directory (`directory_url`).
    pub directory_url: String,
    /// The one DNS name to obtain a certificate for (`domain_name`).
    pub domain_name: String,
    /// Contact address given to the CA (`email`); empty for none.
    pub email: String,
    /// Whether the CA's terms of service are accepted (`tos_accepted`).
    pub tos_accepted: bool,
    /// Where the account and certificates are cached (created 0700).
    pub cache_dir: PathBuf,
    /// Roots the directory's own HTTPS certificate is verified with.
    pub directory_roots: Arc<rustls::RootCertStore>,
}

impl AcmeConfig {
    /// Let's Encrypt, terms not accepted, the [`web_roots`](crate::web_roots).
    pub fn new(domain_name: String, email: String, cache_dir: PathBuf) -> Self {
        AcmeConfig {
            directory_url: LETS_ENCRYPT_DIRECTORY.into(),
            domain_name,
            email,
            tos_accepted: false,
            cache_dir,
            directory_roots: crate::web_roots(),
        }
    }
}

/// Obtains, caches, renews and serves the certificate for one domain.
/// Share it as an `Arc`: one clone goes into the listener's `ServerConfig`
/// as its certificate resolver, one runs [`AcmeManager::run`].
pub struct AcmeManager {
    config: AcmeConfig,
    current: RwLock<Option<Served>>,
    /// TLS-ALPN-01 answers by domain (lower case), while an order runs.
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    account: tokio::sync::Mutex<Option<Account>>,
}

#[derive(Clone)]
struct Served {
    key: Arc<CertifiedKey>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl std::fmt::Debug for AcmeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeManager")
            .field("directory_url", &self.config.directory_url)
            .field("domain_name", &self.config.domain_name)
            .finish_non_exhaustive()
    }
}

impl AcmeManager {
    /// A manager for `config`. Creates the cache directory and loads a
    /// cached certificate if one is there and still valid; obtains nothing
    /// yet (see [`AcmeManager::run`]).
    pub fn new(config: AcmeConfig) -> Result<Arc<Self>, Error> {
        if !config.tos_accepted {
            tracing::warn!(
                "ACME Terms of Service have not been accepted. See the `tos_accepted` configurable"
            );
        }
        create_private_dir(&config.cache_dir)?;
        let manager = AcmeManager {
            current: RwLock::new(None),
            challenges: Mutex::new(HashMap::new()),
            account: tokio::sync::Mutex::new(None),
            config,
        };
        let (cert, key) = manager.cert_paths();
        if cert.exists() {
            match load_pair(&cert, &key).and_then(served) {
                Ok(s) if s.not_after > SystemTime::now() => {
                    tracing::info!(domain = %manager.config.domain_name, "Serving the cached ACME certificate");
                    manager.set_current(s);
                }
                Ok(_) => tracing::info!("The cached ACME certificate has expired"),
                Err(e) => tracing::warn!(error = %e, "Ignoring the cached ACME certificate"),
            }
        }
        Ok(Arc::new(manager))
    }

    /// The chain served now (leaf first), if any.
    pub fn current_chain(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.read_current().map(|s| s.key.cert.clone())
    }

    /// Keeps a valid certificate: obtains one now if there is none or it
    /// is due for renewal, then sleeps until the next renewal, retrying
    /// failures with backoff. Runs until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut retry = FIRST_RETRY;
        loop {
            let now = SystemTime::now();
            let renew_at = self
                .read_current()
                .map(|s| renew_at(s.not_before, s.not_after));
            let wait = match renew_at {
                Some(at) if at > now => {
                    retry = FIRST_RETRY;
                    at.duration_since(now).unwrap_or_default()
                }
                _ => match self.obtain().await {
                    Ok(()) => continue,
                    Err(e) => {
                        tracing::error!(
                            domain = %self.config.domain_name,
                            directory_url = %self.config.directory_url,
                            error = %e,
                            retry_in = ?retry,
                            "Could not obtain an ACME certificate"
                        );
                        let wait = retry;
                        retry = (retry * 2).min(LAST_RETRY);
                        wait
                    }
                },
            };
            // Re-check at least daily, in case the clock jumped.
            tokio::time::sleep(wait.min(Duration::from_secs(24 * 3600))).await;
        }
    }

    /// Runs one order for the domain now and serves its certificate.
    pub async fn obtain(&self) -> Result<(), Error> {
        let domain = self.config.domain_name.clone();
        let mut account_slot = self.account.lock().await;
        let account = match account_slot.as_ref() {
            Some(a) => a.clone(),
            None => {
                let a = self.load_or_create_account().await?;
                *account_slot = Some(a.clone());
                a
            }
        };
        drop(account_slot);
        tracing::info!(domain = %domain, directory_url = %self.config.directory_url, "Ordering an ACME certificate");

        let identifiers = [Identifier::Dns(domain.clone())];
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        let _answers = ChallengeGuard(self);
        {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz?;
                match authz.status {
                    AuthorizationStatus::Valid => continue,
                    AuthorizationStatus::Pending => {}
                    other => {
                        return Err(Error::Order {
                            domain: domain.clone(),
                            reason: format!("authorization is {other:?}"),
                        });
                    }
                }
                let mut challenge =
                    authz
                        .challenge(ChallengeType::TlsAlpn01)
                        .ok_or_else(|| Error::Order {
                            domain: domain.clone(),
                            reason: "the CA offers no tls-alpn-01 challenge".into(),
                        })?;
                let answer =
                    challenge_answer(&domain, challenge.key_authorization().digest().as_ref())?;
                self.lock_challenges()
                    .insert(domain.to_ascii_lowercase(), answer);
                challenge.set_ready().await?;
            }
        }
        let retries = RetryPolicy::new().timeout(ORDER_TIMEOUT);
        let status = order.poll_ready(&retries).await?;
        if status != OrderStatus::Ready {
            return Err(Error::Order {
                domain,
                reason: format!("order is {status:?} after validation"),
            });
        }

        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec![domain.clone()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key)?;
        order.finalize_csr(csr.der()).await?;
        let chain_pem = order.poll_certificate(&retries).await?;

        let chain =
            crate::files::parse_chain(chain_pem.as_bytes()).map_err(|reason| Error::Order {
                domain: domain.clone(),
                reason: format!("the issued chain is unusable: {reason}"),
            })?;
        let key_der = PrivatePkcs8KeyDer::from(key.serialize_der());
        let issued = served(certified_key(chain, PrivateKeyDer::Pkcs8(key_der))?)?;
        let (cert_path, key_path) = self.cert_paths();
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        write_private(&cert_path, chain_pem.as_bytes())?;
        tracing::info!(
            domain = %domain,
            not_after = ?issued.not_after,
            "Obtained an ACME certificate"
        );
        self.set_current(issued);
        Ok(())
    }

    async fn load_or_create_account(&self) -> Result<Account, Error> {
        let path = self.account_path();
        let http = || {
            crate::client::Client::new(self.config.directory_roots.clone())
                .map(|c| Account::builder_with_http(Box::new(c)))
                .map_err(Error::Key)
        };
        if path.exists() {
            let bytes = std::fs::read(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let creds: AccountCredentials =
                serde_json::from_slice(&bytes).map_err(|e| Error::AccountCache {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            return Ok(http()?.from_credentials(creds).await?);
        }
        if !self.config.tos_accepted {
            tracing::warn!(
                directory_url = %self.config.directory_url,
                email = %self.config.email,
                "ACME Terms of Service have not been accepted. See the `tos_accepted` configurable"
            );
            return Err(Error::TermsNotAccepted {
                directory_url: self.config.directory_url.clone(),
            });
        }
        tracing::info!(
            directory_url = %self.config.directory_url,
            email = %self.config.email,
            "ACME Terms of Service accepted"
        );
        let contact = format!("mailto:{}", self.config.email);
        let contacts: Vec<&str> = if self.config.email.is_empty() {
            vec![]
        } else {
            vec![contact.as_str()]
        };
        let (account, creds) = http()?
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.config.directory_url.clone(),
                None,
            )
            .await?;
        let json = serde_json::to_vec(&creds).map_err(|e| Error::AccountCache {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_private(&path, &json)?;
        Ok(account)
    }

    /// One account per directory: its file name is the directory URL made
    /// safe.
    fn account_path(&self) -> PathBuf {
        let safe: String = self
            .config
            .directory_url
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.config.cache_dir.join(format!("account+{safe}.json"))
    }

    fn cert_paths(&self) -> (PathBuf, PathBuf) {
        let d = self.config.domain_name.to_ascii_lowercase();
        (
            self.config.cache_dir.join(format!("{d}.crt")),
            self.config.cache_dir.join(format!("{d}.key")),
        )
    }

    fn read_current(&self) -> Option<Served> {
        // Replaced whole under the lock, so a poisoned lock is still good.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_current(&self, s: Served) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(s);
    }

    fn lock_challenges(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<CertifiedKey>>> {
        self.challenges.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ResolvesServerCert for AcmeManager {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        let is_challenge = hello
            .alpn()
            .is_some_and(|mut protos| protos.any(|p| p == ACME_TLS_ALPN));
        if is_challenge {
            return self.lock_challenges().get(&name).cloned();
        }
        // As autocert's host whitelist: only the configured name.
        if name != self.config.domain_name.to_ascii_lowercase() {
            return None;
        }
        self.read_current().map(|s| s.key)
    }
}

/// Removes the TLS-ALPN-01 answers when an order ends, however it ends.
struct ChallengeGuard<'a>(&'a AcmeManager);

impl Drop for ChallengeGuard<'_> {
    fn drop(&mut self) {
        self.0.lock_challenges().clear();
    }
}

/// When to renew a certificate valid from `not_before` to `not_after`.
fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    not_after - (lifetime / 3).min(RENEW_BEFORE)
}

/// The self-signed certificate answering a TLS-ALPN-01 challenge: the
/// domain as its only SAN and the critical acmeIdentifier extension
/// holding the SHA-256 of the key authorization (RFC 8737 section 3).
fn challenge_answer(domain: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, Error> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key)?;
    let key_der = PrivatePkcs8KeyDer::from(key.serialize_der());
    // Not `certified_key`: its key check parses the certificate with
    // webpki, which refuses the critical acmeIdentifier extension.
    let signing_key = sigil_crypto::tls::provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(key_der))
        .map_err(Error::Key)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing_key,
    )))
}

fn served(key: Arc<CertifiedKey>) -> Result<Served, Error> {
    let leaf = key
        .end_entity_cert()
        .map_err(|e| Error::Certificate(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| Error::Certificate(e.to_string()))?;
    let at = |t: x509_parser::time::ASN1Time| {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
    };
    Ok(Served {
        not_before: at(cert.validity().not_before),
        not_after: at(cert.validity().not_after),
        key,
    })
}

fn create_private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })
}

/// Writes `data` to `path` (mode 0600) through a temporary file and a
/// rename, so a crash never leaves half a key.
fn write_private(path: &Path, data: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> AcmeConfig {
        AcmeConfig::new(
            "bundle.a.test".into(),
            "ops@a.test".into(),
            dir.join("acme"),
        )
    }

    #[test]
    fn renewal_is_a_third_of_the_lifetime_before_expiry_at_most_30_days() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(renew_at(t0, t0 + day * 90), t0 + day * 60);
        assert_eq!(renew_at(t0, t0 + day * 6), t0 + day * 4);
        assert_eq!(renew_at(t0, t0 + day * 365), t0 + day * 335);
    }

    #[test]
    fn the_challenge_answer_names_the_domain_and_carries_the_digest_as_a_critical_extension() {
        let digest = [7u8; 32];
        let ck = challenge_answer("bundle.a.test", &digest).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(ck.cert[0].as_ref()).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // OCTET STRING (0x04) of 32 bytes.
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &digest);
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            format!("{:?}", san.value.general_names),
            "[DNSName(\"bundle.a.test\")]"
        );
    }

    #[tokio::test]
    async fn without_accepted_terms_no_account_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let m = AcmeManager::new(config(dir.path())).unwrap();
        let e = m.obtain().await.unwrap_err();
        assert!(matches!(e, Error::TermsNotAccepted { .. }), "{e}");
        assert!(e.to_string().contains("tos_accepted"), "{e}");
        assert!(m.current_chain().is_none());
    }

    #[test]
    fn a_cached_certificate_is_served_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        std::fs::create_dir_all(&cfg.cache_dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["bundle.a.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(cfg.cache_dir.join("bundle.a.test.crt"), cert.pem()).unwrap();
        std::fs::write(cfg.cache_dir.join("bundle.a.test.key"), key.serialize_pem()).unwrap();
        let m = AcmeManager::new(cfg).unwrap();
        assert_eq!(m.current_chain().unwrap(), vec![cert.der().clone()]);
    }
}
