//! PKCS#10 certificate signing requests: making one with a `&dyn Signer`
//! (agents asking for SVIDs) and reading one that arrives over the wire,
//! which is only trusted after its self-signature verifies.

use rcgen::{CertificateParams, DistinguishedName, SanType};
use sigil_spiffe::SpiffeId;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::CryptoError;
use crate::key::Signer;
use crate::spki;
use crate::x509::RcgenSigner;

/// What sigil takes from a verified CSR. The subject name is ignored, as
/// SPIRE ignores it for workload SVIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csr {
    /// The requester's public key (SubjectPublicKeyInfo DER).
    pub public_key_der: Vec<u8>,
    /// URI SANs from the extensionRequest attribute.
    pub uri_sans: Vec<String>,
    /// DNS SANs from the extensionRequest attribute.
    pub dns_names: Vec<String>,
}

/// Makes a DER CSR signed by `signer`, with an empty subject and, when
/// given, the SPIFFE ID as the one URI SAN.
pub fn create_csr(
    signer: &dyn Signer,
    spiffe_id: Option<&SpiffeId>,
) -> Result<Vec<u8>, CryptoError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(id) = spiffe_id {
        let uri = rcgen::string::Ia5String::try_from(id.as_str()).map_err(|e| {
            CryptoError::CertificateBuild {
                reason: format!("URI SAN {id}: {e}"),
            }
        })?;
        params.subject_alt_names = vec![SanType::URI(uri)];
    }
    let key = RcgenSigner::new(signer)?;
    let csr = params
        .serialize_request(&key)
        .map_err(|e| key.error_from(e))?;
    Ok(csr.der().to_vec())
}

/// Parses a DER CSR and verifies its self-signature with the public key it
/// carries; a CSR that does not verify is rejected with
/// [`CryptoError::BadSignature`].
pub fn parse_and_verify_csr(der: &[u8]) -> Result<Csr, CryptoError> {
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| CryptoError::CsrParse {
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(CryptoError::CsrParse {
            reason: format!("{} trailing bytes after the CSR", rest.len()),
        });
    }
    let info = &csr.certification_request_info;
    let key = spki::from_x509(&info.subject_pki)?;
    spki::verify_x509_signature(
        &csr.signature_algorithm.algorithm.to_id_string(),
        &key,
        info.raw,
        &csr.signature_value.data,
        "the CSR's signature does not match its public key",
    )?;

    let mut uri_sans = Vec::new();
    let mut dns_names = Vec::new();
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            match ext {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        match name {
                            GeneralName::URI(u) => uri_sans.push((*u).to_owned()),
                            GeneralName::DNSName(d) => dns_names.push((*d).to_owned()),
                            _ => {}
                        }
                    }
                }
                ParsedExtension::ParseError { error } => {
                    return Err(CryptoError::CsrParse {
                        reason: format!("requested extension: {error}"),
                    });
                }
                _ => {}
            }
        }
    }
    Ok(Csr {
        public_key_der: info.subject_pki.raw.to_vec(),
        uri_sans,
        dns_names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyType, SoftwareKey};

    #[test]
    fn csr_round_trips_key_and_spiffe_id_for_every_fast_key_type() {
        let id = SpiffeId::parse("spiffe://example.org/workload").unwrap();
        for kt in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
            let key = SoftwareKey::generate(kt).unwrap();
            let der = create_csr(&key, Some(&id)).unwrap();
            let csr = parse_and_verify_csr(&der).unwrap();
            assert_eq!(csr.public_key_der, key.public_key_der());
            assert_eq!(csr.uri_sans, vec![id.to_string()]);
            assert!(csr.dns_names.is_empty());
        }
    }

    #[test]
    fn csr_without_id_has_only_the_key() {
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let csr = parse_and_verify_csr(&create_csr(&key, None).unwrap()).unwrap();
        assert_eq!(csr.public_key_der, key.public_key_der());
        assert!(csr.uri_sans.is_empty());
    }

    #[test]
    fn tampered_csr_is_rejected_for_its_signature() {
        let id = SpiffeId::parse("spiffe://example.org/aaaa").unwrap();
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let der = create_csr(&key, Some(&id)).unwrap();
        // Change the requested ID inside the signed part, keeping the DER valid.
        let pos = der
            .windows(4)
            .position(|w| w == b"aaaa")
            .expect("ID bytes present");
        let mut tampered = der.clone();
        tampered[pos] = b'b';
        let err = parse_and_verify_csr(&tampered).unwrap_err();
        assert!(matches!(err, CryptoError::BadSignature { .. }), "{err}");
        assert!(err.to_string().contains("CSR"), "{err}");
    }

    #[test]
    fn csr_signed_by_another_key_is_rejected() {
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let other = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let der = create_csr(&key, None).unwrap();
        let other_der = create_csr(&other, None).unwrap();
        // Same length structures: swap in the other key's SPKI.
        let spki_pos = der
            .windows(key.public_key_der().len())
            .position(|w| w == key.public_key_der())
            .unwrap();
        let mut forged = der.clone();
        forged[spki_pos..spki_pos + key.public_key_der().len()]
            .copy_from_slice(other.public_key_der());
        assert_ne!(forged, other_der);
        assert!(matches!(
            parse_and_verify_csr(&forged),
            Err(CryptoError::BadSignature { .. })
        ));
    }

    #[test]
    fn garbage_and_trailing_bytes_are_parse_errors() {
        assert!(matches!(
            parse_and_verify_csr(b"\x30\x03\x02\x01\x00"),
            Err(CryptoError::CsrParse { .. })
        ));
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let mut der = create_csr(&key, None).unwrap();
        der.push(0);
        let err = parse_and_verify_csr(&der).unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
    }
}
