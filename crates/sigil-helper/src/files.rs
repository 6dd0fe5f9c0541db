//! What goes into each file, and writing it.
//!
//! The contents are spiffe-helper's (`pkg/disk`): the SVID file holds the
//! leaf and its intermediates as PEM `CERTIFICATE` blocks (only the leaf with
//! `add_intermediates_to_bundle`, the intermediates then following the CA
//! certificates in the bundle file); the key file one PKCS#8 `PRIVATE KEY`
//! block; the bundle file the CA certificates of the SVID's trust domain,
//! then with `include_federated_domains` those of every other trust domain
//! in the response, by trust domain name; `omit_expired` drops expired
//! certificates from the SVID and bundle files. The JWT bundle file is a
//! JSON object from trust domain name to the base64 (standard, padded) of
//! that trust domain's JWKS; a JWT-SVID file is the bare token. `hint`
//! picks the SVID whose hint it is, otherwise the first one is used.
//!
//! Every file is replaced atomically with its mode set exactly
//! ([`sigil_cli::secure_fs::write_atomic_with_mode`]). This module does not
//! talk to the agent nor signal anyone.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine;
use sigil_cli::secure_fs::{SecureFsError, write_atomic_with_mode};
use sigil_proto::workload::{Jwtsvid, X509svid, X509svidResponse};

/// Why a file could not be produced or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilesError {
    /// The agent sent no SVID at all.
    #[error("the Workload API response holds no SVID")]
    NoSvid,
    /// No SVID carries the configured hint.
    #[error("failed to find the hinted {kind} SVID (hint {hint:?})")]
    HintNotFound {
        /// `x509` or `JWT`.
        kind: &'static str,
        /// The hint.
        hint: String,
    },
    /// The SVID's SPIFFE ID has no trust domain.
    #[error("SVID has an invalid SPIFFE ID {0:?}")]
    BadSpiffeId(String),
    /// The SVID's own bundle is empty.
    #[error("no bundles found for {0:?} trust domain")]
    NoBundle(String),
    /// Certificates that do not parse.
    #[error("{what} is not a sequence of DER certificates: {reason}")]
    BadCertificates {
        /// Which field.
        what: String,
        /// The parser's words.
        reason: String,
    },
    /// The private key is empty.
    #[error("the SVID has no private key")]
    NoKey,
    /// Writing failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: SecureFsError,
    },
}

/// The X.509 options that shape the files.
#[derive(Debug, Clone, Default)]
pub struct X509Options {
    /// `hint`.
    pub hint: Option<String>,
    /// `add_intermediates_to_bundle`.
    pub add_intermediates_to_bundle: bool,
    /// `include_federated_domains`.
    pub include_federated_domains: bool,
    /// `omit_expired`.
    pub omit_expired: bool,
}

/// The contents of the three X.509 files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Contents {
    /// The SPIFFE ID of the SVID written.
    pub spiffe_id: String,
    /// The SVID file.
    pub svid_pem: String,
    /// The key file.
    pub key_pem: String,
    /// The bundle file.
    pub bundle_pem: String,
}

/// The three files from one `FetchX509SVID` message.
pub fn x509_contents(
    response: &X509svidResponse,
    options: &X509Options,
    now: SystemTime,
) -> Result<X509Contents, FilesError> {
    let svid = pick_x509(&response.svids, options.hint.as_deref())?;
    let own_td = trust_domain_name(&svid.spiffe_id)
        .ok_or_else(|| FilesError::BadSpiffeId(svid.spiffe_id.clone()))?;
    if svid.bundle.is_empty() {
        return Err(FilesError::NoBundle(own_td.to_owned()));
    }
    if svid.x509_svid_key.is_empty() {
        return Err(FilesError::NoKey);
    }
    let mut chain = split_certs(&svid.x509_svid, "the SVID certificate chain")?;
    if chain.is_empty() {
        return Err(FilesError::BadCertificates {
            what: "the SVID certificate chain".into(),
            reason: "it is empty".into(),
        });
    }
    let mut bundle = split_certs(&svid.bundle, "the SVID's bundle")?;
    if options.add_intermediates_to_bundle {
        bundle.extend(chain.drain(1..));
    }
    if options.include_federated_domains {
        // Every other trust domain the response names, by name, as
        // go-spiffe's bundle set lists them.
        let mut others: BTreeMap<&str, &[u8]> = BTreeMap::new();
        for other in &response.svids {
            if let Some(td) = trust_domain_name(&other.spiffe_id) {
                others.entry(td).or_insert(&other.bundle);
            }
        }
        for (id, der) in &response.federated_bundles {
            let td = trust_domain_name(id).unwrap_or(id.as_str());
            others.insert(td, der);
        }
        for (td, der) in others {
            if td != own_td {
                bundle.extend(split_certs(der, &format!("the bundle of {td}"))?);
            }
        }
    }
    let keep = |c: &Cert| !(options.omit_expired && c.not_after < now);
    Ok(X509Contents {
        spiffe_id: svid.spiffe_id.clone(),
        svid_pem: chain.iter().filter(|c| keep(c)).map(Cert::pem).collect(),
        key_pem: pem::encode(&pem::Pem::new("PRIVATE KEY", svid.x509_svid_key.clone())),
        bundle_pem: bundle.iter().filter(|c| keep(c)).map(Cert::pem).collect(),
    })
}

/// The JWT bundle file from one `FetchJWTBundles` message.
pub fn jwt_bundle_json(bundles: &HashMap<String, Vec<u8>>) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let map: BTreeMap<&str, String> = bundles
        .iter()
        .map(|(id, jwks)| {
            (
                trust_domain_name(id).unwrap_or(id.as_str()),
                b64.encode(jwks),
            )
        })
        .collect();
    // A map of strings always serializes.
    serde_json::to_vec(&map).unwrap_or_default()
}

/// The JWT-SVID to write: the hinted one, or the first.
pub fn pick_jwt<'a>(svids: &'a [Jwtsvid], hint: Option<&str>) -> Result<&'a Jwtsvid, FilesError> {
    match hint {
        None => svids.first().ok_or(FilesError::NoSvid),
        Some(hint) => {
            svids
                .iter()
                .find(|s| s.hint == hint)
                .ok_or_else(|| FilesError::HintNotFound {
                    kind: "JWT",
                    hint: hint.to_owned(),
                })
        }
    }
}

/// Replaces `path` with `bytes`, mode `mode`.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FilesError> {
    write_atomic_with_mode(path, bytes, mode).map_err(|source| FilesError::Write {
        path: path.to_owned(),
        source,
    })
}

fn pick_x509<'a>(svids: &'a [X509svid], hint: Option<&str>) -> Result<&'a X509svid, FilesError> {
    match hint {
        None => svids.first().ok_or(FilesError::NoSvid),
        Some(hint) => {
            svids
                .iter()
                .find(|s| s.hint == hint)
                .ok_or_else(|| FilesError::HintNotFound {
                    kind: "x509",
                    hint: hint.to_owned(),
                })
        }
    }
}

/// `example.org` from `spiffe://example.org/...`.
fn trust_domain_name(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("spiffe://")?;
    let td = rest.split('/').next().unwrap_or(rest);
    (!td.is_empty()).then_some(td)
}

struct Cert {
    der: Vec<u8>,
    not_after: SystemTime,
}

impl Cert {
    fn pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.der.clone()))
    }
}

fn split_certs(mut der: &[u8], what: &str) -> Result<Vec<Cert>, FilesError> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let (rest, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| FilesError::BadCertificates {
                what: what.to_owned(),
                reason: e.to_string(),
            })?;
        let len = der.len() - rest.len();
        let secs = cert.validity().not_after.timestamp();
        let not_after = if secs >= 0 {
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs.unsigned_abs())
        } else {
            SystemTime::UNIX_EPOCH
        };
        out.push(Cert {
            der: der[..len].to_vec(),
            not_after,
        });
        der = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    use std::os::unix::fs::PermissionsExt;

    struct Ca {
        cert: rcgen::Certificate,
        params: CertificateParams,
        key: KeyPair,
    }

    fn ca(name: &str, expired: bool) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        if expired {
            p.not_before = rcgen::date_time_ymd(2001, 1, 1);
            p.not_after = rcgen::date_time_ymd(2002, 1, 1);
        }
        let cert = p.self_signed(&key).unwrap();
        Ca {
            cert,
            params: p,
            key,
        }
    }

    fn issue(issuer: &Ca, id: &str, is_ca: bool) -> (Ca, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        if is_ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        let cert = p
            .signed_by(&key, &Issuer::from_params(&issuer.params, &issuer.key))
            .unwrap();
        let der = key.serialize_der();
        (
            Ca {
                cert,
                params: p,
                key,
            },
            der,
        )
    }

    fn der(c: &Ca) -> Vec<u8> {
        c.cert.der().to_vec()
    }

    fn pems(s: &str) -> Vec<Vec<u8>> {
        pem::parse_many(s)
            .unwrap()
            .into_iter()
            .map(|p| p.into_contents())
            .collect()
    }

    struct Fixture {
        response: X509svidResponse,
        root: Vec<u8>,
        old_root: Vec<u8>,
        inter: Vec<u8>,
        leaf: Vec<u8>,
        key: Vec<u8>,
        fed: Vec<u8>,
    }

    fn fixture() -> Fixture {
        let root = ca("root", false);
        let old_root = ca("old root", true);
        let (inter, _) = issue(&root, "spiffe://example.org/inter", true);
        let (leaf, key) = issue(&inter, "spiffe://example.org/app", false);
        let fed = ca("federated", false);
        let response = X509svidResponse {
            svids: vec![X509svid {
                spiffe_id: "spiffe://example.org/app".into(),
                x509_svid: [der(&leaf), der(&inter)].concat(),
                x509_svid_key: key.clone(),
                bundle: [der(&root), der(&old_root)].concat(),
                hint: "internal".into(),
            }],
            crl: vec![],
            federated_bundles: [("spiffe://other.org".to_owned(), der(&fed))].into(),
        };
        Fixture {
            root: der(&root),
            old_root: der(&old_root),
            inter: der(&inter),
            leaf: der(&leaf),
            key,
            fed: der(&fed),
            response,
        }
    }

    #[test]
    fn default_files_hold_the_chain_the_key_and_the_own_bundle() {
        let f = fixture();
        let c = x509_contents(&f.response, &X509Options::default(), SystemTime::now()).unwrap();
        assert_eq!(pems(&c.svid_pem), [f.leaf.clone(), f.inter.clone()]);
        assert_eq!(pems(&c.bundle_pem), [f.root.clone(), f.old_root.clone()]);
        let key = pem::parse(&c.key_pem).unwrap();
        assert_eq!(key.tag(), "PRIVATE KEY");
        assert_eq!(key.contents(), f.key.as_slice());
        assert_eq!(c.spiffe_id, "spiffe://example.org/app");
    }

    #[test]
    fn options_move_intermediates_add_federated_and_omit_expired() {
        let f = fixture();
        let options = X509Options {
            hint: None,
            add_intermediates_to_bundle: true,
            include_federated_domains: true,
            omit_expired: true,
        };
        let c = x509_contents(&f.response, &options, SystemTime::now()).unwrap();
        assert_eq!(pems(&c.svid_pem), std::slice::from_ref(&f.leaf));
        assert_eq!(pems(&c.bundle_pem), [f.root, f.inter, f.fed]);
    }

    #[test]
    fn hint_picks_the_svid_and_an_unknown_hint_is_an_error() {
        let f = fixture();
        let mut options = X509Options {
            hint: Some("internal".into()),
            ..Default::default()
        };
        assert!(x509_contents(&f.response, &options, SystemTime::now()).is_ok());
        options.hint = Some("external".into());
        let err = x509_contents(&f.response, &options, SystemTime::now()).unwrap_err();
        assert!(matches!(err, FilesError::HintNotFound { .. }), "{err}");
        let jwts = [
            Jwtsvid {
                spiffe_id: "spiffe://example.org/a".into(),
                svid: "a.b.c".into(),
                hint: "".into(),
            },
            Jwtsvid {
                spiffe_id: "spiffe://example.org/b".into(),
                svid: "d.e.f".into(),
                hint: "b".into(),
            },
        ];
        assert_eq!(pick_jwt(&jwts, None).unwrap().svid, "a.b.c");
        assert_eq!(pick_jwt(&jwts, Some("b")).unwrap().svid, "d.e.f");
        assert!(pick_jwt(&jwts, Some("c")).is_err());
        assert!(pick_jwt(&[], None).is_err());
    }

    #[test]
    fn jwt_bundle_file_maps_trust_domain_names_to_base64_jwks() {
        let bundles: HashMap<String, Vec<u8>> = [
            ("spiffe://example.org".to_owned(), b"{\"keys\":[]}".to_vec()),
            ("spiffe://b.org".to_owned(), b"{}".to_vec()),
        ]
        .into();
        let json: serde_json::Value = serde_json::from_slice(&jwt_bundle_json(&bundles)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"example.org": "eyJrZXlzIjpbXX0=", "b.org": "e30="})
        );
    }

    #[test]
    fn files_are_written_with_the_configured_modes() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o600, 0o440] {
            let path = dir.path().join(format!("f{mode:o}"));
            write(&path, b"x", mode).unwrap();
            let got = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
            assert_eq!(got, mode);
        }
        let err = write(&dir.path().join("missing/f"), b"x", 0o644).unwrap_err();
        assert!(err.to_string().contains("missing/f"), "{err}");
    }
}
