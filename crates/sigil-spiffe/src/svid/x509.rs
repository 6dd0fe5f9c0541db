//! The X509-SVID rules (X509-SVID specification sections 2 to 5.2) that can
//! be checked on one certificate: its SPIFFE ID URI SAN, basic constraints and
//! key usage, for leaves and for signing (CA) certificates.
//!
//! Chain building, signatures and validity periods are not checked here; they
//! are RFC 5280 path validation, done by sigil-crypto with rustls-webpki.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{BasicConstraints, GeneralName, KeyUsage, ParsedExtension};
use x509_parser::oid_registry::{
    OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_KEY_USAGE, OID_X509_EXT_SUBJECT_ALT_NAME,
};
use x509_parser::prelude::FromDer;

use crate::{IdError, SpiffeId};

/// Why a certificate is not an acceptable X509-SVID (or signing certificate).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum X509SvidError {
    /// The bytes are not a DER X.509 certificate.
    #[error("certificate is not a valid DER X.509 certificate: {0}")]
    InvalidCertificate(String),
    /// The DER certificate is followed by extra bytes.
    #[error("certificate is followed by {0} unexpected bytes")]
    TrailingData(usize),
    /// An extension the rules depend on is malformed or appears twice.
    #[error("certificate {extension} extension is malformed or duplicated: {reason}")]
    InvalidExtension {
        /// Which extension (`subjectAltName`, `basicConstraints`, `keyUsage`).
        extension: &'static str,
        /// What the parser reported.
        reason: String,
    },
    /// No URI SAN, so no SPIFFE ID.
    #[error(
        "certificate has no URI SAN; an X509-SVID carries its SPIFFE ID as exactly one URI SAN"
    )]
    NoUriSan,
    /// More than one URI SAN (X509-SVID section 2: must be rejected).
    #[error("certificate has {0} URI SANs; an X509-SVID must have exactly one")]
    MultipleUriSans(usize),
    /// The URI SAN is not a SPIFFE ID.
    #[error("certificate URI SAN {uri:?} is not a valid SPIFFE ID: {source}")]
    InvalidSpiffeId {
        /// The URI as found in the certificate.
        uri: String,
        /// The SPIFFE ID rule it breaks.
        source: IdError,
    },
    /// A leaf whose SPIFFE ID has no path (names the trust domain itself).
    #[error("leaf SVID SPIFFE ID {0} has no path; a leaf SPIFFE ID must name a workload")]
    LeafIdWithoutPath(SpiffeId),
    /// A leaf with basicConstraints `cA` true.
    #[error("leaf SVID has basicConstraints CA=true; leaf SVIDs must not be CAs")]
    LeafIsCa,
    /// No keyUsage extension (required on every SVID).
    #[error("certificate has no keyUsage extension; every SVID must have one, marked critical")]
    MissingKeyUsage,
    /// keyUsage present but not critical.
    #[error("certificate keyUsage extension is not marked critical")]
    KeyUsageNotCritical,
    /// A leaf whose keyUsage lacks `digitalSignature`.
    #[error("leaf SVID keyUsage does not include digitalSignature")]
    LeafMissingDigitalSignature,
    /// A leaf whose keyUsage has `keyCertSign`.
    #[error("leaf SVID keyUsage includes keyCertSign, which only signing certificates may have")]
    LeafHasKeyCertSign,
    /// A leaf whose keyUsage has `cRLSign`.
    #[error("leaf SVID keyUsage includes cRLSign, which only signing certificates may have")]
    LeafHasCrlSign,
    /// A signing certificate without basicConstraints `cA` true.
    #[error("signing certificate is not a CA: basicConstraints CA must be true")]
    SigningCertNotCa,
    /// A signing certificate whose keyUsage lacks `keyCertSign`.
    #[error("signing certificate keyUsage does not include keyCertSign")]
    SigningCertMissingKeyCertSign,
    /// A signing certificate whose SPIFFE ID has a path.
    #[error("signing certificate SPIFFE ID {0} has a path; a signing certificate's ID must not")]
    SigningCertIdHasPath(SpiffeId),
}

/// Checks that `cert_der` is a leaf X509-SVID (sections 2, 3.1, 4.1, 4.3, 5.2)
/// and returns its SPIFFE ID. In order: exactly one URI SAN, a valid SPIFFE ID
/// with a path, `cA` false, keyUsage present and critical, `digitalSignature`
/// set, neither `keyCertSign` nor `cRLSign` set.
pub fn validate_x509_svid_leaf(cert_der: &[u8]) -> Result<SpiffeId, X509SvidError> {
    let cert = parse(cert_der)?;
    let id = uri_san_id(&cert)?;
    if id.is_trust_domain_id() {
        return Err(X509SvidError::LeafIdWithoutPath(id));
    }
    if basic_constraints(&cert)?.is_some_and(|bc| bc.ca) {
        return Err(X509SvidError::LeafIsCa);
    }
    let usage = key_usage(&cert)?;
    if !usage.digital_signature() {
        return Err(X509SvidError::LeafMissingDigitalSignature);
    }
    if usage.key_cert_sign() {
        return Err(X509SvidError::LeafHasKeyCertSign);
    }
    if usage.crl_sign() {
        return Err(X509SvidError::LeafHasCrlSign);
    }
    Ok(id)
}

/// Checks that `cert_der` is an X509-SVID signing certificate (sections 3.2,
/// 4.1, 4.3): `cA` true, keyUsage present and critical with `keyCertSign`, and,
/// if it carries a SPIFFE ID, one without a path. A signing certificate need
/// not be an SVID, so URI SANs that are not SPIFFE IDs are allowed.
pub fn validate_signing_cert(cert_der: &[u8]) -> Result<(), X509SvidError> {
    let cert = parse(cert_der)?;
    if !basic_constraints(&cert)?.is_some_and(|bc| bc.ca) {
        return Err(X509SvidError::SigningCertNotCa);
    }
    if !key_usage(&cert)?.key_cert_sign() {
        return Err(X509SvidError::SigningCertMissingKeyCertSign);
    }
    for uri in uri_sans(&cert)? {
        if let Ok(id) = SpiffeId::parse(uri)
            && !id.is_trust_domain_id()
        {
            return Err(X509SvidError::SigningCertIdHasPath(id));
        }
    }
    Ok(())
}

/// The SPIFFE ID of a certificate: its one URI SAN, which must be a valid
/// SPIFFE ID. No other rule is checked.
pub fn spiffe_id_from_cert(cert_der: &[u8]) -> Result<SpiffeId, X509SvidError> {
    uri_san_id(&parse(cert_der)?)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, X509SvidError> {
    let (rest, cert) = X509Certificate::from_der(der)
        .map_err(|e| X509SvidError::InvalidCertificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(X509SvidError::TrailingData(rest.len()));
    }
    Ok(cert)
}

fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Result<Vec<&'a str>, X509SvidError> {
    let ext = cert
        .get_extension_unique(&OID_X509_EXT_SUBJECT_ALT_NAME)
        .map_err(|e| invalid_extension("subjectAltName", e.to_string()))?;
    let Some(ext) = ext else {
        return Ok(Vec::new());
    };
    match ext.parsed_extension() {
        ParsedExtension::SubjectAlternativeName(san) => Ok(san
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect()),
        other => Err(invalid_extension("subjectAltName", describe(other))),
    }
}

fn uri_san_id(cert: &X509Certificate<'_>) -> Result<SpiffeId, X509SvidError> {
    match uri_sans(cert)?.as_slice() {
        [] => Err(X509SvidError::NoUriSan),
        [uri] => SpiffeId::parse(uri).map_err(|source| X509SvidError::InvalidSpiffeId {
            uri: (*uri).to_owned(),
            source,
        }),
        many => Err(X509SvidError::MultipleUriSans(many.len())),
    }
}

fn basic_constraints<'a>(
    cert: &'a X509Certificate<'_>,
) -> Result<Option<&'a BasicConstraints>, X509SvidError> {
    let ext = cert
        .get_extension_unique(&OID_X509_EXT_BASIC_CONSTRAINTS)
        .map_err(|e| invalid_extension("basicConstraints", e.to_string()))?;
    match ext.map(|e| e.parsed_extension()) {
        None => Ok(None),
        Some(ParsedExtension::BasicConstraints(bc)) => Ok(Some(bc)),
        Some(other) => Err(invalid_extension("basicConstraints", describe(other))),
    }
}

/// The keyUsage extension, which every SVID must have, marked critical.
fn key_usage<'a>(cert: &'a X509Certificate<'_>) -> Result<&'a KeyUsage, X509SvidError> {
    let ext = cert
        .get_extension_unique(&OID_X509_EXT_KEY_USAGE)
        .map_err(|e| invalid_extension("keyUsage", e.to_string()))?
        .ok_or(X509SvidError::MissingKeyUsage)?;
    let ParsedExtension::KeyUsage(usage) = ext.parsed_extension() else {
        return Err(invalid_extension(
            "keyUsage",
            describe(ext.parsed_extension()),
        ));
    };
    if !ext.critical {
        return Err(X509SvidError::KeyUsageNotCritical);
    }
    Ok(usage)
}

fn invalid_extension(extension: &'static str, reason: String) -> X509SvidError {
    X509SvidError::InvalidExtension { extension, reason }
}

fn describe(parsed: &ParsedExtension<'_>) -> String {
    match parsed.error() {
        Some(e) => e.to_string(),
        None => "unexpected extension content".to_owned(),
    }
}

#[cfg(test)]
mod tests;
