//! Certificates for tests, built with rcgen one rule at a time.

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, IsCa, KeyPair, KeyUsagePurpose, SanType,
    SignatureAlgorithm,
};

/// What to put in a test certificate.
pub(crate) struct CertSpec {
    pub alg: &'static SignatureAlgorithm,
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    pub is_ca: IsCa,
    pub key_usages: Vec<KeyUsagePurpose>,
    /// When false, keyUsage is written as a non-critical custom extension
    /// holding exactly `digitalSignature` (rcgen always marks its own critical).
    pub key_usage_critical: bool,
    pub extra_extensions: Vec<CustomExtension>,
}

/// A leaf X509-SVID as SPIRE issues it.
pub(crate) fn leaf_spec(id: &str) -> CertSpec {
    CertSpec {
        alg: &rcgen::PKCS_ECDSA_P256_SHA256,
        uris: vec![id.to_owned()],
        dns: Vec::new(),
        is_ca: IsCa::ExplicitNoCa,
        key_usages: vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ],
        key_usage_critical: true,
        extra_extensions: Vec::new(),
    }
}

/// A signing (CA) certificate as SPIRE issues it.
pub(crate) fn ca_spec(id: &str) -> CertSpec {
    CertSpec {
        alg: &rcgen::PKCS_ECDSA_P256_SHA256,
        uris: vec![id.to_owned()],
        dns: Vec::new(),
        is_ca: IsCa::Ca(BasicConstraints::Unconstrained),
        key_usages: vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign],
        key_usage_critical: true,
        extra_extensions: Vec::new(),
    }
}

/// The spec as a self-signed DER certificate (signatures do not matter to
/// the structural rules under test).
pub(crate) fn self_signed(spec: CertSpec) -> Vec<u8> {
    let key = KeyPair::generate_for(spec.alg).unwrap();
    let mut params = CertificateParams::new(spec.dns).unwrap();
    for uri in spec.uris {
        params
            .subject_alt_names
            .push(SanType::URI(uri.as_str().try_into().unwrap()));
    }
    params.is_ca = spec.is_ca;
    if spec.key_usage_critical {
        params.key_usages = spec.key_usages;
    } else {
        // BIT STRING, 7 unused bits, digitalSignature (bit 0) set.
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                &[2, 5, 29, 15],
                vec![0x03, 0x02, 0x07, 0x80],
            ));
    }
    params.custom_extensions.extend(spec.extra_extensions);
    params.self_signed(&key).unwrap().der().to_vec()
}

/// A self-signed CA certificate for `spiffe://example.org` with a key of `alg`.
pub(crate) fn ca_cert(alg: &'static SignatureAlgorithm) -> Vec<u8> {
    self_signed(CertSpec {
        alg,
        ..ca_spec("spiffe://example.org")
    })
}
