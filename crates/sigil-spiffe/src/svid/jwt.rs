//! JWT-SVIDs. (Stub: parsing and claim rules land with the sigil-spiffe owner.)

/// Checks a JWS signature; implemented by sigil-crypto so this crate stays free
/// of cryptographic code.
pub trait JwtSignatureVerifier {
    /// Verifies `signature` (as it appears, base64url-decoded, in the token)
    /// over `signing_input` (`header.payload`) with the SPKI DER key, for the
    /// JOSE algorithm `alg` (`ES256`, `RS256`, ...).
    fn verify(
        &self,
        alg: &str,
        public_key_der: &[u8],
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), String>;
}
