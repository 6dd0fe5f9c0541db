//! UpstreamAuthority "disk": an upstream CA whose certificate and key are
//! files. Either a self-signed root (`cert_file_path` holds exactly that
//! one certificate), or a member of an existing PKI (`bundle_file_path`
//! holds its roots and `cert_file_path` the upstream CA followed by the
//! intermediates up to them). As in SPIRE, the files are read again on every
//! signing request, so rotating them needs no restart; if reading fails the
//! last good credentials are used.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sigil_crypto::key::SoftwareKey;
use sigil_crypto::x509::{IntermediateCaParams, cert_info, parse_pem_certs, sign_intermediate_ca};
use sigil_plugin::catalog::{PluginError, Problem, decode};
use sigil_plugin::upstreamauthority::{
    MintX509CaRequest, MintedX509Ca, UpstreamAuthority, UpstreamError,
};
use sigil_spiffe::TrustDomain;

use crate::catalog::ServerContext;

/// Certificates are backdated by this much to tolerate clock skew.
const BACKDATE: Duration = Duration::from_secs(10);

/// The disk upstream authority.
#[derive(Debug)]
pub struct DiskUpstreamAuthority {
    td: TrustDomain,
    key_path: PathBuf,
    cert_path: PathBuf,
    bundle_path: Option<PathBuf>,
    cached: Mutex<Option<Loaded>>,
}

#[derive(Debug, Clone)]
struct Loaded {
    key_pkcs8: Vec<u8>,
    /// Upstream CA first, then intermediates; self-signed roots excluded.
    chain: Vec<Vec<u8>>,
    /// The upstream CA certificate (signs our CA).
    ca_cert: Vec<u8>,
    roots: Vec<Vec<u8>>,
}

/// The plugin name in config.
pub const NAME: &str = "disk";

/// Builds the plugin for the catalog; the files are read now, so
/// `validate` catches a missing or mismatched CA.
pub fn build(
    data: &serde_json::Value,
    ctx: &ServerContext,
) -> Result<Arc<dyn UpstreamAuthority>, PluginError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Options {
        cert_file_path: String,
        key_file_path: String,
        #[serde(default)]
        bundle_file_path: String,
    }
    let o: Options = decode("UpstreamAuthority", NAME, data, &[])?;
    let problem = |p| PluginError::new("UpstreamAuthority", NAME, p);
    for (option, value) in [
        ("cert_file_path", &o.cert_file_path),
        ("key_file_path", &o.key_file_path),
    ] {
        if value.is_empty() {
            return Err(problem(Problem::MissingOption(option.into())));
        }
    }
    let plugin = DiskUpstreamAuthority {
        td: ctx.trust_domain.clone(),
        key_path: PathBuf::from(o.key_file_path),
        cert_path: PathBuf::from(o.cert_file_path),
        bundle_path: Some(PathBuf::from(o.bundle_file_path)).filter(|p| !p.as_os_str().is_empty()),
        cached: Mutex::new(None),
    };
    let loaded = plugin
        .load()
        .map_err(|e| problem(Problem::Load(e.to_string())))?;
    *plugin.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some(loaded);
    Ok(Arc::new(plugin))
}

impl DiskUpstreamAuthority {
    fn load(&self) -> Result<Loaded, UpstreamError> {
        let read = |p: &PathBuf, what: &str| {
            std::fs::read(p).map_err(|e| {
                UpstreamError::Load(format!("unable to read {what} {}: {e}", p.display()))
            })
        };
        let key = SoftwareKey::from_pem_or_der(&read(&self.key_path, "upstream CA key")?)
            .map_err(|e| UpstreamError::Load(format!("unable to load upstream CA key: {e}")))?;
        let certs = parse_pem_certs(&read(&self.cert_path, "upstream CA cert")?)
            .map_err(|e| UpstreamError::Load(format!("unable to load upstream CA cert: {e}")))?;
        let ca_cert = certs.first().cloned().ok_or_else(|| {
            UpstreamError::Load("unable to load upstream CA cert: no certificate in file".into())
        })?;
        let info = cert_info(&ca_cert).map_err(|e| UpstreamError::Load(e.to_string()))?;
        if info.public_key_der != sigil_crypto::key::Signer::public_key_der(&key) {
            return Err(UpstreamError::Load(
                "unable to load upstream CA: certificate and private key do not match".into(),
            ));
        }
        if !info.is_ca {
            return Err(UpstreamError::Load(
                "unable to load upstream CA: certificate is not a CA".into(),
            ));
        }
        let (chain, roots) = match &self.bundle_path {
            None => {
                if certs.len() != 1 || info.subject != info.issuer {
                    return Err(UpstreamError::Load(
                        "with no bundle_file_path configured only self-signed CAs are supported"
                            .into(),
                    ));
                }
                (Vec::new(), vec![ca_cert.clone()])
            }
            Some(bundle) => {
                let roots = parse_pem_certs(&read(bundle, "upstream CA bundle")?).map_err(|e| {
                    UpstreamError::Load(format!("unable to load upstream CA bundle: {e}"))
                })?;
                if roots.is_empty() {
                    return Err(UpstreamError::Load(
                        "unable to load upstream CA bundle: no certificate in file".into(),
                    ));
                }
                let intermediates: Vec<Vec<u8>> = certs
                    .iter()
                    .filter(|c| !roots.contains(c))
                    .cloned()
                    .collect();
                if !chains_to(&self.td, &key, &intermediates, &roots) {
                    return Err(UpstreamError::Load(
                        "unable to load upstream CA: certificate cannot be validated with the provided bundle or is not self-signed"
                            .into(),
                    ));
                }
                (intermediates, roots)
            }
        };
        Ok(Loaded {
            key_pkcs8: key.to_pkcs8_der(),
            chain,
            ca_cert,
            roots,
        })
    }

    /// Fresh credentials, or the last good ones when the files cannot be read.
    fn credentials(&self) -> Result<Loaded, UpstreamError> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        match self.load() {
            Ok(l) => {
                *cached = Some(l.clone());
                Ok(l)
            }
            Err(e) => match cached.as_ref() {
                Some(l) => {
                    tracing::warn!(error = %e, "Reloading the upstream CA failed; using the previously loaded one");
                    Ok(l.clone())
                }
                None => Err(e),
            },
        }
    }
}

/// True when `chain` (the upstream CA first, then intermediates) verifies up
/// to one of `roots`. Intermediate CAs cannot be verified as end entities,
/// so a throwaway leaf is signed with the upstream key and the whole path is
/// verified with webpki, signatures, validity and CA constraints included.
fn chains_to(td: &TrustDomain, key: &SoftwareKey, chain: &[Vec<u8>], roots: &[Vec<u8>]) -> bool {
    let Some(ca) = chain.first() else {
        return false;
    };
    let Ok(probe_key) = SoftwareKey::generate(sigil_crypto::key::KeyType::EcP256) else {
        return false;
    };
    let Ok(id) = td.id_with_path("/sigil/upstream-check") else {
        return false;
    };
    let now = SystemTime::now();
    let params = sigil_crypto::x509::X509SvidParams::new(
        id,
        sigil_crypto::key::Signer::public_key_der(&probe_key).to_vec(),
        now - BACKDATE,
        now + Duration::from_secs(60),
    );
    let Ok(leaf) = sigil_crypto::x509::sign_x509_svid(ca, key, &params) else {
        return false;
    };
    let mut path = vec![leaf];
    path.extend(chain.iter().cloned());
    sigil_crypto::x509::verify_chain(&path, roots, now).is_ok()
}

#[async_trait]
impl UpstreamAuthority for DiskUpstreamAuthority {
    fn name(&self) -> &'static str {
        "disk"
    }

    async fn mint_x509_ca(&self, req: MintX509CaRequest) -> Result<MintedX509Ca, UpstreamError> {
        let csr = sigil_crypto::csr::parse_and_verify_csr(&req.csr_der)
            .map_err(|e| UpstreamError::Csr(e.to_string()))?;
        let creds = self.credentials()?;
        let key = SoftwareKey::from_pkcs8_der(&creds.key_pkcs8)
            .map_err(|e| UpstreamError::Load(e.to_string()))?;
        let upstream = cert_info(&creds.ca_cert).map_err(|e| UpstreamError::Load(e.to_string()))?;
        let now = SystemTime::now();
        let not_after = (now + req.preferred_ttl).min(upstream.not_after);
        let cert = sign_intermediate_ca(
            &creds.ca_cert,
            &key,
            &IntermediateCaParams {
                trust_domain: self.td.clone(),
                public_key_der: csr.public_key_der,
                subject: req.subject,
                not_before: now - BACKDATE,
                not_after,
                path_len: None,
            },
        )
        .map_err(|e| UpstreamError::Sign(e.to_string()))?;
        let mut ca_chain = vec![cert];
        ca_chain.extend(creds.chain);
        Ok(MintedX509Ca {
            ca_chain,
            upstream_roots: creds.roots,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_crypto::key::{KeyType, Signer};
    use sigil_crypto::x509::{
        CaSubject, X509SvidParams, pem_encode_certs, self_signed_ca, sign_x509_svid, verify_chain,
    };
    use std::process::Command;

    /// Builds the plugin as the catalog does.
    fn from_plugin_data(
        data: &serde_json::Value,
        td: TrustDomain,
    ) -> Result<Arc<dyn UpstreamAuthority>, PluginError> {
        build(
            data,
            &ServerContext {
                trust_domain: td,
                data_dir: std::env::temp_dir(),
                clock: Arc::new(sigil_plugin::clock::SystemClock),
                join_tokens: Arc::new(crate::catalog::DataStoreJoinTokens::default()),
            },
        )
    }

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").unwrap()
    }

    fn data(dir: &std::path::Path, bundle: bool) -> serde_json::Value {
        let mut v = serde_json::json!({
            "cert_file_path": dir.join("ca.crt").to_str().unwrap(),
            "key_file_path": dir.join("ca.key").to_str().unwrap(),
        });
        if bundle {
            v["bundle_file_path"] = dir.join("bundle.crt").to_str().unwrap().into();
        }
        v
    }

    /// A self-signed upstream root written as SPIRE's sample files are.
    fn write_root(dir: &std::path::Path) -> Vec<u8> {
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let now = SystemTime::now();
        let root = self_signed_ca(
            &key,
            &td(),
            &CaSubject::default(),
            now - BACKDATE,
            now + Duration::from_secs(3600),
        )
        .unwrap();
        std::fs::write(
            dir.join("ca.crt"),
            pem_encode_certs(std::slice::from_ref(&root)),
        )
        .unwrap();
        std::fs::write(dir.join("ca.key"), key.to_pkcs8_pem()).unwrap();
        root
    }

    async fn mint(up: &Arc<dyn UpstreamAuthority>, ttl: Duration) -> (MintedX509Ca, SoftwareKey) {
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let csr = sigil_crypto::csr::create_csr(&key, None).unwrap();
        let minted = up
            .mint_x509_ca(MintX509CaRequest {
                csr_der: csr,
                preferred_ttl: ttl,
                subject: CaSubject::default(),
            })
            .await
            .unwrap();
        (minted, key)
    }

    /// An SVID signed by the minted CA verifies against the upstream roots
    /// through the returned chain.
    fn svid_verifies(minted: &MintedX509Ca, ca_key: &SoftwareKey) {
        let leaf_key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let now = SystemTime::now();
        let leaf = sign_x509_svid(
            &minted.ca_chain[0],
            ca_key,
            &X509SvidParams::new(
                td().id_with_path("/w").unwrap(),
                leaf_key.public_key_der().to_vec(),
                now - BACKDATE,
                now + Duration::from_secs(60),
            ),
        )
        .unwrap();
        let mut chain = vec![leaf];
        chain.extend(minted.ca_chain.iter().cloned());
        verify_chain(&chain, &minted.upstream_roots, now)
            .expect("SVID chains to the upstream root");
    }

    #[tokio::test]
    async fn self_signed_root_signs_the_server_ca() {
        let dir = tempfile::tempdir().unwrap();
        let root = write_root(dir.path());
        let up = from_plugin_data(&data(dir.path(), false), td()).unwrap();
        let (minted, key) = mint(&up, Duration::from_secs(600)).await;
        assert_eq!(minted.upstream_roots, vec![root]);
        assert_eq!(
            minted.ca_chain.len(),
            1,
            "the root is in the bundle, not the chain"
        );
        let info = cert_info(&minted.ca_chain[0]).unwrap();
        assert!(info.is_ca);
        assert_eq!(info.uri_sans, ["spiffe://example.org"]);
        svid_verifies(&minted, &key);
    }

    #[tokio::test]
    async fn ca_lifetime_is_cut_to_the_upstream_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let root = write_root(dir.path());
        let up = from_plugin_data(&data(dir.path(), false), td()).unwrap();
        let (minted, _) = mint(&up, Duration::from_secs(48 * 3600)).await;
        assert_eq!(
            cert_info(&minted.ca_chain[0]).unwrap().not_after,
            cert_info(&root).unwrap().not_after
        );
    }

    #[tokio::test]
    async fn joins_an_existing_pki_through_an_intermediate() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let sh = |cmd: &str| {
            let ok = Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .current_dir(d)
                .status()
                .unwrap()
                .success();
            assert!(ok, "{cmd}");
        };
        sh(
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout root.key -out bundle.crt -subj /CN=corp-root -days 2 -addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null",
        );
        sh(
            "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out int.csr -subj /CN=corp-intermediate 2>/dev/null",
        );
        sh(
            "printf 'basicConstraints=critical,CA:true\\nkeyUsage=critical,keyCertSign,cRLSign\\n' > ext.cnf && openssl x509 -req -in int.csr -CA bundle.crt -CAkey root.key -CAcreateserial -out ca.crt -days 1 -extfile ext.cnf 2>/dev/null",
        );
        let up = from_plugin_data(&data(d, true), td()).unwrap();
        let (minted, key) = mint(&up, Duration::from_secs(600)).await;
        assert_eq!(
            minted.ca_chain.len(),
            2,
            "our CA, then the corporate intermediate"
        );
        assert_eq!(minted.upstream_roots.len(), 1);
        svid_verifies(&minted, &key);

        // Without the bundle, a non-self-signed upstream CA is refused.
        let err = from_plugin_data(&data(d, false), td()).unwrap_err();
        assert!(
            err.to_string()
                .contains("only self-signed CAs are supported"),
            "{err}"
        );
        // A bundle that the chain does not reach is refused.
        sh(
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other.key -out bundle.crt -subj /CN=other-root -days 2 -addext basicConstraints=critical,CA:true 2>/dev/null",
        );
        let err = from_plugin_data(&data(d, true), td()).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot be validated with the provided bundle"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn bad_config_and_files_are_precise_errors_and_reload_keeps_last_good() {
        let dir = tempfile::tempdir().unwrap();
        write_root(dir.path());
        let mut bad = data(dir.path(), false);
        bad["keys_path"] = "x".into();
        let err = from_plugin_data(&bad, td()).unwrap_err();
        assert!(
            err.to_string().contains("unknown option \"keys_path\""),
            "{err}"
        );
        let err = from_plugin_data(&serde_json::json!({"key_file_path": "k"}), td()).unwrap_err();
        assert!(
            err.to_string().contains("\"cert_file_path\" must be set"),
            "{err}"
        );
        // A key that does not match the certificate.
        let up = from_plugin_data(&data(dir.path(), false), td()).unwrap();
        let other = SoftwareKey::generate(KeyType::EcP256).unwrap();
        std::fs::write(dir.path().join("ca.key"), other.to_pkcs8_pem()).unwrap();
        let err = from_plugin_data(&data(dir.path(), false), td()).unwrap_err();
        assert!(err.to_string().contains("do not match"), "{err}");
        // The running plugin keeps signing with what it loaded before.
        std::fs::remove_file(dir.path().join("ca.crt")).unwrap();
        let (minted, key) = mint(&up, Duration::from_secs(60)).await;
        svid_verifies(&minted, &key);
    }
}
