//! SPIFFE identity types and their spec validation.
//!
//! This crate owns the vocabulary of the SPIFFE standards: SPIFFE IDs and trust
//! domains, selectors, trust bundles in the SPIFFE bundle format, and the
//! structural rules of X509-SVIDs and JWT-SVIDs. It performs no I/O, spawns
//! nothing and depends on no other sigil crate; every constructor validates, so an
//! invalid value of these types cannot exist.
#![forbid(unsafe_code)]

pub mod id;
pub mod bundle;
pub mod selector;
pub mod svid;

pub use id::{IdError, SpiffeId, TrustDomain};
pub use bundle::{Bundle, JwtAuthority};
pub use selector::{Selector, SelectorError};
