//! Trust bundles in the SPIFFE bundle format (a JWK Set, SPIFFE Trust Domain
//! and Bundle specification section 4), and their PEM form.
//!
//! This module owns reading and writing bundle documents: which JWK entries are
//! authorities (by `use`), which are skipped (unknown `use` or `kty`, as the
//! specification requires) and which make the whole document invalid
//! (malformed keys). It never fetches bundles and never checks signatures.

mod pem;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::{Map, Value};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::TrustDomain;
use crate::jwk::{JwkError, JwkMembers, JwkPublicKey, SUPPORTED_KEY_TYPES};

pub use pem::{certificates_from_pem, certificates_to_pem};

/// The JWK `use` of X.509 authorities (CA certificates).
pub const X509_SVID_USE: &str = "x509-svid";
/// The JWK `use` of JWT authorities (JWT-SVID signing keys).
pub const JWT_SVID_USE: &str = "jwt-svid";

/// A JWT signing authority: a public key and its key ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAuthority {
    /// The `kid` JWT-SVIDs signed by this key carry.
    pub key_id: String,
    /// The public key as DER SubjectPublicKeyInfo.
    pub public_key_der: Vec<u8>,
    /// When the authority stops being trusted (unix seconds), if known.
    pub expires_at: Option<i64>,
}

/// The trust bundle of one trust domain: its X.509 and JWT authorities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// Whose bundle this is.
    pub trust_domain: TrustDomain,
    /// X.509 authorities as DER certificates.
    pub x509_authorities: Vec<Vec<u8>>,
    /// JWT authorities.
    pub jwt_authorities: Vec<JwtAuthority>,
    /// `spiffe_refresh_hint` in seconds, if set.
    pub refresh_hint_seconds: Option<i64>,
    /// `spiffe_sequence`.
    pub sequence_number: u64,
}

/// Why a bundle document (JWKS or PEM) could not be read, or written.
///
/// `index` fields count JWKS `keys` entries, or PEM blocks, from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The document is not JSON.
    #[error("bundle is not valid JSON: {0}")]
    InvalidJson(String),
    /// The document is JSON but not an object.
    #[error("bundle must be a JSON object (a JWK Set)")]
    NotAnObject,
    /// No `keys` member (it must be present, even if empty).
    #[error("bundle has no \"keys\" member; a SPIFFE bundle must have one, even if empty")]
    MissingKeys,
    /// A top-level member has the wrong type.
    #[error("bundle member {member:?} must be {expected}")]
    InvalidMember {
        /// The member name.
        member: &'static str,
        /// What it must be, in words.
        expected: &'static str,
    },
    /// An entry of `keys` is not a JSON object.
    #[error("bundle key {index} is not a JSON object")]
    KeyNotAnObject {
        /// Position in `keys`.
        index: usize,
    },
    /// A member of a `keys` entry has the wrong type.
    #[error("bundle key {index}: member {member:?} must be {expected}")]
    InvalidKeyMember {
        /// Position in `keys`.
        index: usize,
        /// The member name.
        member: &'static str,
        /// What it must be, in words.
        expected: &'static str,
    },
    /// An `x509-svid` entry whose `x5c` certificate is not standard base64.
    #[error("bundle key {index}: x5c certificate is not valid standard base64")]
    X509InvalidBase64 {
        /// Position in `keys`.
        index: usize,
    },
    /// An `x509-svid` entry whose `x5c` certificate is not DER X.509.
    #[error("bundle key {index}: x5c is not a valid DER X.509 certificate: {reason}")]
    X509InvalidCertificate {
        /// Position in `keys`.
        index: usize,
        /// What the parser reported.
        reason: String,
    },
    /// An `x509-svid` entry whose JWK key members describe a different key
    /// from the one in its certificate.
    #[error("bundle key {index}: the JWK public key does not match the x5c certificate's key")]
    X509KeyMismatch {
        /// Position in `keys`.
        index: usize,
    },
    /// A `jwt-svid` entry without a (non-empty) `kid`.
    #[error("bundle key {index}: jwt-svid keys must have a non-empty \"kid\"")]
    JwtMissingKeyId {
        /// Position in `keys`.
        index: usize,
    },
    /// Two `jwt-svid` entries with the same `kid`.
    #[error("bundle key {index}: duplicate jwt-svid key ID {kid:?}")]
    DuplicateKeyId {
        /// Position in `keys` of the second occurrence.
        index: usize,
        /// The repeated key ID.
        kid: String,
    },
    /// The key members of an entry are malformed.
    #[error("bundle key {index}: {source}")]
    InvalidJwk {
        /// Position in `keys`.
        index: usize,
        /// What is wrong with the key.
        source: JwkError,
    },
    /// A JWT authority whose stored key cannot be written as a JWK.
    #[error("JWT authority {kid:?} cannot be written as a JWK: {source}")]
    UnrepresentableJwtAuthority {
        /// The authority's key ID.
        kid: String,
        /// Why its key could not be converted.
        source: JwkError,
    },
    /// An X.509 authority that is not a DER certificate.
    #[error("X.509 authority {index} is not a valid DER X.509 certificate: {reason}")]
    InvalidX509Authority {
        /// Position in `x509_authorities`.
        index: usize,
        /// What the parser reported.
        reason: String,
    },
    /// PEM input without any `CERTIFICATE` block.
    #[error("no PEM \"CERTIFICATE\" blocks found")]
    NoPemCertificates,
    /// A PEM block of a type other than `CERTIFICATE`.
    #[error("PEM block {index} is {label:?}; expected \"CERTIFICATE\"")]
    UnexpectedPemBlock {
        /// Position among PEM blocks.
        index: usize,
        /// The block's label.
        label: String,
    },
    /// A PEM block with no matching `-----END ...-----` line.
    #[error("PEM block {index} ({label:?}) has no matching END line")]
    UnterminatedPemBlock {
        /// Position among PEM blocks.
        index: usize,
        /// The block's label.
        label: String,
    },
    /// A PEM block whose body is not standard base64.
    #[error("PEM block {index} body is not valid base64")]
    InvalidPemBase64 {
        /// Position among PEM blocks.
        index: usize,
    },
    /// A PEM `CERTIFICATE` block that is not a DER X.509 certificate.
    #[error("PEM block {index} is not a valid X.509 certificate: {reason}")]
    InvalidPemCertificate {
        /// Position among PEM blocks.
        index: usize,
        /// What the parser reported.
        reason: String,
    },
}

impl Bundle {
    /// An empty bundle (no authorities, sequence 0, no refresh hint).
    pub fn new(trust_domain: TrustDomain) -> Self {
        Bundle {
            trust_domain,
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            refresh_hint_seconds: None,
            sequence_number: 0,
        }
    }

    /// Parses a SPIFFE bundle document for `trust_domain`.
    ///
    /// Entries without `use`, with an unknown `use`, or with an unknown `kty`
    /// are skipped, as the bundle specification requires; so is an `x509-svid`
    /// entry without certificates (X509-SVID section 6.2), and of several
    /// `x5c` certificates only the first is taken. Everything else that is
    /// malformed fails the whole document, naming the entry. Identical X.509
    /// authorities are kept once.
    pub fn parse_jwks(trust_domain: &TrustDomain, json: &[u8]) -> Result<Bundle, BundleError> {
        let doc: Value =
            serde_json::from_slice(json).map_err(|e| BundleError::InvalidJson(e.to_string()))?;
        let Value::Object(doc) = doc else {
            return Err(BundleError::NotAnObject);
        };
        let mut bundle = Bundle::new(trust_domain.clone());
        match doc.get("spiffe_sequence") {
            None | Some(Value::Null) => {}
            Some(v) => {
                bundle.sequence_number = v.as_u64().ok_or(BundleError::InvalidMember {
                    member: "spiffe_sequence",
                    expected: "a non-negative integer",
                })?;
            }
        }
        match doc.get("spiffe_refresh_hint") {
            None | Some(Value::Null) => {}
            Some(v) => {
                bundle.refresh_hint_seconds =
                    Some(v.as_i64().ok_or(BundleError::InvalidMember {
                        member: "spiffe_refresh_hint",
                        expected: "an integer number of seconds",
                    })?);
            }
        }
        let keys = match doc.get("keys") {
            None | Some(Value::Null) => return Err(BundleError::MissingKeys),
            Some(Value::Array(keys)) => keys,
            Some(_) => {
                return Err(BundleError::InvalidMember {
                    member: "keys",
                    expected: "an array of JWKs",
                });
            }
        };
        for (index, entry) in keys.iter().enumerate() {
            let Value::Object(entry) = entry else {
                return Err(BundleError::KeyNotAnObject { index });
            };
            match key_str(entry, index, "use")? {
                Some(X509_SVID_USE) => {
                    if let Some(der) = parse_x509_entry(entry, index)?
                        && !bundle.x509_authorities.contains(&der)
                    {
                        bundle.x509_authorities.push(der);
                    }
                }
                Some(JWT_SVID_USE) => {
                    if let Some(authority) = parse_jwt_entry(entry, index)? {
                        if bundle.find_jwt_authority(&authority.key_id).is_some() {
                            return Err(BundleError::DuplicateKeyId {
                                index,
                                kid: authority.key_id,
                            });
                        }
                        bundle.jwt_authorities.push(authority);
                    }
                }
                // No `use`, or one for an SVID type we do not know: skip.
                _ => {}
            }
        }
        Ok(bundle)
    }

    /// The bundle as a SPIFFE bundle document, indented with four spaces like
    /// `spire-server bundle show -format spiffe` (without a trailing newline).
    ///
    /// `spiffe_sequence` is written when non-zero and `spiffe_refresh_hint` when
    /// set; `expires_at` of JWT authorities has no place in the format and is
    /// not written. A JWT authority whose key has no JWK form is left out, and
    /// an X.509 authority whose key has none is written with `x5c` only; use
    /// [`Bundle::try_to_jwks`] to be told instead.
    pub fn to_jwks(&self) -> Vec<u8> {
        match self.jwks(false) {
            Ok(doc) => doc,
            Err(_) => unreachable!("lenient serialisation skips instead of failing"),
        }
    }

    /// Like [`Bundle::to_jwks`], but fails if any authority cannot be written
    /// faithfully (a JWT key with no JWK form, an X.509 authority that is not a
    /// certificate).
    pub fn try_to_jwks(&self) -> Result<Vec<u8>, BundleError> {
        self.jwks(true)
    }

    /// Reads one or more PEM `CERTIFICATE` blocks as the X.509 authorities of
    /// a new bundle (as `spire-server bundle set -format pem` does). Text
    /// outside blocks is ignored; any other block type is an error.
    pub fn from_pem_certs(trust_domain: &TrustDomain, pem: &[u8]) -> Result<Bundle, BundleError> {
        let mut bundle = Bundle::new(trust_domain.clone());
        for (index, der) in certificates_from_pem(pem)?.into_iter().enumerate() {
            check_certificate(&der).map_err(|e| BundleError::InvalidPemCertificate {
                index,
                reason: e.to_string(),
            })?;
            if !bundle.x509_authorities.contains(&der) {
                bundle.x509_authorities.push(der);
            }
        }
        Ok(bundle)
    }

    /// The X.509 authorities as concatenated PEM `CERTIFICATE` blocks, as
    /// `spire-server bundle show` prints them.
    pub fn x509_authorities_pem(&self) -> String {
        certificates_to_pem(&self.x509_authorities)
    }

    /// The JWT authority with key ID `key_id`, if any.
    pub fn find_jwt_authority(&self, key_id: &str) -> Option<&JwtAuthority> {
        self.jwt_authorities.iter().find(|a| a.key_id == key_id)
    }

    /// True when the bundle holds no authorities at all (a trust domain that
    /// revoked everything; its SVIDs must all be treated as invalid).
    pub fn is_empty(&self) -> bool {
        self.x509_authorities.is_empty() && self.jwt_authorities.is_empty()
    }

    fn jwks(&self, strict: bool) -> Result<Vec<u8>, BundleError> {
        let mut keys = Vec::with_capacity(self.x509_authorities.len() + self.jwt_authorities.len());
        for (index, der) in self.x509_authorities.iter().enumerate() {
            let key = match X509Certificate::from_der(der) {
                Ok((_, cert)) => JwkPublicKey::from_spki_der(cert.public_key().raw).ok(),
                Err(e) if strict => {
                    return Err(BundleError::InvalidX509Authority {
                        index,
                        reason: e.to_string(),
                    });
                }
                Err(_) => None,
            };
            keys.push(JwkOut::new(
                X509_SVID_USE,
                None,
                key.map(|k| k.members()),
                Some(vec![STANDARD.encode(der)]),
            ));
        }
        for authority in &self.jwt_authorities {
            match JwkPublicKey::from_spki_der(&authority.public_key_der) {
                Ok(key) => keys.push(JwkOut::new(
                    JWT_SVID_USE,
                    Some(authority.key_id.clone()),
                    Some(key.members()),
                    None,
                )),
                Err(source) if strict => {
                    return Err(BundleError::UnrepresentableJwtAuthority {
                        kid: authority.key_id.clone(),
                        source,
                    });
                }
                Err(_) => {}
            }
        }
        let doc = JwksOut {
            keys,
            spiffe_sequence: (self.sequence_number != 0).then_some(self.sequence_number),
            spiffe_refresh_hint: self.refresh_hint_seconds,
        };
        let mut out = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
        doc.serialize(&mut ser)
            .expect("strings and integers always serialise to a Vec");
        Ok(out)
    }
}

/// A bundle document as written: member order follows go-spiffe's output so
/// our documents read (and diff) like SPIRE's.
#[derive(Serialize)]
struct JwksOut {
    keys: Vec<JwkOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spiffe_sequence: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spiffe_refresh_hint: Option<i64>,
}

#[derive(Serialize)]
struct JwkOut {
    #[serde(rename = "use")]
    use_: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kty: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    crv: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x5c: Option<Vec<String>>,
}

impl JwkOut {
    fn new(
        use_: &'static str,
        kid: Option<String>,
        members: Option<JwkMembers>,
        x5c: Option<Vec<String>>,
    ) -> Self {
        let (kty, crv, x, y, n, e) = match members {
            Some(m) => (Some(m.kty), m.crv, m.x, m.y, m.n, m.e),
            None => (None, None, None, None, None, None),
        };
        JwkOut {
            use_,
            kty,
            kid,
            crv,
            x,
            y,
            n,
            e,
            x5c,
        }
    }
}

fn key_str<'a>(
    entry: &'a Map<String, Value>,
    index: usize,
    member: &'static str,
) -> Result<Option<&'a str>, BundleError> {
    match entry.get(member) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(BundleError::InvalidKeyMember {
            index,
            member,
            expected: "a string",
        }),
    }
}

/// True when the entry's `kty` is present but not one we understand, in which
/// case the specification says to skip the entry.
fn has_unknown_key_type(entry: &Map<String, Value>, index: usize) -> Result<bool, BundleError> {
    Ok(key_str(entry, index, "kty")?.is_some_and(|kty| !SUPPORTED_KEY_TYPES.contains(&kty)))
}

/// The CA certificate of an `x509-svid` entry, or `None` when the entry is to
/// be skipped.
fn parse_x509_entry(
    entry: &Map<String, Value>,
    index: usize,
) -> Result<Option<Vec<u8>>, BundleError> {
    if has_unknown_key_type(entry, index)? {
        return Ok(None);
    }
    let bad_x5c = BundleError::InvalidKeyMember {
        index,
        member: "x5c",
        expected: "an array of base64 strings",
    };
    let first = match entry.get("x5c") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(certs)) => match certs.first() {
            None => return Ok(None),
            Some(Value::String(first)) => first,
            Some(_) => return Err(bad_x5c),
        },
        Some(_) => return Err(bad_x5c),
    };
    let der = STANDARD
        .decode(first)
        .map_err(|_| BundleError::X509InvalidBase64 { index })?;
    let cert_key = {
        let (rest, cert) =
            X509Certificate::from_der(&der).map_err(|e| BundleError::X509InvalidCertificate {
                index,
                reason: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(BundleError::X509InvalidCertificate {
                index,
                reason: format!("{} trailing bytes after the certificate", rest.len()),
            });
        }
        JwkPublicKey::from_spki_der(cert.public_key().raw)
    };
    // Our own output carries no key members for keys without a JWK form (for
    // example ML-DSA); the certificate is what the entry means, so accept it.
    if entry.contains_key("kty") {
        let jwk_key = JwkPublicKey::from_jwk(entry)
            .map_err(|source| BundleError::InvalidJwk { index, source })?;
        if cert_key.as_ref() != Ok(&jwk_key) {
            return Err(BundleError::X509KeyMismatch { index });
        }
    }
    Ok(Some(der))
}

/// The authority of a `jwt-svid` entry, or `None` when it is to be skipped.
fn parse_jwt_entry(
    entry: &Map<String, Value>,
    index: usize,
) -> Result<Option<JwtAuthority>, BundleError> {
    if has_unknown_key_type(entry, index)? {
        return Ok(None);
    }
    let kid = match key_str(entry, index, "kid")? {
        Some(kid) if !kid.is_empty() => kid,
        _ => return Err(BundleError::JwtMissingKeyId { index }),
    };
    let key = JwkPublicKey::from_jwk(entry)
        .map_err(|source| BundleError::InvalidJwk { index, source })?;
    Ok(Some(JwtAuthority {
        key_id: kid.to_owned(),
        public_key_der: key.to_spki_der(),
        expires_at: None,
    }))
}

/// Why a PEM `CERTIFICATE` block's body is not exactly one certificate; its
/// text becomes the `reason` of [`BundleError::InvalidPemCertificate`].
#[derive(Debug, thiserror::Error)]
enum CertificateDerError {
    /// The DER parser rejected the bytes.
    #[error("{0}")]
    Parse(String),
    /// A certificate parsed, but bytes follow it.
    #[error("{0} trailing bytes after the certificate")]
    TrailingBytes(usize),
}

/// `Ok` when `der` is exactly one DER X.509 certificate.
fn check_certificate(der: &[u8]) -> Result<(), CertificateDerError> {
    let (rest, _) =
        X509Certificate::from_der(der).map_err(|e| CertificateDerError::Parse(e.to_string()))?;
    if rest.is_empty() {
        Ok(())
    } else {
        Err(CertificateDerError::TrailingBytes(rest.len()))
    }
}

#[cfg(test)]
mod tests;
