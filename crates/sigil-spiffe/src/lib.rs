//! SPIFFE identity types and their spec validation.
//!
//! This crate owns the vocabulary of the SPIFFE standards: SPIFFE IDs and trust
//! domains, selectors, trust bundles in the SPIFFE bundle format, and the
//! structural rules of X509-SVIDs and JWT-SVIDs. It performs no I/O, spawns
//! nothing and depends on no other sigil crate; every constructor validates, so an
//! invalid value of these types cannot exist. Signature checks and X.509 path
//! validation belong to sigil-crypto, which plugs in through
//! [`svid::jwt::JwtSignatureVerifier`].
#![forbid(unsafe_code)]

pub mod bundle;
pub mod id;
pub mod jwk;
pub mod selector;
pub mod svid;

#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod testutil;

pub use bundle::{Bundle, BundleError, JwtAuthority};
pub use id::{IdError, SpiffeId, TrustDomain};
pub use selector::{Selector, SelectorError};
pub use svid::jwt::{JwtSignatureVerifier, JwtSvid, JwtSvidError, SignatureError};
pub use svid::x509::X509SvidError;
