//! The key a PodCertificateRequest asks a certificate for, and the proof
//! that the requester holds its private half. A request carries one of two
//! shapes:
//!
//! - `stubPKCS10Request` (the `certificates.k8s.io/v1` shape): a DER
//!   PKCS#10 CSR whose self-signature proves possession; only its key is
//!   used, its names are ignored;
//! - `pkixPublicKey` + `proofOfPossession` (the `v1beta1` shape, dropped
//!   from `v1`): a DER SubjectPublicKeyInfo and a signature by that key over
//!   the pod UID (ECDSA ASN.1 or RSA-PSS over its SHA-256 digest).
//!
//! The API server checks the proof at creation too; the signer checks it
//! again, because it must not sign a key nobody proved to hold, whatever
//! wrote the object. Keys are limited to the types sigil's CA issues
//! X509-SVIDs for (EC P-256, EC P-384, RSA 2048, RSA 4096).
//!
//! Pure: no I/O, no clock.

use sigil_crypto::{CryptoError, KeyType};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

/// The key material of one request, as it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProof<'a> {
    /// `spec.stubPKCS10Request` (DER).
    StubCsr(&'a [u8]),
    /// `spec.pkixPublicKey` and `spec.proofOfPossession` (DER, raw
    /// signature bytes).
    Pkix {
        /// SubjectPublicKeyInfo, DER.
        public_key: &'a [u8],
        /// Signature over the pod UID.
        proof: &'a [u8],
    },
}

impl<'a> KeyProof<'a> {
    /// Picks the shape from the request's three optional fields; exactly
    /// one shape must be present, as the API defines.
    pub fn from_fields(
        stub_csr: Option<&'a [u8]>,
        public_key: Option<&'a [u8]>,
        proof: Option<&'a [u8]>,
    ) -> Result<KeyProof<'a>, PopError> {
        let nonempty = |f: Option<&'a [u8]>| f.filter(|b| !b.is_empty());
        match (nonempty(stub_csr), nonempty(public_key), nonempty(proof)) {
            (Some(csr), None, None) => Ok(KeyProof::StubCsr(csr)),
            (None, Some(public_key), Some(proof)) => Ok(KeyProof::Pkix { public_key, proof }),
            _ => Err(PopError::Shape),
        }
    }
}

/// Why a request's key cannot be signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PopError {
    /// Neither or both shapes, or half of the PKIX one.
    #[error("exactly one of stubPKCS10Request or (pkixPublicKey, proofOfPossession) must be set")]
    Shape,
    /// The stub CSR does not parse, or its self-signature does not verify.
    #[error("stubPKCS10Request: {0}")]
    Csr(#[source] CryptoError),
    /// `pkixPublicKey` is not a DER SubjectPublicKeyInfo.
    #[error("pkixPublicKey is not a DER SubjectPublicKeyInfo: {0}")]
    PublicKey(String),
    /// `proofOfPossession` is not the key's signature over the pod UID.
    #[error("proofOfPossession is not a signature by pkixPublicKey over the pod UID")]
    Signature,
    /// A key sigil does not issue X509-SVIDs for.
    #[error("{0}")]
    UnsupportedKey(#[source] CryptoError),
}

impl PopError {
    /// The `reason` of the `Denied` condition.
    pub fn reason(&self) -> &'static str {
        match self {
            PopError::UnsupportedKey(_) => "UnsupportedKeyType",
            PopError::Shape | PopError::Csr(_) | PopError::PublicKey(_) | PopError::Signature => {
                "InvalidProofOfPossession"
            }
        }
    }
}

/// The verified key: its DER SubjectPublicKeyInfo and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKey {
    /// SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
    /// The key type.
    pub key_type: KeyType,
}

// A well-formed key of a type we do not issue for is "unsupported"; one
// that does not parse is a bad request.
fn supported(spki: &[u8]) -> Result<KeyType, PopError> {
    match SubjectPublicKeyInfo::from_der(spki) {
        Ok(([], _)) => {}
        Ok((rest, _)) => {
            return Err(PopError::PublicKey(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        Err(e) => return Err(PopError::PublicKey(e.to_string())),
    }
    KeyType::from_spki_der(spki).map_err(PopError::UnsupportedKey)
}

/// Checks the proof for a request about the pod with UID `pod_uid` and
/// returns the key to certify.
pub fn verify(proof: KeyProof<'_>, pod_uid: &str) -> Result<VerifiedKey, PopError> {
    match proof {
        KeyProof::StubCsr(der) => {
            // The key type first, so an unsupported key is named as such
            // rather than as a signature we cannot check.
            let (_, csr) = X509CertificationRequest::from_der(der).map_err(|e| {
                PopError::Csr(CryptoError::CsrParse {
                    reason: e.to_string(),
                })
            })?;
            let key_type = supported(csr.certification_request_info.subject_pki.raw)?;
            let verified = sigil_crypto::parse_and_verify_csr(der).map_err(PopError::Csr)?;
            Ok(VerifiedKey {
                spki_der: verified.public_key_der,
                key_type,
            })
        }
        KeyProof::Pkix { public_key, proof } => {
            let key_type = supported(public_key)?;
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pod_uid.as_bytes());
            let mut d = [0u8; 32];
            d.copy_from_slice(digest.as_ref());
            sigil_crypto::key::verify_sha256_digest_signature(public_key, &d, proof)
                .map_err(|_| PopError::Signature)?;
            Ok(VerifiedKey {
                spki_der: public_key.to_vec(),
                key_type,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rcgen::PublicKeyData as _;
    use sigil_crypto::key::Signer as _;
    use sigil_crypto::{SoftwareKey, create_csr};

    use super::*;

    const POD_UID: &str = "0f1e2d3c-aaaa-bbbb-cccc-000000000001";

    fn pop(key: &SoftwareKey, uid: &str) -> Vec<u8> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, uid.as_bytes());
        let mut d = [0u8; 32];
        d.copy_from_slice(digest.as_ref());
        key.sign_sha256_digest(&d).unwrap()
    }

    #[test]
    fn a_stub_csr_with_a_valid_self_signature_yields_its_key() {
        for kt in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
            let key = SoftwareKey::generate(kt).unwrap();
            let der = create_csr(&key, None).unwrap();
            let v = verify(KeyProof::StubCsr(&der), POD_UID).unwrap();
            assert_eq!(v.spki_der, key.public_key_der().to_vec());
            assert_eq!(v.key_type, kt);
        }
    }

    #[test]
    fn a_stub_csr_with_a_bad_signature_is_refused_as_invalid_proof() {
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let mut der = create_csr(&key, None).unwrap();
        // The signature is the last element: flip a bit in its last byte.
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let e = verify(KeyProof::StubCsr(&der), POD_UID).unwrap_err();
        assert!(
            matches!(e, PopError::Csr(CryptoError::BadSignature { .. })),
            "{e:?}"
        );
        assert_eq!(e.reason(), "InvalidProofOfPossession");
        // A CSR whose signature is another key's.
        let other = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let mut spliced = create_csr(&other, None).unwrap();
        let pk = key.public_key_der().to_vec();
        let opk = other.public_key_der().to_vec();
        let at = spliced
            .windows(opk.len())
            .position(|w| w == opk.as_slice())
            .unwrap();
        spliced[at..at + pk.len()].copy_from_slice(&pk);
        let e = verify(KeyProof::StubCsr(&spliced), POD_UID).unwrap_err();
        assert_eq!(e.reason(), "InvalidProofOfPossession", "{e}");
        // Not a CSR at all.
        let e = verify(KeyProof::StubCsr(b"\x30\x03\x02\x01\x00"), POD_UID).unwrap_err();
        assert!(matches!(e, PopError::Csr(_)), "{e:?}");
    }

    #[test]
    fn a_pkix_key_with_a_signature_over_the_pod_uid_is_accepted() {
        for kt in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
            let key = SoftwareKey::generate(kt).unwrap();
            let pk = key.public_key_der().to_vec();
            let sig = pop(&key, POD_UID);
            let v = verify(
                KeyProof::Pkix {
                    public_key: &pk,
                    proof: &sig,
                },
                POD_UID,
            )
            .unwrap();
            assert_eq!(v.spki_der, pk);
        }
    }

    #[test]
    fn a_pkix_proof_over_another_uid_or_by_another_key_is_refused() {
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let other = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let pk = key.public_key_der().to_vec();
        for sig in [
            pop(&key, "another-pod"),
            pop(&other, POD_UID),
            vec![0x30, 0],
        ] {
            let e = verify(
                KeyProof::Pkix {
                    public_key: &pk,
                    proof: &sig,
                },
                POD_UID,
            )
            .unwrap_err();
            assert!(matches!(e, PopError::Signature), "{e:?}");
            assert_eq!(e.reason(), "InvalidProofOfPossession");
        }
        let e = verify(
            KeyProof::Pkix {
                public_key: b"not a key",
                proof: &pop(&key, POD_UID),
            },
            POD_UID,
        )
        .unwrap_err();
        assert!(matches!(e, PopError::PublicKey(_)), "{e:?}");
    }

    #[test]
    fn unsupported_key_types_are_refused_naming_the_type() {
        for alg in [&rcgen::PKCS_ED25519, &rcgen::PKCS_ECDSA_P521_SHA512] {
            let kp = rcgen::KeyPair::generate_for(alg).unwrap();
            let csr = rcgen::CertificateParams::default()
                .serialize_request(&kp)
                .unwrap();
            let e = verify(KeyProof::StubCsr(csr.der()), POD_UID).unwrap_err();
            assert!(matches!(e, PopError::UnsupportedKey(_)), "{e:?}");
            assert_eq!(e.reason(), "UnsupportedKeyType");
            let pk = kp.subject_public_key_info();
            let e = verify(
                KeyProof::Pkix {
                    public_key: &pk,
                    proof: b"x",
                },
                POD_UID,
            )
            .unwrap_err();
            assert_eq!(e.reason(), "UnsupportedKeyType", "{e}");
        }
    }

    #[test]
    fn exactly_one_shape_must_be_present() {
        let a: &[u8] = b"a";
        assert!(matches!(
            KeyProof::from_fields(Some(a), None, None),
            Ok(KeyProof::StubCsr(_))
        ));
        assert!(matches!(
            KeyProof::from_fields(None, Some(a), Some(a)),
            Ok(KeyProof::Pkix { .. })
        ));
        for (s, p, o) in [
            (None, None, None),
            (Some(a), Some(a), Some(a)),
            (None, Some(a), None),
            (Some(&b""[..]), None, Some(a)),
        ] {
            assert!(matches!(
                KeyProof::from_fields(s, p, o),
                Err(PopError::Shape)
            ));
        }
    }
}
