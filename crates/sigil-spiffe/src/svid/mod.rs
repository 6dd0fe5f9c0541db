//! SVIDs: the rules of X509-SVIDs and JWT-SVIDs.
pub mod jwt;
pub mod x509;
