//! Public keys as they appear in certificates (SubjectPublicKeyInfo), and
//! verification of X.509-style signatures (certificates, CSRs) by signature
//! algorithm OID. Internal: the public modules decide what to verify.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::CryptoError;

pub(crate) const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
pub(crate) const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
pub(crate) const OID_ED25519: &str = "1.3.101.112";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_P521: &str = "1.3.132.0.35";

/// An elliptic curve we know by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }
}

/// What kind of key a SubjectPublicKeyInfo holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyAlg {
    Ec(Curve),
    Rsa {
        bits: usize,
    },
    Ed25519,
    /// Anything else, named by its algorithm OID (and curve OID for EC).
    Other(String),
}

impl KeyAlg {
    pub(crate) fn describe(&self) -> String {
        match self {
            KeyAlg::Ec(c) => format!("EC {}", c.name()),
            KeyAlg::Rsa { bits } => format!("RSA-{bits}"),
            KeyAlg::Ed25519 => "Ed25519".to_owned(),
            KeyAlg::Other(oid) => format!("unsupported ({oid})"),
        }
    }
}

/// A parsed SubjectPublicKeyInfo: its kind and the raw `subjectPublicKey`
/// bits (EC point, PKCS#1 RSAPublicKey, or Ed25519 key), which is the form
/// aws-lc-rs verification takes.
#[derive(Debug, Clone)]
pub(crate) struct ParsedSpki {
    pub(crate) alg: KeyAlg,
    pub(crate) raw_key: Vec<u8>,
}

/// Parses SubjectPublicKeyInfo DER, rejecting trailing bytes.
pub(crate) fn parse_spki(der: &[u8]) -> Result<ParsedSpki, CryptoError> {
    let (rest, spki) =
        SubjectPublicKeyInfo::from_der(der).map_err(|e| CryptoError::PublicKeyRejected {
            reason: format!("not a DER SubjectPublicKeyInfo: {e}"),
        })?;
    if !rest.is_empty() {
        return Err(CryptoError::PublicKeyRejected {
            reason: format!("{} trailing bytes after SubjectPublicKeyInfo", rest.len()),
        });
    }
    from_x509(&spki)
}

/// Classifies an already-parsed SubjectPublicKeyInfo.
pub(crate) fn from_x509(spki: &SubjectPublicKeyInfo<'_>) -> Result<ParsedSpki, CryptoError> {
    let alg_oid = spki.algorithm.algorithm.to_id_string();
    let raw_key = spki.subject_public_key.data.to_vec();
    let alg = match alg_oid.as_str() {
        OID_EC_PUBLIC_KEY => {
            let curve_oid = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .ok_or_else(|| CryptoError::PublicKeyRejected {
                    reason: "EC public key without a named curve".to_owned(),
                })?;
            match curve_oid.as_str() {
                OID_P256 => KeyAlg::Ec(Curve::P256),
                OID_P384 => KeyAlg::Ec(Curve::P384),
                OID_P521 => KeyAlg::Ec(Curve::P521),
                other => KeyAlg::Other(format!("EC curve {other}")),
            }
        }
        OID_RSA_ENCRYPTION => {
            let bits = match spki.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => modulus_bits(rsa.modulus),
                _ => {
                    return Err(CryptoError::PublicKeyRejected {
                        reason: "RSA public key is not a valid PKCS#1 RSAPublicKey".to_owned(),
                    });
                }
            };
            KeyAlg::Rsa { bits }
        }
        OID_ED25519 => KeyAlg::Ed25519,
        other => KeyAlg::Other(other.to_owned()),
    };
    Ok(ParsedSpki { alg, raw_key })
}

/// Verifies an X.509-style signature (certificate, CSR): `sig_alg_oid` is
/// the signatureAlgorithm OID, the signature is DER for ECDSA. `what` names
/// the signed object in the error.
pub(crate) fn verify_x509_signature(
    sig_alg_oid: &str,
    key: &ParsedSpki,
    message: &[u8],
    sig: &[u8],
    what: &str,
) -> Result<(), CryptoError> {
    let unsupported = || CryptoError::UnsupportedSignatureAlgorithm {
        algorithm: format!("{sig_alg_oid} with a {} key", key.alg.describe()),
    };
    let alg: &'static dyn VerificationAlgorithm = match (sig_alg_oid, &key.alg) {
        // ecdsa-with-SHA256/384/512 (RFC 5758)
        ("1.2.840.10045.4.3.2", KeyAlg::Ec(Curve::P256)) => &signature::ECDSA_P256_SHA256_ASN1,
        ("1.2.840.10045.4.3.3", KeyAlg::Ec(Curve::P256)) => &signature::ECDSA_P256_SHA384_ASN1,
        ("1.2.840.10045.4.3.4", KeyAlg::Ec(Curve::P256)) => &signature::ECDSA_P256_SHA512_ASN1,
        ("1.2.840.10045.4.3.2", KeyAlg::Ec(Curve::P384)) => &signature::ECDSA_P384_SHA256_ASN1,
        ("1.2.840.10045.4.3.3", KeyAlg::Ec(Curve::P384)) => &signature::ECDSA_P384_SHA384_ASN1,
        ("1.2.840.10045.4.3.4", KeyAlg::Ec(Curve::P384)) => &signature::ECDSA_P384_SHA512_ASN1,
        ("1.2.840.10045.4.3.2", KeyAlg::Ec(Curve::P521)) => &signature::ECDSA_P521_SHA256_ASN1,
        ("1.2.840.10045.4.3.3", KeyAlg::Ec(Curve::P521)) => &signature::ECDSA_P521_SHA384_ASN1,
        ("1.2.840.10045.4.3.4", KeyAlg::Ec(Curve::P521)) => &signature::ECDSA_P521_SHA512_ASN1,
        // sha256/384/512WithRSAEncryption (RFC 4055)
        ("1.2.840.113549.1.1.11", KeyAlg::Rsa { .. }) => &signature::RSA_PKCS1_2048_8192_SHA256,
        ("1.2.840.113549.1.1.12", KeyAlg::Rsa { .. }) => &signature::RSA_PKCS1_2048_8192_SHA384,
        ("1.2.840.113549.1.1.13", KeyAlg::Rsa { .. }) => &signature::RSA_PKCS1_2048_8192_SHA512,
        (OID_ED25519, KeyAlg::Ed25519) => &signature::ED25519,
        _ => return Err(unsupported()),
    };
    UnparsedPublicKey::new(alg, &key.raw_key)
        .verify(message, sig)
        .map_err(|_| CryptoError::BadSignature {
            what: what.to_owned(),
        })
}

/// Bit length of a big-endian unsigned integer (leading zero bytes allowed).
fn modulus_bits(be: &[u8]) -> usize {
    let trimmed: &[u8] = match be.iter().position(|b| *b != 0) {
        Some(i) => &be[i..],
        None => return 0,
    };
    trimmed.len() * 8 - trimmed[0].leading_zeros() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_bits_ignores_leading_zero_bytes() {
        assert_eq!(modulus_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(modulus_bits(&[0x01, 0x00]), 9);
        assert_eq!(modulus_bits(&[0x00]), 0);
    }

    #[test]
    fn parse_spki_rejects_garbage_and_trailing_bytes() {
        assert!(matches!(
            parse_spki(b"nope"),
            Err(CryptoError::PublicKeyRejected { .. })
        ));
        let key = crate::SoftwareKey::generate(crate::KeyType::EcP256).unwrap();
        let mut der = crate::Signer::public_key_der(&key).to_vec();
        der.push(0);
        let err = parse_spki(&der).unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
    }
}
