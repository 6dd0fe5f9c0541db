//! Trust bundles in the SPIFFE bundle format (a JWKS document).
//! (Stub: the full JWKS parse/serialise lands with the sigil-spiffe owner.)

use crate::TrustDomain;

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
