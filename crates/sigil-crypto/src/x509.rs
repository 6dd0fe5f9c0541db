//! X.509 certificates: building CA certificates and X509-SVIDs (through a
//! `&dyn Signer`), reading them back, PEM, and path validation to a set of
//! trust roots with rustls-webpki.
//!
//! The certificate shapes follow the X509-SVID specification and SPIRE's
//! templates. This module decides nothing about lifetimes: callers pass the
//! validity window already clamped to the issuing CA.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use sigil_spiffe::{SpiffeId, TrustDomain};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::CryptoError;
use crate::key::{KeyType, Signer};
use crate::spki::{self, Curve, KeyAlg};

/// Subject of a CA certificate (SPIRE's `ca_subject` block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaSubject {
    /// `C` values; at most one is supported.
    pub country: Vec<String>,
    /// `O` values; at most one is supported.
    pub organization: Vec<String>,
    /// `CN`; empty means none.
    pub common_name: String,
}

impl Default for CaSubject {
    /// SPIRE's default: `C=US, O=SPIFFE`, no common name.
    fn default() -> Self {
        CaSubject {
            country: vec!["US".to_owned()],
            organization: vec!["SPIFFE".to_owned()],
            common_name: String::new(),
        }
    }
}

/// What goes into an X509-SVID besides the issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509SvidParams {
    /// The one URI SAN.
    pub spiffe_id: SpiffeId,
    /// The subject's public key (SubjectPublicKeyInfo DER), usually from a CSR.
    pub public_key_der: Vec<u8>,
    /// DNS SANs; the first also becomes the subject CN.
    pub dns_names: Vec<String>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity, already clamped to the CA's by the caller.
    pub not_after: SystemTime,
    /// Replaces SPIRE's default `C=US, O=SPIRE` subject (SPIRE takes it from
    /// the CSR when the CSR has one). An empty `common_name` means none; a DNS
    /// name, when present, still becomes the CN, as in SPIRE.
    pub subject: Option<CaSubject>,
}

impl X509SvidParams {
    /// Parameters with no DNS names and the default subject.
    pub fn new(
        spiffe_id: SpiffeId,
        public_key_der: Vec<u8>,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Self {
        X509SvidParams {
            spiffe_id,
            public_key_der,
            dns_names: Vec::new(),
            not_before,
            not_after,
            subject: None,
        }
    }
}

/// What goes into an intermediate (downstream or upstream-signed) CA certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntermediateCaParams {
    /// The trust domain; its ID (`spiffe://<td>`) becomes the URI SAN.
    pub trust_domain: TrustDomain,
    /// The intermediate's public key (SubjectPublicKeyInfo DER).
    pub public_key_der: Vec<u8>,
    /// Subject name.
    pub subject: CaSubject,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity, already clamped by the caller.
    pub not_after: SystemTime,
    /// Optional pathLenConstraint.
    pub path_len: Option<u8>,
}

/// The facts about a certificate that sigil looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number, lowercase hex without leading zeros (`"0"` for zero).
    pub serial_hex: String,
    /// Subject, RFC 4514 style (`C=US, O=SPIFFE`).
    pub subject: String,
    /// Issuer, RFC 4514 style.
    pub issuer: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// URI SANs in certificate order.
    pub uri_sans: Vec<String>,
    /// DNS SANs in certificate order.
    pub dns_names: Vec<String>,
    /// BasicConstraints cA.
    pub is_ca: bool,
    /// SubjectPublicKeyInfo DER.
    pub public_key_der: Vec<u8>,
}

/// Builds a self-signed root CA certificate for `td`: BasicConstraints
/// cA=true (critical), KeyUsage keyCertSign|cRLSign|digitalSignature
/// (critical), URI SAN `spiffe://<td>`, SubjectKeyIdentifier, random serial.
pub fn self_signed_ca(
    signer: &dyn Signer,
    td: &TrustDomain,
    subject: &CaSubject,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<Vec<u8>, CryptoError> {
    let mut params = base_params(not_before, not_after)?;
    params.distinguished_name = distinguished_name(subject, None)?;
    params.subject_alt_names = vec![uri_san(td.id().as_str())?];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = ca_key_usages();
    let key = RcgenSigner::new(signer)?;
    let cert = params.self_signed(&key).map_err(|e| key.error_from(e))?;
    Ok(cert.der().to_vec())
}

/// Signs an X509-SVID leaf with the CA's key: exactly one URI SAN (the
/// SPIFFE ID), the DNS SANs, subject `C=US, O=SPIRE` (CN = first DNS name),
/// KeyUsage digitalSignature|keyEncipherment|keyAgreement (critical), EKU
/// serverAuth+clientAuth, BasicConstraints cA=false (critical), AKI from the
/// CA, random serial.
pub fn sign_x509_svid(
    ca_cert_der: &[u8],
    ca_key: &dyn Signer,
    params: &X509SvidParams,
) -> Result<Vec<u8>, CryptoError> {
    if params.spiffe_id.is_trust_domain_id() {
        return Err(CryptoError::LeafIdWithoutPath {
            id: params.spiffe_id.to_string(),
        });
    }
    let ca = parse_cert(ca_cert_der)?;
    if let Some(ca_td) = spiffe_trust_domain_of(&ca)
        && ca_td != params.spiffe_id.trust_domain_name()
    {
        return Err(CryptoError::IdNotInTrustDomain {
            id: params.spiffe_id.to_string(),
            trust_domain: ca_td,
        });
    }

    let mut cert_params = base_params(params.not_before, params.not_after)?;
    let default_subject = CaSubject {
        country: vec!["US".to_owned()],
        organization: vec!["SPIRE".to_owned()],
        common_name: String::new(),
    };
    let subject = params.subject.as_ref().unwrap_or(&default_subject);
    cert_params.distinguished_name =
        distinguished_name(subject, params.dns_names.first().map(String::as_str))?;
    let mut sans = vec![uri_san(params.spiffe_id.as_str())?];
    for name in &params.dns_names {
        sans.push(dns_san(name)?);
    }
    cert_params.subject_alt_names = sans;
    cert_params.is_ca = IsCa::ExplicitNoCa;
    cert_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyAgreement,
    ];
    cert_params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    cert_params.use_authority_key_identifier_extension = true;
    sign_with_ca(
        &ca,
        ca_cert_der,
        ca_key,
        &cert_params,
        &params.public_key_der,
    )
}

/// Signs an intermediate CA certificate (a downstream server's CA, or our
/// CA under an upstream): cA=true (critical, optional pathLen), KeyUsage
/// keyCertSign|cRLSign|digitalSignature (critical), URI SAN of the trust
/// domain, SKI and AKI.
pub fn sign_intermediate_ca(
    ca_cert_der: &[u8],
    ca_key: &dyn Signer,
    params: &IntermediateCaParams,
) -> Result<Vec<u8>, CryptoError> {
    let ca = parse_cert(ca_cert_der)?;
    let mut cert_params = base_params(params.not_before, params.not_after)?;
    cert_params.distinguished_name = distinguished_name(&params.subject, None)?;
    cert_params.subject_alt_names = vec![uri_san(params.trust_domain.id().as_str())?];
    cert_params.is_ca = IsCa::Ca(match params.path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    cert_params.key_usages = ca_key_usages();
    cert_params.use_authority_key_identifier_extension = true;
    sign_with_ca(
        &ca,
        ca_cert_der,
        ca_key,
        &cert_params,
        &params.public_key_der,
    )
}

/// Reads the facts sigil needs from a DER certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, CryptoError> {
    let cert = parse_cert(der)?;
    let (uri_sans, dns_names) = sans_of(&cert)?;
    Ok(CertInfo {
        serial_hex: serial_hex(cert.raw_serial()),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: unix_to_system_time(cert.validity().not_before.timestamp())?,
        not_after: unix_to_system_time(cert.validity().not_after.timestamp())?,
        uri_sans,
        dns_names,
        is_ca: cert.is_ca(),
        public_key_der: cert.public_key().raw.to_vec(),
    })
}

/// PEM-encodes DER certificates as consecutive `CERTIFICATE` blocks.
pub fn pem_encode_certs(certs: &[Vec<u8>]) -> String {
    let blocks: Vec<pem::Pem> = certs
        .iter()
        .map(|der| pem::Pem::new("CERTIFICATE", der.clone()))
        .collect();
    // LF line endings, as openssl and SPIRE write them.
    pem::encode_many_config(
        &blocks,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Reads every `CERTIFICATE` block of a PEM text (other blocks are
/// skipped), checking that each is a parseable certificate.
pub fn parse_pem_certs(pem_bytes: &[u8]) -> Result<Vec<Vec<u8>>, CryptoError> {
    let blocks = pem::parse_many(pem_bytes).map_err(|e| CryptoError::Pem {
        reason: e.to_string(),
    })?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if certs.is_empty() {
        return Err(CryptoError::PemBlockMissing {
            label: "CERTIFICATE",
        });
    }
    for (i, der) in certs.iter().enumerate() {
        parse_cert(der).map_err(|e| match e {
            CryptoError::CertificateParse { reason, .. } => CryptoError::CertificateParse {
                index: Some(i),
                reason,
            },
            other => other,
        })?;
    }
    Ok(certs)
}

/// Loads a private key from PEM or DER; see
/// [`SoftwareKey::from_pem_or_der`](crate::SoftwareKey::from_pem_or_der).
pub use crate::key::parse_pem_or_der_key;

/// Validates `leaf_and_intermediates` (leaf first) up to one of `roots` at
/// time `now` with rustls-webpki and the aws-lc-rs algorithms, for TLS
/// client or server use (X509-SVIDs carry both EKUs), then returns the leaf's
/// SPIFFE ID (see [`leaf_spiffe_id`]).
pub fn verify_chain(
    leaf_and_intermediates: &[Vec<u8>],
    roots: &[Vec<u8>],
    now: SystemTime,
) -> Result<SpiffeId, CryptoError> {
    let chain = ChainInputs::new(leaf_and_intermediates, roots, now)?;
    verify_webpki_path(
        &chain.leaf,
        &chain.intermediates,
        &chain.anchors,
        chain.now,
        EkuPolicy::Either,
    )
    .map_err(|e| CryptoError::ChainVerification {
        reason: format!("{e:?}"),
    })?;
    leaf_spiffe_id(&chain.leaf)
}

/// Validates `leaf_and_intermediates` (leaf first) up to one of `roots` at
/// time `now`, accepting any extended key usage (Go's `ExtKeyUsageAny`, as
/// SPIRE's x509pop node attestor verifies node certificates), and returns
/// the verified path above the leaf: the intermediates used, leaf side
/// first, then the root, as DER. Unlike [`verify_chain`] the leaf need not
/// be an SVID.
pub fn verify_chain_any_usage(
    leaf_and_intermediates: &[Vec<u8>],
    roots: &[Vec<u8>],
    now: SystemTime,
) -> Result<Vec<Vec<u8>>, CryptoError> {
    let chain = ChainInputs::new(leaf_and_intermediates, roots, now)?;
    let (anchors, intermediates) = (&chain.anchors, &chain.intermediates);
    let failed = |e: webpki::Error| CryptoError::ChainVerification {
        reason: format!("{e:?}"),
    };
    let ee = webpki::EndEntityCert::try_from(&chain.leaf).map_err(failed)?;
    let algs = crate::tls::provider().signature_verification_algorithms.all;
    let path = ee
        .verify_for_usage(
            algs,
            anchors,
            intermediates,
            chain.now,
            AnyUsage,
            None,
            None,
        )
        .map_err(failed)?;
    let mut above: Vec<Vec<u8>> = path
        .intermediate_certificates()
        .map(|c| c.der().to_vec())
        .collect();
    let anchor = path.anchor();
    // Anchors were made from `roots` in order; find the one the path ends at.
    if let Some(i) = anchors.iter().position(|a| {
        a.subject == anchor.subject && a.subject_public_key_info == anchor.subject_public_key_info
    }) {
        above.push(roots[i].clone());
    }
    Ok(above)
}

/// A chain and roots as webpki takes them, checked for emptiness.
struct ChainInputs<'a> {
    leaf: CertificateDer<'a>,
    intermediates: Vec<CertificateDer<'a>>,
    anchors: Vec<rustls_pki_types::TrustAnchor<'static>>,
    now: UnixTime,
}

impl<'a> ChainInputs<'a> {
    fn new(
        leaf_and_intermediates: &'a [Vec<u8>],
        roots: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<Self, CryptoError> {
        let (leaf, intermediates) =
            leaf_and_intermediates
                .split_first()
                .ok_or(CryptoError::EmptyInput {
                    what: "the certificate chain",
                })?;
        if roots.is_empty() {
            return Err(CryptoError::EmptyInput {
                what: "the set of trust roots",
            });
        }
        let root_ders: Vec<CertificateDer<'_>> = roots
            .iter()
            .map(|r| CertificateDer::from(r.as_slice()))
            .collect();
        let anchors = trust_anchors(&root_ders)?
            .into_iter()
            .map(|a| a.to_owned())
            .collect();
        let since_epoch =
            now.duration_since(UNIX_EPOCH)
                .map_err(|_| CryptoError::TimeOutOfRange {
                    reason: "verification time is before 1970".to_owned(),
                })?;
        Ok(ChainInputs {
            leaf: CertificateDer::from(leaf.as_slice()),
            intermediates: intermediates
                .iter()
                .map(|c| CertificateDer::from(c.as_slice()))
                .collect(),
            anchors,
            now: UnixTime::since_unix_epoch(since_epoch),
        })
    }
}

/// Accepts any extended key usage, well formed.
struct AnyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, iter: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for purpose in iter {
            purpose?;
        }
        Ok(())
    }
}

/// The SPIFFE ID of an X509-SVID leaf, after the structural rules that make
/// it one: exactly one URI SAN, a valid SPIFFE ID, and no certificate- or
/// CRL-signing key usage. Does not validate the chain.
pub fn leaf_spiffe_id(cert_der: &[u8]) -> Result<SpiffeId, CryptoError> {
    let cert = parse_cert(cert_der)?;
    let (uris, _) = sans_of(&cert)?;
    let [uri] = uris.as_slice() else {
        return Err(CryptoError::UriSanCount { count: uris.len() });
    };
    let id = SpiffeId::parse(uri).map_err(|e| CryptoError::InvalidSpiffeId {
        value: uri.clone(),
        reason: e.to_string(),
    })?;
    if let Ok(Some(ku)) = cert.key_usage()
        && (ku.value.key_cert_sign() || ku.value.crl_sign())
    {
        return Err(CryptoError::LeafCanSignCertificates);
    }
    Ok(id)
}

// ---- crate-internal helpers shared with csr, jwt and tls ----

/// Adapts a `&dyn Signer` to rcgen's `SigningKey`. rcgen's error type
/// cannot carry ours, so a signer failure is parked here and recovered with
/// [`RcgenSigner::error_from`].
pub(crate) struct RcgenSigner<'a> {
    signer: &'a dyn Signer,
    raw_public_key: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
    failure: RefCell<Option<CryptoError>>,
}

impl<'a> RcgenSigner<'a> {
    pub(crate) fn new(signer: &'a dyn Signer) -> Result<Self, CryptoError> {
        let parsed = spki::parse_spki(signer.public_key_der())?;
        let (alg, matches): (&'static rcgen::SignatureAlgorithm, bool) = match signer.key_type() {
            KeyType::EcP256 => (
                &rcgen::PKCS_ECDSA_P256_SHA256,
                parsed.alg == KeyAlg::Ec(Curve::P256),
            ),
            KeyType::EcP384 => (
                &rcgen::PKCS_ECDSA_P384_SHA384,
                parsed.alg == KeyAlg::Ec(Curve::P384),
            ),
            KeyType::Rsa2048 => (
                &rcgen::PKCS_RSA_SHA256,
                parsed.alg == KeyAlg::Rsa { bits: 2048 },
            ),
            KeyType::Rsa4096 => (
                &rcgen::PKCS_RSA_SHA256,
                parsed.alg == KeyAlg::Rsa { bits: 4096 },
            ),
        };
        if !matches {
            return Err(CryptoError::PublicKeyRejected {
                reason: format!(
                    "signer says {} but its public key is {}",
                    signer.key_type(),
                    parsed.alg.describe()
                ),
            });
        }
        Ok(RcgenSigner {
            signer,
            raw_public_key: parsed.raw_key,
            alg,
            failure: RefCell::new(None),
        })
    }

    /// The signer's own error if it caused `e`, else `e` described.
    pub(crate) fn error_from(&self, e: rcgen::Error) -> CryptoError {
        self.failure
            .borrow_mut()
            .take()
            .unwrap_or_else(|| CryptoError::CertificateBuild {
                reason: e.to_string(),
            })
    }
}

impl rcgen::PublicKeyData for RcgenSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.raw_public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

impl rcgen::SigningKey for RcgenSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.signer.sign(msg).map_err(|e| {
            *self.failure.borrow_mut() = Some(e);
            rcgen::Error::RemoteKeyError
        })
    }
}

/// Parses a DER certificate, rejecting trailing bytes.
pub(crate) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, CryptoError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(CryptoError::cert_parse)?;
    if !rest.is_empty() {
        return Err(CryptoError::cert_parse(format!(
            "{} trailing bytes after the certificate",
            rest.len()
        )));
    }
    Ok(cert)
}

/// Trust anchors from root certificates, naming the root that fails.
pub(crate) fn trust_anchors<'a>(
    roots: &'a [CertificateDer<'a>],
) -> Result<Vec<rustls_pki_types::TrustAnchor<'a>>, CryptoError> {
    roots
        .iter()
        .enumerate()
        .map(|(i, der)| {
            webpki::anchor_from_trusted_cert(der).map_err(|e| CryptoError::CertificateParse {
                index: Some(i),
                reason: format!("unusable as a trust root: {e}"),
            })
        })
        .collect()
}

/// Which TLS role a leaf must be valid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EkuPolicy {
    ServerAuth,
    Either,
}

/// Path validation shared by [`verify_chain`] and the TLS verifiers, with the
/// aws-lc-rs algorithms of [`crate::tls::provider`].
pub(crate) fn verify_webpki_path(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    anchors: &[rustls_pki_types::TrustAnchor<'_>],
    now: UnixTime,
    eku: EkuPolicy,
) -> Result<(), webpki::Error> {
    let ee = webpki::EndEntityCert::try_from(leaf)?;
    let algs = crate::tls::provider().signature_verification_algorithms.all;
    let try_usage = |usage| {
        ee.verify_for_usage(algs, anchors, intermediates, now, usage, None, None)
            .map(|_| ())
    };
    match (try_usage(webpki::KeyUsage::server_auth()), eku) {
        (Ok(()), _) => Ok(()),
        (Err(e), EkuPolicy::ServerAuth) => Err(e),
        // An SVID carries both EKUs; if neither works, report the server-side reason.
        (Err(e), EkuPolicy::Either) => try_usage(webpki::KeyUsage::client_auth()).map_err(|_| e),
    }
}

/// URI SANs and DNS SANs, in order.
pub(crate) fn sans_of(
    cert: &X509Certificate<'_>,
) -> Result<(Vec<String>, Vec<String>), CryptoError> {
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CryptoError::cert_parse(format!("subjectAltName: {e}")))?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uris.push((*u).to_owned()),
                GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                _ => {}
            }
        }
    }
    Ok((uris, dns))
}

fn sign_with_ca(
    ca: &X509Certificate<'_>,
    ca_cert_der: &[u8],
    ca_key: &dyn Signer,
    params: &CertificateParams,
    subject_spki_der: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let ca_spki = spki::from_x509(ca.public_key())?;
    let key = RcgenSigner::new(ca_key)?;
    if ca_spki.raw_key != key.raw_public_key {
        return Err(CryptoError::CaKeyMismatch);
    }
    let subject_key = rcgen::SubjectPublicKeyInfo::from_der(subject_spki_der).map_err(|e| {
        CryptoError::PublicKeyRejected {
            reason: format!("subject public key: {e}"),
        }
    })?;
    let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(ca_cert_der), &key)
        .map_err(|_| CryptoError::IssuerNameNotReproducible)?;
    let cert = params
        .signed_by(&subject_key, &issuer)
        .map_err(|e| key.error_from(e))?;
    let der = cert.der().to_vec();

    // Check what we made: the issuer name must equal the CA subject byte for
    // byte or no verifier will link the chain, and an HSM signer that returns
    // a wrong signature must not hand out a dead certificate.
    let issued = parse_cert(&der)?;
    if issued.issuer().as_raw() != ca.subject().as_raw() {
        return Err(CryptoError::IssuerNameNotReproducible);
    }
    spki::verify_x509_signature(
        &issued.signature_algorithm.algorithm.to_id_string(),
        &ca_spki,
        issued.tbs_certificate.as_ref(),
        &issued.signature_value.data,
        "the signer's signature on the new certificate",
    )?;
    Ok(der)
}

fn base_params(
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, CryptoError> {
    let nb = system_time_to_unix(not_before)?;
    let na = system_time_to_unix(not_after)?;
    if na <= nb {
        return Err(CryptoError::InvalidValidity {
            not_before: nb,
            not_after: na,
        });
    }
    let mut params = CertificateParams::default();
    params.not_before = offset_date_time(nb)?;
    params.not_after = offset_date_time(na)?;
    params.serial_number = Some(random_serial()?);
    params.distinguished_name = DistinguishedName::new();
    Ok(params)
}

fn ca_key_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ]
}

fn distinguished_name(
    subject: &CaSubject,
    cn_override: Option<&str>,
) -> Result<DistinguishedName, CryptoError> {
    if subject.country.len() > 1 {
        return Err(CryptoError::TooManySubjectValues {
            attribute: "country",
            count: subject.country.len(),
        });
    }
    if subject.organization.len() > 1 {
        return Err(CryptoError::TooManySubjectValues {
            attribute: "organization",
            count: subject.organization.len(),
        });
    }
    let mut dn = DistinguishedName::new();
    if let Some(c) = subject.country.first() {
        dn.push(DnType::CountryName, dn_value(c));
    }
    if let Some(o) = subject.organization.first() {
        dn.push(DnType::OrganizationName, dn_value(o));
    }
    let cn = cn_override.unwrap_or(&subject.common_name);
    if !cn.is_empty() {
        dn.push(DnType::CommonName, dn_value(cn));
    }
    Ok(dn)
}

/// PrintableString where the text allows it (as Go's crypto/x509 does), else UTF8String.
fn dn_value(s: &str) -> DnValue {
    match rcgen::string::PrintableString::try_from(s) {
        Ok(p) => DnValue::PrintableString(p),
        Err(_) => DnValue::Utf8String(s.to_owned()),
    }
}

fn uri_san(uri: &str) -> Result<SanType, CryptoError> {
    rcgen::string::Ia5String::try_from(uri)
        .map(SanType::URI)
        .map_err(|e| CryptoError::CertificateBuild {
            reason: format!("URI SAN {uri:?}: {e}"),
        })
}

fn dns_san(name: &str) -> Result<SanType, CryptoError> {
    if name.is_empty() {
        return Err(CryptoError::InvalidDnsName {
            name: name.to_owned(),
            reason: "empty".to_owned(),
        });
    }
    rcgen::string::Ia5String::try_from(name)
        .map(SanType::DnsName)
        .map_err(|e| CryptoError::InvalidDnsName {
            name: name.to_owned(),
            reason: e.to_string(),
        })
}

/// A random positive serial of 16 bytes whose top byte keeps the DER
/// encoding at exactly 16 bytes (126 random bits).
fn random_serial() -> Result<SerialNumber, CryptoError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| CryptoError::CertificateBuild {
        reason: "random number generator failed".to_owned(),
    })?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn spiffe_trust_domain_of(cert: &X509Certificate<'_>) -> Option<String> {
    let (uris, _) = sans_of(cert).ok()?;
    uris.iter()
        .find_map(|u| SpiffeId::parse(u).ok())
        .map(|id| id.trust_domain_name().to_owned())
}

fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    let hex: String = raw[start..].iter().map(|b| format!("{b:02x}")).collect();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

pub(crate) fn system_time_to_unix(t: SystemTime) -> Result<i64, CryptoError> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CryptoError::TimeOutOfRange {
            reason: "times before 1970 are not supported".to_owned(),
        })?
        .as_secs();
    i64::try_from(secs).map_err(|_| CryptoError::TimeOutOfRange {
        reason: format!("{secs} seconds after 1970 is too far in the future"),
    })
}

fn unix_to_system_time(secs: i64) -> Result<SystemTime, CryptoError> {
    let out_of_range = || CryptoError::TimeOutOfRange {
        reason: format!("certificate time {secs} (unix seconds) is not representable"),
    };
    if secs >= 0 {
        UNIX_EPOCH
            .checked_add(Duration::from_secs(secs.unsigned_abs()))
            .ok_or_else(out_of_range)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .ok_or_else(out_of_range)
    }
}

fn offset_date_time(secs: i64) -> Result<time::OffsetDateTime, CryptoError> {
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(|e| CryptoError::TimeOutOfRange {
        reason: format!("{secs} (unix seconds): {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SoftwareKey;
    use crate::testutil::{self, hours, now};
    use std::path::Path;
    use std::process::Command;
    use x509_parser::extensions::ParsedExtension;

    fn ext<'a>(
        cert: &'a X509Certificate<'a>,
        oid: &str,
    ) -> &'a x509_parser::extensions::X509Extension<'a> {
        cert.extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == oid)
            .unwrap_or_else(|| panic!("extension {oid} missing"))
    }

    #[test]
    fn ca_and_svid_verify_for_mixed_key_types() {
        for (ca_kt, leaf_kt) in [
            (KeyType::EcP256, KeyType::EcP256),
            (KeyType::EcP384, KeyType::Rsa2048),
            (KeyType::Rsa2048, KeyType::EcP384),
        ] {
            let ca = testutil::ca("example.org", ca_kt);
            let leaf = testutil::svid(&ca, "spiffe://example.org/ns/web", leaf_kt);
            let id = verify_chain(
                std::slice::from_ref(&leaf.cert),
                std::slice::from_ref(&ca.cert),
                now(),
            )
            .unwrap();
            assert_eq!(id.as_str(), "spiffe://example.org/ns/web");
        }
    }

    #[test]
    fn svid_follows_x509_svid_structure_and_spire_template() {
        let ca = testutil::ca("example.org", KeyType::EcP256);
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let params = X509SvidParams {
            dns_names: vec!["a.example.org".to_owned(), "b.example.org".to_owned()],
            ..X509SvidParams::new(
                SpiffeId::parse("spiffe://example.org/web").unwrap(),
                key.public_key_der().to_vec(),
                now(),
                now() + hours(1),
            )
        };
        let der = sign_x509_svid(&ca.cert, &ca.key, &params).unwrap();
        let cert = parse_cert(&der).unwrap();
        let ca_cert = parse_cert(&ca.cert).unwrap();

        assert_eq!(cert.version(), x509_parser::x509::X509Version::V3);
        let (uris, dns) = sans_of(&cert).unwrap();
        assert_eq!(uris, vec!["spiffe://example.org/web"]);
        assert_eq!(dns, vec!["a.example.org", "b.example.org"]);

        let ku = ext(&cert, "2.5.29.15");
        assert!(ku.critical);
        let ParsedExtension::KeyUsage(ku) = ku.parsed_extension() else {
            panic!("key usage")
        };
        assert!(ku.digital_signature() && ku.key_encipherment() && ku.key_agreement());
        assert!(!ku.key_cert_sign() && !ku.crl_sign());

        let bc = ext(&cert, "2.5.29.19");
        assert!(bc.critical);
        let ParsedExtension::BasicConstraints(bc) = bc.parsed_extension() else {
            panic!("basic constraints")
        };
        assert!(!bc.ca);

        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);

        let ParsedExtension::AuthorityKeyIdentifier(aki) =
            ext(&cert, "2.5.29.35").parsed_extension()
        else {
            panic!("aki")
        };
        let ParsedExtension::SubjectKeyIdentifier(ca_ski) =
            ext(&ca_cert, "2.5.29.14").parsed_extension()
        else {
            panic!("ca ski")
        };
        assert_eq!(aki.key_identifier.as_ref().unwrap().0, ca_ski.0);

        assert_eq!(
            cert.subject().to_string(),
            "C=US, O=SPIRE, CN=a.example.org"
        );
        assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());
        assert_eq!(cert.public_key().raw, key.public_key_der());
        let serial = cert.raw_serial();
        assert_eq!(serial.len(), 16);
        assert!(serial[0] & 0x80 == 0 && serial[0] != 0);
    }

    #[test]
    fn ca_has_ca_extensions_and_trust_domain_uri() {
        let ca = testutil::ca("example.org", KeyType::EcP384);
        let cert = parse_cert(&ca.cert).unwrap();
        let bc = ext(&cert, "2.5.29.19");
        assert!(bc.critical);
        assert!(cert.is_ca());
        let ku = ext(&cert, "2.5.29.15");
        assert!(ku.critical);
        let ParsedExtension::KeyUsage(ku) = ku.parsed_extension() else {
            panic!("key usage")
        };
        assert!(ku.key_cert_sign() && ku.crl_sign() && ku.digital_signature());
        ext(&cert, "2.5.29.14");
        assert_eq!(sans_of(&cert).unwrap().0, vec!["spiffe://example.org"]);
        assert_eq!(cert.subject().to_string(), "C=US, O=SPIFFE");
        assert_eq!(cert.subject().as_raw(), cert.issuer().as_raw());
        let info = cert_info(&ca.cert).unwrap();
        assert!(info.is_ca);
        assert_eq!(info.public_key_der, ca.key.public_key_der());
    }

    #[test]
    fn cert_info_reports_serial_times_and_sans() {
        let ca = testutil::ca("example.org", KeyType::EcP256);
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let nb = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let na = nb + hours(2);
        let mut params = X509SvidParams::new(
            SpiffeId::parse("spiffe://example.org/x").unwrap(),
            key.public_key_der().to_vec(),
            nb,
            na,
        );
        params.dns_names = vec!["x.example.org".to_owned()];
        let der = sign_x509_svid(&ca.cert, &ca.key, &params).unwrap();
        let info = cert_info(&der).unwrap();
        assert_eq!(info.not_before, nb);
        assert_eq!(info.not_after, na);
        assert_eq!(info.uri_sans, vec!["spiffe://example.org/x"]);
        assert_eq!(info.dns_names, vec!["x.example.org"]);
        assert!(!info.is_ca);
        assert_eq!(info.serial_hex.len(), 32);
        assert_eq!(
            info.serial_hex,
            parse_cert(&der)
                .unwrap()
                .tbs_certificate
                .serial
                .to_str_radix(16)
        );
        assert_eq!(info.issuer, "C=US, O=SPIFFE");
    }

    #[test]
    fn intermediate_ca_chains_to_root() {
        let root = testutil::ca("example.org", KeyType::EcP256);
        let inter_key = SoftwareKey::generate(KeyType::EcP384).unwrap();
        let inter = sign_intermediate_ca(
            &root.cert,
            &root.key,
            &IntermediateCaParams {
                trust_domain: root.td.clone(),
                public_key_der: inter_key.public_key_der().to_vec(),
                subject: CaSubject {
                    common_name: "downstream".to_owned(),
                    ..CaSubject::default()
                },
                not_before: now() - hours(1),
                not_after: now() + hours(12),
                path_len: Some(0),
            },
        )
        .unwrap();
        let inter_info = cert_info(&inter).unwrap();
        assert!(inter_info.is_ca);
        assert_eq!(inter_info.uri_sans, vec!["spiffe://example.org"]);
        let leaf_key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let leaf = sign_x509_svid(
            &inter,
            &inter_key,
            &X509SvidParams::new(
                SpiffeId::parse("spiffe://example.org/w").unwrap(),
                leaf_key.public_key_der().to_vec(),
                now(),
                now() + hours(1),
            ),
        )
        .unwrap();
        let id = verify_chain(
            &[leaf.clone(), inter.clone()],
            std::slice::from_ref(&root.cert),
            now(),
        )
        .unwrap();
        assert_eq!(id.as_str(), "spiffe://example.org/w");
        // Without the intermediate there is no path.
        assert!(matches!(
            verify_chain(&[leaf], &[root.cert], now()),
            Err(CryptoError::ChainVerification { .. })
        ));
    }

    #[test]
    fn verify_chain_rejects_untrusted_expired_and_empty_inputs() {
        let ca = testutil::ca("example.org", KeyType::EcP256);
        let leaf = testutil::svid(&ca, "spiffe://example.org/w", KeyType::EcP256);
        // Same subject name, different key: the name matches, the signature does not.
        let twin = testutil::ca("example.org", KeyType::EcP256);
        let err = verify_chain(
            std::slice::from_ref(&leaf.cert),
            std::slice::from_ref(&twin.cert),
            now(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("InvalidSignatureForPublicKey"),
            "{err}"
        );
        // A differently named root is simply not the issuer.
        let other_key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let other_subject = CaSubject {
            common_name: "other".to_owned(),
            ..CaSubject::default()
        };
        let other =
            self_signed_ca(&other_key, &ca.td, &other_subject, now(), now() + hours(1)).unwrap();
        let err = verify_chain(std::slice::from_ref(&leaf.cert), &[other], now()).unwrap_err();
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
        let err = verify_chain(
            std::slice::from_ref(&leaf.cert),
            std::slice::from_ref(&ca.cert),
            now() + hours(2),
        )
        .unwrap_err();
        assert!(err.to_string().contains("Expired"), "{err}");
        assert!(matches!(
            verify_chain(&[], std::slice::from_ref(&ca.cert), now()),
            Err(CryptoError::EmptyInput { .. })
        ));
        assert!(matches!(
            verify_chain(&[leaf.cert], &[], now()),
            Err(CryptoError::EmptyInput { .. })
        ));
    }

    #[test]
    fn verify_chain_rejects_a_ca_as_leaf() {
        let ca = testutil::ca("example.org", KeyType::EcP256);
        let err = verify_chain(
            std::slice::from_ref(&ca.cert),
            std::slice::from_ref(&ca.cert),
            now(),
        )
        .unwrap_err();
        assert!(
            matches!(err, CryptoError::ChainVerification { .. }),
            "{err}"
        );
    }

    #[test]
    fn signing_rejects_bad_requests_precisely() {
        let ca = testutil::ca("example.org", KeyType::EcP256);
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let params = |id: &str| {
            X509SvidParams::new(
                SpiffeId::parse(id).unwrap(),
                key.public_key_der().to_vec(),
                now(),
                now() + hours(1),
            )
        };
        assert!(matches!(
            sign_x509_svid(&ca.cert, &ca.key, &params("spiffe://other.org/w")),
            Err(CryptoError::IdNotInTrustDomain { .. })
        ));
        assert!(matches!(
            sign_x509_svid(&ca.cert, &ca.key, &params("spiffe://example.org")),
            Err(CryptoError::LeafIdWithoutPath { .. })
        ));
        let wrong_key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        assert_eq!(
            sign_x509_svid(&ca.cert, &wrong_key, &params("spiffe://example.org/w")),
            Err(CryptoError::CaKeyMismatch)
        );
        let mut backwards = params("spiffe://example.org/w");
        backwards.not_after = backwards.not_before;
        assert!(matches!(
            sign_x509_svid(&ca.cert, &ca.key, &backwards),
            Err(CryptoError::InvalidValidity { .. })
        ));
        let mut bad_dns = params("spiffe://example.org/w");
        bad_dns.dns_names = vec!["bücher.example".to_owned()];
        assert!(matches!(
            sign_x509_svid(&ca.cert, &ca.key, &bad_dns),
            Err(CryptoError::InvalidDnsName { .. })
        ));
        let mut bad_spki = params("spiffe://example.org/w");
        bad_spki.public_key_der = b"junk".to_vec();
        assert!(matches!(
            sign_x509_svid(&ca.cert, &ca.key, &bad_spki),
            Err(CryptoError::PublicKeyRejected { .. })
        ));
        let two_orgs = CaSubject {
            organization: vec!["a".to_owned(), "b".to_owned()],
            ..CaSubject::default()
        };
        assert!(matches!(
            self_signed_ca(&ca.key, &ca.td, &two_orgs, now(), now() + hours(1)),
            Err(CryptoError::TooManySubjectValues {
                attribute: "organization",
                count: 2
            })
        ));
    }

    #[derive(Debug)]
    struct FailingSigner(SoftwareKey);

    impl Signer for FailingSigner {
        fn key_type(&self) -> KeyType {
            self.0.key_type()
        }
        fn public_key_der(&self) -> &[u8] {
            self.0.public_key_der()
        }
        fn sign(&self, _: &[u8]) -> Result<Vec<u8>, CryptoError> {
            Err(CryptoError::Signing {
                reason: "HSM session closed".to_owned(),
            })
        }
    }

    /// Claims one key but signs with another, like a misconfigured HSM slot.
    #[derive(Debug)]
    struct LyingSigner {
        claimed: SoftwareKey,
        actual: SoftwareKey,
    }

    impl Signer for LyingSigner {
        fn key_type(&self) -> KeyType {
            self.claimed.key_type()
        }
        fn public_key_der(&self) -> &[u8] {
            self.claimed.public_key_der()
        }
        fn sign(&self, m: &[u8]) -> Result<Vec<u8>, CryptoError> {
            self.actual.sign(m)
        }
    }

    #[test]
    fn signer_errors_surface_unchanged_and_bad_signatures_are_caught() {
        let td = TrustDomain::new("example.org").unwrap();
        let failing = FailingSigner(SoftwareKey::generate(KeyType::EcP256).unwrap());
        let err = self_signed_ca(
            &failing,
            &td,
            &CaSubject::default(),
            now(),
            now() + hours(1),
        )
        .unwrap_err();
        assert_eq!(
            err,
            CryptoError::Signing {
                reason: "HSM session closed".to_owned()
            }
        );

        let ca = testutil::ca("example.org", KeyType::EcP256);
        let lying = LyingSigner {
            claimed: ca.key,
            actual: SoftwareKey::generate(KeyType::EcP256).unwrap(),
        };
        let leaf_key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let err = sign_x509_svid(
            &ca.cert,
            &lying,
            &X509SvidParams::new(
                SpiffeId::parse("spiffe://example.org/w").unwrap(),
                leaf_key.public_key_der().to_vec(),
                now(),
                now() + hours(1),
            ),
        )
        .unwrap_err();
        assert!(matches!(err, CryptoError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn pem_round_trips_and_reports_bad_blocks() {
        let ca = testutil::ca("example.org", KeyType::EcP256);
        let leaf = testutil::svid(&ca, "spiffe://example.org/w", KeyType::EcP256);
        let certs = vec![leaf.cert.clone(), ca.cert.clone()];
        let text = pem_encode_certs(&certs);
        assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 2);
        let with_key = format!("{}{}", leaf.key.to_pkcs8_pem(), text);
        assert_eq!(parse_pem_certs(with_key.as_bytes()).unwrap(), certs);

        assert_eq!(
            parse_pem_certs(leaf.key.to_pkcs8_pem().as_bytes()),
            Err(CryptoError::PemBlockMissing {
                label: "CERTIFICATE"
            })
        );
        let bad = pem_encode_certs(&[ca.cert.clone(), b"not a cert".to_vec()]);
        let err = parse_pem_certs(bad.as_bytes()).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid certificate #1"),
            "{err}"
        );
    }

    #[test]
    fn leaf_spiffe_id_requires_exactly_one_uri_san() {
        let ca = testutil::ca("example.org", KeyType::EcP256);
        // A CA has one URI SAN but may sign certificates.
        assert_eq!(
            leaf_spiffe_id(&ca.cert),
            Err(CryptoError::LeafCanSignCertificates)
        );
        let leaf = testutil::svid(&ca, "spiffe://example.org/w", KeyType::EcP256);
        assert_eq!(
            leaf_spiffe_id(&leaf.cert).unwrap().as_str(),
            "spiffe://example.org/w"
        );
        // Build a leaf with two URI SANs directly through rcgen.
        let mut params = base_params(now(), now() + hours(1)).unwrap();
        params.subject_alt_names = vec![
            uri_san("spiffe://example.org/a").unwrap(),
            uri_san("spiffe://example.org/b").unwrap(),
        ];
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let signer = RcgenSigner::new(&key).unwrap();
        let two = params.self_signed(&signer).unwrap();
        assert_eq!(
            leaf_spiffe_id(two.der()),
            Err(CryptoError::UriSanCount { count: 2 })
        );
    }

    fn openssl(args: &[&str], dir: &Path) -> std::process::Output {
        Command::new("/usr/bin/openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run /usr/bin/openssl")
    }

    fn assert_openssl_ok(out: &std::process::Output) {
        assert!(
            out.status.success(),
            "openssl failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn openssl_verifies_our_chains_strictly_for_every_key_type() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for ca_kt in KeyType::ALL {
            let root = testutil::ca("example.org", ca_kt);
            let inter_key = SoftwareKey::generate(KeyType::EcP256).unwrap();
            let inter = sign_intermediate_ca(
                &root.cert,
                &root.key,
                &IntermediateCaParams {
                    trust_domain: root.td.clone(),
                    public_key_der: inter_key.public_key_der().to_vec(),
                    subject: CaSubject::default(),
                    not_before: now() - hours(1),
                    not_after: now() + hours(12),
                    path_len: None,
                },
            )
            .unwrap();
            let direct = testutil::svid(&root, "spiffe://example.org/direct", KeyType::EcP384);
            let via = sign_x509_svid(
                &inter,
                &inter_key,
                &X509SvidParams::new(
                    SpiffeId::parse("spiffe://example.org/via").unwrap(),
                    direct.key.public_key_der().to_vec(),
                    now(),
                    now() + hours(1),
                ),
            )
            .unwrap();
            std::fs::write(
                p.join("ca.pem"),
                pem_encode_certs(std::slice::from_ref(&root.cert)),
            )
            .unwrap();
            std::fs::write(p.join("inter.pem"), pem_encode_certs(&[inter])).unwrap();
            std::fs::write(p.join("leaf.pem"), pem_encode_certs(&[direct.cert])).unwrap();
            std::fs::write(p.join("via.pem"), pem_encode_certs(&[via])).unwrap();
            for purpose in ["sslserver", "sslclient"] {
                let out = openssl(
                    &[
                        "verify",
                        "-x509_strict",
                        "-purpose",
                        purpose,
                        "-CAfile",
                        "ca.pem",
                        "leaf.pem",
                    ],
                    p,
                );
                assert_openssl_ok(&out);
                let out = openssl(
                    &[
                        "verify",
                        "-x509_strict",
                        "-purpose",
                        purpose,
                        "-CAfile",
                        "ca.pem",
                        "-untrusted",
                        "inter.pem",
                        "via.pem",
                    ],
                    p,
                );
                assert_openssl_ok(&out);
            }
            let out = openssl(&["verify", "-CAfile", "ca.pem", "leaf.pem"], p);
            assert_openssl_ok(&out);
            assert!(String::from_utf8_lossy(&out.stdout).contains("leaf.pem: OK"));
        }
    }

    #[test]
    fn openssl_made_upstream_ca_and_key_sign_svids() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let out = openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "up.key",
                "-out",
                "up.pem",
                "-days",
                "1",
                "-subj",
                "/C=US/O=Upstream Org/CN=upstream",
                "-addext",
                "basicConstraints=critical,CA:true",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            p,
        );
        assert_openssl_ok(&out);
        let up_cert = parse_pem_certs(&std::fs::read(p.join("up.pem")).unwrap()).unwrap();
        let up_key = parse_pem_or_der_key(&std::fs::read(p.join("up.key")).unwrap()).unwrap();
        let inter_key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let inter = sign_intermediate_ca(
            &up_cert[0],
            &up_key,
            &IntermediateCaParams {
                trust_domain: TrustDomain::new("example.org").unwrap(),
                public_key_der: inter_key.public_key_der().to_vec(),
                subject: CaSubject::default(),
                not_before: now() - hours(1),
                not_after: now() + hours(12),
                path_len: None,
            },
        )
        .unwrap();
        let leaf_key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let leaf = sign_x509_svid(
            &inter,
            &inter_key,
            &X509SvidParams::new(
                SpiffeId::parse("spiffe://example.org/w").unwrap(),
                leaf_key.public_key_der().to_vec(),
                now(),
                now() + hours(1),
            ),
        )
        .unwrap();
        let id = verify_chain(&[leaf, inter], &up_cert, now()).unwrap();
        assert_eq!(id.as_str(), "spiffe://example.org/w");
    }

    #[test]
    fn multi_valued_rdn_issuer_is_refused_not_silently_broken() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let out = openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "up.key",
                "-out",
                "up.pem",
                "-days",
                "1",
                "-multivalue-rdn",
                "-subj",
                "/O=a+OU=b/CN=multi",
            ],
            p,
        );
        assert_openssl_ok(&out);
        let up_cert = parse_pem_certs(&std::fs::read(p.join("up.pem")).unwrap()).unwrap();
        let up_key = parse_pem_or_der_key(&std::fs::read(p.join("up.key")).unwrap()).unwrap();
        let leaf_key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let err = sign_x509_svid(
            &up_cert[0],
            &up_key,
            &X509SvidParams::new(
                SpiffeId::parse("spiffe://example.org/w").unwrap(),
                leaf_key.public_key_der().to_vec(),
                now(),
                now() + hours(1),
            ),
        )
        .unwrap_err();
        assert_eq!(err, CryptoError::IssuerNameNotReproducible);
    }
}
