//! The one error type of this crate.

/// Everything that can go wrong building, signing, parsing or verifying
/// keys, certificates, CSRs, JWTs and TLS configurations.
///
/// Messages name the offending value and the rule it broke, so callers can
/// pass them on to operators unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A key type name that is not one of SPIRE's names.
    #[error("unknown key type {value:?}: expected one of ec-p256, ec-p384, rsa-2048, rsa-4096")]
    UnknownKeyType {
        /// The name that was given.
        value: String,
    },
    /// The crypto library failed to generate a key.
    #[error("generating a {key_type} key failed")]
    KeyGeneration {
        /// The key type that was asked for (SPIRE name).
        key_type: String,
    },
    /// Private key bytes that could not be used.
    #[error("private key rejected: {reason}")]
    KeyRejected {
        /// Why.
        reason: String,
    },
    /// A public key (SubjectPublicKeyInfo) that could not be used.
    #[error("public key rejected: {reason}")]
    PublicKeyRejected {
        /// Why.
        reason: String,
    },
    /// Producing a signature failed (software key or remote/HSM signer).
    #[error("signing failed: {reason}")]
    Signing {
        /// Why.
        reason: String,
    },
    /// An ECDSA signature that is neither valid ASN.1 DER nor valid fixed-width `r||s`.
    #[error("malformed ECDSA signature: {reason}")]
    MalformedEcdsaSignature {
        /// Why.
        reason: String,
    },
    /// A validity window whose end is not after its start.
    #[error(
        "invalid validity window: not_after ({not_after}) must be later than not_before ({not_before}) (unix seconds)"
    )]
    InvalidValidity {
        /// Start, as Unix seconds.
        not_before: i64,
        /// End, as Unix seconds.
        not_after: i64,
    },
    /// A time outside what certificates and JWTs can carry.
    #[error("time out of range: {reason}")]
    TimeOutOfRange {
        /// Why.
        reason: String,
    },
    /// A subject attribute given more values than we can encode.
    #[error("subject attribute {attribute} has {count} values; at most one is supported")]
    TooManySubjectValues {
        /// The attribute (`country`, `organization`).
        attribute: &'static str,
        /// How many values were given.
        count: usize,
    },
    /// A DNS name not valid in a certificate (not IA5 / empty).
    #[error("invalid DNS name {name:?}: {reason}")]
    InvalidDnsName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The certificate builder (rcgen) refused the parameters.
    #[error("building certificate failed: {reason}")]
    CertificateBuild {
        /// Why.
        reason: String,
    },
    /// The signing key handed in does not belong to the CA certificate.
    #[error("the CA signing key does not match the public key of the CA certificate")]
    CaKeyMismatch,
    /// The CA certificate's subject cannot be copied byte for byte into an
    /// issuer name (multi-valued RDNs or repeated attributes), so a chain
    /// would not link.
    #[error(
        "the CA certificate's subject name cannot be reproduced as the issuer name (it has multi-valued or repeated attributes)"
    )]
    IssuerNameNotReproducible,
    /// An SVID was requested for an ID outside the CA's trust domain.
    #[error("SPIFFE ID {id} is not a member of the CA's trust domain {trust_domain}")]
    IdNotInTrustDomain {
        /// The requested ID.
        id: String,
        /// The CA's trust domain.
        trust_domain: String,
    },
    /// An X509-SVID leaf was requested for a trust domain ID (no path).
    #[error("SPIFFE ID {id} names a trust domain; an X509-SVID leaf needs an ID with a path")]
    LeafIdWithoutPath {
        /// The requested ID.
        id: String,
    },
    /// DER or PEM that is not a parseable X.509 certificate.
    #[error("invalid certificate{}: {reason}", index.map(|i| format!(" #{i}")).unwrap_or_default())]
    CertificateParse {
        /// Position in the input list, when there was a list.
        index: Option<usize>,
        /// Why.
        reason: String,
    },
    /// PEM text that could not be decoded.
    #[error("invalid PEM: {reason}")]
    Pem {
        /// Why.
        reason: String,
    },
    /// PEM text without a single block of the kind we need.
    #[error("no {label} block found in PEM input")]
    PemBlockMissing {
        /// The PEM label looked for.
        label: &'static str,
    },
    /// A certificate whose URI SANs are not exactly one SPIFFE ID.
    #[error("certificate must carry exactly one URI SAN (the SPIFFE ID), found {count}")]
    UriSanCount {
        /// URI SANs found.
        count: usize,
    },
    /// A URI SAN that is not a valid SPIFFE ID.
    #[error("URI SAN {value:?} is not a valid SPIFFE ID: {reason}")]
    InvalidSpiffeId {
        /// The URI.
        value: String,
        /// Why.
        reason: String,
    },
    /// An X509-SVID leaf that is allowed to sign certificates or CRLs.
    #[error("leaf certificate must not have keyCertSign or cRLSign key usage")]
    LeafCanSignCertificates,
    /// No certificates or no roots handed to chain verification.
    #[error("cannot verify a chain: {what} is empty")]
    EmptyInput {
        /// Which input.
        what: &'static str,
    },
    /// Path validation to the trust roots failed.
    #[error("certificate chain verification failed: {reason}")]
    ChainVerification {
        /// The webpki error.
        reason: String,
    },
    /// A signature algorithm we do not verify.
    #[error("unsupported signature algorithm {algorithm}")]
    UnsupportedSignatureAlgorithm {
        /// OID or JOSE name.
        algorithm: String,
    },
    /// A signature that does not verify under the given public key.
    #[error("signature verification failed: {what}")]
    BadSignature {
        /// What was being verified.
        what: String,
    },
    /// DER that is not a parseable PKCS#10 CSR.
    #[error("invalid CSR: {reason}")]
    CsrParse {
        /// Why.
        reason: String,
    },
    /// A JWT-SVID must name at least one audience.
    #[error("a JWT-SVID needs at least one audience")]
    EmptyAudience,
    /// A JWT algorithm that cannot be used with the given key.
    #[error("JWT algorithm {alg} cannot be used with a {key} key")]
    JwtKeyMismatch {
        /// JOSE algorithm.
        alg: String,
        /// Description of the key.
        key: String,
    },
    /// JSON encoding of a JWT header or claims failed.
    #[error("encoding JWT failed: {reason}")]
    JwtEncode {
        /// Why.
        reason: String,
    },
    /// The server presented an SVID whose SPIFFE ID the policy rejects.
    #[error("server SPIFFE ID {presented} does not satisfy policy: {expected}")]
    UnexpectedServerId {
        /// What the policy wants.
        expected: String,
        /// What the server presented.
        presented: String,
    },
    /// rustls refused a configuration.
    #[error("TLS configuration failed: {reason}")]
    TlsConfig {
        /// Why.
        reason: String,
    },
}

impl CryptoError {
    pub(crate) fn cert_parse(reason: impl std::fmt::Display) -> Self {
        CryptoError::CertificateParse {
            index: None,
            reason: reason.to_string(),
        }
    }
}
