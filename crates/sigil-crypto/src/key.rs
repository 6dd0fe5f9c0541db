//! Key types, the [`Signer`] trait every private key implements, and
//! [`SoftwareKey`], the in-memory implementation.
//!
//! Everything in this crate that signs (certificates, CSRs, JWTs) takes a
//! `&dyn Signer`, never a concrete key, so keys held in an HSM or a TPM plug in
//! by implementing the trait. This module never writes keys anywhere; callers
//! decide where PKCS#8 bytes go.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
    RSA_PKCS1_SHA256, RSA_PSS_SHA256,
};
use aws_lc_rs::{digest, rsa};

use crate::CryptoError;
use crate::spki::{self, Curve, KeyAlg};

/// The key types SPIRE offers, with SPIRE's configuration names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum KeyType {
    /// ECDSA on NIST P-256 (`ec-p256`), signing with SHA-256.
    #[serde(rename = "ec-p256")]
    EcP256,
    /// ECDSA on NIST P-384 (`ec-p384`), signing with SHA-384.
    #[serde(rename = "ec-p384")]
    EcP384,
    /// RSA 2048-bit (`rsa-2048`), PKCS#1 v1.5 with SHA-256.
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    /// RSA 4096-bit (`rsa-4096`), PKCS#1 v1.5 with SHA-256.
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

impl KeyType {
    /// Every key type, in SPIRE's documentation order.
    pub const ALL: [KeyType; 4] = [
        KeyType::EcP256,
        KeyType::EcP384,
        KeyType::Rsa2048,
        KeyType::Rsa4096,
    ];

    /// SPIRE's name for this key type.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcP256 => "ec-p256",
            KeyType::EcP384 => "ec-p384",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa4096 => "rsa-4096",
        }
    }

    /// The key type of a SubjectPublicKeyInfo (DER), if it is one of ours.
    pub fn from_spki_der(spki_der: &[u8]) -> Result<KeyType, CryptoError> {
        let parsed = spki::parse_spki(spki_der)?;
        match parsed.alg {
            KeyAlg::Ec(Curve::P256) => Ok(KeyType::EcP256),
            KeyAlg::Ec(Curve::P384) => Ok(KeyType::EcP384),
            KeyAlg::Rsa { bits: 2048 } => Ok(KeyType::Rsa2048),
            KeyAlg::Rsa { bits: 4096 } => Ok(KeyType::Rsa4096),
            other => Err(CryptoError::PublicKeyRejected {
                reason: format!(
                    "{} is not a supported key type (ec-p256, ec-p384, rsa-2048, rsa-4096)",
                    other.describe()
                ),
            }),
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyType::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| CryptoError::UnknownKeyType {
                value: s.to_owned(),
            })
    }
}

/// A private key that can sign, wherever it lives.
///
/// `sign` produces the signature in X.509 form for the key's one algorithm:
/// ECDSA P-256 with SHA-256 or P-384 with SHA-384 as ASN.1 DER
/// (`Ecdsa-Sig-Value`), RSA PKCS#1 v1.5 with SHA-256. JWS signing converts
/// ECDSA to fixed width itself (see [`ecdsa_der_to_fixed`]).
pub trait Signer: Send + Sync + fmt::Debug {
    /// The kind of key.
    fn key_type(&self) -> KeyType;
    /// The public key as SubjectPublicKeyInfo DER.
    fn public_key_der(&self) -> &[u8];
    /// Signs `message` (not a digest: the signer hashes).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError>;

    /// Signs a 32-byte digest the caller computed, without hashing it again,
    /// for protocols that define their own hash (SPIRE's x509pop proof of
    /// possession signs `SHA-256(challenge || nonce)` this way). ECDSA keys
    /// sign the digest's integer value and return ASN.1 DER; RSA keys return
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt. Verify with
    /// [`verify_sha256_digest_signature`]. Signers that cannot sign a digest
    /// (some remote signers) keep this default, which refuses.
    fn sign_sha256_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, CryptoError> {
        let _ = digest;
        Err(CryptoError::Signing {
            reason: format!(
                "this {} signer cannot sign a precomputed digest",
                self.key_type()
            ),
        })
    }
}

/// A private key held in process memory (SPIRE's `memory` and `disk` key
/// managers).
pub struct SoftwareKey {
    key_type: KeyType,
    inner: Inner,
    public_key_der: Vec<u8>,
}

enum Inner {
    Ec(EcdsaKeyPair, KeyType),
    Rsa(rsa::KeyPair),
}

impl SoftwareKey {
    /// Generates a fresh key. RSA-4096 takes around a second.
    pub fn generate(key_type: KeyType) -> Result<Self, CryptoError> {
        let failed = || CryptoError::KeyGeneration {
            key_type: key_type.to_string(),
        };
        let inner = match key_type {
            KeyType::EcP256 => Inner::Ec(
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).map_err(|_| failed())?,
                key_type,
            ),
            KeyType::EcP384 => Inner::Ec(
                EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING).map_err(|_| failed())?,
                key_type,
            ),
            KeyType::Rsa2048 => {
                Inner::Rsa(rsa::KeyPair::generate(rsa::KeySize::Rsa2048).map_err(|_| failed())?)
            }
            KeyType::Rsa4096 => {
                Inner::Rsa(rsa::KeyPair::generate(rsa::KeySize::Rsa4096).map_err(|_| failed())?)
            }
        };
        Self::from_inner(inner)
    }

    /// Loads an unencrypted PKCS#8 (`PrivateKeyInfo`) key of one of the
    /// supported types.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der) {
            return Self::from_inner(Inner::Ec(k, KeyType::EcP256));
        }
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, der) {
            return Self::from_inner(Inner::Ec(k, KeyType::EcP384));
        }
        match rsa::KeyPair::from_pkcs8(der) {
            Ok(k) => Self::from_inner(Inner::Rsa(k)),
            Err(e) => Err(CryptoError::KeyRejected {
                reason: format!(
                    "not a PKCS#8 EC P-256, EC P-384 or RSA 2048/4096 private key ({e})"
                ),
            }),
        }
    }

    /// Loads a private key from PEM (`PRIVATE KEY`, `EC PRIVATE KEY` or
    /// `RSA PRIVATE KEY`, the first such block wins) or from DER in any of
    /// those three encodings. This is what SPIRE's disk-based plugins accept.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self, CryptoError> {
        if looks_like_pem(bytes) {
            let blocks = pem::parse_many(bytes).map_err(|e| CryptoError::Pem {
                reason: e.to_string(),
            })?;
            for block in blocks {
                match block.tag() {
                    "PRIVATE KEY" => return Self::from_pkcs8_der(block.contents()),
                    "EC PRIVATE KEY" => return Self::from_sec1_der(block.contents()),
                    "RSA PRIVATE KEY" => return Self::from_pkcs1_der(block.contents()),
                    _ => {}
                }
            }
            return Err(CryptoError::PemBlockMissing {
                label: "PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY",
            });
        }
        Self::from_pkcs8_der(bytes)
            .or_else(|_| Self::from_sec1_der(bytes))
            .or_else(|_| Self::from_pkcs1_der(bytes))
            .map_err(|_| CryptoError::KeyRejected {
                reason: "not a PKCS#8, SEC1 (EC) or PKCS#1 (RSA) private key in DER or PEM"
                    .to_owned(),
            })
    }

    /// The key as unencrypted PKCS#8 DER.
    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        let der = match &self.inner {
            Inner::Ec(k, _) => k.to_pkcs8v1().map(|d| d.as_ref().to_vec()),
            Inner::Rsa(k) => k.as_der().map(|d| d.as_ref().to_vec()),
        };
        // Serialising a key aws-lc-rs itself parsed or generated only fails on
        // allocation failure, which aborts anyway.
        der.expect("aws-lc-rs serialises a key pair it holds to PKCS#8")
    }

    /// The key as a PEM `PRIVATE KEY` block (PKCS#8).
    pub fn to_pkcs8_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.to_pkcs8_der()))
    }

    fn from_sec1_der(der: &[u8]) -> Result<Self, CryptoError> {
        if let Ok(k) = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_ASN1_SIGNING, der) {
            return Self::from_inner(Inner::Ec(k, KeyType::EcP256));
        }
        EcdsaKeyPair::from_private_key_der(&ECDSA_P384_SHA384_ASN1_SIGNING, der)
            .map_err(|e| CryptoError::KeyRejected {
                reason: format!("not a SEC1 EC P-256 or P-384 private key ({e})"),
            })
            .and_then(|k| Self::from_inner(Inner::Ec(k, KeyType::EcP384)))
    }

    fn from_pkcs1_der(der: &[u8]) -> Result<Self, CryptoError> {
        rsa::KeyPair::from_der(der)
            .map_err(|e| CryptoError::KeyRejected {
                reason: format!("not a PKCS#1 RSA private key ({e})"),
            })
            .and_then(|k| Self::from_inner(Inner::Rsa(k)))
    }

    fn from_inner(inner: Inner) -> Result<Self, CryptoError> {
        let (key_type, public_key_der) = match &inner {
            Inner::Ec(k, key_type) => {
                let key_type = *key_type;
                let der = k
                    .public_key()
                    .as_der()
                    .map_err(|_| CryptoError::KeyRejected {
                        reason: "cannot encode EC public key".to_owned(),
                    })?;
                (key_type, der.as_ref().to_vec())
            }
            Inner::Rsa(k) => {
                let key_type = match k.public_modulus_len() * 8 {
                    2048 => KeyType::Rsa2048,
                    4096 => KeyType::Rsa4096,
                    bits => {
                        return Err(CryptoError::KeyRejected {
                            reason: format!(
                                "RSA key has {bits} bits; supported sizes are 2048 and 4096"
                            ),
                        });
                    }
                };
                let der = k
                    .public_key()
                    .as_der()
                    .map_err(|_| CryptoError::KeyRejected {
                        reason: "cannot encode RSA public key".to_owned(),
                    })?;
                (key_type, der.as_ref().to_vec())
            }
        };
        Ok(SoftwareKey {
            key_type,
            inner,
            public_key_der,
        })
    }
}

impl fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print private material.
        f.debug_struct("SoftwareKey")
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

impl Signer for SoftwareKey {
    fn key_type(&self) -> KeyType {
        self.key_type
    }

    fn public_key_der(&self) -> &[u8] {
        &self.public_key_der
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let rng = SystemRandom::new();
        match &self.inner {
            Inner::Ec(k, _) => k
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| CryptoError::Signing {
                    reason: format!("{} ECDSA signing failed", self.key_type),
                }),
            Inner::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(|_| CryptoError::Signing {
                        reason: format!("{} PKCS#1 v1.5 signing failed", self.key_type),
                    })?;
                Ok(sig)
            }
        }
    }

    fn sign_sha256_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, CryptoError> {
        let failed = |what: &str| CryptoError::Signing {
            reason: format!("{} {what} digest signing failed", self.key_type),
        };
        match &self.inner {
            Inner::Ec(k, KeyType::EcP384) => {
                // aws-lc-rs pairs a P-384 key with SHA-384 digests. ECDSA
                // signs the digest as an integer, and 16 zero bytes in front
                // of a 32-byte digest make a 48-byte value with the same
                // integer, which is what Go's ecdsa.Sign does with a short
                // hash on P-384.
                let mut wide = [0u8; 48];
                wide[16..].copy_from_slice(digest);
                let d = aws_lc_rs::digest::Digest::import_less_safe(&wide, &digest::SHA384)
                    .map_err(|_| failed("ECDSA"))?;
                k.sign_digest(&d)
                    .map(|s| s.as_ref().to_vec())
                    .map_err(|_| failed("ECDSA"))
            }
            Inner::Ec(k, _) => {
                let d = aws_lc_rs::digest::Digest::import_less_safe(digest, &digest::SHA256)
                    .map_err(|_| failed("ECDSA"))?;
                k.sign_digest(&d)
                    .map(|s| s.as_ref().to_vec())
                    .map_err(|_| failed("ECDSA"))
            }
            Inner::Rsa(k) => {
                let d = aws_lc_rs::digest::Digest::import_less_safe(digest, &digest::SHA256)
                    .map_err(|_| failed("RSA-PSS"))?;
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign_digest(&RSA_PSS_SHA256, &d, &mut sig)
                    .map_err(|_| failed("RSA-PSS"))?;
                Ok(sig)
            }
        }
    }
}

/// RSA-PSS verification with the largest salt the key allows, which is what
/// Go's `rsa.SignPSS` uses when given no options (SPIRE's agents).
static RSA_PSS_SHA256_MAX_SALT: signature::RsaParameters =
    signature::RSA_PSS_2048_8192_SHA256.with_pss_salt_length(signature::RsaPssSaltLength::Max);

/// Verifies a signature made by [`Signer::sign_sha256_digest`] or by Go's
/// `ecdsa.Sign` / `rsa.SignPSS(.., crypto.SHA256, digest, nil)` over the
/// 32-byte `digest`, under the public key `spki_der` (SubjectPublicKeyInfo).
/// ECDSA (P-256, P-384) signatures are ASN.1 DER. RSA-PSS signatures are
/// accepted with a 32-byte salt or the largest salt the key allows (the
/// two salt lengths signers use; Go's verifier would also take others).
pub fn verify_sha256_digest_signature(
    spki_der: &[u8],
    digest: &[u8; 32],
    sig: &[u8],
) -> Result<(), CryptoError> {
    let key = spki::parse_spki(spki_der)?;
    let d = aws_lc_rs::digest::Digest::import_less_safe(digest, &digest::SHA256).map_err(|_| {
        CryptoError::BadSignature {
            what: "digest".to_owned(),
        }
    })?;
    let bad = || CryptoError::BadSignature {
        what: format!("{} signature over the digest", key.alg.describe()),
    };
    let verify = |alg: &'static dyn signature::VerificationAlgorithm| {
        signature::UnparsedPublicKey::new(alg, &key.raw_key).verify_digest(&d, sig)
    };
    match key.alg {
        KeyAlg::Ec(Curve::P256) => verify(&signature::ECDSA_P256_SHA256_ASN1).map_err(|_| bad()),
        KeyAlg::Ec(Curve::P384) => verify(&signature::ECDSA_P384_SHA256_ASN1).map_err(|_| bad()),
        KeyAlg::Rsa { .. } => verify(&signature::RSA_PSS_2048_8192_SHA256)
            .or_else(|_| verify(&RSA_PSS_SHA256_MAX_SALT))
            .map_err(|_| bad()),
        ref other => Err(CryptoError::PublicKeyRejected {
            reason: format!(
                "{} keys cannot verify digest signatures (EC P-256, EC P-384 and RSA can)",
                other.describe()
            ),
        }),
    }
}

/// Loads a private key from PEM or DER; see [`SoftwareKey::from_pem_or_der`].
pub fn parse_pem_or_der_key(bytes: &[u8]) -> Result<SoftwareKey, CryptoError> {
    SoftwareKey::from_pem_or_der(bytes)
}

/// Converts an ASN.1 DER `Ecdsa-Sig-Value` to the fixed-width `r || s` form
/// JWS uses; `field_len` is the curve's field size in bytes (32 for P-256,
/// 48 for P-384, 66 for P-521).
pub fn ecdsa_der_to_fixed(sig: &[u8], field_len: usize) -> Result<Vec<u8>, CryptoError> {
    let bad = |reason: &str| CryptoError::MalformedEcdsaSignature {
        reason: reason.to_owned(),
    };
    let (body, rest) = der_take(sig, 0x30).ok_or_else(|| bad("not a DER SEQUENCE"))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes after the SEQUENCE"));
    }
    let (r, body) = der_take(body, 0x02).ok_or_else(|| bad("r is not a DER INTEGER"))?;
    let (s, body) = der_take(body, 0x02).ok_or_else(|| bad("s is not a DER INTEGER"))?;
    if !body.is_empty() {
        return Err(bad("extra fields after r and s"));
    }
    let mut out = vec![0u8; field_len * 2];
    for (i, int) in [r, s].into_iter().enumerate() {
        if int.first().is_some_and(|b| b & 0x80 != 0) {
            return Err(bad("negative integer"));
        }
        let start = int.iter().position(|b| *b != 0).unwrap_or(int.len());
        let mag = &int[start..];
        if mag.len() > field_len {
            return Err(bad("integer longer than the curve's field size"));
        }
        let end = (i + 1) * field_len;
        out[end - mag.len()..end].copy_from_slice(mag);
    }
    Ok(out)
}

/// Converts a fixed-width `r || s` ECDSA signature (JWS) to ASN.1 DER.
pub fn ecdsa_fixed_to_der(sig: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sig.is_empty() || !sig.len().is_multiple_of(2) {
        return Err(CryptoError::MalformedEcdsaSignature {
            reason: format!("fixed-width signature has odd or zero length {}", sig.len()),
        });
    }
    let (r, s) = sig.split_at(sig.len() / 2);
    let mut body = der_integer(r);
    body.extend(der_integer(s));
    let mut out = vec![0x30];
    der_push_len(&mut out, body.len());
    out.extend(body);
    Ok(out)
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .is_some_and(|i| bytes[i..].starts_with(b"-----BEGIN"))
}

/// Takes one DER TLV with the expected tag; returns (contents, rest).
fn der_take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, input) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 2 || input.len() < n {
            return None;
        }
        let mut len = 0usize;
        for b in &input[..n] {
            len = (len << 8) | usize::from(*b);
        }
        input = &input[n..];
        if len < 0x80 {
            return None; // not minimal
        }
        len
    };
    if input.len() < len {
        return None;
    }
    Some(input.split_at(len))
}

fn der_integer(magnitude: &[u8]) -> Vec<u8> {
    let start = magnitude
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(magnitude.len());
    let mut content = magnitude[start..].to_vec();
    if content.first().is_none_or(|b| b & 0x80 != 0) {
        content.insert(0, 0);
    }
    let mut out = vec![0x02];
    der_push_len(&mut out, content.len());
    out.extend(content);
    out
}

fn der_push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xff {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_ASN1,
        RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
    };

    #[test]
    fn key_type_names_round_trip_with_spire_names() {
        for kt in KeyType::ALL {
            assert_eq!(kt.to_string().parse::<KeyType>().unwrap(), kt);
            let json = serde_json::to_string(&kt).unwrap();
            assert_eq!(json, format!("\"{kt}\""));
            assert_eq!(serde_json::from_str::<KeyType>(&json).unwrap(), kt);
        }
        assert_eq!("ec-p256".parse::<KeyType>().unwrap(), KeyType::EcP256);
        assert_eq!("rsa-4096".parse::<KeyType>().unwrap(), KeyType::Rsa4096);
    }

    #[test]
    fn unknown_key_type_error_names_value_and_allowed_names() {
        let err = "ec-p521".parse::<KeyType>().unwrap_err().to_string();
        assert!(err.contains("\"ec-p521\""), "{err}");
        for name in ["ec-p256", "ec-p384", "rsa-2048", "rsa-4096"] {
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn software_keys_sign_verifiably_and_round_trip_through_pkcs8() {
        for kt in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
            let key = SoftwareKey::generate(kt).unwrap();
            assert_eq!(key.key_type(), kt);
            assert_eq!(KeyType::from_spki_der(key.public_key_der()).unwrap(), kt);
            let sig = key.sign(b"hello").unwrap();
            let raw = spki::parse_spki(key.public_key_der()).unwrap().raw_key;
            let alg: &dyn aws_lc_rs::signature::VerificationAlgorithm = match kt {
                KeyType::EcP256 => &ECDSA_P256_SHA256_ASN1,
                KeyType::EcP384 => &ECDSA_P384_SHA384_ASN1,
                _ => &RSA_PKCS1_2048_8192_SHA256,
            };
            UnparsedPublicKey::new(alg, &raw)
                .verify(b"hello", &sig)
                .unwrap();

            let reloaded = SoftwareKey::from_pkcs8_der(&key.to_pkcs8_der()).unwrap();
            assert_eq!(reloaded.key_type(), kt);
            assert_eq!(reloaded.public_key_der(), key.public_key_der());
            let from_pem = SoftwareKey::from_pem_or_der(key.to_pkcs8_pem().as_bytes()).unwrap();
            assert_eq!(from_pem.public_key_der(), key.public_key_der());
        }
    }

    #[test]
    fn rsa_4096_generates_and_is_recognised() {
        let key = SoftwareKey::generate(KeyType::Rsa4096).unwrap();
        assert_eq!(key.key_type(), KeyType::Rsa4096);
        assert_eq!(key.sign(b"m").unwrap().len(), 512);
        assert_eq!(
            KeyType::from_spki_der(key.public_key_der()).unwrap(),
            KeyType::Rsa4096
        );
    }

    #[test]
    fn sec1_and_pkcs1_keys_from_openssl_style_pem_load() {
        let ec = SoftwareKey::generate(KeyType::EcP384).unwrap();
        let Inner::Ec(pair, _) = &ec.inner else {
            unreachable!()
        };
        let sec1 = pair.private_key().as_der().unwrap();
        let pem_text = pem::encode(&pem::Pem::new("EC PRIVATE KEY", sec1.as_ref().to_vec()));
        let loaded = parse_pem_or_der_key(pem_text.as_bytes()).unwrap();
        assert_eq!(loaded.public_key_der(), ec.public_key_der());
        let loaded_der = parse_pem_or_der_key(sec1.as_ref()).unwrap();
        assert_eq!(loaded_der.public_key_der(), ec.public_key_der());
    }

    #[test]
    fn garbage_keys_are_rejected_precisely() {
        let err = SoftwareKey::from_pkcs8_der(b"garbage").unwrap_err();
        assert!(matches!(err, CryptoError::KeyRejected { .. }), "{err}");
        let err =
            parse_pem_or_der_key(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .unwrap_err();
        assert!(matches!(err, CryptoError::PemBlockMissing { .. }), "{err}");
    }

    #[test]
    fn debug_output_hides_private_key() {
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let dbg = format!("{key:?}");
        assert!(dbg.contains("EcP256"));
        assert!(!dbg.contains("inner"));
    }

    #[test]
    fn ecdsa_der_and_fixed_forms_convert_both_ways() {
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        for _ in 0..20 {
            let der = key.sign(b"msg").unwrap();
            let fixed = ecdsa_der_to_fixed(&der, 32).unwrap();
            assert_eq!(fixed.len(), 64);
            let raw = spki::parse_spki(key.public_key_der()).unwrap().raw_key;
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &raw)
                .verify(b"msg", &fixed)
                .unwrap();
            assert_eq!(ecdsa_fixed_to_der(&fixed).unwrap(), der);
        }
    }

    #[test]
    fn malformed_ecdsa_signatures_are_rejected() {
        assert!(ecdsa_der_to_fixed(b"", 32).is_err());
        assert!(ecdsa_der_to_fixed(&[0x30, 0x03, 0x02, 0x01, 0x01], 32).is_err());
        // r longer than the field
        let mut long = vec![0x30, 0x25, 0x02, 0x21];
        long.extend([0x7f; 33]);
        long.extend([0x02, 0x00]);
        assert!(ecdsa_der_to_fixed(&long, 32).is_err());
        assert!(ecdsa_fixed_to_der(&[1, 2, 3]).is_err());
    }

    #[test]
    fn der_lengths_above_127_use_long_form() {
        // P-521 signatures exceed 127 bytes of content.
        let fixed = vec![0xff; 132];
        let der = ecdsa_fixed_to_der(&fixed).unwrap();
        assert_eq!(&der[..2], &[0x30, 0x81]);
        assert_eq!(ecdsa_der_to_fixed(&der, 66).unwrap(), fixed);
    }
}
